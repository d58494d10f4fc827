//! Real builds on the local engine: each sample builds unchanged from its generated files, starts
//! under `docker compose`, is ready as the orchestrator judges it, and answers its /health on the published 127.0.0.1 port. Builds
//! run a few at a time; every project is torn down, even when an assertion fails.
//!
//! `PREVIEW_REAL_BUILDS=python-plain,go` limits the run to those samples (all by default).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_core::render::labels;
use preview_exec::Cmd;
use preview_exec::compose::Compose;
use preview_testkit::{
    PrivateNginx, docker, docker_inspect, docker_objects_with_label, free_port, http_get,
    require_docker, unique_suffix, wait_for_http,
};
use tokio::sync::Semaphore;

use crate::harness::{plan, render_into};

/// The samples built for real, and the body each answers on its health path.
const SAMPLES: &[(&str, &str)] = &[
    ("python-plain", "python-plain ok\n"),
    ("node-plain", "node-plain ok\n"),
    ("go", "go ok\n"),
    ("rust", "rust ok\n"),
    ("php-plain", "php-plain ok\n"),
    ("nestjs", "nestjs ok\n"),
    ("express", "express ok\n"),
    ("django", "django ok\n"),
    ("fastapi", "fastapi ok\n"),
    ("flask", "flask ok\n"),
    // Static front ends: built with the app's own build, served by the built-in static server.
    ("vite-spa", "vite-spa ok\n"),
    ("static-html", "static-html ok\n"),
    // Proves DATABASE_URL: it answers only after a query on the preview's Postgres.
    ("node-postgres", "node-postgres ok 42\n"),
];

/// Builds at once: the machine has 2 cores, and builds wait on the network as much as the CPU.
const PARALLEL: usize = 3;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// Tears the project down on drop unless it was already torn down.
struct Project {
    compose: Compose,
    name: String,
    dir: PathBuf,
    down: bool,
}

impl Project {
    fn down_cmd(&self) -> Cmd {
        self.compose
            .down(&self.name, &self.dir, "docker-compose.yml")
            .expect("a valid project name")
    }

    /// `down --volumes`, then the built image: kept under a cache tag, so a rerun reuses its layers.
    async fn down(&mut self, sample: &str) -> Result<(), String> {
        self.down = true;
        self.down_cmd().run().await.map_err(|e| e.to_string())?;
        let image = format!("{}-app", self.name);
        let cache = format!("preview-core-buildcache/{sample}:latest");
        let old = docker(["image", "inspect", "--format", "{{.Id}}", &cache])
            .await
            .ok();
        if docker(["tag", &image, &cache]).await.is_ok() {
            let new = docker(["image", "inspect", "--format", "{{.Id}}", &cache])
                .await
                .ok();
            if let Some(old) = old.filter(|o| Some(o) != new.as_ref()) {
                let _ = docker(["image", "rm", &old]).await;
            }
        }
        let _ = docker(["image", "rm", &image]).await;
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        let down = self.down_cmd();
        let image = format!("{}-app", self.name);
        // Drop cannot await; a short-lived runtime on its own thread runs the teardown.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().map(|rt| {
                rt.block_on(async {
                    let _ = down.output().await;
                    let _ = docker(["image", "rm", &image]).await;
                })
            })
        })
        .join();
    }
}

async fn logs(project: &Project) -> String {
    match project
        .compose
        .logs(&project.name, &project.dir, "docker-compose.yml", 40)
    {
        Ok(cmd) => cmd
            .output()
            .await
            .map(|o| o.stdout_text())
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

/// Builds, starts and checks one sample; returns the time from `up` to its first healthy answer.
async fn build_and_check(
    compose: Compose,
    sample: &'static str,
    body: &'static str,
) -> Result<Duration, String> {
    let planned = plan(sample);
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let name = format!("pdtest-{sample}-{}", unique_suffix());
    let port = free_port();
    render_into(sample, &planned, tmp.path(), &name, port);
    let mut project = Project {
        compose: compose.clone(),
        name: name.clone(),
        dir: tmp.path().to_owned(),
        down: false,
    };

    let started = Instant::now();
    if let Err(e) = compose
        .up(&name, tmp.path(), "docker-compose.yml")
        .map_err(|e| e.to_string())?
        .run()
        .await
    {
        return Err(format!(
            "{sample}: compose up failed: {e}\n{}",
            logs(&project).await
        ));
    }
    // Ready as the orchestrator judges it, then the sample's own /health route proves it is ours.
    let (health, ready_when) = (&planned.plan.health_path, planned.plan.ready_when);
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        match http_get(port, health).await {
            Ok(a) if ready_when.accepts(a.status) => break,
            other if Instant::now() > deadline => {
                return Err(format!(
                    "{sample}: GET {health} never answered {} (last: {other:?})\n{}",
                    ready_when.describe(),
                    logs(&project).await
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let elapsed = started.elapsed();
    let answer = http_get(port, "/health")
        .await
        .map_err(|e| format!("{sample}: GET /health: {e:?}"))?;
    if answer.body != body {
        return Err(format!(
            "{sample}: body {:?}, expected {body:?}",
            answer.body
        ));
    }

    // The container runs as generated: non-root, under an init, limited, labelled, local-only.
    let inspect = docker_inspect(&format!("{name}-app-1")).await;
    let checks = [
        ("user", inspect["Config"]["User"] == "10001:10001"),
        ("init", inspect["HostConfig"]["Init"] == true),
        (
            "memory",
            inspect["HostConfig"]["Memory"] == 512 * 1024 * 1024,
        ),
        ("cpus", inspect["HostConfig"]["NanoCpus"] == 500_000_000),
        ("pids", inspect["HostConfig"]["PidsLimit"] == 256),
        (
            "no-new-privileges",
            inspect["HostConfig"]["SecurityOpt"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == "no-new-privileges:true")),
        ),
        (
            "127.0.0.1 only",
            inspect["HostConfig"]["PortBindings"]
                .as_object()
                .is_some_and(|b| {
                    b.values()
                        .filter_map(|v| v.as_array())
                        .flatten()
                        .all(|p| p["HostIp"] == "127.0.0.1")
                }),
        ),
        (
            "label",
            inspect["Config"]["Labels"][labels::DEPLOYMENT] == name.as_str(),
        ),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{sample}: container settings wrong: {failed:?}\n{inspect:#}"
        ));
    }

    if sample == "python-plain" {
        through_nginx(tmp.path(), sample, body).await?;
    }
    if sample == "vite-spa" {
        spa_is_served(port).await?;
    }

    project.down(sample).await?;
    let left = docker_objects_with_label(&format!("{}={name}", labels::DEPLOYMENT)).await;
    if !left.is_empty() {
        return Err(format!("{sample}: left behind after down: {left:?}"));
    }
    Ok(elapsed)
}

/// A client-side route gets the app's index.html, and the bundle it names is served.
async fn spa_is_served(port: u16) -> Result<(), String> {
    let page = http_get(port, "/some/client/route")
        .await
        .map_err(|e| format!("vite-spa: GET a client route: {e:?}"))?;
    if page.status != 200 || !page.body.contains("<div id=\"app\">") {
        return Err(format!(
            "vite-spa: a client route should get index.html: {page:?}"
        ));
    }
    let script = page
        .body
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .filter(|s| s.starts_with("/assets/"))
        .ok_or_else(|| format!("vite-spa: no built bundle in {:?}", page.body))?;
    let bundle = http_get(port, script)
        .await
        .map_err(|e| format!("vite-spa: GET {script}: {e:?}"))?;
    if bundle.status != 200 || !bundle.headers.contains("text/javascript") {
        return Err(format!("vite-spa: the bundle {script}: {bundle:?}"));
    }
    let missing = http_get(port, "/assets/missing.js")
        .await
        .map_err(|e| format!("vite-spa: GET a missing asset: {e:?}"))?;
    if missing.status != 404 {
        return Err(format!(
            "vite-spa: a missing asset should be 404: {missing:?}"
        ));
    }
    Ok(())
}

/// The generated location, in a private nginx: prefix stripped, bare prefix redirected.
async fn through_nginx(dir: &std::path::Path, sample: &str, body: &str) -> Result<(), String> {
    let nginx = PrivateNginx::start().await;
    std::fs::copy(
        dir.join("nginx.conf"),
        nginx.conf_dir().join("preview.conf"),
    )
    .map_err(|e| e.to_string())?;
    nginx.test_config().await?;
    nginx.reload().await;
    let prefix = format!("/acme-{sample}/pr-7");
    let answer = wait_for_http(
        nginx.port(),
        &format!("{prefix}/health"),
        Duration::from_secs(10),
        |a| a.status == 200,
    )
    .await;
    if answer.body != body {
        return Err(format!("through nginx: body {:?}", answer.body));
    }
    // Old workers may still answer for a moment after the reload: poll until the new config does.
    let redirect = wait_for_http(nginx.port(), &prefix, Duration::from_secs(10), |a| {
        a.status == 301
    })
    .await;
    if !redirect.headers.contains(&format!("{prefix}/")) {
        return Err(format!(
            "the bare prefix should redirect to {prefix}/: {redirect:?}"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn samples_build_unchanged_and_answer_their_health_path() {
    require_docker().await;
    let compose = Compose::detect().await.expect("docker compose");
    let only = std::env::var("PREVIEW_REAL_BUILDS").ok();
    let semaphore = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (sample, body) in SAMPLES {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|s| s == *sample))
        {
            continue;
        }
        let (compose, semaphore) = (compose.clone(), semaphore.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await.expect("semaphore open");
            (*sample, build_and_check(compose, sample, body).await)
        });
    }
    let mut report = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((sample, Ok(elapsed))) => {
                report.push(format!("{sample}: healthy {elapsed:.1?} after up"))
            }
            Ok((sample, Err(e))) => failures.push(format!("{sample}: {e}")),
            Err(e) => failures.push(format!("a build task panicked: {e}")),
        }
    }
    report.sort();
    eprintln!("real builds:\n  {}", report.join("\n  "));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
