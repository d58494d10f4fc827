//! The whole loop on the real engine, a private nginx, real git and a fake GitHub, for each
//! stdlib sample: a signed `opened` webhook deploys it behind nginx, `synchronize` serves the new
//! commit under the same sticky comment, and `closed` leaves nothing behind. One more run proves
//! `DATABASE_URL` against the preview's own Postgres.

use std::time::Duration;

use preview_orchestrator::DeploymentStatus;
use preview_testkit::wait_for_http;

use crate::e2e_support::{E2e, Tree, eventually};

/// Cold builds share 2 cores with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens PR 2 with `sample` (from fixtures/apps), whose health path answers `{sample} ok`,
/// updates it, closes it, and checks every step through nginx, the fake GitHub, Docker and the
/// filesystem.
async fn open_update_close(sample: &str) {
    let e2e = E2e::start(&format!("e2e-{sample}"), &[]).await;
    let pr = 2;
    let marker = format!("{sample} ok");
    let port = e2e.nginx.port();
    // The apps answer 200 only on `/` and `/health`: a 200 for `{path}health` proves that nginx
    // stripped the prefix.
    let health = format!("{}health", e2e.path(pr));
    let url = e2e.url(pr);

    // opened → live behind nginx
    let first_tree = Tree::fixture(sample).replace(&marker, "e2e first commit");
    let first = e2e.commit(pr, &first_tree, "first").await;
    e2e.send("opened", pr, &first).await;
    let live = wait_for_http(port, &health, LIVE_TIMEOUT, |a| a.status == 200).await;
    assert_eq!(live.body, "e2e first commit\n");
    let comment = e2e
        .wait_comment(pr, &["Preview live", &first], FEEDBACK_TIMEOUT)
        .await;
    assert!(comment.body.contains(&url), "{}", comment.body);
    eventually("a successful deployment", FEEDBACK_TIMEOUT, || {
        e2e.github.deployments().into_iter().find(|d| {
            d.statuses
                .iter()
                .any(|s| s["state"] == "success" && s["environment_url"] == url.as_str())
        })
    })
    .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;

    // synchronize → the new commit serves, still one comment
    let second_tree = Tree::fixture(sample).replace(&marker, "e2e second commit");
    let second = e2e.commit(pr, &second_tree, "second").await;
    e2e.send("synchronize", pr, &second).await;
    let deadline = std::time::Instant::now() + LIVE_TIMEOUT;
    loop {
        let answer = preview_testkit::http_get(port, &health).await;
        if answer
            .as_ref()
            .is_ok_and(|a| a.body == "e2e second commit\n")
        {
            break;
        }
        // Say what the orchestrator made of the update, not only what nginx answers.
        assert!(
            std::time::Instant::now() < deadline,
            "{sample}: the update never served; last answer {answer:?}\nrecord: {:?}\ncomments: {:?}",
            e2e.record(pr),
            e2e.github.comments().last().map(|c| c.body.clone())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e2e.wait_comment(pr, &["Preview live", &second], FEEDBACK_TIMEOUT)
        .await;
    // Each deploy's build log is kept for the dashboard, beside the orchestrator's logs.
    let kept = preview_orchestrator::build_logs::list(
        &e2e.dir.path().join("logs"),
        &e2e.dir.path().join("deployments"),
        &e2e.id(pr),
    );
    let kept_shas: Vec<&str> = kept.iter().map(|k| k.sha.as_str()).collect();
    assert_eq!(kept_shas, [&second[..7], &first[..7]], "{kept:?}");
    assert!(kept.iter().all(|k| k.bytes > 0), "{kept:?}");

    // closed → nothing left
    e2e.close_and_assert_nothing_left(pr, &second).await;
    wait_for_http(port, &health, Duration::from_secs(10), |a| a.status == 404).await;
    e2e.wait_comment(pr, &["Preview closed"], FEEDBACK_TIMEOUT)
        .await;
    e2e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_plain_opens_updates_and_closes() {
    open_update_close("python-plain").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_plain_opens_updates_and_closes() {
    open_update_close("node-plain").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn go_opens_updates_and_closes() {
    open_update_close("go").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_opens_updates_and_closes() {
    open_update_close("rust").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn php_plain_opens_updates_and_closes() {
    open_update_close("php-plain").await;
}

/// The node-postgres sample answers its health path only after `SELECT 40 + 2` over
/// `DATABASE_URL` on the preview's own Postgres (postgres:16-bookworm, Debian's postgresql).
/// Closing removes the database's volume too.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_database_url_reaches_the_preview_database() {
    let e2e = E2e::start("e2e-postgres", &[]).await;
    let pr = 3;
    let sha = e2e
        .commit(pr, &Tree::fixture("node-postgres"), "with a database")
        .await;
    e2e.send("opened", pr, &sha).await;
    let health = format!("{}health", e2e.path(pr));
    let live = wait_for_http(e2e.nginx.port(), &health, LIVE_TIMEOUT, |a| a.status == 200).await;
    assert_eq!(live.body, "node-postgres ok 42\n");
    e2e.wait_comment(pr, &["Preview live", &sha], FEEDBACK_TIMEOUT)
        .await;
    let volumes = preview_testkit::docker([
        "volume",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={}", e2e.id(pr)),
    ])
    .await
    .unwrap();
    assert!(
        volumes.contains("db-data"),
        "the database volume: {volumes}"
    );
    // Only the app publishes a port; the database is reachable on the preview's network only.
    let published = preview_testkit::docker([
        "ps",
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.Ports}}",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={}", e2e.id(pr)),
    ])
    .await
    .unwrap();
    let publishing: Vec<&str> = published
        .lines()
        .filter(|line| line.contains("->"))
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(publishing, ["app"], "{published}");
    assert!(
        published.lines().count() >= 2,
        "app and database: {published}"
    );

    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}
