//! Python: Django, FastAPI, Flask or plain, from requirements.txt, pyproject.toml or Pipfile.

use super::{Ctx, Detection, Detector, Strength, hard_coded_port, normalize_package};
use crate::model::{
    Database, ExtraService, Framework, Language, PackageManager, PythonRecipe, Recipe,
};
use crate::{Error, Result};

/// Pinned versions of the tools some package managers need (hadolint DL3013).
const POETRY_VERSION: &str = "1.8.5";
const UV_VERSION: &str = "0.5.31";
const PIPENV_VERSION: &str = "2024.4.1";

const PORT: u16 = 8000;

/// Files that hold a FastAPI or Flask app, tried in order.
const APP_FILES: [&str; 10] = [
    "main.py",
    "app.py",
    "server.py",
    "wsgi.py",
    "asgi.py",
    "api.py",
    "app/main.py",
    "app/__init__.py",
    "src/main.py",
    "src/app.py",
];

/// Detects Python apps.
pub struct PythonDetector;

struct Requirements {
    names: Vec<String>,
    /// Names with extras, e.g. `fastapi[standard]`, lowercased.
    raw: Vec<String>,
}

impl Requirements {
    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

impl Detector for PythonDetector {
    fn language(&self) -> Language {
        Language::Python
    }

    fn markers(&self) -> &'static [&'static str] {
        &[
            "requirements.txt",
            "pyproject.toml",
            "Pipfile",
            "manage.py",
            "main.py",
            "app.py",
        ]
    }

    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>> {
        let requirements_txt = ctx.read_manifest("requirements.txt")?;
        let pyproject_text = ctx.read_manifest("pyproject.toml")?;
        let pipfile_text = ctx.read_manifest("Pipfile")?;
        let pyproject = match &pyproject_text {
            Some(t) => Some(
                t.parse::<toml::Table>()
                    .map_err(|e| Error::manifest(ctx.rel("pyproject.toml"), e.message()))?,
            ),
            None => None,
        };
        let pipfile = match &pipfile_text {
            Some(t) => Some(
                t.parse::<toml::Table>()
                    .map_err(|e| Error::manifest(ctx.rel("Pipfile"), e.message()))?,
            ),
            None => None,
        };
        let has_manage = ctx.is_file("manage.py");
        let entry = ["main.py", "app.py", "server.py", "__main__.py"]
            .into_iter()
            .find(|f| ctx.is_file(f));
        if requirements_txt.is_none()
            && pyproject.is_none()
            && pipfile.is_none()
            && !has_manage
            && entry.is_none()
            && !ctx.is_file("setup.py")
        {
            return Ok(None);
        }
        let mut reasons = Vec::new();
        let mut warnings = Vec::new();
        let mut build_warnings = Vec::new();

        // Dependencies from every source we understand.
        let mut reqs = Requirements {
            names: Vec::new(),
            raw: Vec::new(),
        };
        let mut add = |spec: &str| {
            let spec = spec.trim();
            if spec.is_empty() || spec.starts_with('#') || spec.starts_with('-') {
                return;
            }
            let end = spec
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .unwrap_or(spec.len());
            let name = normalize_package(&spec[..end]);
            if !name.is_empty() {
                reqs.raw.push(spec.to_ascii_lowercase().replace(' ', ""));
                reqs.names.push(name);
            }
        };
        if let Some(t) = &requirements_txt {
            t.lines().for_each(&mut add);
        }
        if let Some(p) = &pyproject {
            if let Some(list) = p
                .get("project")
                .and_then(|p| p.get("dependencies"))
                .and_then(|d| d.as_array())
            {
                list.iter().filter_map(|v| v.as_str()).for_each(&mut add);
            }
            if let Some(table) = p
                .get("tool")
                .and_then(|t| t.get("poetry"))
                .and_then(|t| t.get("dependencies"))
                .and_then(|d| d.as_table())
            {
                table.keys().filter(|k| *k != "python").for_each(|k| add(k));
            }
        }
        if let Some(table) = pipfile
            .as_ref()
            .and_then(|p| p.get("packages"))
            .and_then(|d| d.as_table())
        {
            table.keys().for_each(|k| add(k));
        }
        let dep_source = if requirements_txt.is_some() {
            "requirements.txt"
        } else if pyproject.is_some() {
            "pyproject.toml"
        } else {
            "Pipfile"
        };

        // Framework.
        let forced = ctx.forced.filter(|f| f.language() == Language::Python);
        let framework = match forced {
            Some(f) => {
                reasons.push(format!("framework={f} because preview-config.yml says so"));
                Some(f)
            }
            None => [
                ("django", Framework::Django),
                ("fastapi", Framework::Fastapi),
                ("flask", Framework::Flask),
            ]
            .into_iter()
            .find(|(dep, _)| reqs.has(dep))
            .map(|(dep, f)| {
                reasons.push(format!(
                    "framework={f} because {} lists {dep}",
                    ctx.show(dep_source)
                ));
                f
            }),
        };

        // Package manager.
        let has_poetry_section = pyproject
            .as_ref()
            .and_then(|p| p.get("tool"))
            .and_then(|t| t.get("poetry"))
            .is_some();
        let (pm, pm_reason) = if ctx.is_file("uv.lock") {
            (PackageManager::Uv, format!("of {}", ctx.show("uv.lock")))
        } else if ctx.is_file("poetry.lock") {
            (
                PackageManager::Poetry,
                format!("of {}", ctx.show("poetry.lock")),
            )
        } else if has_poetry_section && requirements_txt.is_none() {
            (
                PackageManager::Poetry,
                "pyproject.toml has [tool.poetry]".to_owned(),
            )
        } else if pipfile.is_some() && requirements_txt.is_none() {
            (
                PackageManager::Pipenv,
                format!("of {}", ctx.show("Pipfile")),
            )
        } else if requirements_txt.is_some() {
            (
                PackageManager::Pip,
                format!("of {}", ctx.show("requirements.txt")),
            )
        } else if pyproject.is_some() {
            (
                PackageManager::Pip,
                "pyproject.toml has no lockfile beside it".to_owned(),
            )
        } else {
            (
                PackageManager::Pip,
                "there is no dependency file".to_owned(),
            )
        };
        reasons.push(format!("package_manager={pm} because {pm_reason}"));
        let mut recipe = python_recipe(pm, ctx, requirements_txt.is_some(), pyproject.is_some());

        // Version.
        let mut language_version = None;
        if let Some(v) = ctx
            .peek_source(".python-version")
            .and_then(|t| first_version_line(&t))
        {
            reasons.push(format!(
                "language_version={v} from {}",
                ctx.show(".python-version")
            ));
            language_version = Some(v);
        } else if let Some(v) = ctx
            .peek_source("runtime.txt")
            .map(|t| t.trim().trim_start_matches("python-").to_owned())
            && !v.is_empty()
        {
            reasons.push(format!(
                "language_version={v} from {}",
                ctx.show("runtime.txt")
            ));
            language_version = Some(v);
        } else if let Some(v) = pyproject
            .as_ref()
            .and_then(|p| p.get("project"))
            .and_then(|p| p.get("requires-python"))
            .and_then(|v| v.as_str())
        {
            reasons.push(format!(
                "language_version={v} from pyproject.toml requires-python"
            ));
            language_version = Some(v.to_owned());
        } else if let Some(v) = pipfile
            .as_ref()
            .and_then(|p| p.get("requires"))
            .and_then(|r| r.get("python_version"))
            .and_then(|v| v.as_str())
        {
            reasons.push(format!("language_version={v} from Pipfile [requires]"));
            language_version = Some(v.to_owned());
        }

        // Start command.
        let bind = format!("0.0.0.0:{PORT}");
        let has_gunicorn = reqs.has("gunicorn");
        let has_uvicorn = reqs.has("uvicorn")
            || reqs
                .raw
                .iter()
                .any(|r| r.starts_with("fastapi[standard") || r.starts_with("fastapi[all"));
        let mut port = PORT;
        let mut port_env = Some("PORT".to_owned());
        let mut build_commands = Vec::new();
        let django_settings = ctx
            .peek_source("manage.py")
            .and_then(|s| django_settings_module(&s));
        let settings_file = django_settings.as_ref().and_then(|module| {
            [
                format!("{}.py", module.replace('.', "/")),
                format!("{}/__init__.py", module.replace('.', "/")),
            ]
            .into_iter()
            .find(|f| ctx.is_file(f))
        });
        let settings_source = settings_file.as_deref().and_then(|f| ctx.peek_source(f));
        if framework == Some(Framework::Django)
            && let Some(source) = &settings_source
            && let Some(line) = source
                .lines()
                .find(|l| l.trim_start().starts_with("ALLOWED_HOSTS"))
            && !line.contains('*')
            && !["environ", "getenv", "env("]
                .iter()
                .any(|e| line.contains(e))
        {
            warnings.push(format!(
                "{} sets {}: Django answers 400 to any other Host, such as the preview's; read it from the environment (PREVIEW_URL holds the preview's URL)",
                ctx.show(settings_file.as_deref().unwrap_or_default()),
                line.trim()
            ));
        }
        if framework == Some(Framework::Django)
            && let Some(file) = &settings_file
            && settings_source
                .as_deref()
                .is_some_and(|s| s.contains("STATIC_ROOT"))
        {
            // WhiteNoise's manifest storage (and any STATIC_ROOT server) needs the collected
            // files, or pages that use {% static %} answer 500.
            build_commands.push("python manage.py collectstatic --noinput".to_owned());
            reasons.push(format!(
                "build_commands=collectstatic because {} sets STATIC_ROOT",
                ctx.show(file)
            ));
        }
        // A packaged app (Flask's own examples) creates its app in its package's __init__.py.
        let package = pyproject
            .as_ref()
            .and_then(|p| p.get("project")?.get("name")?.as_str())
            .map(|name| normalize_package(name).replace('-', "_"))
            .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let start_argv: Vec<String> = match framework {
            Some(Framework::Django) => {
                let settings = django_settings.clone();
                let project = settings
                    .as_deref()
                    .and_then(|s| s.rsplit_once('.').map(|(p, _)| p.to_owned()))
                    .filter(|p| ctx.is_file(&format!("{}/wsgi.py", p.replace('.', "/"))));
                match (project, has_gunicorn) {
                    (Some(project), true) => {
                        let target = format!("{project}.wsgi:application");
                        reasons.push(format!(
                            "start_command=gunicorn {target} because manage.py sets DJANGO_SETTINGS_MODULE={}",
                            settings.unwrap_or_default()
                        ));
                        argv(&[
                            "gunicorn",
                            "--bind",
                            &bind,
                            "--workers",
                            "2",
                            "--access-logfile",
                            "-",
                            &target,
                        ])
                    }
                    (Some(_), false) | (None, _) => {
                        build_warnings.push(
                            "gunicorn is not a dependency (or no wsgi.py was found): the app runs on Django's development server; add gunicorn"
                                .to_owned(),
                        );
                        reasons.push(
                            "start_command=manage.py runserver because gunicorn is missing"
                                .to_owned(),
                        );
                        argv(&["python", "manage.py", "runserver", &bind, "--noreload"])
                    }
                }
            }
            Some(Framework::Fastapi) => {
                let target = find_app(ctx, "FastAPI(", package.as_deref())
                    .unwrap_or_else(|| "main:app".to_owned());
                reasons.push(format!(
                    "start_command=uvicorn {target} because it creates the FastAPI app"
                ));
                if !has_uvicorn {
                    build_warnings.push(
                        "uvicorn is not a dependency; add uvicorn (or fastapi[standard])"
                            .to_owned(),
                    );
                }
                argv(&[
                    "uvicorn",
                    &target,
                    "--host",
                    "0.0.0.0",
                    "--port",
                    &PORT.to_string(),
                    "--proxy-headers",
                    "--forwarded-allow-ips",
                    "*",
                ])
            }
            Some(Framework::Flask) => {
                let target = find_app(ctx, "Flask(", package.as_deref())
                    .unwrap_or_else(|| "app:app".to_owned());
                if has_gunicorn {
                    reasons.push(format!("start_command=gunicorn {target} because it creates the Flask app and gunicorn is a dependency"));
                    argv(&[
                        "gunicorn",
                        "--bind",
                        &bind,
                        "--workers",
                        "2",
                        "--access-logfile",
                        "-",
                        &target,
                    ])
                } else {
                    build_warnings.push("gunicorn is not a dependency: the app runs on Flask's development server; add gunicorn".to_owned());
                    reasons.push(format!(
                        "start_command=flask run for {target} because gunicorn is missing"
                    ));
                    argv(&[
                        "flask",
                        "--app",
                        &target,
                        "run",
                        "--host",
                        "0.0.0.0",
                        "--port",
                        &PORT.to_string(),
                    ])
                }
            }
            None if let Some(file) = reqs
                .has("streamlit")
                .then(|| {
                    [
                        "streamlit_app.py",
                        "app.py",
                        "main.py",
                        "Home.py",
                        "Hello.py",
                    ]
                    .into_iter()
                    .find(|f| ctx.peek_source(f).is_some_and(|s| s.contains("streamlit")))
                })
                .flatten() =>
            {
                reasons.push(format!(
                    "start_command=streamlit run {file} because it imports streamlit, a dependency"
                ));
                argv(&[
                    "streamlit",
                    "run",
                    file,
                    "--server.port",
                    &PORT.to_string(),
                    "--server.address",
                    "0.0.0.0",
                    "--server.headless",
                    "true",
                ])
            }
            _ => match entry {
                Some(file) => {
                    reasons.push(format!(
                        "start_command=python {file} because {} exists",
                        ctx.show(file)
                    ));
                    if let Some(source) = ctx.peek_source(file) {
                        if let Some(p) = hard_coded_port(&source, &["PORT"]) {
                            reasons
                                .push(format!("port={p} because {} listens on it", ctx.show(file)));
                            port = p;
                            port_env = None;
                        } else if source.contains("PORT") {
                            reasons.push(format!(
                                "port={PORT} via PORT, which {} reads",
                                ctx.show(file)
                            ));
                        }
                    }
                    argv(&["python", file])
                }
                // A packaged app: the console script its pyproject declares, once the project
                // itself is installed into the virtualenv.
                None => match pyproject.as_ref().and_then(project_script) {
                    Some((script, table)) => {
                        reasons.push(format!(
                            "start_command={script} because pyproject.toml declares it in {table}"
                        ));
                        if let Some(install) = install_project(pm)
                            && recipe.install_project.is_empty()
                        {
                            recipe.install_project = vec![install.to_owned()];
                        }
                        vec![script]
                    }
                    None => Vec::new(),
                },
            },
        };
        if port_env.is_some() && !reasons.iter().any(|r| r.starts_with("port=")) {
            reasons.push(format!("port={PORT} because the start command binds it"));
        }

        let strength = match (framework, start_argv.is_empty()) {
            (_, true) => Strength::Tooling,
            (Some(_), false) => Strength::Framework,
            (None, false) => Strength::Plain,
        };

        // Services.
        let mut database = None;
        for (dep, db) in [
            ("psycopg", Database::Postgres),
            ("psycopg2", Database::Postgres),
            ("psycopg2-binary", Database::Postgres),
            ("asyncpg", Database::Postgres),
            ("pg8000", Database::Postgres),
            ("pymysql", Database::Mysql),
            ("mysqlclient", Database::Mysql),
            ("mysql-connector-python", Database::Mysql),
            ("aiomysql", Database::Mysql),
            ("pymongo", Database::Mongodb),
            ("motor", Database::Mongodb),
            ("mongoengine", Database::Mongodb),
            ("beanie", Database::Mongodb),
        ] {
            if reqs.has(dep) {
                let with = if reqs.has("sqlalchemy") {
                    " (with sqlalchemy)"
                } else {
                    ""
                };
                reasons.push(format!(
                    "database={db} because {} lists {dep}{with}",
                    ctx.show(dep_source)
                ));
                database = Some(db);
                break;
            }
        }
        let mut startup_commands = Vec::new();
        if framework == Some(Framework::Django) && database.is_some() {
            startup_commands.push("python manage.py migrate --noinput".to_owned());
            reasons
                .push("startup_commands=migrate because the Django app has a database".to_owned());
        }
        let mut extra_services = Vec::new();
        if let Some(dep) = ["redis", "rq", "django-redis"]
            .into_iter()
            .find(|d| reqs.has(d))
        {
            extra_services.push(ExtraService::Redis);
            reasons.push(format!(
                "extra_services=redis because {} lists {dep}",
                ctx.show(dep_source)
            ));
        }

        let evidence = [dep_source, "manage.py"]
            .into_iter()
            .chain(entry)
            .find(|f| ctx.is_file(f))
            .map(|f| ctx.show(f))
            .unwrap_or_else(|| ctx.show("setup.py"));

        Ok(Some(Detection {
            language: Language::Python,
            framework,
            strength,
            evidence,
            language_version,
            package_manager: Some(pm),
            build_commands,
            start_argv,
            startup_commands,
            port,
            port_env,
            database,
            extra_services,
            context_dir: None,
            recipe: Recipe::Python(recipe),
            reasons,
            warnings,
            build_warnings,
        }))
    }
}

/// The first console script of `[project.scripts]` or `[tool.poetry.scripts]`, and which.
fn project_script(pyproject: &toml::Table) -> Option<(String, &'static str)> {
    let project = pyproject
        .get("project")
        .and_then(|p| p.get("scripts"))
        .and_then(|s| s.as_table())
        .map(|t| (t, "[project.scripts]"));
    let poetry = pyproject
        .get("tool")
        .and_then(|t| t.get("poetry"))
        .and_then(|p| p.get("scripts"))
        .and_then(|s| s.as_table())
        .map(|t| (t, "[tool.poetry.scripts]"));
    let (table, name) = project.or(poetry)?;
    let script = table.keys().next()?;
    script
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        .then(|| (script.clone(), name))
}

/// Installs the project itself (its console scripts) after the sources are copied.
fn install_project(pm: PackageManager) -> Option<&'static str> {
    match pm {
        PackageManager::Uv => {
            Some("UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --frozen --no-dev --no-editable")
        }
        PackageManager::Poetry => {
            Some("POETRY_VIRTUALENVS_CREATE=false poetry install --only main --no-interaction")
        }
        PackageManager::Pip => Some("pip install --no-cache-dir --no-deps ."),
        _ => None,
    }
}

/// The first version in a `.python-version`: pyenv allows comments, blank lines and several
/// versions, one a line.
fn first_version_line(text: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")` → `mysite.settings`.
fn django_settings_module(manage_py: &str) -> Option<String> {
    let at = manage_py.find("DJANGO_SETTINGS_MODULE")?;
    let rest = &manage_py[at + "DJANGO_SETTINGS_MODULE".len()..];
    let rest = rest.trim_start_matches(['"', '\'']).trim_start();
    let rest = rest.strip_prefix(',')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value: String = rest[1..].chars().take_while(|c| *c != quote).collect();
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        .then_some(value)
        .filter(|v| !v.is_empty())
}

/// Finds `NAME = Ctor(` in the usual files, then in `package`'s `__init__.py`, and returns
/// `module:NAME`.
fn find_app(ctx: &Ctx, ctor: &str, package: Option<&str>) -> Option<String> {
    let package_files = package
        .into_iter()
        .flat_map(|p| [format!("{p}/__init__.py"), format!("src/{p}/__init__.py")]);
    for file in APP_FILES
        .map(str::to_owned)
        .into_iter()
        .chain(package_files)
    {
        let file = file.as_str();
        let Some(source) = ctx.peek_source(file) else {
            continue;
        };
        for line in source.lines() {
            let Some((lhs, rhs)) = line.split_once('=') else {
                continue;
            };
            let name = lhs.trim();
            if rhs.trim_start().starts_with(ctor)
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !line.starts_with(char::is_whitespace)
            {
                let module = file
                    .trim_end_matches(".py")
                    .trim_end_matches("/__init__")
                    .replace('/', ".");
                let module = module
                    .strip_prefix("src.")
                    .map(str::to_owned)
                    .unwrap_or(module);
                return Some(format!("{module}:{name}"));
            }
        }
    }
    None
}

fn python_recipe(
    pm: PackageManager,
    ctx: &Ctx,
    has_requirements: bool,
    has_pyproject: bool,
) -> PythonRecipe {
    let pip = "pip install --no-cache-dir";
    match pm {
        PackageManager::Uv => PythonRecipe {
            manifests: vec!["pyproject.toml".into(), "uv.lock".into()],
            install: vec![
                format!("{pip} uv=={UV_VERSION}"),
                "UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --frozen --no-dev --no-install-project"
                    .into(),
            ],
            install_project: Vec::new(),
        },
        PackageManager::Poetry => {
            let mut manifests = vec!["pyproject.toml".to_owned()];
            if ctx.is_file("poetry.lock") {
                manifests.push("poetry.lock".into());
            }
            PythonRecipe {
                manifests,
                install: vec![
                    format!("{pip} poetry=={POETRY_VERSION}"),
                    "POETRY_VIRTUALENVS_CREATE=false poetry install --only main --no-root --no-interaction".into(),
                ],
                install_project: Vec::new(),
            }
        }
        PackageManager::Pipenv => {
            let mut manifests = vec!["Pipfile".to_owned()];
            if ctx.is_file("Pipfile.lock") {
                manifests.push("Pipfile.lock".into());
            }
            PythonRecipe {
                manifests,
                install: vec![
                    format!("{pip} pipenv=={PIPENV_VERSION}"),
                    "pipenv requirements > /tmp/requirements.txt".into(),
                    format!("{pip} -r /tmp/requirements.txt"),
                ],
                install_project: Vec::new(),
            }
        }
        _ if has_requirements => PythonRecipe {
            manifests: vec!["requirements.txt".into()],
            install: vec![format!("{pip} -r requirements.txt")],
            install_project: Vec::new(),
        },
        _ if has_pyproject => PythonRecipe {
            manifests: Vec::new(),
            install: Vec::new(),
            install_project: vec![format!("{pip} .")],
        },
        _ => PythonRecipe {
            manifests: Vec::new(),
            install: Vec::new(),
            install_project: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_version_files_with_comments() {
        assert_eq!(
            first_version_line("# pinned for CI\n\n3.11.4  # latest patch\n3.10\n").as_deref(),
            Some("3.11.4")
        );
        assert_eq!(first_version_line("# only a comment\n"), None);
    }

    #[test]
    fn django_settings() {
        let manage = "import os\ndef main():\n    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n";
        assert_eq!(
            django_settings_module(manage).as_deref(),
            Some("mysite.settings")
        );
        let manage = "os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"a.b; rm\")";
        assert_eq!(django_settings_module(manage), None);
    }
}
