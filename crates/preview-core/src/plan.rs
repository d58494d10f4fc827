//! Planning a checkout: read `preview-config.yml`, pick the app, detect its framework, decide
//! where the image comes from, and sanitise a repo-owned compose file. Every decision is recorded
//! with its reason.

use std::collections::BTreeSet;
use std::path::Path;

use crate::checkout::{CONFIG_LIMIT, Checkout, MANIFEST_LIMIT};
use crate::config::{self, ComposeChoice, FrameworkChoice, PreviewConfig};
use crate::detect::{self, Detection, Strength, display_argv, join, join_str};
use crate::dev_server::{self, DevServer};
use crate::dotenv;
use crate::images;
use crate::model::{
    ComposeServiceSummary, ComposeSummary, DockerfileSource, Framework, Language, Plan, ReadyWhen,
    Recipe,
};
use crate::sanitize::{self, SanitizeContext, SanitizedCompose, WebOverride};
use crate::versions;
use crate::{Error, Result};

/// Conventional directories of apps in a monorepo, each expanded one level.
const CONVENTIONAL_PARENTS: [&str; 4] = ["apps", "services", "packages", "cmd"];
/// Conventional directories that are an app themselves.
const CONVENTIONAL_DIRS: [&str; 5] = ["backend", "server", "api", "app", "web"];
/// Most candidate directories examined in a monorepo.
const MAX_CANDIDATES: usize = 400;

/// A plan together with the sanitised repo compose file, which rendering needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub plan: Plan,
    pub repo_compose: Option<SanitizedCompose>,
}

impl Planned {
    /// Decides the repo's second web service ([`sanitize::HostnameService`]) by how previews
    /// are reached: with hostnames, nginx serves it at its own host and the plan says where;
    /// under paths it stays private, and the plan's warnings say why. `hostname_for` gives the
    /// service's hostname for its label, or `None` when hostnames are off (it is
    /// `Routing::service_host_route`, given as a function so that planning stays below routing).
    pub fn route_hostname_service(&mut self, hostname_for: impl FnOnce(&str) -> Option<String>) {
        let Some(compose) = self.repo_compose.as_mut() else {
            return;
        };
        let Some(second) = compose.hostname_service.clone() else {
            return;
        };
        match hostname_for(&second.label) {
            Some(hostname) => {
                self.plan.reasons.push(format!(
                    "service `{}` is routed at {} (port {}) because it has the label `{}: {}` in {}",
                    second.service,
                    hostname,
                    second.port,
                    sanitize::HOSTNAME_LABEL,
                    second.label,
                    compose.file
                ));
                // The sanitiser's note on its dropped `ports` says only the web service is
                // routed: not so for this one.
                let dropped = format!("service `{}`: `ports` dropped", second.service);
                let routed = format!(
                    "service `{}`: `ports` dropped; it is published on 127.0.0.1 at a port of the orchestrator's, routed at its own hostname",
                    second.service
                );
                for note in self.plan.warnings.iter_mut().chain(
                    self.plan
                        .compose
                        .iter_mut()
                        .flat_map(|c| c.changed.iter_mut()),
                ) {
                    if note.starts_with(&dropped) {
                        note.clone_from(&routed);
                    }
                }
                // It starts beside the serving one on an update, as the web service does.
                let in_place = replaced_in_place_warning(compose, None);
                if let Some(at) = self
                    .plan
                    .warnings
                    .iter()
                    .position(|w| Some(w) == in_place.as_ref())
                {
                    match replaced_in_place_warning(compose, Some(&second.service)) {
                        Some(warning) => self.plan.warnings[at] = warning,
                        None => {
                            self.plan.warnings.remove(at);
                        }
                    }
                }
                if let Some(summary) = self.plan.compose.as_mut()
                    && let Some(service) = summary
                        .services
                        .iter_mut()
                        .find(|s| s.name == second.service)
                {
                    service.routed_at = Some(hostname);
                }
            }
            None => {
                self.plan.warnings.push(format!(
                    "service `{}` of {} has the label `{}: {}` but stays private: hostnames are off (previews are served under a path; PREVIEW_DOMAIN gives each its own hostname)",
                    second.service,
                    compose.file,
                    sanitize::HOSTNAME_LABEL,
                    second.label
                ));
                compose.hostname_service = None;
            }
        }
    }
}

/// The warning that the services built from the repo besides the web service (and `routed`, a
/// second web service routed at its own hostname, which starts beside the serving one too) are
/// replaced in place on an update; `None` when there are none.
fn replaced_in_place_warning(c: &SanitizedCompose, routed: Option<&str>) -> Option<String> {
    let built_others: Vec<String> = c
        .services
        .iter()
        .filter(|s| s.name != c.app_service && Some(s.name.as_str()) != routed && s.build.is_some())
        .filter(|s| !s.awaited)
        .map(|s| format!("`{}`", s.name))
        .collect();
    if built_others.is_empty() {
        return None;
    }
    let beside = match routed {
        None => format!("only `{}` starts beside the serving one", c.app_service),
        Some(routed) => format!(
            "only `{}` and `{routed}` (its own hostname) start beside the serving ones",
            c.app_service
        ),
    };
    Some(format!(
        "on an update, {} (built from the repo) {} replaced in place when the new commit starts, before its web service is ready; {beside}",
        built_others.join(", "),
        if built_others.len() == 1 { "is" } else { "are" },
    ))
}

/// Plans the checkout at `root`.
pub fn plan(root: &Path) -> Result<Planned> {
    plan_checkout(&Checkout::open(root)?)
}

/// Reads and validates preview-config.yml (or .yaml) at the checkout root, if there is one.
pub fn read_config(checkout: &Checkout) -> Result<Option<PreviewConfig>> {
    let present: Vec<&str> = config::FILE_NAMES
        .into_iter()
        .filter(|f| checkout.kind(Path::new(f)).is_some())
        .collect();
    let file = match present.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(Error::Config {
                file: present.join(" and "),
                line: None,
                key: None,
                message: "both exist; keep one".to_owned(),
            });
        }
    };
    let text = match checkout.read_text(Path::new(file), CONFIG_LIMIT) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(Error::TooLarge { limit, .. }) => {
            return Err(Error::Config {
                file: file.to_owned(),
                line: None,
                key: None,
                message: format!("the file is larger than the {limit}-byte limit"),
            });
        }
        Err(e) => return Err(e),
    };
    PreviewConfig::parse(&text, file).map(Some)
}

/// Plans an opened checkout.
pub fn plan_checkout(checkout: &Checkout) -> Result<Planned> {
    let config = read_config(checkout)?.unwrap_or_default();
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let choice = config.framework.as_ref().map(|f| f.value);
    let forced_language = choice.map(FrameworkChoice::language);
    let forced_framework = choice.and_then(FrameworkChoice::framework);

    // 1. The app directory.
    let (app_dir, _explicit, mut found) = select_app(
        checkout,
        &config,
        forced_language,
        forced_framework,
        &mut reasons,
        &mut warnings,
    )?;

    // 2. The repo's own image: the dockerfile key, or a Dockerfile in the app dir.
    let dockerfile_path = match &config.dockerfile {
        Some(d) => {
            if !checkout.is_file(&d.value) {
                return Err(config.error(
                    "dockerfile",
                    d.line,
                    format!("{} is not a file in the repository (symlinks leading outside are not followed)", d.value),
                ));
            }
            reasons.push(format!(
                "dockerfile=repo because {} sets dockerfile: {}",
                config.file, d.value
            ));
            Some(d.value.clone())
        }
        None => {
            let own = join_str(&app_dir, "Dockerfile");
            checkout.is_file(&own).then(|| {
                reasons.push(format!("dockerfile=repo because {own} exists"));
                own
            })
        }
    };

    // 3. A repo-owned compose file, sanitised. Its refusals suggest `compose: none` only when
    // the checkout has an app without it.
    let app_without_compose = dockerfile_path.is_some()
        || found
            .as_ref()
            .is_some_and(|d| d.strength >= Strength::Plain);
    let mut images_only_file = None;
    let mut repo_compose = find_compose(
        checkout,
        &config,
        &app_dir,
        app_without_compose,
        &mut images_only_file,
        &mut reasons,
    )?;
    name_hostname_service(&config, repo_compose.as_mut())?;
    if let Some(c) = &mut repo_compose {
        read_dotenv(checkout, c, &mut reasons)?;
        activate_profiles(c, &mut reasons);
        reasons.push(format!(
            "web_service={} because {}: only its port is routed; the other services of {} stay on the preview's private network",
            c.app_service, c.app_service_reason, c.file
        ));
        warnings.extend(c.warnings.iter().cloned());
    }
    let compose_builds_app = repo_compose.as_ref().is_some_and(|c| {
        c.services
            .iter()
            .any(|s| s.name == c.app_service && (s.build.is_some() || s.image.is_some()))
    });
    // The web service's own directory says what it is better than the app dir: where its
    // Dockerfile is (`backend/Dockerfile` built from the root), else its build context. Its
    // image starts it, so a manifest with nothing we could start (a Vue CLI app's package.json
    // without a start script) still names the language, unless the directory is in a language
    // we do not build (a package.json for the assets of a Java app).
    if let Some(dir) = repo_compose.as_ref().and_then(web_service_dir)
        && dir != app_dir
        && config.app_path.is_none()
        && let Some(d) =
            detect::detect_all(checkout, &dir, false, forced_language, forced_framework)
                .unwrap_or_default()
                .into_iter()
                .next()
                .filter(|d| {
                    d.strength >= Strength::Plain
                        || detect::unsupported_language(checkout, &dir).is_none()
                })
    {
        reasons.push(format!(
            "language={} because the web service is built from {dir}, which has {}",
            d.language, d.evidence
        ));
        found = Some(d);
    }

    // 4. Detection, unless the repo builds its own image and nothing was found.
    let detection = match found.take() {
        Some(d) => Some(d),
        None if dockerfile_path.is_some() || compose_builds_app => None,
        None => {
            return Err(detect::unsupported_language(checkout, &app_dir).unwrap_or_else(|| {
                let markers: Vec<&str> = detect::detectors()
                    .iter()
                    .flat_map(|d| d.markers().iter().copied())
                    .collect();
                Error::NoApp(format!(
                    "no app found in {}: looked for {} (and a Dockerfile); set app_path in preview-config.yml for a monorepo{}",
                    if app_dir == "." { "the repository root" } else { &app_dir },
                    markers.join(", "),
                    images_only_file
                        .as_deref()
                        .map(|file| images_only_hint(checkout, &config, file))
                        .unwrap_or_default()
                ))
            }));
        }
    };
    let repo_image = dockerfile_path.is_some() || compose_builds_app;
    // A web service run from a registry image is warned about below, with its image.
    let web_from_image = repo_compose
        .as_ref()
        .is_some_and(|c| web_service_dir(c).is_none());
    if detection.is_none() && !web_from_image {
        let dir = repo_compose
            .as_ref()
            .and_then(web_service_dir)
            .unwrap_or_else(|| app_dir.clone());
        warnings.push(match detect::unsupported_language(checkout, &dir) {
            Some(Error::Unsupported { language, found }) => format!(
                "{language} (found {found}) is not a language previews detect: the repo's own image is used as is"
            ),
            _ => "no supported language detected; the repo's own image is used as is".to_owned(),
        });
    }

    let mut plan = Plan {
        language: None,
        framework: None,
        language_version: None,
        package_manager: None,
        app_dir: app_dir.clone(),
        context_dir: app_dir.clone(),
        build_command: None,
        build_commands: Vec::new(),
        start_command: None,
        start_argv: Vec::new(),
        startup_commands: Vec::new(),
        port: 8080,
        port_env: Some("PORT".to_owned()),
        health_path: "/".to_owned(),
        ready_when: ReadyWhen::AnyAnswer,
        database: None,
        database_seed: None,
        extra_services: Vec::new(),
        dockerfile: if repo_image {
            DockerfileSource::Repo
        } else {
            DockerfileSource::Generated
        },
        dockerfile_path: dockerfile_path.clone(),
        compose_file: repo_compose.as_ref().map(|c| c.file.clone()),
        compose: repo_compose.as_ref().map(compose_summary),
        env: Default::default(),
        base_image: None,
        recipe: None,
        reasons: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(d) = detection {
        let Detection {
            language,
            framework,
            evidence,
            language_version,
            package_manager,
            build_commands,
            start_argv,
            startup_commands,
            port,
            port_env,
            database,
            extra_services,
            context_dir,
            recipe,
            reasons: detected_reasons,
            warnings: detected_warnings,
            build_warnings,
            ..
        } = d;
        if forced_language.is_some() {
            reasons.push(format!(
                "language={language} because {} sets framework",
                config.file
            ));
        } else if !detected_reasons
            .iter()
            .chain(reasons.iter())
            .any(|r| r.starts_with("language="))
        {
            reasons.push(format!("language={language} because of {evidence}"));
        }
        reasons.extend(detected_reasons);
        warnings.extend(detected_warnings);
        // What detection says of the image it would generate is moot when the repo builds its
        // own, except that a front end built for the site root is then served as it is.
        if repo_image {
            if let Recipe::Node(node) = &recipe
                && node.static_root.is_some()
                && let Some(f) = framework.filter(|f| *f != Framework::Static)
            {
                warnings.push(detect::node::site_root_warning_for_repo_image(f));
            }
        } else {
            warnings.extend(build_warnings);
        }
        plan.language = Some(language);
        plan.framework = framework;
        plan.language_version = language_version;
        plan.package_manager = package_manager;
        plan.build_commands = build_commands;
        plan.start_argv = start_argv;
        plan.startup_commands = startup_commands;
        plan.port = port;
        plan.port_env = port_env;
        // A repo's compose file brings its own database and services.
        if repo_compose.is_none() {
            plan.database = database;
            plan.extra_services = extra_services;
        }
        if let Some(c) = context_dir {
            reasons.push(format!(
                "context_dir={c} because the app is built from its workspace or module root"
            ));
            plan.context_dir = c;
        }
        // A version manager's pin is the tool the developer runs, so it wins (as in railpack).
        if let Some((version, file)) = tool_versions_pin(checkout, &app_dir, language) {
            let over = plan
                .language_version
                .as_deref()
                .map(|v| format!(" (over {v} from the app's manifest)"))
                .unwrap_or_default();
            reasons.push(format!("language_version={version} from {file}{over}"));
            plan.language_version = Some(version);
        }
        if !repo_image {
            let choice = versions::choose(language, plan.language_version.as_deref());
            reasons.push(choice.reason);
            warnings.extend(choice.warning);
            plan.base_image = Some(choice.image);
            plan.recipe = Some(recipe);
        }
    }

    // 4b. A Procfile's web process is how the app asks to be started (Heroku's convention, which
    // nixpacks and railpack honour too); its release process runs before each start.
    let procfile_path = join_str(&app_dir, "Procfile");
    if let Some(text) = checkout.peek_text(Path::new(&procfile_path), MANIFEST_LIMIT) {
        let procfile = detect::parse_procfile(&text);
        if let Some(web) = &procfile.web {
            plan.start_argv = detect::command_argv(web);
            reasons.push(format!("start_command={web} from {procfile_path} web:"));
            if web.contains("$PORT") || web.contains("${PORT") {
                plan.port_env = Some("PORT".to_owned());
            }
        }
        if let Some(release) = procfile.release {
            reasons.push(format!(
                "startup_commands={release} from {procfile_path} release:"
            ));
            plan.startup_commands = vec![release];
        }
    }

    // 5. The repo's own image decides its port unless the config does.
    if let Some(path) = &dockerfile_path
        && config.app_port.is_none()
        && let Some(text) = checkout.peek_text(Path::new(path), MANIFEST_LIMIT)
        && let Some(port) = exposed_port(&text)
    {
        reasons.push(format!("port={port} because {path} exposes it"));
        plan.port = port;
    }
    if let Some(c) = &repo_compose
        && config.app_port.is_none()
        && let Some(app) = c.services.iter().find(|s| s.name == c.app_service)
    {
        if let Some(port) = app.published.first() {
            reasons.push(format!(
                "port={port} because service `{}` of {} publishes it",
                app.name, c.file
            ));
            plan.port = *port;
        } else if let Some(port) = app
            .expose
            .first()
            .and_then(|p| p.split('/').next()?.parse::<u16>().ok())
        {
            reasons.push(format!(
                "port={port} because service `{}` of {} exposes it",
                app.name, c.file
            ));
            plan.port = port;
        } else if let Some((key, port)) = proxy_port(app) {
            reasons.push(format!(
                "port={port} because service `{}` of {} tells its proxy so ({key})",
                app.name, c.file
            ));
            plan.port = port;
        } else if !reasons.iter().any(|r| r.starts_with("port=")) {
            warnings.push(format!(
                "the port {} of service `{}` is a guess: neither {} nor its image says which port it listens on; set app_port in preview-config.yml if it is another",
                plan.port, app.name, c.file
            ));
        }
        if app.build.is_none() {
            warnings.push(format!(
                "the web service `{}` is not built from the repo: it runs the image {} as it is",
                app.name,
                app.image.as_deref().unwrap_or("-")
            ));
        }
        if let Some(warning) = replaced_in_place_warning(c, None) {
            warnings.push(warning);
        }
    }

    // 5b. A development server in the web service's own image turns the preview's host away.
    if repo_image && config.app_entrypoint.is_none() {
        let found = match &repo_compose {
            Some(c) => c
                .services
                .iter()
                .find(|s| s.name == c.app_service)
                .and_then(|app| {
                    let build = app.build.as_ref()?;
                    let dockerfile = match (&build.dockerfile_inline, &build.dockerfile) {
                        (Some(text), _) => Some(text.clone()),
                        (None, Some(path)) => checkout.peek_text(Path::new(path), MANIFEST_LIMIT),
                        (None, None) => checkout.peek_text(
                            Path::new(&join_str(&build.context, "Dockerfile")),
                            MANIFEST_LIMIT,
                        ),
                    };
                    image_dev_server(
                        checkout,
                        app.passthrough.get("command").and_then(compose_command),
                        dockerfile.as_deref(),
                        build.target.as_deref(),
                        &build.context,
                    )
                })
                .map(|d| (format!("the web service `{}`", c.app_service), d)),
            None => dockerfile_path
                .as_ref()
                .and_then(|path| {
                    let text = checkout.peek_text(Path::new(path), MANIFEST_LIMIT)?;
                    image_dev_server(checkout, None, Some(&text), None, &plan.context_dir)
                })
                .map(|d| ("the repo's image".to_owned(), d)),
        };
        if let Some((who, server)) = found {
            warnings.push(format!(
                "{who} runs {} ({}): it answers {} to hosts it does not know, such as the preview's, so visitors would see that instead of the app; let it answer any host ({}) or serve a production build",
                server.name, server.found_in, server.answer, server.remedy
            ));
        }
    }

    // 6. preview-config.yml overrides.
    let cfg = &config.file;
    if let Some(p) = &config.app_port {
        plan.port = p.value;
        reasons.push(format!("port={} because {cfg} sets app_port", p.value));
    }
    if let Some(e) = &config.app_port_env {
        plan.port_env = Some(e.value.clone());
        reasons.push(format!(
            "port_env={} because {cfg} sets app_port_env",
            e.value
        ));
    }
    if let Some(h) = &config.health_check_path {
        plan.health_path = h.value.clone();
        plan.ready_when = ReadyWhen::Success;
        reasons.push(format!(
            "health_path={} because {cfg} sets health_check_path: ready on a 2xx or 3xx there",
            h.value
        ));
    } else {
        reasons.push(
            "health_path=/ by default: ready on any HTTP answer below 500 (set health_check_path to require a 2xx or 3xx)"
                .to_owned(),
        );
    }
    if let Some(e) = &config.app_entrypoint {
        plan.start_argv = detect::command_argv(&e.value);
        reasons.push(format!(
            "start_command={} because {cfg} sets app_entrypoint",
            e.value
        ));
    }
    if let Some(b) = &config.build_commands {
        plan.build_commands = b.value.clone();
        reasons.push(format!("build_commands from {cfg}"));
    }
    if let Some(s) = &config.startup_commands {
        plan.startup_commands = s.value.clone();
        reasons.push(format!("startup_commands from {cfg}"));
    }
    if let Some(d) = &config.database {
        plan.database = d.value;
        reasons.push(format!(
            "database={} because {cfg} says so",
            d.value.map(|d| d.as_str()).unwrap_or("none")
        ));
    }
    if let Some(seed) = &config.database_seed {
        if !matches!(
            plan.database,
            Some(crate::model::Database::Postgres | crate::model::Database::Mysql)
        ) {
            return Err(config.error(
                "database",
                seed.line,
                format!(
                    "seed: {} seeds a postgres or mysql database, but the app gets {}; set database.engine",
                    seed.value,
                    plan.database.map_or("none", |d| d.as_str())
                ),
            ));
        }
        // Read now, so that a missing, escaping or oversized seed fails the plan with its name.
        crate::seed::read_seed(checkout, &seed.value)
            .map_err(|e| config.error("database", seed.line, format!("seed: {e}")))?;
        plan.database_seed = Some(seed.value.clone());
        reasons.push(format!(
            "database_seed={} because {cfg} sets database.seed",
            seed.value
        ));
    }
    if let Some(e) = &config.extra_services {
        plan.extra_services = e.value.clone();
        reasons.push(format!("extra_services from {cfg}"));
    }
    if let Some(f) = &config.env_file {
        let text = match checkout.read_text(Path::new(&f.value), CONFIG_LIMIT) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(config.error(
                    "env_file",
                    f.line,
                    format!("{} does not exist", f.value),
                ));
            }
            Err(Error::UnsafePath { reason, .. }) => {
                return Err(config.error(
                    "env_file",
                    f.line,
                    format!(
                        "an env_file outside the repo is refused: {}: {reason}",
                        f.value
                    ),
                ));
            }
            Err(e) => return Err(config.error("env_file", f.line, e.to_string())),
        };
        plan.env.extend(config::parse_env_file(&text, &f.value)?);
        reasons.push(format!("env from {} (env_file)", f.value));
    }
    for (name, value) in &config.env {
        plan.env.insert(name.clone(), value.value.clone());
    }

    // 7. Consistency. The repo's own image starts itself, unless app_entrypoint says otherwise.
    if repo_image && config.app_entrypoint.is_none() && !plan.start_argv.is_empty() {
        plan.start_argv.clear();
        reasons.push(
            "start_command=the image's own CMD, because the repo builds its image".to_owned(),
        );
    }
    // Inferred build steps are for the generated Dockerfile (configured ones are refused below).
    if repo_image && config.build_commands.is_none() && !plan.build_commands.is_empty() {
        plan.build_commands.clear();
        reasons.push(
            "build_command=the steps of the repo's own Dockerfile, because the repo builds its image"
                .to_owned(),
        );
    }
    if plan.start_argv.is_empty() && !repo_image {
        return Err(Error::NoApp(format!(
            "{}: found {} but nothing to start; set app_entrypoint in preview-config.yml",
            if app_dir == "." {
                "the repository root"
            } else {
                &app_dir
            },
            plan.language.map(|l| l.as_str()).unwrap_or("an app"),
        )));
    }
    if repo_image && !plan.startup_commands.is_empty() && config.app_entrypoint.is_none() {
        // Configured ones are an error; inferred ones (Django's migrate, a Procfile's release)
        // are the image's own business.
        if let Some(configured) = &config.startup_commands {
            return Err(config.error(
                "startup_commands",
                configured.line,
                "with the repo's own image, startup_commands need app_entrypoint (the command they run before)",
            ));
        }
        reasons.push(format!(
            "startup_commands not run ({}): the repo builds its own image, which starts itself",
            plan.startup_commands.join(" && ")
        ));
        plan.startup_commands.clear();
    }
    if repo_image && config.build_commands.is_some() {
        let line = config.build_commands.as_ref().map(|s| s.line).unwrap_or(1);
        return Err(config.error(
            "build_commands",
            line,
            "the repo's own Dockerfile builds the image; build_commands apply to generated Dockerfiles only (they never run on the host)",
        ));
    }
    if let (Some(port_env), false) = (&plan.port_env, repo_image)
        && plan
            .env
            .get(port_env)
            .is_some_and(|v| v != &plan.port.to_string())
    {
        warnings.push(format!(
            "env sets {port_env} to something other than the app port {}",
            plan.port
        ));
    }
    // The repo's compose file may refer only to the preview's own variables, now all known.
    if let Some(c) = &repo_compose {
        let mut names = crate::render::compose::preview_variable_names(&plan);
        names.extend(c.dotenv.keys().cloned());
        sanitize::check_variables(c, &names).map_err(|e| {
            if sanitize::is_preview_file(&c.file) {
                e
            } else {
                with_compose_none_hint(e, app_without_compose)
            }
        })?;
    }
    plan.build_command =
        (!plan.build_commands.is_empty()).then(|| plan.build_commands.join(" && "));
    plan.start_command = (!plan.start_argv.is_empty()).then(|| display_argv(&plan.start_argv));
    if repo_image && plan.recipe.is_none() && plan.language.is_some() {
        reasons.push("the generated Dockerfile is not used".to_owned());
    }
    plan.reasons = reasons;
    plan.warnings = bounded_notes(warnings);
    Ok(Planned { plan, repo_compose })
}

/// Most warnings a plan keeps; the rest are counted in one more.
const MAX_WARNINGS: usize = 20;

/// Most characters a warning keeps; the rest is cut, marked with `…`.
const MAX_WARNING_CHARS: usize = 1000;

/// `notes` within [`MAX_WARNINGS`] and [`MAX_WARNING_CHARS`]: a plan's warnings go into the PR
/// comment (which GitHub caps at 65,536 characters), and a repo's files can make any number of
/// them (a `.env` of 32,000 lines without `=` made 32,000, 4 MB), each quoting a line of any
/// length.
fn bounded_notes(mut notes: Vec<String>) -> Vec<String> {
    let more = notes.len().saturating_sub(MAX_WARNINGS);
    notes.truncate(MAX_WARNINGS);
    for note in &mut notes {
        if let Some((at, _)) = note.char_indices().nth(MAX_WARNING_CHARS) {
            note.truncate(at);
            note.push('…');
        }
    }
    if more > 0 {
        notes.push(format!("{more} more warnings are not shown"));
    }
    notes
}

/// The version of `language` pinned by asdf's `.tool-versions` or mise's `mise.toml`, in the app
/// dir or at the root, with the file it came from.
fn tool_versions_pin(
    checkout: &Checkout,
    app_dir: &str,
    language: Language,
) -> Option<(String, String)> {
    let names: &[&str] = match language {
        Language::Node => &["nodejs", "node"],
        Language::Python => &["python"],
        Language::Go => &["golang", "go"],
        Language::Php => &["php"],
        Language::Rust => &["rust"],
    };
    let dirs = if app_dir == "." {
        vec!["."]
    } else {
        vec![app_dir, "."]
    };
    for dir in dirs {
        for file in [".tool-versions", "mise.toml", ".mise.toml"] {
            let path = join_str(dir, file);
            let Some(text) = checkout.peek_text(Path::new(&path), CONFIG_LIMIT) else {
                continue;
            };
            let found = if file == ".tool-versions" {
                detect::tool_versions_entry(&text, names)
            } else {
                detect::mise_tools_entry(&text, names)
            };
            if let Some(version) = found {
                return Some((version, path));
            }
        }
    }
    None
}

type Found = (String, bool, Option<Detection>);

/// Picks the app directory: `app_path` when set, else a root manifest, else the single
/// deployable app of a workspace or conventional layout.
fn select_app(
    checkout: &Checkout,
    config: &PreviewConfig,
    forced_language: Option<Language>,
    forced_framework: Option<crate::model::Framework>,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Found> {
    if let Some(p) = &config.app_path {
        if !checkout.is_dir(&p.value) {
            return Err(config.error(
                "app_path",
                p.line,
                format!("{} is not a directory in the repository (symlinks leading outside are not followed)", p.value),
            ));
        }
        reasons.push(format!(
            "app_dir={} because {} sets app_path",
            p.value, config.file
        ));
        let found =
            detect::detect_all(checkout, &p.value, true, forced_language, forced_framework)?;
        let best = pick(found, &p.value, reasons, warnings);
        return Ok((p.value.clone(), true, best));
    }

    let root = detect::detect_all(checkout, ".", false, forced_language, forced_framework)?;
    if root.first().is_some_and(|d| d.strength >= Strength::Plain) {
        reasons.push(format!(
            "app_dir=. because the root has {}",
            root[0].evidence
        ));
        return Ok((".".to_owned(), false, pick(root, ".", reasons, warnings)));
    }
    // A root Dockerfile or compose file makes the root the app even without a manifest we know.
    let root_image = checkout.is_file("Dockerfile")
        || sanitize::FILE_NAMES.iter().any(|f| checkout.is_file(f))
        || sanitize::PROJECT_FILE_NAMES.iter().any(|f| {
            checkout
                .peek_text(Path::new(f), CONFIG_LIMIT)
                .is_some_and(|text| builds_from_repo(&text))
        });

    let (candidates, source) = workspace_candidates(checkout);
    let mut deployable: Vec<(String, Detection)> = Vec::new();
    for dir in candidates.iter().take(MAX_CANDIDATES) {
        let found = detect::detect_all(checkout, dir, false, forced_language, forced_framework)
            .unwrap_or_default();
        if let Some(best) = found
            .into_iter()
            .next()
            .filter(|d| d.strength >= Strength::Plain)
        {
            deployable.push((dir.clone(), best));
        }
    }
    match deployable.len() {
        0 => {
            if root_image {
                reasons.push(
                    "app_dir=. because the root has the repo's own Dockerfile or compose file"
                        .to_owned(),
                );
            }
            let best = root.into_iter().next();
            Ok((".".to_owned(), false, best))
        }
        1 if !root_image => {
            let (dir, detection) = deployable.remove(0);
            reasons.push(format!(
                "app_dir={dir} because it is the only deployable app of the {source} ({})",
                detection.evidence
            ));
            Ok((dir, false, Some(detection)))
        }
        _ if root_image => {
            reasons.push(
                "app_dir=. because the root has the repo's own Dockerfile or compose file"
                    .to_owned(),
            );
            Ok((".".to_owned(), false, root.into_iter().next()))
        }
        _ => {
            let list: Vec<String> = deployable
                .iter()
                .map(|(dir, d)| {
                    format!(
                        "{dir} ({})",
                        d.framework
                            .map(|f| f.as_str())
                            .unwrap_or(d.language.as_str())
                    )
                })
                .collect();
            Err(Error::NoApp(format!(
                "several deployable apps in the {source}: {}; set app_path in preview-config.yml, e.g. app_path: {}",
                list.join(", "),
                deployable[0].0
            )))
        }
    }
}

/// The best detection, with a note about the others found in the same directory.
fn pick(
    found: Vec<Detection>,
    dir: &str,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Detection> {
    let mut iter = found.into_iter();
    let best = iter.next()?;
    let others: Vec<Detection> = iter.collect();
    if !others.is_empty() {
        let list: Vec<String> = others
            .iter()
            .map(|o| {
                let what = match o.strength {
                    Strength::Tooling => ", which has nothing to start",
                    _ => "",
                };
                format!("{} via {}{what}", o.language, o.evidence)
            })
            .collect();
        reasons.push(format!(
            "language={} because {} is the strongest candidate in {dir} (also found: {})",
            best.language,
            best.evidence,
            list.join(", ")
        ));
        if others
            .iter()
            .any(|o| o.strength == best.strength && o.strength >= Strength::Plain)
        {
            warnings.push(format!(
                "{dir} holds more than one app ({} and {}); picked {} — set framework in preview-config.yml to choose",
                best.language,
                others[0].language,
                best.language
            ));
        }
    }
    Some(best)
}

/// Directories that may hold an app: workspace globs of package.json, pnpm-workspace.yaml and
/// go.work, then conventional ones. Returns them sorted, with a name for the layout.
fn workspace_candidates(checkout: &Checkout) -> (Vec<String>, &'static str) {
    let mut patterns: Vec<String> = Vec::new();
    let mut source = "repository";
    if let Some(text) = checkout.peek_text(Path::new("package.json"), MANIFEST_LIMIT)
        && let Ok(pkg) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let list = pkg
            .get("workspaces")
            .and_then(|w| w.as_array().or_else(|| w.get("packages")?.as_array()));
        for p in list.into_iter().flatten().filter_map(|p| p.as_str()) {
            patterns.push(p.to_owned());
            source = "workspace";
        }
    }
    if let Some(text) = checkout.peek_text(Path::new("pnpm-workspace.yaml"), CONFIG_LIMIT)
        && let Ok(value) = serde_saphyr::from_str_with_options::<serde_json::Value>(
            &text,
            config::parser_options(),
        )
    {
        for p in value
            .get("packages")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
        {
            patterns.push(p.to_owned());
            source = "workspace";
        }
    }
    if let Some(text) = checkout.peek_text(Path::new("go.work"), MANIFEST_LIMIT) {
        let mut in_use = false;
        for line in text
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default().trim())
        {
            if in_use {
                if line == ")" {
                    in_use = false;
                } else if !line.is_empty() {
                    patterns.push(line.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("use") {
                let rest = rest.trim();
                if rest == "(" {
                    in_use = true;
                } else if !rest.is_empty() {
                    patterns.push(rest.to_owned());
                }
            }
            source = "workspace";
        }
    }
    if patterns.is_empty() {
        source = "repository";
    }
    patterns.extend(CONVENTIONAL_PARENTS.iter().map(|p| format!("{p}/*")));
    patterns.extend(CONVENTIONAL_DIRS.iter().map(|d| (*d).to_owned()));

    let mut dirs = Vec::new();
    for pattern in patterns {
        if pattern.starts_with('!') {
            continue;
        }
        let pattern = pattern.trim_end_matches("/**").trim_end_matches('/');
        let Ok(pattern) = crate::checkout::normalize_relative(pattern.trim_start_matches("./"))
        else {
            continue;
        };
        if pattern == "." {
            continue;
        }
        if let Some(parent) = pattern.strip_suffix("/*") {
            if parent.contains('*') {
                continue;
            }
            for entry in checkout.list_dir(&join(parent, ".")).unwrap_or_default() {
                if entry.kind == crate::checkout::EntryKind::Dir && !entry.name.starts_with('.') {
                    dirs.push(join_str(parent, &entry.name));
                }
            }
        } else if !pattern.contains('*') && checkout.is_dir(&pattern) {
            dirs.push(pattern);
        }
    }
    dirs.sort();
    dirs.dedup();
    (dirs, source)
}

/// Finds and sanitises the repo's compose file: the `compose` key's file; else
/// `docker-compose.preview.yml` in the app dir, then at the root; else the project's own
/// `compose.yaml` (or `compose.yml`, `docker-compose.yml`, `docker-compose.yaml`) in the app dir,
/// when one of its services is built from the repo or is named the web service.
/// Applies preview-config.yml's `hostname_service` key to the compose file, if it has one.
fn name_hostname_service(
    config: &PreviewConfig,
    compose: Option<&mut SanitizedCompose>,
) -> Result<()> {
    let Some(key) = &config.hostname_service else {
        return Ok(());
    };
    let Some(compose) = compose else {
        return Err(config.error(
            "hostname_service",
            key.line,
            "names a compose service, but no compose file is used",
        ));
    };
    sanitize::name_hostname_service(
        compose,
        WebOverride {
            service: &key.value,
            config_file: &config.file,
            key: "hostname_service",
            line: key.line,
        },
    )
}

/// Finds and sanitises the compose file the preview runs. A project file that builds nothing
/// from the repo is not used; its name is put in `images_only_file`, for an error to mention.
fn find_compose(
    checkout: &Checkout,
    config: &PreviewConfig,
    app_dir: &str,
    app_without_compose: bool,
    images_only_file: &mut Option<String>,
    reasons: &mut Vec<String>,
) -> Result<Option<SanitizedCompose>> {
    let web = config.web_service.as_ref().map(|w| WebOverride {
        service: &w.value,
        config_file: &config.file,
        key: "web_service",
        line: w.line,
    });
    match config.compose.as_ref().map(|c| (&c.value, c.line)) {
        Some((ComposeChoice::Off, _)) => {
            reasons.push(format!(
                "compose=none because {} sets compose: none",
                config.file
            ));
            return Ok(None);
        }
        Some((ComposeChoice::File(file), line)) => {
            let text = match checkout.read_text(Path::new(file), CONFIG_LIMIT) {
                Ok(Some(text)) => text,
                Ok(None) => {
                    return Err(config.error(
                        "compose",
                        line,
                        format!("{file} is not a file in the repository"),
                    ));
                }
                Err(Error::UnsafePath { reason, .. }) => {
                    return Err(config.error(
                        "compose",
                        line,
                        format!("{file} is refused: {reason}"),
                    ));
                }
                Err(Error::TooLarge { limit, .. }) => {
                    return Err(config.error(
                        "compose",
                        line,
                        format!("{file} is larger than the {limit}-byte limit"),
                    ));
                }
                Err(e) => return Err(config.error("compose", line, e.to_string())),
            };
            reasons.push(format!(
                "compose={file} because {} sets compose",
                config.file
            ));
            let ctx = SanitizeContext {
                checkout,
                file: file.clone(),
            };
            return sanitize::sanitize_choosing(&text, &ctx, web)
                .map(Some)
                .map_err(|e| with_compose_none_hint(e, app_without_compose));
        }
        None => {}
    }
    let mut dirs = vec![app_dir.to_owned()];
    if app_dir != "." {
        dirs.push(".".to_owned());
    }
    let preview_files = dirs
        .iter()
        .flat_map(|dir| sanitize::FILE_NAMES.iter().map(move |n| join_str(dir, n)));
    let project_files = sanitize::PROJECT_FILE_NAMES
        .iter()
        .map(|n| join_str(app_dir, n));
    for file in preview_files.chain(project_files) {
        let text = match checkout.read_text(Path::new(&file), CONFIG_LIMIT) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(Error::TooLarge { limit, .. }) => {
                return Err(Error::Config {
                    file,
                    line: None,
                    key: None,
                    message: format!("the file is larger than the {limit}-byte limit"),
                });
            }
            Err(e) => return Err(e),
        };
        let ctx = SanitizeContext {
            checkout,
            file: file.clone(),
        };
        if sanitize::is_preview_file(&file) {
            reasons.push(format!(
                "compose={file} because the repo writes it for previews"
            ));
            return sanitize::sanitize_choosing(&text, &ctx, web).map(Some);
        }
        if web.is_none() && !builds_from_repo(&text) {
            reasons.push(format!(
                "{file} is not used: none of its services is built from the repo (set web_service in {} to use it)",
                if config.file.is_empty() { config::FILE_NAMES[0] } else { &config.file }
            ));
            *images_only_file = Some(file);
            return Ok(None);
        }
        reasons.push(format!(
            "compose={file} because it is the project's compose file in {}",
            if app_dir == "." {
                "the repository root"
            } else {
                app_dir
            }
        ));
        if let Some(over) = sanitize::OVERRIDE_FILE_NAMES
            .iter()
            .map(|n| join_str(app_dir, n))
            .find(|f| checkout.is_file(f))
        {
            reasons.push(format!(
                "{over} is not read: Compose adds it for local development, and a preview runs {file} alone (put what previews need in docker-compose.preview.yml)"
            ));
        }
        return sanitize::sanitize_choosing(&text, &ctx, web)
            .map(Some)
            .map_err(|e| with_compose_none_hint(e, app_without_compose));
    }
    Ok(None)
}

/// The development server an image runs, found in `command` (a compose `command:`), else in
/// the `target` stage of its Dockerfile, with the package.json of its build `context` for the
/// scripts a package manager runs.
fn image_dev_server(
    checkout: &Checkout,
    command: Option<String>,
    dockerfile: Option<&str>,
    target: Option<&str>,
    context: &str,
) -> Option<DevServer> {
    let command = command.or_else(|| images::run_command(dockerfile?, target))?;
    let package_json: Option<serde_json::Value> = checkout
        .peek_text(
            Path::new(&join_str(context, "package.json")),
            MANIFEST_LIMIT,
        )
        .and_then(|text| serde_json::from_str(&text).ok());
    dev_server::find(&command, package_json.as_ref())
}

/// A compose `command:` as one line: the string, or the list's words joined by spaces.
fn compose_command(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(words) => Some(
            words
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// What to say of a project compose file that runs only images when nothing else in the checkout
/// is an app: the service `web_service` would route, else why the file could not be used as it is.
fn images_only_hint(checkout: &Checkout, config: &PreviewConfig, file: &str) -> String {
    let config_file = if config.file.is_empty() {
        config::FILE_NAMES[0]
    } else {
        &config.file
    };
    let Ok(Some(text)) = checkout.read_text(Path::new(file), CONFIG_LIMIT) else {
        return String::new();
    };
    let ctx = SanitizeContext {
        checkout,
        file: file.to_owned(),
    };
    match sanitize::sanitize_choosing(&text, &ctx, None) {
        Ok(c) => format!(
            "; {file} is not used, as none of its services is built from the repo: to preview it as it is, set `web_service: {}` in {config_file} ({} because {})",
            c.app_service, c.app_service, c.app_service_reason
        ),
        Err(e) => format!(
            "; {file} is not used, as none of its services is built from the repo, and as it is it would be refused: {e}"
        ),
    }
}

/// The directory of the web service's Dockerfile (relative to the checkout root), else its
/// build context; `None` when it is not built from the repo.
fn web_service_dir(compose: &SanitizedCompose) -> Option<String> {
    let build = compose
        .services
        .iter()
        .find(|s| s.name == compose.app_service)?
        .build
        .as_ref()?;
    Some(
        match build.dockerfile.as_deref().and_then(|d| d.rsplit_once('/')) {
            Some((dir, _)) => dir.to_owned(),
            None => build.context.clone(),
        },
    )
}

/// The port a service tells a development proxy to route to: Traefik's
/// `traefik.http.services.NAME.loadbalancer.server.port` label or nginx-proxy's `VIRTUAL_PORT`.
fn proxy_port(service: &sanitize::RepoService) -> Option<(String, u16)> {
    let label = service.labels.iter().find(|(k, _)| {
        k.starts_with("traefik.http.services.") && k.ends_with(".loadbalancer.server.port")
    });
    let env = service
        .environment
        .get_key_value("VIRTUAL_PORT")
        .and_then(|(k, v)| Some((k, v.as_ref()?)));
    let (key, value) = label.or(env)?;
    Some((key.clone(), value.trim().parse().ok()?))
}

/// Reads the `.env` beside the compose file, as Compose does, for the file's variables.
fn read_dotenv(
    checkout: &Checkout,
    compose: &mut SanitizedCompose,
    reasons: &mut Vec<String>,
) -> Result<()> {
    let file = match compose.file.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/.env"),
        None => ".env".to_owned(),
    };
    let text = match checkout.read_text(Path::new(&file), CONFIG_LIMIT) {
        Ok(Some(text)) => text,
        Ok(None) | Err(Error::UnsafePath { .. }) => return Ok(()),
        Err(Error::TooLarge { limit, .. }) => {
            return Err(Error::Config {
                file,
                line: None,
                key: None,
                message: format!("the file is larger than the {limit}-byte limit"),
            });
        }
        Err(e) => return Err(e),
    };
    let env = dotenv::parse(&file, &text)?;
    reasons.push(format!(
        "variables of {}: {} from {file}, which Compose reads beside it",
        compose.file,
        env.values.len()
    ));
    compose.warnings.extend(env.warnings);
    compose.dotenv = env.values;
    Ok(())
}

/// Activates the profiles Compose would (`COMPOSE_PROFILES` of the `.env`) and those the web
/// service needs; services of other profiles are not started.
fn activate_profiles(compose: &mut SanitizedCompose, reasons: &mut Vec<String>) {
    let active: BTreeSet<String> = compose
        .dotenv
        .get("COMPOSE_PROFILES")
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if !active.is_empty() {
        reasons.push(format!(
            "profiles {} are active because COMPOSE_PROFILES in the .env says so",
            active.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let activated = compose.activate_profiles(&active);
    if !activated.is_empty() {
        reasons.push(format!(
            "profiles {} are active because the web service `{}` or a service it depends on is in them",
            activated.join(", "),
            compose.app_service
        ));
    }
}

/// The plan's account of a sanitised compose file.
fn compose_summary(compose: &SanitizedCompose) -> ComposeSummary {
    let services = compose
        .services
        .iter()
        .map(|service| ComposeServiceSummary {
            name: service.name.clone(),
            source: match (&service.build, &service.image) {
                (Some(b), _) => match &b.dockerfile {
                    Some(d) => format!("built from {} ({d})", b.context),
                    None => format!("built from {}", b.context),
                },
                (None, Some(image)) => format!("image {image}"),
                (None, None) => "no image".to_owned(),
            },
            routed: service.name == compose.app_service,
            hostname_label: compose
                .hostname_service
                .as_ref()
                .filter(|h| h.service == service.name)
                .map(|h| h.label.clone()),
            routed_at: None,
            restart: (service.may_end() && service.name != compose.app_service)
                .then(|| service.restart.clone()),
            runs_to_completion: service.awaited,
            profiles: service.profiles(),
        })
        .collect();
    ComposeSummary {
        web_service: compose.app_service.clone(),
        web_service_reason: compose.app_service_reason.clone(),
        services,
        changed: bounded_notes(compose.warnings.clone()),
    }
}

/// A refusal of the project's own compose file, with the way to preview the app without it when
/// there is one (an app detected, or a Dockerfile): otherwise `compose: none` would only trade
/// this refusal for "no app found".
fn with_compose_none_hint(mut e: Error, app_without_compose: bool) -> Error {
    // With several refusals, the hint goes with the first, which is always listed.
    if let Error::ComposeRefused { reason, .. } = &mut e
        && app_without_compose
    {
        reason.push_str(
            " (or set `compose: none` in preview-config.yml to preview the app without this file)",
        );
    }
    e
}

/// Whether a compose file's text has a service with `build`, read leniently: the sanitiser
/// judges the file once it is chosen.
fn builds_from_repo(text: &str) -> bool {
    serde_saphyr::from_str_with_options::<serde_json::Value>(text, config::parser_options())
        .ok()
        .and_then(|v| {
            v.get("services")?
                .as_object()
                .map(|s| s.values().any(|svc| svc.get("build").is_some()))
        })
        .unwrap_or(false)
}

/// The first port of the first `EXPOSE` in a Dockerfile.
fn exposed_port(dockerfile: &str) -> Option<u16> {
    dockerfile.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.next().filter(|w| w.eq_ignore_ascii_case("EXPOSE"))?;
        words.next()?.split('/').next()?.parse().ok()
    })
}

/// The error as the single-line JSON object `{"error": "..."}`, for `--json` output.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

impl Plan {
    /// The plan as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports() {
        assert_eq!(
            exposed_port("FROM x\nexpose 8081/tcp\nEXPOSE 9\n"),
            Some(8081)
        );
        assert_eq!(exposed_port("FROM x\n"), None);
    }

    /// A plain Python app with `config` as its preview-config.yml and `files` beside it.
    fn plan_app(config: &str, files: &[(&str, &str)]) -> Result<Planned> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "print('hi')\n").unwrap();
        std::fs::write(dir.path().join("preview-config.yml"), config).unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        plan(dir.path())
    }

    #[test]
    fn a_seed_is_planned_when_it_is_a_file_of_a_seeded_database() {
        let planned = plan_app(
            "database: {engine: postgres, seed: db/seed.sql}\n",
            &[("db/seed.sql", "CREATE TABLE t (x int);\n")],
        )
        .unwrap();
        assert_eq!(planned.plan.database_seed.as_deref(), Some("db/seed.sql"));
        assert!(
            planned
                .plan
                .to_json()
                .contains("\"database_seed\": \"db/seed.sql\"")
        );
        let error = |config: &str| plan_app(config, &[]).unwrap_err().to_string();
        assert_eq!(
            error("database: {engine: mysql, seed: db/missing.sql}\n"),
            "preview-config.yml:1: key `database`: seed: invalid database seed db/missing.sql: not a file in the repository"
        );
        assert_eq!(
            error("database: {seed: db/seed.sql}\n"),
            "preview-config.yml:1: key `database`: seed: db/seed.sql seeds a postgres or mysql database, but the app gets none; set database.engine"
        );
    }

    /// Plans a checkout made of `files` only.
    fn plan_files(files: &[(&str, &str)]) -> Result<Planned> {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        plan(dir.path())
    }

    const BUILT_WEB: &str = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n";

    /// Found while writing the hostile-input tests: a `.env` of 32,000 lines without `=` gave
    /// the plan 32,000 warnings (4 MB for the PR comment, which GitHub caps at 65,536
    /// characters), and a warning quotes its line, however long.
    #[test]
    fn warnings_are_bounded_in_number_and_length() {
        let plan_with = |dotenv: &str| {
            plan_files(&[
                ("compose.yaml", "services:\n  web:\n    build: .\n"),
                ("Dockerfile", "FROM python:3.12-slim-bookworm\n"),
                (".env", dotenv),
            ])
            .unwrap()
        };
        let planned = plan_with(&"x\n".repeat(32_000));
        let warnings = &planned.plan.warnings;
        assert_eq!(warnings.len(), MAX_WARNINGS + 1, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(".env:1: \"x\" has no `=`")),
            "{warnings:?}"
        );
        assert!(
            warnings[MAX_WARNINGS].ends_with(" more warnings are not shown"),
            "{}",
            warnings[MAX_WARNINGS]
        );
        let changed = &planned.plan.compose.as_ref().unwrap().changed;
        assert_eq!(changed.len(), MAX_WARNINGS + 1);
        let long_line = plan_with(&"y".repeat(60_000));
        let warning = long_line
            .plan
            .warnings
            .iter()
            .find(|w| w.starts_with(".env:1:"))
            .unwrap();
        assert_eq!(warning.chars().count(), MAX_WARNING_CHARS + 1);
        let long = bounded_notes(vec![format!("a{}", "é".repeat(5_000))]);
        assert_eq!(long[0].chars().count(), MAX_WARNING_CHARS + 1);
        assert!(long[0].ends_with("é…"));
        assert_eq!(bounded_notes(vec!["short".to_owned()]), ["short"]);
    }

    #[test]
    fn the_compose_file_is_looked_for_in_order() {
        let file_of = |files: &[(&str, &str)]| {
            let planned = plan_files(files).unwrap();
            assert_eq!(
                planned.plan.compose_file,
                planned.repo_compose.as_ref().map(|c| c.file.clone())
            );
            planned.plan.compose_file
        };
        let app = ("app.py", "print('hi')\n");
        let preview = (
            "docker-compose.preview.yml",
            "services:\n  app:\n    build: .\n",
        );
        // The preview file first, then Compose's own names in Compose's order.
        assert_eq!(
            file_of(&[app, preview, ("compose.yaml", BUILT_WEB)]).as_deref(),
            Some("docker-compose.preview.yml")
        );
        assert_eq!(
            file_of(&[
                app,
                ("docker-compose.yml", BUILT_WEB),
                ("compose.yml", BUILT_WEB)
            ])
            .as_deref(),
            Some("compose.yml")
        );
        assert_eq!(
            file_of(&[app, ("docker-compose.yaml", BUILT_WEB)]).as_deref(),
            Some("docker-compose.yaml")
        );
        // compose: none turns every file off, the preview file too.
        assert_eq!(
            file_of(&[app, preview, ("preview-config.yml", "compose: none\n")]),
            None
        );
        // A project file at the root is not used for an app in a subdirectory.
        let planned = plan_files(&[
            ("preview-config.yml", "app_path: api\n"),
            ("api/app.py", "print('hi')\n"),
            ("compose.yaml", BUILT_WEB),
        ])
        .unwrap();
        assert_eq!(planned.plan.compose_file, None);
        // A missing file named by the key is an error naming the key.
        assert_eq!(
            plan_files(&[app, ("preview-config.yml", "\ncompose: ops/compose.yml\n")])
                .unwrap_err()
                .to_string(),
            "preview-config.yml:2: key `compose`: ops/compose.yml is not a file in the repository"
        );
    }

    #[test]
    fn a_root_compose_file_that_builds_makes_the_root_the_app() {
        // One deployable app in a conventional directory, and a root compose file building it:
        // the stack is the compose file, not the directory alone.
        let backend = ("backend/main.py", "print('hi')\n");
        let built = "services:\n  backend:\n    build: ./backend\n    ports: [\"8000:8000\"]\n  db:\n    image: postgres:16\n";
        let planned = plan_files(&[
            backend,
            ("backend/Dockerfile", "FROM x\n"),
            ("compose.yaml", built),
        ])
        .unwrap();
        assert_eq!(planned.plan.app_dir, ".");
        assert_eq!(planned.plan.compose_file.as_deref(), Some("compose.yaml"));
        assert!(
            planned.plan.reasons.iter().any(|r| r.starts_with(
                "web_service=backend because it is the only service of compose.yaml that publishes port 8000"
            )),
            "{:?}",
            planned.plan.reasons
        );
        // A root compose file of images only leaves the app where detection found it.
        let images = "services:\n  db:\n    image: postgres:16\n    ports: [\"5432:5432\"]\n";
        let planned = plan_files(&[backend, ("docker-compose.yml", images)]).unwrap();
        assert_eq!(planned.plan.app_dir, "backend");
        assert_eq!(planned.plan.compose_file, None);
    }

    #[test]
    fn the_web_services_manifest_names_its_language_unless_the_dir_is_another_language() {
        let compose = (
            "compose.yaml",
            "services:\n  web:\n    build: ui\n    ports: [\"8080:8080\"]\n",
        );
        let vue = [
            compose,
            (
                "ui/Dockerfile",
                "FROM node:22-bookworm-slim\nCMD [\"yarn\", \"serve\"]\n",
            ),
            (
                "ui/package.json",
                r#"{"scripts": {"serve": "vue-cli-service serve"}, "dependencies": {"vue": "^3.4.0"}}"#,
            ),
        ];
        let planned = plan_files(&vue).unwrap();
        assert_eq!(planned.plan.language, Some(Language::Node));
        // A package.json for a Java app's assets does not make it a Node app.
        let mut java = vue.to_vec();
        java.push(("ui/pom.xml", "<project/>\n"));
        let planned = plan_files(&java).unwrap();
        assert_eq!(planned.plan.language, None, "{:?}", planned.plan.reasons);
    }

    #[test]
    fn a_language_we_do_not_build_is_named_when_the_repos_image_runs_it() {
        let planned = plan_files(&[
            (
                "compose.yaml",
                "services:\n  api:\n    build: api\n    ports: [\"8080:8080\"]\n",
            ),
            (
                "api/Dockerfile",
                "FROM eclipse-temurin:21\nCMD [\"java\", \"-jar\", \"app.jar\"]\n",
            ),
            ("api/pom.xml", "<project/>\n"),
        ])
        .unwrap();
        assert!(
            planned.plan.warnings.contains(
                &"java (found api/pom.xml) is not a language previews detect: the repo's own image is used as is"
                    .to_owned()
            ),
            "{:?}",
            planned.plan.warnings
        );
        // A proxy run from its image is named with the image instead.
        let planned = plan_files(&[
            (
                "compose.yaml",
                "services:\n  proxy:\n    image: nginx:1.27\n    ports: [\"80:80\"]\n    depends_on: [api]\n  api:\n    build: api\n",
            ),
            ("api/Dockerfile", "FROM eclipse-temurin:21\n"),
        ])
        .unwrap();
        assert!(
            !planned
                .plan
                .warnings
                .iter()
                .any(|w| w.contains("the repo's own image is used as is")),
            "{:?}",
            planned.plan.warnings
        );
    }

    #[test]
    fn no_app_beside_a_compose_file_of_images_says_how_to_use_it_or_why_not() {
        let err = plan_files(&[(
            "compose.yaml",
            "services:\n  site:\n    image: nginx:1.27\n    ports: [\"80:80\"]\n  cache:\n    image: redis:7-bookworm\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("; compose.yaml is not used, as none of its services is built from the repo: to preview it as it is, set `web_service: site` in preview-config.yml (site because it is the only service of compose.yaml that publishes port 80)"),
            "{err}"
        );
        // The advice works.
        let planned = plan_files(&[
            (
                "compose.yaml",
                "services:\n  site:\n    image: nginx:1.27\n    ports: [\"80:80\"]\n  cache:\n    image: redis:7-bookworm\n",
            ),
            ("preview-config.yml", "web_service: site\n"),
        ])
        .unwrap();
        assert_eq!(planned.plan.port, 80);
        let err = plan_files(&[(
            "compose.yaml",
            "services:\n  ui:\n    image: portainer/portainer-ce\n    ports: [\"9000:9000\"]\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("; compose.yaml is not used, as none of its services is built from the repo, and as it is it would be refused: compose.yaml:5: service `ui`: key `volumes`: the Docker socket would give the preview control of the host"),
            "{err}"
        );
    }

    #[test]
    fn a_refusal_suggests_compose_none_only_when_the_app_plans_without_the_file() {
        let compose = (
            "compose.yaml",
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    runtime: runsc\n",
        );
        let hint =
            "(or set `compose: none` in preview-config.yml to preview the app without this file)";
        let err = plan_files(&[compose]).unwrap_err().to_string();
        assert_eq!(
            err,
            "compose.yaml:5: service `web`: key `runtime`: previews use the default runtime"
        );
        let err = plan_files(&[compose, ("Dockerfile", "FROM python:3.12-slim-bookworm\n")])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(hint), "{err}");
        let err = plan_files(&[compose, ("main.go", "package main\n\nfunc main() {}\n")])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(hint), "{err}");
        // With several refusals, the hint goes once, with the first: always listed.
        let twice = (
            "compose.yaml",
            "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n    runtime: runsc\n    privileged: true\n",
        );
        let err = plan_files(&[twice, ("Dockerfile", "FROM python:3.12-slim-bookworm\n")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "compose.yaml: 2 refusals:\n- compose.yaml:5: service `web`: key `runtime`: previews use the default runtime {hint}\n- compose.yaml:6: service `web`: key `privileged`: privileged containers control the host"
            )
        );
    }

    #[test]
    fn a_dev_server_in_the_repos_image_is_warned_about() {
        let vite = |planned: &Planned| {
            planned
                .plan
                .warnings
                .iter()
                .find(|w| w.contains("runs Vite's dev server"))
                .cloned()
        };
        let package = (
            "package.json",
            r#"{"scripts": {"dev": "vite --host 0.0.0.0", "build": "vite build"}, "devDependencies": {"vite": "^6.3.0"}}"#,
        );
        let dev = [
            package,
            (
                "Dockerfile",
                "FROM node:22-bookworm-slim\nCMD [\"npm\", \"run\", \"dev\"]\n",
            ),
        ];
        assert_eq!(
            vite(&plan_files(&dev).unwrap()).unwrap(),
            "the repo's image runs Vite's dev server (`npm run dev`, whose dev script runs `vite --host 0.0.0.0`): it answers \"Blocked request. This host is not allowed\" to hosts it does not know, such as the preview's, so visitors would see that instead of the app; let it answer any host (`server: { allowedHosts: true }` in vite.config) or serve a production build"
        );
        // A production image is not; a compose `command:` is what runs.
        let production = [
            package,
            (
                "Dockerfile",
                "FROM node:22-bookworm-slim AS build\nRUN npm run build\nFROM nginx:1.27\n",
            ),
        ];
        assert_eq!(vite(&plan_files(&production).unwrap()), None);
        let mut overridden = production.to_vec();
        overridden.push((
            "compose.yaml",
            "services:\n  web:\n    build: .\n    command: [\"npx\", \"vite\", \"--host\"]\n    ports: [\"5173:5173\"]\n",
        ));
        assert!(
            vite(&plan_files(&overridden).unwrap())
                .unwrap()
                .starts_with("the web service `web` runs Vite's dev server (`npx vite --host`)")
        );
    }

    #[test]
    fn warnings_about_the_generated_image_are_dropped_for_the_repos_own() {
        let flask = [
            ("requirements.txt", "flask\n"),
            ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
        ];
        let gunicorn = |planned: &Planned| {
            planned
                .plan
                .warnings
                .iter()
                .any(|w| w.starts_with("gunicorn is not a dependency"))
        };
        assert!(gunicorn(&plan_files(&flask).unwrap()));
        let mut own = flask.to_vec();
        own.push((
            "Dockerfile",
            "FROM python:3.12-slim-bookworm\nCMD [\"flask\", \"run\"]\n",
        ));
        let planned = plan_files(&own).unwrap();
        assert!(!gunicorn(&planned), "{:?}", planned.plan.warnings);
        assert!(planned.plan.build_commands.is_empty() && planned.plan.start_argv.is_empty());
    }

    #[test]
    fn inferred_startup_commands_are_left_to_the_repos_own_image() {
        // A Procfile's release command is inferred; the repo's Dockerfile starts the app its
        // own way.
        let django = [
            ("manage.py", "import django\n"),
            ("requirements.txt", "Django==5.1\ngunicorn\n"),
            (
                "Procfile",
                "release: python manage.py migrate\nweb: gunicorn hello.wsgi\n",
            ),
            (
                "Dockerfile",
                "FROM python:3.12-slim-bookworm\nCMD [\"gunicorn\", \"hello.wsgi\"]\n",
            ),
        ];
        let planned = plan_files(&django).unwrap();
        assert!(planned.plan.startup_commands.is_empty());
        assert!(
            planned
                .plan
                .reasons
                .iter()
                .any(|r| r.starts_with("startup_commands not run (")),
            "{:?}",
            planned.plan.reasons
        );
        // Configured ones still need app_entrypoint.
        let mut configured = django.to_vec();
        configured.push((
            "preview-config.yml",
            "startup_commands:\n  - python manage.py migrate\n",
        ));
        let err = plan_files(&configured).unwrap_err().to_string();
        assert!(
            err.contains("startup_commands need app_entrypoint"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod hostname_service_key_tests {
    use super::*;

    fn plan_files(files: &[(&str, &str)]) -> Result<Planned> {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        plan(dir.path())
    }

    const TWO: &str = "services:\n  web:\n    build: .\n    ports: [\"8000:8000\"]\n  frontend:\n    build: ./ui\n    expose: [\"3000\"]\n  db:\n    image: postgres:16-bookworm\n";

    fn with_key(compose: &str, key: &str) -> Result<Planned> {
        plan_files(&[
            ("Dockerfile", "FROM scratch\n"),
            ("ui/Dockerfile", "FROM scratch\n"),
            ("compose.yaml", compose),
            ("preview-config.yml", key),
        ])
    }

    /// A routed second web service starts beside the serving one on an update, so the plan's
    /// warning about services replaced in place leaves it out (and goes when it was the only
    /// one); a private one is still replaced in place.
    #[test]
    fn a_routed_second_web_service_is_not_warned_as_replaced_in_place() {
        let in_place = |planned: &Planned| -> Vec<String> {
            planned
                .plan
                .warnings
                .iter()
                .filter(|w| w.starts_with("on an update, "))
                .cloned()
                .collect()
        };
        let with_worker = format!("{TWO}  worker:\n    build: ./ui\n");
        let planned = with_key(&with_worker, "hostname_service: frontend\n").unwrap();
        assert_eq!(
            in_place(&planned),
            [
                "on an update, `frontend`, `worker` (built from the repo) are replaced in place when the new commit starts, before its web service is ready; only `web` starts beside the serving one"
            ]
        );
        let mut private = planned.clone();
        private.route_hostname_service(|_| None);
        assert_eq!(in_place(&private), in_place(&planned), "private: unchanged");
        let mut routed = planned;
        routed.route_hostname_service(|label| Some(format!("{label}.example.com")));
        assert_eq!(
            in_place(&routed),
            [
                "on an update, `worker` (built from the repo) is replaced in place when the new commit starts, before its web service is ready; only `web` and `frontend` (its own hostname) start beside the serving ones"
            ]
        );
        let mut alone = with_key(TWO, "hostname_service: frontend\n").unwrap();
        assert_eq!(in_place(&alone).len(), 1);
        alone.route_hostname_service(|label| Some(format!("{label}.example.com")));
        assert!(in_place(&alone).is_empty(), "{:?}", alone.plan.warnings);
    }

    /// preview-config.yml's `hostname_service` names the second web service; its label is its
    /// `preview.hostname`, else its name.
    #[test]
    fn the_key_names_the_second_web_service() {
        let planned = with_key(TWO, "hostname_service: frontend\n").unwrap();
        let second = planned.repo_compose.unwrap().hostname_service.unwrap();
        assert_eq!(
            (second.service.as_str(), second.label.as_str(), second.port),
            ("frontend", "frontend", 3000)
        );
        let labelled = TWO.replace(
            "    expose: [\"3000\"]\n",
            "    expose: [\"3000\"]\n    labels: {preview.hostname: ui}\n",
        );
        let planned = with_key(&labelled, "hostname_service: frontend\n").unwrap();
        assert_eq!(
            planned
                .repo_compose
                .unwrap()
                .hostname_service
                .unwrap()
                .label,
            "ui"
        );
    }

    #[test]
    fn a_bad_key_is_refused_with_the_config_line() {
        let error = |compose: &str, key: &str| with_key(compose, key).unwrap_err().to_string();
        assert_eq!(
            error(TWO, "framework: python\nhostname_service: admin\n"),
            "preview-config.yml:2: key `hostname_service`: compose.yaml has no service `admin` (its services: `db`, `frontend`, `web`)"
        );
        assert_eq!(
            error(TWO, "hostname_service: web\n"),
            "preview-config.yml:1: key `hostname_service`: `web` is the web service, served at the preview's own hostname; name a second service"
        );
        assert_eq!(
            error(TWO, "hostname_service: db\n"),
            "preview-config.yml:1: key `hostname_service`: `db` has no port to route to: list it in `ports` or `expose` in compose.yaml"
        );
        let renamed = TWO.replace("frontend:", "Front_End:");
        assert_eq!(
            error(&renamed, "hostname_service: Front_End\n"),
            "preview-config.yml:1: key `hostname_service`: `Front_End` is not a hostname label: 1-20 of [a-z0-9-] starting with a letter, in parts joined by single dashes, none of them `pr`; give `Front_End` the label `preview.hostname: LABEL` in compose.yaml"
        );
        assert_eq!(
            error(TWO, "compose: none\nhostname_service: frontend\n"),
            "preview-config.yml:2: key `hostname_service`: names a compose service, but compose is none"
        );
        assert_eq!(
            plan_files(&[
                ("main.py", "print('hi')\n"),
                ("preview-config.yml", "hostname_service: frontend\n")
            ])
            .unwrap_err()
            .to_string(),
            "preview-config.yml:1: key `hostname_service`: names a compose service, but no compose file is used"
        );
    }
}
