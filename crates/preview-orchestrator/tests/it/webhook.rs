//! Every answer of POST /webhook/github.

use std::time::Duration;

use preview_orchestrator::DeploymentStatus;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::{ID2, REPO, SECRET, TestServer, delivery, fixture, pr_event, pr_payload, sha};

fn signed_headers<'a>(event: &'a str, d: &'a str, sig: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-github-event", event),
        ("x-github-delivery", d),
        ("x-hub-signature-256", sig),
        ("content-type", "application/json"),
    ]
}

#[tokio::test]
async fn signature_is_required_and_checked() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let body = fixture("pull_request.opened.json");
    let d = delivery();
    let (status, json) = s
        .post_webhook(
            "/webhook/github",
            &[
                ("x-github-event", "pull_request"),
                ("x-github-delivery", &d),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        json["error"].as_str().unwrap().contains("missing"),
        "{json}"
    );
    let wrong = preview_github::sign(b"not the secret", &body);
    let (status, json) = s
        .post_webhook(
            "/webhook/github",
            &signed_headers("pull_request", &d, &wrong),
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    assert!(json["error"].is_string());
    // Signed, then one byte changed.
    let good = preview_github::sign(SECRET.as_bytes(), &body);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (status, _) = s
        .post_webhook(
            "/webhook/github",
            &signed_headers("pull_request", &d, &good),
            tampered,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .post_webhook(
            "/webhook/github",
            &signed_headers("pull_request", &d, "sha256=zz"),
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        s.orch().store().list().is_empty(),
        "nothing was parsed or queued"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let body = vec![b' '; 25 * 1024 * 1024 + 1];
    let d = delivery();
    let sig = preview_github::sign(SECRET.as_bytes(), &body);
    let (status, _) = s
        .post_webhook(
            "/webhook/github",
            &signed_headers("pull_request", &d, &sig),
            body,
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn real_payloads_are_routed_by_action() {
    let s = TestServer::start(Duration::from_millis(5), &[]).await;
    let head = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

    let (status, json) = s
        .deliver(
            "pull_request",
            &fixture("pull_request.opened.json"),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(
        json,
        json!({ "id": ID2, "status": "queued", "job": "deploy", "sha": head })
    );
    s.idle().await;
    let rec = s.orch().store().get(&ID2.parse_id()).unwrap();
    assert_eq!(rec.status, DeploymentStatus::Running);
    assert_eq!(rec.deployed_sha.as_ref().unwrap().as_str(), head);
    assert_eq!(
        rec.url,
        "https://previews.example/codertocat-hello-world/pr-2/"
    );
    assert_eq!(rec.repo.full_name(), REPO);

    // The same commit again (synchronize of the fixture carries the same sha): nothing to do.
    let (status, json) = s
        .deliver(
            "pull_request",
            &fixture("pull_request.synchronize.json"),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(json["ignored"], true, "{json}");
    assert!(
        json["reason"].as_str().unwrap().contains("already running"),
        "{json}"
    );

    for (file, reason) in [
        ("labeled", "only the `preview` label is handled"),
        (
            "converted_to_draft",
            "action `converted_to_draft` is not handled",
        ),
        (
            "ready_for_review",
            "drafts are deployed already (SKIP_DRAFTS is off)",
        ),
    ] {
        let (status, json) = s
            .deliver(
                "pull_request",
                &fixture(&format!("pull_request.{file}.json")),
                &delivery(),
            )
            .await;
        assert_eq!(status, 202, "{file}");
        assert_eq!(json["ignored"], true);
        assert_eq!(json["reason"], reason, "{file}");
    }

    let (status, json) = s
        .deliver(
            "pull_request",
            &fixture("pull_request.closed.json"),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["job"], "teardown");
    s.idle().await;
    let rec = s.orch().store().get(&ID2.parse_id()).unwrap();
    assert_eq!(rec.status, DeploymentStatus::Stopped);
    assert!(
        s.orch().store().ports(&rec.id).is_none(),
        "ports released on teardown"
    );

    let (_, json) = s
        .deliver(
            "pull_request",
            &fixture("pull_request.closed.json"),
            &delivery(),
        )
        .await;
    assert_eq!(json["reason"], "the preview is already stopped");

    // The vendored examples come from different days; give the reopen a time after the close.
    let mut reopened = pr_payload("reopened");
    reopened["pull_request"]["updated_at"] = "2030-01-01T00:00:00Z".into();
    let reopened = serde_json::to_vec(&reopened).unwrap();
    let (status, json) = s.deliver("pull_request", &reopened, &delivery()).await;
    assert_eq!(
        (status, json["job"].clone()),
        (202, json!("deploy")),
        "{json}"
    );
    s.idle().await;
    assert_eq!(
        s.orch().store().get(&ID2.parse_id()).unwrap().status,
        DeploymentStatus::Running
    );

    let kinds: Vec<_> = s
        .runner
        .calls()
        .iter()
        .map(|c| (c.kind, c.outcome))
        .collect();
    assert_eq!(
        kinds,
        vec![("deploy", "ok"), ("teardown", "ok"), ("deploy", "ok")]
    );
}

#[tokio::test]
async fn drafts_can_wait_for_ready_for_review() {
    let s = TestServer::start(Duration::ZERO, &["--skip-drafts", "true"]).await;
    let mut draft = pr_payload("opened");
    draft["pull_request"]["draft"] = true.into();
    let (status, json) = s
        .deliver(
            "pull_request",
            &serde_json::to_vec(&draft).unwrap(),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(json["reason"], "draft pull request (SKIP_DRAFTS is on)");
    let (status, json) = s
        .deliver(
            "pull_request",
            &fixture("pull_request.ready_for_review.json"),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(json["job"], "deploy", "{json}");
}

#[tokio::test]
async fn ping_other_events_and_form_encoding() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let (status, json) = s.deliver("ping", &fixture("ping.json"), &delivery()).await;
    assert_eq!(status, 200);
    assert_eq!(json["ok"], true);
    assert_eq!(json["zen"], "Anything added dilutes everything else.");

    let (status, json) = s
        .deliver("push", b"{\"ref\":\"refs/heads/main\"}", &delivery())
        .await;
    assert_eq!(status, 202);
    assert_eq!(json["reason"], "event `push` is not handled");

    // GitHub's other content type: payload=<urlencoded JSON>. Signed over the form body.
    let json_body = fixture("pull_request.opened.json");
    let form: String = form_urlencoded_body(&json_body);
    let sig = preview_github::sign(SECRET.as_bytes(), form.as_bytes());
    let d = delivery();
    let (status, json) = s
        .post_webhook(
            "/webhook",
            &[
                ("x-github-event", "pull_request"),
                ("x-github-delivery", &d),
                ("x-hub-signature-256", &sig),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form.into_bytes(),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["id"], ID2);
}

fn form_urlencoded_body(json: &[u8]) -> String {
    let mut s = String::from("payload=");
    for b in json {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                s.push(*b as char)
            }
            b' ' => s.push('+'),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

#[tokio::test]
async fn redeliveries_are_answered_as_duplicates() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let body = fixture("pull_request.opened.json");
    let d = delivery();
    let (status, _) = s.deliver("pull_request", &body, &d).await;
    assert_eq!(status, 202);
    let (status, json) = s.deliver("pull_request", &body, &d).await;
    assert_eq!(status, 200);
    assert_eq!(json["duplicate"], true);
    // A delivery that failed validation is not remembered: fixed and redelivered, it is processed.
    let d2 = delivery();
    let (status, _) = s.deliver("pull_request", b"{", &d2).await;
    assert_eq!(status, 400);
    let (status, _) = s.deliver("pull_request", &body, &d2).await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn repositories_outside_the_allowlist_get_403() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let mut v = pr_payload("opened");
    v["repository"]["owner"]["login"] = "evil".into();
    let (status, json) = s
        .deliver(
            "pull_request",
            &serde_json::to_vec(&v).unwrap(),
            &delivery(),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        json["error"],
        "repository evil/Hello-World is not in ALLOWED_REPOS"
    );
    // owner/* matches any repository of the owner, in any case.
    v["repository"]["owner"]["login"] = "Octo-Org".into();
    v["repository"]["name"] = "Anything".into();
    let (status, json) = s
        .deliver(
            "pull_request",
            &serde_json::to_vec(&v).unwrap(),
            &delivery(),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["id"], "octo-org-anything-pr-2");
    assert!(
        s.orch()
            .store()
            .list()
            .iter()
            .all(|r| r.repo.owner() != "evil")
    );
}

#[tokio::test]
async fn invalid_fields_get_400_naming_them() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/number", json!(0), "number"),
        ("/number", json!(2147483649u64), "number"),
        ("/number", json!("12"), "number"),
        (
            "/repository/owner/login",
            json!("no spaces"),
            "repository.owner.login",
        ),
        ("/repository/name", json!("a/b"), "repository.name"),
        (
            "/pull_request/head/sha",
            json!("1234"),
            "pull_request.head.sha",
        ),
        (
            "/pull_request/head/ref",
            json!("--upload-pack=x"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/head/ref",
            json!("a..b"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/base/ref",
            json!("main.lock"),
            "pull_request.base.ref",
        ),
        ("/action", json!(null), "action"),
    ];
    for (pointer, value, field) in cases {
        let mut v = pr_payload("opened");
        *v.pointer_mut(pointer).unwrap() = value.clone();
        let (status, json) = s
            .deliver(
                "pull_request",
                &serde_json::to_vec(&v).unwrap(),
                &delivery(),
            )
            .await;
        assert_eq!(status, 400, "{pointer}={value}: {json}");
        assert_eq!(json["field"], field, "{pointer}={value}: {json}");
    }
    for body in [
        &b"{"[..],
        b"not json",
        b"",
        b"[1,2]",
        b"{\"action\":\"opened\"}x",
    ] {
        let (status, json) = s.deliver("pull_request", body, &delivery()).await;
        assert_eq!(status, 400, "{body:?}: {json}");
    }
    // Headers: no event, no delivery id.
    let body = fixture("pull_request.opened.json");
    let sig = preview_github::sign(SECRET.as_bytes(), &body);
    let (status, _) = s
        .post_webhook(
            "/webhook/github",
            &[("x-hub-signature-256", &sig), ("x-github-delivery", "abc")],
            body.clone(),
        )
        .await;
    assert_eq!(status, 400);
    let (status, json) = s
        .post_webhook(
            "/webhook/github",
            &[
                ("x-hub-signature-256", &sig),
                ("x-github-event", "pull_request"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(json["field"], "X-GitHub-Delivery");
    assert!(s.orch().store().list().is_empty());
}

#[tokio::test]
async fn stale_deliveries_are_ignored() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let new = pr_event("synchronize", 5, &sha(5, 2), Some("2024-05-01T10:00:02Z"));
    let old = pr_event("synchronize", 5, &sha(5, 1), Some("2024-05-01T10:00:01Z"));
    assert_eq!(s.deliver("pull_request", &new, &delivery()).await.0, 202);
    let (status, json) = s.deliver("pull_request", &old, &delivery()).await;
    assert_eq!(status, 202);
    assert!(
        json["reason"].as_str().unwrap().starts_with("stale event"),
        "{json}"
    );
    s.idle().await;
    let rec = &s.orch().store().list()[0];
    assert_eq!(rec.deployed_sha.as_ref().unwrap().as_str(), sha(5, 2));
}

trait ParseId {
    fn parse_id(&self) -> preview_core::id::PreviewId;
}
impl ParseId for str {
    fn parse_id(&self) -> preview_core::id::PreviewId {
        preview_core::id::PreviewId::parse(self).unwrap()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn server() -> &'static TestServer {
    static S: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    S.get_or_init(|| runtime().block_on(TestServer::start(Duration::ZERO, &[])))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary bytes and headers, signed or not, never make the handler panic or answer 5xx.
    #[test]
    fn arbitrary_requests_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        event in "(ping|pull_request|push|[a-z_]{0,10}|[ -~]{0,12})",
        delivery in "[ -~]{0,40}",
        ct in "(application/json|application/x-www-form-urlencoded|[ -~]{0,20})",
        sign in any::<bool>(),
        sig_junk in "[ -~]{0,80}",
        mutate_real in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let mut body = body;
        if mutate_real {
            body = fixture("pull_request.opened.json");
            for (i, b) in flips {
                let n = body.len();
                body[i % n] = b;
            }
        }
        let sig = if sign { preview_github::sign(SECRET.as_bytes(), &body) } else { sig_junk };
        let s = server();
        let status = runtime().block_on(async {
            let mut req = s.http.post(format!("{}/webhook/github", s.base)).body(body);
            for (k, v) in [("x-github-event", event), ("x-github-delivery", delivery),
                           ("content-type", ct), ("x-hub-signature-256", sig)] {
                if let Ok(v) = reqwest::header::HeaderValue::from_str(&v) {
                    req = req.header(k, v);
                }
            }
            req.send().await.unwrap().status().as_u16()
        });
        prop_assert!([200u16, 202, 400, 401, 403].contains(&status), "status {}", status);
    }
}
