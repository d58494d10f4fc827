//! Per-repository preview secrets (issue 14): the internal API that sets, lists and unsets them;
//! a secret reaching a trusted preview's real container, through the real orchestrator binary,
//! and no other place (PR comments, every call to GitHub, the orchestrator's log, the work dir,
//! every API answer), in any form (plain, percent-encoded, base64); and an untrusted commit's
//! container without it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use preview_core::id::{BranchName, CommitSha, PrNumber, RepoFullName};
use preview_orchestrator::{DeployRequest, DeploymentStatus, JobTrigger};
use preview_testkit::{docker, unique_suffix, wait_for_http};
use reqwest::Method;
use serde_json::Value;

use crate::e2e_support::{DaemonWorld, E2e, Tree, eventually, files_under, find_secret};
use crate::harness::{REPO, TOKEN, TestServer};

const LIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// `PUT {api}/api/repos/{repo}/secrets/{name}{query}` with `body`; the status and the answer.
async fn put_secret(api: &str, repo: &str, name: &str, query: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .put(format!("{api}/api/repos/{repo}/secrets/{name}{query}"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Any request to the API with the token; the status and the answer's text.
async fn api_text(api: &str, method: Method, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .request(method, format!("{api}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_api_sets_lists_and_unsets_names_and_refuses_bad_input_precisely() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let value = "sk_live_api_0123456789+/=";
    let path = |name: &str| format!("/api/repos/{REPO}/secrets/{name}");
    let mut answers = Vec::new();

    let (status, answer) = put_secret(&s.base, REPO, "STRIPE_KEY", "", value.into()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (201, Some("created")),
        "{answer}"
    );
    answers.push(answer.to_string());
    let (status, answer) = put_secret(&s.base, REPO, "STRIPE_KEY", "", value.into()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("updated")),
        "{answer}"
    );
    answers.push(answer.to_string());
    // The CLI's way: base64, decoded by the server (a multi-line value, quotes and all).
    let pem = "-----BEGIN KEY-----\nline \"one\" \\ two\n-----END KEY-----";
    let (status, answer) = put_secret(
        &s.base,
        "codertocat/HELLO-WORLD",
        "TLS_KEY",
        "?encoding=base64",
        preview_core::render::compose::base64(pem.as_bytes()).into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    answers.push(answer.to_string());

    let (status, listed) =
        api_text(&s.base, Method::GET, &format!("/api/repos/{REPO}/secrets")).await;
    assert_eq!(status, 200);
    let listed_json: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed_json["secrets"],
        serde_json::json!(["STRIPE_KEY", "TLS_KEY"])
    );
    answers.push(listed);

    // Stored 0600 in a 0700 dir beside the deployments db, one file per repository, as sent.
    let dir = s.dir.path().join("secrets");
    let file = dir.join("codertocat/hello-world.json");
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["STRIPE_KEY"], value);
    assert_eq!(stored["TLS_KEY"], pem);
    assert!(!file.starts_with(s.dir.path().join("deployments")));

    // Bad input: a precise message each, never a 500.
    let big = vec![b'x'; 64 * 1024 + 1];
    let huge = vec![b'x'; 300 * 1024];
    let cases: Vec<(String, &str, Vec<u8>, u16, &str)> = vec![
        (
            path("MY-KEY"),
            "",
            b"v".to_vec(),
            400,
            "environment variable name",
        ),
        (path("1KEY"), "", b"v".to_vec(), 400, "starts with a digit"),
        (
            path("PORT"),
            "",
            b"v".to_vec(),
            400,
            "PORT is reserved: the preview sets this variable itself",
        ),
        (
            path("PREVIEW_TOKEN"),
            "",
            b"v".to_vec(),
            400,
            "the preview sets this variable itself",
        ),
        (
            path("DATABASE_URL"),
            "",
            b"v".to_vec(),
            400,
            "the preview sets this variable itself",
        ),
        (
            path("DOCKER_HOST"),
            "",
            b"v".to_vec(),
            400,
            "Docker Compose reads this variable",
        ),
        (
            path(&"K".repeat(129)),
            "",
            b"v".to_vec(),
            400,
            "at most 128",
        ),
        (
            path("BIG"),
            "",
            big.clone(),
            413,
            "it is 65537 bytes; at most 65536 bytes (64 KiB)",
        ),
        (
            path("HUGE"),
            "",
            huge,
            413,
            "larger than 65536 bytes (64 KiB)",
        ),
        (
            path("BIG"),
            "?encoding=base64",
            preview_core::render::compose::base64(&big).into_bytes(),
            413,
            "it is 65537 bytes",
        ),
        (
            path("B64"),
            "?encoding=base64",
            b"not base64!".to_vec(),
            400,
            "not valid base64",
        ),
        (
            path("Q"),
            "?encoding=hex",
            b"00".to_vec(),
            400,
            "encoding=base64",
        ),
        (path("EMPTY"), "", Vec::new(), 400, "it is empty"),
        (path("NUL"), "", b"a\0b".to_vec(), 400, "NUL byte"),
        (path("LATIN1"), "", vec![0xe9, 0x74, 0xe9], 400, "not UTF-8"),
        (
            "/api/repos/stranger/repo/secrets/KEY".into(),
            "",
            b"v".to_vec(),
            404,
            "unknown repository stranger/repo: it is not in ALLOWED_REPOS",
        ),
        (
            "/api/repos/-bad/repo/secrets/KEY".into(),
            "",
            b"v".to_vec(),
            400,
            "repository owner",
        ),
    ];
    for (path, query, body, want_status, want_message) in cases {
        let resp = s
            .http
            .put(format!("{}{path}{query}", s.base))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap();
        let message = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, want_status, "{path}{query}: {answer}");
        assert!(message.contains(want_message), "{path}{query}: {message}");
    }
    let (status, text) = api_text(&s.base, Method::GET, "/api/repos/stranger/repo/secrets").await;
    assert_eq!(status, 404, "{text}");
    // The token and a direct loopback peer, as for every internal route.
    let r = s
        .http
        .get(format!("{}/api/repos/{REPO}/secrets", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .put(format!("{}{}", s.base, path("X")))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap())
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        2,
        "nothing refused was stored"
    );

    let (status, text) = api_text(&s.base, Method::DELETE, &path("STRIPE_KEY")).await;
    assert_eq!(status, 200, "{text}");
    answers.push(text);
    let (status, text) = api_text(&s.base, Method::DELETE, &path("STRIPE_KEY")).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("has no secret STRIPE_KEY"), "{text}");
    let (_, listed) = api_text(&s.base, Method::GET, &format!("/api/repos/{REPO}/secrets")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap()["secrets"],
        serde_json::json!(["TLS_KEY"])
    );
    answers.push(listed);
    for answer in &answers {
        assert_eq!(
            find_secret(answer.as_bytes(), &[value, pem]),
            None,
            "{answer}"
        );
    }

    // The fixture's author is the repository's OWNER: the gate trusts the commit, and the record
    // says so.
    let (status, _) = s
        .pull_request("opened", 2, &crate::harness::sha(1, 1))
        .await;
    assert_eq!(status, 202);
    s.idle().await;
    let (_, rec) = s
        .api(
            Method::GET,
            &format!("/api/previews/{}", crate::harness::ID2),
        )
        .await;
    assert_eq!(rec["trusted"], true, "{rec}");
}

#[test]
fn the_secrets_dir_must_be_outside_the_work_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("deployments").join("secrets");
    let config = preview_orchestrator::Config::load(crate::harness::args(
        dir.path(),
        &["--secrets-dir", inside.to_str().unwrap()],
    ));
    let err = match config {
        Ok(config) => config.validate().unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("SECRETS_DIR") && err.contains("outside DEPLOYMENTS_DIR"),
        "{err}"
    );
    let config = preview_orchestrator::Config::load(crate::harness::args(dir.path(), &[])).unwrap();
    assert_eq!(
        config.secrets_dir(),
        dir.path().join("secrets"),
        "beside the deployments db"
    );
}

/// The app container of preview `id` that publishes its port (there is one once it settled).
async fn app_container(id: &str) -> String {
    let out = docker([
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
        "--filter",
        "label=dev.preview-deployer.slot",
    ])
    .await
    .unwrap();
    let ids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one app container for {id}: {out:?}");
    ids[0].to_owned()
}

/// The value of `name` in the environment of `container`'s app process, if set.
async fn container_env(container: &str, name: &str) -> Option<String> {
    let out = docker([
        "exec",
        container,
        "python3",
        "-c",
        &format!("import os; print(os.environ.get('{name}', '<unset>'), end='')"),
    ])
    .await
    .unwrap();
    (out != "<unset>").then_some(out)
}

/// Through the real binary and engine: a secret set over the API reaches the preview's container
/// at its first deploy and after an update (which starts the new app beside the old and then
/// converges the project: every one of those Compose commands needs it), and a failed update
/// whose app prints its environment publishes a comment with the value redacted. The value, in
/// every form, is then looked for everywhere else it could land: absent.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_the_container_and_nothing_else() {
    let world = DaemonWorld::new("secrets", &[]).await;
    let daemon = world.start();
    let value = format!("sk_live_{}+Zq/9=", unique_suffix());
    let mut answers = Vec::new();
    let (status, answer) = put_secret(
        &daemon.api,
        &world.repo,
        "STRIPE_KEY",
        "",
        value.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    answers.push(answer.to_string());
    let pr = 6;
    let id = world.id(pr);
    let health = format!("{}health", world.path(pr));

    // 1. The first commit: live, with the secret in its environment.
    let first_tree = Tree::fixture("python-plain").replace("python-plain ok", "first");
    let first = world.origin.commit(pr, &first_tree, "first").await;
    world.send(&daemon, "opened", pr, &first).await;
    let rec = daemon.settled(&id).await;
    assert_eq!(rec["status"]["state"], "running", "{rec}");
    wait_for_http(world.nginx.port(), &health, LIVE_TIMEOUT, |a| {
        a.body == "first\n"
    })
    .await;
    let first_app = app_container(&id).await;
    assert_eq!(
        container_env(&first_app, "STRIPE_KEY").await.as_deref(),
        Some(value.as_str())
    );

    // 2. An update whose app prints its environment and never gets healthy: the failure
    // comment carries the container log tail, the value redacted.
    let printing = Tree::fixture("python-plain").with(
        "preview-config.yml",
        "health_check_path: /not-there\nstartup_commands:\n  - env\n",
    );
    let second = world.origin.commit(pr, &printing, "prints its env").await;
    world.send(&daemon, "synchronize", pr, &second).await;
    let rec = daemon.settled(&id).await;
    assert_eq!(rec["status"]["state"], "failed", "{rec}");
    let failure = eventually("the failure comment", Duration::from_secs(30), || {
        world.github.comments().into_iter().find(|c| {
            c.pr == pr && c.body.contains("Preview failed") && c.body.contains(&second[..7])
        })
    })
    .await;
    assert!(
        failure.body.contains("[redacted STRIPE_KEY]"),
        "the env output is in the tail, redacted: {}",
        failure.body
    );
    // The first commit serves on, with its secret.
    assert_eq!(
        container_env(&first_app, "STRIPE_KEY").await.as_deref(),
        Some(value.as_str())
    );

    // 3. A good update: the new app has the secret once the old one is retired.
    let third_tree = Tree::fixture("python-plain").replace("python-plain ok", "third");
    let third = world.origin.commit(pr, &third_tree, "third").await;
    world.send(&daemon, "synchronize", pr, &third).await;
    let rec = daemon.settled(&id).await;
    assert_eq!(rec["status"]["state"], "running", "{rec}");
    wait_for_http(world.nginx.port(), &health, LIVE_TIMEOUT, |a| {
        a.body == "third\n"
    })
    .await;
    let third_app = app_container(&id).await;
    assert_ne!(third_app, first_app);
    assert_eq!(
        container_env(&third_app, "STRIPE_KEY").await.as_deref(),
        Some(value.as_str())
    );
    // The compose file names it, without its value.
    let compose = std::fs::read_to_string(world.work(pr).join("docker-compose.yml")).unwrap();
    assert!(compose.contains("STRIPE_KEY: null"), "{compose}");

    // Every API answer.
    for path in [
        "/api/previews".to_owned(),
        format!("/api/previews/{id}"),
        format!("/api/repos/{}/secrets", world.repo),
    ] {
        let (status, text) = api_text(&daemon.api, Method::GET, &path).await;
        assert_eq!(status, 200, "{path}: {text}");
        answers.push(text);
    }
    let mut surfaces: Vec<(String, Vec<u8>)> = answers
        .into_iter()
        .map(|a| ("an API answer".to_owned(), a.into_bytes()))
        .collect();
    // Every call to GitHub: comments (each edit), deployments, statuses.
    let calls = world.github.calls();
    assert!(
        calls.len() >= 6,
        "the fake GitHub was called: {}",
        calls.len()
    );
    for call in calls {
        surfaces.push((
            format!("{} {}", call.method, call.path),
            call.body.to_string().into_bytes(),
        ));
    }
    for comment in world.github.comments() {
        surfaces.push((format!("comment {}", comment.id), comment.body.into_bytes()));
    }
    // The orchestrator's log, as printed and as written to its log files.
    surfaces.push((
        "the orchestrator's stdout".to_owned(),
        daemon.log().join("\n").into_bytes(),
    ));
    for dir in [
        world.work(pr),
        world.dir.path().join("logs"),
        world.nginx.conf_dir(),
    ] {
        for (path, bytes) in files_under(&dir) {
            surfaces.push((path.display().to_string(), bytes));
        }
    }
    assert!(
        surfaces.len() > 15,
        "the surfaces were read ({})",
        surfaces.len()
    );
    for (what, bytes) in &surfaces {
        if let Some(leak) = find_secret(bytes, &[&value]) {
            panic!("the secret ({leak:?}) in {what}");
        }
    }
    // The scan finds it where it is meant to be: the container's configuration and the store.
    let inspect = docker(["inspect", &third_app]).await.unwrap();
    assert!(find_secret(inspect.as_bytes(), &[&value]).is_some());
    let stored = world.dir.path().join("secrets");
    assert!(
        files_under(&stored)
            .iter()
            .any(|(_, b)| find_secret(b, &[&value]).is_some())
    );

    world.close_and_check(&daemon, pr, &third).await;
    daemon.stop().await;
}

/// A deploy of an untrusted commit gets no secret, and its compose file does not name it; the
/// same commit, trusted later, is deployed again (not ignored as already running) and gets it.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_commit_gets_no_secret() {
    let e2e = E2e::start("secrets-untrusted", &[]).await;
    let value = format!("sk_untrusted_{}", unique_suffix());
    let (status, answer) = put_secret(
        &e2e.api,
        &e2e.repo,
        "STRIPE_KEY",
        "",
        value.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let pr = 8;
    let sha = e2e
        .commit(pr, &Tree::fixture("python-plain"), "from a fork")
        .await;
    let request = |trusted: bool| DeployRequest {
        repo: RepoFullName::parse(&e2e.repo).unwrap(),
        pr: PrNumber::new(pr).unwrap(),
        sha: CommitSha::parse(&sha).unwrap(),
        branch: BranchName::parse("feature").unwrap(),
        base_branch: BranchName::parse("main").unwrap(),
        head_repo: None,
        clone_url: None,
        draft: false,
        event_at: None,
        trigger: JobTrigger::Api,
        force: false,
        trusted,
    };
    e2e.orch
        .scheduler()
        .submit_deploy(request(false))
        .await
        .unwrap();
    let rec = e2e
        .wait_status(pr, DeploymentStatus::Running, LIVE_TIMEOUT)
        .await;
    assert!(!rec.trusted);
    let id = e2e.id(pr);
    let untrusted_app = app_container(id.as_str()).await;
    assert_eq!(container_env(&untrusted_app, "STRIPE_KEY").await, None);
    let compose = std::fs::read_to_string(
        e2e.dir
            .path()
            .join("deployments")
            .join(id.as_str())
            .join("docker-compose.yml"),
    )
    .unwrap();
    assert!(!compose.contains("STRIPE_KEY"), "{compose}");

    // Trusted now (a maintainer approved the same commit): deployed again, with the secret.
    let outcome = e2e
        .orch
        .scheduler()
        .submit_deploy(request(true))
        .await
        .unwrap();
    assert!(
        matches!(outcome, preview_orchestrator::Submission::Queued { .. }),
        "{outcome:?}"
    );
    e2e.idle(LIVE_TIMEOUT).await;
    let rec = e2e.record(pr).unwrap();
    assert_eq!(rec.status, DeploymentStatus::Running);
    assert!(rec.trusted);
    let trusted_app = app_container(id.as_str()).await;
    assert_eq!(
        container_env(&trusted_app, "STRIPE_KEY").await.as_deref(),
        Some(value.as_str())
    );
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}
