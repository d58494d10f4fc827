//! Rust: a single crate, or a workspace with one binary (or the member `app_path` points at).

use std::path::Path;

use toml::Table;

use super::go::ancestors;
use super::{Ctx, Detection, Detector, Strength, join_str};
use crate::checkout::MANIFEST_LIMIT;
use crate::model::{Database, ExtraService, Language, PackageManager, Recipe, RustRecipe};
use crate::{Error, Result};

/// Detects Rust apps.
pub struct RustDetector;

/// A binary target of a package.
#[derive(Debug, Clone)]
struct Binary {
    /// Package directory, relative to the checkout root.
    dir: String,
    package: String,
    name: String,
}

impl Detector for RustDetector {
    fn language(&self) -> Language {
        Language::Rust
    }

    fn markers(&self) -> &'static [&'static str] {
        &["Cargo.toml"]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        if !ctx.is_file("Cargo.toml") {
            return Ok(None);
        }
        let Some(manifest) = read_toml(ctx, &ctx.dir)? else {
            return Ok(None);
        };
        let mut reasons = Vec::new();
        let mut build_warnings = Vec::new();

        // The workspace root: this manifest, or (for a member chosen by app_path) an ancestor's.
        let mut root_dir = ctx.dir.clone();
        let mut root = manifest.clone();
        if manifest.get("workspace").is_none() && ctx.explicit {
            for dir in ancestors(&ctx.dir).into_iter().skip(1) {
                if let Some(t) = read_toml(ctx, &dir)?
                    && t.get("workspace").is_some()
                {
                    root_dir = dir;
                    root = t;
                    break;
                }
            }
        }
        let in_workspace = root.get("workspace").is_some();

        let binaries = if in_workspace && root_dir == ctx.dir {
            // The workspace root itself: every member's binaries, and the root package's.
            let mut all = Vec::new();
            if manifest.get("package").is_some() {
                all.extend(package_binaries(ctx, &ctx.dir, &manifest));
            }
            for member in workspace_members(ctx, &root_dir, &root) {
                if let Some(t) = read_toml(ctx, &member)? {
                    all.extend(package_binaries(ctx, &member, &t));
                }
            }
            all
        } else {
            package_binaries(ctx, &ctx.dir, &manifest)
        };

        let chosen = match binaries.as_slice() {
            [] => None,
            [one] => {
                reasons.push(format!(
                    "binary={} because it is the only binary {}",
                    one.name,
                    if in_workspace && root_dir == ctx.dir {
                        "of the workspace"
                    } else {
                        "of the package"
                    }
                ));
                Some(one.clone())
            }
            many => {
                let own = manifest
                    .get("package")
                    .and_then(|p| p.get("name"))
                    .and_then(|n| n.as_str());
                match many
                    .iter()
                    .find(|b| Some(b.name.as_str()) == own && b.dir == ctx.dir)
                {
                    Some(b) => {
                        reasons.push(format!(
                            "binary={} because it is named after the package",
                            b.name
                        ));
                        Some(b.clone())
                    }
                    None => {
                        let list: Vec<String> = many
                            .iter()
                            .map(|b| format!("{} ({})", b.dir, b.name))
                            .collect();
                        return Err(Error::NoApp(format!(
                            "several Rust binaries: {}; set app_path in preview-config.yml to the package to run",
                            list.join(", ")
                        )));
                    }
                }
            }
        };

        let language_version = toolchain_version(ctx, &root_dir, &root, &manifest);
        if let Some((v, from)) = &language_version {
            reasons.push(format!("language_version={v} from {from}"));
        }

        // Services from the dependencies of the chosen package (and the workspace table).
        let deps = chosen
            .as_ref()
            .and_then(|b| read_toml(ctx, &b.dir).ok().flatten())
            .map(|t| dependencies(&t))
            .unwrap_or_default();
        let mut deps = deps;
        deps.extend(dependencies(&root));
        let mut database = None;
        for (name, feature, db) in [
            ("tokio-postgres", None, Database::Postgres),
            ("postgres", None, Database::Postgres),
            ("deadpool-postgres", None, Database::Postgres),
            ("sqlx", Some("postgres"), Database::Postgres),
            ("diesel", Some("postgres"), Database::Postgres),
            ("sea-orm", Some("sqlx-postgres"), Database::Postgres),
            ("mysql", None, Database::Mysql),
            ("mysql_async", None, Database::Mysql),
            ("sqlx", Some("mysql"), Database::Mysql),
            ("diesel", Some("mysql"), Database::Mysql),
            ("mongodb", None, Database::Mongodb),
        ] {
            if deps.iter().any(|(n, features)| {
                n == name && feature.is_none_or(|f| features.iter().any(|x| x == f))
            }) {
                let with = feature
                    .map(|f| format!(" with feature {f}"))
                    .unwrap_or_default();
                reasons.push(format!(
                    "database={db} because Cargo.toml depends on {name}{with}"
                ));
                database = Some(db);
                break;
            }
        }
        let mut extra_services = Vec::new();
        if deps
            .iter()
            .any(|(n, _)| n == "redis" || n == "deadpool-redis")
        {
            extra_services.push(ExtraService::Redis);
            reasons.push("extra_services=redis because Cargo.toml depends on redis".to_owned());
        }

        let locked = ctx.checkout.is_file(super::join(&root_dir, "Cargo.lock"));
        if !locked {
            build_warnings.push(
                "no Cargo.lock: dependency versions are resolved afresh on every build".to_owned(),
            );
        }
        let single_crate = !in_workspace
            && ctx.is_file("src/main.rs")
            && !ctx.is_file("src/lib.rs")
            && !ctx.is_file("build.rs")
            && !ctx.is_dir("src/bin")
            && manifest.get("bin").is_none()
            && manifest.get("lib").is_none();

        // Rocket ignores PORT: it reads ROCKET_PORT (default 8000) and ROCKET_ADDRESS.
        let rocket = deps.iter().any(|(n, _)| n == "rocket");
        let (port, port_env) = if rocket {
            (8000, "ROCKET_PORT")
        } else {
            (8080, "PORT")
        };
        let (start_argv, strength) = match &chosen {
            Some(_) => {
                reasons.push(
                    "start_command=/usr/local/bin/app, the binary built in release mode".to_owned(),
                );
                if rocket {
                    reasons.push(
                        "port=8000 via ROCKET_PORT because Cargo.toml depends on rocket (ROCKET_ADDRESS is set to 0.0.0.0)"
                            .to_owned(),
                    );
                } else {
                    reasons.push("port=8080 via PORT, our convention for compiled apps".to_owned());
                }
                (vec!["/usr/local/bin/app".to_owned()], Strength::Plain)
            }
            None => (Vec::new(), Strength::Tooling),
        };
        let recipe = RustRecipe {
            package: chosen
                .as_ref()
                .filter(|_| in_workspace)
                .map(|b| b.package.clone()),
            binary: chosen.as_ref().map(|b| b.name.clone()).unwrap_or_default(),
            locked,
            cache_dependencies: single_crate,
        };

        Ok(Some(Detection {
            language: Language::Rust,
            framework: None,
            strength,
            evidence: join_str(&ctx.dir, "Cargo.toml"),
            language_version: language_version.map(|(v, _)| v),
            package_manager: Some(PackageManager::Cargo),
            build_commands: Vec::new(),
            start_argv,
            startup_commands: Vec::new(),
            port,
            port_env: Some(port_env.to_owned()),
            database,
            extra_services,
            context_dir: (root_dir != ctx.dir).then_some(root_dir),
            recipe: Recipe::Rust(recipe),
            reasons,
            warnings: Vec::new(),
            build_warnings,
        }))
    }
}

fn read_toml(ctx: &Ctx, dir: &str) -> Result<Option<Table>> {
    let rel = join_str(dir, "Cargo.toml");
    let Some(text) = ctx.checkout.read_text(Path::new(&rel), MANIFEST_LIMIT)? else {
        return Ok(None);
    };
    text.parse::<Table>()
        .map(Some)
        .map_err(|e| Error::manifest(&rel, e.message()))
}

/// Member directories of a workspace; `dir/*` globs are expanded one level.
fn workspace_members(ctx: &Ctx, root_dir: &str, root: &Table) -> Vec<String> {
    let members = root
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for member in members.iter().filter_map(|m| m.as_str()) {
        let Ok(member) = crate::checkout::normalize_relative(member) else {
            continue;
        };
        if let Some(parent) = member.strip_suffix("/*") {
            let parent = join_str(root_dir, parent);
            for d in ctx
                .checkout
                .list_dir(Path::new(&parent))
                .unwrap_or_default()
            {
                if d.kind == crate::checkout::EntryKind::Dir {
                    out.push(join_str(&parent, &d.name));
                }
            }
        } else if !member.contains('*') {
            out.push(join_str(root_dir, &member));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The binaries a package builds: `[[bin]]` entries, `src/main.rs`, `src/bin/*.rs`.
fn package_binaries(ctx: &Ctx, dir: &str, manifest: &Table) -> Vec<Binary> {
    let Some(package) = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |name: &str| {
        if !out.iter().any(|b: &Binary| b.name == name) {
            out.push(Binary {
                dir: dir.to_owned(),
                package: package.to_owned(),
                name: name.to_owned(),
            });
        }
    };
    if let Some(bins) = manifest.get("bin").and_then(|b| b.as_array()) {
        for bin in bins {
            if let Some(name) = bin.get("name").and_then(|n| n.as_str()) {
                push(name);
            }
        }
    }
    if ctx.checkout.is_file(super::join(dir, "src/main.rs")) {
        push(package);
    }
    let bin_dir = join_str(dir, "src/bin");
    for entry in ctx
        .checkout
        .list_dir(Path::new(&bin_dir))
        .unwrap_or_default()
    {
        if let Some(name) = entry.name.strip_suffix(".rs")
            && entry.kind == crate::checkout::EntryKind::File
        {
            push(name);
        }
    }
    out.retain(|b| valid_name(&b.name) && valid_name(&b.package));
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `(name, features)` of every dependency table.
fn dependencies(manifest: &Table) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let tables = [
        manifest.get("dependencies"),
        manifest
            .get("workspace")
            .and_then(|w| w.get("dependencies")),
    ];
    for table in tables.into_iter().flatten().filter_map(|t| t.as_table()) {
        for (name, spec) in table {
            let features = spec
                .get("features")
                .and_then(|f| f.as_array())
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.push((name.clone(), features));
        }
    }
    out
}

fn toolchain_version(
    ctx: &Ctx,
    root_dir: &str,
    root: &Table,
    manifest: &Table,
) -> Option<(String, String)> {
    let toml_file = join_str(root_dir, "rust-toolchain.toml");
    if let Some(text) = ctx
        .checkout
        .peek_text(Path::new(&toml_file), MANIFEST_LIMIT)
        && let Ok(t) = text.parse::<Table>()
        && let Some(channel) = t
            .get("toolchain")
            .and_then(|t| t.get("channel"))
            .and_then(|c| c.as_str())
    {
        return Some((channel.to_owned(), toml_file));
    }
    let plain = join_str(root_dir, "rust-toolchain");
    if let Some(text) = ctx.checkout.peek_text(Path::new(&plain), 1024) {
        let v = text.trim();
        if !v.is_empty() && !v.contains('\n') {
            return Some((v.to_owned(), plain));
        }
    }
    for (table, from) in [
        (manifest.get("package"), "Cargo.toml package.rust-version"),
        (
            root.get("workspace").and_then(|w| w.get("package")),
            "Cargo.toml workspace.package.rust-version",
        ),
    ] {
        if let Some(v) = table
            .and_then(|p| p.get("rust-version"))
            .and_then(|v| v.as_str())
        {
            // rust-version is the oldest compiler the crate supports.
            return Some((format!(">={v}"), from.to_owned()));
        }
    }
    None
}
