use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use preview_core::id::{CommitSha, PrNumber, RepoFullName};
use preview_github::fake::FakeGitHub;
use preview_github::{
    CommitState, DeploymentState, Error, GitHubClient, NewCommitStatus, NewDeployment,
    NewDeploymentStatus, PullRequestState, RetryPolicy, comment_marker,
};
use serde_json::json;

const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn repo() -> RepoFullName {
    RepoFullName::parse("Octo/Hello-World").unwrap()
}

fn pr() -> PrNumber {
    PrNumber::new(7).unwrap()
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_rate_limit_wait: Duration::from_secs(5),
    }
}

async fn setup() -> (FakeGitHub, GitHubClient) {
    let fake = FakeGitHub::start().await;
    let client = GitHubClient::new(&format!("{}/", fake.url()), "t0ken")
        .unwrap()
        .with_retry(fast());
    (fake, client)
}

#[tokio::test]
async fn sticky_comment_is_created_once_then_edited() {
    let (fake, gh) = setup().await;
    let marker = comment_marker("octo-hello-world-pr-7");
    // Someone else's comment first, and more than a page of noise before ours would be found.
    for i in 0..120 {
        fake_comment(&gh, i).await;
    }
    let first = gh
        .upsert_comment(&repo(), pr(), &marker, "building…", None)
        .await
        .unwrap();
    assert!(first.created);
    // Without the id (say, the store lost it), the marker finds the same comment on page 2.
    let second = gh
        .upsert_comment(&repo(), pr(), &marker, "live at http://x/", None)
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert!(!second.created);
    let third = gh
        .upsert_comment(&repo(), pr(), &marker, "closed", Some(first.id))
        .await
        .unwrap();
    assert_eq!(third.id, first.id);
    let ours: Vec<_> = fake
        .comments()
        .into_iter()
        .filter(|c| c.body.contains(&marker))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].body, format!("{marker}\nclosed"));
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer t0ken"))
    );
}

async fn fake_comment(gh: &GitHubClient, i: usize) {
    gh.upsert_comment(&repo(), pr(), &format!("<!-- other {i} -->"), "noise", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_that_fails_after_creating_is_not_posted_twice() {
    let (fake, gh) = setup().await;
    let marker = comment_marker("octo-hello-world-pr-7");
    fake.fail_next(
        "POST",
        "/repos/Octo/Hello-World/issues/7/comments",
        502,
        &[],
        true,
    );
    let c = gh
        .upsert_comment(&repo(), pr(), &marker, "building", None)
        .await
        .unwrap();
    assert_eq!(fake.comments().len(), 1);
    assert_eq!(fake.comments()[0].id, c.id);
    assert_eq!(fake.comments()[0].body, format!("{marker}\nbuilding"));
}

#[tokio::test]
async fn a_stale_comment_id_falls_back_to_the_marker() {
    let (fake, gh) = setup().await;
    let marker = comment_marker("x-pr-7");
    let c = gh
        .upsert_comment(&repo(), pr(), &marker, "a", Some(999_999))
        .await
        .unwrap();
    assert!(c.created);
    assert_eq!(fake.comments().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (fake, gh) = setup().await;
    fake.set_pull_request(
        "octo/hello-world",
        7,
        json!({ "state": "closed", "merged": true, "draft": false, "head": { "sha": SHA } }),
    );
    fake.fail_next("GET", "/repos/Octo/Hello-World/pulls/7", 502, &[], false);
    fake.fail_next("GET", "/repos/Octo/Hello-World/pulls/7", 503, &[], false);
    let info = gh.pull_request(&repo(), pr()).await.unwrap();
    assert_eq!(info.state, PullRequestState::Closed);
    assert!(info.merged);
    assert_eq!(info.head_sha.as_str(), SHA);
    assert_eq!(fake.calls().len(), 3);
}

#[tokio::test]
async fn retries_give_up_after_the_policy() {
    let (fake, gh) = setup().await;
    for _ in 0..10 {
        fake.fail_next("GET", "/repos/Octo/Hello-World/pulls/7", 500, &[], false);
    }
    let err = gh.pull_request(&repo(), pr()).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 500, .. }), "{err}");
    assert_eq!(fake.calls().len(), 4, "one attempt and three retries");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (fake, gh) = setup().await;
    let err = gh.pull_request(&repo(), pr()).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 404, .. }), "{err}");
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    let (fake, gh) = setup().await;
    fake.set_pull_request(
        "octo/hello-world",
        7,
        json!({ "state": "open", "head": { "sha": SHA } }),
    );
    // An exhausted primary limit that lifts two seconds from now, then a secondary limit with
    // Retry-After. The backoff policy alone would retry after 10–50 ms, so only honouring the
    // headers passes the timing checks below.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let reset_header = reset.to_string();
    fake.fail_next(
        "GET",
        "/repos/Octo/Hello-World/pulls/7",
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset_header.as_str()),
        ],
        false,
    );
    fake.fail_next(
        "GET",
        "/repos/Octo/Hello-World/pulls/7",
        429,
        &[("retry-after", "1")],
        false,
    );
    let started = Instant::now();
    let info = gh.pull_request(&repo(), pr()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(info.state, PullRequestState::Open);
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    let reset_at = UNIX_EPOCH + Duration::from_secs(reset);
    assert!(
        calls[1].at >= reset_at,
        "the retry came {:?} before the limit's reset",
        reset_at.duration_since(calls[1].at).unwrap_or_default()
    );
    let after_retry_after = calls[2].at.duration_since(calls[1].at).unwrap_or_default();
    assert!(
        after_retry_after >= Duration::from_secs(1),
        "the retry came {after_retry_after:?} after a `Retry-After: 1`"
    );
    eprintln!("rate limits: Retry-After 1 s waited {after_retry_after:?}; whole call {elapsed:?}");

    // A limit longer than we will wait fails at once, without blocking the caller.
    fake.fail_next(
        "GET",
        "/repos/Octo/Hello-World/pulls/7",
        429,
        &[("retry-after", "3600")],
        false,
    );
    let started = Instant::now();
    let err = gh.pull_request(&repo(), pr()).await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(3600)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test]
async fn deployments_statuses_and_commit_statuses() {
    let (fake, gh) = setup().await;
    let sha = CommitSha::parse(SHA).unwrap();
    let id = gh
        .create_deployment(&repo(), &NewDeployment::preview(&sha, "preview/pr-7"))
        .await
        .unwrap();
    for (state, url) in [
        (DeploymentState::InProgress, None),
        (
            DeploymentState::Success,
            Some("https://p.example/octo-hello-world/pr-7/"),
        ),
        (DeploymentState::Inactive, None),
    ] {
        gh.create_deployment_status(
            &repo(),
            id,
            &NewDeploymentStatus {
                state,
                environment_url: url.map(str::to_owned),
                log_url: None,
                description: "d".repeat(300),
                auto_inactive: true,
            },
        )
        .await
        .unwrap();
    }
    fake.fail_next("POST", "/repos/Octo/Hello-World/statuses/", 500, &[], false);
    gh.create_commit_status(
        &repo(),
        &sha,
        &NewCommitStatus {
            state: CommitState::Success,
            target_url: Some("https://p.example/x/".into()),
            description: "Preview is live".into(),
            context: "preview-deployer".into(),
        },
    )
    .await
    .unwrap();

    let deployments = fake.deployments();
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(d.request["ref"], SHA);
    assert_eq!(d.request["environment"], "preview/pr-7");
    assert_eq!(d.request["transient_environment"], true);
    assert_eq!(d.request["production_environment"], false);
    assert_eq!(d.request["auto_merge"], false);
    assert_eq!(d.request["required_contexts"], json!([]));
    let states: Vec<_> = d.statuses.iter().map(|s| s["state"].clone()).collect();
    assert_eq!(
        states,
        vec![json!("in_progress"), json!("success"), json!("inactive")]
    );
    assert_eq!(
        d.statuses[1]["environment_url"],
        "https://p.example/octo-hello-world/pr-7/"
    );
    assert_eq!(
        d.statuses[0]["description"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        140
    );
    let statuses = fake.commit_statuses(SHA);
    assert_eq!(statuses.len(), 1, "the 500 was retried once");
    assert_eq!(statuses[0]["state"], "success");
    assert_eq!(statuses[0]["context"], "preview-deployer");
}

#[tokio::test]
async fn base_url_and_token_are_checked() {
    assert!(matches!(
        GitHubClient::new("ftp://x", "t"),
        Err(Error::Config {
            setting: "GITHUB_API_URL",
            ..
        })
    ));
    assert!(matches!(
        GitHubClient::new("https://api.github.com", "bad\ntoken"),
        Err(Error::Config {
            setting: "GITHUB_TOKEN",
            ..
        })
    ));
    // GitHub down: a connection refused is an error, not a hang.
    let dead = GitHubClient::new("http://127.0.0.1:9", "t")
        .unwrap()
        .with_retry(fast());
    assert!(matches!(
        dead.pull_request(&repo(), pr()).await,
        Err(Error::Transport { .. })
    ));
}

#[tokio::test]
async fn permissions_reactions_replies_and_pull_request_branches() {
    use preview_github::{Permission, Reaction};
    let (fake, gh) = setup().await;
    // Anyone is a reader of a public repository; a 404 (unknown user) is no permission.
    assert_eq!(
        gh.collaborator_permission(&repo(), "stranger")
            .await
            .unwrap(),
        Permission::Read
    );
    fake.set_permission("Octo/Hello-World", "Maint", "maintain");
    fake.set_permission("octo/hello-world", "boss", "admin");
    fake.set_permission("octo/hello-world", "tri", "triage");
    let maint = gh.collaborator_permission(&repo(), "maint").await.unwrap();
    assert_eq!(maint, Permission::Write);
    assert!(maint.can_write());
    assert!(
        gh.collaborator_permission(&repo(), "boss")
            .await
            .unwrap()
            .can_write()
    );
    assert!(
        !gh.collaborator_permission(&repo(), "tri")
            .await
            .unwrap()
            .can_write()
    );
    fake.fail_next(
        "GET",
        "/repos/Octo/Hello-World/collaborators/ghost",
        404,
        &[],
        false,
    );
    assert_eq!(
        gh.collaborator_permission(&repo(), "ghost").await.unwrap(),
        Permission::None
    );
    // A login that could change the path is refused before any call.
    let calls = fake.calls().len();
    assert!(gh.collaborator_permission(&repo(), "../x").await.is_err());
    assert_eq!(fake.calls().len(), calls);

    gh.add_reaction(&repo(), 42, Reaction::Eyes).await.unwrap();
    gh.add_reaction(&repo(), 42, Reaction::ThumbsUp)
        .await
        .unwrap();
    assert_eq!(fake.reactions(42), ["eyes", "+1"]);
    let id = gh.create_comment(&repo(), pr(), "hello").await.unwrap();
    assert!(
        fake.comments()
            .iter()
            .any(|c| c.id == id && c.body == "hello")
    );

    // The real shape of a pull request (the event's `pull_request` object is the REST one).
    let event: serde_json::Value =
        serde_json::from_slice(&crate::fixture("pull_request.opened.json")).unwrap();
    let mut body = event["pull_request"].clone();
    body["head"]["repo"]["owner"]["login"] = json!("forker");
    fake.set_pull_request("Octo/Hello-World", 7, body.clone());
    let info = gh.pull_request(&repo(), pr()).await.unwrap();
    assert_eq!(info.head_ref.unwrap().as_str(), "changes");
    assert_eq!(info.base_ref.unwrap().as_str(), "master");
    assert_eq!(info.head_repo.unwrap().full_name(), "forker/Hello-World");
    body["head"]["repo"] = serde_json::Value::Null;
    fake.set_pull_request("Octo/Hello-World", 7, body);
    assert!(
        gh.pull_request(&repo(), pr())
            .await
            .unwrap()
            .head_repo
            .is_none()
    );
}
