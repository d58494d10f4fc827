//! Who gets a preview: a fork PR by a stranger through the real webhook path, the queue and the
//! fake GitHub (comments, reactions, permissions, the pull request), on the recording runner.

use std::time::Duration;

use preview_github::fake::FakeGitHub;
use preview_github::{GitHubClient, RetryPolicy};
use preview_orchestrator::feedback::{Feedback, FeedbackSettings};
use serde_json::{Value, json};

use crate::e2e_support::eventually;
use crate::harness::{REPO, TestServer, delivery, fixture, pr_payload, sha};

const PR: u64 = 5;
const ID: &str = "codertocat-hello-world-pr-5";

/// A `pull_request` event of PR 5 from `stranger`'s fork, at `sha`.
fn fork_event(action: &str, sha: &str, association: &str) -> Value {
    let mut v = pr_payload(if action == "labeled" {
        "labeled"
    } else {
        "opened"
    });
    v["action"] = action.into();
    v["number"] = PR.into();
    v["pull_request"]["number"] = PR.into();
    v["pull_request"]["updated_at"] = Value::Null;
    v["pull_request"]["head"]["sha"] = sha.into();
    v["pull_request"]["author_association"] = association.into();
    v["pull_request"]["user"]["login"] = "stranger".into();
    v["pull_request"]["head"]["repo"]["owner"]["login"] = "stranger".into();
    v["pull_request"]["head"]["repo"]["full_name"] = "stranger/Hello-World".into();
    v["sender"]["login"] = "stranger".into();
    v
}

/// An `issue_comment` event: `login` comments `body` on PR 5 (on an issue when `on_pr` is false).
fn comment_event(login: &str, body: &str, comment_id: u64, on_pr: bool) -> Value {
    let mut v: Value = serde_json::from_slice(&fixture("issue_comment.created.json")).unwrap();
    v["issue"]["number"] = PR.into();
    if on_pr {
        v["issue"]["pull_request"] =
            json!({ "url": format!("https://api.github.com/repos/{REPO}/pulls/{PR}") });
    }
    v["comment"]["id"] = comment_id.into();
    v["comment"]["body"] = body.into();
    v["comment"]["user"]["login"] = login.into();
    v["sender"]["login"] = login.into();
    v
}

struct Gated {
    server: TestServer,
    github: FakeGitHub,
}

impl Gated {
    async fn start(extra: &[&str]) -> Self {
        let github = FakeGitHub::start().await;
        let url = github.url();
        let mut args = vec!["--github-api-url", url.as_str()];
        args.extend_from_slice(extra);
        let server = TestServer::start(Duration::from_millis(20), &args).await;
        let client = GitHubClient::new(&github.url(), "gh-test-token")
            .unwrap()
            .with_retry(RetryPolicy {
                max_retries: 1,
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(20),
                max_rate_limit_wait: Duration::from_secs(1),
            });
        server.orch().scheduler().set_feedback(Feedback::new(
            Some(client),
            FeedbackSettings {
                comments: true,
                deployments: false,
                commit_statuses: true,
            },
        ));
        Self { server, github }
    }

    async fn send(&self, event: &str, body: &Value) -> (u16, Value) {
        self.server
            .deliver(event, &serde_json::to_vec(body).unwrap(), &delivery())
            .await
    }

    fn deploys(&self) -> Vec<String> {
        self.server
            .runner
            .calls()
            .into_iter()
            .filter(|c| c.kind == "deploy" && c.outcome == "ok")
            .filter_map(|c| c.sha)
            .collect()
    }

    fn record(&self) -> Option<preview_orchestrator::DeploymentRecord> {
        let id = preview_core::id::PreviewId::parse(ID).unwrap();
        self.server.orch().store().get(&id)
    }

    /// Waits until a comment on PR 5 holds every needle; returns its body.
    async fn comment_with(&self, needles: &[&str]) -> String {
        let what = format!("a comment with {needles:?}");
        eventually(&what, Duration::from_secs(10), || {
            self.github
                .comments()
                .into_iter()
                .find(|c| c.pr == PR && needles.iter().all(|n| c.body.contains(n)))
                .map(|c| c.body)
        })
        .await
    }

    async fn reactions_become(&self, comment_id: u64, want: &[&str]) {
        let what = format!("reactions {want:?} on comment {comment_id}");
        eventually(&what, Duration::from_secs(10), || {
            (self.github.reactions(comment_id) == want).then_some(())
        })
        .await
    }

    async fn wait_deployed(&self, sha: &str) {
        let what = format!("a deploy of {sha}");
        eventually(&what, Duration::from_secs(10), || {
            self.deploys().iter().any(|s| s == sha).then_some(())
        })
        .await
    }
}

#[tokio::test]
async fn a_strangers_fork_pr_waits_for_a_writers_approval_of_each_commit() {
    let g = Gated::start(&[]).await;
    let (sha1, sha2) = (sha(5, 1), sha(5, 2));

    // 1. Gated: 202 awaiting_approval, a sticky comment saying how to approve, no build.
    let (status, answer) = g
        .send("pull_request", &fork_event("opened", &sha1, "NONE"))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "awaiting_approval", "{answer}");
    assert_eq!(answer["id"], ID);
    assert_eq!(answer["sha"], sha1.as_str());
    let sticky = g
        .comment_with(&["Preview awaiting approval", "@stranger", "`/preview`"])
        .await;
    assert!(sticky.contains("<!-- preview-deployer id=codertocat-hello-world-pr-5 -->"));
    let statuses = g.github.commit_statuses(&sha1);
    assert_eq!(statuses.last().unwrap()["state"], "pending", "{statuses:?}");
    assert!(g.record().is_none(), "a gated PR gets no record");

    // 2. A reader's `/preview` is refused with a reply, and deploys nothing.
    g.github.set_pull_request(
        REPO,
        PR,
        fork_event("opened", &sha1, "NONE")["pull_request"].clone(),
    );
    let (status, answer) = g
        .send(
            "issue_comment",
            &comment_event("reader", "/preview", 9001, true),
        )
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("command_received")),
        "{answer}"
    );
    g.comment_with(&["@reader, `/preview` needs write permission", "`read`"])
        .await;
    g.reactions_become(9001, &["eyes", "confused"]).await;
    assert!(g.deploys().is_empty());
    assert!(g.record().is_none());
    let asked: Vec<String> = g.github.calls().into_iter().map(|c| c.path).collect();
    assert!(
        asked
            .iter()
            .any(|p| p == "/repos/Codertocat/Hello-World/collaborators/reader/permission"),
        "the permission is asked of GitHub: {asked:?}"
    );

    // 3. A writer's `/preview` deploys the head commit GitHub reports, as trusted.
    g.github.set_permission(REPO, "maintainer", "write");
    let (status, _) = g
        .send(
            "issue_comment",
            &comment_event("maintainer", "/preview", 9002, true),
        )
        .await;
    assert_eq!(status, 202);
    g.wait_deployed(&sha1).await;
    g.reactions_become(9002, &["eyes", "+1"]).await;
    let rec = g.record().unwrap();
    assert!(rec.trusted);
    assert_eq!(rec.head_sha.as_str(), sha1);

    // A redelivery at the approved commit stays approved.
    let (status, answer) = g
        .send("pull_request", &fork_event("reopened", &sha1, "NONE"))
        .await;
    assert_eq!(status, 202);
    assert_ne!(answer["status"], "awaiting_approval", "{answer}");

    // 4. The author's next push waits again; the approved preview keeps serving.
    let (status, answer) = g
        .send("pull_request", &fork_event("synchronize", &sha2, "NONE"))
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("awaiting_approval"))
    );
    g.comment_with(&[
        "Preview awaiting approval",
        &sha2[..7],
        "keeps serving",
        &sha1[..7],
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!g.deploys().contains(&sha2));
    assert_eq!(g.record().unwrap().head_sha.as_str(), sha1);

    // 5. The `preview` label added by a writer approves the payload's commit.
    let mut labeled = fork_event("labeled", &sha2, "NONE");
    labeled["label"]["name"] = "preview".into();
    labeled["sender"]["login"] = "maintainer".into();
    let (status, answer) = g.send("pull_request", &labeled).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("command_received")),
        "{answer}"
    );
    g.wait_deployed(&sha2).await;
    assert!(g.record().unwrap().trusted);

    // ... but not when a reader adds it, nor any other label.
    labeled["label"]["name"] = "bug".into();
    let (_, answer) = g.send("pull_request", &labeled).await;
    assert_eq!(answer["ignored"], true, "{answer}");

    // 6. Unknown commands, bots, issues and edits get no deploy.
    let (_, answer) = g
        .send(
            "issue_comment",
            &comment_event("maintainer", "/preview now please", 9003, true),
        )
        .await;
    assert_eq!(answer["status"], "command_received");
    g.comment_with(&[
        "@maintainer, `/preview now please` is not a command",
        "/preview destroy",
    ])
    .await;
    let mut bot = comment_event("dependabot[bot]", "/preview", 9004, true);
    bot["comment"]["user"]["type"] = "Bot".into();
    let (_, answer) = g.send("issue_comment", &bot).await;
    assert_eq!(answer["ignored"], true, "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("bots"));
    let (_, answer) = g
        .send(
            "issue_comment",
            &comment_event("maintainer", "/preview", 9005, false),
        )
        .await;
    assert!(
        answer["reason"].as_str().unwrap().contains("on an issue"),
        "{answer}"
    );
    let (_, answer) = g
        .send(
            "issue_comment",
            &comment_event("maintainer", "nice work!", 9006, true),
        )
        .await;
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("not a /preview command")
    );
    let mut edited = comment_event("maintainer", "/preview", 9007, true);
    edited["action"] = "edited".into();
    let (_, answer) = g.send("issue_comment", &edited).await;
    assert_eq!(answer["ignored"], true, "{answer}");
    for id in [9004, 9005, 9006, 9007] {
        assert!(
            g.github.reactions(id).is_empty(),
            "comment {id} was acted on"
        );
    }

    // 7. `/preview destroy` tears the preview down.
    let (_, _) = g
        .send(
            "issue_comment",
            &comment_event("maintainer", "/preview destroy", 9008, true),
        )
        .await;
    g.reactions_become(9008, &["eyes", "+1"]).await;
    eventually("a teardown", Duration::from_secs(10), || {
        g.server
            .runner
            .calls()
            .iter()
            .any(|c| c.kind == "teardown")
            .then_some(())
    })
    .await;
    assert_eq!(
        g.record().unwrap().desired,
        preview_orchestrator::DesiredState::Stopped
    );
    // The runtime's closing comment gives this reason (the recording runner writes none).
    let trigger = preview_orchestrator::JobTrigger::Command {
        command: "/preview destroy".into(),
        by: "maintainer".into(),
    };
    assert_eq!(
        preview_orchestrator::queue::teardown_reason(&trigger),
        "@maintainer commented `/preview destroy`"
    );

    // 8. Other repositories stay refused, comments included.
    let mut elsewhere = comment_event("maintainer", "/preview", 9009, true);
    elsewhere["repository"]["owner"]["login"] = "someone-else".into();
    let (status, _) = g.send("issue_comment", &elsewhere).await;
    assert_eq!(status, 403);
    assert_eq!(
        g.server
            .runner
            .lane_overlap
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_deleted_fork_gets_a_clear_comment_and_redeploy_needs_write_permission() {
    let g = Gated::start(&[]).await;
    let mut gone = fork_event("opened", &sha(6, 1), "COLLABORATOR");
    gone["pull_request"]["head"]["repo"] = Value::Null;
    let (status, answer) = g.send("pull_request", &gone).await;
    assert_eq!(status, 202);
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("fork was deleted"),
        "{answer}"
    );
    g.comment_with(&[
        "Preview not deployed",
        "fork this pull request comes from was deleted",
    ])
    .await;
    assert!(g.deploys().is_empty());

    // A collaborator's own PR deploys at once, trusted; `/preview redeploy` by a writer rebuilds.
    let sha1 = sha(6, 2);
    let (status, answer) = g
        .send("pull_request", &fork_event("opened", &sha1, "COLLABORATOR"))
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("queued")),
        "{answer}"
    );
    g.wait_deployed(&sha1).await;
    assert!(g.record().unwrap().trusted);
    g.github.set_pull_request(
        REPO,
        PR,
        fork_event("opened", &sha1, "COLLABORATOR")["pull_request"].clone(),
    );
    g.github.set_permission(REPO, "boss", "admin");
    g.send(
        "issue_comment",
        &comment_event("boss", "/preview redeploy", 9101, true),
    )
    .await;
    g.reactions_become(9101, &["eyes", "+1"]).await;
    eventually(
        "a second deploy of the same commit",
        Duration::from_secs(10),
        || (g.deploys().iter().filter(|s| **s == sha1).count() == 2).then_some(()),
    )
    .await;

    // A closed PR is answered, not deployed.
    let mut closed = fork_event("opened", &sha1, "COLLABORATOR")["pull_request"].clone();
    closed["state"] = "closed".into();
    g.github.set_pull_request(REPO, PR, closed);
    g.send(
        "issue_comment",
        &comment_event("boss", "/preview", 9102, true),
    )
    .await;
    g.comment_with(&["@boss, this pull request is closed"])
        .await;
    g.reactions_become(9102, &["eyes", "confused"]).await;
}

#[tokio::test]
async fn deploy_policy_everyone_deploys_outside_prs_untrusted() {
    let g = Gated::start(&["--deploy-policy", "everyone"]).await;
    let sha1 = sha(7, 1);
    let (status, answer) = g
        .send(
            "pull_request",
            &fork_event("opened", &sha1, "FIRST_TIME_CONTRIBUTOR"),
        )
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("queued")),
        "{answer}"
    );
    g.wait_deployed(&sha1).await;
    assert!(
        !g.record().unwrap().trusted,
        "an outside commit gets no secrets"
    );
}
