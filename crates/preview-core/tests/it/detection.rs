//! Detection details on small generated trees: package managers, versions, databases, services,
//! overrides from preview-config.yml, and what they do to the rendered files.

use std::path::Path;

use preview_core::model::{
    Database, DockerfileSource, ExtraService, Framework, Language, PackageManager, Recipe,
};
use preview_core::render::render;

use crate::harness::snapshot_input;

/// A tree of files: `(path, content)`; parents are created.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn plan(dir: &Path) -> preview_core::model::Plan {
    preview_core::plan(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .plan
}

fn error(dir: &Path) -> String {
    preview_core::plan(dir).unwrap_err().to_string()
}

/// Files of a generated tree.
type Files<'a> = &'a [(&'a str, &'a str)];

const SERVER: &str = "require('http').createServer(() => {}).listen(process.env.PORT);";

#[test]
fn node_package_managers_and_versions() {
    let cases: &[(Files, PackageManager, Option<&str>)] = &[
        (&[("pnpm-lock.yaml", "")], PackageManager::Pnpm, None),
        (&[("yarn.lock", "")], PackageManager::Yarn, None),
        (&[("bun.lockb", "")], PackageManager::Bun, None),
        (
            &[("package-lock.json", "{}"), (".node-version", "20.11.1\n")],
            PackageManager::Npm,
            Some("20.11.1"),
        ),
    ];
    for (extra, pm, version) in cases {
        let mut files = vec![
            ("package.json", r#"{"scripts":{"start":"node server.js"}}"#),
            ("server.js", SERVER),
        ];
        files.extend_from_slice(extra);
        let dir = tree(&files);
        let p = plan(dir.path());
        assert_eq!(p.package_manager, Some(*pm), "{extra:?}");
        assert_eq!(p.language_version.as_deref(), *version);
    }
    let dir = tree(&[
        (
            "package.json",
            r#"{"packageManager":"pnpm@8.15.4","scripts":{"start":"node server.js","build":"tsc"}}"#,
        ),
        ("server.js", SERVER),
        ("package-lock.json", "{}"),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.package_manager, Some(PackageManager::Pnpm));
    assert_eq!(p.build_command.as_deref(), Some("pnpm run build"));
    let Some(Recipe::Node(r)) = &p.recipe else {
        panic!()
    };
    assert_eq!(r.setup.as_deref(), Some("npm install -g pnpm@8.15.4"));
}

#[test]
fn node_databases_and_services() {
    let cases = [
        (r#"{"pg":"8"}"#, Some(Database::Postgres), false),
        (
            r#"{"mysql2":"3","typeorm":"0.3"}"#,
            Some(Database::Mysql),
            false,
        ),
        (r#"{"typeorm":"0.3"}"#, Some(Database::Postgres), false),
        (
            r#"{"mongoose":"8","ioredis":"5"}"#,
            Some(Database::Mongodb),
            true,
        ),
        (r#"{"bullmq":"5"}"#, None, true),
    ];
    for (deps, db, redis) in cases {
        let pkg = format!(r#"{{"scripts":{{"start":"node server.js"}},"dependencies":{deps}}}"#);
        let dir = tree(&[("package.json", &pkg), ("server.js", SERVER)]);
        let p = plan(dir.path());
        assert_eq!(p.database, db, "{deps}");
        assert_eq!(
            p.extra_services.contains(&ExtraService::Redis),
            redis,
            "{deps}"
        );
    }
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node server.js"},"dependencies":{"@prisma/client":"5"}}"#,
        ),
        ("server.js", SERVER),
        (
            "prisma/schema.prisma",
            "datasource db {\n  provider = \"mysql\"\n  url = env(\"DATABASE_URL\")\n}\n",
        ),
    ]);
    assert_eq!(plan(dir.path()).database, Some(Database::Mysql));
}

#[test]
fn hard_coded_node_port_is_published() {
    let dir = tree(&[
        ("package.json", r#"{"main":"index.js"}"#),
        (
            "index.js",
            "require('http').createServer(() => {}).listen(4321);",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.port, 4321);
    assert_eq!(p.port_env, None);
}

#[test]
fn python_package_managers_versions_and_databases() {
    let app = "from fastapi import FastAPI\napp = FastAPI()\n";
    let cases: &[(Files, PackageManager, Option<&str>, Option<Database>)] = &[
        (
            &[
                (
                    "pyproject.toml",
                    "[project]\nname='x'\nrequires-python='>=3.11'\ndependencies=['fastapi','uvicorn','sqlalchemy','psycopg[binary]']\n",
                ),
                ("uv.lock", ""),
            ],
            PackageManager::Uv,
            Some(">=3.11"),
            Some(Database::Postgres),
        ),
        (
            &[
                (
                    "pyproject.toml",
                    "[tool.poetry.dependencies]\npython='^3.11'\nfastapi='*'\npymongo='*'\n",
                ),
                ("poetry.lock", ""),
            ],
            PackageManager::Poetry,
            None,
            Some(Database::Mongodb),
        ),
        (
            &[(
                "Pipfile",
                "[packages]\nfastapi='*'\npymysql='*'\n[requires]\npython_version='3.11'\n",
            )],
            PackageManager::Pipenv,
            Some("3.11"),
            Some(Database::Mysql),
        ),
        (
            &[
                (
                    "requirements.txt",
                    "fastapi==0.110\nuvicorn[standard]==0.29\nredis==5\n",
                ),
                ("runtime.txt", "python-3.11.9\n"),
            ],
            PackageManager::Pip,
            Some("3.11.9"),
            None,
        ),
    ];
    for (files, pm, version, db) in cases {
        let mut all = vec![("main.py", app)];
        all.extend_from_slice(files);
        let dir = tree(&all);
        let p = plan(dir.path());
        assert_eq!(p.framework, Some(Framework::Fastapi), "{files:?}");
        assert_eq!(p.package_manager, Some(*pm), "{files:?}");
        assert_eq!(p.language_version.as_deref(), *version, "{files:?}");
        assert_eq!(p.database, *db, "{files:?}");
        assert_eq!(p.start_argv[1], "main:app");
    }
}

/// Flask's own examples (in its sdist) are packaged apps: `app = Flask(...)` in the
/// `__init__.py` of the package that pyproject.toml names, no app.py.
#[test]
fn flask_app_in_the_projects_own_package() {
    let pyproject = "[project]\nname = \"js-Example\"\ndependencies = [\"flask\"]\n";
    for init in ["js_example/__init__.py", "src/js_example/__init__.py"] {
        let dir = tree(&[
            ("pyproject.toml", pyproject),
            (init, "from flask import Flask\n\napp = Flask(__name__)\n"),
        ]);
        let p = plan(dir.path());
        assert_eq!(
            p.start_argv[..4],
            ["flask", "--app", "js_example:app", "run"],
            "{init}"
        );
    }
    // A name that is no module is not looked up.
    let dir = tree(&[
        (
            "pyproject.toml",
            "[project]\nname = \"../x\"\ndependencies = [\"flask\"]\n",
        ),
        (
            "x/__init__.py",
            "from flask import Flask\napp = Flask(__name__)\n",
        ),
    ]);
    assert_eq!(plan(dir.path()).start_argv[2], "app:app");
}

#[test]
fn fastapi_app_in_a_package_and_flask_without_gunicorn() {
    let dir = tree(&[
        ("requirements.txt", "fastapi\nuvicorn\n"),
        ("app/__init__.py", ""),
        (
            "app/main.py",
            "from fastapi import FastAPI\napi = FastAPI(title='x')\n",
        ),
    ]);
    assert_eq!(plan(dir.path()).start_argv[1], "app.main:api");
    let dir = tree(&[
        ("requirements.txt", "flask\n"),
        (
            "wsgi.py",
            "from flask import Flask\nserver = Flask(__name__)\n",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv[..4], ["flask", "--app", "wsgi:server", "run"]);
    assert!(
        p.warnings.iter().any(|w| w.contains("gunicorn")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn go_databases_versions_and_a_chosen_command() {
    let dir = tree(&[
        (
            "go.mod",
            "module example.com/svc\n\ngo 1.23\n\nrequire (\n\tgithub.com/jackc/pgx/v5 v5.5.0\n\tgithub.com/redis/go-redis/v9 v9.0.0\n)\n",
        ),
        ("go.sum", ""),
        ("cmd/svc/main.go", "package main\nfunc main() {}\n"),
        ("cmd/tool/main.go", "package main\nfunc main() {}\n"),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.database, Some(Database::Postgres));
    assert_eq!(p.extra_services, [ExtraService::Redis]);
    let Some(Recipe::Go(r)) = &p.recipe else {
        panic!()
    };
    assert_eq!(r.package, "./cmd/svc", "named after the module");
    assert!(r.has_go_sum && r.has_requires);
    assert_eq!(
        p.base_image.as_deref(),
        Some("golang:1.23-bookworm"),
        "the go directive picks the image"
    );

    std::fs::write(
        dir.path().join("preview-config.yml"),
        "app_path: cmd/tool\n",
    )
    .unwrap();
    let p = plan(dir.path());
    assert_eq!(p.app_dir, "cmd/tool");
    assert_eq!(p.context_dir, ".");
    let Some(Recipe::Go(r)) = &p.recipe else {
        panic!()
    };
    assert_eq!(r.package, "./cmd/tool");
}

#[test]
fn rust_workspace_member_chosen_by_app_path() {
    let dir = tree(&[
        ("Cargo.toml", "[workspace]\nmembers = ['api', 'worker']\n"),
        ("rust-toolchain.toml", "[toolchain]\nchannel = '1.80'\n"),
        (
            "api/Cargo.toml",
            "[package]\nname='api'\nversion='0.1.0'\n[dependencies]\nsqlx = { version = '0.7', features = ['postgres'] }\n",
        ),
        ("api/src/main.rs", "fn main() {}"),
        (
            "worker/Cargo.toml",
            "[package]\nname='worker'\nversion='0.1.0'\n",
        ),
        ("worker/src/main.rs", "fn main() {}"),
    ]);
    assert!(
        error(dir.path()).contains("several Rust binaries"),
        "{}",
        error(dir.path())
    );
    std::fs::write(dir.path().join("preview-config.yml"), "app_path: api\n").unwrap();
    let p = plan(dir.path());
    assert_eq!((p.app_dir.as_str(), p.context_dir.as_str()), ("api", "."));
    assert_eq!(p.database, Some(Database::Postgres));
    assert_eq!(p.language_version.as_deref(), Some("1.80"));
    let Some(Recipe::Rust(r)) = &p.recipe else {
        panic!()
    };
    assert_eq!(
        (r.package.as_deref(), r.binary.as_str(), r.locked),
        (Some("api"), "api", false)
    );
}

#[test]
fn php_databases_from_composer() {
    let dir = tree(&[
        (
            "composer.json",
            r#"{"require":{"php":">=8.1","ext-pdo_mysql":"*","predis/predis":"^2"}}"#,
        ),
        ("index.php", "<?php echo 'ok';"),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.language, Some(Language::Php));
    assert_eq!(p.database, Some(Database::Mysql));
    assert_eq!(p.extra_services, [ExtraService::Redis]);
    assert_eq!(p.start_argv, ["php", "-S", "0.0.0.0:8000", "-t", "."]);
    let rendered = render(
        &preview_core::plan(dir.path()).unwrap(),
        &snapshot_input("php-db"),
    )
    .unwrap();
    let dockerfile = rendered.dockerfile.unwrap();
    assert!(
        dockerfile.contains("docker-php-ext-install pdo_mysql"),
        "{dockerfile}"
    );
    assert!(
        rendered.compose.contains("mysqladmin"),
        "{}",
        rendered.compose
    );
}

#[test]
fn config_overrides_detection_and_reaches_the_files() {
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node server.js"},"dependencies":{"express":"4"}}"#,
        ),
        ("server.js", SERVER),
        ("package-lock.json", "{}"),
        ("preview.env", "FROM_FILE=1\nSHARED=file\n"),
        (
            "preview-config.yml",
            "database: postgres\nextra_services: [redis]\napp_port: 4000\napp_port_env: APP_PORT\n\
             health_check_path: /ready\nbuild_commands: [\"npm run build:api\"]\n\
             startup_commands:\n  - npx prisma migrate deploy\n  - node seed.js --if-empty\n\
             env_file: preview.env\nenv:\n  SHARED: config\n  PRICE: \"$5\"\n",
        ),
    ]);
    let planned = preview_core::plan(dir.path()).unwrap();
    let p = &planned.plan;
    assert_eq!(
        (p.port, p.port_env.as_deref(), p.health_path.as_str()),
        (4000, Some("APP_PORT"), "/ready")
    );
    assert_eq!(p.database, Some(Database::Postgres));
    assert_eq!(p.env["SHARED"], "config", "env wins over env_file");
    assert_eq!(p.env["FROM_FILE"], "1");
    let rendered = render(&planned, &snapshot_input("overrides")).unwrap();
    let compose = &rendered.compose;
    assert!(
        compose.contains("PRICE: \"$$5\""),
        "`$` is escaped for compose: {compose}"
    );
    assert!(compose.contains("APP_PORT: \"4000\""), "{compose}");
    assert!(
        compose.contains("DATABASE_URL: \"postgresql://preview:"),
        "{compose}"
    );
    assert!(
        compose.contains("REDIS_URL: \"redis://redis:6379\""),
        "{compose}"
    );
    assert!(
        compose.contains("npx prisma migrate deploy\\nnode seed.js --if-empty\\nexec \\\"$$@\\\""),
        "{compose}"
    );
    assert!(compose.contains("condition: service_healthy"), "{compose}");
    let dockerfile = rendered.dockerfile.unwrap();
    assert!(
        dockerfile.contains(r#"RUN ["sh", "-c", "npm run build:api"]"#),
        "{dockerfile}"
    );
    assert!(dockerfile.contains("EXPOSE 4000"), "{dockerfile}");
}

#[test]
fn repo_dockerfile_key_and_its_limits() {
    let dir = tree(&[
        ("main.py", "print('x')"),
        (
            "docker/preview.Dockerfile",
            "FROM python:3.12-slim-bookworm\nEXPOSE 7000\n",
        ),
        (
            "preview-config.yml",
            "dockerfile: docker/preview.Dockerfile\n",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.dockerfile, DockerfileSource::Repo);
    assert_eq!(
        p.dockerfile_path.as_deref(),
        Some("docker/preview.Dockerfile")
    );
    assert_eq!(p.port, 7000);
    assert_eq!(p.start_command, None, "the image's own CMD");

    std::fs::write(
        dir.path().join("preview-config.yml"),
        "dockerfile: docker/preview.Dockerfile\nbuild_commands: [make]\n",
    )
    .unwrap();
    assert!(
        error(dir.path()).contains("key `build_commands`"),
        "{}",
        error(dir.path())
    );
    std::fs::write(
        dir.path().join("preview-config.yml"),
        "dockerfile: docker/preview.Dockerfile\nstartup_commands: [migrate]\n",
    )
    .unwrap();
    assert!(
        error(dir.path()).contains("need app_entrypoint"),
        "{}",
        error(dir.path())
    );
    std::fs::write(
        dir.path().join("preview-config.yml"),
        "dockerfile: nope/Dockerfile\n",
    )
    .unwrap();
    assert!(
        error(dir.path()).starts_with("preview-config.yml:1: key `dockerfile`"),
        "{}",
        error(dir.path())
    );
}

#[test]
fn nothing_to_deploy_is_a_clear_error() {
    let dir = tree(&[("README.md", "hello")]);
    assert!(
        error(dir.path()).starts_with("no app found in the repository root"),
        "{}",
        error(dir.path())
    );
    let dir = tree(&[("mix.exs", "")]);
    assert_eq!(error(dir.path()), "unsupported: elixir (found mix.exs)");
    let dir = tree(&[("App.csproj", "")]);
    assert_eq!(
        error(dir.path()),
        "unsupported: dotnet (c#) (found App.csproj)"
    );
    let dir = tree(&[("package.json", r#"{"devDependencies":{"prettier":"3"}}"#)]);
    assert!(
        error(dir.path()).contains("nothing to start; set app_entrypoint"),
        "{}",
        error(dir.path())
    );
}

/// Conventions upstream starters rely on, as Heroku, nixpacks and railpack honour them.
#[test]
fn procfile_web_and_release_start_the_app() {
    let dir = tree(&[
        ("requirements.txt", "flask\ngunicorn\n"),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
        (
            "Procfile",
            "release: python seed.py\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\n",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(
        p.start_argv,
        ["sh", "-c", "exec gunicorn app:app --bind 0.0.0.0:$PORT"]
    );
    assert_eq!(p.startup_commands, ["python seed.py"]);
    assert_eq!(p.port_env.as_deref(), Some("PORT"));
    assert!(p.reasons.iter().any(|r| r.contains("from Procfile web:")));

    // A Node package with nothing else to start is started by its Procfile.
    let dir = tree(&[
        (
            "package.json",
            r#"{"name": "x", "scripts": {"build": "tsc"}}"#,
        ),
        ("Procfile", "web: node dist/server.js\n"),
    ]);
    assert_eq!(plan(dir.path()).start_argv, ["node", "dist/server.js"]);
}

#[test]
fn node_main_and_entry_files_without_a_start_script() {
    // `main` is what Node runs, even when it does not call .listen itself.
    let dir = tree(&[
        ("package.json", r#"{"name": "x", "main": "src/index.js"}"#),
        ("src/index.js", "require('./server');\n"),
    ]);
    assert_eq!(plan(dir.path()).start_argv, ["node", "src/index.js"]);
    // A main produced by the build.
    let dir = tree(&[(
        "package.json",
        r#"{"name": "x", "main": "dist/index.js", "scripts": {"build": "tsc"}}"#,
    )]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["node", "dist/index.js"]);
    assert_eq!(p.build_commands, ["npm run build"]);
}

#[test]
fn django_collects_static_files_and_migrates_its_database() {
    let files: Files = &[
        (
            "requirements.txt",
            "django\ngunicorn\nwhitenoise\npsycopg2-binary\n",
        ),
        (
            "manage.py",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site1.settings')\n",
        ),
        ("site1/wsgi.py", ""),
        (
            "site1/settings.py",
            "STATIC_ROOT = BASE_DIR / 'staticfiles'\n",
        ),
    ];
    let p = plan(tree(files).path());
    assert_eq!(
        p.build_commands,
        ["python manage.py collectstatic --noinput"]
    );
    assert_eq!(p.startup_commands, ["python manage.py migrate --noinput"]);
    let rendered = render(
        &preview_core::plan(tree(files).path()).unwrap(),
        &snapshot_input("django"),
    )
    .unwrap();
    assert!(
        rendered
            .dockerfile
            .unwrap()
            .contains(r#"RUN ["sh", "-c", "python manage.py collectstatic --noinput"]"#)
    );

    // Without STATIC_ROOT collectstatic would fail; without a database there is nothing to migrate.
    let dir = tree(&[
        ("requirements.txt", "django\n"),
        (
            "manage.py",
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site1.settings')\n",
        ),
        ("site1/settings.py", "DEBUG = False\n"),
    ]);
    let p = plan(dir.path());
    assert!(p.build_commands.is_empty() && p.startup_commands.is_empty());

    // startproject's ALLOWED_HOSTS = [] turns the preview's own Host away: say so.
    let settings = |line: &str| {
        let dir = tree(&[
            ("requirements.txt", "django\n"),
            (
                "manage.py",
                "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site1.settings')\n",
            ),
            ("site1/settings.py", line),
        ]);
        plan(dir.path()).warnings
    };
    assert!(
        settings("ALLOWED_HOSTS = []\n")
            .iter()
            .any(|w| w.contains("ALLOWED_HOSTS = []") && w.contains("400")),
        "{:?}",
        settings("ALLOWED_HOSTS = []\n")
    );
    let warns_about_hosts = |line: &str| settings(line).iter().any(|w| w.contains("ALLOWED_HOSTS"));
    assert!(!warns_about_hosts("ALLOWED_HOSTS = ['*']\n"));
    assert!(!warns_about_hosts(
        "ALLOWED_HOSTS = os.environ.get('HOSTS', '').split(',')\n"
    ));
}

#[test]
fn streamlit_apps_run_with_streamlit() {
    let dir = tree(&[
        ("requirements.txt", "streamlit\n"),
        (
            "streamlit_app.py",
            "import streamlit as st\nst.title('x')\n",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(&p.start_argv[..3], ["streamlit", "run", "streamlit_app.py"]);
    assert!(p.start_argv.contains(&"0.0.0.0".to_owned()));
}

#[test]
fn declared_runtime_versions_pick_the_base_image() {
    let cases: &[(Files, &str)] = &[
        (
            &[
                (
                    "package.json",
                    r#"{"engines": {"node": ">=18 <21"}, "main": "i.js"}"#,
                ),
                ("i.js", SERVER),
            ],
            "node:20-bookworm-slim",
        ),
        (
            &[
                ("package.json", r#"{"main": "i.js"}"#),
                ("i.js", SERVER),
                (".nvmrc", "lts/jod\n"),
            ],
            "node:22-bookworm-slim",
        ),
        (
            &[
                ("main.py", "print(1)\n"),
                (".python-version", "# pyenv allows comments\n\n3.10.4\n"),
            ],
            "python:3.10-slim-bookworm",
        ),
        (
            &[
                ("main.py", "print(1)\n"),
                (
                    "pyproject.toml",
                    "[project]\nname = \"x\"\nrequires-python = \">=3.10,<3.13\"\n",
                ),
            ],
            "python:3.12-slim-bookworm",
        ),
    ];
    for (files, image) in cases {
        let p = plan(tree(files).path());
        assert_eq!(
            p.base_image.as_deref(),
            Some(*image),
            "{files:?}: {:?}",
            p.reasons
        );
        assert!(
            p.language_version
                .as_deref()
                .is_some_and(|v| !v.contains('#'))
        );
    }
    // An unsupported version takes the nearest and says so.
    let p = plan(
        tree(&[
            (
                "package.json",
                r#"{"engines": {"node": "14.x"}, "main": "i.js"}"#,
            ),
            ("i.js", SERVER),
        ])
        .path(),
    );
    assert_eq!(p.base_image.as_deref(), Some("node:18-bookworm-slim"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("node 14.x is asked for")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn packaged_python_apps_start_their_console_script() {
    let dir = tree(&[
        (
            "pyproject.toml",
            "[project]\nname = \"svc\"\ndependencies = [\"httpx\"]\n[project.scripts]\nsvc-serve = \"svc.cli:main\"\n",
        ),
        ("uv.lock", "version = 1\n"),
        ("svc/cli.py", "def main(): pass\n"),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["svc-serve"]);
    let Some(Recipe::Python(r)) = &p.recipe else {
        panic!("{:?}", p.recipe)
    };
    assert!(
        r.install_project[0].contains("uv sync")
            && !r.install_project[0].contains("--no-install-project"),
        "the project itself is installed: {r:?}"
    );
}

#[test]
fn go_without_go_mod_and_rocket_ports_and_version_manager_pins() {
    let dir = tree(&[(
        "main.go",
        "package main\n\nimport \"net/http\"\n\nfunc main() { http.ListenAndServe(\":8080\", nil) }\n",
    )]);
    let p = plan(dir.path());
    assert_eq!(p.language, Some(Language::Go));
    let Some(Recipe::Go(r)) = &p.recipe else {
        panic!()
    };
    assert!(!r.has_go_mod);
    let dockerfile = render(
        &preview_core::plan(dir.path()).unwrap(),
        &snapshot_input("go"),
    )
    .unwrap()
    .dockerfile
    .unwrap();
    assert!(dockerfile.contains("RUN go mod init"), "{dockerfile}");
    assert!(!dockerfile.contains("COPY go.mod"), "{dockerfile}");

    let dir = tree(&[
        (
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\n\n[dependencies]\nrocket = \"0.5\"\n",
        ),
        ("src/main.rs", "fn main() {}\n"),
    ]);
    let planned = preview_core::plan(dir.path()).unwrap();
    assert_eq!(
        (planned.plan.port, planned.plan.port_env.as_deref()),
        (8000, Some("ROCKET_PORT"))
    );
    let compose = render(&planned, &snapshot_input("rust")).unwrap().compose;
    assert!(
        compose.contains("ROCKET_ADDRESS: \"0.0.0.0\"")
            || compose.contains("ROCKET_ADDRESS: 0.0.0.0"),
        "{compose}"
    );

    // asdf's and mise's pins win over the manifest, as the tool the developer runs.
    let dir = tree(&[
        ("go.mod", "module example.com/x\n\ngo 1.22\n"),
        ("main.go", "package main\nfunc main() {}\n"),
        ("mise.toml", "[tools]\ngo = \"1.24.2\"\n"),
    ]);
    assert_eq!(
        plan(dir.path()).base_image.as_deref(),
        Some("golang:1.24-bookworm")
    );
    let dir = tree(&[
        ("main.py", "print(1)\n"),
        (".tool-versions", "python 3.11.9\n"),
    ]);
    assert_eq!(
        plan(dir.path()).base_image.as_deref(),
        Some("python:3.11-slim-bookworm")
    );
}

fn node_recipe(p: &preview_core::model::Plan) -> &preview_core::model::NodeRecipe {
    match &p.recipe {
        Some(Recipe::Node(r)) => r,
        other => panic!("not a Node recipe: {other:?}"),
    }
}

fn dockerfile(dir: &Path) -> String {
    let planned = preview_core::plan(dir).unwrap();
    render(&planned, &snapshot_input("tree"))
        .unwrap()
        .dockerfile
        .unwrap()
}

const STATIC_SERVER: &str = "/usr/local/lib/preview-static-server.mjs";

#[test]
fn static_front_ends_serve_their_build_output() {
    let angular_json = |builder: &str| {
        format!(
            r#"{{"projects": {{"shop": {{"projectType": "application", "architect": {{"build": {{"builder": "{builder}", "options": {{"outputPath": "dist/shop"}}}}}}}}}}}}"#
        )
    };
    let app_builder = angular_json("@angular-devkit/build-angular:application");
    let browser_builder = angular_json("@angular-devkit/build-angular:browser");
    let cases: &[(Files, Framework, &str)] = &[
        (
            &[(
                "package.json",
                r#"{"scripts": {"build": "vite build"}, "devDependencies": {"vite": "5"}}"#,
            )],
            Framework::Vite,
            "dist",
        ),
        (
            &[
                ("package.json", r#"{"devDependencies": {"vite": "5"}}"#),
                (
                    "vite.config.ts",
                    "export default { build: { outDir: 'www' } };",
                ),
            ],
            Framework::Vite,
            "www",
        ),
        (
            &[(
                "package.json",
                r#"{"scripts": {"start": "react-scripts start", "build": "react-scripts build"}, "dependencies": {"react-scripts": "5"}}"#,
            )],
            Framework::Cra,
            "build",
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"name": "shop", "scripts": {"build": "ng build"}, "dependencies": {"@angular/core": "18"}}"#,
                ),
                ("angular.json", &app_builder),
            ],
            Framework::Angular,
            "dist/shop/browser",
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "ng build"}, "dependencies": {"@angular/core": "15"}}"#,
                ),
                ("angular.json", &browser_builder),
            ],
            Framework::Angular,
            "dist/shop",
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "astro build"}, "dependencies": {"astro": "5"}}"#,
                ),
                ("astro.config.mjs", "export default defineConfig({});"),
            ],
            Framework::Astro,
            "dist",
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "vite build"}, "devDependencies": {"@sveltejs/kit": "2", "@sveltejs/adapter-static": "3"}}"#,
                ),
                (
                    "svelte.config.js",
                    "import adapter from '@sveltejs/adapter-static';\nexport default { kit: { adapter: adapter({ fallback: '200.html' }) } };",
                ),
            ],
            Framework::Sveltekit,
            "build",
        ),
        (
            &[(
                "package.json",
                r#"{"scripts": {"build": "nuxt generate"}, "dependencies": {"nuxt": "3"}}"#,
            )],
            Framework::Nuxt,
            ".output/public",
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "react-router build"}, "devDependencies": {"@react-router/dev": "7"}}"#,
                ),
                ("react-router.config.ts", "export default { ssr: false };"),
            ],
            Framework::ReactRouter,
            "build/client",
        ),
        (&[("index.html", "<h1>hi</h1>")], Framework::Static, "."),
    ];
    for (files, framework, root) in cases {
        let dir = tree(files);
        let p = plan(dir.path());
        assert_eq!(p.framework, Some(*framework), "{files:?}");
        assert_eq!(p.start_argv, ["node", STATIC_SERVER, root], "{files:?}");
        assert_eq!((p.port, p.port_env.as_deref()), (8080, Some("PORT")));
        assert_eq!(node_recipe(&p).static_root.as_deref(), Some(*root));
        assert!(
            p.reasons
                .iter()
                .any(|r| r.starts_with("start_command=the built-in static server on")),
            "{:?}",
            p.reasons
        );
        let d = dockerfile(dir.path());
        assert!(d.contains("RUN [\"node\", \"-e\", \"require('fs').writeFileSync"));
        if *framework == Framework::Static {
            assert!(!d.contains("AS build"), "{d}");
            assert!(d.contains("COPY --chown=10001:10001 . ."), "{d}");
        } else {
            assert!(!p.build_commands.is_empty(), "{files:?}");
            // Only the output: no node_modules, no prune.
            assert!(
                d.contains(&format!(
                    "COPY --from=build --chown=10001:10001 /app/{root} /app/{root}"
                )),
                "{d}"
            );
            assert!(!d.contains("prune"), "{d}");
        }
    }

    // A Vite app without a build script gets Vite's build.
    let dir = tree(&[("package.json", r#"{"devDependencies": {"vite": "5"}}"#)]);
    assert_eq!(
        plan(dir.path()).build_commands,
        ["node_modules/.bin/vite build"]
    );
    // A package.json with only tooling beside an index.html is a static site too.
    let dir = tree(&[
        ("package.json", r#"{"devDependencies": {"prettier": "3"}}"#),
        ("index.html", "<h1>hi</h1>"),
    ]);
    assert_eq!(plan(dir.path()).start_argv, ["node", STATIC_SERVER, "."]);
    // An index.html never outranks an app of another language beside it.
    let dir = tree(&[
        ("index.html", "<h1>hi</h1>"),
        ("requirements.txt", "flask\n"),
        ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
    ]);
    assert_eq!(plan(dir.path()).language, Some(Language::Python));
    // A Vite front end beside an Express server is the server's.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"start": "node server.js", "build": "vite build"}, "dependencies": {"express": "4"}, "devDependencies": {"vite": "5"}}"#,
        ),
        ("server.js", SERVER),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.framework, Some(Framework::Express));
    assert_eq!(p.start_argv, ["node", "server.js"]);
}

#[test]
fn node_ssr_frameworks_start_their_servers() {
    // (files, framework, start, port)
    let cases: &[(Files, Framework, &[&str], u16)] = &[
        (
            &[(
                "package.json",
                r#"{"scripts": {"build": "nuxt build"}, "dependencies": {"nuxt": "3"}}"#,
            )],
            Framework::Nuxt,
            &["node", ".output/server/index.mjs"],
            3000,
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "vite build"}, "devDependencies": {"@sveltejs/kit": "2", "@sveltejs/adapter-node": "5"}}"#,
                ),
                (
                    "svelte.config.js",
                    "import adapter from '@sveltejs/adapter-node';\nexport default { kit: { adapter: adapter({ out: 'server' }) } };",
                ),
            ],
            Framework::Sveltekit,
            &["node", "server"],
            3000,
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "astro build"}, "dependencies": {"astro": "5", "@astrojs/node": "9"}}"#,
                ),
                (
                    "astro.config.mjs",
                    "import node from '@astrojs/node';\nexport default { output: 'server', adapter: node({ mode: 'standalone' }) };",
                ),
            ],
            Framework::Astro,
            &["node", "dist/server/entry.mjs"],
            4321,
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "remix vite:build", "start": "remix-serve ./build/server/index.js"}, "dependencies": {"@remix-run/node": "2", "@remix-run/serve": "2"}}"#,
                ),
                ("vite.config.ts", "export default {};"),
            ],
            Framework::Remix,
            &["node_modules/.bin/remix-serve", "build/server/index.js"],
            3000,
        ),
        (
            &[(
                "package.json",
                r#"{"scripts": {"build": "react-router build", "start": "react-router-serve ./build/server/index.js"}, "dependencies": {"@react-router/serve": "7"}, "devDependencies": {"@react-router/dev": "7"}}"#,
            )],
            Framework::ReactRouter,
            &[
                "node_modules/.bin/react-router-serve",
                "build/server/index.js",
            ],
            3000,
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "next build"}, "dependencies": {"next": "15"}}"#,
                ),
                (
                    "next.config.mjs",
                    "export default { output: 'standalone' };",
                ),
            ],
            Framework::Nextjs,
            &["node", ".next/standalone/server.js"],
            3000,
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"build": "ng build"}, "dependencies": {"@angular/core": "18", "@angular/ssr": "18", "express": "4"}}"#,
                ),
                (
                    "angular.json",
                    r#"{"projects": {"shop": {"projectType": "application", "architect": {"build": {"builder": "@angular-devkit/build-angular:application", "options": {"outputPath": "dist/shop", "ssr": {"entry": "server.ts"}}}}}}}"#,
                ),
            ],
            Framework::Angular,
            &["node", "dist/shop/server/server.mjs"],
            4000,
        ),
    ];
    for (files, framework, start, port) in cases {
        let dir = tree(files);
        let p = plan(dir.path());
        assert_eq!(p.framework, Some(*framework), "{files:?}");
        assert_eq!(p.start_argv, *start, "{files:?}");
        assert_eq!((p.port, p.port_env.as_deref()), (*port, Some("PORT")));
        assert!(!node_recipe(&p).keep_dev_dependencies, "{files:?}");
        assert!(
            p.reasons.iter().any(|r| r.starts_with("start_command=")),
            "{:?}",
            p.reasons
        );
    }

    // Next.js standalone serves its static files only from beside its server.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "next build"}, "dependencies": {"next": "15"}}"#,
        ),
        (
            "next.config.js",
            "module.exports = { output: \"standalone\" };",
        ),
        ("public/logo.svg", "<svg/>"),
    ]);
    assert_eq!(
        plan(dir.path()).build_commands,
        [
            "npm run build",
            "cp -r .next/static .next/standalone/.next/static",
            "cp -r public .next/standalone/public"
        ]
    );
    // SvelteKit's default adapter-auto has no server of its own here: vite preview, with a warning.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "vite build"}, "devDependencies": {"@sveltejs/kit": "2", "@sveltejs/adapter-auto": "3", "vite": "5"}}"#,
        ),
        (
            "svelte.config.js",
            "import adapter from '@sveltejs/adapter-auto';\nexport default { kit: { adapter: adapter() } };",
        ),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv[..2], ["node_modules/.bin/vite", "preview"]);
    assert_eq!(p.port, 4173);
    assert!(node_recipe(&p).keep_dev_dependencies);
    assert!(p.warnings.iter().any(|w| w.contains("vite preview")));
    assert!(!dockerfile(dir.path()).contains("prune"));
    // remix-serve only as a dev dependency: kept, with a warning.
    let dir = tree(&[(
        "package.json",
        r#"{"scripts": {"build": "remix vite:build", "start": "remix-serve ./build/server/index.js"}, "dependencies": {"@remix-run/node": "2"}, "devDependencies": {"@remix-run/serve": "2"}}"#,
    )]);
    let p = plan(dir.path());
    assert!(node_recipe(&p).keep_dev_dependencies);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("move it to dependencies"))
    );
    // Remix with its own Express server runs that server.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "remix vite:build", "start": "node ./server.js"}, "dependencies": {"@remix-run/express": "2", "@remix-run/node": "2", "express": "4"}}"#,
        ),
        ("server.js", SERVER),
    ]);
    assert_eq!(plan(dir.path()).start_argv, ["node", "./server.js"]);
    // Astro rendering for a host we cannot run is refused, with the reason in the warning.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "astro build"}, "dependencies": {"astro": "5", "@astrojs/vercel": "8"}}"#,
        ),
        (
            "astro.config.mjs",
            "import vercel from '@astrojs/vercel';\nexport default { output: 'server', adapter: vercel() };",
        ),
    ]);
    assert!(error(dir.path()).contains("nothing to start"));
}

#[test]
fn bun_is_the_runtime_when_the_app_asks_for_it() {
    // (files, package manager, start)
    let cases: &[(Files, PackageManager, &[&str])] = &[
        (
            &[
                (
                    "package.json",
                    r#"{"scripts": {"start": "bun run src/index.ts"}}"#,
                ),
                ("bun.lockb", ""),
                (
                    "src/index.ts",
                    "Bun.serve({ fetch: () => new Response('hi') });",
                ),
            ],
            PackageManager::Bun,
            &["bun", "run", "src/index.ts"],
        ),
        (
            // Only a dev script: run without its watch flag.
            &[
                (
                    "package.json",
                    r#"{"scripts": {"dev": "bun run --hot src/index.ts"}, "dependencies": {"hono": "4"}}"#,
                ),
                ("bun.lock", "{}"),
                ("src/index.ts", "export default app;"),
            ],
            PackageManager::Bun,
            &["bun", "run", "src/index.ts"],
        ),
        (
            // bun in the start script, npm's lockfile: npm installs, Bun runs.
            &[
                ("package.json", r#"{"scripts": {"start": "bun index.ts"}}"#),
                ("package-lock.json", "{}"),
                (
                    "index.ts",
                    "Bun.serve({ port: 5005, fetch: () => new Response('hi') });",
                ),
            ],
            PackageManager::Npm,
            &["bun", "index.ts"],
        ),
    ];
    for (files, pm, start) in cases {
        let dir = tree(files);
        let p = plan(dir.path());
        assert_eq!(p.package_manager, Some(*pm), "{files:?}");
        assert_eq!(p.start_argv, *start, "{files:?}");
        let d = dockerfile(dir.path());
        assert!(d.contains("RUN npm install -g bun@"), "{d}");
    }
    let dir = tree(cases[2].0);
    let p = plan(dir.path());
    assert_eq!((p.port, p.port_env.as_deref()), (5005, None));
    assert!(
        p.reasons
            .iter()
            .any(|r| r.starts_with("runtime=bun because"))
    );

    // After a build stage, the final image gets Bun as well.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "bun build src/index.ts --outdir dist", "start": "bun dist/index.js"}}"#,
        ),
        ("bun.lock", "{}"),
    ]);
    let d = dockerfile(dir.path());
    assert_eq!(d.matches("RUN npm install -g bun@").count(), 2, "{d}");
}

#[test]
fn typescript_entry_points_build_or_run_with_the_apps_runner() {
    const TS_SERVER: &str = "import { createServer } from 'node:http';\ncreateServer(() => {}).listen(process.env.PORT);";
    // A build script: run the compiled output (tsconfig outDir, relative to src/ or rootDir).
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"build": "tsc", "start": "ts-node src/index.ts"}, "devDependencies": {"ts-node": "10", "typescript": "5"}}"#,
        ),
        (
            "tsconfig.json",
            "{\n  // comments are allowed here\n  \"compilerOptions\": { \"outDir\": \"./build\" }\n}\n",
        ),
        ("src/index.ts", TS_SERVER),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["node", "build/index.js"]);
    assert_eq!(p.build_commands, ["npm run build"]);
    assert!(!node_recipe(&p).keep_dev_dependencies);
    let dir = tree(&[
        (
            "package.json",
            r#"{"main": "server.ts", "scripts": {"build": "tsc"}, "devDependencies": {"typescript": "5"}}"#,
        ),
        (
            "tsconfig.json",
            r#"{"compilerOptions": {"outDir": "out", "rootDir": "."}}"#,
        ),
        ("server.ts", TS_SERVER),
    ]);
    assert_eq!(plan(dir.path()).start_argv, ["node", "out/server.js"]);

    // No build script: the app's own runner, with its dev dependencies kept.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"start": "tsx src/server.ts"}, "devDependencies": {"tsx": "4"}}"#,
        ),
        ("src/server.ts", TS_SERVER),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["node_modules/.bin/tsx", "src/server.ts"]);
    assert!(node_recipe(&p).keep_dev_dependencies);
    let d = dockerfile(dir.path());
    assert!(!d.contains("prune") && !d.contains("--omit=dev"), "{d}");
    let install = d.find("RUN npm install --no-audit --no-fund").unwrap();
    assert!(install < d.find("ENV NODE_ENV=production").unwrap(), "{d}");
    // No start script: a serving .ts entry file with ts-node as a runtime dependency.
    let dir = tree(&[
        (
            "package.json",
            r#"{"dependencies": {"ts-node": "10", "typescript": "5"}}"#,
        ),
        ("src/index.ts", TS_SERVER),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["node_modules/.bin/ts-node", "src/index.ts"]);
    assert!(!node_recipe(&p).keep_dev_dependencies);
    // Neither a build nor a runner: said so.
    let dir = tree(&[
        (
            "package.json",
            r#"{"scripts": {"start": "ts-node-esm src/index.ts"}}"#,
        ),
        ("src/index.ts", TS_SERVER),
    ]);
    let p = plan(dir.path());
    assert_eq!(p.start_argv, ["npm", "run", "start"]);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("neither a build script nor tsx or ts-node")),
        "{:?}",
        p.warnings
    );
}
