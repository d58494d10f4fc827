//! Node: NestJS, Next.js, Nuxt, SvelteKit, Astro, Remix, React Router, Fastify, Express, static
//! front ends (Vite, Create React App, Angular) or plain, from package.json and its lockfile;
//! Bun as the runtime when the app asks for it; and a plain `index.html` site.

use serde_json::Value;

use super::{Ctx, Detection, Detector, Strength, command_argv, hard_coded_port};
use crate::model::{
    Database, ExtraService, Framework, Language, NodeRecipe, PackageManager, Recipe,
};
use crate::{Error, Result};

/// Pinned versions of package managers installed with `npm install -g` (hadolint DL3016).
const PNPM_VERSION: &str = "9.15.9";
const YARN_VERSION: &str = "1.22.22";
const BUN_VERSION: &str = "1.1.45";

mod web;

/// Frameworks by the dependency that identifies them, strongest signal first: a full-stack
/// framework before the server or build tool it uses (Angular SSR uses Express; SvelteKit,
/// Remix and Astro build with Vite), and a server before a front end built beside it.
const FRAMEWORKS: [(&str, Framework); 15] = [
    ("@nestjs/core", Framework::Nestjs),
    ("next", Framework::Nextjs),
    ("nuxt", Framework::Nuxt),
    ("@sveltejs/kit", Framework::Sveltekit),
    ("astro", Framework::Astro),
    ("@remix-run/serve", Framework::Remix),
    ("@remix-run/node", Framework::Remix),
    ("@remix-run/dev", Framework::Remix),
    ("@react-router/dev", Framework::ReactRouter),
    ("@react-router/serve", Framework::ReactRouter),
    ("@angular/core", Framework::Angular),
    ("fastify", Framework::Fastify),
    ("express", Framework::Express),
    ("react-scripts", Framework::Cra),
    ("vite", Framework::Vite),
];

/// Entry files tried, in order, when package.json names none.
const ENTRY_FILES: [&str; 8] = [
    "server.js",
    "index.js",
    "app.js",
    "main.js",
    "src/server.js",
    "src/index.js",
    "src/app.js",
    "src/main.js",
];

/// Detects Node apps.
pub struct NodeDetector;

impl Detector for NodeDetector {
    fn language(&self) -> Language {
        Language::Node
    }

    fn markers(&self) -> &'static [&'static str] {
        &["package.json", "index.html"]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        let Some(text) = ctx.read_manifest("package.json")? else {
            return Ok(plain_static_site(ctx));
        };
        let pkg: Value =
            serde_json::from_str(&text).map_err(|e| Error::manifest(ctx.rel("package.json"), e))?;
        if !pkg.is_object() {
            return Err(Error::manifest(
                ctx.rel("package.json"),
                "expected a JSON object",
            ));
        }
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
        let mut build_warnings = Vec::new();

        let deps = dep_names(&pkg, "dependencies");
        let dev_deps = dep_names(&pkg, "devDependencies");
        let has = |name: &str| deps.iter().chain(&dev_deps).any(|d| d == name);
        let has_runtime = |name: &str| deps.iter().any(|d| d == name);

        let framework = match ctx.forced.filter(|f| f.language() == Language::Node) {
            Some(f) => {
                reasons.push(format!("framework={f} because preview-config.yml says so"));
                Some(f)
            }
            None => FRAMEWORKS.iter().find(|(dep, _)| has(dep)).map(|(dep, f)| {
                reasons.push(format!(
                    "framework={f} because {} depends on {dep}",
                    ctx.show("package.json")
                ));
                *f
            }),
        };

        // Package manager: the packageManager field, then the lockfile.
        let lockfiles = [
            ("pnpm-lock.yaml", PackageManager::Pnpm),
            ("yarn.lock", PackageManager::Yarn),
            ("bun.lock", PackageManager::Bun),
            ("bun.lockb", PackageManager::Bun),
            ("package-lock.json", PackageManager::Npm),
            ("npm-shrinkwrap.json", PackageManager::Npm),
        ];
        let lockfile = lockfiles.iter().find(|(f, _)| ctx.is_file(f));
        let declared = pkg
            .get("packageManager")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let scripts = pkg.get("scripts").and_then(Value::as_object);
        // Bun is the runtime when the lockfile or packageManager says so, or the start (else
        // dev) script runs it, or engines asks for it.
        let bun_script = ["start", "dev"]
            .into_iter()
            .find_map(|name| {
                let s = scripts?.get(name)?.as_str()?;
                Some((name, s))
            })
            .filter(|(_, s)| runs_bun(s));
        let (pm, pm_version) = match declared.as_deref().and_then(parse_package_manager) {
            Some((pm, version)) => {
                reasons.push(format!(
                    "package_manager={pm} because package.json has packageManager {:?}",
                    declared.as_deref().unwrap_or_default()
                ));
                (pm, Some(version))
            }
            None => match lockfile {
                Some((file, pm)) => {
                    reasons.push(format!(
                        "package_manager={pm} because of {}",
                        ctx.show(file)
                    ));
                    (*pm, None)
                }
                None if bun_script.is_some() => {
                    let (name, s) = bun_script.unwrap_or_default();
                    reasons.push(format!(
                        "package_manager=bun because the {name} script runs bun ({s}) and there is no lockfile"
                    ));
                    build_warnings.push(
                        "no lockfile: `bun install` resolves dependency versions afresh on every build; commit bun.lock"
                            .to_owned(),
                    );
                    (PackageManager::Bun, None)
                }
                None => {
                    reasons.push("package_manager=npm because there is no lockfile".to_owned());
                    build_warnings.push(
                        "no lockfile: `npm install` resolves dependency versions afresh on every build; commit package-lock.json"
                            .to_owned(),
                    );
                    (PackageManager::Npm, None)
                }
            },
        };
        let lock_name = lockfile
            .filter(|(_, l)| *l == pm)
            .map(|(f, _)| (*f).to_owned());
        let bun = if pm == PackageManager::Bun {
            Some("the package manager is bun".to_owned())
        } else if let Some((name, s)) = bun_script {
            Some(format!("the {name} script runs bun ({s})"))
        } else {
            pkg.pointer("/engines/bun")
                .map(|_| "package.json has engines.bun".to_owned())
        };
        if let Some(why) = &bun
            && pm != PackageManager::Bun
        {
            reasons.push(format!("runtime=bun because {why}"));
        }

        // Version.
        let mut language_version = None;
        for file in [".nvmrc", ".node-version"] {
            if let Some(v) = ctx.peek_source(file).map(|t| t.trim().to_owned())
                && !v.is_empty()
            {
                reasons.push(format!("language_version={v} from {}", ctx.show(file)));
                language_version = Some(v);
                break;
            }
        }
        if language_version.is_none()
            && let Some(v) = pkg.pointer("/engines/node").and_then(Value::as_str)
        {
            reasons.push(format!(
                "language_version={v} from package.json engines.node"
            ));
            language_version = Some(v.to_owned());
        }

        let m = Manifest {
            pkg: &pkg,
            deps: deps.clone(),
            dev_deps: dev_deps.clone(),
            pm,
        };

        let mut build_commands = Vec::new();
        if m.script("build").is_some() {
            build_commands.push(m.run("build"));
            reasons.push(format!(
                "build_command={} because package.json has a build script",
                m.run("build")
            ));
        } else if let Some(f) = framework
            && let Some((command, short)) = web::default_build(ctx, f)
        {
            build_commands.push(command);
            reasons.push(format!(
                "build_command={short} because {} apps must be built",
                web::label(f)
            ));
        }

        // Start command and the file whose source tells the port.
        let mut start = match framework
            .and_then(|f| web::start(ctx, &m, f, &mut reasons, &mut build_warnings))
        {
            Some(start) => start,
            None => generic_start(ctx, &m, bun.is_some(), &mut reasons, &mut build_warnings),
        };
        // Nothing else to start, nothing to build, and an index.html: a static site.
        if start.argv.is_empty() && build_commands.is_empty() && ctx.is_file("index.html") {
            start = web::static_site(
                ".".to_owned(),
                format!(
                    "{} has an index.html and nothing to start or build",
                    if ctx.dir == "." {
                        "the app dir"
                    } else {
                        &ctx.dir
                    }
                ),
                &mut reasons,
            );
            start.main_only = true;
        }
        build_commands.extend(start.build.iter().cloned());

        // A hard-coded port in the entry source wins over PORT.
        let mut port = start.port.unwrap_or(3000);
        let mut port_env = Some("PORT".to_owned());
        if let Some(file) = start.source_file.as_deref()
            && let Some(source) = ctx.peek_source(file)
        {
            if let Some(p) = hard_coded_port(
                &source,
                &["process.env.PORT", "process.env['PORT']", "env.PORT"],
            ) {
                reasons.push(format!("port={p} because {} listens on it", ctx.show(file)));
                port = p;
                port_env = None;
            } else if source.contains("PORT") {
                reasons.push(format!(
                    "port={port} via PORT, which {} reads",
                    ctx.show(file)
                ));
            }
            if framework == Some(Framework::Fastify)
                && !source.contains("0.0.0.0")
                && !source.contains("process.env.HOST")
                && !source.contains("::")
            {
                warnings.push(format!(
                    "Fastify listens on 127.0.0.1 unless told otherwise; {} should listen on host 0.0.0.0 (HOST is set to 0.0.0.0)",
                    ctx.show(file)
                ));
            }
        }
        if port_env.is_some() && !reasons.iter().any(|r| r.starts_with("port=")) {
            if start.static_root.is_some() {
                reasons.push(format!("port={port} via PORT, the static server's default"));
            } else {
                reasons.push(format!("port={port} via PORT, the Node convention"));
            }
        }

        // A workspace root's scripts usually drive its members; it is not the app itself.
        let strength = if start.argv.is_empty()
            || (start.main_only && framework.is_none())
            || (pkg.get("workspaces").is_some() && framework.is_none())
        {
            Strength::Tooling
        } else if framework.is_some() {
            Strength::Framework
        } else {
            Strength::Plain
        };

        match framework {
            Some(Framework::Nextjs) => warnings.push(
                "Next.js serves its assets from /_next/ at the site root; behind the preview's path prefix set basePath in next.config.js (the prefix is in PREVIEW_BASE_PATH at run time)"
                    .to_owned(),
            ),
            Some(f) if start.static_root.is_some() && f != Framework::Static => build_warnings.push(format!(
                "{} builds for the site root: the static server points the page's root links (src=\"/...\", href=\"/...\") under the preview's path prefix, but URLs inside scripts and styles, and client-side routes, still assume the root; build with the prefix as the base path (it is in PREVIEW_BASE_PATH at run time) if they break",
                web::label(f)
            )),
            _ => {}
        }

        // Services from dependencies.
        let mut database = None;
        let mut db_reason = String::new();
        let prisma_provider = ctx
            .peek_source("prisma/schema.prisma")
            .and_then(|s| prisma_provider(&s));
        for (dep, db) in [
            ("pg", Database::Postgres),
            ("postgres", Database::Postgres),
            (
                "@prisma/client",
                prisma_provider.unwrap_or(Database::Postgres),
            ),
            ("prisma", prisma_provider.unwrap_or(Database::Postgres)),
            ("mysql2", Database::Mysql),
            ("mysql", Database::Mysql),
            ("mongoose", Database::Mongodb),
            ("mongodb", Database::Mongodb),
            ("typeorm", Database::Postgres),
        ] {
            if has_runtime(dep) || (dep == "prisma" && has(dep)) {
                database = Some(db);
                db_reason = format!("database={db} because package.json depends on {dep}");
                break;
            }
        }
        if !db_reason.is_empty() {
            reasons.push(db_reason);
        }
        let mut extra_services = Vec::new();
        if let Some(dep) = ["redis", "ioredis", "bullmq", "bull"]
            .into_iter()
            .find(|d| has_runtime(d))
        {
            extra_services.push(ExtraService::Redis);
            reasons.push(format!(
                "extra_services=redis because package.json depends on {dep}"
            ));
        }

        let mut manifests = vec!["package.json".to_owned()];
        manifests.extend(lock_name.clone());
        if pm == PackageManager::Yarn && ctx.is_file(".yarnrc.yml") {
            manifests.push(".yarnrc.yml".to_owned());
        }
        if ctx.is_file(".npmrc") {
            manifests.push(".npmrc".to_owned());
        }
        let locked = lock_name.is_some();
        let mut recipe = node_recipe(pm, pm_version.as_deref(), locked, manifests);
        // The build stage's setup does not reach the final image; Bun must be there to start.
        if bun.is_some() && start.argv.first().is_some_and(|a| a == "bun") {
            recipe.runtime_setup = Some(bun_setup(
                pm_version.as_deref().filter(|_| pm == PackageManager::Bun),
            ));
        }
        recipe.keep_dev_dependencies = start.keep_dev;
        recipe.static_root = start.static_root.clone();

        Ok(Some(Detection {
            language: Language::Node,
            framework,
            strength,
            evidence: ctx.show("package.json"),
            language_version,
            package_manager: Some(pm),
            build_commands,
            start_argv: start.argv,
            startup_commands: Vec::new(),
            port,
            port_env,
            database,
            extra_services,
            context_dir: None,
            recipe: Recipe::Node(recipe),
            reasons,
            warnings,
            build_warnings,
        }))
    }
}

/// The warning for a front end of `framework` built for the site root when the repo's own image
/// serves it: nothing there points its root links under the preview's path prefix, as the
/// generated image's static server does.
pub fn site_root_warning_for_repo_image(framework: Framework) -> String {
    format!(
        "{} builds for the site root, and the repo's own image serves it as it is: behind the preview's path prefix its root links (src=\"/...\", href=\"/...\"), the URLs inside scripts and styles, and client-side routes point outside the preview; build or serve it with the prefix as the base path (it is in PREVIEW_BASE_PATH at run time)",
        web::label(framework)
    )
}

/// What the start decision reads from package.json.
struct Manifest<'a> {
    pkg: &'a Value,
    deps: Vec<String>,
    dev_deps: Vec<String>,
    pm: PackageManager,
}

impl Manifest<'_> {
    /// True if it depends on `name`, dev dependencies included.
    fn has(&self, name: &str) -> bool {
        self.deps.iter().chain(&self.dev_deps).any(|d| d == name)
    }

    /// True if it depends on `name` at run time.
    fn has_runtime(&self, name: &str) -> bool {
        self.deps.iter().any(|d| d == name)
    }

    /// The script `name`.
    fn script(&self, name: &str) -> Option<String> {
        self.pkg
            .get("scripts")
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The package manager's command that runs script `name`.
    fn run(&self, name: &str) -> String {
        match self.pm {
            PackageManager::Npm => format!("npm run {name}"),
            PackageManager::Pnpm => format!("pnpm run {name}"),
            PackageManager::Yarn => format!("yarn run {name}"),
            _ => format!("bun run {name}"),
        }
    }

    /// A string field, e.g. `main`.
    fn field(&self, name: &str) -> Option<&str> {
        self.pkg.get(name).and_then(Value::as_str)
    }
}

/// How the app starts.
#[derive(Debug, Default)]
struct Start {
    argv: Vec<String>,
    /// The port when it is not 3000, Node's convention.
    port: Option<u16>,
    /// The source whose text may tell the port.
    source_file: Option<String>,
    /// Build steps after the app's own build.
    build: Vec<String>,
    /// A static site: the directory the built-in server serves.
    static_root: Option<String>,
    /// The start command needs the dev dependencies.
    keep_dev: bool,
    /// Only `main` (or a bare index.html) says what to run: no stronger than tooling.
    main_only: bool,
}

impl Start {
    fn command(argv: &[&str]) -> Self {
        Self {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            ..Self::default()
        }
    }
}

/// The default port of the built-in static server.
const STATIC_PORT: u16 = 8080;

/// A directory with an index.html and no package.json: a static site, served as is. It is no
/// stronger than tooling, so an app of any language beside it wins.
fn plain_static_site(ctx: &Ctx) -> Option<Detection> {
    if !ctx.is_file("index.html") {
        return None;
    }
    let mut reasons = Vec::new();
    let start = web::static_site(
        ".".to_owned(),
        format!(
            "{} is a static site (no package.json)",
            ctx.show("index.html")
        ),
        &mut reasons,
    );
    reasons.push(format!(
        "port={STATIC_PORT} via PORT, the static server's default"
    ));
    let mut recipe = node_recipe(PackageManager::Npm, None, false, Vec::new());
    recipe.static_root = start.static_root;
    Some(Detection {
        language: Language::Node,
        framework: Some(Framework::Static),
        strength: Strength::Tooling,
        evidence: ctx.show("index.html"),
        language_version: None,
        package_manager: None,
        build_commands: Vec::new(),
        start_argv: start.argv,
        startup_commands: Vec::new(),
        port: STATIC_PORT,
        port_env: Some("PORT".to_owned()),
        database: None,
        extra_services: Vec::new(),
        context_dir: None,
        recipe: Recipe::Node(recipe),
        reasons,
        warnings: Vec::new(),
        build_warnings: Vec::new(),
    })
}

/// Entry files tried, in order, when package.json names none and the app is TypeScript.
const TS_ENTRY_FILES: [&str; 8] = [
    "server.ts",
    "index.ts",
    "app.ts",
    "main.ts",
    "src/server.ts",
    "src/index.ts",
    "src/app.ts",
    "src/main.ts",
];

/// The start script, `main`, or an entry file; with Bun when the app runs on it, and with the
/// app's own build or runner when the entry is TypeScript.
fn generic_start(
    ctx: &Ctx,
    m: &Manifest,
    bun: bool,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Start {
    let start_script = m.script("start");
    if let Some(s) = start_script
        .clone()
        .filter(|s| plain_node(s) && ts_file_in(s).is_none())
    {
        reasons.push(format!("start_command={s} from the start script"));
        return Start {
            source_file: s.split_whitespace().nth(1).map(str::to_owned),
            argv: command_argv(&s),
            ..Start::default()
        };
    }
    if bun {
        if let Some(s) = start_script.clone().filter(|s| runs_bun(s)) {
            reasons.push(format!("start_command={s} from the start script"));
            return Start {
                source_file: script_file(&s),
                argv: command_argv(&s),
                ..Start::default()
            };
        }
        if start_script.is_none()
            && let Some(dev) = m.script("dev").filter(|s| runs_bun(s))
            && let Some(file) = script_file(&dev)
        {
            reasons.push(format!(
                "start_command=bun run {file} from the dev script ({dev}), without its watch flags"
            ));
            return Start {
                argv: vec!["bun".into(), "run".into(), file.clone()],
                source_file: Some(file),
                ..Start::default()
            };
        }
        if start_script.is_none()
            && let Some((field, file)) = ["module", "main"]
                .into_iter()
                .find_map(|f| Some((f, m.field(f)?)))
                .filter(|(_, file)| ctx.is_file(file))
        {
            reasons.push(format!(
                "start_command=bun run {file} because package.json {field} names it"
            ));
            return Start {
                argv: vec!["bun".into(), "run".into(), file.to_owned()],
                source_file: Some(file.to_owned()),
                ..Start::default()
            };
        }
    }
    if let Some(main) = m.field("main").filter(|f| !is_ts(f) && serves(ctx, f)) {
        reasons.push(format!(
            "start_command=node {main} because package.json main starts a server"
        ));
        return Start {
            argv: vec!["node".into(), main.to_owned()],
            source_file: Some(main.to_owned()),
            ..Start::default()
        };
    }
    if let Some(file) = ENTRY_FILES
        .into_iter()
        .filter(|f| m.field("main") != Some(*f))
        .find(|f| serves(ctx, f))
    {
        reasons.push(format!(
            "start_command=node {file} because {file} starts a server"
        ));
        return Start {
            argv: vec!["node".into(), file.to_owned()],
            source_file: Some(file.to_owned()),
            ..Start::default()
        };
    }
    // TypeScript: the start script's .ts file, a .ts main, or a .ts entry file that serves.
    let ts_entry = match &start_script {
        Some(s) => ts_file_in(s).map(|f| (f, format!("the start script ({s}) runs it"))),
        None => m
            .field("main")
            .filter(|f| is_ts(f) && ctx.is_file(f))
            .map(|f| (f.to_owned(), "package.json main names it".to_owned()))
            .or_else(|| {
                TS_ENTRY_FILES
                    .into_iter()
                    .find(|f| serves(ctx, f))
                    .map(|f| (f.to_owned(), "it starts a server".to_owned()))
            }),
    };
    if let Some((entry, why)) = ts_entry {
        if bun {
            reasons.push(format!(
                "start_command=bun run {entry} because {why} and Bun runs TypeScript"
            ));
            return Start {
                argv: vec!["bun".into(), "run".into(), entry.clone()],
                source_file: Some(entry),
                ..Start::default()
            };
        }
        if m.script("build").is_some()
            && let Some((compiled, how)) = compiled_entry(ctx, m, &entry)
        {
            reasons.push(format!(
                "start_command=node {compiled} because {entry} is TypeScript ({why}) and the build script compiles it to {compiled} ({how})"
            ));
            return Start {
                argv: vec!["node".into(), compiled],
                source_file: Some(entry),
                ..Start::default()
            };
        }
        let used = start_script.as_deref().unwrap_or_default();
        let runner = ["tsx", "ts-node"]
            .into_iter()
            .filter(|r| m.has(r))
            .max_by_key(|r| used.contains(r));
        if let Some(runner) = runner {
            let keep_dev = !m.has_runtime(runner);
            reasons.push(format!(
                "start_command={runner} {entry} because {entry} is TypeScript ({why}) and the app depends on {runner}{}",
                if keep_dev {
                    " (a dev dependency, so dev dependencies stay in the image)"
                } else {
                    ""
                }
            ));
            // The start script's own form (`node --import tsx x.ts`, flags) runs as written.
            let argv = match start_script
                .as_deref()
                .filter(|s| (s.starts_with(runner) || plain_node(s)) && !s.contains("watch"))
            {
                Some(s) if s.starts_with(runner) => {
                    let mut argv = command_argv(s);
                    argv[0] = format!("node_modules/.bin/{runner}");
                    argv
                }
                Some(s) => command_argv(s),
                None => vec![format!("node_modules/.bin/{runner}"), entry.clone()],
            };
            return Start {
                argv,
                source_file: Some(entry),
                keep_dev,
                ..Start::default()
            };
        }
        warnings.push(format!(
            "{entry} is TypeScript, but the app has neither a build script nor tsx or ts-node to run it"
        ));
    }
    if let Some(s) = start_script {
        reasons.push(format!(
            "start_command={} because the start script ({s}) is not a plain `node` command",
            m.run("start")
        ));
        if s.contains("ts-node") || s.contains("nodemon") {
            warnings.push(format!(
                "the start script runs {s:?}, a development tool; dev dependencies are pruned from the image"
            ));
        }
        return Start {
            argv: command_argv(&m.run("start")),
            ..Start::default()
        };
    }
    if let Some(main) = m
        .field("main")
        .filter(|f| ctx.is_file(f) || m.script("build").is_some())
    {
        // A main that a build step produces, or one that does not look like a server: still
        // what the package says to run, as Node itself would. It could be a library's entry,
        // so it is no stronger than tooling.
        reasons.push(format!(
            "start_command=node {main} because package.json main names it"
        ));
        return Start {
            argv: vec!["node".into(), main.to_owned()],
            source_file: Some(main.to_owned()),
            main_only: true,
            ..Start::default()
        };
    }
    Start::default()
}

/// Where the build puts the JavaScript of TypeScript file `entry`: a `main` that is not in the
/// repo (so the build makes it), else tsconfig.json's outDir (relative to its rootDir, or to
/// src/ when that holds the entry).
fn compiled_entry(ctx: &Ctx, m: &Manifest, entry: &str) -> Option<(String, String)> {
    if let Some(main) = m
        .field("main")
        .filter(|f| [".js", ".mjs", ".cjs"].iter().any(|e| f.ends_with(e)) && !ctx.is_file(f))
    {
        return Some((
            main.trim_start_matches("./").to_owned(),
            "package.json main".to_owned(),
        ));
    }
    let tsconfig = ctx.peek_source("tsconfig.json")?;
    let out_dir = json_string_field(&tsconfig, "outDir")?;
    let entry = entry.trim_start_matches("./");
    let rel = match json_string_field(&tsconfig, "rootDir") {
        Some(root) if root != "." => entry.strip_prefix(&format!("{root}/"))?,
        Some(_) => entry,
        None => entry.strip_prefix("src/").unwrap_or(entry),
    };
    let js = rel
        .strip_suffix(".mts")
        .map(|r| format!("{r}.mjs"))
        .or_else(|| rel.strip_suffix(".cts").map(|r| format!("{r}.cjs")))
        .or_else(|| rel.strip_suffix(".ts").map(|r| format!("{r}.js")))?;
    Some((
        format!("{out_dir}/{js}"),
        format!("tsconfig.json outDir {out_dir}"),
    ))
}

/// The string value of `"key"` in a JSON-with-comments file (tsconfig.json), when it is a plain
/// relative path.
fn json_string_field(text: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let rest = &text[text.find(&quoted)? + quoted.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let value = rest.strip_prefix('"')?.split('"').next()?;
    let value = value.trim_start_matches("./").trim_end_matches('/');
    let value = if value.is_empty() { "." } else { value };
    (!value.starts_with('/')
        && !value.split('/').any(|s| s == "..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)))
    .then(|| value.to_owned())
}

fn is_ts(file: &str) -> bool {
    [".ts", ".mts", ".cts"].iter().any(|e| file.ends_with(e)) && !file.ends_with(".d.ts")
}

/// The first TypeScript file a command names.
fn ts_file_in(command: &str) -> Option<String> {
    command
        .split_whitespace()
        .find(|w| is_ts(w))
        .map(|w| w.trim_start_matches("./").to_owned())
}

/// True for a script that runs Bun (`bun index.ts`, `bun run --hot src/index.ts`).
fn runs_bun(script: &str) -> bool {
    script.split_whitespace().next() == Some("bun")
}

/// The file a `bun` or `node` script runs: its first word after the program that is not a flag
/// and looks like a source file.
fn script_file(script: &str) -> Option<String> {
    script
        .split_whitespace()
        .skip(1)
        .filter(|w| !w.starts_with('-') && *w != "run")
        .find(|w| {
            [".ts", ".tsx", ".js", ".mjs", ".cjs", ".mts"]
                .iter()
                .any(|e| w.ends_with(e))
        })
        .map(|w| w.trim_start_matches("./").to_owned())
}

fn bun_setup(declared_version: Option<&str>) -> String {
    format!(
        "npm install -g bun@{}",
        declared_version.unwrap_or(BUN_VERSION)
    )
}

/// True if `file` exists and looks like it starts a server; a library's `main` does not.
fn serves(ctx: &Ctx, file: &str) -> bool {
    ctx.peek_source(file).is_some_and(|s| {
        s.contains(".listen(")
            || s.contains("createServer(")
            || s.contains("serve(")
            || s.contains("Bun.serve")
    })
}

fn dep_names(pkg: &Value, field: &str) -> Vec<String> {
    pkg.get(field)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `pnpm@9.1.0+sha256...` → (pnpm, "9.1.0").
fn parse_package_manager(field: &str) -> Option<(PackageManager, String)> {
    let (name, version) = field.split_once('@')?;
    let version: String = version
        .split('+')
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    if version.is_empty() {
        return None;
    }
    let pm = match name {
        "npm" => PackageManager::Npm,
        "pnpm" => PackageManager::Pnpm,
        "yarn" => PackageManager::Yarn,
        "bun" => PackageManager::Bun,
        _ => return None,
    };
    Some((pm, version))
}

/// True for `node <file> [args]`: a start script we can run without the package manager.
fn plain_node(script: &str) -> bool {
    let mut words = script.split_whitespace();
    words.next() == Some("node")
        && words.next().is_some()
        && script
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_./:=@".contains(c))
}

fn prisma_provider(schema: &str) -> Option<Database> {
    let datasource = schema.split("datasource").nth(1)?;
    let block = datasource.split('}').next()?;
    let provider = block
        .lines()
        .find(|l| l.trim_start().starts_with("provider"))?;
    if provider.contains("mysql") {
        Some(Database::Mysql)
    } else if provider.contains("mongodb") {
        Some(Database::Mongodb)
    } else if provider.contains("postgres") {
        Some(Database::Postgres)
    } else {
        None
    }
}

fn node_recipe(
    pm: PackageManager,
    declared_version: Option<&str>,
    locked: bool,
    manifests: Vec<String>,
) -> NodeRecipe {
    match pm {
        PackageManager::Pnpm => NodeRecipe {
            manifests,
            setup: Some(format!(
                "npm install -g pnpm@{}",
                declared_version.unwrap_or(PNPM_VERSION)
            )),
            install: if locked {
                "pnpm install --frozen-lockfile".into()
            } else {
                "pnpm install".into()
            },
            install_production: if locked {
                "pnpm install --frozen-lockfile --prod".into()
            } else {
                "pnpm install --prod".into()
            },
            prune: Some("pnpm prune --prod".into()),
            runtime_setup: None,
            keep_dev_dependencies: false,
            static_root: None,
        },
        PackageManager::Yarn => NodeRecipe {
            manifests,
            // The official image ships a yarn 1 binary already; --force replaces it.
            setup: Some(format!(
                "npm install -g --force yarn@{}",
                declared_version
                    .filter(|v| v.starts_with("1."))
                    .unwrap_or(YARN_VERSION)
            )),
            install: if locked {
                "yarn install --frozen-lockfile".into()
            } else {
                "yarn install".into()
            },
            install_production: if locked {
                "yarn install --frozen-lockfile --production".into()
            } else {
                "yarn install --production".into()
            },
            prune: Some("yarn install --production --ignore-scripts --prefer-offline".into()),
            runtime_setup: None,
            keep_dev_dependencies: false,
            static_root: None,
        },
        PackageManager::Bun => NodeRecipe {
            manifests,
            setup: Some(bun_setup(declared_version)),
            install: if locked {
                "bun install --frozen-lockfile".into()
            } else {
                "bun install".into()
            },
            install_production: if locked {
                "bun install --frozen-lockfile --production".into()
            } else {
                "bun install --production".into()
            },
            prune: None,
            runtime_setup: None,
            keep_dev_dependencies: false,
            static_root: None,
        },
        _ => NodeRecipe {
            manifests,
            setup: None,
            install: if locked {
                "npm ci --no-audit --no-fund".into()
            } else {
                "npm install --no-audit --no-fund".into()
            },
            install_production: if locked {
                "npm ci --omit=dev --no-audit --no-fund".into()
            } else {
                "npm install --omit=dev --no-audit --no-fund".into()
            },
            prune: Some("npm prune --omit=dev".into()),
            runtime_setup: None,
            keep_dev_dependencies: false,
            static_root: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_manager_field() {
        assert_eq!(
            parse_package_manager("pnpm@9.1.0+sha256.abc"),
            Some((PackageManager::Pnpm, "9.1.0".into()))
        );
        assert_eq!(parse_package_manager("cargo@1"), None);
    }

    #[test]
    fn plain_node_scripts() {
        assert!(plain_node("node dist/main"));
        assert!(plain_node("node --enable-source-maps dist/main.js"));
        assert!(!plain_node("nest start"));
        assert!(!plain_node("node x && rm -rf /"));
    }

    #[test]
    fn prisma_providers() {
        let schema = "generator client {\n provider = \"prisma-client-js\"\n}\ndatasource db {\n  provider = \"mysql\"\n  url = env(\"DATABASE_URL\")\n}\n";
        assert_eq!(prisma_provider(schema), Some(Database::Mysql));
    }
}
