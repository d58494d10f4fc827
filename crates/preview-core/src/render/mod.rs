//! Rendering the generated files from minijinja templates (`templates/*.j2`): the Dockerfile
//! (from the plan alone), the compose project and the nginx location (from the plan plus the
//! deployment's identity, ports and limits).

use std::collections::BTreeSet;
use std::path::PathBuf;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::checkout::Checkout;
use crate::images;
use crate::plan::Planned;
use crate::repo_secrets::SecretName;
use crate::{Error, Result};

pub mod compose;
pub mod dockerfile;
pub mod nginx;
pub mod shared_databases;

pub use compose::render_compose;
pub use dockerfile::render_dockerfile;
pub use nginx::render_nginx;

/// The numeric user the app runs as; no `useradd` needed, and it owns nothing on the host.
pub const APP_UID: u32 = 10001;

/// Labels on every container, image, network and volume of a preview, so cleanup can find them.
pub mod labels {
    /// The deployment id (= the compose project name).
    pub const DEPLOYMENT: &str = "dev.preview-deployer.deployment";
    /// `owner/name` of the repository.
    pub const REPO: &str = "dev.preview-deployer.repo";
    /// The pull request number.
    pub const PR: &str = "dev.preview-deployer.pr";
    /// The commit sha being previewed. Only on the app's container and image: a data service,
    /// network or volume keeps the same definition from commit to commit, so Compose leaves it
    /// running through an update (a changed label would make Compose recreate it).
    pub const SHA: &str = "dev.preview-deployer.sha";
    /// Which of the two app slots (`blue`, `green`) a container belongs to; only on the app and
    /// on a second web service routed at its own hostname, which updates start beside the
    /// serving one too.
    pub const SLOT: &str = "dev.preview-deployer.slot";
    /// `true` on the container of a task meant to end (a migration): its exit with 0 is its
    /// success, which readiness does not take for a crash.
    pub const ONE_SHOT: &str = "dev.preview-deployer.one-shot";
    /// Always `true`: marks objects the orchestrator manages.
    pub const MANAGED: &str = "dev.preview-deployer.managed";
}

/// One of a preview's two sets of app containers. An update starts the new commit in the slot
/// that is not serving, beside the serving one, then nginx switches to it (see the
/// orchestrator's runtime). The slots differ in the app's service name only, so they share the
/// project's network, volumes and services. A repo's second web service routed at its own
/// hostname ([`ServiceRoute`]) is slotted with the app: renamed in the green slot the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AppSlot {
    /// The app's own service name (`app`, or the repo compose file's app service): a first
    /// deploy's slot.
    #[default]
    Blue,
    /// `{name}-green`, reachable by the other services under the plain name too.
    Green,
}

impl AppSlot {
    /// The slot's name, as in the [`labels::SLOT`] label.
    pub fn as_str(self) -> &'static str {
        match self {
            AppSlot::Blue => "blue",
            AppSlot::Green => "green",
        }
    }

    /// The slot named `name` ([`AppSlot::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "blue" => Some(AppSlot::Blue),
            "green" => Some(AppSlot::Green),
            _ => None,
        }
    }

    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            AppSlot::Blue => AppSlot::Green,
            AppSlot::Green => AppSlot::Blue,
        }
    }

    /// The compose service name of app service `app` in this slot.
    pub fn service_name(self, app: &str) -> String {
        match self {
            AppSlot::Blue => app.to_owned(),
            AppSlot::Green => format!("{app}-green"),
        }
    }

    /// The compose service name of a second web service routed at its own hostname in this
    /// slot: `{name}-blue` or `{name}-green`, in both slots unlike the app's. A commit may route
    /// a service that the serving commit runs under its plain name (private, or from before
    /// such services had slots): the new slot's must not be that container, which Compose
    /// would recreate in place and a failed update would then remove.
    pub fn routed_service_name(self, name: &str) -> String {
        format!("{name}-{}", self.as_str())
    }
}

/// Resource limits of every container of a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Compose `mem_limit`, e.g. `512m`.
    pub memory: String,
    /// Compose `cpus`, e.g. `0.5`.
    pub cpus: String,
    /// Compose `pids_limit`.
    pub pids: u32,
}

impl Default for Limits {
    /// The seed's limits: 512 MB and half a CPU, plus a pids limit against fork bombs.
    fn default() -> Self {
        Self {
            memory: "512m".to_owned(),
            cpus: "0.5".to_owned(),
            pids: 256,
        }
    }
}

/// What rendering needs beyond the plan: who the preview is, where things are, and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderInput {
    /// The deployment id; also the compose project name (`[a-z0-9][a-z0-9_-]*`, at most 63).
    pub deployment_id: String,
    /// `owner/name`.
    pub repo: String,
    /// The PR number.
    pub pr: u64,
    /// The commit being previewed (40 hex digits).
    pub sha: String,
    /// The URL path segment of the repo: the preview lives at `/{slug}/pr-{pr}/`.
    pub slug: String,
    /// The port the app is published on.
    pub host_port: u16,
    /// The address nginx reaches that port at: 127.0.0.1, or on a swarm the address of the
    /// node that runs the app.
    pub upstream: std::net::IpAddr,
    /// The checkout, absolute: build contexts and bind mounts are resolved against it.
    pub checkout_dir: PathBuf,
    /// Where the caller writes the generated Dockerfile, absolute; compose points at it.
    pub dockerfile_path: PathBuf,
    /// Limits of every container.
    pub limits: Limits,
    /// Per-deployment secret (at least 16 of `[A-Za-z0-9]`): database passwords, Laravel's APP_KEY.
    pub secret: String,
    /// The preview's public URL, when known (given to the app as PREVIEW_URL).
    pub public_url: Option<String>,
    /// How long the app gets to stop before it is killed (compose `stop_grace_period`).
    pub stop_grace_period: String,
    /// The app slot the compose file starts the app in.
    pub app_slot: AppSlot,
    /// Set when each preview has its own hostname (`{label}.{PREVIEW_DOMAIN}`): nginx then
    /// serves it at `/` of that host, with nothing stripped.
    pub host: Option<HostRoute>,
    /// The repository's access file as an nginx `include` glob
    /// ([`crate::access::AccessFiles::include_pattern`]); it matches nothing while the
    /// repository is public.
    pub access_include: Option<String>,
    /// The repository's preview secrets this preview gets (none unless its commit is trusted).
    /// The compose file names them in the app's environment without a value; Compose takes
    /// each value from its own environment at start, so no value is ever written to a file.
    pub secret_names: BTreeSet<SecretName>,
    /// Set when idle previews sleep: nginx logs the preview's requests to its activity log and
    /// sends the 502 of a stopped app to the orchestrator's wake endpoint.
    pub sleep: Option<SleepRoute>,
    /// Set when the preview's database lives on the engine's shared server
    /// (`DATABASE_MODE=shared`): the compose file then has no database service, and the app
    /// joins the network that reaches the server.
    pub shared_database: Option<SharedDatabase>,
    /// Set when the repo's compose file has a second web service
    /// ([`crate::sanitize::HostnameService`]) and previews have hostnames: it is published on
    /// 127.0.0.1 at this route's port, and nginx serves it at this route's host. It is then in
    /// [`RenderInput::app_slot`] with the app.
    pub service_route: Option<ServiceRoute>,
}

/// Where a preview's second web service is published and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The port on 127.0.0.1 (from the app pool) it is published on: in an update, the new
    /// slot's own port, beside the serving one's (as [`RenderInput::host_port`] is the app's).
    pub host_port: u16,
    /// Its own host, with the same listen addresses and certificate as the app's.
    pub route: HostRoute,
}

/// A preview's own database and role on the engine's shared database server.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedDatabase {
    /// The server's engine: Postgres or MySQL (MariaDB stands in on the test bed).
    pub engine: crate::model::Database,
    /// The server's name on the preview's database network, e.g. `shared-postgres`.
    pub host: String,
    /// The server's port on that network.
    pub port: u16,
    /// The preview's database (and role) name ([`is_database_identifier`]).
    pub name: String,
    /// The role's password: random lowercase hex.
    pub password: String,
    /// The Docker network the app joins to reach the server, made by the orchestrator.
    pub network: String,
}

/// Names the database, never the password.
impl std::fmt::Debug for SharedDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDatabase")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// True for a database or role name we make: a lowercase letter, then at most 31 of
/// `[a-z0-9_]` (within MySQL's 32-character user names and Postgres's 63 bytes), so it needs no
/// quoting anywhere it goes.
pub fn is_database_identifier(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// True for a password we make: at least 16 lowercase hex digits.
pub fn is_hex_password(password: &str) -> bool {
    password.len() >= 16
        && password
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// What the nginx config of a preview that may sleep needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepRoute {
    /// The preview's activity log, absolute: its modification time is the last request's.
    pub activity_log: String,
    /// How often nginx writes the log's buffer at the latest, in seconds.
    pub flush_secs: u64,
    /// The orchestrator's loopback address (`127.0.0.1:3000`), which serves `/_wake/{id}`.
    pub wake_addr: std::net::SocketAddr,
}

/// A preview served at the root of its own hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The full hostname, e.g. `octo-org-api-pr-7.preview.example.com`.
    pub hostname: String,
    /// nginx `listen` addresses of the preview's server block, e.g. `80` and `[::]:80`.
    pub listen: Vec<String>,
    /// Set once the wildcard certificate exists: the block then also serves HTTPS, and plain
    /// HTTP redirects to it.
    pub tls: Option<HostTls>,
}

/// HTTPS for a preview's hostname, with the one wildcard certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTls {
    /// nginx `listen` addresses for HTTPS, e.g. `443` and `[::]:443` (rendered with `ssl`).
    pub listen: Vec<String>,
    /// Absolute path of the full chain (`ssl_certificate`).
    pub certificate: String,
    /// Absolute path of the private key (`ssl_certificate_key`).
    pub key: String,
}

impl HostTls {
    /// Whether the certificate and key are there: until the first issuance, previews stay on
    /// plain HTTP (nginx refuses a config naming a missing certificate).
    pub fn is_ready(&self) -> bool {
        std::path::Path::new(&self.certificate).is_file()
            && std::path::Path::new(&self.key).is_file()
    }
}

impl RenderInput {
    /// An input with the default limits and grace period.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        deployment_id: impl Into<String>,
        repo: impl Into<String>,
        pr: u64,
        sha: impl Into<String>,
        slug: impl Into<String>,
        host_port: u16,
        checkout_dir: impl Into<PathBuf>,
        dockerfile_path: impl Into<PathBuf>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            deployment_id: deployment_id.into(),
            repo: repo.into(),
            pr,
            sha: sha.into(),
            slug: slug.into(),
            host_port,
            upstream: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            checkout_dir: checkout_dir.into(),
            dockerfile_path: dockerfile_path.into(),
            limits: Limits::default(),
            secret: secret.into(),
            public_url: None,
            stop_grace_period: "3s".to_owned(),
            app_slot: AppSlot::Blue,
            host: None,
            access_include: None,
            secret_names: BTreeSet::new(),
            sleep: None,
            shared_database: None,
            service_route: None,
        }
    }

    /// The URL path prefix, `/{slug}/pr-{pr}`; empty when the preview has its own hostname.
    pub fn path_prefix(&self) -> String {
        match self.host {
            Some(_) => String::new(),
            None => format!("/{}/pr-{}", self.slug, self.pr),
        }
    }

    /// Checks every field that reaches a generated file.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(Error::Invalid {
                field: field.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let id = &self.deployment_id;
        if id.is_empty()
            || id.len() > 63
            || !id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return bad(
                "deployment id",
                "must be 1-63 of [a-z0-9_-], starting with a letter or digit",
            );
        }
        let (owner, name) = self.repo.split_once('/').unwrap_or_default();
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !part_ok(owner) || !part_ok(name) {
            return bad("repo", "must be owner/name");
        }
        if self.sha.len() != 40 || !self.sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("sha", "must be 40 hex digits");
        }
        if self.slug.is_empty()
            || self.slug.len() > 80
            || !self
                .slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad("slug", "must be [a-z0-9-]");
        }
        if self.pr == 0 {
            return bad("pr", "must be positive");
        }
        if self.host_port == 0 {
            return bad("host port", "must be 1-65535");
        }
        if !self.checkout_dir.is_absolute() || !self.dockerfile_path.is_absolute() {
            return bad(
                "paths",
                "the checkout dir and Dockerfile path must be absolute",
            );
        }
        for p in [&self.checkout_dir, &self.dockerfile_path] {
            if p.to_str()
                .is_none_or(|s| s.chars().any(|c| c.is_control() || c == '$'))
            {
                return bad("paths", "must be UTF-8 without control characters or `$`");
            }
        }
        if self.secret.len() < 16 || !self.secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return bad("secret", "must be at least 16 of [A-Za-z0-9]");
        }
        if let Some(service) = &self.service_route {
            if self.host.is_none() {
                return bad(
                    "service route",
                    "a second web service is routed only when previews have hostnames",
                );
            }
            if service.host_port == 0 || service.host_port == self.host_port {
                return bad(
                    "service host port",
                    "must be 1-65535, and not the app's port",
                );
            }
        }
        let routes = self.service_route.iter().map(|s| &s.route);
        for host in self.host.iter().chain(routes) {
            if !is_hostname(&host.hostname) {
                return bad("hostname", "must be a DNS name of [a-z0-9-] labels");
            }
            if host.listen.is_empty() || !host.listen.iter().all(|l| is_listen_address(l)) {
                return bad(
                    "nginx listen",
                    "addresses such as 80, [::]:80 or 127.0.0.1:8080",
                );
            }
            if let Some(tls) = &host.tls {
                if tls.listen.is_empty() || !tls.listen.iter().all(|l| is_listen_address(l)) {
                    return bad("nginx TLS listen", "addresses such as 443 or [::]:443");
                }
                if !is_config_path(&tls.certificate) || !is_config_path(&tls.key) {
                    return bad(
                        "certificate path",
                        "must be absolute, of [A-Za-z0-9._/-] only",
                    );
                }
            }
        }
        if let Some(pattern) = &self.access_include
            && !is_access_include(pattern)
        {
            return bad(
                "access include",
                "must be an absolute path of [A-Za-z0-9._/-] ending in .con[f]",
            );
        }
        if let Some(sleep) = &self.sleep {
            if !is_config_path(&sleep.activity_log) {
                return bad(
                    "activity log",
                    "must be an absolute path of [A-Za-z0-9._/-] only",
                );
            }
            if !sleep.wake_addr.ip().is_loopback() || sleep.wake_addr.port() == 0 {
                return bad("wake address", "must be a loopback address with a port");
            }
            if !(1..=3600).contains(&sleep.flush_secs) {
                return bad("activity log flush", "1 to 3600 seconds");
            }
        }
        if let Some(db) = &self.shared_database {
            if !matches!(
                db.engine,
                crate::model::Database::Postgres | crate::model::Database::Mysql
            ) {
                return bad("shared database", "only postgres and mysql are shared");
            }
            if !is_hostname(&db.host) || db.port == 0 {
                return bad("shared database host", "a DNS name and a port");
            }
            if !is_database_identifier(&db.name) {
                return bad(
                    "shared database name",
                    "a lowercase letter, then at most 31 of [a-z0-9_]",
                );
            }
            if !is_hex_password(&db.password) {
                return bad(
                    "shared database password",
                    "at least 16 lowercase hex digits",
                );
            }
            if db.network.is_empty()
                || db.network.len() > 128
                || !db
                    .network
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
            {
                return bad("shared database network", "[a-z0-9_.-]");
            }
        }
        let l = &self.limits;
        if !l.memory.chars().all(|c| c.is_ascii_alphanumeric()) || l.memory.is_empty() {
            return bad("limits.memory", "e.g. 512m");
        }
        if l.cpus.parse::<f64>().map_or(true, |c| c <= 0.0) {
            return bad("limits.cpus", "a positive number");
        }
        if let Some(url) = &self.public_url
            && (url.chars().any(|c| c.is_control() || c.is_whitespace())
                || !url.starts_with("http"))
        {
            return bad("public url", "an http(s) URL");
        }
        if !self
            .stop_grace_period
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
        {
            return bad("stop grace period", "e.g. 3s");
        }
        Ok(())
    }
}

/// Everything rendered for one preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The generated Dockerfile; `None` when the repo's own image is used.
    pub dockerfile: Option<String>,
    /// The compose file.
    pub compose: String,
    /// The nginx location block, to be included inside the base config's `server`.
    pub nginx: String,
    /// The compose services: the app's (in its slot) first, then the others.
    pub services: ComposeServices,
}

/// The service names of a rendered compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeServices {
    /// The app's service, under its slot's name.
    pub app: String,
    /// Every other service that starts (databases, extra services, the repo's other services not
    /// left in a profile), the routed second web service under its slot's name.
    pub others: Vec<String>,
    /// The second web service routed at its own hostname ([`RenderInput::service_route`]),
    /// under its slot's name; `None` when none is routed.
    pub routed: Option<String>,
}

impl Rendered {
    /// The files with conventional names: `Dockerfile` (if generated), `docker-compose.yml`,
    /// `nginx.conf`.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        let mut files = Vec::new();
        if let Some(d) = &self.dockerfile {
            files.push(("Dockerfile", d.as_str()));
        }
        files.push(("docker-compose.yml", self.compose.as_str()));
        files.push(("nginx.conf", self.nginx.as_str()));
        files
    }

    /// The images this preview needs before it can build and start (see [`images::needed`]);
    /// `input` is what it was rendered with, `checkout` the checkout at `input.checkout_dir`.
    pub fn needed_images(&self, input: &RenderInput, checkout: &Checkout) -> images::NeededImages {
        images::needed(&images::RenderedProject {
            compose: &self.compose,
            checkout,
            checkout_dir: &input.checkout_dir,
            generated_dockerfile: self
                .dockerfile
                .as_deref()
                .map(|text| (input.dockerfile_path.as_path(), text)),
        })
    }
}

/// Renders all three files.
pub fn render(planned: &Planned, input: &RenderInput) -> Result<Rendered> {
    input.validate()?;
    Ok(Rendered {
        dockerfile: render_dockerfile(&planned.plan)?,
        compose: render_compose(planned, input)?,
        nginx: render_nginx(input)?,
        services: compose::services(planned, input),
    })
}

/// True for a DNS name: dot-separated labels of 1-63 `[a-z0-9-]`, not starting or ending with
/// `-`, at most 253 characters in all.
pub fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// True for a path that is safe to write unquoted into nginx config: absolute, no spaces,
/// semicolons, braces, quotes or variables.
pub(crate) fn is_config_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
}

/// True for the glob an access file is included by: a config path whose last letter is the
/// class `[f]`.
fn is_access_include(pattern: &str) -> bool {
    pattern
        .strip_suffix("con[f]")
        .is_some_and(|head| head.ends_with('.') && is_config_path(head))
}

/// True for an nginx `listen` address of ours: a port, `host:port` or `[v6]:port`, nothing else.
pub fn is_listen_address(address: &str) -> bool {
    !address.is_empty()
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "[]:.".contains(c))
}

/// The template environment: strict about undefined values, no HTML escaping, block tags on
/// their own lines.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    // JSON without HTML escaping: valid as a Dockerfile exec form and as a YAML scalar.
    env.add_filter(
        "json",
        |value: Value| -> std::result::Result<String, minijinja::Error> {
            serde_json::to_string(&value).map_err(|e| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "cannot serialise to JSON",
                )
                .with_source(e)
            })
        },
    );
    // A mapping key: bare when plain YAML reads it back as the same string, JSON-quoted otherwise.
    env.add_filter("key", |value: String| -> String {
        let plain = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !matches!(
                value.to_ascii_lowercase().as_str(),
                "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
            );
        if plain {
            value
        } else {
            serde_json::Value::String(value).to_string()
        }
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not parse: {e:#}"));
    }
    env
}

const TEMPLATES: [(&str, &str); 13] = [
    (
        "Dockerfile.node.j2",
        include_str!("../../templates/Dockerfile.node.j2"),
    ),
    (
        "Dockerfile.python.j2",
        include_str!("../../templates/Dockerfile.python.j2"),
    ),
    (
        "Dockerfile.go.j2",
        include_str!("../../templates/Dockerfile.go.j2"),
    ),
    (
        "Dockerfile.php.j2",
        include_str!("../../templates/Dockerfile.php.j2"),
    ),
    (
        "Dockerfile.rust.j2",
        include_str!("../../templates/Dockerfile.rust.j2"),
    ),
    (
        "docker-compose.yml.j2",
        include_str!("../../templates/docker-compose.yml.j2"),
    ),
    (
        "nginx-location.conf.j2",
        include_str!("../../templates/nginx-location.conf.j2"),
    ),
    (
        "nginx-server.conf.j2",
        include_str!("../../templates/nginx-server.conf.j2"),
    ),
    (
        "nginx-sleep-hooks.conf.j2",
        include_str!("../../templates/nginx-sleep-hooks.conf.j2"),
    ),
    (
        "nginx-wake.conf.j2",
        include_str!("../../templates/nginx-wake.conf.j2"),
    ),
    (
        "nginx-access.conf.j2",
        include_str!("../../templates/nginx-access.conf.j2"),
    ),
    ("htpasswd.j2", include_str!("../../templates/htpasswd.j2")),
    (
        "shared-databases-compose.yml.j2",
        include_str!("../../templates/shared-databases-compose.yml.j2"),
    ),
];

pub(crate) fn render_template(name: &str, ctx: impl Serialize) -> Result<String> {
    let env = environment();
    let template = env.get_template(name).map_err(|e| Error::Render {
        template: name.to_owned(),
        message: format!("{e:#}"),
    })?;
    template
        .render(Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| Error::Render {
            template: name.to_owned(),
            message: format!("{e:#}"),
        })
}

impl RenderInput {
    /// An input for a preview known by its validated ids (see [`crate::id`]).
    pub fn for_preview(
        id: &crate::id::PreviewId,
        repo: &crate::id::RepoFullName,
        sha: &crate::id::CommitSha,
        host_port: u16,
        checkout_dir: impl Into<PathBuf>,
        dockerfile_path: impl Into<PathBuf>,
        secret: impl Into<String>,
    ) -> Self {
        Self::new(
            id.as_str(),
            repo.full_name(),
            u64::from(id.pr().get()),
            sha.as_str(),
            id.slug().as_str(),
            host_port,
            checkout_dir,
            dockerfile_path,
            secret,
        )
    }
}
