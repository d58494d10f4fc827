//! Zero-downtime updates on the real engine, a private nginx, real git and a fake GitHub: while a
//! client sends a request through nginx every 50 ms, `synchronize` replaces the serving commit,
//! and not one request may fail (any status but 200, or a connection error). The new commit
//! serves at the end, its containers are the only app containers left, and the old app port is
//! given back. With a database, the database container is the same one throughout (never
//! stopped or recreated) and its data is still there.
//!
//! The figures of each update (time from the webhook to the new commit served through nginx,
//! and to the job's end, which includes draining the old port) are printed, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use preview_orchestrator::DeploymentStatus;
use preview_testkit::{http_get, wait_for_http};

use crate::e2e_support::{E2e, Tree, eventually};

/// Cold builds share 2 cores with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// The steady client's period.
const EVERY: Duration = Duration::from_millis(50);

/// One request of the steady client: when it was sent, and its status and body or its error.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    answer: Result<(u16, String), String>,
}

impl Sample {
    fn ok(&self) -> bool {
        matches!(&self.answer, Ok((200, _)))
    }
}

/// A client that GETs `path` through nginx every [`EVERY`] until stopped.
struct SteadyClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl SteadyClient {
    fn start(port: u16, path: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = Instant::now();
                let answer = match http_get(port, &path).await {
                    Ok(a) => Ok((a.status, a.body)),
                    Err(e) => Err(e.to_string()),
                };
                samples.push(Sample { at, answer });
            }
            samples
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the steady client")
    }
}

/// Waits until nginx answers `path` with `body` ten times in a row: after a reload, old workers
/// may answer with the previous config for a moment, and the update under test must not be
/// blamed for what the deploy before it left in flight.
async fn wait_stable(port: u16, path: &str, body: &str) {
    let expected = format!("{body}\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let good = http_get(port, path)
            .await
            .is_ok_and(|a| a.status == 200 && a.body == expected);
        in_a_row = if good { in_a_row + 1 } else { 0 };
        assert!(
            Instant::now() < deadline,
            "{path} never answered {body:?} steadily"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// What one update looked like from the steady client.
struct UpdateFigures {
    /// Webhook to the first answer of the new commit through nginx.
    to_served: Duration,
    /// Webhook to the record running at the new commit (the job's end, drain included).
    to_done: Duration,
    requests: usize,
}

/// Sends `synchronize` for PR `pr`, serving `serving` now, at a commit answering `body` while
/// the steady client runs; requires zero failed requests and `body` served at the end.
async fn update_under_load(
    e2e: &E2e,
    pr: u64,
    serving: &str,
    tree: &Tree,
    body: &str,
) -> UpdateFigures {
    let port = e2e.nginx.port();
    let path = format!("{}health", e2e.path(pr));
    let sha = e2e.commit(pr, tree, body).await;
    wait_stable(port, &path, serving).await;
    let client = SteadyClient::start(port, path.clone());
    // Some answers of the old commit first: the client works before the update starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    e2e.send("synchronize", pr, &sha).await;
    let expected = format!("{body}\n");
    eventually(&format!("PR {pr} running at {sha}"), LIVE_TIMEOUT, || {
        e2e.record(pr).filter(|r| {
            r.status == DeploymentStatus::Running
                && r.deployed_sha.as_ref().is_some_and(|s| s.as_str() == sha)
        })
    })
    .await;
    let to_done = sent.elapsed();
    // The record runs once the old commit is retired; a little more of the new one after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = client.finish().await;
    let failures: Vec<&Sample> = samples.iter().filter(|s| !s.ok()).collect();
    let first_new = samples
        .iter()
        .find(|s| matches!(&s.answer, Ok((200, b)) if *b == expected))
        .map(|s| s.at.saturating_duration_since(sent));
    let last = samples.last().expect("the client sent requests");
    // nginx's old workers may still answer with the old commit for a moment after a reload.
    let old_after_new = samples
        .iter()
        .skip_while(|s| !matches!(&s.answer, Ok((200, b)) if *b == expected))
        .filter(|s| !matches!(&s.answer, Ok((200, b)) if *b == expected))
        .count();
    eprintln!(
        "zero-downtime update of PR {pr}: {} requests every {} ms, {} failed, {old_after_new} answered by the old commit after the first new answer; new commit served {:.2} s after the webhook, job done after {:.2} s",
        samples.len(),
        EVERY.as_millis(),
        failures.len(),
        first_new.unwrap_or_default().as_secs_f64(),
        to_done.as_secs_f64(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the update: {:#?}",
        failures.len(),
        samples.len(),
        failures
            .iter()
            .map(|s| (s.at.saturating_duration_since(sent), &s.answer))
            .collect::<Vec<_>>()
    );
    assert!(
        matches!(&last.answer, Ok((200, b)) if *b == expected),
        "the new commit serves at the end: {last:?}"
    );
    UpdateFigures {
        to_served: first_new.expect("the new commit was served"),
        to_done,
        requests: samples.len(),
    }
}

/// One app container publishes a port, the allocation's app port, which answers `body`; no
/// second port is held and no next compose file is left.
async fn assert_one_app(e2e: &E2e, pr: u64, body: &str) {
    let id = e2e.id(pr);
    let ports = e2e
        .orch
        .store()
        .ports(&id)
        .expect("a running preview holds ports");
    assert_eq!(ports.next_app, None, "the second app port is given back");
    let published = preview_testkit::docker([
        "ps",
        "-a",
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.Ports}}",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
    ])
    .await
    .unwrap();
    let apps: Vec<&str> = published.lines().filter(|l| l.contains("->")).collect();
    assert_eq!(apps.len(), 1, "one app container: {published}");
    assert!(
        apps[0].contains(&format!("127.0.0.1:{}->", ports.app)),
        "it publishes the allocated app port {}: {published}",
        ports.app
    );
    let direct = http_get(ports.app, "/health").await.unwrap();
    assert_eq!(direct.body, format!("{body}\n"));
    let work = e2e.dir.path().join("deployments").join(id.as_str());
    assert!(!work.join("docker-compose.next.yml").exists());
}

/// The Python stdlib sample answering `body` on its health path.
fn python_serving(body: &str) -> Tree {
    Tree::fixture("python-plain").replace("python-plain ok", body)
}

/// Opens PR `pr` with [`python_serving`]`(body)` and waits until nginx serves it and its record
/// is running; returns the sha and the health path through nginx.
async fn open_serving(e2e: &E2e, pr: u64, body: &str) -> (String, String) {
    let sha = e2e.commit(pr, &python_serving(body), "serving").await;
    e2e.send("opened", pr, &sha).await;
    let health = format!("{}health", e2e.path(pr));
    let expected = format!("{body}\n");
    wait_for_http(e2e.nginx.port(), &health, LIVE_TIMEOUT, |a| {
        a.body == expected
    })
    .await;
    e2e.wait_status(pr, DeploymentStatus::Running, Duration::from_secs(30))
        .await;
    (sha, health)
}

/// Three updates of the Python stdlib sample under a steady client, then a close that leaves
/// nothing (both slots' containers and images included).
#[tokio::test(flavor = "multi_thread")]
async fn updates_fail_no_request() {
    let e2e = E2e::start("zero-downtime", &[]).await;
    let pr = 4;
    let (first, _health) = open_serving(&e2e, pr, "zd commit 0").await;

    let mut figures = Vec::new();
    for n in 1..=3 {
        let body = format!("zd commit {n}");
        let serving = format!("zd commit {}", n - 1);
        figures.push(update_under_load(&e2e, pr, &serving, &python_serving(&body), &body).await);
        assert_one_app(&e2e, pr, &body).await;
    }
    let requests: usize = figures.iter().map(|f| f.requests).sum();
    let served: Vec<String> = figures
        .iter()
        .map(|f| format!("{:.2}", f.to_served.as_secs_f64()))
        .collect();
    let done: Vec<String> = figures
        .iter()
        .map(|f| format!("{:.2}", f.to_done.as_secs_f64()))
        .collect();
    eprintln!(
        "zero-downtime updates: {requests} requests, 0 failed; webhook to new commit served (s): {}; webhook to job done (s): {}",
        served.join(", "),
        done.join(", ")
    );

    e2e.close_and_assert_nothing_left(pr, &first).await;
    e2e.shutdown().await;
}

/// The node-postgres sample answers only after a query on its Postgres: an update under the
/// steady client fails no request, and the database container is the same one before and after
/// (same id, same start time), with a table written before the update still there.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_keeps_the_database_running() {
    let e2e = E2e::start("zero-downtime-db", &[]).await;
    let pr = 5;
    let first = e2e
        .commit(pr, &Tree::fixture("node-postgres"), "with a database")
        .await;
    e2e.send("opened", pr, &first).await;
    let health = format!("{}health", e2e.path(pr));
    wait_for_http(e2e.nginx.port(), &health, LIVE_TIMEOUT, |a| a.status == 200).await;
    e2e.wait_status(pr, DeploymentStatus::Running, Duration::from_secs(30))
        .await;
    let id = e2e.id(pr);
    let db = || async {
        preview_testkit::docker([
            "ps",
            "--format",
            "{{.ID}}",
            "--filter",
            &format!("label=com.docker.compose.project={id}"),
            "--filter",
            "label=com.docker.compose.service=db",
        ])
        .await
        .unwrap()
        .trim()
        .to_owned()
    };
    let started_at = |container: String| async move {
        preview_testkit::docker(["inspect", "--format", "{{.State.StartedAt}}", &container])
            .await
            .unwrap()
            .trim()
            .to_owned()
    };
    let psql = |container: String, sql: &'static str| async move {
        preview_testkit::docker([
            "exec", &container, "psql", "-U", "preview", "-d", "preview", "-tAc", sql,
        ])
        .await
        .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
        .trim()
        .to_owned()
    };
    let db_before = db().await;
    assert!(!db_before.is_empty(), "the database runs");
    let db_started = started_at(db_before.clone()).await;
    psql(
        db_before.clone(),
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the update')",
    )
    .await;

    let tree = Tree::fixture("node-postgres").replace("node-postgres ok", "node-postgres updated");
    update_under_load(
        &e2e,
        pr,
        "node-postgres ok 42",
        &tree,
        "node-postgres updated 42",
    )
    .await;

    let db_after = db().await;
    assert_eq!(db_after, db_before, "the same database container");
    assert_eq!(
        started_at(db_after.clone()).await,
        db_started,
        "never restarted"
    );
    assert_eq!(
        psql(db_after, "SELECT v FROM kept").await,
        "before the update"
    );
    assert_one_app(&e2e, pr, "node-postgres updated 42").await;

    e2e.close_and_assert_nothing_left(pr, &first).await;
    e2e.shutdown().await;
}

/// The serving app container of PR `pr` (the one publishing the allocated app port) and its
/// start time.
async fn serving_container(e2e: &E2e, pr: u64) -> (String, String) {
    let id = e2e.id(pr);
    let port = e2e.orch.store().ports(&id).expect("ports").app;
    let container = preview_testkit::docker([
        "ps",
        "--format",
        "{{.ID}}",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--filter",
        &format!("publish={port}"),
    ])
    .await
    .unwrap()
    .trim()
    .to_owned();
    assert!(!container.is_empty(), "a container publishes port {port}");
    let started =
        preview_testkit::docker(["inspect", "--format", "{{.State.StartedAt}}", &container])
            .await
            .unwrap()
            .trim()
            .to_owned();
    (container, started)
}

/// A rollback fails no request either: an update whose new commit crashes at start, under the
/// steady client, leaves the serving container as it was (same id, never restarted), gives the
/// second port back and removes the new slot's container and image.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_update_fails_no_request_and_leaves_the_serving_commit_untouched() {
    let e2e = E2e::start("zero-downtime-fail", &[]).await;
    let pr = 6;
    let (_first, health) = open_serving(&e2e, pr, "the good commit").await;
    let serving_before = serving_container(&e2e, pr).await;
    let ports_before = e2e.orch.store().ports(&e2e.id(pr));

    wait_stable(e2e.nginx.port(), &health, "the good commit").await;
    let client = SteadyClient::start(e2e.nginx.port(), health);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crash = Tree::fixture("python-plain").with(
        "main.py",
        "import sys\nprint('boom at start', flush=True)\nsys.exit(3)\n",
    );
    let second = e2e.commit(pr, &crash, "crashes").await;
    e2e.send("synchronize", pr, &second).await;
    let reason = e2e.wait_failed(pr, LIVE_TIMEOUT).await;
    assert!(reason.starts_with("health:"), "{reason}");
    e2e.idle(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = client.finish().await;
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(&s.answer, Ok((200, b)) if b == "the good commit\n"))
        .collect();
    eprintln!(
        "failed update under the steady client: {} requests, {} not answered by the serving commit",
        samples.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(serving_container(&e2e, pr).await, serving_before);
    assert_eq!(e2e.orch.store().ports(&e2e.id(pr)), ports_before);
    assert_one_app(&e2e, pr, "the good commit").await;
    let left = e2e.leftovers(pr).await;
    let images: Vec<&String> = left.iter().filter(|o| o.starts_with("image ")).collect();
    assert_eq!(images.len(), 1, "only the serving commit's image: {left:?}");

    e2e.close_and_assert_nothing_left(pr, &second).await;
    e2e.shutdown().await;
}

/// What an update killed after its start beside the serving commit leaves, when no job resumes
/// it (a second port, the next compose file, a container in the green slot): the reconcile sweep
/// removes it and leaves the serving container alone.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_clears_a_half_finished_start_beside() {
    let e2e = E2e::start("zero-downtime-reconcile", &[]).await;
    let pr = 7;
    let (sha, health) = open_serving(&e2e, pr, "zd serving").await;
    e2e.idle(Duration::from_secs(60)).await;
    let id = e2e.id(pr);
    let serving = serving_container(&e2e, pr).await;

    let next = e2e
        .orch
        .store()
        .allocate_next_app_port(&id, &std::collections::BTreeSet::new())
        .await
        .unwrap();
    let work = e2e.dir.path().join("deployments").join(id.as_str());
    std::fs::copy(
        work.join("docker-compose.yml"),
        work.join("docker-compose.next.yml"),
    )
    .unwrap();
    let image = format!("{id}-app");
    let left = preview_testkit::docker([
        "run",
        "-d",
        "--label",
        &format!("com.docker.compose.project={id}"),
        "--label",
        "com.docker.compose.service=app-green",
        "--label",
        &format!("dev.preview-deployer.deployment={id}"),
        "--label",
        "dev.preview-deployer.slot=green",
        "-p",
        &format!("127.0.0.1:{next}:8000"),
        &image,
    ])
    .await
    .unwrap()
    .trim()
    .to_owned();

    let report =
        preview_orchestrator::deploy::reconcile::reconcile(&e2e.runner, e2e.orch.scheduler()).await;
    assert!(report.cleared.contains(id.as_str()), "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    let gone = preview_testkit::docker(["ps", "-a", "-q", "--filter", &format!("id={left}")])
        .await
        .unwrap();
    assert!(gone.trim().is_empty(), "the green container is removed");
    assert_eq!(serving_container(&e2e, pr).await, serving);
    assert_one_app(&e2e, pr, "zd serving").await;
    wait_for_http(e2e.nginx.port(), &health, Duration::from_secs(10), |a| {
        a.body == "zd serving\n"
    })
    .await;

    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}
