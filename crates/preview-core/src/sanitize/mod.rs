//! The repo-owned `docker-compose.preview.yml`, sanitised. Keys are allow-listed per service; the
//! ones that would reach the host are refused with the service and key named: `privileged`, host
//! network/pid/ipc, `devices`, `cap_add`, the Docker socket, bind mounts outside the checkout and
//! host ports. Limits, labels, restart policy and published ports are the orchestrator's, so the
//! repo's are dropped with a warning. What passes is handed to the compose template. A refused
//! file is refused for every refusal one pass finds, listed in line order
//! ([`crate::Error::from_refusals`]).
//!
//! `$` follows one rule, explained at [`VariableRef`]: a repo's compose file may use only the
//! preview's own variables, which the orchestrator substitutes itself; Compose never interpolates
//! anything of the repo's from its environment (on the droplet, the orchestrator's).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

mod variables;

pub use variables::{INTERPOLATED, MAX_RESOLVED_TOTAL, VariableRef, check_variables, resolve_text};
use variables::{scan_variables, with_defaults};

use crate::checkout::{Checkout, normalize_relative};
use crate::config::{parser_options, valid_service_name, yaml_error};
use crate::{Error, Result};

/// File names looked for, in the app dir and then at the repo root.
pub const FILE_NAMES: [&str; 2] = ["docker-compose.preview.yml", "docker-compose.preview.yaml"];

/// Whether `file` (a path in the checkout) is a `docker-compose.preview.yml`, written for
/// previews, rather than a project's own compose file.
pub fn is_preview_file(file: &str) -> bool {
    FILE_NAMES.contains(&file.rsplit('/').next().unwrap_or(file))
}

/// The project's own compose file names, in Compose's own order of preference, looked for in the
/// app dir after [`FILE_NAMES`]. Written for local development, such a file publishes host ports:
/// they are dropped (and read to choose the web service) instead of refused.
pub const PROJECT_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The override files Compose merges into a project file by itself, for local development;
/// previews do not read them.
pub const OVERRIDE_FILE_NAMES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// The prefix of the labels the orchestrator sets on what it runs; a repo may not set them.
const RESERVED_LABELS: &str = "dev.preview-deployer.";

/// The most services one compose file may define: more than the largest stacks people run
/// (Sentry's self-hosted one has about 40), far fewer than the 3,000 a 64 KiB file can hold,
/// each a container to start.
pub const MAX_SERVICES: usize = 100;

/// The label that marks a service as the web app, overriding the automatic choice.
pub const WEB_LABEL: &str = "preview.web";

/// The label that routes a second web service (a front end, an admin) at its own hostname,
/// e.g. `preview.hostname: admin`; see [`HostnameService`].
pub const HOSTNAME_LABEL: &str = "preview.hostname";

/// The compose service that is the app, when the file has one by that name.
pub const APP_SERVICE: &str = "app";

/// Where the compose file lives, to resolve its relative paths.
pub struct SanitizeContext<'a> {
    /// The checkout, for symlink-safe checks of bind mounts, env files and build contexts.
    pub checkout: &'a Checkout,
    /// The file, relative to the checkout root, e.g. `docker-compose.preview.yml`.
    pub file: String,
}

impl SanitizeContext<'_> {
    /// True for a `docker-compose.preview.yml`, written for previews: its host ports are refused.
    /// Any other file is the project's own, whose host ports are dropped.
    fn is_preview_file(&self) -> bool {
        is_preview_file(&self.file)
    }

    fn dir(&self) -> &str {
        match self.file.rsplit_once('/') {
            Some((dir, _)) => dir,
            None => ".",
        }
    }
}

/// A repo compose file that passed the sanitiser.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanitizedCompose {
    /// The file, relative to the checkout root.
    pub file: String,
    /// Its services, by name.
    pub services: Vec<RepoService>,
    /// The service that is the app: the web service, the only one routed.
    pub app_service: String,
    /// Why that service is the app, for the plan's reasons.
    pub app_service_reason: String,
    /// Named volumes it declares.
    pub volumes: Vec<String>,
    /// Networks it declares, with whether each is `internal`.
    pub networks: Vec<(String, bool)>,
    /// Top-level `secrets`, each a file of the checkout.
    pub secrets: Vec<FileObject>,
    /// Top-level `configs`, each a file of the checkout.
    pub configs: Vec<FileObject>,
    /// What was dropped or changed, for the plan's warnings.
    pub warnings: Vec<String>,
    /// Every variable the file refers to, checked by [`check_variables`] once the plan knows the
    /// preview's own variables.
    pub variables: Vec<VariableRef>,
    /// The second web service, routed at its own hostname when previews have hostnames.
    pub hostname_service: Option<HostnameService>,
    /// The variables of the `.env` beside the file, which Compose reads for its references
    /// ([`crate::dotenv`]); the preview's own variables win over them. Filled in by the plan.
    #[serde(skip)]
    pub dotenv: BTreeMap<String, String>,
}

impl SanitizedCompose {
    /// Activates profiles as `docker compose up` would with `COMPOSE_PROFILES` set to `active`
    /// (from the `.env`), and also the web service's own (and the second web service's, see
    /// [`HostnameService`]), and those of every service a started
    /// one depends on: their `profiles` key goes, so Compose starts them. Other services keep
    /// theirs, and Compose does not start them. Returns the profiles activated for the web
    /// service and its dependencies, for the plan's reasons.
    pub fn activate_profiles(&mut self, active: &BTreeSet<String>) -> Vec<String> {
        let starts = |s: &RepoService| {
            let profiles = s.profiles();
            profiles.is_empty() || profiles.iter().any(|p| active.contains(p))
        };
        let mut started: BTreeSet<String> = self
            .services
            .iter()
            .filter(|s| starts(s))
            .map(|s| s.name.clone())
            .collect();
        let mut queue: Vec<String> = started.iter().cloned().collect();
        queue.push(self.app_service.clone());
        // A second web service the repo asks to route is started like the web service.
        queue.extend(self.hostname_service.as_ref().map(|h| h.service.clone()));
        while let Some(name) = queue.pop() {
            started.insert(name.clone());
            if let Some(service) = self.services.iter().find(|s| s.name == name) {
                queue.extend(
                    service
                        .dependencies()
                        .into_iter()
                        .filter(|d| !started.contains(d)),
                );
            }
        }
        let mut activated = BTreeSet::new();
        for service in &mut self.services {
            if started.contains(&service.name) && !starts(service) {
                activated.extend(service.profiles());
            }
            if started.contains(&service.name) {
                service.passthrough.remove("profiles");
            }
        }
        activated.into_iter().collect()
    }
}

impl RepoService {
    /// The services it names in `depends_on` and `links`.
    fn dependencies(&self) -> Vec<String> {
        let mut out: Vec<String> = match self.passthrough.get("depends_on") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            Some(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        if let Some(Value::Array(links)) = self.passthrough.get("links") {
            out.extend(
                links
                    .iter()
                    .filter_map(|l| Some(l.as_str()?.split(':').next()?.to_owned())),
            );
        }
        out.extend(
            shared_with(&self.passthrough)
                .into_iter()
                .map(|(_, name)| name),
        );
        out
    }
}

/// A top-level secret or config of a compose file: a file of the checkout, which Compose mounts
/// read-only into the services that name it (`/run/secrets/NAME` for a secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileObject {
    pub name: String,
    /// The file, relative to the checkout root.
    pub file: String,
}

/// One service of a sanitised compose file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoService {
    pub name: String,
    pub build: Option<RepoBuild>,
    pub image: Option<String>,
    /// `None` values pass the variable through from the (clean) compose environment.
    pub environment: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<Mount>,
    /// Env files, relative to the checkout root.
    pub env_files: Vec<String>,
    /// The ports it exposes to the other services (`expose`).
    pub expose: Vec<String>,
    /// The container ports it publishes to the host (`ports` of a project's compose file); the
    /// host side is dropped, and only the web service's port is routed, through nginx.
    pub published: Vec<u16>,
    /// The restart policy it runs with: the repo's `no` or `on-failure[:N]` for a task that is
    /// meant to end (a migration), `no` for a service another one waits on with
    /// `condition: service_completed_successfully` and no policy of its own, and otherwise
    /// `unless-stopped` (`always` included: a preview put to sleep must stay stopped).
    pub restart: String,
    /// Whether another service waits for it with `condition: service_completed_successfully`:
    /// a task such as a migration, never the web app.
    pub awaited: bool,
    /// Every other allowed key, verbatim.
    pub passthrough: Map<String, Value>,
}

impl RepoService {
    /// Whether the service may end (its restart policy lets it), such as a migration: its
    /// container exiting with 0 is its success, not a failure of the preview.
    pub fn may_end(&self) -> bool {
        self.restart != KEEP_RUNNING
    }

    /// Its `profiles`: a service with any is not started, as `docker compose up` without
    /// `--profile` does not start it.
    pub fn profiles(&self) -> Vec<String> {
        self.passthrough
            .get("profiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect()
    }
}

/// The restart policy of every service that is meant to keep running.
pub const KEEP_RUNNING: &str = "unless-stopped";

/// A build section; paths relative to the checkout root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoBuild {
    pub context: String,
    /// The Dockerfile, relative to the checkout root, or `None` for the context's `Dockerfile`.
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub target: Option<String>,
    pub args: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    /// Other allowed build keys, verbatim (`no_cache`, `pull`, `shm_size`, ...).
    pub passthrough: Map<String, Value>,
}

/// A volume of a service, in long syntax.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// A bind mount of a path inside the checkout (relative to the checkout root).
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    /// A named volume of the project.
    Volume {
        source: String,
        target: String,
        read_only: bool,
    },
    /// An anonymous volume.
    Anonymous { target: String },
    /// A tmpfs mount, as given.
    Tmpfs { target: String, spec: Value },
}

/// Service keys that pass verbatim.
const PASSTHROUGH: [&str; 32] = [
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "healthcheck",
    "depends_on",
    "tmpfs",
    "stop_signal",
    "read_only",
    "shm_size",
    "ulimits",
    "extra_hosts",
    "hostname",
    "domainname",
    "dns",
    "dns_search",
    "dns_opt",
    "platform",
    "pull_policy",
    "profiles",
    "stdin_open",
    "tty",
    "cap_drop",
    "group_add",
    "links",
    "networks",
    "init",
    "attach",
    "mac_address",
    "annotations",
    "secrets",
    "configs",
];

/// Service keys the orchestrator sets itself; the repo's values are dropped with a warning.
const OVERRIDDEN: [&str; 16] = [
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "mem_swappiness",
    "cpus",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpuset",
    "cpu_count",
    "cpu_percent",
    "pids_limit",
    "deploy",
    "stop_grace_period",
    "container_name",
    "scale",
];

/// Service keys refused outright, with why.
const REFUSED: [(&str, &str); 22] = [
    (
        "ports",
        "host ports are assigned by the orchestrator (use `expose` for ports other services reach)",
    ),
    ("devices", "host devices are not available to previews"),
    (
        "device_cgroup_rules",
        "host devices are not available to previews",
    ),
    ("cap_add", "previews run without added capabilities"),
    (
        "security_opt",
        "security options are set by the orchestrator (no-new-privileges)",
    ),
    ("sysctls", "kernel parameters are not settable by previews"),
    (
        "cgroup_parent",
        "previews run in the orchestrator's cgroups",
    ),
    ("cgroup", "previews run in their own cgroup namespace"),
    ("runtime", "previews use the default runtime"),
    ("isolation", "previews use the default isolation"),
    (
        "oom_kill_disable",
        "previews may be killed when out of memory",
    ),
    (
        "oom_score_adj",
        "previews may not change their OOM priority",
    ),
    ("storage_opt", "storage options are the host's"),
    (
        "external_links",
        "previews may not link to containers outside their project",
    ),
    ("gpus", "host GPUs are not available to previews"),
    ("logging", "logging is configured by the orchestrator"),
    ("credential_spec", "not supported in previews"),
    ("blkio_config", "block I/O limits are the orchestrator's"),
    ("volume_driver", "volume drivers can mount host paths"),
    ("userns_mode", "previews run in the default user namespace"),
    ("uts", "previews run in their own UTS namespace"),
    (
        "extends",
        "extending other files is not supported; inline the service",
    ),
];

/// Build keys that pass verbatim.
const BUILD_PASSTHROUGH: [&str; 6] = [
    "no_cache",
    "pull",
    "shm_size",
    "ulimits",
    "cache_from",
    "extra_hosts",
];

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn key_line(l: &str, k: &str) -> bool {
    let t = l.trim_start().trim_start_matches("- ");
    t.strip_prefix(k)
        .is_some_and(|r| r.trim_start().starts_with(':'))
        || t.strip_prefix(&format!("\"{k}\""))
            .is_some_and(|r| r.trim_start().starts_with(':'))
}

/// The line (0-based) of `service`'s name under the top-level `services`, by indentation.
fn service_line(lines: &[&str], service: &str) -> Option<usize> {
    let services = lines
        .iter()
        .position(|l| key_line(l, "services") && indent(l) == 0)?;
    lines
        .iter()
        .enumerate()
        .skip(services + 1)
        .find(|(_, l)| key_line(l, service) && indent(l) > 0)
        .map(|(i, _)| i)
}

/// The lines nested under line `at` (0-based, with their indexes): those after it indented
/// deeper, blank lines and comments left out.
fn nested_under<'l, 't>(
    lines: &'l [&'t str],
    at: usize,
) -> impl Iterator<Item = (usize, &'t str)> + 'l {
    let base = indent(lines[at]);
    lines
        .iter()
        .copied()
        .enumerate()
        .skip(at + 1)
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .take_while(move |(_, l)| indent(l) > base)
}

/// A compose text's lines, with the line each key under `services` first starts, as
/// [`service_line`] finds them; made once for a file, so that finding a service's block does
/// not read the file from the top for each service.
pub(super) struct ComposeLines<'t> {
    lines: Vec<&'t str>,
    /// Each key on an indented line after the top-level `services:`, and its first line.
    starts: BTreeMap<&'t str, usize>,
}

impl<'t> ComposeLines<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut starts = BTreeMap::new();
        if let Some(services) = lines
            .iter()
            .position(|l| key_line(l, "services") && indent(l) == 0)
        {
            for (i, l) in lines.iter().enumerate().skip(services + 1) {
                if indent(l) > 0
                    && let Some(key) = line_key(l)
                {
                    starts.entry(key).or_insert(i);
                }
            }
        }
        ComposeLines { lines, starts }
    }

    /// The line (0-based) of `service`'s name, as [`service_line`] finds it: from the index,
    /// or by reading for an invalid name, which the index may read otherwise (one with a `:`).
    fn service_start(&self, service: &str) -> Option<usize> {
        match self.starts.get(service) {
            Some(at) => Some(*at),
            None if !valid_service_name(service) => service_line(&self.lines, service),
            None => None,
        }
    }

    /// The lines of `service`'s block (after its name), by indentation.
    fn block(&self, service: &str) -> Option<Vec<(usize, &'t str)>> {
        let at = self.service_start(service)?;
        Some(nested_under(&self.lines, at).collect())
    }

    /// The line of `key` inside `service` (or at the top level), found by indentation; for
    /// messages. A dotted key (`secrets.token.environment`) is followed as deep as the text
    /// shows it.
    fn locate(&self, service: Option<&str>, key: &str) -> Option<u64> {
        let mut segments = key.split('.');
        let first = segments.next()?;
        let mut at = match service {
            Some(s) => {
                let at = self.service_start(s)?;
                nested_under(&self.lines, at)
                    .find(|(_, l)| key_line(l, first))?
                    .0
            }
            None => self
                .lines
                .iter()
                .position(|l| key_line(l, first) && indent(l) == 0)?,
        };
        for segment in segments {
            let inner = nested_under(&self.lines, at).find(|(_, l)| key_line(l, segment));
            match inner {
                Some((i, _)) => at = i,
                None => break,
            }
        }
        Some(at as u64 + 1)
    }
}

/// The key a line starts with, as [`key_line`] reads it: the text before its first `:`,
/// unquoted. For a service name (no space, no `:`), `line_key(l) == Some(k)` exactly when
/// `key_line(l, k)`.
fn line_key(l: &str) -> Option<&str> {
    let t = l.trim_start().trim_start_matches("- ");
    let (key, _) = t.split_once(':')?;
    let key = key.trim_end();
    Some(
        key.strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(key),
    )
}

/// Lines of one service's block, for locating many values in it: the variables it refers to
/// are indexed once and each key's line is found once, so that a file of thousands of
/// references is not read from the top for each (it took seconds for 64 KiB).
pub(super) struct ServiceLines<'t> {
    block: Option<Vec<(usize, &'t str)>>,
    /// The first line referring to each variable, `${NAME` and `$NAME` apart; built on first use.
    variables: Option<[BTreeMap<&'t str, usize>; 2]>,
    /// The line of each top-level key of the service, as [`locate`] finds it.
    keys: BTreeMap<String, Option<u64>>,
}

impl<'t> ServiceLines<'t> {
    pub(super) fn new(lines: &ComposeLines<'t>, service: &str) -> Self {
        ServiceLines {
            block: lines.block(service),
            variables: None,
            keys: BTreeMap::new(),
        }
    }

    /// The first line of the block that contains one of `needles`, else the line of `key`.
    pub(super) fn locate(&mut self, key: &str, needles: &[String]) -> Option<u64> {
        let block = self.block.as_ref()?;
        needles
            .iter()
            .find_map(|n| block.iter().find(|(_, l)| l.contains(n.as_str())))
            .map(|(i, _)| *i as u64 + 1)
            .or_else(|| self.key_line(key))
    }

    /// The first line of the block that refers to variable `name` (as `${name`, else as
    /// `$name`), else the line of `key`.
    pub(super) fn locate_variable(&mut self, key: &str, name: &str) -> Option<u64> {
        let block = self.block.as_ref()?;
        let [braced, plain] = self.variables.get_or_insert_with(|| {
            let mut index: [BTreeMap<&str, usize>; 2] = Default::default();
            for &(i, line) in block {
                for (form, name) in variable_names(line) {
                    index[form].entry(name).or_insert(i);
                }
            }
            index
        });
        match braced.get(name).or_else(|| plain.get(name)) {
            Some(i) => Some(*i as u64 + 1),
            None => self.key_line(key),
        }
    }

    /// The line of `key`'s first segment in the block, as [`locate`] finds it.
    fn key_line(&mut self, key: &str) -> Option<u64> {
        let first = key.split('.').next().unwrap_or(key);
        let block = self.block.as_ref()?;
        *self.keys.entry(first.to_owned()).or_insert_with(|| {
            block
                .iter()
                .find(|(_, l)| key_line(l, first))
                .map(|(i, _)| *i as u64 + 1)
        })
    }
}

/// The variables `line` names, each as `(0, name)` for `${name` or `(1, name)` for `$name`;
/// `$$` is a literal `$`.
fn variable_names(line: &str) -> Vec<(usize, &str)> {
    let bytes = line.as_bytes();
    let name_end = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count()
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'$' {
            at += 1;
            continue;
        }
        match bytes.get(at + 1) {
            Some(b'$') => at += 2,
            Some(b'{') => {
                let end = name_end(at + 2);
                if end > at + 2 {
                    out.push((0, &line[at + 2..end]));
                }
                at = end.max(at + 2);
            }
            _ => {
                let end = name_end(at + 1);
                if end > at + 1 {
                    out.push((1, &line[at + 1..end]));
                }
                at = end.max(at + 1);
            }
        }
    }
    out
}

/// The refusals of one pass over a compose file: each check that finds one notes it here and
/// the pass goes on to the next check that does not depend on it, so that the error lists every
/// refusal at once ([`Error::from_refusals`]).
struct Refusals<'a> {
    text: &'a str,
    file: &'a str,
    /// The text's lines, split once when first needed.
    lines: std::cell::OnceCell<ComposeLines<'a>>,
    /// The refusals found so far.
    found: std::cell::RefCell<Vec<Error>>,
}

impl<'a> Refusals<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        Refusals {
            text,
            file,
            lines: std::cell::OnceCell::new(),
            found: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn lines(&self) -> &ComposeLines<'a> {
        self.lines.get_or_init(|| ComposeLines::new(self.text))
    }
}

impl Refusals<'_> {
    fn refuse_at(&self, service: &str, key: &str, line: Option<u64>, reason: String) -> Error {
        Error::ComposeRefused {
            file: self.file.to_owned(),
            line,
            service: Some(service.to_owned()),
            key: key.to_owned(),
            reason,
            more: Vec::new(),
        }
    }

    fn refuse(&self, service: Option<&str>, key: &str, reason: impl Into<String>) -> Error {
        Error::ComposeRefused {
            file: self.file.to_owned(),
            line: self.lines().locate(service, key),
            service: service.map(str::to_owned),
            key: key.to_owned(),
            reason: reason.into(),
            more: Vec::new(),
        }
    }

    /// The first line of `service`'s block that contains one of `needles`, else the line of
    /// `key`.
    fn locate_text(&self, service: &str, key: &str, needles: &[String]) -> Option<u64> {
        ServiceLines::new(self.lines(), service).locate(key, needles)
    }

    /// Notes a refusal; the pass goes on.
    fn note(&self, refusal: Error) {
        self.found.borrow_mut().push(refusal);
    }

    /// The value of `result`, or `None` with its refusal noted.
    fn noted<T>(&self, result: Result<T>) -> Option<T> {
        result.map_err(|e| self.note(e)).ok()
    }

    /// Every refusal noted, as one error, if there is any.
    fn check(&self) -> Result<()> {
        match Error::from_refusals(self.found.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A `preview-config.yml` key naming the web service, checked against the compose file.
#[derive(Debug, Clone, Copy)]
pub struct WebOverride<'a> {
    /// The service named.
    pub service: &'a str,
    /// The config file, e.g. `preview-config.yml`.
    pub config_file: &'a str,
    /// The key, e.g. `web_service`.
    pub key: &'a str,
    /// Its line in the config file.
    pub line: u64,
}

/// Parses and sanitises the compose file's text; the web service is chosen automatically.
pub fn sanitize(text: &str, ctx: &SanitizeContext) -> Result<SanitizedCompose> {
    sanitize_choosing(text, ctx, None)
}

/// Parses and sanitises the compose file's text; `web` (from preview-config.yml), when given,
/// names the web service.
pub fn sanitize_choosing(
    text: &str,
    ctx: &SanitizeContext,
    web: Option<WebOverride>,
) -> Result<SanitizedCompose> {
    let r = Refusals::new(text, &ctx.file);
    if text.len() as u64 > crate::checkout::CONFIG_LIMIT {
        return Err(Error::Config {
            file: ctx.file.clone(),
            line: None,
            key: None,
            message: format!(
                "the file is {} bytes; the limit is {}",
                text.len(),
                crate::checkout::CONFIG_LIMIT
            ),
        });
    }
    let root: Value = serde_saphyr::from_str_with_options(text, parser_options())
        .map_err(|e| yaml_error(&ctx.file, None, &e))?;
    let Value::Object(root) = root else {
        return Err(r.refuse(
            None,
            "services",
            "the file must be a mapping with a `services` key",
        ));
    };
    // From here on each check notes its refusal and the pass goes on, so that the error lists
    // every refusal of the file at once; a check that depends on another's passing says so.
    let mut warnings = Vec::new();
    let mut services_value = None;
    let mut volumes = Vec::new();
    let mut networks = Vec::new();
    let mut secrets = Vec::new();
    let mut configs = Vec::new();
    // The names the top-level `secrets` and `configs` declare, refused entries included (so
    // that a service naming one is not refused too); `None` when the key is not a mapping, and
    // the services' references cannot be checked.
    let mut secret_names = Some(Vec::new());
    let mut config_names = Some(Vec::new());
    for (key, value) in root {
        match key.as_str() {
            "services" => services_value = Some(value),
            "version" => {}
            "name" => warnings.push(format!(
                "{}: `name` is ignored; the project is named after the preview",
                ctx.file
            )),
            "volumes" => volumes = top_level_volumes(&r, value),
            "networks" => networks = top_level_networks(&r, value),
            k if k.starts_with("x-") => {}
            "include" => r.note(r.refuse(
                None,
                "include",
                "including other files is not supported; inline them",
            )),
            "secrets" => {
                secret_names = declared_names(&value);
                secrets = top_level_files(&r, ctx, "secrets", value);
            }
            "configs" => {
                config_names = declared_names(&value);
                configs = top_level_files(&r, ctx, "configs", value);
            }
            _ => r.note(r.refuse(None, &key, "unknown top-level key")),
        }
    }
    let services_map = match services_value {
        Some(Value::Object(map)) if map.is_empty() => {
            r.note(r.refuse(None, "services", "no services are defined"));
            Map::new()
        }
        Some(Value::Object(map)) if map.len() > MAX_SERVICES => {
            r.note(r.refuse(
                None,
                "services",
                format!(
                    "{} services are defined; a preview runs at most {MAX_SERVICES}",
                    map.len()
                ),
            ));
            Map::new()
        }
        Some(Value::Object(map)) => map,
        _ => {
            r.note(r.refuse(
                None,
                "services",
                "the file must define `services` as a mapping",
            ));
            Map::new()
        }
    };
    let mut services = Vec::new();
    let mut variables = Vec::new();
    let mut restart_declared = BTreeSet::new();
    let mut left_out = Vec::new();
    for (name, value) in services_map {
        if !valid_service_name(&name) {
            r.note(r.refuse(Some(&name), "services", "service names are [a-zA-Z0-9._-]"));
            continue;
        }
        let Value::Object(map) = value else {
            r.note(r.refuse(Some(&name), &name, "a service must be a mapping"));
            continue;
        };
        if let Some(image) = docker_router(&map) {
            warnings.push(format!(
                "service `{name}` ({image}) is left out: it routes by reading the Docker socket, which a preview never gets; nginx routes the preview instead"
            ));
            left_out.push(name);
            continue;
        }
        let scanned = scan_variables(&r, &name, &map, ctx.is_preview_file());
        variables.extend(scanned.refs);
        if map.contains_key("restart") {
            restart_declared.insert(name.clone());
        }
        services.push(sanitize_service(
            &r,
            ctx,
            &name,
            map,
            &scanned.refused_keys,
            &volumes,
            &mut warnings,
        ));
    }
    for service in &services {
        if let Some((key, name)) = shared_with(&service.passthrough)
            .into_iter()
            .find(|(_, name)| left_out.contains(name))
        {
            r.note(r.refuse(
                Some(&service.name),
                key,
                format!("it shares `{name}`, a proxy that reads the Docker socket, which a preview never runs"),
            ));
        }
    }
    for service in &mut services {
        for name in &left_out {
            forget_service(&mut service.passthrough, name);
        }
        for (kind, declared) in [("secrets", &secret_names), ("configs", &config_names)] {
            if let (Some(refs), Some(declared)) = (service.passthrough.get(kind), declared) {
                check_file_refs(&r, &service.name, kind, refs, declared);
            }
        }
    }
    // The web service is chosen among all the services, so the choice, and the checks that
    // depend on it (the services without image or build, the second web service), wait for a
    // file without other refusals: with a service refused, they would judge a partial file.
    r.check()?;
    let awaited = awaited_to_complete(&services);
    for service in &mut services {
        service.awaited = awaited.contains(&service.name);
        if service.awaited && !restart_declared.contains(&service.name) {
            service.restart = "no".to_owned();
        }
    }
    let (app_service, app_service_reason) = choose_web_service(&r, &services, web)?;
    // Only the web service may leave both out: it is then built from the generated Dockerfile.
    for service in services
        .iter()
        .filter(|s| s.name != app_service && s.build.is_none() && s.image.is_none())
    {
        r.note(r.refuse_at(
            &service.name,
            "image",
            r.lines().locate(None, &format!("services.{}", service.name)),
            format!(
                "the service has neither `image` nor `build`, so Compose cannot create it (only the web service, `{app_service}`, is built from the generated Dockerfile without one)"
            ),
        ));
    }
    let hostname_service = r
        .noted(choose_hostname_service(&r, &services, &app_service))
        .flatten();
    r.check()?;
    Ok(SanitizedCompose {
        file: ctx.file.clone(),
        services,
        app_service,
        app_service_reason,
        volumes,
        networks,
        secrets,
        configs,
        warnings,
        variables,
        hostname_service,
        dotenv: BTreeMap::new(),
    })
}

/// The valid names a top-level `secrets` or `configs` value declares, or `None` when it is not
/// a mapping.
fn declared_names(value: &Value) -> Option<Vec<String>> {
    let Value::Object(map) = value else {
        return None;
    };
    Some(
        map.keys()
            .filter(|name| valid_service_name(name))
            .cloned()
            .collect(),
    )
}

/// Images of reverse proxies that route by reading the Docker socket. A project runs one in
/// development; a preview is routed by nginx, so such a service is left out (and its socket
/// never mounted) rather than the whole file refused.
const DOCKER_ROUTERS: [&str; 4] = [
    "traefik",
    "jwilder/nginx-proxy",
    "nginxproxy/nginx-proxy",
    "lucaslorentz/caddy-docker-proxy",
];

/// Whether a mount's source is the Docker (or containerd) socket or its directory.
fn mentions_socket(source: &str) -> bool {
    source.contains("docker.sock")
        || source.contains("containerd.sock")
        || source.ends_with("/docker")
}

/// The image of a service that is only a [`DOCKER_ROUTERS`] proxy (not built from the repo) that
/// mounts the Docker socket; one routing from files is judged like any other service.
fn docker_router(service: &Map<String, Value>) -> Option<&str> {
    let mounts_socket = service
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|v| match v {
            Value::String(s) => mentions_socket(s.split(':').next().unwrap_or(s)),
            Value::Object(m) => m
                .get("source")
                .and_then(Value::as_str)
                .is_some_and(mentions_socket),
            _ => false,
        });
    if service.contains_key("build") || !mounts_socket {
        return None;
    }
    let image = service.get("image")?.as_str()?;
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => name,
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    DOCKER_ROUTERS.contains(&name).then_some(image)
}

/// Removes a left-out service from a service's `depends_on` and `links`.
fn forget_service(passthrough: &mut Map<String, Value>, name: &str) {
    match passthrough.get_mut("depends_on") {
        Some(Value::Array(list)) => list.retain(|d| d.as_str() != Some(name)),
        Some(Value::Object(map)) => {
            map.remove(name);
        }
        _ => {}
    }
    if let Some(Value::Array(links)) = passthrough.get_mut("links") {
        links.retain(|l| l.as_str().is_none_or(|l| l.split(':').next() != Some(name)));
    }
}

/// The keys by which a service shares another's namespace or volumes: `network_mode`, `ipc`
/// and `pid` as `service:NAME`, and `volumes_from` entries `NAME[:ro|:rw]`. Unlike `depends_on`,
/// such a reference cannot be dropped.
fn shared_with(passthrough: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for key in ["network_mode", "ipc", "pid"] {
        if let Some(name) = passthrough
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| v.strip_prefix("service:"))
        {
            out.push((key, name.to_owned()));
        }
    }
    if let Some(Value::Array(list)) = passthrough.get("volumes_from") {
        for entry in list.iter().filter_map(Value::as_str) {
            out.push((
                "volumes_from",
                entry.split(':').next().unwrap_or(entry).to_owned(),
            ));
        }
    }
    out
}

/// Points every reference a service makes to `from` at `to` (the app's service in the green
/// slot): `depends_on`, `links`, `network_mode`/`ipc`/`pid` (`service:NAME`) and `volumes_from`.
pub fn rename_references(passthrough: &mut Map<String, Value>, from: &str, to: &str) {
    match passthrough.get_mut("depends_on") {
        Some(Value::Array(names)) => {
            for name in names {
                if name.as_str() == Some(from) {
                    *name = Value::String(to.to_owned());
                }
            }
        }
        Some(Value::Object(map)) => {
            if let Some(config) = map.remove(from) {
                map.insert(to.to_owned(), config);
            }
        }
        _ => {}
    }
    if let Some(Value::Array(links)) = passthrough.get_mut("links") {
        for link in links {
            let Some(text) = link.as_str() else { continue };
            let (service, alias) = text.split_once(':').unwrap_or((text, from));
            if service == from {
                *link = Value::String(format!("{to}:{alias}"));
            }
        }
    }
    for key in ["network_mode", "ipc", "pid"] {
        if let Some(value) = passthrough.get_mut(key)
            && value.as_str().and_then(|v| v.strip_prefix("service:")) == Some(from)
        {
            *value = Value::String(format!("service:{to}"));
        }
    }
    if let Some(Value::Array(list)) = passthrough.get_mut("volumes_from") {
        for entry in list {
            let Some(text) = entry.as_str() else { continue };
            match text.split_once(':') {
                Some((name, mode)) if name == from => {
                    *entry = Value::String(format!("{to}:{mode}"));
                }
                None if text == from => *entry = Value::String(to.to_owned()),
                _ => {}
            }
        }
    }
}

/// The policy a repo's `restart` value runs with; see [`RepoService::restart`].
fn restart_policy(r: &Refusals, service: &str, value: &Value) -> Result<String> {
    let written = match value {
        // `restart: no` unquoted is YAML 1.1's false.
        Value::Bool(false) => "no".to_owned(),
        // A policy from a variable reads as its default (`${MIGRATE_RESTART:-no}`), which the
        // preview never overrides; without one, the service keeps running.
        Value::String(s) => match with_defaults(s) {
            d if d.contains('$') => KEEP_RUNNING.to_owned(),
            d => d,
        },
        _ => return Err(r.refuse(Some(service), "restart", "must be a string")),
    };
    let policy = written.as_str();
    match policy {
        "no" => Ok("no".to_owned()),
        "always" | "unless-stopped" => Ok(KEEP_RUNNING.to_owned()),
        "on-failure" => Ok(policy.to_owned()),
        _ => match policy.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(_)) => Ok(policy.to_owned()),
            _ => Err(r.refuse(
                Some(service),
                "restart",
                format!("{policy:?} is not a restart policy (no, always, on-failure[:N], unless-stopped)"),
            )),
        },
    }
}

/// The services another one waits on with `condition: service_completed_successfully`.
fn awaited_to_complete(services: &[RepoService]) -> BTreeSet<String> {
    services
        .iter()
        .filter_map(|s| s.passthrough.get("depends_on")?.as_object())
        .flatten()
        .filter(|(_, how)| how["condition"] == "service_completed_successfully")
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether a label value says yes.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "on"
    )
}

fn name_list(services: &[&RepoService]) -> String {
    services
        .iter()
        .map(|s| format!("`{}`", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The web service and why: preview-config.yml's key, else the `preview.web` label, else a
/// service named `app`, else the one service that publishes a port or exposes one and is built
/// from the repo (built ones first), else the one built service.
fn choose_web_service(
    r: &Refusals,
    services: &[RepoService],
    web: Option<WebOverride>,
) -> Result<(String, String)> {
    let file = r.file;
    if let Some(w) = web {
        return match services.iter().find(|s| s.name == w.service) {
            Some(s) => Ok((
                s.name.clone(),
                format!("{} sets {}: {}", w.config_file, w.key, w.service),
            )),
            None => Err(Error::Config {
                file: w.config_file.to_owned(),
                line: Some(w.line),
                key: Some(w.key.to_owned()),
                message: format!(
                    "{file} has no service `{}` (its services: {})",
                    w.service,
                    name_list(&services.iter().collect::<Vec<_>>())
                ),
            }),
        };
    }
    let labelled: Vec<&RepoService> = services
        .iter()
        .filter(|s| s.labels.get(WEB_LABEL).is_some_and(|v| truthy(v)))
        .collect();
    match labelled.as_slice() {
        [one] => {
            return Ok((
                one.name.clone(),
                format!("it has the label `{WEB_LABEL}` in {file}"),
            ));
        }
        [] => {}
        many => {
            return Err(r.refuse(
                None,
                "services",
                format!(
                    "{} all have the label `{WEB_LABEL}`; only one service is the web app",
                    name_list(many)
                ),
            ));
        }
    }
    if services.iter().any(|s| s.name == APP_SERVICE) {
        return Ok((
            APP_SERVICE.to_owned(),
            format!("it is named `{APP_SERVICE}`"),
        ));
    }
    // A task another service waits on to complete (a migration) is never the web app, nor a
    // service in a profile while others are not in any (Compose would not start it).
    let services: Vec<&RepoService> = services.iter().filter(|s| !s.awaited).collect();
    let unprofiled: Vec<&RepoService> = services
        .iter()
        .copied()
        .filter(|s| s.profiles().is_empty())
        .collect();
    let services = if unprofiled.is_empty() {
        services
    } else {
        unprofiled
    };
    let serving: Vec<&RepoService> = services
        .iter()
        .copied()
        .filter(|s| !s.published.is_empty() || (!s.expose.is_empty() && s.build.is_some()))
        .collect();
    let built_serving: Vec<&RepoService> = serving
        .iter()
        .copied()
        .filter(|s| s.build.is_some())
        .collect();
    let why_serving = |s: &RepoService| {
        if !s.published.is_empty() {
            format!("publishes port {}", s.published[0])
        } else {
            format!("exposes port {} and is built from the repo", s.expose[0])
        }
    };
    let built: Vec<&RepoService> = services
        .iter()
        .copied()
        .filter(|s| s.build.is_some())
        .collect();
    match (
        built_serving.as_slice(),
        built.as_slice(),
        serving.as_slice(),
    ) {
        ([one], _, [_]) => {
            return Ok((
                one.name.clone(),
                format!("it is the only service of {file} that {}", why_serving(one)),
            ));
        }
        ([one], _, _) => {
            return Ok((
                one.name.clone(),
                format!(
                    "it {} and is the only one built from the repo of those that serve a port ({})",
                    why_serving(one),
                    name_list(&serving)
                ),
            ));
        }
        // A proxy run from an image, in front of the app built from the repo: the way in.
        ([], _, [one]) if built.iter().any(|b| one.dependencies().contains(&b.name)) => {
            return Ok((
                one.name.clone(),
                format!(
                    "it is the only service of {file} that {}, in front of {} (built from the repo), which it depends on",
                    why_serving(one),
                    name_list(&built)
                ),
            ));
        }
        ([], [one], _) => {
            return Ok((
                one.name.clone(),
                format!("it is the only service of {file} built from the repo"),
            ));
        }
        ([], [], [one]) => {
            return Ok((
                one.name.clone(),
                format!("it is the only service of {file} that {}", why_serving(one)),
            ));
        }
        _ => {}
    }
    // Several built services serve: one that publishes a port beats those that only expose one.
    if let [one] = built_serving
        .iter()
        .filter(|s| !s.published.is_empty())
        .collect::<Vec<_>>()
        .as_slice()
    {
        return Ok((
            one.name.clone(),
            format!(
                "it {} and is the only one built from the repo that publishes a port (the others only expose one: {})",
                why_serving(one),
                name_list(
                    &built_serving
                        .iter()
                        .copied()
                        .filter(|s| s.published.is_empty())
                        .collect::<Vec<_>>()
                )
            ),
        ));
    }
    // Several built services publish: the one in front, which depends on the others and on
    // which none of them depends (a proxy before its API), is the way in.
    let front: Vec<&RepoService> = built_serving
        .iter()
        .copied()
        .filter(|s| {
            let behind = s.dependencies();
            built_serving.iter().any(|o| behind.contains(&o.name))
                && !built_serving
                    .iter()
                    .any(|o| o.dependencies().contains(&s.name))
        })
        .collect();
    if let [one] = front.as_slice() {
        return Ok((
            one.name.clone(),
            format!(
                "it {} in front of the others that serve ({}), which it depends on",
                why_serving(one),
                name_list(
                    &built_serving
                        .iter()
                        .copied()
                        .filter(|s| s.name != one.name)
                        .collect::<Vec<_>>()
                )
            ),
        ));
    }
    let candidates = if !built_serving.is_empty() {
        built_serving
    } else if !built.is_empty() {
        built
    } else {
        serving
    };
    let found = if candidates.is_empty() {
        "no service publishes a port or is built from the repo".to_owned()
    } else {
        format!("{} could each be", name_list(&candidates))
    };
    Err(r.refuse(
        None,
        "services",
        format!(
            "cannot tell which service is the web app ({found}): name it `{APP_SERVICE}`, give it the label `{WEB_LABEL}: \"true\"`, or set web_service in preview-config.yml"
        ),
    ))
}

/// The entries of the top-level `volumes` or `networks` mapping (`kind`), each with its spec
/// (empty when it is not a mapping); an entry with an invalid name is refused, and left out.
fn top_level_entries(r: &Refusals, kind: &str, value: Value) -> Vec<(String, Map<String, Value>)> {
    let Value::Object(map) = value else {
        return Vec::new();
    };
    let noun = kind.trim_end_matches('s');
    map.into_iter()
        .filter_map(|(name, spec)| {
            if !valid_service_name(&name) {
                r.note(r.refuse(
                    None,
                    &format!("{kind}.{name}"),
                    format!("{noun} names are [a-zA-Z0-9._-]"),
                ));
                return None;
            }
            let spec = match spec {
                Value::Object(spec) => spec,
                _ => Map::new(),
            };
            Some((name, spec))
        })
        .collect()
}

/// The named volumes the top-level `volumes` declares. One whose spec is refused is still
/// declared, so that the services mounting it are not refused for that too.
fn top_level_volumes(r: &Refusals, value: Value) -> Vec<String> {
    let mut out = Vec::new();
    for (name, spec) in top_level_entries(r, "volumes", value) {
        for key in spec.keys().filter(|key| *key != "labels") {
            r.note(r.refuse(
                None,
                &format!("volumes.{name}.{key}"),
                "volumes are plain local volumes of the preview: drivers, driver options, names and external volumes can reach the host or other previews",
            ));
        }
        out.push(name);
    }
    out
}

/// A service's `post_start` or `pre_stop` hooks: commands Compose runs in the container. A
/// privileged hook would have every capability, so only `command`, `user`, `working_dir` and
/// `environment` are allowed.
fn check_hooks(r: &Refusals, service: &str, key: &str, hooks: &Value) -> Result<()> {
    let Value::Array(hooks) = hooks else {
        return Err(r.refuse(Some(service), key, "must be a list"));
    };
    for hook in hooks {
        let Value::Object(hook) = hook else {
            return Err(r.refuse(Some(service), key, "each hook must be a mapping"));
        };
        if let Some(other) = hook.keys().find(|k| {
            !matches!(
                k.as_str(),
                "command" | "user" | "working_dir" | "environment"
            )
        }) {
            return Err(r.refuse(
                Some(service),
                &format!("{key}.{other}"),
                "hooks may set only command, user, working_dir and environment (a privileged hook would control the host)",
            ));
        }
    }
    Ok(())
}

/// Top-level `secrets` or `configs` (`kind`): each must be a `file:` of the checkout; secrets and
/// configs from the environment, the host or the swarm are refused. Each entry is judged on its
/// own; the refused ones are left out.
fn top_level_files(
    r: &Refusals,
    ctx: &SanitizeContext,
    kind: &str,
    value: Value,
) -> Vec<FileObject> {
    let Value::Object(map) = value else {
        r.note(r.refuse(None, kind, "must be a mapping"));
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(name, spec)| r.noted(top_level_file(r, ctx, kind, name, spec)))
        .collect()
}

/// One entry of the top-level `secrets` or `configs` (`kind`): a `file:` of the checkout.
fn top_level_file(
    r: &Refusals,
    ctx: &SanitizeContext,
    kind: &str,
    name: String,
    spec: Value,
) -> Result<FileObject> {
    let key = format!("{kind}.{name}");
    if !valid_service_name(&name) {
        return Err(r.refuse(None, &key, "names are [a-zA-Z0-9._-]"));
    }
    let file = match spec {
        Value::Object(spec) => match (spec.get("file"), spec.keys().find(|k| *k != "file")) {
            (Some(Value::String(file)), None) => file.clone(),
            (_, Some(other)) => {
                return Err(r.refuse(
                    None,
                    &format!("{key}.{other}"),
                    format!("only `file:` (a file of the checkout) is supported: {kind} from the environment, the host or a swarm are not given to previews"),
                ));
            }
            _ => return Err(r.refuse(None, &key, "needs `file:`, a file of the checkout")),
        },
        _ => return Err(r.refuse(None, &key, "needs `file:`, a file of the checkout")),
    };
    let rel = inside_checkout(r, ctx, None, &format!("{key}.file"), &file)?;
    if !ctx.checkout.is_file(&rel) {
        return Err(r.refuse(
            None,
            &key,
            format!("{file:?} is not a file in the checkout"),
        ));
    }
    Ok(FileObject { name, file: rel })
}

/// A service's `secrets` or `configs` (`kind`): each entry a name `declared` at the top level,
/// or a mapping with such a `source`; each entry that is not is refused.
fn check_file_refs(r: &Refusals, service: &str, kind: &str, refs: &Value, declared: &[String]) {
    let Value::Array(items) = refs else {
        r.note(r.refuse(Some(service), kind, "must be a list"));
        return;
    };
    for item in items {
        let name = match item {
            Value::String(name) => name.as_str(),
            Value::Object(map) => map
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            _ => "",
        };
        if !declared.iter().any(|d| d == name) {
            r.note(r.refuse(
                Some(service),
                kind,
                format!("{name:?} is not among the file's top-level {kind}"),
            ));
        }
    }
}

fn top_level_networks(r: &Refusals, value: Value) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (name, spec) in top_level_entries(r, "networks", value) {
        let mut internal = false;
        for (key, v) in spec {
            match key.as_str() {
                "labels" => {}
                "internal" => internal = v.as_bool().unwrap_or(false),
                "driver" if v.as_str() == Some("bridge") => {}
                _ => r.note(r.refuse(
                    None,
                    &format!("networks.{name}.{key}"),
                    "networks are private bridges of the preview: drivers, names, IPAM and external networks could join the host or other previews",
                )),
            }
        }
        out.push((name, internal));
    }
    out
}

/// What Compose's schema accepts at the top of a key's value. The sanitiser passes many keys
/// through as written, so a value of the wrong shape is refused here, naming the file, line and
/// key, rather than by Compose when the preview is deployed (or, for a key the sanitiser reads,
/// instead of being dropped without a word).
#[derive(Debug, Clone, Copy)]
enum Shape {
    String,
    BoolOrString,
    NumberOrString,
    Mapping,
    /// A list of strings (or of numbers or strings, when `numbers`).
    List {
        numbers: bool,
    },
    /// A string or a list of strings.
    StringOrList,
    /// Nothing, a string or a list of strings.
    NullStringOrList,
    /// A list of strings or a mapping.
    ListOrMapping,
}

/// The shapes of the service keys (and build keys, as `build.KEY`) that are passed through or
/// read as strings, as Compose's schema has them (checked against `docker compose config`).
const SHAPES: [(&str, Shape); 42] = [
    ("working_dir", Shape::String),
    ("user", Shape::String),
    ("stop_signal", Shape::String),
    ("pull_policy", Shape::String),
    ("platform", Shape::String),
    ("mac_address", Shape::String),
    ("hostname", Shape::String),
    ("domainname", Shape::String),
    ("ipc", Shape::String),
    ("tty", Shape::BoolOrString),
    ("stdin_open", Shape::BoolOrString),
    ("read_only", Shape::BoolOrString),
    ("init", Shape::BoolOrString),
    ("attach", Shape::BoolOrString),
    ("shm_size", Shape::NumberOrString),
    // Compose's schema allows `pid: null`, and Compose then panics.
    ("pid", Shape::String),
    ("healthcheck", Shape::Mapping),
    ("ulimits", Shape::Mapping),
    ("volumes_from", Shape::List { numbers: false }),
    ("profiles", Shape::List { numbers: false }),
    ("links", Shape::List { numbers: false }),
    ("dns_opt", Shape::List { numbers: false }),
    ("cap_drop", Shape::List { numbers: false }),
    ("group_add", Shape::List { numbers: true }),
    ("expose", Shape::List { numbers: true }),
    ("tmpfs", Shape::StringOrList),
    ("dns", Shape::StringOrList),
    ("dns_search", Shape::StringOrList),
    ("command", Shape::NullStringOrList),
    ("entrypoint", Shape::NullStringOrList),
    ("networks", Shape::ListOrMapping),
    ("extra_hosts", Shape::ListOrMapping),
    ("depends_on", Shape::ListOrMapping),
    ("annotations", Shape::ListOrMapping),
    ("build.target", Shape::String),
    ("build.dockerfile_inline", Shape::String),
    ("build.pull", Shape::BoolOrString),
    ("build.no_cache", Shape::BoolOrString),
    ("build.shm_size", Shape::NumberOrString),
    ("build.ulimits", Shape::Mapping),
    ("build.cache_from", Shape::List { numbers: false }),
    ("build.extra_hosts", Shape::ListOrMapping),
];

/// Refuses `value` of `key` if its shape is not one Compose accepts (see [`SHAPES`]).
fn check_shape(r: &Refusals, service: &str, key: &str, value: &Value) -> Result<()> {
    let Some((_, shape)) = SHAPES.iter().find(|(k, _)| *k == key) else {
        return Ok(());
    };
    let strings = |items: &[Value], numbers: bool| {
        items
            .iter()
            .all(|v| v.is_string() || (numbers && v.is_number()))
    };
    let (fits, expected) = match (*shape, value) {
        (Shape::String, v) => (v.is_string(), "a string"),
        (Shape::BoolOrString, v) => (v.is_string() || v.is_boolean(), "true, false or a string"),
        (Shape::NumberOrString, v) => (v.is_string() || v.is_number(), "a number or a string"),
        (Shape::Mapping, v) => (v.is_object(), "a mapping"),
        (Shape::List { numbers }, Value::Array(items)) => (
            strings(items, numbers),
            if numbers {
                "a list of numbers or strings"
            } else {
                "a list of strings"
            },
        ),
        (Shape::List { numbers: true }, _) => (false, "a list of numbers or strings"),
        (Shape::List { numbers: false }, _) => (false, "a list of strings"),
        (Shape::StringOrList | Shape::NullStringOrList, Value::Array(items)) => {
            (strings(items, false), "a string or a list of strings")
        }
        (Shape::StringOrList, v) => (v.is_string(), "a string or a list of strings"),
        (Shape::NullStringOrList, v) => (
            v.is_string() || v.is_null(),
            "a string or a list of strings",
        ),
        (Shape::ListOrMapping, Value::Array(items)) => {
            (strings(items, false), "a list of strings or a mapping")
        }
        (Shape::ListOrMapping, v) => (v.is_object(), "a list of strings or a mapping"),
    };
    if fits {
        return Ok(());
    }
    Err(r.refuse(
        Some(service),
        key,
        format!("must be {expected}, as Compose reads it"),
    ))
}

/// A service, each of its keys judged on its own: a refused key is noted and left out, and the
/// rest go on. A key in `refused_keys` (its variables were refused) is not judged again: its
/// value as written is not what the repo meant.
fn sanitize_service(
    r: &Refusals,
    ctx: &SanitizeContext,
    name: &str,
    map: Map<String, Value>,
    refused_keys: &BTreeSet<String>,
    declared_volumes: &[String],
    warnings: &mut Vec<String>,
) -> RepoService {
    let mut out = RepoService {
        name: name.to_owned(),
        build: None,
        image: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::new(),
        volumes: Vec::new(),
        env_files: Vec::new(),
        expose: Vec::new(),
        published: Vec::new(),
        restart: KEEP_RUNNING.to_owned(),
        awaited: false,
        passthrough: Map::new(),
    };
    for (key, value) in map {
        if refused_keys.contains(&key) {
            continue;
        }
        let value = match (key.as_str(), value) {
            ("build", Value::Object(mut build)) => {
                build.retain(|k, _| !refused_keys.contains(&format!("build.{k}")));
                // The Dockerfile's path is read from the context, which is then unknown.
                if refused_keys.contains("build.context") {
                    build.remove("dockerfile");
                }
                Value::Object(build)
            }
            (_, value) => value,
        };
        let judged = service_key(r, ctx, &mut out, key, value, declared_volumes, warnings);
        r.noted(judged);
    }
    if out.build.is_some()
        && let Some(image) = out.image.take()
    {
        warnings.push(format!(
            "service `{name}`: `image: {image}` is ignored because the service is built; a built image must not take another image's name on the host"
        ));
    }
    out
}

/// One key of service `out` (`out.name`), judged and put into `out`; see [`sanitize_service`].
/// Within `build`, `volumes` and `env_file`, each entry is judged on its own (and noted).
fn service_key(
    r: &Refusals,
    ctx: &SanitizeContext,
    out: &mut RepoService,
    key: String,
    value: Value,
    declared_volumes: &[String],
    warnings: &mut Vec<String>,
) -> Result<()> {
    let name = out.name.clone();
    let name = name.as_str();
    let svc = Some(name);
    let k = key.as_str();
    if k == "ports" && !ctx.is_preview_file() {
        out.published = published_ports(r, name, &value)?;
        warnings.push(format!(
            "service `{name}`: `ports` dropped; no host port is published, and only the web service's port is routed, through nginx"
        ));
        return Ok(());
    }
    if let Some((_, reason)) = REFUSED.iter().find(|(r, _)| *r == k) {
        return Err(r.refuse(svc, k, *reason));
    }
    check_shape(r, name, k, &value)?;
    match k {
        "privileged" => {
            if value.as_bool() != Some(false) {
                return Err(r.refuse(svc, k, "privileged containers control the host"));
            }
        }
        "network_mode" => {
            let mode = value.as_str().unwrap_or_default();
            if !(mode == "none" || mode.starts_with("service:")) {
                return Err(r.refuse(
                    svc,
                    k,
                    format!("network_mode {mode:?} would leave the preview's own network (only `none` and `service:NAME` are allowed)"),
                ));
            }
            out.passthrough.insert(key, value);
        }
        "pid" | "ipc" => {
            let mode = value.as_str().unwrap_or_default();
            if mode == "host" || mode.starts_with("container:") || (k == "ipc" && mode == "shareable") {
                return Err(r.refuse(
                    svc,
                    k,
                    format!("{k} {mode:?} shares a namespace outside the preview"),
                ));
            }
            out.passthrough.insert(key, value);
        }
        "volumes_from" => {
            for v in value.as_array().into_iter().flatten() {
                let s = v.as_str().unwrap_or_default();
                if s.starts_with("container:") {
                    return Err(r.refuse(svc, k, "volumes of containers outside the preview are not reachable"));
                }
            }
            out.passthrough.insert(key, value);
        }
        "build" => out.build = Some(sanitize_build(r, ctx, name, value)?),
        "image" => {
            let Value::String(image) = value else {
                return Err(r.refuse(svc, k, "must be a string"));
            };
            out.image = Some(image);
        }
        "environment" => out.environment = key_values(r, svc, k, value)?,
        "post_start" | "pre_stop" => {
            check_hooks(r, name, k, &value)?;
            out.passthrough.insert(key, value);
        }
        "labels" => {
            out.labels = key_values(r, svc, k, value)?
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect();
            if let Some(reserved) = out.labels.keys().find(|l| l.starts_with(RESERVED_LABELS)) {
                return Err(r.refuse(
                    svc,
                    k,
                    format!("`{reserved}`: labels under `{RESERVED_LABELS}` are the orchestrator's"),
                ));
            }
        }
        "env_file" => {
            let entries = match value {
                Value::String(s) => vec![Value::String(s)],
                Value::Array(items) => items,
                _ => return Err(r.refuse(svc, k, "must be a path or a list of paths")),
            };
            let files: Vec<String> = entries
                .into_iter()
                .filter_map(|i| r.noted(match i {
                    Value::String(s) => Ok(s),
                    Value::Object(m) => m
                        .get("path")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| r.refuse(svc, k, "each entry needs a path")),
                    _ => Err(r.refuse(svc, k, "entries must be paths")),
                }))
                .collect();
            for file in files {
                let env_file = inside_checkout(r, ctx, svc, k, &file).and_then(|rel| {
                    if ctx.checkout.is_file(&rel) {
                        Ok(rel)
                    } else {
                        Err(r.refuse(svc, k, format!("{file:?} is not a file in the checkout")))
                    }
                });
                out.env_files.extend(r.noted(env_file));
            }
        }
        "volumes" => {
            let Value::Array(items) = value else {
                return Err(r.refuse(svc, k, "must be a list"));
            };
            for item in items {
                let Some(mut mount) = r.noted(sanitize_volume(r, ctx, name, item, declared_volumes)) else {
                    continue;
                };
                if let Mount::Bind { source, read_only, .. } = &mut mount {
                    if ctx.checkout.kind(std::path::Path::new(source)).is_none() {
                        warnings.push(format!(
                            "service `{name}`: the bind mount {source:?} is not in the checkout; Docker creates an empty directory there, which the app gets instead of a file"
                        ));
                    }
                    // A container that could write the checkout could put a symlink where
                    // Docker, on the host, later reads a mount, a secret or an env file.
                    if !*read_only {
                        *read_only = true;
                        warnings.push(format!(
                            "service `{name}`: the bind mount {source:?} is read-only in previews (a preview must not change its checkout, which the host reads)"
                        ));
                    }
                }
                out.volumes.push(mount);
            }
        }
        "expose" => {
            for v in value.as_array().into_iter().flatten() {
                let port = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(r.refuse(svc, k, "entries must be ports")),
                };
                out.expose.push(port);
            }
        }
        "restart" => out.restart = restart_policy(r, name, &value)?,
        "develop" => warnings.push(format!("service `{name}`: `develop` is ignored in previews")),
        _ if OVERRIDDEN.contains(&k) => warnings.push(format!(
            "service `{name}`: `{k}` is ignored; limits, restart policy and names are set by the orchestrator"
        )),
        _ if PASSTHROUGH.contains(&k) || k.starts_with("x-") => {
            out.passthrough.insert(key, value);
        }
        _ => return Err(r.refuse(svc, k, "this key is not allowed in previews")),
    }
    Ok(())
}

/// The container ports of a `ports` list (short or long syntax), skipping ranges and ports given
/// by variables: the host side is dropped, so only the container side matters.
fn published_ports(r: &Refusals, service: &str, value: &Value) -> Result<Vec<u16>> {
    let Value::Array(items) = value else {
        return Err(r.refuse(Some(service), "ports", "must be a list"));
    };
    let mut out = Vec::new();
    for item in items {
        let container = match item {
            Value::Number(n) => n.to_string(),
            Value::String(s) => {
                let s = with_defaults(s);
                let no_proto = s.split('/').next().unwrap_or_default();
                no_proto.rsplit(':').next().unwrap_or_default().to_owned()
            }
            Value::Object(m) => match m.get("target") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => continue,
            },
            _ => return Err(r.refuse(Some(service), "ports", "entries must be ports")),
        };
        if let Ok(port) = container.trim().parse::<u16>()
            && port > 0
            && !out.contains(&port)
        {
            out.push(port);
        }
    }
    Ok(out)
}

fn sanitize_build(
    r: &Refusals,
    ctx: &SanitizeContext,
    service: &str,
    value: Value,
) -> Result<RepoBuild> {
    let svc = Some(service);
    let map = match value {
        Value::String(context) => {
            let mut m = Map::new();
            m.insert("context".into(), Value::String(context));
            m
        }
        Value::Object(m) => m,
        _ => return Err(r.refuse(svc, "build", "must be a path or a mapping")),
    };
    let mut build = RepoBuild {
        context: ".".into(),
        dockerfile: None,
        dockerfile_inline: None,
        target: None,
        args: BTreeMap::new(),
        labels: BTreeMap::new(),
        passthrough: Map::new(),
    };
    let mut dockerfile = None;
    let mut context_refused = false;
    for (key, value) in map {
        let key_is_context = key == "context";
        let judge = || -> Result<()> {
            let k = format!("build.{key}");
            check_shape(r, service, &k, &value)?;
            match key.as_str() {
                "context" => {
                    let Value::String(c) = value else {
                        return Err(r.refuse(svc, &k, "must be a path"));
                    };
                    if c.contains("://") || c.starts_with("git@") {
                        return Err(r.refuse(svc, &k, "remote build contexts are not fetched"));
                    }
                    build.context = inside_checkout(r, ctx, svc, &k, &c)?;
                    if !ctx.checkout.is_dir(&build.context) {
                        return Err(r.refuse(
                            svc,
                            &k,
                            format!("{c:?} is not a directory in the checkout"),
                        ));
                    }
                }
                "dockerfile" => {
                    let Value::String(d) = value else {
                        return Err(r.refuse(svc, &k, "must be a path"));
                    };
                    dockerfile = Some(d);
                }
                "dockerfile_inline" => build.dockerfile_inline = value.as_str().map(str::to_owned),
                "target" => build.target = value.as_str().map(str::to_owned),
                "args" => build.args = key_values(r, svc, &k, value)?,
                "labels" => {
                    build.labels = key_values(r, svc, &k, value)?
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect();
                }
                b if BUILD_PASSTHROUGH.contains(&b) => {
                    build.passthrough.insert(key, value);
                }
                "network" => {
                    return Err(r.refuse(
                        svc,
                        &k,
                        "build steps use the default build network, never the host's",
                    ));
                }
                "tags" => {
                    return Err(r.refuse(
                        svc,
                        &k,
                        "extra tags could overwrite other images on the host",
                    ));
                }
                "privileged" | "entitlements" => {
                    return Err(r.refuse(svc, &k, "builds run unprivileged"));
                }
                "additional_contexts" | "ssh" | "secrets" => {
                    return Err(r.refuse(
                        svc,
                        &k,
                        "builds see only the checkout, never host files, agents or secrets",
                    ));
                }
                "cache_to" => return Err(r.refuse(svc, &k, "cache exports can write to the host")),
                _ => return Err(r.refuse(svc, &k, "this build key is not allowed in previews")),
            }
            Ok(())
        };
        let judged = judge();
        context_refused |= key_is_context && judged.is_err();
        r.noted(judged);
    }
    // The Dockerfile's path is read from the context: with the context refused, it is unknown.
    if let Some(d) = dockerfile.filter(|_| !context_refused) {
        let joined = crate::detect::join_str(&build.context, &d);
        let rel = inside_checkout(r, ctx, svc, "build.dockerfile", &joined).map_err(|_| {
            r.refuse(
                svc,
                "build.dockerfile",
                format!("{d:?} is outside the checkout"),
            )
        })?;
        if !ctx.checkout.is_file(&rel) {
            return Err(r.refuse(
                svc,
                "build.dockerfile",
                format!("{d:?} is not a file in the checkout"),
            ));
        }
        build.dockerfile = Some(rel);
    }
    Ok(build)
}

fn sanitize_volume(
    r: &Refusals,
    ctx: &SanitizeContext,
    service: &str,
    item: Value,
    declared: &[String],
) -> Result<Mount> {
    let svc = Some(service);
    let (kind, source, target, read_only, tmpfs_spec) = match item {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, *target, ""),
                [source, target] => (Some(*source), *target, ""),
                [source, target, mode] => (Some(*source), *target, *mode),
                _ => return Err(r.refuse(svc, "volumes", format!("cannot read volume {s:?}"))),
            };
            let kind = match source {
                None => "anonymous",
                Some(src) if src.starts_with(['.', '/', '~']) => "bind",
                Some(_) => "volume",
            };
            let read_only = mode.split(',').any(|m| m == "ro");
            (
                kind.to_owned(),
                source.map(str::to_owned),
                target.to_owned(),
                read_only,
                Value::Null,
            )
        }
        Value::Object(m) => {
            let kind = m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("volume")
                .to_owned();
            let source = m.get("source").and_then(Value::as_str).map(str::to_owned);
            let target = m
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(bind) = m.get("bind").and_then(Value::as_object)
                && bind
                    .get("propagation")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.contains("shared") || p.contains("slave"))
            {
                return Err(r.refuse(
                    svc,
                    "volumes",
                    "mount propagation to or from the host is not allowed",
                ));
            }
            let read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let kind = if kind == "volume" && source.is_none() {
                "anonymous".to_owned()
            } else {
                kind
            };
            (
                kind,
                source,
                target,
                read_only,
                m.get("tmpfs").cloned().unwrap_or(Value::Null),
            )
        }
        _ => return Err(r.refuse(svc, "volumes", "entries must be strings or mappings")),
    };
    if !target.starts_with('/') {
        return Err(r.refuse(
            svc,
            "volumes",
            format!("the target {target:?} must be an absolute path in the container"),
        ));
    }
    if source.as_deref().is_some_and(mentions_socket) || target.contains("docker.sock") {
        return Err(r.refuse(
            svc,
            "volumes",
            "the Docker socket would give the preview control of the host",
        ));
    }
    match kind.as_str() {
        "bind" => {
            let source = source.unwrap_or_default();
            let rel = inside_checkout(r, ctx, svc, "volumes", &source).map_err(|_| {
                r.refuse(
                    svc,
                    "volumes",
                    format!("the bind mount {source:?} is outside the checkout; previews may only mount their own files"),
                )
            })?;
            Ok(Mount::Bind {
                source: rel,
                target,
                read_only,
            })
        }
        "volume" => {
            let source = source.unwrap_or_default();
            if !declared.contains(&source) {
                return Err(r.refuse(
                    svc,
                    "volumes",
                    format!("the volume {source:?} is not declared under the top-level `volumes`"),
                ));
            }
            Ok(Mount::Volume {
                source,
                target,
                read_only,
            })
        }
        "anonymous" => Ok(Mount::Anonymous { target }),
        "tmpfs" => Ok(Mount::Tmpfs {
            target,
            spec: tmpfs_spec,
        }),
        other => Err(r.refuse(
            svc,
            "volumes",
            format!("volume type {other:?} is not allowed"),
        )),
    }
}

/// A path of the compose file, relative to its directory, as a checkout-relative path that
/// stays inside the checkout, symlinks included.
fn inside_checkout(
    r: &Refusals,
    ctx: &SanitizeContext,
    svc: Option<&str>,
    key: &str,
    path: &str,
) -> Result<String> {
    let outside = |why: String| r.refuse(svc, key, why);
    if path.starts_with('/') || path.starts_with('~') {
        return Err(outside(format!(
            "{path:?} is a host path outside the checkout"
        )));
    }
    let joined = crate::detect::join_str(ctx.dir(), path);
    let rel = normalize_relative(&joined)
        .map_err(|_| outside(format!("{path:?} leads outside the checkout")))?;
    ctx.checkout
        .resolve(std::path::Path::new(&rel))
        .map_err(|e| outside(format!("{path:?}: {e}")))?;
    Ok(rel)
}

/// `environment`, `labels` and `args` as a map, from either the list or the mapping form.
fn key_values(
    r: &Refusals,
    svc: Option<&str>,
    key: &str,
    value: Value,
) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                let Value::String(s) = item else {
                    return Err(r.refuse(svc, key, "list entries must be KEY=value strings"));
                };
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None => out.insert(s, None),
                };
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => {
                        return Err(r.refuse(
                            svc,
                            key,
                            format!("the value of {k} must be a scalar"),
                        ));
                    }
                };
                out.insert(k, v);
            }
        }
        _ => return Err(r.refuse(svc, key, "must be a list or a mapping")),
    }
    Ok(out)
}

/// A second web service of the repo's compose file (a front end beside the API, an admin):
/// with hostnames on (PREVIEW_DOMAIN), it is published on 127.0.0.1 at a port of its own and
/// nginx serves it at `{slug}-pr-{N}-{label}.{domain}`
/// ([`crate::id::PreviewId::service_host_label`]); with hostnames off it stays private.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostnameService {
    /// The service.
    pub service: String,
    /// Its [`HOSTNAME_LABEL`], a checked [`is_service_label`].
    pub label: String,
    /// The container port nginx reaches: its first published port, else its first exposed one.
    pub port: u16,
}

/// Longest [`HOSTNAME_LABEL`] value: with the preview's own label it must fit one DNS label.
pub const SERVICE_LABEL_MAX: usize = 20;

/// True for a [`HOSTNAME_LABEL`] value: 1 to [`SERVICE_LABEL_MAX`] of `[a-z0-9-]` in parts
/// joined by single dashes, starting with a letter, none of them `pr` (reserved: it marks where
/// a preview's own label ends, see [`crate::id::PreviewId::service_host_label`]).
pub fn is_service_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= SERVICE_LABEL_MAX
        && label.starts_with(|c: char| c.is_ascii_lowercase())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && label
            .split('-')
            .all(|part| !part.is_empty() && part != "pr")
}

/// The service with the [`HOSTNAME_LABEL`], checked: one at most, not the web service, a valid
/// label, and a port to route to.
fn choose_hostname_service(
    r: &Refusals,
    services: &[RepoService],
    app_service: &str,
) -> Result<Option<HostnameService>> {
    let labelled: Vec<&RepoService> = services
        .iter()
        .filter(|s| s.labels.contains_key(HOSTNAME_LABEL))
        .collect();
    let service = match labelled.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            return Err(r.refuse(
                None,
                "services",
                format!(
                    "{} all have the label `{HOSTNAME_LABEL}`; one service beside the web service may have its own hostname",
                    name_list(many)
                ),
            ));
        }
    };
    let name = service.name.as_str();
    let refuse = |reason: String| {
        let line = r.locate_text(name, "labels", &[HOSTNAME_LABEL.to_owned()]);
        r.refuse_at(name, "labels", line, reason)
    };
    let label = service.labels[HOSTNAME_LABEL].trim();
    if name == app_service {
        return Err(refuse(format!(
            "`{name}` is the web service, served at the preview's own hostname; `{HOSTNAME_LABEL}` names a second service's"
        )));
    }
    if !is_service_label(label) {
        return Err(refuse(format!(
            "`{HOSTNAME_LABEL}: {label}` is not a hostname label: 1-{SERVICE_LABEL_MAX} of [a-z0-9-] starting with a letter, in parts joined by single dashes, none of them `pr` (e.g. `admin`)"
        )));
    }
    let Some(port) = routed_port(service) else {
        return Err(refuse(format!(
            "`{name}` has `{HOSTNAME_LABEL}: {label}` but no port to route to: list it in `ports` or `expose`"
        )));
    };
    Ok(Some(HostnameService {
        service: name.to_owned(),
        label: label.to_owned(),
        port,
    }))
}

/// The container port nginx reaches a second web service at: its first published port, else
/// its first exposed one.
fn routed_port(service: &RepoService) -> Option<u16> {
    service.published.first().copied().or_else(|| {
        service
            .expose
            .iter()
            .find_map(|p| p.split('/').next()?.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
    })
}

/// Applies preview-config.yml's `hostname_service` key (`key.service`), which names the second
/// web service over any `preview.hostname` label: its hostname label is its own
/// `preview.hostname`, else its name. Errors name the config file, key and line.
pub fn name_hostname_service(compose: &mut SanitizedCompose, key: WebOverride) -> Result<()> {
    let refuse = |message: String| Error::Config {
        file: key.config_file.to_owned(),
        line: Some(key.line),
        key: Some(key.key.to_owned()),
        message,
    };
    let file = &compose.file;
    let Some(service) = compose.services.iter().find(|s| s.name == key.service) else {
        return Err(refuse(format!(
            "{file} has no service `{}` (its services: {})",
            key.service,
            name_list(&compose.services.iter().collect::<Vec<_>>())
        )));
    };
    let name = service.name.as_str();
    if name == compose.app_service {
        return Err(refuse(format!(
            "`{name}` is the web service, served at the preview's own hostname; name a second service"
        )));
    }
    let label = service
        .labels
        .get(HOSTNAME_LABEL)
        .map_or(name, |l| l.trim());
    if !is_service_label(label) {
        return Err(refuse(format!(
            "`{label}` is not a hostname label: 1-{SERVICE_LABEL_MAX} of [a-z0-9-] starting with a letter, in parts joined by single dashes, none of them `pr`; give `{name}` the label `{HOSTNAME_LABEL}: LABEL` in {file}"
        )));
    }
    let Some(port) = routed_port(service) else {
        return Err(refuse(format!(
            "`{name}` has no port to route to: list it in `ports` or `expose` in {file}"
        )));
    };
    compose.hostname_service = Some(HostnameService {
        service: name.to_owned(),
        label: label.to_owned(),
        port,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> (tempfile::TempDir, Checkout) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join(".env.preview"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("/var/run", root.join("run-link")).unwrap();
        let c = Checkout::open(&root).unwrap();
        (dir, c)
    }

    fn run(text: &str) -> Result<SanitizedCompose> {
        let (_d, c) = checkout();
        sanitize(
            text,
            &SanitizeContext {
                checkout: &c,
                file: "docker-compose.preview.yml".into(),
            },
        )
    }

    /// Sanitises `text` as the project's own `compose.yaml`, with an optional web_service key.
    fn run_project(text: &str, web: Option<&str>) -> Result<SanitizedCompose> {
        let (_d, c) = checkout();
        sanitize_choosing(
            text,
            &SanitizeContext {
                checkout: &c,
                file: "compose.yaml".into(),
            },
            web.map(|service| WebOverride {
                service,
                config_file: "preview-config.yml",
                key: "web_service",
                line: 3,
            }),
        )
    }

    proptest::proptest! {
        /// The index of service blocks reads a line's key as `key_line` does, for any service
        /// name, so it finds the blocks `service_line` finds.
        #[test]
        fn line_key_reads_keys_as_key_line_does(
            line in "[ \t\"a-b:_.#-]{0,12}",
            name in "[a-b_.-]{1,3}",
        ) {
            proptest::prop_assert_eq!(line_key(&line) == Some(name.as_str()), key_line(&line, &name));
        }
    }

    /// As many services as a file may have, each with a reference, located by the block index.
    #[test]
    fn each_of_many_services_has_its_references_located() {
        let mut text = "services:\n  app:\n    build: .\n".to_owned();
        for i in 0..MAX_SERVICES - 1 {
            text.push_str(&format!("  s{i}:\n    image: a\n    command: echo $V{i}\n"));
        }
        let s = run(&text).unwrap();
        assert_eq!(s.variables.len(), MAX_SERVICES - 1);
        for v in &s.variables {
            let i: u64 = v.name[1..].parse().unwrap();
            assert_eq!(v.line, Some(6 + 3 * i), "{v:?}");
        }
    }

    /// Found while writing the hostile-input tests: each reference was located by reading the
    /// file from the top, so 3,000 of them in 60 KiB took 7.7 s (debug) and 30,000 `$X` 4.4 s.
    /// The lines found are those of the variable itself, not of one whose name it begins.
    #[test]
    fn thousands_of_references_are_each_located_on_their_line() {
        let mut text = "services:\n  app:\n    build: .\n    environment:\n".to_owned();
        text.push_str("      LITERAL: $$V1 ${V10}\n");
        for i in 0..2500 {
            text.push_str(&format!("      A{i}: $V{i}\n"));
        }
        text.push_str(&format!("      MANY: {}\n", "$X".repeat(8_000)));
        let s = run(&text).unwrap();
        assert_eq!(s.variables.len(), 2500 + 1 + 8_000);
        let line = |name: &str| {
            s.variables
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.line)
        };
        // `$$V1` is a literal, and `${V10}` another variable: `V1` is on its own line.
        assert_eq!(line("V10"), Some(5));
        assert_eq!(line("V1"), Some(7));
        assert_eq!(line("V2499"), Some(2505));
        assert_eq!(line("X"), Some(2506));
    }

    /// Found while writing the hostile-input tests, by giving every key a wrong value and asking
    /// `docker compose config`: a passed-through value of a shape Compose refuses passed, and
    /// the deploy then failed on Compose's message about the rendered file; `build.target`,
    /// `build.dockerfile_inline` and `expose` of the wrong shape were dropped without a word.
    #[test]
    fn values_of_a_shape_compose_refuses_are_refused_with_their_line() {
        for (service, expected) in [
            (
                "    working_dir: 5\n",
                "compose.yaml:4: service `web`: key `working_dir`: must be a string, as Compose reads it",
            ),
            (
                "    expose: \"8000\"\n",
                "compose.yaml:4: service `web`: key `expose`: must be a list of numbers or strings, as Compose reads it",
            ),
            (
                "    volumes_from: db\n",
                "compose.yaml:4: service `web`: key `volumes_from`: must be a list of strings, as Compose reads it",
            ),
            (
                "    pid: null\n",
                "compose.yaml:4: service `web`: key `pid`: must be a string, as Compose reads it",
            ),
            (
                "    command: [echo, [a]]\n",
                "compose.yaml:4: service `web`: key `command`: must be a string or a list of strings, as Compose reads it",
            ),
            (
                "    build:\n      context: .\n      target: [prod]\n",
                "compose.yaml:5: service `web`: key `build.target`: must be a string, as Compose reads it",
            ),
        ] {
            let build = if service.contains("build:") {
                ""
            } else {
                "    build: .\n"
            };
            let text = format!("services:\n  web:\n{build}{service}");
            let err = run_project(&text, None).unwrap_err().to_string();
            assert_eq!(err, expected, "{text}");
        }
        // Shapes Compose accepts pass.
        run_project(
            "services:\n  web:\n    build:\n      context: .\n      target: prod\n      no_cache: true\n    command: [echo, hi]\n    expose: [8000, \"9000\"]\n    init: true\n    tty: \"true\"\n    shm_size: 64m\n    dns: 1.1.1.1\n    depends_on: {db: {condition: service_started}}\n  db:\n    image: postgres:16\n",
            None,
        )
        .unwrap();
    }

    /// Found by the hostile-input properties: a service other than the web service with
    /// neither `image` nor `build` passed, and the render then failed with a message naming no
    /// file, line or key.
    #[test]
    fn a_service_without_image_or_build_is_refused_with_its_line() {
        let text = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  redis:\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n";
        let err = run_project(text, None).unwrap_err().to_string();
        assert!(
            err.starts_with("compose.yaml:5: service `redis`: key `image`: the service has neither `image` nor `build`"),
            "{err}"
        );
        // The web service may leave both out: it is built from the generated Dockerfile.
        let s = run("services:\n  app:\n    environment: {A: b}\n").unwrap();
        assert_eq!(s.app_service, "app");
    }

    /// A 64 KiB file can define about 3,000 services, each a container to start (found by the
    /// hostile-input properties: such a file planned, and rendered a 2 MB compose file).
    #[test]
    fn at_most_max_services_are_previewed() {
        let file = |n: usize| {
            let mut text =
                String::from("services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n");
            for i in 1..n {
                text.push_str(&format!("  s{i}: {{image: r}}\n"));
            }
            text
        };
        run_project(&file(MAX_SERVICES), None).unwrap();
        let err = run_project(&file(3000), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "compose.yaml:1: key `services`: 3000 services are defined; a preview runs at most 100"
        );
    }

    #[test]
    fn profiles_start_as_compose_starts_them_and_the_web_service_always() {
        let text = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    profiles: [web]\n    depends_on: [db]\n  db:\n    image: postgres:16-bookworm\n    profiles: [postgres]\n  worker:\n    build: .\n    profiles: [worker]\n    restart: \"no\"\n  seed:\n    image: postgres:16-bookworm\n    profiles: [seed]\n  cache:\n    image: redis:7-bookworm\n";
        let started = |active: &[&str]| {
            let mut s = run_project(text, Some("web")).unwrap();
            let activated = s.activate_profiles(&active.iter().map(|p| (*p).to_owned()).collect());
            let left: Vec<String> = s
                .services
                .iter()
                .filter(|x| x.profiles().is_empty())
                .map(|x| x.name.clone())
                .collect();
            (left, activated)
        };
        // The web service's profile and its database's are activated; the others stay off.
        assert_eq!(
            started(&[]),
            (
                vec!["cache".to_owned(), "db".to_owned(), "web".to_owned()],
                vec!["postgres".to_owned(), "web".to_owned()]
            )
        );
        // A built service in a profile does not compete with one Compose starts.
        let s = run_project(
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  docs:\n    build: .\n    ports: [\"8001:8001\"]\n    profiles: [docs]\n",
            None,
        )
        .unwrap();
        assert_eq!(s.app_service, "web");
        // COMPOSE_PROFILES=worker starts the worker too.
        assert_eq!(started(&["worker"]).0, ["cache", "db", "web", "worker"]);
    }

    #[test]
    fn variables_in_dropped_keys_and_port_defaults_are_read_as_compose_would() {
        // As docker-rails-example writes them.
        let s = run_project(
            "services:\n  migrate:\n    build: .\n    restart: \"${MIGRATE_RESTART:-no}\"\n  web:\n    build: .\n    ports: [\"${WEB_FWD:-127.0.0.1:8000}:${PORT:-8000}\"]\n    restart: \"${DOCKER_RESTART_POLICY:-unless-stopped}\"\n    deploy:\n      resources:\n        limits:\n          cpus: \"${DOCKER_WEB_CPUS:-0}\"\n  worker:\n    build: .\n    restart: \"${DOCKER_RESTART_POLICY:-unless-stopped}\"\n",
            None,
        )
        .unwrap();
        assert_eq!(s.app_service, "web");
        assert_eq!(s.services[0].restart, "no");
        assert_eq!(s.services[1].published, [8000]);
        assert_eq!(s.services[1].restart, KEEP_RUNNING);
        assert!(s.variables.is_empty(), "{:?}", s.variables);
        assert_eq!(with_defaults("${A:-1}:${B-2}/tcp"), "1:2/tcp");
        assert_eq!(with_defaults("${A}:80"), "${A}:80");
        assert_eq!(with_defaults("${A:-${B}}"), "${A:-${B}}");
    }

    #[test]
    fn a_built_service_that_publishes_beats_one_that_only_exposes() {
        // As awesome-compose's react-express-mongodb writes it.
        let s = run_project(
            "services:\n  frontend:\n    build: .\n    ports: [\"3000:3000\"]\n  backend:\n    build: .\n    expose: [3000]\n  mongo:\n    image: mongo:7\n    expose: [27017]\n",
            None,
        )
        .unwrap();
        assert_eq!(s.app_service, "frontend");
        assert_eq!(
            s.app_service_reason,
            "it publishes port 3000 and is the only one built from the repo that publishes a port (the others only expose one: `backend`)"
        );
    }

    #[test]
    fn a_proxy_in_front_of_the_built_app_is_the_way_in() {
        // As awesome-compose's nginx-golang-postgres writes it: nginx from its image.
        let s = run_project(
            "services:\n  backend:\n    build: .\n  proxy:\n    image: nginx\n    ports: [\"80:80\"]\n    depends_on: [backend]\n",
            None,
        )
        .unwrap();
        assert_eq!(s.app_service, "proxy");
        // As its nginx-flask-mysql writes it: both built, both publish.
        let s = run_project(
            "services:\n  backend:\n    build: .\n    ports: [\"8000:8000\"]\n  proxy:\n    build: .\n    ports: [\"80:80\"]\n    depends_on: [backend]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            (s.app_service.as_str(), s.app_service_reason.as_str()),
            (
                "proxy",
                "it publishes port 80 in front of the others that serve (`backend`), which it depends on"
            )
        );
        // A database that publishes its port is not in front of anything.
        let s = run_project(
            "services:\n  web:\n    build: .\n  redis:\n    image: redis\n    ports: [\"6379:6379\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(s.app_service, "web");
    }

    #[test]
    fn a_preview_cannot_write_its_checkout_nor_run_privileged_hooks_nor_set_our_labels() {
        // Writable, a bind mount of the checkout would let a container put a symlink where
        // Docker, on the host, later reads a mount, a secret or an env file.
        let s = run_project(
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    volumes:\n      - .:/src\n      - ./static:/static:ro\n",
            None,
        )
        .unwrap();
        let read_only: Vec<bool> = s.services[0]
            .volumes
            .iter()
            .map(|m| {
                matches!(
                    m,
                    Mount::Bind {
                        read_only: true,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(read_only, [true, true]);
        assert_eq!(
            s.warnings
                .iter()
                .filter(|w| w.contains("is read-only in previews"))
                .count(),
            1,
            "{:?}",
            s.warnings
        );
        let err = run_project(
            "services:\n  web:\n    build: .\n    post_start:\n      - command: [\"sh\", \"-c\", \"id\"]\n        privileged: true\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("compose.yaml:6: service `web`: key `post_start.privileged`"),
            "{err}"
        );
        let err = run_project(
            "services:\n  web:\n    build: .\n    labels:\n      dev.preview-deployer.one-shot: \"true\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("are the orchestrator's"), "{err}");
    }

    #[test]
    fn a_proxy_that_reads_the_docker_socket_is_left_out() {
        let s = run_project(
            "services:\n  proxy:\n    image: docker.io/library/traefik:3.6@sha256:abc\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n  web:\n    build: .\n    depends_on:\n      proxy:\n        condition: service_started\n    links: [\"proxy:edge\"]\n",
            None,
        )
        .unwrap();
        let names: Vec<&str> = s.services.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        assert_eq!(
            s.services[0].passthrough["depends_on"],
            serde_json::json!({})
        );
        assert_eq!(s.services[0].passthrough["links"], serde_json::json!([]));
        assert!(
            s.warnings[0].starts_with(
                "service `proxy` (docker.io/library/traefik:3.6@sha256:abc) is left out"
            ),
            "{:?}",
            s.warnings
        );
        // One that routes from files, without the socket, is a service like any other.
        let s = run_project(
            "services:\n  proxy:\n    image: traefik:3\n    command: [\"--providers.file.filename=/etc/traefik.yml\"]\n  web:\n    build: .\n",
            None,
        )
        .unwrap();
        assert_eq!(s.services.len(), 2);
        // Another service sharing its network cannot do without it: refused.
        let err = run_project(
            "services:\n  proxy:\n    image: traefik:3\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n  web:\n    build: .\n    network_mode: service:proxy\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("compose.yaml:8: service `web`: key `network_mode`: it shares `proxy`"),
            "{err}"
        );
        // Built from the repo, or another image, it is judged like any service: refused.
        for text in [
            "services:\n  proxy:\n    build: .\n    image: traefik\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
            "services:\n  proxy:\n    image: evil/traefik\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
        ] {
            let err = run_project(text, None).unwrap_err().to_string();
            assert!(err.contains("the Docker socket"), "{err}");
        }
    }

    #[test]
    fn tasks_meant_to_end_keep_their_restart_policy() {
        let s = run_project(
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    restart: always\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n      db:\n        condition: service_healthy\n        restart: true\n  migrate:\n    build: .\n  seed:\n    build: .\n    restart: no\n  retry:\n    build: .\n    restart: \"on-failure:3\"\n  db:\n    image: postgres:16-bookworm\n",
            None,
        )
        .unwrap();
        let restart = |name: &str| {
            let service = s.services.iter().find(|x| x.name == name).unwrap();
            (service.restart.as_str(), service.may_end(), service.awaited)
        };
        // Awaited to complete, with no policy of its own: it runs once.
        assert_eq!(restart("migrate"), ("no", true, true));
        assert_eq!(restart("seed"), ("no", true, false));
        assert_eq!(restart("retry"), ("on-failure:3", true, false));
        // `always` would start a sleeping preview again when the engine restarts.
        assert_eq!(restart("web"), ("unless-stopped", false, false));
        assert_eq!(restart("db"), ("unless-stopped", false, false));
        assert!(
            !s.warnings.iter().any(|w| w.contains("restart")),
            "{:?}",
            s.warnings
        );

        let err = run_project(
            "services:\n  web:\n    build: .\n    restart: sometimes\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("compose.yaml:4") && err.contains("\"sometimes\" is not a restart policy"),
            "{err}"
        );
    }

    #[test]
    fn a_project_files_ports_are_dropped_and_read() {
        let text = "services:\n  web:\n    build: .\n    ports:\n      - \"127.0.0.1:8080:3000/tcp\"\n      - 9229\n      - target: 4000\n        published: 4000\n      - \"${HOST_PORT:-80}:5000\"\n      - \"7000-7002:7000-7002\"\n";
        let c = run_project(text, None).unwrap();
        assert_eq!(c.services[0].published, vec![3000, 9229, 4000, 5000]);
        assert_eq!(
            c.warnings,
            vec![
                "service `web`: `ports` dropped; no host port is published, and only the web service's port is routed, through nginx"
            ]
        );
        // The same key in a file written for previews is still refused.
        let err = run("services:\n  web:\n    build: .\n    ports: [\"8080:3000\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "docker-compose.preview.yml:4: service `web`: key `ports`: host ports are assigned"
            ),
            "{err}"
        );
        // A variable in a dropped `ports` is never substituted, so it is not a reference.
        assert!(c.variables.is_empty(), "{:?}", c.variables);
    }

    #[test]
    fn the_web_service_is_chosen_with_its_reason() {
        let choose = |text: &str, web: Option<&str>| {
            run_project(text, web).map(|c| (c.app_service, c.app_service_reason))
        };
        let db = "  db:\n    image: postgres:16\n    ports: [\"5432:5432\"]\n";
        // The one built service that publishes a port, over an image that publishes one too.
        assert_eq!(
            choose(&format!("services:\n{db}  api:\n    build: .\n    ports: [\"8000:8000\"]\n"), None).unwrap(),
            ("api".into(), "it publishes port 8000 and is the only one built from the repo of those that serve a port (`api`, `db`)".into())
        );
        // Exposing is enough for a built service.
        assert_eq!(
            choose("services:\n  api:\n    build: .\n    expose: [\"3000\"]\n  worker:\n    build: .\n", None).unwrap(),
            ("api".into(), "it is the only service of compose.yaml that exposes port 3000 and is built from the repo".into())
        );
        // A built service that serves nothing still wins over a database image that publishes.
        assert_eq!(
            choose(&format!("services:\n{db}  api:\n    build: .\n"), None).unwrap(),
            (
                "api".into(),
                "it is the only service of compose.yaml built from the repo".into()
            )
        );
        // Images only: the one that publishes a port.
        assert_eq!(
            choose("services:\n  site:\n    image: nginx\n    ports: [80]\n  cache:\n    image: redis\n", None).unwrap(),
            ("site".into(), "it is the only service of compose.yaml that publishes port 80".into())
        );
        let two = "services:\n  api:\n    build: .\n    ports: [\"8000:8000\"]\n  ui:\n    build: .\n    ports: [\"5173:5173\"]\n";
        assert_eq!(
            choose(two, None).unwrap_err().to_string(),
            "compose.yaml:1: key `services`: cannot tell which service is the web app (`api`, `ui` could each be): name it `app`, give it the label `preview.web: \"true\"`, or set web_service in preview-config.yml"
        );
        // The label, then the key, override.
        let labelled = two.replace("  ui:\n", "  ui:\n    labels: [preview.web=true]\n");
        assert_eq!(choose(&labelled, None).unwrap().0, "ui");
        assert_eq!(
            choose(&labelled, Some("api")).unwrap(),
            (
                "api".into(),
                "preview-config.yml sets web_service: api".into()
            )
        );
        assert_eq!(
            choose(two, Some("front")).unwrap_err().to_string(),
            "preview-config.yml:3: key `web_service`: compose.yaml has no service `front` (its services: `api`, `ui`)"
        );
        let both = labelled.replace("  api:\n", "  api:\n    labels: {preview.web: \"yes\"}\n");
        assert!(
            choose(&both, None)
                .unwrap_err()
                .to_string()
                .contains("`api`, `ui` all have the label `preview.web`"),
        );
        // A service named `app` is the app, as before.
        assert_eq!(
            choose(
                "services:\n  app:\n    image: x\n  ui:\n    build: .\n    ports: [80]\n",
                None
            )
            .unwrap(),
            ("app".into(), "it is named `app`".into())
        );
    }

    #[test]
    fn a_plain_file_passes() {
        let s = run("services:\n  app:\n    build: .\n    environment:\n      - A=1\n      - B\n    volumes:\n      - ./data:/data:ro\n      - cache:/cache\n    env_file: .env.preview\n    depends_on: [worker]\n  worker:\n    image: redis:7-bookworm\n    mem_limit: 4g\nvolumes:\n  cache: {}\n").unwrap();
        assert_eq!(s.app_service, "app");
        let app = &s.services[0];
        assert_eq!(app.environment["A"].as_deref(), Some("1"));
        assert_eq!(app.environment["B"], None);
        assert_eq!(
            app.volumes[0],
            Mount::Bind {
                source: "data".into(),
                target: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(app.env_files, [".env.preview"]);
        assert!(
            s.warnings.iter().any(|w| w.contains("mem_limit")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn refusals_name_service_key_and_line() {
        let cases = [
            (
                "services:\n  app:\n    build: .\n    privileged: true\n",
                "docker-compose.preview.yml:4: service `app`: key `privileged`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    network_mode: host\n",
                "service `app`: key `network_mode`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    pid: host\n",
                "service `app`: key `pid`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    ipc: host\n",
                "service `app`: key `ipc`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    devices: [/dev/sda]\n",
                "service `app`: key `devices`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    cap_add: [SYS_ADMIN]\n",
                "service `app`: key `cap_add`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
                "service `app`: key `volumes`: the Docker socket",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - /etc:/host-etc\n",
                "service `app`: key `volumes`: the bind mount \"/etc\" is outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - ../..:/up\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - ./run-link/x:/x\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - type: bind\n        source: /\n        target: /host\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    ports: ['8080:8080']\n",
                "docker-compose.preview.yml:4: service `app`: key `ports`: host ports",
            ),
            (
                "services:\n  app:\n    build:\n      context: .\n      network: host\n",
                "service `app`: key `build.network`",
            ),
            (
                "services:\n  app:\n    build: ../\n",
                "service `app`: key `build.context`",
            ),
            (
                "services:\n  app:\n    build: .\n    env_file: /etc/environment\n",
                "service `app`: key `env_file`",
            ),
            (
                "services:\n  app:\n    build: .\n    frobnicate: 1\n",
                "service `app`: key `frobnicate`: this key is not allowed",
            ),
            (
                "services:\n  app:\n    build: .\nvolumes:\n  data:\n    driver_opts: {type: none, o: bind, device: /etc}\n",
                "key `volumes.data.driver_opts`",
            ),
            (
                "services:\n  app:\n    build: .\nnetworks:\n  ext:\n    external: true\n",
                "key `networks.ext.external`",
            ),
            (
                "services:\n  a:\n    image: x\n  b:\n    image: y\n",
                "cannot tell which service is the web app",
            ),
        ];
        for (text, expected) in cases {
            let err = run(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text}\n got: {err}\nwant: {expected}"
            );
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn variables_resolve_only_from_the_preview() {
        let values: BTreeMap<String, String> = [("PORT", "8000"), ("EMPTY", ""), ("D", "a$b")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (text, expected) in [
            ("plain", "plain"),
            ("$$HOME and $${HOME}", "$$HOME and $${HOME}"),
            ("${PORT}/$PORT", "8000/8000"),
            ("${D}", "a$$b"),
            ("${HOME:-x}", "x"),
            ("${HOME-x}", "x"),
            ("${EMPTY:-x}|${EMPTY-x}", "x|"),
            (
                "${PORT:+on}|${HOME:+on}|${EMPTY+on}|${EMPTY:+on}",
                "on||on|",
            ),
            ("${HOME:-${PORT:-no}}", "8000"),
            ("${PORT:?needed}", "8000"),
        ] {
            assert_eq!(
                resolve_text(text, &values).as_deref(),
                Ok(expected),
                "{text}"
            );
        }
        for (text, why) in [
            ("${HOME}", "`HOME` is not set"),
            ("$HOME", "`HOME` is not set"),
            ("${HOME:?needed}", "`HOME` is required: needed"),
            ("${EMPTY:?needed}", "`EMPTY` is required"),
            ("${HOME:-$GITHUB_TOKEN}", "`GITHUB_TOKEN` is not set"),
            ("a $ b", "must start a variable"),
            ("${PORT", "must be followed by"),
            ("${PORT:-x", "not closed"),
            ("${PORT:x}", "must be followed by"),
            ("${1}", "variable name"),
        ] {
            let err = resolve_text(text, &values).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    /// Found while writing the hostile-input tests: each value was capped once resolved, but
    /// not their sum, so 60 KiB of `- ${A}${A}...` with an 8 KiB `A` rendered 98 MB of compose
    /// file.
    #[test]
    fn resolved_values_are_capped_for_the_whole_file() {
        let items = |n: usize| "      - ${A}${A}${A}${A}${A}${A}${A}${A}\n".repeat(n);
        let values = BTreeMap::from([("A".to_owned(), "x".repeat(8 * 1024))]);
        // Each service alone stays within the limit, the two together do not.
        let text = format!(
            "services:\n  app:\n    build: .\n    command:\n{}  worker:\n    image: python:3\n    command:\n{}",
            items(10),
            items(10)
        );
        let c = run(&text).unwrap();
        let one = c.services[0].resolved(&c.file, &values).unwrap();
        assert_eq!(one.passthrough["command"].as_array().unwrap().len(), 10);
        let err = c.resolved_services(&values).unwrap_err().to_string();
        assert_eq!(
            err,
            "docker-compose.preview.yml: service `worker`: key `command`: the file's values grow beyond 1048576 bytes once their variables are resolved"
        );
        // One service alone cannot go beyond it either.
        let text = format!(
            "services:\n  app:\n    build: .\n    command:\n{}",
            items(1500)
        );
        let c = run(&text).unwrap();
        let err = c.services[0]
            .resolved(&c.file, &values)
            .unwrap_err()
            .to_string();
        assert!(err.contains("grow beyond 1048576 bytes"), "{err}");
    }

    #[test]
    fn references_outside_the_preview_are_refused_with_their_line() {
        let preview = names(&["PORT", "PREVIEW_URL", "GREETING"]);
        let ok = run("services:\n  app:\n    build: .\n    environment:\n      - GREETING\n      - A=${PORT}\n      - B=${GITHUB_TOKEN:-none}\n      - C=${X+set}\n      - D=$$HOME\n    command: [\"sh\", \"-c\", \"echo $${HOME} ${PREVIEW_URL:?no url}\"]\n").unwrap();
        check_variables(&ok, &preview).unwrap();
        let cases = [
            (
                "services:\n  app:\n    build: .\n    environment:\n      TOKEN: ${GITHUB_TOKEN}\n",
                "docker-compose.preview.yml:5: service `app`: key `environment`: `GITHUB_TOKEN` is not a variable of this preview",
            ),
            (
                "services:\n  app:\n    build: .\n    command: echo $GITHUB_WEBHOOK_SECRET\n",
                "docker-compose.preview.yml:4: service `app`: key `command`: `GITHUB_WEBHOOK_SECRET`",
            ),
            (
                "services:\n  app:\n    build: .\n    environment: [A=1, GITHUB_TOKEN]\n",
                "docker-compose.preview.yml:4: service `app`: key `environment`: `GITHUB_TOKEN`",
            ),
            (
                "services:\n  app:\n    build:\n      context: .\n      args:\n        SECRET:\n",
                "docker-compose.preview.yml:6: service `app`: key `build.args`: `SECRET`",
            ),
            (
                "services:\n  app:\n    build: .\n    healthcheck:\n      test: [\"CMD\", \"curl\", \"${HOME:?}\"]\n",
                "docker-compose.preview.yml:5: service `app`: key `healthcheck`: `HOME`",
            ),
            (
                "services:\n  app:\n    build: .\n    labels:\n      a: ${X:-${HOME}}\n",
                "docker-compose.preview.yml:5: service `app`: key `labels`: `HOME`",
            ),
        ];
        for (text, expected) in cases {
            let err = run(text)
                .and_then(|c| check_variables(&c, &preview))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{text}\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn references_in_judged_keys_or_bad_syntax_are_refused_when_sanitising() {
        for (text, expected) in [
            (
                "services:\n  app:\n    build: .\n    network_mode: ${MODE}\n",
                "docker-compose.preview.yml:4: service `app`: key `network_mode`: variables are not substituted",
            ),
            (
                "services:\n  app:\n    build: ${CONTEXT}\n",
                "service `app`: key `build`: variables are not substituted",
            ),
            (
                "services:\n  app:\n    build:\n      context: .\n      dockerfile: ${F}\n",
                "service `app`: key `build.dockerfile`: variables are not substituted",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - ./${D}:/d\n",
                "docker-compose.preview.yml:5: service `app`: key `volumes`: variables are not substituted",
            ),
            (
                "services:\n  app:\n    build: .\n    env_file: ${F}\n",
                "service `app`: key `env_file`: variables are not substituted",
            ),
            (
                "services:\n  app:\n    build: .\n    environment:\n      A: cost $5\n",
                "docker-compose.preview.yml:5: service `app`: key `environment`: \"cost $5\": a `$` must start a variable",
            ),
        ] {
            let err = run(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text}\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn resolved_services_leave_compose_nothing_to_interpolate() {
        let c = run("services:\n  app:\n    build:\n      context: .\n      args: [V, \"W=${V}x\"]\n    image: ignored\n    environment: [V, P=$$PATH]\n    labels: {l: \"${NO:-d}\"}\n    command: [\"echo\", \"${V}\"]\n").unwrap();
        let values = BTreeMap::from([("V".to_owned(), "$HOME".to_owned())]);
        let app = c.services[0].resolved(&c.file, &values).unwrap();
        assert_eq!(app.environment["V"].as_deref(), Some("$$HOME"));
        assert_eq!(app.environment["P"].as_deref(), Some("$$PATH"));
        assert_eq!(app.labels["l"], "d");
        let build = app.build.unwrap();
        assert_eq!(build.args["V"].as_deref(), Some("$$HOME"));
        assert_eq!(build.args["W"].as_deref(), Some("$$HOMEx"));
        assert_eq!(
            app.passthrough["command"],
            serde_json::json!(["echo", "$$HOME"])
        );
        let err = c.services[0]
            .resolved(&c.file, &BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("`V` is not set"), "{err}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let (mut text, last) = crate::test_support::alias_bomb(7);
        text.push_str(&format!(
            "services:\n  app:\n    build: .\n    command: *{last}\n"
        ));
        let err = run(&text).unwrap_err().to_string();
        assert!(err.contains("budget") || err.contains("alias"), "{err}");
    }
}

/// Sanitises `text` as a project's own `compose.yaml`, in a checkout holding a Dockerfile.
#[cfg(test)]
fn sanitize_compose_yaml(text: &str) -> Result<SanitizedCompose> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let checkout = Checkout::open(dir.path()).unwrap();
    sanitize(
        text,
        &SanitizeContext {
            checkout: &checkout,
            file: "compose.yaml".into(),
        },
    )
}

#[cfg(test)]
mod hostname_service_tests {
    use super::*;

    use super::sanitize_compose_yaml as run;

    const TWO: &str = "services:\n  web:\n    build: .\n    labels: {preview.web: \"true\"}\n    ports: [\"8000:8000\"]\n  admin:\n    build: .\n    labels:\n      preview.hostname: admin\n    ports: [\"3001:3000\"]\n  db:\n    image: postgres:16-bookworm\n";

    #[test]
    fn the_labelled_service_is_routed_at_its_published_or_exposed_port() {
        let s = run(TWO).unwrap();
        assert_eq!(s.app_service, "web");
        assert_eq!(
            s.hostname_service,
            Some(HostnameService {
                service: "admin".into(),
                label: "admin".into(),
                port: 3000,
            })
        );
        let exposed = TWO.replace("ports: [\"3001:3000\"]", "expose: [\"4000/tcp\"]");
        assert_eq!(run(&exposed).unwrap().hostname_service.unwrap().port, 4000);
        let none = TWO.replace("      preview.hostname: admin\n", "      other: x\n");
        assert_eq!(run(&none).unwrap().hostname_service, None);
    }

    #[test]
    fn bad_labels_are_refused_with_the_file_service_and_line() {
        for (label, why) in [
            ("Admin", "is not a hostname label"),
            ("admin.x", "is not a hostname label"),
            ("-admin", "is not a hostname label"),
            ("9admin", "is not a hostname label"),
            ("a--b", "is not a hostname label"),
            ("pr-2", "none of them `pr`"),
            ("my-pr-site", "none of them `pr`"),
            ("a-very-long-label-indeed", "1-20 of [a-z0-9-]"),
        ] {
            let text = TWO.replace(
                "preview.hostname: admin",
                &format!("preview.hostname: {label}"),
            );
            let err = run(&text).unwrap_err().to_string();
            assert!(
                err.starts_with("compose.yaml:9: service `admin`: key `labels`:"),
                "{label}: {err}"
            );
            assert!(err.contains(why), "{label}: {err}");
        }
    }

    #[test]
    fn the_web_service_a_second_label_or_no_port_is_refused() {
        let on_web = TWO
            .replace(
                "preview.web: \"true\"}",
                "preview.web: \"true\", preview.hostname: admin}",
            )
            .replace("      preview.hostname: admin\n", "      other: x\n");
        let err = run(&on_web).unwrap_err().to_string();
        assert_eq!(
            err,
            "compose.yaml:4: service `web`: key `labels`: `web` is the web service, served at the preview's own hostname; `preview.hostname` names a second service's"
        );
        let two = TWO.replace(
            "    image: postgres:16-bookworm\n",
            "    image: postgres:16-bookworm\n    labels: [preview.hostname=db]\n",
        );
        let err = run(&two).unwrap_err().to_string();
        assert!(
            err.contains("`admin`, `db` all have the label `preview.hostname`"),
            "{err}"
        );
        let portless = TWO.replace("    ports: [\"3001:3000\"]\n", "");
        let err = run(&portless).unwrap_err().to_string();
        assert_eq!(
            err,
            "compose.yaml:9: service `admin`: key `labels`: `admin` has `preview.hostname: admin` but no port to route to: list it in `ports` or `expose`"
        );
    }
}

#[cfg(test)]
mod hostname_service_profile_tests {
    use super::*;

    /// A routed second web service in a profile is started, as the web service is.
    #[test]
    fn a_second_web_service_in_a_profile_is_started() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let checkout = Checkout::open(dir.path()).unwrap();
        let text = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  admin:\n    image: python:3.12-slim-bookworm\n    profiles: [tools]\n    labels: {preview.hostname: admin}\n    expose: [\"3000\"]\n  other:\n    image: python:3.12-slim-bookworm\n    profiles: [tools]\n";
        let mut s = sanitize(
            text,
            &SanitizeContext {
                checkout: &checkout,
                file: "compose.yaml".into(),
            },
        )
        .unwrap();
        assert_eq!(s.activate_profiles(&BTreeSet::new()), ["tools"]);
        let profiles = |name: &str| {
            s.services
                .iter()
                .find(|x| x.name == name)
                .unwrap()
                .profiles()
        };
        assert!(profiles("admin").is_empty(), "started");
        assert_eq!(profiles("other"), ["tools"], "not started");
    }
}

#[cfg(test)]
mod every_refusal_tests {
    use super::*;

    use super::sanitize_compose_yaml as run;

    /// The line and key of each refusal an error holds, in its order.
    fn lines_and_keys(e: &Error) -> Vec<(Option<u64>, String)> {
        e.refusals()
            .into_iter()
            .map(|r| match r {
                Error::ComposeRefused { line, key, .. } => (*line, key.clone()),
                other => panic!("not a refusal: {other:?}"),
            })
            .collect()
    }

    /// Services and keys are read in name order (`worker` after `web`, `cap_add` before
    /// `privileged`); the refusals are listed in the order of the file's lines.
    #[test]
    fn refusals_of_several_services_and_the_top_level_are_listed_in_line_order() {
        let text = "services:\n  worker:\n    image: busybox\n    volumes:\n      - /etc:/host-etc\n    network_mode: host\n    devices: [/dev/sda]\n  web:\n    build: .\n    privileged: true\n    ports: [\"8000:8000\"]\n    cap_add: [SYS_ADMIN]\nvolumes:\n  data:\n    driver: nfs\ninclude: [other.yaml]\n";
        let err = run(text).unwrap_err();
        assert_eq!(
            lines_and_keys(&err),
            [
                (Some(4), "volumes".to_owned()),
                (Some(6), "network_mode".to_owned()),
                (Some(7), "devices".to_owned()),
                (Some(10), "privileged".to_owned()),
                (Some(12), "cap_add".to_owned()),
                (Some(15), "volumes.data.driver".to_owned()),
                (Some(16), "include".to_owned()),
            ]
        );
        assert_eq!(
            err.to_string(),
            "compose.yaml: 7 refusals:
- compose.yaml:4: service `worker`: key `volumes`: the bind mount \"/etc\" is outside the checkout; previews may only mount their own files
- compose.yaml:6: service `worker`: key `network_mode`: network_mode \"host\" would leave the preview's own network (only `none` and `service:NAME` are allowed)
- compose.yaml:7: service `worker`: key `devices`: host devices are not available to previews
- compose.yaml:10: service `web`: key `privileged`: privileged containers control the host
- compose.yaml:12: service `web`: key `cap_add`: previews run without added capabilities
- compose.yaml:15: key `volumes.data.driver`: volumes are plain local volumes of the preview: drivers, driver options, names and external volumes can reach the host or other previews
- compose.yaml:16: key `include`: including other files is not supported; inline them"
        );
        // Each alone reads as it always did.
        let alone = run("services:\n  web:\n    build: .\n    privileged: true\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            alone,
            "compose.yaml:4: service `web`: key `privileged`: privileged containers control the host"
        );
    }

    /// awesome-compose's plex sample, in our words: the variable in `volumes` (line 10) was
    /// refused alone, though `network_mode: host` comes first (line 5). The volume, whose
    /// variable is refused, is not judged again as a path.
    #[test]
    fn the_plex_shape_names_network_mode_first_then_the_variable_in_volumes() {
        let text = "services:\n  media:\n    image: example/media-server\n    container_name: media\n    network_mode: host\n    environment:\n      - VERSION=docker\n    restart: always\n    volumes:\n      - ${MEDIA_PATH}:/media/\n";
        let err = run(text).unwrap_err();
        assert_eq!(
            lines_and_keys(&err),
            [
                (Some(5), "network_mode".to_owned()),
                (Some(10), "volumes".to_owned())
            ]
        );
        let shown = err.to_string();
        assert!(shown.starts_with("compose.yaml: 2 refusals:\n- compose.yaml:5: service `media`: key `network_mode`: network_mode \"host\""), "{shown}");
        assert!(shown.contains("\n- compose.yaml:10: service `media`: key `volumes`: variables are not substituted in `volumes` (found `MEDIA_PATH`)"), "{shown}");
    }

    /// A build key whose variable is refused is not judged again, and the Dockerfile, read from
    /// a refused context, is not judged at all; the other build keys are.
    #[test]
    fn a_key_depending_on_a_refused_one_is_not_judged() {
        let text = "services:\n  web:\n    build:\n      context: ${CTX}\n      dockerfile: missing/Dockerfile\n      network: host\n";
        let err = run(text).unwrap_err();
        assert_eq!(
            lines_and_keys(&err),
            [
                (Some(4), "build.context".to_owned()),
                (Some(6), "build.network".to_owned())
            ]
        );
        // With the context fine, the missing Dockerfile is refused beside the network.
        let text = "services:\n  web:\n    build:\n      context: .\n      dockerfile: missing/Dockerfile\n      network: host\n";
        let keys: Vec<String> = lines_and_keys(&run(text).unwrap_err())
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(keys, ["build.dockerfile", "build.network"]);
    }

    /// 200 refusals: 20 are listed, in line order, and the rest counted; a refusal's long value
    /// is cut so that the list fits too. The message stays well under 8 KiB either way.
    #[test]
    fn two_hundred_refusals_list_twenty_and_count_the_rest() {
        let mut text = "services:\n".to_owned();
        for i in 0..MAX_SERVICES {
            text.push_str(&format!(
                "  s{i:03}:\n    image: busybox\n    privileged: true\n    cap_add: [SYS_ADMIN]\n"
            ));
        }
        let err = run(&text).unwrap_err();
        assert_eq!(err.refusals().len(), 200);
        let shown = err.to_string();
        assert!(
            shown.starts_with(
                "compose.yaml: 200 refusals:\n- compose.yaml:4: service `s000`: key `privileged`: "
            ),
            "{shown}"
        );
        assert_eq!(shown.matches("\n- compose.yaml:").count(), 20, "{shown}");
        assert!(
            shown.contains("\n- compose.yaml:41: service `s009`: key `cap_add`: previews run without added capabilities\n- and 180 more"),
            "{shown}"
        );
        assert!(shown.ends_with("\n- and 180 more"), "{shown}");
        assert!(shown.len() < 8 * 1024, "{} bytes", shown.len());

        // Each refusal quotes a 1,000-character path (as many as fit the file's 64 KiB): each
        // is cut, and fewer are listed.
        let long = "x".repeat(1_000);
        let mut text = "services:\n  web:\n    build: .\n    volumes:\n".to_owned();
        for i in 0..60 {
            text.push_str(&format!("      - /{long}{i}:/m{i}\n"));
        }
        let err = run(&text).unwrap_err();
        assert_eq!(err.refusals().len(), 60);
        let shown = err.to_string();
        let listed = shown
            .matches("\n- compose.yaml:4: service `web`: key `volumes`: the bind mount")
            .count();
        assert!((5..20).contains(&listed), "{listed} listed: {shown}");
        assert!(
            shown.ends_with(&format!("\n- and {} more", 60 - listed)),
            "{shown}"
        );
        assert!(shown.contains("…("), "{shown}");
        assert!(shown.len() < 8 * 1024, "{} bytes", shown.len());
    }

    /// Service lines refused whatever else the service has, with the key each refusal names.
    const INDEPENDENT: [(&str, &str); 13] = [
        ("privileged: true", "privileged"),
        ("network_mode: host", "network_mode"),
        ("cap_add: [SYS_ADMIN]", "cap_add"),
        ("devices: [/dev/sda]", "devices"),
        ("pid: host", "pid"),
        ("ipc: host", "ipc"),
        ("volumes: [\"/etc:/etc\"]", "volumes"),
        ("env_file: /etc/environment", "env_file"),
        ("runtime: runsc", "runtime"),
        ("sysctls: {net.core.somaxconn: 1024}", "sysctls"),
        ("command: \"echo $ money\"", "command"),
        ("volumes_from: [\"container:other\"]", "volumes_from"),
        ("no_such_key: 1", "no_such_key"),
    ];

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any mix of independent refusals, in any order over several services, is listed
        /// whole: one refusal for each, in the order of the file's lines.
        #[test]
        fn every_independent_refusal_is_listed_in_line_order(
            services in proptest::collection::vec(
                proptest::sample::subsequence((0..INDEPENDENT.len()).collect::<Vec<_>>(), 0..=INDEPENDENT.len())
                    .prop_shuffle(),
                1..5,
            ),
            include in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            let mut expected = Vec::new();
            let mut line = 0u64;
            let mut push = |text: &mut String, l: &str| {
                text.push_str(l);
                text.push('\n');
                line += 1;
                line
            };
            if include {
                let at = push(&mut text, "include: [other.yaml]");
                expected.push((Some(at), "include".to_owned()));
            }
            push(&mut text, "services:");
            // `app` is the web service, so that a file without refusals passes; the others are
            // named so that the name order is not the file's.
            for (i, chosen) in services.iter().enumerate() {
                if i == 0 {
                    push(&mut text, "  app:");
                    push(&mut text, "    build: .");
                } else {
                    push(&mut text, &format!("  s{}:", services.len() - i));
                    push(&mut text, "    image: busybox");
                }
                for &c in chosen {
                    let (l, key) = INDEPENDENT[c];
                    let at = push(&mut text, &format!("    {l}"));
                    expected.push((Some(at), key.to_owned()));
                }
            }
            match run(&text) {
                Ok(_) => proptest::prop_assert!(expected.is_empty(), "{text}"),
                Err(e) => {
                    proptest::prop_assert_eq!(lines_and_keys(&e), expected, "{}", text);
                    proptest::prop_assert!(e.to_string().len() < 8 * 1024);
                }
            }
        }
    }

    /// Variables outside the preview are refused all at once, in line order: the first says why,
    /// the others refer to it.
    #[test]
    fn every_variable_outside_the_preview_is_named() {
        let text = "services:\n  web:\n    build: .\n    environment:\n      TOKEN: ${GITHUB_TOKEN}\n      PORT: ${PORT}\n  worker:\n    image: busybox\n    command: echo $HOME\n    environment:\n      - SECRET\n";
        let compose = run(text).unwrap();
        let names: BTreeSet<String> = ["PORT".to_owned()].into();
        let err = check_variables(&compose, &names).unwrap_err();
        assert_eq!(
            lines_and_keys(&err),
            [
                (Some(5), "environment".to_owned()),
                (Some(9), "command".to_owned()),
                (Some(11), "environment".to_owned()),
            ]
        );
        let shown = err.to_string();
        assert!(
            shown.starts_with("compose.yaml: 3 refusals:\n- compose.yaml:5: service `web`: key `environment`: `GITHUB_TOKEN` is not a variable of this preview, and Compose's own environment is never used;"),
            "{shown}"
        );
        assert!(
            shown.ends_with("\n- compose.yaml:9: service `worker`: key `command`: `HOME` is not a variable of this preview either\n- compose.yaml:11: service `worker`: key `environment`: `SECRET` is not a variable of this preview either"),
            "{shown}"
        );
    }
}
