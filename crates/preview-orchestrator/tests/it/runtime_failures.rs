//! Failures on the real engine, each a first deploy of a broken app or setup: it must leave
//! nothing behind (containers, networks, volumes, images, nginx conf, work dir, ports), and the
//! sticky comment must name the failing phase and show why. GitHub being down or rate-limited
//! must not fail a deployment at all. A git host that fails at first is retried.

use std::time::Duration;

use preview_orchestrator::DeploymentStatus;
use preview_testkit::{free_port, wait_for_http};

use crate::e2e_support::{E2e, Tree, eventually};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python sample with `main.py` replaced by `source`.
fn python_with(source: &str) -> Tree {
    Tree::fixture("python-plain").with("main.py", source)
}

/// Opens PR `pr` at `tree`, waits for it to fail, and checks that the reason and the sticky
/// comment name `phase` and contain each of `why`, and that nothing is left. Returns the
/// comment's body.
async fn open_and_expect_failure(
    e2e: &E2e,
    pr: u64,
    tree: &Tree,
    phase: &str,
    why: &[&str],
) -> String {
    let sha = e2e.commit(pr, tree, "broken").await;
    e2e.send("opened", pr, &sha).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(reason.starts_with(&format!("{phase}:")), "{reason}");
    let headline = format!("failed in the **{phase}** phase");
    let mut needles = vec!["Preview failed", headline.as_str(), &sha[..7]];
    needles.extend_from_slice(why);
    let comment = e2e.wait_comment(pr, &needles, FEEDBACK_TIMEOUT).await;
    assert!(
        !comment.body.contains("keeps serving"),
        "a first deploy has nothing to keep serving: {}",
        comment.body
    );
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(pr).await;
    eventually("a failed deployment status", FEEDBACK_TIMEOUT, || {
        e2e.github
            .deployments()
            .into_iter()
            .find(|d| d.statuses.iter().any(|s| s["state"] == "failure"))
    })
    .await;
    comment.body
}

/// A compose stack whose images no reachable registry has (none is reachable here): a Bun
/// stage of the web service's Dockerfile, the database and the admin UI. The deploy fails in
/// the images phase before anything is built, and the comment names exactly those three, each
/// with who wants it, and not the Python base image that is here. The same stack on images
/// the host has then goes live.
#[tokio::test(flavor = "multi_thread")]
async fn missing_images_fail_the_images_phase_naming_each_of_them() {
    let e2e = E2e::start("fail-images", &[]).await;
    let comment = open_and_expect_failure(
        &e2e,
        19,
        &Tree::fixture("compose-missing-images"),
        "images",
        &[
            "3 images cannot be had",
            "- `oven/bun:1` (`Dockerfile:2`): ",
            "- `postgres:18` (service `db`): ",
            "- `adminer` (service `adminer`): ",
        ],
    )
    .await;
    assert!(!comment.contains("python:3.12-slim-bookworm"), "{comment}");
    assert!(
        !comment.contains("Last lines of the"),
        "the list says it all, no build log: {comment}"
    );

    // The same stack on images the host has: built and pulled images pass, and it goes live.
    let fixed = Tree::fixture("compose-missing-images")
        .replace("oven/bun:1", "python:3.12-slim-bookworm")
        .replace("postgres:18", "postgres:16-bookworm")
        .replace("image: adminer", "image: redis:7-bookworm");
    let sha = e2e.commit(19, &fixed, "images the host has").await;
    e2e.send("synchronize", 19, &sha).await;
    let health = format!("{}health", e2e.path(19));
    wait_for_http(e2e.nginx.port(), &health, DEPLOY_TIMEOUT, |a| {
        a.status == 200
    })
    .await;
    e2e.wait_comment(19, &["Preview live", &sha], FEEDBACK_TIMEOUT)
        .await;
    e2e.close_and_assert_nothing_left(19, &sha).await;
    e2e.shutdown().await;
}

/// A syntax error that the repo's own build command (`py_compile`) catches: the build step
/// fails, and the comment shows Python's message from the build log.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_error_fails_the_build_phase_and_leaves_nothing() {
    let e2e = E2e::start("fail-build", &[]).await;
    let tree = python_with("def broken(:\n    pass\n").with(
        "preview-config.yml",
        "build_commands:\n  - python3 -m py_compile main.py\n",
    );
    open_and_expect_failure(&e2e, 11, &tree, "build", &["SyntaxError", "py_compile"]).await;
    e2e.shutdown().await;
}

/// The app serves, but its configured health path answers 404: the health phase fails within
/// seconds (not at the 120 s timeout), naming the path, the status and the key that changes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_health_path_that_answers_404_fails_fast() {
    let e2e = E2e::start("fail-health", &[("--health-timeout-secs", "120".into())]).await;
    let tree =
        Tree::fixture("python-plain").with("preview-config.yml", "health_check_path: /never\n");
    let started = std::time::Instant::now();
    open_and_expect_failure(
        &e2e,
        12,
        &tree,
        "health",
        &["/never", "HTTP 404", "health_check_path"],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(110),
        "a settled 404 fails fast, not at the health timeout"
    );
    e2e.shutdown().await;
}

/// A Go app whose dependencies cannot be fetched (the module proxy is unreachable here, as
/// behind a firewall): the build fails within seconds and the comment's headline names the
/// failing Dockerfile step and Go's own error, not the compose command line.
#[tokio::test(flavor = "multi_thread")]
async fn unfetchable_go_dependencies_fail_the_build_naming_the_step() {
    let e2e = E2e::start("fail-godeps", &[]).await;
    let tree = Tree::fixture("go")
        .with(
            "go.mod",
            "module example.com/hello\n\ngo 1.22\n\nrequire github.com/gin-gonic/gin v1.10.0\n",
        )
        .with(
            "main.go",
            "package main\n\nimport \"github.com/gin-gonic/gin\"\n\nfunc main() {\n\tr := gin.Default()\n\tr.GET(\"/\", func(c *gin.Context) { c.String(200, \"hi\") })\n\tr.Run()\n}\n",
        );
    open_and_expect_failure(
        &e2e,
        14,
        &tree,
        "build",
        &["`RUN go mod download` failed: go: github.com/gin-gonic/gin@v1.10.0"],
    )
    .await;
    assert!(
        e2e.github
            .comments()
            .iter()
            .all(|c| !c.body.contains('\u{1b}')),
        "no terminal escape codes reach GitHub"
    );
    e2e.shutdown().await;
}

/// The app exits at start: the health phase fails fast (not after its timeout) and the log
/// tail shows what the app printed.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_exits_at_start_fails_fast_with_its_log() {
    let e2e = E2e::start("fail-exit", &[("--health-timeout-secs", "120".into())]).await;
    let tree = python_with(
        "import sys\nprint('boom: DATABASE_URL is not set', flush=True)\nsys.exit(3)\n",
    );
    let started = std::time::Instant::now();
    open_and_expect_failure(
        &e2e,
        13,
        &tree,
        "health",
        &["boom: DATABASE_URL is not set"],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(110),
        "a crashed app fails fast, not at the health timeout"
    );
    e2e.shutdown().await;
}

/// A repository whose compose file mounts the Docker socket, asks for privileges or refers to
/// the orchestrator's environment is refused by the sanitiser in the plan phase, before anything
/// is built or started, and the comment names the file, service, key and line: of every
/// refusal, one line each in the order of the file, when there are several.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_compose_file_is_refused_in_the_plan_phase() {
    let e2e = E2e::start("fail-compose", &[]).await;
    let tree = Tree::fixture("python-plain").with(
        "docker-compose.preview.yml",
        "services:\n  app:\n    build: .\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n    cap_add: [SYS_ADMIN]\n",
    );
    open_and_expect_failure(
        &e2e,
        14,
        &tree,
        "plan",
        &["failed in the **plan** phase: docker-compose.preview.yml: 2 refusals:\n\
            - docker-compose.preview.yml:4: service `app`: key `volumes`: the Docker socket would give the preview control of the host\n\
            - docker-compose.preview.yml:6: service `app`: key `cap_add`: previews run without added capabilities\n"],
    )
    .await;
    let privileged = Tree::fixture("python-plain").with(
        "docker-compose.preview.yml",
        "services:\n  app:\n    build: .\n    privileged: true\n",
    );
    open_and_expect_failure(&e2e, 15, &privileged, "plan", &["privileged"]).await;
    // The orchestrator's own token, which Compose would take from its environment.
    let token = Tree::fixture("python-plain").with(
        "docker-compose.preview.yml",
        "services:\n  app:\n    build: .\n    environment:\n      TOKEN: ${GITHUB_TOKEN}\n",
    );
    open_and_expect_failure(
        &e2e,
        21,
        &token,
        "plan",
        &[
            "docker-compose.preview.yml:5: service `app`: key `environment`: `GITHUB_TOKEN` is not a variable of this preview",
        ],
    )
    .await;
    e2e.shutdown().await;
}

/// `nginx -t` refuses the configuration (another file in the include dir is broken): the new
/// preview's conf is taken out again, the preview fails and is removed, and the preview that
/// was already live keeps its conf and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_test_failure_restores_the_config_and_removes_the_preview() {
    let e2e = E2e::start("fail-nginx", &[]).await;
    let port = e2e.nginx.port();
    let live_pr = 16;
    let sha = e2e
        .commit(live_pr, &Tree::fixture("python-plain"), "live")
        .await;
    e2e.send("opened", live_pr, &sha).await;
    let health = format!("{}health", e2e.path(live_pr));
    wait_for_http(port, &health, DEPLOY_TIMEOUT, |a| a.status == 200).await;
    e2e.wait_status(live_pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    let live_conf = e2e
        .nginx
        .conf_dir()
        .join(format!("{}.conf", e2e.id(live_pr)));
    let before = std::fs::read_to_string(&live_conf).unwrap();

    let broken = e2e.nginx.conf_dir().join("zz-broken.conf");
    std::fs::write(&broken, "this_is_not_a_directive on;\n").unwrap();
    open_and_expect_failure(
        &e2e,
        17,
        &Tree::fixture("python-plain"),
        "route",
        &["unknown directive", "this_is_not_a_directive"],
    )
    .await;
    assert_eq!(std::fs::read_to_string(&live_conf).unwrap(), before);
    let confs: Vec<String> = std::fs::read_dir(e2e.nginx.conf_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        confs.len(),
        2,
        "the live conf and the broken file: {confs:?}"
    );
    wait_for_http(port, &health, Duration::from_secs(10), |a| {
        a.status == 200 && a.body == "python-plain ok\n"
    })
    .await;

    std::fs::remove_file(&broken).unwrap();
    e2e.send("closed", live_pr, &sha).await;
    e2e.wait_status(live_pr, DeploymentStatus::Stopped, Duration::from_secs(120))
        .await;
    e2e.assert_nothing_left(live_pr).await;
    e2e.shutdown().await;
}

/// GitHub answers every call with 500, then with a 403 rate limit that lifts in an hour:
/// deployments go live all the same. Once GitHub is back, the next update writes the one
/// sticky comment.
#[tokio::test(flavor = "multi_thread")]
async fn github_down_or_rate_limited_never_fails_a_deployment() {
    let e2e = E2e::start("fail-github", &[]).await;
    let pr = 18;
    let port = e2e.nginx.port();
    let health = format!("{}health", e2e.path(pr));
    let tree = |body: &str| Tree::fixture("python-plain").replace("python-plain ok", body);

    e2e.github.fail_all(500, &[]);
    let first = e2e.commit(pr, &tree("while github is down"), "first").await;
    e2e.send("opened", pr, &first).await;
    wait_for_http(port, &health, DEPLOY_TIMEOUT, |a| {
        a.body == "while github is down\n"
    })
    .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    eventually("calls to the failing GitHub", FEEDBACK_TIMEOUT, || {
        (!e2e.github.calls().is_empty()).then_some(())
    })
    .await;
    assert!(e2e.github.comments().is_empty());

    let reset = (jiff::Timestamp::now().as_second() + 3600).to_string();
    e2e.github.fail_all(
        403,
        &[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ],
    );
    let calls_before = e2e.github.calls().len();
    let second = e2e.commit(pr, &tree("while rate-limited"), "second").await;
    e2e.send("synchronize", pr, &second).await;
    wait_for_http(port, &health, DEPLOY_TIMEOUT, |a| {
        a.body == "while rate-limited\n"
    })
    .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;
    eventually("calls to the rate-limited GitHub", FEEDBACK_TIMEOUT, || {
        (e2e.github.calls().len() > calls_before).then_some(())
    })
    .await;
    assert!(e2e.github.comments().is_empty());

    e2e.github.recover();
    let third = e2e.commit(pr, &tree("github is back"), "third").await;
    e2e.send("synchronize", pr, &third).await;
    wait_for_http(port, &health, DEPLOY_TIMEOUT, |a| {
        a.body == "github is back\n"
    })
    .await;
    e2e.wait_comment(pr, &["Preview live", &third], FEEDBACK_TIMEOUT)
        .await;

    e2e.close_and_assert_nothing_left(pr, &third).await;
    e2e.shutdown().await;
}

/// The git host refuses the first fetches (HTTP 503 from a real `git http-backend`), then
/// serves: the fetch is retried with backoff and the preview goes live.
#[tokio::test(flavor = "multi_thread")]
async fn a_git_host_that_hiccups_is_retried() {
    let port = free_port();
    let e2e = E2e::start(
        "retry-git",
        &[("--git-base-url", format!("http://127.0.0.1:{port}"))],
    )
    .await;
    let server =
        crate::e2e_support::GitHttpServer::start(port, e2e.dir.path().join("git"), 2).await;
    let pr = 19;
    let sha = e2e
        .commit(pr, &Tree::fixture("python-plain"), "behind a flaky host")
        .await;
    e2e.send("opened", pr, &sha).await;
    wait_for_http(
        e2e.nginx.port(),
        &format!("{}health", e2e.path(pr)),
        DEPLOY_TIMEOUT,
        |a| a.status == 200,
    )
    .await;
    assert!(server.refused() >= 2, "the first fetches were refused");
    assert!(server.served() > 0, "a retry fetched");
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}

/// An update whose new commit crashes at start: the previous commit, never touched (the new one
/// started beside it), keeps serving at the same URL, and the comment says so. Closing then
/// leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_update_rolls_back_and_the_previous_commit_keeps_serving() {
    let e2e = E2e::start("fail-update", &[]).await;
    let pr = 20;
    let port = e2e.nginx.port();
    let health = format!("{}health", e2e.path(pr));
    let good = Tree::fixture("python-plain").replace("python-plain ok", "the good commit");
    let first = e2e.commit(pr, &good, "good").await;
    e2e.send("opened", pr, &first).await;
    wait_for_http(port, &health, DEPLOY_TIMEOUT, |a| {
        a.body == "the good commit\n"
    })
    .await;
    e2e.wait_status(pr, DeploymentStatus::Running, FEEDBACK_TIMEOUT)
        .await;

    let crash = python_with("import sys\nprint('boom at start', flush=True)\nsys.exit(3)\n");
    let second = e2e.commit(pr, &crash, "crashes").await;
    e2e.send("synchronize", pr, &second).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(reason.starts_with("health:"), "{reason}");
    e2e.wait_comment(
        pr,
        &[
            "Preview failed",
            &second[..7],
            "boom at start",
            "keeps serving",
            &first[..7],
        ],
        FEEDBACK_TIMEOUT,
    )
    .await;
    e2e.idle(Duration::from_secs(120)).await;
    wait_for_http(port, &health, Duration::from_secs(30), |a| {
        a.status == 200 && a.body == "the good commit\n"
    })
    .await;
    assert_eq!(
        e2e.record(pr)
            .and_then(|r| r.deployed_sha)
            .map(|s| s.to_string()),
        Some(first.clone())
    );

    e2e.close_and_assert_nothing_left(pr, &second).await;
    e2e.shutdown().await;
}
