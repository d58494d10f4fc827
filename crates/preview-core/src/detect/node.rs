//! Node: NestJS, Next.js, Fastify, Express or plain, from package.json and its lockfile.

use serde_json::Value;

use super::{Ctx, Detection, Detector, Strength, command_argv, hard_coded_port, version_warning};
use crate::images;
use crate::model::{
    Database, ExtraService, Framework, Language, NodeRecipe, PackageManager, Recipe,
};
use crate::{Error, Result};

/// Pinned versions of package managers installed with `npm install -g` (hadolint DL3016).
const PNPM_VERSION: &str = "9.15.9";
const YARN_VERSION: &str = "1.22.22";
const BUN_VERSION: &str = "1.1.45";

/// Frameworks by the dependency that identifies them, strongest signal first.
const FRAMEWORKS: [(&str, Framework); 4] = [
    ("@nestjs/core", Framework::Nestjs),
    ("next", Framework::Nextjs),
    ("fastify", Framework::Fastify),
    ("express", Framework::Express),
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
        &["package.json"]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        let Some(text) = ctx.read_manifest("package.json")? else {
            return Ok(None);
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
                None => {
                    reasons.push("package_manager=npm because there is no lockfile".to_owned());
                    warnings.push(
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
        let image = images::image_for("node");
        if let Some(w) = language_version
            .as_deref()
            .and_then(|v| version_warning(v, image, "node"))
        {
            warnings.push(w);
        }

        let scripts = pkg.get("scripts").and_then(Value::as_object);
        let script = |name: &str| {
            scripts
                .and_then(|s| s.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let run = |name: &str| match pm {
            PackageManager::Npm => format!("npm run {name}"),
            PackageManager::Pnpm => format!("pnpm run {name}"),
            PackageManager::Yarn => format!("yarn run {name}"),
            _ => format!("bun run {name}"),
        };

        let mut build_commands = Vec::new();
        if script("build").is_some() {
            build_commands.push(run("build"));
            reasons.push(format!(
                "build_command={} because package.json has a build script",
                run("build")
            ));
        } else if framework == Some(Framework::Nextjs) {
            build_commands.push("node_modules/.bin/next build".to_owned());
            reasons.push("build_command=next build because Next.js apps must be built".to_owned());
        }

        // Start command and the file whose source tells the port.
        let port = 3000;
        let mut port_env = Some("PORT".to_owned());
        let mut source_file: Option<String> = None;
        let start_argv: Vec<String> = match framework {
            Some(Framework::Nextjs) => {
                reasons.push("start_command=next start because the app uses Next.js".to_owned());
                vec![
                    "node_modules/.bin/next".into(),
                    "start".into(),
                    "-H".into(),
                    "0.0.0.0".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            }
            Some(Framework::Nestjs) => {
                source_file = ["src/main.ts", "src/main.js"]
                    .into_iter()
                    .find(|f| ctx.is_file(f))
                    .map(str::to_owned);
                match script("start:prod").filter(|s| plain_node(s)) {
                    Some(s) => {
                        reasons.push(format!("start_command={s} from the start:prod script"));
                        command_argv(&s)
                    }
                    None => {
                        reasons.push(
                            "start_command=node dist/main, NestJS's start:prod default".to_owned(),
                        );
                        vec!["node".into(), "dist/main".into()]
                    }
                }
            }
            _ => {
                if let Some(s) = script("start").filter(|s| plain_node(s)) {
                    reasons.push(format!("start_command={s} from the start script"));
                    source_file = s.split_whitespace().nth(1).map(str::to_owned);
                    command_argv(&s)
                } else if let Some(main) = pkg
                    .get("main")
                    .and_then(Value::as_str)
                    .filter(|m| serves(ctx, m))
                {
                    reasons.push(format!(
                        "start_command=node {main} because package.json main starts a server"
                    ));
                    source_file = Some(main.to_owned());
                    vec!["node".into(), main.to_owned()]
                } else if let Some(file) = ENTRY_FILES
                    .into_iter()
                    .filter(|f| pkg.get("main").and_then(Value::as_str) != Some(*f))
                    .find(|f| serves(ctx, f))
                {
                    reasons.push(format!(
                        "start_command=node {file} because {file} starts a server"
                    ));
                    source_file = Some(file.to_owned());
                    vec!["node".into(), file.to_owned()]
                } else if let Some(s) = script("start") {
                    reasons.push(format!(
                        "start_command={} because the start script ({s}) is not a plain `node` command",
                        run("start")
                    ));
                    if s.contains("ts-node") || s.contains("nodemon") {
                        warnings.push(format!(
                            "the start script runs {s:?}, a development tool; dev dependencies are pruned from the image"
                        ));
                    }
                    command_argv(&run("start"))
                } else {
                    Vec::new()
                }
            }
        };

        // A hard-coded port in the entry source wins over PORT.
        let mut port = port;
        if let Some(file) = source_file.as_deref()
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
            reasons.push(format!("port={port} via PORT, the Node convention"));
        }

        // A workspace root's scripts usually drive its members; it is not the app itself.
        let strength =
            if start_argv.is_empty() || (pkg.get("workspaces").is_some() && framework.is_none()) {
                Strength::Tooling
            } else if framework.is_some() {
                Strength::Framework
            } else {
                Strength::Plain
            };

        if framework == Some(Framework::Nextjs) {
            warnings.push(
                "Next.js serves its assets from /_next/ at the site root; behind the preview's path prefix set basePath in next.config.js (the prefix is in PREVIEW_BASE_PATH at run time)"
                    .to_owned(),
            );
        }
        let health_path = if framework == Some(Framework::Nextjs) {
            "/"
        } else {
            "/health"
        };

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
        let recipe = node_recipe(pm, pm_version.as_deref(), locked, manifests);

        Ok(Some(Detection {
            language: Language::Node,
            framework,
            strength,
            evidence: ctx.show("package.json"),
            language_version,
            package_manager: Some(pm),
            build_commands,
            start_argv,
            startup_commands: Vec::new(),
            port,
            port_env,
            health_path: health_path.to_owned(),
            database,
            extra_services,
            context_dir: None,
            recipe: Recipe::Node(recipe),
            reasons,
            warnings,
        }))
    }
}

/// True if `file` exists and looks like it starts a server; a library's `main` does not.
fn serves(ctx: &Ctx, file: &str) -> bool {
    ctx.peek_source(file)
        .is_some_and(|s| s.contains(".listen(") || s.contains("createServer("))
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
        },
        PackageManager::Bun => NodeRecipe {
            manifests,
            setup: Some(format!(
                "npm install -g bun@{}",
                declared_version.unwrap_or(BUN_VERSION)
            )),
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
