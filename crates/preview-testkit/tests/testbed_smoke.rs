//! Proves the test bed: an image FROM a local base image, run by `docker compose` v2+ with limits
//! and a non-root user, reached through a private nginx, and torn down without leftovers.

use std::time::Duration;

use preview_exec::Cmd;
use preview_testkit::{
    PrivateNginx, docker_inspect, docker_objects_with_label, free_port, require_docker,
    unique_suffix, wait_for_http,
};

const APP: &str = r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"smoke ok uid={os.getuid()} path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;

/// Removes the compose project even when an assertion fails midway.
struct ComposeDown {
    dir: std::path::PathBuf,
    project: String,
}

impl ComposeDown {
    fn cmd(&self) -> Cmd {
        Cmd::new("docker", "tear down the smoke-test project")
            .args([
                "compose",
                "-p",
                &self.project,
                "down",
                "--volumes",
                "--remove-orphans",
            ])
            .current_dir(&self.dir)
            .pass_env("HOME")
            .timeout(Duration::from_secs(120))
    }
}

impl Drop for ComposeDown {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let cmd = self.cmd();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().map(|rt| rt.block_on(cmd.output()))
            })
            .join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_app_with_limits_behind_private_nginx() {
    require_docker().await;
    let dir = tempfile::tempdir().unwrap();
    let project = format!("smoke-{}", unique_suffix());
    let label = format!("dev.preview-deployer.test={project}");
    let port = free_port();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM python:3.12-slim-bookworm\nLABEL {label}\nCOPY app.py /app/app.py\nUSER 10001:10001\nCMD [\"python3\", \"/app/app.py\"]\n"),
    )
    .unwrap();
    let compose = format!(
        r#"name: {project}
services:
  app:
    build: .
    init: true
    user: "10001:10001"
    mem_limit: 512m
    cpus: 0.5
    pids_limit: 128
    security_opt: ["no-new-privileges:true"]
    ports: ["127.0.0.1:{port}:8080"]
    volumes: ["data:/data"]
    labels: ["{label}"]
    networks: [preview]
networks:
  preview:
    labels: ["{label}"]
volumes:
  data:
    labels: ["{label}"]
"#
    );
    std::fs::write(dir.path().join("compose.yml"), compose).unwrap();
    let guard = ComposeDown {
        dir: dir.path().to_owned(),
        project: project.clone(),
    };

    Cmd::new("docker", "start the smoke-test project")
        .args(["compose", "-p", &project, "up", "-d", "--build"])
        .current_dir(dir.path())
        .pass_env("HOME")
        .timeout(Duration::from_secs(300))
        .run()
        .await
        .unwrap();

    let container = format!("{project}-app-1");
    let inspect = docker_inspect(&container).await;
    assert_eq!(inspect["HostConfig"]["Memory"], 512 * 1024 * 1024);
    assert_eq!(inspect["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(inspect["HostConfig"]["PidsLimit"], 128);
    assert_eq!(inspect["Config"]["User"], "10001:10001");
    assert_eq!(inspect["HostConfig"]["Init"], true);

    let direct = wait_for_http(port, "/hello", Duration::from_secs(60), |a| a.status == 200).await;
    assert_eq!(direct.body, "smoke ok uid=10001 path=/hello");

    let nginx = PrivateNginx::start().await;
    std::fs::write(
        nginx.conf_dir().join("smoke.conf"),
        format!("location /smoke/pr-1/ {{\n    proxy_pass http://127.0.0.1:{port}/;\n}}\n"),
    )
    .unwrap();
    nginx.test_config().await.unwrap();
    nginx.reload().await;
    let proxied = wait_for_http(
        nginx.port(),
        "/smoke/pr-1/x?y=1",
        Duration::from_secs(10),
        |a| a.status == 200,
    )
    .await;
    assert_eq!(
        proxied.body, "smoke ok uid=10001 path=/x?y=1",
        "prefix stripped by nginx"
    );

    guard.cmd().run().await.unwrap();
    // Compose v5 against this engine's API 1.41 leaves the built image behind despite `--rmi local`.
    preview_testkit::docker(["image", "rm", &format!("{project}-app")])
        .await
        .unwrap();
    assert_eq!(
        docker_objects_with_label(&label).await,
        Vec::<String>::new()
    );
    let images = preview_testkit::docker(["images", "-q", "--filter", &format!("label={label}")])
        .await
        .unwrap();
    assert_eq!(images, "", "no image of the project is left");
}
