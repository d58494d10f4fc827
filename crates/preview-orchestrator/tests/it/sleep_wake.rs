//! Sleep and wake on the real engine, with a private nginx in the wake path and a fake GitHub:
//! a preview idle for `IDLE_SLEEP_SECS` sleeps (its containers stopped, its memory freed, its
//! volumes kept), a visit through nginx wakes it and gets the page, 20 visitors during one wake
//! share it, a push to a sleeping preview deploys, closing a sleeping PR leaves nothing, and a
//! `kill -9` of the orchestrator while a preview sleeps, or while it wakes, leaves it wakeable.
//!
//! The wake latency (a visitor's first request through nginx to its 200) is printed, never
//! asserted.

use std::time::{Duration, Instant};

use preview_engine::{ComposeEngine, Engine};
use preview_exec::compose::Compose;
use preview_orchestrator::DeploymentStatus;
use preview_testkit::{docker, free_port, http_get, wait_for_http};

use crate::e2e_support::{Daemon, DaemonWorld, E2e, Tree, eventually, visit, visit_host};
use crate::harness::TOKEN;

/// Cold builds share 2 cores with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle time before a preview sleeps, in the tests.
const IDLE_SECS: &str = "3";

/// The stdlib sample answering `body`, with a Postgres database (a volume to keep).
fn app(body: &str) -> Tree {
    Tree::fixture("python-plain")
        .replace("python-plain ok", body)
        .with("preview-config.yml", "database: postgres\n")
}

/// The compose engine, to read a preview's usage as the orchestrator does.
async fn engine() -> ComposeEngine {
    ComposeEngine::new(Compose::detect().await.expect("docker compose"))
}

/// The names of the volumes labelled with preview `id`.
async fn volumes(id: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={id}");
    let out = docker(["volume", "ls", "-q", "--filter", &label])
        .await
        .expect("listing volumes");
    out.lines().map(str::to_owned).collect()
}

/// The images built for preview `id`.
async fn images(id: &str) -> Vec<String> {
    let reference = format!("reference={id}-*");
    let out = docker(["image", "ls", "-q", "--filter", &reference])
        .await
        .expect("listing images");
    out.lines().map(str::to_owned).collect()
}

/// How many `running` entries follow the last `sleeping` one in PR `pr`'s history.
fn wakes_since_last_sleep(e2e: &E2e, pr: u64) -> usize {
    let history = e2e.record(pr).expect("the record").history;
    let last_sleep = history
        .iter()
        .rposition(|h| h.status == DeploymentStatus::Sleeping)
        .expect("the preview slept");
    history[last_sleep..]
        .iter()
        .filter(|h| h.status == DeploymentStatus::Running)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_previews_sleep_and_visits_wake_them() {
    let e2e = E2e::start("sleep", &[("--idle-sleep-secs", IDLE_SECS.into())]).await;
    let pr = 1;
    let id = e2e.id(pr);
    let port = e2e.nginx.port();
    let path = e2e.path(pr);
    let sha = e2e.commit(pr, &app("first ok"), "first").await;
    e2e.send("opened", pr, &sha).await;
    e2e.wait_status(pr, DeploymentStatus::Running, LIVE_TIMEOUT)
        .await;
    // A reload returns before nginx serves the new config.
    let first = wait_for_http(port, &path, Duration::from_secs(30), |a| a.status == 200).await;
    assert_eq!(first.body, "first ok\n");
    let engine = engine().await;
    let awake = engine.usage(id.as_str()).await.unwrap();
    assert_eq!(awake.running, 2, "the app and its database run: {awake:?}");
    let volumes_awake = volumes(id.as_str()).await;
    assert!(!volumes_awake.is_empty(), "the database has a volume");
    let images_awake = images(id.as_str()).await;
    assert!(!images_awake.is_empty(), "the app's image is built");

    // Idle: it sleeps, with its containers stopped, no memory in use, its volume, port and
    // route kept, and says so on the PR and in the API.
    e2e.wait_status(pr, DeploymentStatus::Sleeping, Duration::from_secs(60))
        .await;
    let usage = engine.usage(id.as_str()).await.unwrap();
    assert_eq!(usage, preview_engine::Usage::default(), "nothing runs");
    let containers = engine.containers(id.as_str()).await.unwrap();
    assert_eq!(containers.len(), 2, "the containers stay, stopped");
    assert_eq!(
        volumes(id.as_str()).await,
        volumes_awake,
        "the volume stays"
    );
    assert_eq!(images(id.as_str()).await, images_awake, "the images stay");
    assert!(e2e.orch.store().ports(&id).is_some(), "the port stays");
    assert!(e2e.nginx.conf_dir().join(format!("{id}.conf")).exists());
    e2e.wait_comment(
        pr,
        &["Asleep, wakes on the next visit"],
        Duration::from_secs(60),
    )
    .await;
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/previews", e2e.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed.to_string().contains(r#""state":"sleeping""#),
        "the API shows it asleep: {listed}"
    );

    // A visit wakes it and gets the page.
    let woke = visit(port, &path).await;
    assert_eq!(woke.body, "first ok\n");
    assert!(
        woke.redirects + woke.waits > 0,
        "the first request went through the wake: {woke:?}"
    );
    eprintln!(
        "wake latency (first request through nginx to its 200): {:.2} s, {} waiting pages, {} redirects",
        woke.took.as_secs_f64(),
        woke.waits,
        woke.redirects
    );
    // The visitor may get its 200 a moment before the wake records it.
    e2e.wait_status(pr, DeploymentStatus::Running, Duration::from_secs(30))
        .await;
    assert_eq!(wakes_since_last_sleep(&e2e, pr), 1);
    // The woken preview's footprint: awake, with the memory its app and database use now.
    let comment = e2e
        .wait_comment(
            pr,
            &[
                "Woke up in",
                "| State | awake |",
                "| Memory | ",
                "| Disk | ",
            ],
            // Measuring waits for other readers of the engine's disk use to finish.
            Duration::from_secs(60),
        )
        .await;
    assert!(
        !comment.body.contains("| Memory | 0 B in use |"),
        "{}",
        comment.body
    );
    eprintln!(
        "the wake itself (containers started to the app ready), from the comment: {}",
        comment
            .body
            .lines()
            .find(|l| l.contains("Woke up in"))
            .unwrap_or_default()
    );

    // 20 visitors during one wake share it, and each gets the page.
    e2e.wait_status(pr, DeploymentStatus::Sleeping, Duration::from_secs(60))
        .await;
    let visitors: Vec<_> = (0..20)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { visit(port, &path).await })
        })
        .collect();
    let mut took = Vec::new();
    for visitor in visitors {
        let visit = visitor.await.expect("a visitor");
        assert_eq!(visit.body, "first ok\n");
        took.push(visit.took.as_secs_f64());
    }
    e2e.wait_status(pr, DeploymentStatus::Running, Duration::from_secs(30))
        .await;
    assert_eq!(
        wakes_since_last_sleep(&e2e, pr),
        1,
        "one wake for 20 visitors: {:#?}",
        e2e.record(pr).unwrap().history
    );
    took.sort_by(f64::total_cmp);
    eprintln!(
        "20 concurrent visitors of a sleeping preview: 200 after {:.2} s (first) to {:.2} s (last)",
        took[0],
        took[took.len() - 1]
    );

    // A push to a sleeping preview deploys as usual.
    e2e.wait_status(pr, DeploymentStatus::Sleeping, Duration::from_secs(60))
        .await;
    let pushed = e2e.commit(pr, &app("second ok"), "second").await;
    e2e.send("synchronize", pr, &pushed).await;
    eventually("the push to deploy", LIVE_TIMEOUT, || {
        e2e.record(pr).filter(|r| {
            r.deployed_sha
                .as_ref()
                .is_some_and(|s| s.as_str() == pushed)
                && matches!(
                    r.status,
                    DeploymentStatus::Running | DeploymentStatus::Sleeping
                )
        })
    })
    .await;
    assert_eq!(visit(port, &path).await.body, "second ok\n");
    assert_eq!(
        volumes(id.as_str()).await,
        volumes_awake,
        "the volume stays"
    );

    // Closing a sleeping PR tears it down, leaving nothing.
    e2e.wait_status(pr, DeploymentStatus::Sleeping, Duration::from_secs(60))
        .await;
    e2e.close_and_assert_nothing_left(pr, &pushed).await;
    e2e.shutdown().await;
}

/// With each preview at its own hostname, the wake route is in the preview's server block. Here
/// previews sleep only when asked, through the internal API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_at_its_own_hostname_sleeps_when_asked_and_wakes() {
    let e2e =
        E2e::start_with_hostnames("sleep-host", &[("--idle-sleep-minutes", "600".into())]).await;
    let pr = 1;
    let tree = Tree::fixture("python-plain").replace("python-plain ok", "host ok");
    let sha = e2e.commit(pr, &tree, "host").await;
    e2e.send("opened", pr, &sha).await;
    e2e.wait_status(pr, DeploymentStatus::Running, LIVE_TIMEOUT)
        .await;
    let (status, body) = e2e.ask_to_sleep(e2e.id(pr).as_str()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(e2e.record(pr).unwrap().status, DeploymentStatus::Sleeping);
    assert_eq!(
        engine().await.usage(e2e.id(pr).as_str()).await.unwrap(),
        preview_engine::Usage::default()
    );
    let (status, body) = e2e.ask_to_sleep(e2e.id(2).as_str()).await;
    assert_eq!(status, 404, "{body}");
    let host = format!(
        "{}.{}",
        e2e.id(pr).host_label(),
        crate::e2e_support::PREVIEW_DOMAIN
    );
    let woke = visit_host(e2e.nginx.port(), &host, "/health?from=sleep").await;
    assert_eq!(woke.body, "host ok\n");
    assert!(woke.redirects + woke.waits > 0, "{woke:?}");
    eprintln!(
        "wake latency without a database (first request through nginx to its 200): {:.2} s",
        woke.took.as_secs_f64()
    );
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}

/// Waits until the daemon's record of `id` is in state `want`; returns it.
async fn wait_daemon_state(daemon: &Daemon, id: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let rec = daemon.preview(id).await.unwrap_or_default();
        if rec["status"]["state"] == want {
            return rec;
        }
        assert!(Instant::now() < deadline, "{id} never {want}: {rec}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The wake of a visit reaches the orchestrator at its address, which a restart keeps (as
/// ORCHESTRATOR_PORT does in production).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_orchestrator_leaves_sleeping_and_waking_previews_wakeable() {
    let api_port = free_port();
    // The app takes a while to listen, so that the kill can land in the middle of a wake.
    let slow = Tree::fixture("python-plain")
        .replace("python-plain ok", "slow ok")
        .replace(
            "if __name__ == \"__main__\":\n",
            "if __name__ == \"__main__\":\n    import time\n    time.sleep(4)\n",
        );
    let world = DaemonWorld::new(
        "sleep-crash",
        &[
            ("--idle-sleep-secs", IDLE_SECS.into()),
            ("--bind", format!("127.0.0.1:{api_port}")),
        ],
    )
    .await;
    let pr = 1;
    let id = world.id(pr);
    let port = world.nginx.port();
    let path = world.path(pr);
    let sha = world.origin.commit(pr, &slow, "slow").await;
    let daemon = world.start();
    world.send(&daemon, "opened", pr, &sha).await;
    wait_daemon_state(&daemon, &id, "sleeping").await;

    // Killed while the preview sleeps: after the restart a visit wakes it.
    daemon.kill9();
    let daemon = world.start();
    assert_eq!(visit(port, &path).await.body, "slow ok\n");

    // Killed while it wakes (the app takes 4 s to listen): after the restart it serves, or a
    // visit wakes it. The visitor may get its 200 before the wake records it: wait for that,
    // then for the next sleep.
    wait_daemon_state(&daemon, &id, "running").await;
    wait_daemon_state(&daemon, &id, "sleeping").await;
    let first = http_get(port, &path).await.expect("the first request");
    assert!(
        matches!(first.status, 503 | 307),
        "the first request joins the wake: {} {}",
        first.headers,
        first.body
    );
    daemon.kill9();
    let daemon = world.start();
    assert_eq!(visit(port, &path).await.body, "slow ok\n");
    let rec = daemon.settled(&id).await;
    assert!(
        rec["status"]["state"] == "running" || rec["status"]["state"] == "sleeping",
        "{rec}"
    );
    world.close_and_check(&daemon, pr, &sha).await;
    daemon.stop().await;
}
