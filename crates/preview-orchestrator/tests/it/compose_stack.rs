//! A repository's own compose stack through the whole loop on the real engine, a private nginx,
//! real git and a fake GitHub: `fixtures/apps/compose-stack` (a web app built from the repo,
//! Postgres, Redis, a one-shot migration the web app waits on and a file secret) opens, updates,
//! sleeps and wakes without running its migration again, and closes.

use std::time::Duration;

use preview_orchestrator::DeploymentStatus;
use preview_testkit::{docker, wait_for_http};

use crate::e2e_support::{E2e, Tree, visit};
use crate::harness::TOKEN;

/// Cold builds share 2 cores with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// `service state`, with `(code)` for an exited one, of each container of the preview, sorted.
async fn containers(id: &str) -> Vec<String> {
    let out = docker([
        "ps",
        "-a",
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.State}} {{.Status}}",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
    ])
    .await
    .unwrap();
    let mut rows: Vec<String> = out
        .lines()
        .map(|line| {
            let mut words = line.splitn(3, ' ');
            let service = words.next().unwrap_or_default();
            let state = words.next().unwrap_or_default();
            // "Exited (0) 3 seconds ago"
            let code = words
                .next()
                .filter(|_| state == "exited")
                .and_then(|status| status.split_once('('))
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(code, _)| format!(" ({code})"))
                .unwrap_or_default();
            format!("{service} {state}{code}")
        })
        .collect();
    rows.sort();
    rows
}

/// Waits until the stack runs as it should: the migration done once (not restarting in a loop),
/// everything else running, the web app in one slot only (an update's old slot retired).
async fn assert_running_with_migration_done(id: &str) {
    let deadline = std::time::Instant::now() + FEEDBACK_TIMEOUT;
    loop {
        let rows = containers(id).await;
        let web = rows.get(3).map(String::as_str);
        if rows.len() == 4
            && rows[..3] == ["cache running", "db running", "migrate exited (0)"]
            && matches!(web, Some("web running" | "web-green running"))
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The API and the dashboard's page list the stack's services as the engine runs them: the
/// migration as a task that is done, the others running.
async fn assert_services_shown(e2e: &E2e, id: &str) {
    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("{}{path}", e2e.api)).bearer_auth(TOKEN);
    let answer = get(format!("/api/previews/{id}/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let rows: Vec<String> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                s["service"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
                s["exitCode"],
                s["oneShot"]
            )
        })
        .collect();
    assert_eq!(
        rows[..3],
        [
            "cache running null false",
            "db running null false",
            "migrate exited 0 true"
        ],
        "{body}"
    );
    assert!(rows[3].starts_with("web"), "{body}");
    let migrate = &body["services"][2];
    assert!(
        migrate["status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (0)"),
        "{body}"
    );
    let missing = get("/api/previews/octo-org-nothing-pr-1/services".into())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let page = get(format!("/dashboard/previews/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = page
        .split_once("<table id=\"services\">")
        .and_then(|(_, rest)| rest.split_once("</table>"))
        .map(|(table, _)| table)
        .unwrap_or_else(|| panic!("a services table: {page}"));
    for row in [
        "<td>migrate <span class=\"muted\">(task)</span></td>",
        "<span class=\"state state-running\">done</span>",
        "<td>db</td>",
        "<td>cache</td>",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
}

/// A container made by hand, removed when dropped, also when the test fails (Compose does not
/// take it for one of the project's, so the failed test's cleanup would leave it).
struct RemovedOnDrop(String);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force", &self.0])
            .output();
    }
}

/// When the container of `service` last started, as Docker says.
async fn started_at(id: &str, service: &str) -> String {
    let container = docker([
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ])
    .await
    .unwrap();
    docker(["inspect", "-f", "{{.State.StartedAt}}", container.trim()])
        .await
        .unwrap()
        .trim()
        .to_owned()
}

/// The id of the running container of `service`.
async fn container_id(id: &str, service: &str) -> String {
    docker([
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ])
    .await
    .unwrap()
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repos_own_compose_stack_opens_updates_and_closes() {
    // Sleep on request only (the API), so that the wake is this test's own.
    let e2e = E2e::start("compose-stack", &[("--idle-sleep-minutes", "600".into())]).await;
    let pr = 4;
    let id = e2e.id(pr);
    let port = e2e.nginx.port();
    let path = e2e.path(pr);

    // opened → the migration ran before the web app, which reads it from Postgres
    let first = e2e
        .commit(pr, &Tree::fixture("compose-stack"), "first")
        .await;
    e2e.send("opened", pr, &first).await;
    let live = wait_for_http(port, &path, LIVE_TIMEOUT, |a| a.status == 200).await;
    assert!(
        live.body.starts_with(
            "web: compose-stack first commit\nmigration: compose-stack first migration\nmigrations: 1\ngreeting: hello from a file secret\nhits: "
        ),
        "{}",
        live.body
    );
    e2e.wait_comment(pr, &["Preview live", &first], FEEDBACK_TIMEOUT)
        .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    assert_running_with_migration_done(id.as_str()).await;
    assert_services_shown(&e2e, id.as_str()).await;
    // Only the web service publishes a port, on 127.0.0.1; the repo's 8000:8000 is dropped.
    let published = docker([
        "ps",
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.Ports}}",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
    ])
    .await
    .unwrap();
    let publishing: Vec<&str> = published.lines().filter(|l| l.contains("->")).collect();
    assert_eq!(publishing.len(), 1, "{published}");
    assert!(
        publishing[0].starts_with("web") && publishing[0].contains("127.0.0.1:"),
        "{published}"
    );
    assert!(!published.contains(":8000->"), "{published}");
    let db = container_id(id.as_str(), "db").await;
    let cache = container_id(id.as_str(), "cache").await;
    assert!(!db.is_empty() && !cache.is_empty());

    // synchronize → the new commit's migration runs before its web app, on the same database
    let second_tree = Tree::fixture("compose-stack").replace("first", "second");
    let second = e2e.commit(pr, &second_tree, "second").await;
    e2e.send("synchronize", pr, &second).await;
    let updated = wait_for_http(port, &path, LIVE_TIMEOUT, |a| {
        a.status == 200 && a.body.starts_with("web: compose-stack second commit")
    })
    .await;
    assert!(
        updated.body.starts_with(
            "web: compose-stack second commit\nmigration: compose-stack second migration\nmigrations: 2\ngreeting: hello from a file secret\nhits: "
        ),
        "the migration ran again before the new web app, on the kept database: {}",
        updated.body
    );
    e2e.wait_comment(pr, &["Preview live", &second], FEEDBACK_TIMEOUT)
        .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    assert_eq!(container_id(id.as_str(), "db").await, db, "db kept");
    assert_eq!(
        container_id(id.as_str(), "cache").await,
        cache,
        "cache kept"
    );
    // The first commit's slot is retired, and the migration did not run again for it.
    assert_running_with_migration_done(id.as_str()).await;
    let after = preview_testkit::http_get(port, &path).await.unwrap();
    assert!(
        after.body.contains("\nmigrations: 2\n"),
        "the migration ran once per commit: {}",
        after.body
    );

    // sleep → every container stops; a visit wakes the stack, and the migration, done before
    // the sleep, does not run again (its container is not started again).
    let migrate_started = started_at(id.as_str(), "migrate").await;
    // A container of a service the file no longer has (what a failed retirement leaves) does
    // not stop the wake: the wake names the file's services, not the containers'.
    let stray = docker([
        "run",
        "-d",
        "--label",
        &format!("com.docker.compose.project={id}"),
        "--label",
        "com.docker.compose.service=gone",
        "--label",
        "com.docker.compose.oneoff=False",
        "--label",
        &format!("dev.preview-deployer.deployment={id}"),
        "debian:bookworm-slim",
        "sleep",
        "infinity",
    ])
    .await
    .unwrap();
    let stray = RemovedOnDrop(stray.trim().to_owned());
    let (status, body) = e2e.ask_to_sleep(id.as_str()).await;
    assert_eq!(status, 200, "{body}");
    e2e.wait_status(pr, DeploymentStatus::Sleeping, FEEDBACK_TIMEOUT)
        .await;
    let woke = visit(port, &path).await;
    assert!(
        woke.waits + woke.redirects > 0 && woke.body.contains("\nmigrations: 2\n"),
        "the stack woke on the kept database, and its migration did not run again: {woke:?}"
    );
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    drop(stray);
    assert_running_with_migration_done(id.as_str()).await;
    assert_eq!(
        started_at(id.as_str(), "migrate").await,
        migrate_started,
        "the wake started the finished migration again"
    );
    eprintln!(
        "wake of the compose stack (first request through nginx to its 200): {:.2} s",
        woke.took.as_secs_f64()
    );

    // closed → nothing left: containers, the database's volume, networks, built images
    e2e.close_and_assert_nothing_left(pr, &second).await;
    wait_for_http(port, &path, Duration::from_secs(10), |a| a.status == 404).await;
    e2e.shutdown().await;
}
