//! Official upstream starters go live exactly as their generators write them, with no
//! `preview-config.yml` (one added line for Django, below). `scripts/upstream-starters.sh` (run by the test bed) makes them
//! from the npm registry and PyPI with pinned generators into `/opt/preview-testbed/upstream`;
//! each `<name>.source` there says which package, version and command made it. Nothing of them
//! is committed. Each goes through a signed `opened` webhook, the real engine and a private nginx,
//! serves its own page at its preview URL, and leaves nothing behind when closed.
//!
//! The one addition to any of them is Django's `requirements.txt`, the single line
//! `Django==<the version that generated it>`: `startproject` writes no dependency file, and every
//! user adds one. Its settings stay as generated (DEBUG = True, ALLOWED_HOSTS = [], SQLite), which
//! admits the Host nginx passes here (`localhost`) but would answer 400 on a real preview domain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_orchestrator::DeploymentStatus;
use preview_testkit::http_get;
use tokio::sync::Semaphore;

use crate::e2e_support::{E2e, Tree, eventually};

/// A cold NestJS build (npm install of the starter's devDependencies, then `nest build`) on 2
/// cores shared with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(600);
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Two apps build at once: the machine has 2 cores.
const PARALLEL: usize = 2;

/// One upstream starter: its directory under the cache and a string its own `/` page contains.
struct Starter {
    name: &'static str,
    page: &'static str,
}

static STARTERS: [Starter; 5] = [
    // The slowest first, so the other builds overlap it.
    Starter {
        name: "nestjs",
        page: "Hello World!",
    },
    Starter {
        name: "express",
        page: "Welcome to Express",
    },
    Starter {
        name: "fastapi",
        page: r#"{"message":"Hello World"}"#,
    },
    Starter {
        name: "flask",
        page: "<title>JavaScript Example",
    },
    // DEBUG = True and no URL at `/`: Django's own "install worked" page, with status 404.
    Starter {
        name: "django",
        page: "The install worked successfully! Congratulations!",
    },
];

/// Where `scripts/upstream-starters.sh` put the starters.
pub fn upstream_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UPSTREAM_DIR") {
        return dir.into();
    }
    let tools = std::env::var_os("TESTBED_TOOLS").unwrap_or_else(|| "/opt/preview-testbed".into());
    PathBuf::from(tools).join("upstream")
}

/// The starter's tree and the line saying where it came from; panics with the fix if missing.
pub fn load(root: &Path, name: &str) -> (Tree, String) {
    let source = std::fs::read_to_string(root.join(format!("{name}.source"))).unwrap_or_else(|e| {
        panic!(
            "the upstream starter {name} is missing from {} ({e}); scripts/testbed.sh makes it \
             (scripts/upstream-starters.sh, from the npm registry and PyPI)",
            root.display()
        )
    });
    (Tree::dir(&root.join(name)), source.trim().to_owned())
}

/// Deploys one starter on its own orchestrator, checks its page through nginx, closes it and
/// checks that nothing is left. Returns the time from the webhook to its page being served.
async fn go_live(starter: &Starter, tree: Tree) -> Result<Duration, String> {
    let e2e = E2e::start(&format!("up-{}", starter.name), &[]).await;
    let pr = 1;
    assert!(
        !tree.0.contains_key("preview-config.yml"),
        "{}: upstream ships no preview-config.yml",
        starter.name
    );
    let sha = e2e.commit(pr, &tree, "upstream starter, unchanged").await;
    let started = Instant::now();
    e2e.send("opened", pr, &sha).await;

    let path = e2e.path(pr);
    let port = e2e.nginx.port();
    let outcome = eventually(
        &format!("{} to go live or fail", starter.name),
        LIVE_TIMEOUT,
        || match e2e.record(pr).map(|r| r.status) {
            Some(DeploymentStatus::Running) => Some(Ok(())),
            Some(DeploymentStatus::Failed { reason }) => Some(Err(reason)),
            _ => None,
        },
    )
    .await;
    let result = match outcome {
        Ok(()) => {
            // nginx may still answer from its old workers for a moment after the reload.
            let deadline = Instant::now() + FEEDBACK_TIMEOUT;
            let mut last: String;
            loop {
                match http_get(port, &path).await {
                    Ok(answer) if answer.body.contains(starter.page) => {
                        break Ok(started.elapsed());
                    }
                    Ok(answer) => last = format!("{} {}", answer.status, answer.body),
                    Err(err) => last = err.to_string(),
                }
                if Instant::now() > deadline {
                    break Err(format!(
                        "live, but GET {path} through nginx does not show {:?}; last: {last}",
                        starter.page
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(reason) => {
            let comments: Vec<String> = e2e
                .github
                .comments()
                .into_iter()
                .filter(|c| c.pr == pr && e2e.repo.eq_ignore_ascii_case(&c.repo))
                .map(|c| c.body)
                .collect();
            Err(format!(
                "failed: {reason}\nPR comment:\n{}",
                comments.join("\n---\n")
            ))
        }
    };
    if result.is_ok() {
        e2e.wait_comment(pr, &["Preview live", &sha, &e2e.url(pr)], FEEDBACK_TIMEOUT)
            .await;
    }

    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_starters_go_live_unchanged() {
    let root = upstream_dir();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let mut runs = tokio::task::JoinSet::new();
    for starter in &STARTERS {
        let (tree, source) = load(&root, starter.name);
        let slots = slots.clone();
        runs.spawn(async move {
            let _slot = slots.acquire().await.unwrap();
            let result = go_live(starter, tree).await;
            match &result {
                Ok(took) => eprintln!(
                    "upstream {}: live and serving its page {:.1} s after the webhook ({source})",
                    starter.name,
                    took.as_secs_f64()
                ),
                Err(why) => eprintln!("upstream {}: {why} ({source})", starter.name),
            }
            (starter.name, result)
        });
    }
    let mut failed = Vec::new();
    while let Some(run) = runs.join_next().await {
        let (name, result) = run.expect("a starter's run panicked");
        if let Err(why) = result {
            failed.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "upstream starters that did not go live:\n{}",
        failed.join("\n\n")
    );
}
