//! The cleanup service's cap on live previews (queue and evict-oldest) and its poll of GitHub for
//! pull requests closed behind our back. Jobs run on the recording runner; the queue's comments
//! go to the fake GitHub.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use preview_core::id::PreviewId;
use preview_github::fake::FakeGitHub;
use preview_github::{GitHubClient, RetryPolicy};
use preview_orchestrator::deploy::reconcile::{CLOSED_PR_REASON, sweep_closed_prs};
use preview_orchestrator::feedback::{Feedback, FeedbackSettings};
use preview_orchestrator::{
    BoxFuture, Config, DeployJob, DeploymentStatus, DesiredState, JobContext, JobError, JobRunner,
    JobTrigger, Orchestrator, TeardownJob,
};

use crate::harness::{RecordingRunner, TestServer, args, sha};

const API_REPO: &str = "Codertocat/Hello-World";

fn id(pr: u64) -> PreviewId {
    PreviewId::parse(&format!("codertocat-hello-world-pr-{pr}")).unwrap()
}

/// The recording runner, plus the trigger of every teardown (the eviction's reason).
struct Triggers {
    inner: Arc<RecordingRunner>,
    teardowns: Mutex<Vec<(String, JobTrigger)>>,
}

impl JobRunner for Triggers {
    fn deploy(&self, job: DeployJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        self.inner.deploy(job, ctx)
    }

    fn teardown(&self, job: TeardownJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        self.teardowns
            .lock()
            .unwrap()
            .push((job.id.to_string(), job.trigger.clone()));
        self.inner.teardown(job, ctx)
    }
}

struct Cap {
    s: TestServer,
    triggers: Arc<Triggers>,
    github: FakeGitHub,
}

/// The test server's arguments with `--max-concurrent-previews cap` and `extra`.
fn cap_args(dir: &std::path::Path, cap: usize, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut a = args(dir, extra);
    let i = a
        .iter()
        .position(|x| x == "--max-concurrent-previews")
        .expect("the harness sets the cap");
    a[i + 1] = cap.to_string().into();
    a
}

async fn start_in(dir: tempfile::TempDir, github: FakeGitHub, cap: usize, extra: &[&str]) -> Cap {
    let config = Config::load(cap_args(dir.path(), cap, extra)).unwrap();
    let runner = RecordingRunner::new(Duration::ZERO);
    let triggers = Arc::new(Triggers {
        inner: runner.clone(),
        teardowns: Mutex::new(Vec::new()),
    });
    let orch = Orchestrator::start(config, triggers.clone()).await.unwrap();
    let client = GitHubClient::new(&github.url(), "gh-test-token").unwrap();
    orch.scheduler().set_feedback(Feedback::new(
        Some(client),
        FeedbackSettings {
            comments: true,
            deployments: true,
            commit_statuses: false,
        },
    ));
    let base = format!("http://{}", orch.addr());
    Cap {
        s: TestServer {
            orch: Some(orch),
            runner,
            http: reqwest::Client::new(),
            base,
            dir,
        },
        triggers,
        github,
    }
}

async fn start(cap: usize, extra: &[&str]) -> Cap {
    start_in(
        tempfile::tempdir().unwrap(),
        FakeGitHub::start().await,
        cap,
        extra,
    )
    .await
}

impl Cap {
    fn status(&self, pr: u64) -> DeploymentStatus {
        self.s.orch().store().get(&id(pr)).unwrap().status
    }

    fn deploys_of(&self, pr: u64) -> Vec<String> {
        self.s
            .runner
            .calls()
            .into_iter()
            .filter(|c| c.kind == "deploy" && c.id == id(pr).as_str())
            .filter_map(|c| c.sha)
            .collect()
    }

    /// The PR's comments on the fake GitHub, once `ready` holds for the only one.
    async fn comment(&self, pr: u64, ready: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let comments: Vec<_> = self
                    .github
                    .comments()
                    .into_iter()
                    .filter(|c| c.pr == pr)
                    .collect();
                if let [only] = comments.as_slice()
                    && ready(&only.body)
                {
                    return only.body.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "PR {pr}: no single comment as expected; comments: {:#?}",
                self.github.comments()
            )
        })
    }

    async fn open(&self, number: u64, k: u64) -> serde_json::Value {
        let (status, json) = self.s.pull_request("opened", number, &sha(number, k)).await;
        assert_eq!(status, 202, "{json}");
        json
    }
}

/// Stops the server and gives a fresh dir holding its store file, as a restarted process would
/// find it. (In this test process the stopped orchestrator's feedback lanes keep its store handle,
/// and so its lock, alive; a real restart is a new process.)
async fn restart_dir(s: TestServer) -> tempfile::TempDir {
    let (old, _) = s.stop().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        old.path().join("deployments.json"),
        dir.path().join("deployments.json"),
    )
    .unwrap();
    dir
}

fn waiting_at(json: &serde_json::Value) -> Option<u64> {
    (json["status"] == "waiting").then(|| json["position"].as_u64().unwrap())
}

#[tokio::test]
async fn beyond_the_cap_prs_wait_in_order_and_deploy_as_slots_free() {
    let c = start(2, &[]).await;
    c.open(1, 1).await;
    c.s.idle().await;
    c.open(2, 1).await;
    c.s.idle().await;
    assert_eq!(c.status(1), DeploymentStatus::Running);
    assert_eq!(c.status(2), DeploymentStatus::Running);

    // Cap reached: PR 3 and PR 4 wait, in arrival order, and nothing deploys them.
    assert_eq!(waiting_at(&c.open(3, 1).await), Some(1));
    assert_eq!(waiting_at(&c.open(4, 1).await), Some(2));
    c.s.idle().await;
    assert!(matches!(c.status(3), DeploymentStatus::Waiting { .. }));
    assert!(matches!(c.status(4), DeploymentStatus::Waiting { .. }));
    assert!(c.deploys_of(3).is_empty() && c.deploys_of(4).is_empty());
    assert_eq!(c.s.orch().scheduler().waiting(), vec![id(3), id(4)]);
    let body = c.comment(3, |b| b.contains("Preview queued")).await;
    assert!(body.contains("All 2 preview slots are in use"), "{body}");
    assert!(body.contains("number 1 in the queue"), "{body}");
    // The previews to close, least recently updated first.
    assert!(
        body.contains("the least recently updated previews are: #1, #2."),
        "{body}"
    );
    let body = c.comment(4, |b| b.contains("Preview queued")).await;
    assert!(body.contains("number 2 in the queue"), "{body}");

    // A push to a waiting PR only changes what it will deploy; it keeps its place.
    let (status, json) = c.s.pull_request("synchronize", 3, &sha(3, 2)).await;
    assert_eq!((status, waiting_at(&json)), (202, Some(1)), "{json}");
    let rec = c.s.orch().store().get(&id(3)).unwrap();
    assert_eq!(rec.head_sha.as_str(), sha(3, 2));
    assert_eq!(c.s.orch().scheduler().waiting(), vec![id(3), id(4)]);

    // An update of a live preview is never held back by the cap.
    let (status, json) = c.s.pull_request("synchronize", 2, &sha(2, 2)).await;
    assert_eq!(
        (status, json["job"].as_str()),
        (202, Some("deploy")),
        "{json}"
    );
    c.s.idle().await;
    assert_eq!(c.deploys_of(2), vec![sha(2, 1), sha(2, 2)]);
    assert!(c.deploys_of(3).is_empty());

    // Closing PR 1 frees a slot: PR 3 deploys at its newest push, PR 4 moves up.
    let (status, _) = c.s.pull_request("closed", 1, &sha(1, 1)).await;
    assert_eq!(status, 202);
    c.s.idle().await;
    assert_eq!(c.status(1), DeploymentStatus::Stopped);
    assert_eq!(c.deploys_of(3), vec![sha(3, 2)]);
    assert_eq!(c.status(3), DeploymentStatus::Running);
    let rec = c.s.orch().store().get(&id(3)).unwrap();
    assert_eq!(rec.deployed_sha.unwrap().as_str(), sha(3, 2));
    assert!(
        rec.history
            .iter()
            .any(|h| matches!(h.status, DeploymentStatus::Waiting { .. })),
        "{:?}",
        rec.history
    );
    assert_eq!(c.s.orch().scheduler().waiting(), vec![id(4)]);
    let body = c.comment(4, |b| b.contains("number 1 in the queue")).await;
    assert!(body.contains("#2, #3") || body.contains("#3, #2"), "{body}");

    // A waiting PR that is closed leaves the queue; nothing ran for it.
    let (status, json) = c.s.pull_request("closed", 4, &sha(4, 1)).await;
    assert_eq!(status, 202, "{json}");
    c.s.idle().await;
    let rec = c.s.orch().store().get(&id(4)).unwrap();
    assert_eq!(
        (rec.status, rec.desired),
        (DeploymentStatus::Stopped, DesiredState::Stopped)
    );
    assert!(c.s.orch().scheduler().waiting().is_empty());
    assert!(c.deploys_of(4).is_empty());
    assert!(
        !c.s.runner
            .calls()
            .iter()
            .any(|call| call.id == id(4).as_str()),
        "no job ran for PR 4"
    );
    let body = c.comment(4, |b| b.contains("Preview closed")).await;
    assert!(
        body.contains(
            "This PR left the queue for a preview slot (the pull request was closed); nothing was deployed."
        ),
        "{body}"
    );
    // It never had a GitHub deployment, and closing it made none.
    assert!(c.github.deployments().is_empty());
    // PR 2 and PR 3 hold the two slots: the next PR is first in line.
    assert_eq!(waiting_at(&c.open(5, 1).await), Some(1));
    c.comment(5, |b| b.contains("number 1 in the queue")).await;
    c.s.stop().await;
}

#[tokio::test]
async fn the_queue_survives_a_restart_and_a_raised_cap_drains_it() {
    let c = start(1, &[]).await;
    c.open(1, 1).await;
    c.s.idle().await;
    for pr in [2, 3, 4] {
        assert!(waiting_at(&c.open(pr, 1).await).is_some());
    }
    let before = c.s.orch().scheduler().waiting();
    assert_eq!(before, vec![id(2), id(3), id(4)]);
    let Cap { s, github, .. } = c;
    let dir = restart_dir(s).await;

    // Same cap: the order is kept, and a teardown lets the first one in.
    let c = start_in(dir, github, 1, &[]).await;
    assert_eq!(c.s.orch().scheduler().waiting(), before);
    c.s.pull_request("closed", 1, &sha(1, 1)).await;
    c.s.idle().await;
    assert_eq!(c.status(2), DeploymentStatus::Running);
    assert_eq!(c.s.orch().scheduler().waiting(), vec![id(3), id(4)]);
    let Cap { s, github, .. } = c;
    let dir = restart_dir(s).await;

    // A raised cap: the waiting PRs deploy at start.
    let c = start_in(dir, github, 3, &[]).await;
    c.s.idle().await;
    assert!(c.s.orch().scheduler().waiting().is_empty());
    for pr in [2, 3, 4] {
        assert_eq!(c.status(pr), DeploymentStatus::Running, "PR {pr}");
    }
    c.s.stop().await;
}

#[tokio::test]
async fn evict_oldest_tears_down_the_least_recently_updated_preview() {
    let c = start(2, &["--cap-policy", "evict-oldest"]).await;
    c.open(1, 1).await;
    c.s.idle().await;
    c.open(2, 1).await;
    c.s.idle().await;
    // PR 1 is updated after PR 2: PR 2 is now the least recently updated.
    c.s.pull_request("synchronize", 1, &sha(1, 2)).await;
    c.s.idle().await;

    let json = c.open(3, 1).await;
    assert_eq!(waiting_at(&json), Some(1), "{json}");
    c.s.idle().await;
    assert_eq!(c.status(3), DeploymentStatus::Running);
    assert_eq!(c.deploys_of(3), vec![sha(3, 1)]);
    let evicted = c.s.orch().store().get(&id(2)).unwrap();
    assert_eq!(
        (evicted.status, evicted.desired),
        (DeploymentStatus::Stopped, DesiredState::Stopped)
    );
    assert_eq!(c.status(1), DeploymentStatus::Running);
    let teardowns = c.triggers.teardowns.lock().unwrap().clone();
    let [(torn, JobTrigger::Cleanup { reason })] = teardowns.as_slice() else {
        panic!("one cleanup teardown expected: {teardowns:?}");
    };
    assert_eq!(torn, id(2).as_str());
    assert!(
        reason.starts_with("evicted to free a slot: all 2 preview slots were in use"),
        "{reason}"
    );
    assert!(reason.contains("least recently updated"), "{reason}");
    // PR 3 got its slot at once: no "queued" comment was posted for it.
    assert!(
        !c.github.comments().iter().any(|cm| cm.pr == 3),
        "{:#?}",
        c.github.comments()
    );
    // The cap still holds, and a push to the evicted PR evicts the next oldest (PR 1).
    assert_eq!(
        c.s.orch()
            .store()
            .list()
            .iter()
            .filter(|r| r.status == DeploymentStatus::Running)
            .count(),
        2
    );
    c.s.pull_request("synchronize", 2, &sha(2, 2)).await;
    c.s.idle().await;
    assert_eq!(c.status(2), DeploymentStatus::Running);
    assert_eq!(c.status(1), DeploymentStatus::Stopped);
    assert_eq!(c.status(3), DeploymentStatus::Running);
    c.s.stop().await;
}

#[tokio::test]
async fn polling_tears_down_closed_prs_and_survives_github_failures() {
    let c = start(2, &[]).await;
    for pr in [1, 2, 3] {
        c.github
            .set_pull_request_state(API_REPO, pr, "open", &sha(pr, 1));
        c.open(pr, 1).await;
        c.s.idle().await;
    }
    assert!(matches!(c.status(3), DeploymentStatus::Waiting { .. }));
    c.comment(3, |b| b.contains("Preview queued")).await;
    let client = impatient_client(&c.github.url());
    let scheduler = c.s.orch().scheduler().clone();

    // GitHub answers 500 for PR 2 (every retry too) and says PR 3 (waiting) is closed.
    for _ in 0..2 {
        c.github.fail_next(
            "GET",
            "/repos/Codertocat/Hello-World/pulls/2",
            500,
            &[],
            false,
        );
    }
    c.github
        .set_pull_request_state(API_REPO, 3, "closed", &sha(3, 1));
    let sweep = sweep_closed_prs(&scheduler, &client).await;
    assert_eq!(sweep.closed, vec![id(3)]);
    assert_eq!(sweep.unknown, vec![id(2)]);
    c.s.idle().await;
    assert_eq!(c.status(1), DeploymentStatus::Running);
    assert_eq!(c.status(2), DeploymentStatus::Running);
    assert_eq!(c.status(3), DeploymentStatus::Stopped);
    let body = c.comment(3, |b| b.contains("Preview closed")).await;
    assert!(
        body.contains(&format!(
            "left the queue for a preview slot ({CLOSED_PR_REASON})"
        )),
        "{body}"
    );

    // A long rate limit ends the pass: nothing is torn down, and the rest is left for later.
    c.github
        .set_pull_request_state(API_REPO, 1, "closed", &sha(1, 1));
    c.github.fail_next(
        "GET",
        "/repos/Codertocat/Hello-World/pulls/1",
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "4102444800"),
        ],
        false,
    );
    let sweep = sweep_closed_prs(&scheduler, &client).await;
    assert!(sweep.closed.is_empty(), "{sweep:?}");
    assert_eq!(sweep.unknown, vec![id(1), id(2)]);
    assert_eq!(c.status(1), DeploymentStatus::Running);

    // GitHub unreachable: every PR is unknown, nothing changes.
    let down = impatient_client(&format!(
        "http://127.0.0.1:{}",
        preview_testkit::free_port()
    ));
    let sweep = sweep_closed_prs(&scheduler, &down).await;
    assert_eq!(
        (sweep.closed.len(), sweep.unknown.len()),
        (0, 2),
        "{sweep:?}"
    );

    // Back to normal: PR 1's preview goes with a cleanup teardown.
    let sweep = sweep_closed_prs(&scheduler, &client).await;
    assert_eq!(sweep.closed, vec![id(1)]);
    c.s.idle().await;
    assert_eq!(c.status(1), DeploymentStatus::Stopped);
    assert_eq!(c.status(2), DeploymentStatus::Running);
    let teardowns = c.triggers.teardowns.lock().unwrap().clone();
    assert_eq!(
        teardowns,
        vec![(
            id(1).to_string(),
            JobTrigger::Cleanup {
                reason: CLOSED_PR_REASON.into()
            }
        )]
    );
    c.s.stop().await;
}

/// A GitHub client that retries once, quickly, and waits at most a second for a rate limit.
fn impatient_client(url: &str) -> GitHubClient {
    GitHubClient::new(url, "gh-test-token")
        .unwrap()
        .with_retry(RetryPolicy {
            max_retries: 1,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_rate_limit_wait: Duration::from_secs(1),
        })
}
