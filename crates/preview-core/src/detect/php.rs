//! PHP: Laravel or plain, from composer.json, `artisan` or an `index.php`.

use serde_json::Value;

use super::{Ctx, Detection, Detector, Strength};
use crate::model::{
    Database, ExtraService, Framework, Language, PackageManager, PhpRecipe, Recipe,
};
use crate::{Error, Result};

const PORT: u16 = 8000;

/// Detects PHP apps.
pub struct PhpDetector;

impl Detector for PhpDetector {
    fn language(&self) -> Language {
        Language::Php
    }

    fn markers(&self) -> &'static [&'static str] {
        &["composer.json", "index.php", "public/index.php", "artisan"]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        let composer_text = ctx.read_manifest("composer.json")?;
        let has_artisan = ctx.is_file("artisan");
        let docroot = if ctx.is_file("public/index.php") {
            Some("public")
        } else if ctx.is_file("index.php") {
            Some(".")
        } else {
            None
        };
        if composer_text.is_none() && !has_artisan && docroot.is_none() {
            return Ok(None);
        }
        let composer: Option<Value> = match &composer_text {
            Some(t) => Some(
                serde_json::from_str(t)
                    .map_err(|e| Error::manifest(ctx.rel("composer.json"), e))?,
            ),
            None => None,
        };
        let require: Vec<String> = composer
            .as_ref()
            .and_then(|c| c.get("require"))
            .and_then(Value::as_object)
            .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let has = |name: &str| require.iter().any(|r| r == name);
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();

        let framework = match ctx.forced.filter(|f| f.language() == Language::Php) {
            Some(f) => {
                reasons.push(format!("framework={f} because preview-config.yml says so"));
                Some(f)
            }
            None if has("laravel/framework") => {
                reasons.push(format!(
                    "framework=laravel because {} requires laravel/framework",
                    ctx.show("composer.json")
                ));
                Some(Framework::Laravel)
            }
            None if has_artisan => {
                reasons.push(format!(
                    "framework=laravel because {} exists",
                    ctx.show("artisan")
                ));
                Some(Framework::Laravel)
            }
            None => None,
        };

        let language_version = composer
            .as_ref()
            .and_then(|c| c.pointer("/require/php"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(v) = &language_version {
            reasons.push(format!(
                "language_version={v} from composer.json require.php"
            ));
        }
        let package_manager = composer.as_ref().map(|_| {
            reasons.push("package_manager=composer because of composer.json".to_owned());
            PackageManager::Composer
        });

        // Database: PDO extensions, Laravel's .env.example, client libraries.
        let mut database = None;
        for (name, db) in [
            ("ext-pdo_pgsql", Database::Postgres),
            ("ext-pgsql", Database::Postgres),
            ("ext-pdo_mysql", Database::Mysql),
            ("ext-mysqli", Database::Mysql),
            ("mongodb/mongodb", Database::Mongodb),
            ("ext-mongodb", Database::Mongodb),
        ] {
            if has(name) {
                reasons.push(format!(
                    "database={db} because composer.json requires {name}"
                ));
                database = Some(db);
                break;
            }
        }
        if database.is_none()
            && framework == Some(Framework::Laravel)
            && let Some(env) = ctx.peek_source(".env.example")
        {
            let connection = env
                .lines()
                .find_map(|l| l.trim().strip_prefix("DB_CONNECTION="))
                .map(|v| v.trim().trim_matches('"').to_owned());
            database = match connection.as_deref() {
                Some("pgsql") => Some(Database::Postgres),
                Some("mysql") | Some("mariadb") => Some(Database::Mysql),
                Some("mongodb") => Some(Database::Mongodb),
                _ => None,
            };
            if let (Some(db), Some(c)) = (database, connection) {
                reasons.push(format!(
                    "database={db} because .env.example sets DB_CONNECTION={c}"
                ));
            }
        }
        let mut extra_services = Vec::new();
        if let Some(name) = ["predis/predis", "ext-redis"].into_iter().find(|n| has(n)) {
            extra_services.push(ExtraService::Redis);
            reasons.push(format!(
                "extra_services=redis because composer.json requires {name}"
            ));
        }

        let extensions = match database {
            Some(Database::Postgres) => vec!["pdo_pgsql".to_owned()],
            Some(Database::Mysql) => vec!["pdo_mysql".to_owned()],
            _ => Vec::new(),
        };

        let mut startup_commands = Vec::new();
        let (start_argv, writable_dirs): (Vec<String>, Vec<String>) = match framework {
            Some(Framework::Laravel) => {
                reasons.push(
                    "start_command=php artisan serve because the app uses Laravel".to_owned(),
                );
                if database.is_some() {
                    startup_commands.push("php artisan migrate --force".to_owned());
                    reasons.push(
                        "startup_commands=php artisan migrate --force because the app has a database".to_owned(),
                    );
                }
                (
                    [
                        "php",
                        "artisan",
                        "serve",
                        "--host=0.0.0.0",
                        &format!("--port={PORT}"),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    vec!["storage".to_owned(), "bootstrap/cache".to_owned()],
                )
            }
            _ => match docroot {
                Some(root) => {
                    reasons.push(format!(
                        "start_command=php -S with document root {root} because {} exists",
                        ctx.show(&super::join_str(root, "index.php"))
                    ));
                    (
                        ["php", "-S", &format!("0.0.0.0:{PORT}"), "-t", root]
                            .map(str::to_owned)
                            .to_vec(),
                        Vec::new(),
                    )
                }
                None => (Vec::new(), Vec::new()),
            },
        };
        if !start_argv.is_empty() {
            reasons.push(format!("port={PORT} because the start command binds it"));
        }
        let strength = match (framework, start_argv.is_empty()) {
            (_, true) => Strength::Tooling,
            (Some(_), false) => Strength::Framework,
            (None, false) => Strength::Plain,
        };
        let has_composer = composer.is_some();
        let needs_vendor =
            has_composer && !require.iter().all(|r| r == "php" || r.starts_with("ext-"));
        if framework == Some(Framework::Laravel) {
            warnings.push(
                "Laravel needs APP_KEY; a per-preview key is injected unless env sets one"
                    .to_owned(),
            );
        }

        Ok(Some(Detection {
            language: Language::Php,
            framework,
            strength,
            evidence: if has_composer {
                ctx.show("composer.json")
            } else {
                ctx.show(&super::join_str(docroot.unwrap_or("."), "index.php"))
            },
            language_version,
            package_manager,
            build_commands: Vec::new(),
            start_argv,
            startup_commands,
            port: PORT,
            port_env: None,
            database,
            extra_services,
            context_dir: None,
            recipe: Recipe::Php(PhpRecipe {
                composer: needs_vendor,
                composer_lock: ctx.is_file("composer.lock"),
                extensions,
                writable_dirs,
            }),
            reasons,
            warnings,
            build_warnings: Vec::new(),
        }))
    }
}
