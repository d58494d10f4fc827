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
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("go 1.23 is asked for")),
        "{:?}",
        p.warnings
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
