//! The compose project: the app (built from the generated or the repo's Dockerfile, or the repo's
//! sanitised compose file), its database and extra services, hardened and labelled.
//!
//! Every service gets the limits, `no-new-privileges`, a restart policy (`unless-stopped`, or a
//! repo service's own `no`/`on-failure` when it is a task meant to end) and the deployment's
//! labels; the app alone is published (and a second web service routed at its own hostname), on
//! 127.0.0.1 only, and runs under an init with a short stop grace period so a new commit
//! replaces it in about a second. The app (with a routed second web service) is rendered in one
//! of two slots ([`AppSlot`]), so that an update starts it beside the serving one; only the app
//! carries the commit's sha, so everything else keeps one definition across commits. Values we write are escaped
//! for Compose's `$` interpolation. In the repo's compose file, references to the preview's own
//! variables are substituted here and everything else is escaped too (the rule is at
//! [`crate::sanitize::VariableRef`]), so Compose interpolates nothing from its environment.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::{AppSlot, ComposeServices, RenderInput, labels, render_template};
use crate::images;
use crate::model::{Database, DockerfileSource, ExtraService, Framework, Language, Plan};
use crate::plan::Planned;
use crate::sanitize::{KEEP_RUNNING, Mount, RepoService, SanitizedCompose, rename_references};
use crate::{Error, Result};

/// The compose service name of the database.
pub const DB_SERVICE: &str = "db";
/// The compose service name of the app when compose is generated.
pub const APP_SERVICE: &str = "app";
/// Database name and user inside the preview's database.
pub const DB_NAME: &str = "preview";

#[derive(Serialize)]
struct Context {
    project: String,
    header: String,
    services: Vec<ServiceView>,
    networks: Vec<NetworkView>,
    volumes: Vec<String>,
    /// Top-level secrets and configs: name and absolute file.
    secrets: Vec<(String, String)>,
    configs: Vec<(String, String)>,
    labels: BTreeMap<String, String>,
    limits: super::Limits,
}

#[derive(Serialize)]
struct NetworkView {
    name: String,
    internal: bool,
    /// The Docker network's own name, for a network made outside the project.
    external: Option<String>,
}

#[derive(Serialize, Default)]
struct ServiceView {
    name: String,
    build: Option<BuildView>,
    image: Option<String>,
    init: bool,
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    environment: Vec<(String, Option<String>)>,
    env_files: Vec<String>,
    ports: Vec<PortView>,
    expose: Vec<String>,
    volumes: Vec<VolumeView>,
    healthcheck: Option<HealthView>,
    depends_on: Vec<String>,
    labels: BTreeMap<String, String>,
    restart: String,
    stop_grace_period: String,
    passthrough: String,
}

#[derive(Serialize)]
struct BuildView {
    context: String,
    dockerfile: Option<String>,
    dockerfile_inline: Option<String>,
    target: Option<String>,
    args: Vec<(String, Option<String>)>,
    labels: BTreeMap<String, String>,
    passthrough: String,
}

#[derive(Serialize)]
struct PortView {
    target: u16,
    published: String,
}

#[derive(Serialize)]
struct VolumeView {
    kind: &'static str,
    source: Option<String>,
    target: String,
    read_only: bool,
}

#[derive(Serialize)]
struct HealthView {
    test: Vec<String>,
    interval: &'static str,
    timeout: &'static str,
    retries: u32,
    start_period: &'static str,
}

/// Escapes a value we write for Compose's interpolation: `$` becomes `$$`, so it reaches the
/// container literally and nothing of the orchestrator's environment can be interpolated.
fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

/// Renders the compose file.
pub fn render_compose(planned: &Planned, input: &RenderInput) -> Result<String> {
    input.validate()?;
    let plan = &planned.plan;
    let labels = object_labels(input);
    let app_labels = app_labels(input);
    let slot = input.app_slot;
    let mut services = Vec::new();
    let mut volumes = Vec::new();
    let mut secrets = Vec::new();
    let mut configs = Vec::new();
    let mut networks = vec![NetworkView {
        name: "default".to_owned(),
        internal: false,
        external: None,
    }];

    match &planned.repo_compose {
        None => {
            let mut app = app_service(plan, input, &app_labels);
            let shared = shared_database(plan, input);
            if slot == AppSlot::Green || shared.is_some() {
                let mut app_networks = match slot {
                    AppSlot::Green => aliased_networks(None, APP_SERVICE),
                    AppSlot::Blue => serde_json::json!({ "default": {} }),
                };
                if let (Some(shared), Value::Object(map)) = (shared, &mut app_networks) {
                    map.insert(SHARED_DB_NETWORK.to_owned(), serde_json::json!({}));
                    networks.push(NetworkView {
                        name: SHARED_DB_NETWORK.to_owned(),
                        internal: false,
                        external: Some(shared.network.clone()),
                    });
                }
                let mut passthrough = serde_json::Map::new();
                passthrough.insert("networks".to_owned(), app_networks);
                app.passthrough = yaml_block(&passthrough, 4);
            }
            app.environment = with_secret_names(
                merge_env(generated_env(plan, input), &plan.env),
                plan,
                input,
            );
            if let Some(db) = plan.database.filter(|_| shared.is_none()) {
                services.push(database_service(db, input, &labels));
                volumes.push("db-data".to_owned());
                app.depends_on.push(DB_SERVICE.to_owned());
            }
            for extra in &plan.extra_services {
                services.push(extra_service(*extra, &labels));
                app.depends_on.push(extra.as_str().to_owned());
            }
            services.insert(0, app);
        }
        Some(repo) => {
            let values = repo_compose_values(plan, input, &repo.dotenv);
            // The services that change their name with the slot: the app (in the green slot),
            // and the routed second web service (in both), which starts beside the serving one
            // as the app does.
            let routed = routed_service(repo, input);
            let app_name = slot.service_name(&repo.app_service);
            let routed_name = routed.map(|name| slot.routed_service_name(name));
            let clash = |taken: &str| repo.services.iter().any(|s| s.name == taken);
            let refuse = |service: String, reason: String| Error::ComposeRefused {
                file: repo.file.clone(),
                line: None,
                service: Some(service),
                key: "services".to_owned(),
                reason,
                more: Vec::new(),
            };
            let green_app = AppSlot::Green.service_name(&repo.app_service);
            if slot == AppSlot::Green && clash(&green_app) {
                return Err(refuse(
                    green_app,
                    format!(
                        "the name is the one the web service `{}` takes during an update; rename it",
                        repo.app_service
                    ),
                ));
            }
            if let Some(name) = routed {
                for taken in [AppSlot::Blue, AppSlot::Green].map(|s| s.routed_service_name(name)) {
                    if clash(&taken) {
                        return Err(refuse(
                            taken,
                            format!(
                                "the name is one the service `{name}` (at its own hostname) takes in a preview; rename it"
                            ),
                        ));
                    }
                }
            }
            let mut renames: Vec<(&str, &str)> = Vec::new();
            if slot == AppSlot::Green {
                renames.push((repo.app_service.as_str(), app_name.as_str()));
            }
            if let (Some(from), Some(to)) = (routed, routed_name.as_deref()) {
                renames.push((from, to));
            }
            let routed_labels = {
                let mut l = labels.clone();
                l.insert(labels::SLOT.to_owned(), slot.as_str().to_owned());
                l
            };
            for service in repo.resolved_services(&values)? {
                let is_app = service.name == repo.app_service;
                let labels = if is_app {
                    &app_labels
                } else if Some(service.name.as_str()) == routed {
                    &routed_labels
                } else {
                    &labels
                };
                let mut view = repo_service(plan, input, labels, &service, is_app, &renames)?;
                publish_hostname_service(&mut view, &service, repo, input);
                services.push(view);
            }
            volumes.extend(repo.volumes.iter().cloned());
            let files = |list: &[crate::sanitize::FileObject]| {
                list.iter()
                    .map(|f| (f.name.clone(), absolute(input, &f.file)))
                    .collect::<Vec<_>>()
            };
            secrets = files(&repo.secrets);
            configs = files(&repo.configs);
            networks.extend(repo.networks.iter().filter(|(n, _)| n != "default").map(
                |(name, internal)| NetworkView {
                    name: name.clone(),
                    internal: *internal,
                    external: None,
                },
            ));
        }
    }

    let header = format!(
        "Generated by preview-deployer for {} PR #{} at {}; do not edit.",
        input.repo, input.pr, input.sha
    );
    render_template(
        "docker-compose.yml.j2",
        Context {
            project: input.deployment_id.clone(),
            header,
            services,
            networks,
            volumes,
            secrets,
            configs,
            labels,
            limits: input.limits.clone(),
        },
    )
}

/// The labels of every object: the same for every commit (see [`labels::SHA`]).
fn object_labels(input: &RenderInput) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::DEPLOYMENT.to_owned(), input.deployment_id.clone()),
        (labels::REPO.to_owned(), input.repo.clone()),
        (labels::PR.to_owned(), input.pr.to_string()),
        (labels::MANAGED.to_owned(), "true".to_owned()),
    ])
}

/// The labels of the app's container and image: the object labels plus the commit and slot.
fn app_labels(input: &RenderInput) -> BTreeMap<String, String> {
    let mut labels = object_labels(input);
    labels.insert(labels::SHA.to_owned(), input.sha.clone());
    labels.insert(labels::SLOT.to_owned(), input.app_slot.as_str().to_owned());
    labels
}

/// The compose name of the network that reaches the shared database server.
pub const SHARED_DB_NETWORK: &str = "shared-db";

/// The shared database of the input, when the preview's database lives on the engine's shared
/// server: only for a generated compose file (a repo's compose file brings its own database),
/// and only when it is the engine the plan asks for.
fn shared_database<'a>(plan: &Plan, input: &'a RenderInput) -> Option<&'a super::SharedDatabase> {
    input
        .shared_database
        .as_ref()
        .filter(|shared| plan.compose_file.is_none() && plan.database == Some(shared.engine))
}

/// The service names a render of `planned` with `input` has.
pub fn services(planned: &Planned, input: &RenderInput) -> ComposeServices {
    let slot = input.app_slot;
    match &planned.repo_compose {
        None => ComposeServices {
            app: slot.service_name(APP_SERVICE),
            others: planned
                .plan
                .database
                .filter(|_| shared_database(&planned.plan, input).is_none())
                .map(|_| DB_SERVICE.to_owned())
                .into_iter()
                .chain(
                    planned
                        .plan
                        .extra_services
                        .iter()
                        .map(|e| e.as_str().to_owned()),
                )
                .collect(),
            routed: None,
        },
        Some(repo) => {
            let routed = routed_service(repo, input);
            let in_slot = |name: &str| match routed {
                Some(r) if r == name => slot.routed_service_name(name),
                _ => name.to_owned(),
            };
            ComposeServices {
                app: slot.service_name(&repo.app_service),
                // Services left in a profile are not started.
                others: repo
                    .services
                    .iter()
                    .filter(|s| s.name != repo.app_service && s.profiles().is_empty())
                    .map(|s| in_slot(&s.name))
                    .collect(),
                routed: routed.map(|name| slot.routed_service_name(name)),
            }
        }
    }
}

/// The repo's second web service when it is routed at its own hostname (the input has a
/// route for it): it is then slotted with the app. A private one (hostnames off) is not.
fn routed_service<'a>(repo: &'a SanitizedCompose, input: &RenderInput) -> Option<&'a str> {
    input.service_route.as_ref()?;
    repo.hostname_service.as_ref().map(|h| h.service.as_str())
}

/// A slotted service's `networks` in the green slot: the same networks (`default` when it
/// names none), each with the alias `app_name` (its usual name), so the other services reach it
/// under that name.
fn aliased_networks(networks: Option<Value>, app_name: &str) -> Value {
    let alias = || serde_json::json!({ "aliases": [app_name] });
    let mut out = serde_json::Map::new();
    match networks {
        Some(Value::Array(names)) => {
            for name in names.iter().filter_map(Value::as_str) {
                out.insert(name.to_owned(), alias());
            }
        }
        Some(Value::Object(map)) => {
            for (name, config) in map {
                let config = match config {
                    Value::Object(mut config) => {
                        let mut aliases = match config.remove("aliases") {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        aliases.push(Value::String(app_name.to_owned()));
                        config.insert("aliases".to_owned(), Value::Array(aliases));
                        Value::Object(config)
                    }
                    _ => alias(),
                };
                out.insert(name, config);
            }
        }
        _ => {}
    }
    if out.is_empty() {
        out.insert("default".to_owned(), alias());
    }
    Value::Object(out)
}

fn absolute(input: &RenderInput, rel: &str) -> String {
    let path = if rel == "." {
        input.checkout_dir.clone()
    } else {
        input.checkout_dir.join(rel)
    };
    path.display().to_string()
}

/// The build section for the app: the generated Dockerfile, or the repo's.
fn own_build(plan: &Plan, input: &RenderInput, labels: &BTreeMap<String, String>) -> BuildView {
    let dockerfile = match (&plan.dockerfile, &plan.dockerfile_path) {
        (DockerfileSource::Repo, Some(path)) => absolute(input, path),
        _ => input.dockerfile_path.display().to_string(),
    };
    BuildView {
        context: absolute(input, &plan.context_dir),
        dockerfile: Some(dockerfile),
        dockerfile_inline: None,
        target: None,
        args: Vec::new(),
        labels: labels.clone(),
        passthrough: String::new(),
    }
}

/// Startup commands run in the app container before the app: `sh -c` runs them, stopping at the
/// first failure, then execs the app, which stays the init's direct child.
fn startup(plan: &Plan) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if plan.startup_commands.is_empty() {
        return (None, None);
    }
    let mut script = String::from("set -e\n");
    for command in &plan.startup_commands {
        script.push_str(command);
        script.push('\n');
    }
    script.push_str("exec \"$@\"");
    let entrypoint = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        literal(&script),
        "preview-start".to_owned(),
    ];
    let command = plan.start_argv.iter().map(|a| literal(a)).collect();
    (Some(entrypoint), Some(command))
}

/// A service with the labels and the (non-app) stop grace period; limits, restart policy and
/// no-new-privileges are in the template, for every service alike.
fn hardened(name: &str, labels: &BTreeMap<String, String>) -> ServiceView {
    ServiceView {
        name: name.to_owned(),
        labels: labels.clone(),
        restart: KEEP_RUNNING.to_owned(),
        stop_grace_period: "10s".to_owned(),
        ..ServiceView::default()
    }
}

fn app_service(plan: &Plan, input: &RenderInput, labels: &BTreeMap<String, String>) -> ServiceView {
    let (entrypoint, mut command) = startup(plan);
    // With the repo's Dockerfile, the start command is its CMD unless app_entrypoint replaces it.
    if command.is_none() && plan.dockerfile == DockerfileSource::Repo && !plan.start_argv.is_empty()
    {
        command = Some(plan.start_argv.iter().map(|a| literal(a)).collect());
    }
    ServiceView {
        build: Some(own_build(plan, input, labels)),
        init: true,
        entrypoint,
        command,
        ports: vec![PortView {
            target: plan.port,
            published: input.host_port.to_string(),
        }],
        stop_grace_period: input.stop_grace_period.clone(),
        ..hardened(&input.app_slot.service_name(APP_SERVICE), labels)
    }
}

/// The variables every app gets, escaped for Compose.
fn generated_env(plan: &Plan, input: &RenderInput) -> Vec<(String, Option<String>)> {
    generated_values(plan, input)
        .into_iter()
        .map(|(k, v)| (k, Some(literal(&v))))
        .collect()
}

/// The variables the preview sets for the app of a repo's compose file (which brings its own
/// database and services): the only names its `${VAR}` may use beside preview-config.yml's env.
pub fn preview_variable_names(plan: &Plan) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = [
        "PREVIEW",
        "PREVIEW_BASE_PATH",
        "PREVIEW_PR",
        "PREVIEW_SHA",
        "PREVIEW_URL",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    names.extend(plan.port_env.clone());
    if plan.language == Some(Language::Node) {
        names.insert("HOST".to_owned());
    }
    if plan.port_env.as_deref() == Some("ROCKET_PORT") {
        names.insert("ROCKET_ADDRESS".to_owned());
    }
    names.extend(plan.env.keys().cloned());
    names
}

/// The values a repo's compose file resolves its variables from, unescaped: its `.env`, then
/// ours, then preview-config.yml's env (which wins, as it does in the app's environment).
fn repo_compose_values(
    plan: &Plan,
    input: &RenderInput,
    dotenv: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let names = preview_variable_names(plan);
    let mut values = dotenv.clone();
    values.extend(
        generated_values(plan, input)
            .into_iter()
            .filter(|(k, _)| names.contains(k)),
    );
    values.extend(plan.env.clone());
    values
}

/// The variables every app gets, unescaped: its port, where it is served, and its services' URLs.
fn generated_values(plan: &Plan, input: &RenderInput) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(port_env) = &plan.port_env {
        env.push((port_env.clone(), plan.port.to_string()));
    }
    if plan.language == Some(Language::Node) {
        // Node servers (Fastify, Nuxt, Vite, ...) commonly bind to HOST; inside a container that
        // must be every interface.
        env.push(("HOST".to_owned(), "0.0.0.0".to_owned()));
    }
    if plan.port_env.as_deref() == Some("ROCKET_PORT") {
        // Rocket binds 127.0.0.1 by default, unreachable from outside the container.
        env.push(("ROCKET_ADDRESS".to_owned(), "0.0.0.0".to_owned()));
    }
    env.push(("PREVIEW".to_owned(), "true".to_owned()));
    env.push(("PREVIEW_BASE_PATH".to_owned(), input.path_prefix()));
    env.push(("PREVIEW_PR".to_owned(), input.pr.to_string()));
    env.push(("PREVIEW_SHA".to_owned(), input.sha.clone()));
    if let Some(url) = &input.public_url {
        env.push(("PREVIEW_URL".to_owned(), url.clone()));
    }
    let password = &input.secret;
    if let Some(shared) = shared_database(plan, input) {
        let super::SharedDatabase {
            host,
            port,
            name,
            password,
            ..
        } = shared;
        let scheme = match shared.engine {
            Database::Postgres => "postgresql",
            _ => "mysql",
        };
        env.push((
            "DATABASE_URL".to_owned(),
            format!("{scheme}://{name}:{password}@{host}:{port}/{name}"),
        ));
        if plan.framework == Some(Framework::Laravel) {
            let connection = match shared.engine {
                Database::Postgres => "pgsql",
                _ => "mysql",
            };
            let port = port.to_string();
            for (k, v) in [
                ("DB_CONNECTION", connection),
                ("DB_HOST", host.as_str()),
                ("DB_PORT", port.as_str()),
                ("DB_DATABASE", name.as_str()),
                ("DB_USERNAME", name.as_str()),
                ("DB_PASSWORD", password.as_str()),
            ] {
                env.push((k.to_owned(), v.to_owned()));
            }
        }
    } else if let Some(db) = plan.database {
        let url = match db {
            Database::Postgres => {
                format!("postgresql://{DB_NAME}:{password}@{DB_SERVICE}:5432/{DB_NAME}")
            }
            Database::Mysql => format!("mysql://{DB_NAME}:{password}@{DB_SERVICE}:3306/{DB_NAME}"),
            Database::Mongodb => {
                format!(
                    "mongodb://{DB_NAME}:{password}@{DB_SERVICE}:27017/{DB_NAME}?authSource=admin"
                )
            }
        };
        env.push(("DATABASE_URL".to_owned(), url.clone()));
        if db == Database::Mongodb {
            env.push(("MONGODB_URI".to_owned(), url.clone()));
            env.push(("MONGO_URL".to_owned(), url));
        }
        if plan.framework == Some(Framework::Laravel) {
            let (connection, port) = match db {
                Database::Postgres => ("pgsql", "5432"),
                Database::Mysql => ("mysql", "3306"),
                Database::Mongodb => ("mongodb", "27017"),
            };
            for (k, v) in [
                ("DB_CONNECTION", connection),
                ("DB_HOST", DB_SERVICE),
                ("DB_PORT", port),
                ("DB_DATABASE", DB_NAME),
                ("DB_USERNAME", DB_NAME),
                ("DB_PASSWORD", password.as_str()),
            ] {
                env.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    for extra in &plan.extra_services {
        match extra {
            ExtraService::Redis => {
                env.push(("REDIS_URL".to_owned(), "redis://redis:6379".to_owned()));
                if plan.framework == Some(Framework::Laravel) {
                    env.push(("REDIS_HOST".to_owned(), "redis".to_owned()));
                }
            }
        }
    }
    match plan.framework {
        Some(Framework::Laravel) => {
            env.push((
                "APP_KEY".to_owned(),
                format!("base64:{}", base64(&key_bytes(&input.secret))),
            ));
            env.push(("APP_ENV".to_owned(), "production".to_owned()));
            env.push(("LOG_CHANNEL".to_owned(), "stderr".to_owned()));
            if let Some(url) = &input.public_url {
                env.push(("APP_URL".to_owned(), url.clone()));
            }
        }
        Some(Framework::Nextjs) => env.push(("HOSTNAME".to_owned(), "0.0.0.0".to_owned())),
        _ => {}
    }
    env
}

/// Our variables, then the repo's (which win), as Compose sees them.
fn merge_env(
    ours: Vec<(String, Option<String>)>,
    config_env: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let mut merged: BTreeMap<String, Option<String>> = ours.into_iter().collect();
    for (k, v) in config_env {
        merged.insert(k.clone(), Some(literal(v)));
    }
    merged.into_iter().collect()
}

/// The app's environment plus the preview's secrets, each named without a value (rendered
/// `NAME: null`): Compose takes the value from its own process environment when it creates the
/// container, so no value is written to the compose file, and none reaches an image (only the
/// app's runtime environment names them, never `build.args`). A secret replaces a variable of
/// the same name from preview-config.yml or the repo's compose file (the operator set it on
/// purpose), but never one the preview sets itself (such as a custom `app_port_env`).
fn with_secret_names(
    env: Vec<(String, Option<String>)>,
    plan: &Plan,
    input: &RenderInput,
) -> Vec<(String, Option<String>)> {
    if input.secret_names.is_empty() {
        return env;
    }
    let ours: BTreeSet<String> = generated_values(plan, input)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut merged: BTreeMap<String, Option<String>> = env.into_iter().collect();
    for name in &input.secret_names {
        if !ours.contains(name.as_str()) {
            merged.insert(name.as_str().to_owned(), None);
        }
    }
    merged.into_iter().collect()
}

fn database_service(
    db: Database,
    input: &RenderInput,
    labels: &BTreeMap<String, String>,
) -> ServiceView {
    let password = input.secret.clone();
    let (role, env, data, test): (&str, Vec<(&str, String)>, &str, Vec<&str>) = match db {
        Database::Postgres => (
            "postgres",
            vec![
                ("POSTGRES_USER", DB_NAME.to_owned()),
                ("POSTGRES_PASSWORD", password),
                ("POSTGRES_DB", DB_NAME.to_owned()),
            ],
            "/var/lib/postgresql/data",
            // TCP, not the socket: during initdb the server listens on the socket only.
            vec![
                "CMD",
                "pg_isready",
                "-h",
                "127.0.0.1",
                "-U",
                DB_NAME,
                "-d",
                DB_NAME,
            ],
        ),
        Database::Mysql => (
            "mysql",
            vec![
                ("MYSQL_DATABASE", DB_NAME.to_owned()),
                ("MYSQL_USER", DB_NAME.to_owned()),
                ("MYSQL_PASSWORD", password),
                ("MYSQL_RANDOM_ROOT_PASSWORD", "yes".to_owned()),
            ],
            "/var/lib/mysql",
            vec!["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "--silent"],
        ),
        Database::Mongodb => (
            "mongodb",
            vec![
                ("MONGO_INITDB_ROOT_USERNAME", DB_NAME.to_owned()),
                ("MONGO_INITDB_ROOT_PASSWORD", password),
                ("MONGO_INITDB_DATABASE", DB_NAME.to_owned()),
            ],
            "/data/db",
            vec![
                "CMD",
                "mongosh",
                "--quiet",
                "--eval",
                "db.adminCommand('ping')",
            ],
        ),
    };
    ServiceView {
        image: Some(images::image_for(role).to_owned()),
        environment: env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Some(literal(&v))))
            .collect(),
        volumes: vec![VolumeView {
            kind: "volume",
            source: Some("db-data".to_owned()),
            target: data.to_owned(),
            read_only: false,
        }],
        healthcheck: Some(HealthView {
            test: test.into_iter().map(str::to_owned).collect(),
            interval: "2s",
            timeout: "5s",
            retries: 30,
            start_period: "10s",
        }),
        ..hardened(DB_SERVICE, labels)
    }
}

fn extra_service(extra: ExtraService, labels: &BTreeMap<String, String>) -> ServiceView {
    match extra {
        ExtraService::Redis => ServiceView {
            image: Some(images::image_for("redis").to_owned()),
            healthcheck: Some(HealthView {
                test: vec!["CMD".into(), "redis-cli".into(), "ping".into()],
                interval: "2s",
                timeout: "5s",
                retries: 30,
                start_period: "5s",
            }),
            ..hardened(extra.as_str(), labels)
        },
    }
}

fn repo_service(
    plan: &Plan,
    input: &RenderInput,
    labels: &BTreeMap<String, String>,
    service: &RepoService,
    is_app: bool,
    renames: &[(&str, &str)],
) -> Result<ServiceView> {
    let mut passthrough = service.passthrough.clone();
    let mut view = hardened(&service.name, labels);
    let mut merged_labels = service.labels.clone();
    merged_labels.extend(labels.clone());
    // An init as PID 1 for every service, as for the app, unless the repo says otherwise.
    view.init = !passthrough.contains_key("init");
    if !is_app && service.may_end() {
        view.restart = service.restart.clone();
        merged_labels.insert(super::labels::ONE_SHOT.to_owned(), "true".to_owned());
    }
    view.labels = merged_labels;
    view.image = service.image.clone();
    view.build = service.build.as_ref().map(|b| {
        let mut build_labels = b.labels.clone();
        build_labels.extend(labels.clone());
        BuildView {
            context: absolute(input, &b.context),
            dockerfile: b.dockerfile.as_deref().map(|d| absolute(input, d)),
            dockerfile_inline: b.dockerfile_inline.clone(),
            target: b.target.clone(),
            args: b.args.clone().into_iter().collect(),
            labels: build_labels,
            passthrough: yaml_block(&b.passthrough, 6),
        }
    });
    view.environment = service.environment.clone().into_iter().collect();
    view.env_files = service
        .env_files
        .iter()
        .map(|f| absolute(input, f))
        .collect();
    view.expose = service.expose.clone();
    view.volumes = service
        .volumes
        .iter()
        .map(|m| match m {
            Mount::Bind {
                source,
                target,
                read_only,
            } => VolumeView {
                kind: "bind",
                source: Some(absolute(input, source)),
                target: target.clone(),
                read_only: *read_only,
            },
            Mount::Volume {
                source,
                target,
                read_only,
            } => VolumeView {
                kind: "volume",
                source: Some(source.clone()),
                target: target.clone(),
                read_only: *read_only,
            },
            Mount::Anonymous { target } => VolumeView {
                kind: "volume",
                source: None,
                target: target.clone(),
                read_only: false,
            },
            Mount::Tmpfs { target, .. } => VolumeView {
                kind: "tmpfs",
                source: None,
                target: target.clone(),
                read_only: false,
            },
        })
        .collect();
    if is_app {
        view.init = true;
        passthrough.remove("init");
        view.stop_grace_period = input.stop_grace_period.clone();
        if view.build.is_none() && view.image.is_none() {
            view.build = Some(own_build(plan, input, labels));
        }
        view.ports = vec![PortView {
            target: plan.port,
            published: input.host_port.to_string(),
        }];
        // Our variables where the repo's compose file sets none, then preview-config.yml's env.
        let names = preview_variable_names(plan);
        let mut env: BTreeMap<String, Option<String>> = generated_env(plan, input)
            .into_iter()
            .filter(|(k, _)| names.contains(k))
            .collect();
        env.extend(view.environment.drain(..));
        for (k, v) in &plan.env {
            env.insert(k.clone(), Some(literal(v)));
        }
        view.environment = with_secret_names(env.into_iter().collect(), plan, input);
        let (entrypoint, command) = startup(plan);
        if entrypoint.is_some() {
            passthrough.remove("entrypoint");
            passthrough.remove("command");
            view.entrypoint = entrypoint;
            view.command = command;
        } else if !plan.start_argv.is_empty() {
            passthrough.remove("command");
            view.command = Some(plan.start_argv.iter().map(|a| literal(a)).collect());
        }
    }
    // In the green slot the slotted services (the app, a routed second web service) are
    // renamed: each keeps its usual name as an alias, and the other services' references
    // follow it (the app may name the second service, and it the app).
    for (from, to) in renames {
        if service.name == *from {
            view.name = (*to).to_owned();
            let networks = passthrough.remove("networks");
            passthrough.insert("networks".to_owned(), aliased_networks(networks, from));
        } else {
            rename_references(&mut passthrough, from, to);
        }
    }
    view.passthrough = yaml_block(&passthrough, 4);
    if view.build.is_none() && view.image.is_none() {
        return Err(Error::Render {
            template: "docker-compose.yml.j2".to_owned(),
            message: format!("service `{}` has neither build nor image", service.name),
        });
    }
    Ok(view)
}

/// Publishes the repo's second web service ([`crate::sanitize::HostnameService`]) on
/// 127.0.0.1 at its route's port, as the app is, when previews have hostnames. Its other
/// `ports` were dropped by the sanitiser like every service's. It is slotted with the app (see
/// [`routed_service`]): an update starts it beside the serving one, at the route's port (the
/// new slot's), and nginx switches to both at once. It gets the app's short stop grace period
/// (it runs under an init, as every service does), so the old slot's goes quickly.
fn publish_hostname_service(
    view: &mut ServiceView,
    service: &RepoService,
    repo: &SanitizedCompose,
    input: &RenderInput,
) {
    if let (Some(second), Some(route)) = (&repo.hostname_service, &input.service_route)
        && second.service == service.name
    {
        view.ports = vec![PortView {
            target: second.port,
            published: route.host_port.to_string(),
        }];
        view.stop_grace_period = input.stop_grace_period.clone();
    }
}

/// A mapping as block YAML, every line indented by `indent` spaces; empty for an empty map.
fn yaml_block(map: &serde_json::Map<String, Value>, indent: usize) -> String {
    if map.is_empty() {
        return String::new();
    }
    let text = serde_saphyr::to_string(map).unwrap_or_default();
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() || line == "---" {
            continue;
        }
        out.push_str(&pad);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// 32 key bytes from the secret (Laravel's APP_KEY is base64 of 32 bytes).
fn key_bytes(secret: &str) -> Vec<u8> {
    secret.bytes().cycle().take(32).collect()
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_green_app_keeps_its_name_as_an_alias() {
        let alias = |v: Value| aliased_networks(Some(v), "web");
        assert_eq!(
            aliased_networks(None, "web"),
            serde_json::json!({"default": {"aliases": ["web"]}})
        );
        assert_eq!(
            alias(serde_json::json!(["front", "back"])),
            serde_json::json!({"front": {"aliases": ["web"]}, "back": {"aliases": ["web"]}})
        );
        assert_eq!(
            alias(serde_json::json!({"front": null, "back": {"aliases": ["w"], "priority": 2}})),
            serde_json::json!({"front": {"aliases": ["web"]}, "back": {"aliases": ["w", "web"], "priority": 2}})
        );
    }

    #[test]
    fn references_to_the_app_follow_it_to_the_green_slot() {
        let mut list =
            serde_json::json!({"depends_on": ["web", "db"], "links": ["web", "web:site", "db"]});
        rename_references(list.as_object_mut().unwrap(), "web", "web-green");
        assert_eq!(
            list,
            serde_json::json!({"depends_on": ["web-green", "db"], "links": ["web-green:web", "web-green:site", "db"]})
        );
        let mut map = serde_json::json!({"depends_on": {"web": {"condition": "service_started"}}});
        rename_references(map.as_object_mut().unwrap(), "web", "web-green");
        assert_eq!(
            map,
            serde_json::json!({"depends_on": {"web-green": {"condition": "service_started"}}})
        );
        // Sharing its namespace or volumes follows it too.
        let mut shared = serde_json::json!({"network_mode": "service:web", "pid": "service:db", "volumes_from": ["web:ro", "web", "db"]});
        rename_references(shared.as_object_mut().unwrap(), "web", "web-green");
        assert_eq!(
            shared,
            serde_json::json!({"network_mode": "service:web-green", "pid": "service:db", "volumes_from": ["web-green:ro", "web-green", "db"]})
        );
    }

    /// Every variable the preview sets, for any framework, database and service, is a name a
    /// secret may not take; so a secret never silently loses to (or replaces) one of ours.
    #[test]
    fn the_preview_variables_are_reserved_secret_names() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/apps/laravel");
        let base = crate::plan(&root).unwrap().plan;
        let mut input = RenderInput::new(
            "acme-app-pr-1",
            "acme/app",
            1,
            "0".repeat(40),
            "acme-app",
            8000,
            "/checkout",
            "/work/Dockerfile",
            "0123456789abcdef",
        );
        input.public_url = Some("http://example.test/acme-app/pr-1/".into());
        let mut seen = BTreeSet::new();
        for framework in Framework::ALL.map(Some).into_iter().chain([None]) {
            for database in [
                None,
                Some(Database::Postgres),
                Some(Database::Mysql),
                Some(Database::Mongodb),
            ] {
                for language in Language::ALL {
                    for port_env in [None, Some("PORT"), Some("ROCKET_PORT")] {
                        let mut plan = base.clone();
                        plan.framework = framework;
                        plan.database = database;
                        plan.language = Some(language);
                        plan.port_env = port_env.map(str::to_owned);
                        plan.extra_services = ExtraService::CATALOGUE.to_vec();
                        for (name, _) in generated_values(&plan, &input) {
                            assert!(
                                crate::repo_secrets::reserved_reason(&name).is_some(),
                                "{name} is set by the preview but may be a secret's name"
                            );
                            seen.insert(name);
                        }
                    }
                }
            }
        }
        assert!(
            seen.contains("DATABASE_URL") && seen.contains("APP_KEY"),
            "{seen:?}"
        );
    }

    /// Found while writing the hostile-input tests: the refusal was a template error, naming
    /// neither the compose file nor a key.
    #[test]
    fn a_service_named_as_the_green_app_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM python:3.12-slim-bookworm\n").unwrap();
        std::fs::write(
            root.join("compose.yaml"),
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  web-green:\n    image: redis:7\n",
        )
        .unwrap();
        let planned = crate::plan(root).unwrap();
        let mut input = RenderInput::new(
            "acme-app-pr-1",
            "acme/app",
            1,
            "0".repeat(40),
            "acme-app",
            8000,
            root,
            root.join("Dockerfile.generated"),
            "0123456789abcdef",
        );
        render_compose(&planned, &input).unwrap();
        input.app_slot = AppSlot::Green;
        let err = render_compose(&planned, &input).unwrap_err().to_string();
        assert_eq!(
            err,
            "compose.yaml: service `web-green`: key `services`: the name is the one the web service `web` takes during an update; rename it"
        );
    }

    /// A compose file whose web service and routed second service (`front`) name each other,
    /// rendered in `slot` with hostnames; the parsed services.
    fn two_web_services(compose: &str, slot: AppSlot) -> Result<Value> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM python:3.12-slim-bookworm\n").unwrap();
        std::fs::write(root.join("compose.yaml"), compose).unwrap();
        let mut planned = crate::plan(root).unwrap();
        planned.route_hostname_service(|label| Some(format!("acme-app-pr-1-{label}.example.com")));
        let mut input = RenderInput::new(
            "acme-app-pr-1",
            "acme/app",
            1,
            "0".repeat(40),
            "acme-app",
            8000,
            root,
            root.join("Dockerfile.generated"),
            "0123456789abcdef",
        );
        let route = |hostname: &str| super::super::HostRoute {
            hostname: hostname.to_owned(),
            listen: vec!["80".to_owned()],
            tls: None,
        };
        input.host = Some(route("acme-app-pr-1.example.com"));
        input.service_route = Some(super::super::ServiceRoute {
            host_port: 8001,
            route: route("acme-app-pr-1-front.example.com"),
        });
        input.app_slot = slot;
        let text = render_compose(&planned, &input)?;
        let parsed: Value = serde_saphyr::from_str(&text).unwrap();
        Ok(parsed["services"].clone())
    }

    /// In the green slot both slotted services are renamed, and each one's references to the
    /// other follow it, whichever way they point; a service that is neither follows both. In the
    /// blue slot the routed service is `{name}-blue` and the app keeps its name.
    #[test]
    fn references_between_the_app_and_the_routed_service_follow_both_renames() {
        let compose = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    depends_on: [front, worker]\n  front:\n    image: redis:7\n    labels:\n      preview.hostname: front\n    expose: [\"3000\"]\n  worker:\n    image: redis:7\n    links: [\"front:ui\"]\n";
        let green = two_web_services(compose, AppSlot::Green).unwrap();
        assert_eq!(
            green["web-green"]["depends_on"],
            serde_json::json!(["front-green", "worker"])
        );
        assert_eq!(
            green["worker"]["links"],
            serde_json::json!(["front-green:ui"])
        );
        let blue = two_web_services(compose, AppSlot::Blue).unwrap();
        assert_eq!(
            blue["web"]["depends_on"],
            serde_json::json!(["front-blue", "worker"])
        );
        assert_eq!(
            blue["front-blue"]["networks"],
            serde_json::json!({"default": {"aliases": ["front"]}})
        );
        assert!(blue.get("front").is_none(), "{blue:?}");

        let compose = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  front:\n    image: redis:7\n    labels:\n      preview.hostname: front\n    expose: [\"3000\"]\n    depends_on:\n      web:\n        condition: service_started\n";
        let green = two_web_services(compose, AppSlot::Green).unwrap();
        assert_eq!(
            green["front-green"]["depends_on"],
            serde_json::json!({"web-green": {"condition": "service_started"}})
        );
        assert_eq!(
            green["front-green"]["networks"],
            serde_json::json!({"default": {"aliases": ["front"]}})
        );
        assert_eq!(green["front-green"]["ports"][0]["published"], "8001");
        assert_eq!(green["front-green"]["ports"][0]["target"], 3000);
    }

    /// A service already named as the routed service in either slot is refused in both, so that
    /// a plan does not pass on one deploy and fail on the next.
    #[test]
    fn a_service_named_as_the_routed_service_in_a_slot_is_refused() {
        for taken in ["front-blue", "front-green"] {
            let compose = format!(
                "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  front:\n    image: redis:7\n    labels:\n      preview.hostname: front\n    expose: [\"3000\"]\n  {taken}:\n    image: redis:7\n"
            );
            for slot in [AppSlot::Blue, AppSlot::Green] {
                let err = two_web_services(&compose, slot).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!(
                        "compose.yaml: service `{taken}`: key `services`: the name is one the service `front` (at its own hostname) takes in a preview; rename it"
                    )
                );
            }
        }
    }

    #[test]
    fn dollars_are_escaped() {
        assert_eq!(literal("a$b${HOME}"), "a$$b$${HOME}");
    }
}
