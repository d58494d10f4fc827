//! Go: a main package at the module root, or one under `cmd/*`. With `app_path` pointing into a
//! module (e.g. `cmd/worker`), that package is built from the module root.

use super::{Ctx, Detection, Detector, Strength, join_str};
use crate::model::{Database, ExtraService, GoRecipe, Language, PackageManager, Recipe};
use crate::{Error, Result};

/// Detects Go apps.
pub struct GoDetector;

/// Names preferred when several `cmd/*` commands exist.
const PREFERRED_COMMANDS: [&str; 5] = ["server", "api", "web", "app", "main"];

impl Detector for GoDetector {
    fn language(&self) -> Language {
        Language::Go
    }

    fn markers(&self) -> &'static [&'static str] {
        &["go.mod", "main.go"]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        // The module root is this dir or, for a package chosen by app_path, an ancestor.
        let search = if ctx.explicit {
            ancestors(&ctx.dir)
        } else {
            vec![ctx.dir.clone()]
        };
        let module_dir = search.into_iter().find(|d| {
            if *d == ctx.dir {
                ctx.is_file("go.mod")
            } else {
                ctx.checkout.is_file(super::join(d, "go.mod"))
            }
        });
        let mut reasons = Vec::new();
        let mut build_warnings = Vec::new();
        // A lone main.go without go.mod (as `go run main.go` allows): the build makes a module.
        let (module_dir, go_mod_rel, module) = match module_dir {
            Some(module_dir) => {
                let go_mod_rel = join_str(&module_dir, "go.mod");
                let go_mod = ctx
                    .checkout
                    .read_text(
                        std::path::Path::new(&go_mod_rel),
                        crate::checkout::MANIFEST_LIMIT,
                    )?
                    .ok_or_else(|| Error::manifest(&go_mod_rel, "vanished while reading"))?;
                reasons.push(format!("language=go because of {go_mod_rel}"));
                (module_dir, Some(go_mod_rel), GoMod::parse(&go_mod))
            }
            None if ctx.is_file("main.go") && has_main(ctx) => {
                reasons.push(format!(
                    "language=go because {} is a main package (no go.mod: the build creates one)",
                    ctx.show("main.go")
                ));
                build_warnings.push(
                    "no go.mod: only the standard library can be imported; run `go mod init` and commit go.mod"
                        .to_owned(),
                );
                (ctx.dir.clone(), None, GoMod::default())
            }
            None => return Ok(None),
        };
        let evidence = go_mod_rel.clone().unwrap_or_else(|| ctx.show("main.go"));
        let go_mod_rel = evidence.clone();

        let module_ctx = sub_ctx(ctx, &module_dir);
        let package = if module_dir != ctx.dir {
            let rel = if module_dir == "." {
                ctx.dir.as_str()
            } else {
                ctx.dir[module_dir.len()..].trim_start_matches('/')
            };
            if !has_main(&sub_ctx(ctx, &ctx.dir)) {
                return Err(Error::NoApp(format!(
                    "{}: no `package main` here to build",
                    ctx.dir
                )));
            }
            reasons.push(format!(
                "package=./{rel} because app_path points at it, inside the module at {module_dir}"
            ));
            Some(format!("./{rel}"))
        } else if has_main(&module_ctx) {
            reasons.push("package=. because the module root is a main package".to_owned());
            Some(".".to_owned())
        } else {
            let commands: Vec<String> = module_ctx
                .dirs_in("cmd")
                .into_iter()
                .filter(|d| has_main(&sub_ctx(ctx, &join_str(&module_dir, &format!("cmd/{d}")))))
                .collect();
            let base = module
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            match commands.as_slice() {
                [] => None,
                [one] => {
                    reasons.push(format!(
                        "package=./cmd/{one} because it is the only command under cmd/"
                    ));
                    Some(format!("./cmd/{one}"))
                }
                many => {
                    let pick = many.iter().find(|c| **c == base).or_else(|| {
                        PREFERRED_COMMANDS
                            .iter()
                            .find_map(|p| many.iter().find(|c| c == p))
                    });
                    match pick {
                        Some(c) => {
                            reasons.push(format!(
                                "package=./cmd/{c} because it is the server-like one of cmd/{{{}}}",
                                many.join(",")
                            ));
                            build_warnings.push(format!(
                                "several commands under cmd/ ({}); set app_path: cmd/<name> to choose another",
                                many.join(", ")
                            ));
                            Some(format!("./cmd/{c}"))
                        }
                        None => {
                            return Err(Error::NoApp(format!(
                                "{}: several commands under cmd/ ({}) and none is obviously the server; set app_path in preview-config.yml, e.g. app_path: {}",
                                module_dir,
                                many.join(", "),
                                join_str(&module_dir, &format!("cmd/{}", many[0]))
                            )));
                        }
                    }
                }
            }
        };

        let language_version = module.go.clone();
        if let Some(v) = &language_version {
            reasons.push(format!(
                "language_version={v} from the go directive of {go_mod_rel}"
            ));
        }

        let mut database = None;
        for (prefix, db) in [
            ("github.com/lib/pq", Database::Postgres),
            ("github.com/jackc/pgx", Database::Postgres),
            ("gorm.io/driver/postgres", Database::Postgres),
            ("github.com/go-sql-driver/mysql", Database::Mysql),
            ("gorm.io/driver/mysql", Database::Mysql),
            ("go.mongodb.org/mongo-driver", Database::Mongodb),
        ] {
            if let Some(r) = module.requires.iter().find(|r| r.starts_with(prefix)) {
                reasons.push(format!("database={db} because {go_mod_rel} requires {r}"));
                database = Some(db);
                break;
            }
        }
        let mut extra_services = Vec::new();
        if let Some(r) = module.requires.iter().find(|r| {
            r.starts_with("github.com/redis/go-redis")
                || r.starts_with("github.com/go-redis/redis")
                || r.starts_with("github.com/gomodule/redigo")
        }) {
            extra_services.push(ExtraService::Redis);
            reasons.push(format!(
                "extra_services=redis because {go_mod_rel} requires {r}"
            ));
        }
        if !module.requires.is_empty() {
            build_warnings.push(
                "the module has dependencies: the build downloads them through the Go module proxy"
                    .to_owned(),
            );
        }

        let start_argv = if package.is_some() {
            reasons.push(
                "start_command=/usr/local/bin/app, the binary built from the package".to_owned(),
            );
            reasons.push("port=8080 via PORT, the Go convention".to_owned());
            vec!["/usr/local/bin/app".to_owned()]
        } else {
            Vec::new()
        };
        let strength = if package.is_some() {
            Strength::Plain
        } else {
            Strength::Tooling
        };
        let recipe = GoRecipe {
            package: package.clone().unwrap_or_else(|| ".".to_owned()),
            has_go_sum: module_ctx.is_file("go.sum"),
            has_requires: !module.requires.is_empty(),
            has_go_mod: evidence.ends_with("go.mod"),
        };

        Ok(Some(Detection {
            language: Language::Go,
            framework: None,
            strength,
            evidence,
            language_version,
            package_manager: Some(PackageManager::Go),
            build_commands: Vec::new(),
            start_argv,
            startup_commands: Vec::new(),
            port: 8080,
            port_env: Some("PORT".to_owned()),
            database,
            extra_services,
            context_dir: (module_dir != ctx.dir).then_some(module_dir),
            recipe: Recipe::Go(recipe),
            reasons,
            warnings: Vec::new(),
            build_warnings,
        }))
    }
}

fn sub_ctx<'a>(ctx: &Ctx<'a>, dir: &str) -> Ctx<'a> {
    Ctx::new(ctx.checkout, dir, None, false)
}

/// `dir` and its ancestors up to the checkout root, nearest first.
pub(crate) fn ancestors(dir: &str) -> Vec<String> {
    let mut out = vec![dir.to_owned()];
    let mut current = dir.to_owned();
    while current != "." {
        current = match current.rsplit_once('/') {
            Some((parent, _)) => parent.to_owned(),
            None => ".".to_owned(),
        };
        out.push(current.clone());
    }
    out
}

/// True if a non-test `.go` file in the directory declares `package main`.
fn has_main(ctx: &Ctx) -> bool {
    ctx.files_in(".")
        .iter()
        .filter(|f| f.ends_with(".go") && !f.ends_with("_test.go"))
        .any(|f| {
            ctx.peek_source(f).is_some_and(|s| {
                s.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("package "))
                    .is_some_and(|l| l.split_whitespace().nth(1) == Some("main"))
            })
        })
}

/// The parts of go.mod we use.
#[derive(Debug, Default)]
struct GoMod {
    path: String,
    go: Option<String>,
    requires: Vec<String>,
}

impl GoMod {
    fn parse(text: &str) -> Self {
        let mut out = GoMod::default();
        let mut in_require = false;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or_default().trim();
            if in_require {
                if line == ")" {
                    in_require = false;
                } else if let Some(module) = line.split_whitespace().next() {
                    out.requires.push(module.to_owned());
                }
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("module") => {
                    out.path = words
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned()
                }
                Some("go") => out.go = words.next().map(str::to_owned),
                Some("require") => match words.next() {
                    Some("(") => in_require = true,
                    Some(module) => out.requires.push(module.to_owned()),
                    None => {}
                },
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_mod() {
        let m = GoMod::parse(
            "module example.com/shop/api\n\ngo 1.22\n\nrequire (\n\tgithub.com/lib/pq v1.10.9 // indirect\n\tgithub.com/x/y v1\n)\nrequire github.com/z v2\n",
        );
        assert_eq!(m.path, "example.com/shop/api");
        assert_eq!(m.go.as_deref(), Some("1.22"));
        assert_eq!(
            m.requires,
            ["github.com/lib/pq", "github.com/x/y", "github.com/z"]
        );
    }

    #[test]
    fn ancestors_of_a_dir() {
        assert_eq!(ancestors("a/b/c"), ["a/b/c", "a/b", "a", "."]);
        assert_eq!(ancestors("."), ["."]);
    }
}
