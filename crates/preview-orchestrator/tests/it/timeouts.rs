//! Timeouts end to end on the real engine: a git host that accepts connections and never
//! answers, and a build step that never ends. Each fails the deploy within its limit
//! (`GIT_TIMEOUT_SECS`, `BUILD_TIMEOUT_SECS`, set small here), says so on the PR, and leaves
//! nothing behind: no Docker objects, conf, work dir or ports, and no process still at it.

use std::time::{Duration, Instant};

use preview_testkit::{docker, unique_suffix};

use preview_orchestrator::{Config, build_logs};

use crate::e2e_support::{E2e, Tree};
use crate::harness::args;

/// Processes whose command line contains `needle`, from `/proc`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && !cmdline.contains("--exact") {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// The wait for the image lock that PR `pr`'s last kept build log tells (zero when none).
fn lock_wait_told(e2e: &E2e, pr: u64) -> Duration {
    let (logs, deployments) = (
        e2e.dir.path().join("logs"),
        e2e.dir.path().join("deployments"),
    );
    let id = e2e.id(pr);
    let last = build_logs::list(&logs, &deployments, &id)
        .into_iter()
        .next()
        .expect("the failed build's log is kept");
    let (text, _) = build_logs::read(&logs, &deployments, &id, &last.name).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(preview_engine::image_lock::WAITED))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .sum()
}

/// Opens PR `pr` at `tree` and waits for it to fail; checks that it failed in `phase` with a
/// timeout of `limit`, no sooner and at most `slack` later (the phases before it, and the
/// cleanup), that the comment says so, and that nothing is left. Returns the time from the
/// delivery to the failure.
async fn expect_timeout(
    e2e: &E2e,
    pr: u64,
    tree: &Tree,
    phase: &str,
    limit: u64,
    slack: Duration,
) -> Duration {
    let sha = e2e.commit(pr, tree, "hangs").await;
    let started = Instant::now();
    e2e.send("opened", pr, &sha).await;
    let reason = e2e.wait_failed(pr, Duration::from_secs(limit + 30)).await;
    let elapsed = started.elapsed();
    assert!(reason.starts_with(&format!("{phase}:")), "{reason}");
    let timed_out = format!("timed out after {limit}s");
    assert!(reason.contains(&timed_out), "{reason}");
    // Waiting for other tests' image removals is not the build's time; its log tells that wait.
    let waited = if phase == "build" {
        lock_wait_told(e2e, pr)
    } else {
        Duration::ZERO
    };
    assert!(
        elapsed >= Duration::from_secs(limit)
            && elapsed < Duration::from_secs(limit) + waited + slack,
        "failed after {elapsed:?}, for a limit of {limit} s and {waited:?} waiting for the image lock"
    );
    let headline = format!("failed in the **{phase}** phase");
    e2e.wait_comment(
        pr,
        &[
            "Preview failed",
            headline.as_str(),
            timed_out.as_str(),
            &sha[..7],
        ],
        Duration::from_secs(30),
    )
    .await;
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(pr).await;
    elapsed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_host_that_never_answers_fails_the_fetch_within_git_timeout() {
    // Accepts every connection and never answers, holding the sockets open so git waits.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let limit = 3;
    let base = format!("http://127.0.0.1:{port}");
    let e2e = E2e::start(
        "timeout-git",
        &[
            ("--git-base-url", base.clone()),
            ("--git-timeout-secs", limit.to_string()),
        ],
    )
    .await;
    // 2.5 s of slack: a second git command (the fallback to the PR's ref) would double the wait.
    let slack = Duration::from_millis(2500);
    let tree = Tree::fixture("python-plain");
    let elapsed = expect_timeout(&e2e, 31, &tree, "fetch", limit, slack).await;
    eprintln!("git timeout {limit} s: the deploy failed after {elapsed:?}");
    let git = processes_with(&format!("127.0.0.1:{port}/"));
    assert!(git.is_empty(), "git still runs: {git:?}");
    silent.abort();
    e2e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_step_that_never_ends_fails_the_build_within_build_timeout() {
    let limit = 5;
    let e2e = E2e::start(
        "timeout-build",
        &[("--build-timeout-secs", limit.to_string())],
    )
    .await;
    let marker = format!("hang-{}", unique_suffix());
    let tree = Tree::fixture("python-plain").with(
        "preview-config.yml",
        format!("build_commands:\n  - \"echo {marker} && sleep 100000\"\n"),
    );
    let slack = Duration::from_secs(4);
    let elapsed = expect_timeout(&e2e, 32, &tree, "build", limit, slack).await;
    eprintln!("build timeout {limit} s: the deploy failed after {elapsed:?}");
    // The step runs in the daemon, not under the killed CLI: it must be gone too, and so must
    // the classic builder's intermediate container.
    let left = processes_with(&marker);
    assert!(left.is_empty(), "the build step still runs: {left:?}");
    let containers = docker(["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
        .await
        .unwrap();
    let stale: Vec<&str> = containers.lines().filter(|l| l.contains(&marker)).collect();
    assert!(stale.is_empty(), "build containers left: {stale:?}");
    e2e.shutdown().await;
}

#[test]
fn the_timeouts_are_settings_with_the_former_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let load = |extra: &[&str]| Config::load(args(dir.path(), extra));
    let c = load(&[]).unwrap();
    assert_eq!((c.git_timeout_secs, c.build_timeout_secs), (300, 900));
    let toml = dir.path().join("orchestrator.toml");
    std::fs::write(&toml, "git_timeout_secs = 7\nbuild_timeout_secs = 11\n").unwrap();
    let file = toml.to_str().unwrap();
    let c = load(&["--config", file]).unwrap();
    assert_eq!((c.git_timeout_secs, c.build_timeout_secs), (7, 11));
    let c = load(&["--config", file, "--git-timeout-secs", "8"]).unwrap();
    assert_eq!((c.git_timeout_secs, c.build_timeout_secs), (8, 11));
    let err = load(&["--build-timeout-secs", "0"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--build-timeout-secs"), "{err}");
}
