//! The density benchmark, run by `scripts/bench-density.sh` (ignored in the test run): the real
//! orchestrator binary, its private nginx and a fake GitHub, on the real engine. It opens
//! `BENCH_DENSITY_N` PRs (default 30) of the stdlib Python sample, waits until all serve, reads
//! each preview's memory (`docker stats`), puts all but `BENCH_DENSITY_AWAKE` (default 3) to sleep
//! through the API, and wakes sleeping previews by visiting them through nginx as a browser does
//! (following the wake's redirect, reloading the waking page), at least `BENCH_DENSITY_WAKES`
//! times (default 20), each from its first request to its 200.
//!
//! Figures, printed, never asserted:
//! - **awake**: the mean memory of an awake preview's containers;
//! - **asleep**: the mean memory of a sleeping preview's containers (stopped: none) plus its
//!   share of the orchestrator's growth in resident memory from no preview to all of them;
//! - **fits**: how many previews 4 GB holds by those figures, with the awake share of this run
//!   (each preview has a Postgres database on the shared server, `DATABASE_MODE=shared`):
//!   4096 MB less `MEMORY_RESERVE_MB` (256), the shared database servers and the host's base
//!   (the resident memory of dockerd, containerd and the orchestrator, measured), divided by the
//!   mean of a preview.
//!
//! The last line has the shape: `density: awake X MB, asleep Y MB per preview, wake p50
//! A s p95 B s, fits N previews in 4 GB`. Every preview is closed at the end (nothing is left).

use std::time::{Duration, Instant};

use preview_engine::{ComposeEngine, Engine};
use preview_exec::compose::Compose;
use preview_testkit::{http_get, wait_for_http};
use serde_json::Value;

use crate::e2e_support::{Daemon, DaemonWorld, Tree};
use crate::harness::TOKEN;

const MB: f64 = 1024.0 * 1024.0;

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of every process named `name`, in bytes.
fn rss_of(name: &str) -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .map(rss)
        .sum()
}

async fn state(daemon: &Daemon, id: &str) -> String {
    daemon
        .preview(id)
        .await
        .map(|r| r["status"]["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

async fn wait_state(daemon: &Daemon, id: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = state(daemon, id).await;
        if now == want {
            return;
        }
        assert!(
            now != "failed" && Instant::now() < deadline,
            "{id} is {now}, not {want}: {:?}",
            daemon.preview(id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sleep_now(daemon: &Daemon, id: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/previews/{id}/sleep", daemon.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "sleeping {id}: {status} {body}");
    wait_state(daemon, id, "sleeping", Duration::from_secs(60)).await;
}

/// A browser's visit through nginx: follows the wake's redirect and reloads the waking page,
/// until a 200; the time from the first request.
async fn visit(port: u16, path: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = http_get(port, path).await.expect("nginx answers");
        match answer.status {
            200 => return started.elapsed(),
            307 => {}
            503 => tokio::time::sleep(Duration::from_millis(500)).await,
            status => panic!("GET {path}: {status}\n{}", answer.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{path} did not wake"
        );
    }
}

/// Removes every container, volume and image of the benchmark's previews when dropped, so a
/// failed run leaves nothing either (the daemon is killed before).
struct RemoveOnDrop {
    repo: String,
    slug: String,
    /// The compose project of the benchmark's shared database servers.
    shared_project: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for label in [
            format!("label=dev.preview-deployer.repo={}", self.repo),
            format!("label=com.docker.compose.project={}", self.shared_project),
        ] {
            let containers = docker(&["ps", "-aq", "--filter", &label]);
            let containers: Vec<&str> = containers.split_whitespace().collect();
            if !containers.is_empty() {
                docker(&[&["rm", "-f", "-v"][..], &containers].concat());
            }
            for kind in ["volume", "network"] {
                let found = docker(&[kind, "ls", "-q", "--filter", &label]);
                let found: Vec<&str> = found.split_whitespace().collect();
                if !found.is_empty() {
                    docker(&[&[kind, "rm"][..], &found].concat());
                }
            }
        }
        let reference = format!("reference={}-pr-*", self.slug);
        let images = docker(&["image", "ls", "-q", "--filter", &reference]);
        let images: Vec<&str> = images.split_whitespace().collect();
        if !images.is_empty() {
            docker(&[&["image", "rm", "-f"][..], &images].concat());
        }
    }
}

/// Waits until PR `pr` serves; a failed deploy (the engine is shared with other work) is
/// printed and deployed once more.
async fn wait_serving(world: &DaemonWorld, daemon: &Daemon, pr: u64) {
    let id = world.id(pr);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut retried = false;
    loop {
        match state(daemon, &id).await.as_str() {
            "running" => return,
            "failed" if !retried => {
                let rec = daemon.preview(&id).await.unwrap_or(Value::Null);
                // The failure comment carries the build log's tail.
                let comment = world
                    .github
                    .comments()
                    .into_iter()
                    .filter(|c| c.pr == pr)
                    .map(|c| c.body)
                    .next_back()
                    .unwrap_or_default();
                eprintln!(
                    "   PR {pr} failed ({}); deploying it again. Its comment:\n{comment}",
                    rec["status"]["reason"]
                );
                let resp = reqwest::Client::new()
                    .post(format!("{}/api/previews/{id}/redeploy", daemon.api))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    resp.status().is_success(),
                    "redeploy of {id}: {}",
                    resp.status()
                );
                retried = true;
            }
            "failed" => panic!("{id} failed twice: {:?}", daemon.preview(&id).await),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{id} did not serve");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: scripts/bench-density.sh runs it"]
async fn bench_density() {
    let n = env_or("BENCH_DENSITY_N", 30).max(2);
    let keep_awake = env_or("BENCH_DENSITY_AWAKE", 3).clamp(1, n - 1);
    let wakes = env_or("BENCH_DENSITY_WAKES", 20).max(1);
    // Each preview has a Postgres database, on the engine's one shared server.
    let shared_project = format!("bench-density-databases-{}", std::process::id());
    let world = DaemonWorld::new(
        "density",
        &[
            ("--database-mode", "shared".into()),
            ("--shared-database-project", shared_project.clone()),
            ("--shared-database-subnet", "10.214.0.0/16".into()),
            // Sleeping is on; the benchmark puts previews to sleep itself.
            ("--idle-sleep-secs", "86400".into()),
            ("--max-concurrent-previews", "1000".into()),
            ("--health-timeout-secs", "300".into()),
        ],
    )
    .await;
    let _remove = RemoveOnDrop {
        repo: world.repo.clone(),
        slug: world.id(1).trim_end_matches("-pr-1").to_owned(),
        shared_project: shared_project.clone(),
    };
    let daemon = world.start();
    let orchestrator_before = rss(daemon.pid());
    let engine = ComposeEngine::new(Compose::detect().await.unwrap());
    let port = world.nginx.port();
    eprintln!("== opening {n} previews of the stdlib Python sample, each with a Postgres database");
    let started = Instant::now();
    let mut shas = Vec::new();
    for pr in 1..=n as u64 {
        let tree = Tree::fixture("python-plain")
            .replace("python-plain ok", &format!("pr {pr} ok"))
            .with("preview-config.yml", "database: postgres\n");
        let sha = world.origin.commit(pr, &tree, "density").await;
        world.send(&daemon, "opened", pr, &sha).await;
        shas.push(sha);
    }
    for pr in 1..=n as u64 {
        wait_serving(&world, &daemon, pr).await;
        wait_for_http(port, &world.path(pr), Duration::from_secs(30), |a| {
            a.status == 200
        })
        .await;
    }
    eprintln!(
        "   all {n} serve after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let mut awake_bytes = Vec::new();
    for pr in 1..=n as u64 {
        awake_bytes.push(engine.usage(&world.id(pr)).await.unwrap().memory_bytes as f64);
    }
    let awake_mb = awake_bytes.iter().sum::<f64>() / awake_bytes.len() as f64 / MB;
    // The shared servers hold every preview's database: the host pays for them once.
    let shared_mb = engine.usage(&shared_project).await.unwrap().memory_bytes as f64 / MB;
    let orchestrator_after = rss(daemon.pid());

    eprintln!(
        "== putting {} of them to sleep, {keep_awake} stay awake",
        n - keep_awake
    );
    let sleeping: Vec<u64> = ((keep_awake as u64 + 1)..=n as u64).collect();
    for pr in &sleeping {
        sleep_now(&daemon, &world.id(*pr)).await;
    }
    let mut asleep_bytes = 0u64;
    for pr in &sleeping {
        asleep_bytes += engine.usage(&world.id(*pr)).await.unwrap().memory_bytes;
    }
    let orchestrator_share =
        orchestrator_after.saturating_sub(orchestrator_before) as f64 / n as f64;
    let asleep_mb = (asleep_bytes as f64 / sleeping.len() as f64 + orchestrator_share) / MB;

    eprintln!("== {wakes} wakes through nginx");
    let mut latencies = Vec::new();
    for i in 0..wakes {
        let pr = sleeping[i % sleeping.len()];
        let id = world.id(pr);
        if state(&daemon, &id).await != "sleeping" {
            sleep_now(&daemon, &id).await;
        }
        let took = visit(port, &world.path(pr)).await;
        eprintln!(
            "   wake {:>2}: PR {pr} in {:.2} s",
            i + 1,
            took.as_secs_f64()
        );
        latencies.push(took.as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p95) = (percentile(&latencies, 50.0), percentile(&latencies, 95.0));

    let base_mb = (rss_of("dockerd") + rss_of("containerd") + rss(daemon.pid())) as f64 / MB;
    let budget_mb = 4096.0 - 256.0 - base_mb - shared_mb;
    let awake_share = keep_awake as f64 / n as f64;
    let per_preview_mb = awake_share * awake_mb + (1.0 - awake_share) * asleep_mb;
    let fits = (budget_mb / per_preview_mb).floor().max(0.0) as u64;
    eprintln!(
        "   host base {base_mb:.0} MB (dockerd, containerd, orchestrator), shared database servers {shared_mb:.0} MB with {n} databases, budget {budget_mb:.0} MB; \
         orchestrator {:.1} MB with no preview, {:.1} MB with {n}; a preview with {:.0}% awake: {per_preview_mb:.2} MB",
        orchestrator_before as f64 / MB,
        orchestrator_after as f64 / MB,
        awake_share * 100.0
    );

    eprintln!("== closing every preview");
    for (i, sha) in shas.iter().enumerate() {
        world.close_and_check(&daemon, i as u64 + 1, sha).await;
    }
    daemon.stop().await;
    println!(
        "density: awake {awake_mb:.1} MB, asleep {asleep_mb:.1} MB per preview, wake p50 {p50:.2} s p95 {p95:.2} s, fits {fits} previews in 4 GB"
    );
}
