//! The internal API, /health and /metrics.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::{ID2, TestServer, delivery, fixture};

#[tokio::test]
async fn the_api_needs_the_token_and_a_direct_loopback_peer() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let r = s
        .http
        .get(format!("{}/api/previews", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(format!("{}/api/previews", s.base))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Proxied through nginx (forwarding headers): refused even with the token.
    let r = s
        .http
        .get(format!("{}/api/previews", s.base))
        .bearer_auth(crate::harness::TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s
        .http
        .get(format!("{}/health", s.base))
        .header("x-real-ip", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn list_get_redeploy_delete() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let (status, json) = s.api(Method::GET, "/api/previews").await;
    assert_eq!(
        (status, json["previews"].as_array().unwrap().len()),
        (200, 0)
    );
    assert_eq!(
        s.deliver(
            "pull_request",
            &fixture("pull_request.opened.json"),
            &delivery()
        )
        .await
        .0,
        202
    );
    s.idle().await;

    let (status, json) = s.api(Method::GET, "/api/previews").await;
    assert_eq!(status, 200);
    let list = json["previews"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], ID2);
    assert_eq!(list[0]["status"]["state"], "running");
    assert!(list[0]["ports"]["app"].as_u64().unwrap() > 0);

    let (status, one) = s.api(Method::GET, &format!("/api/previews/{ID2}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["prNumber"], 2);
    assert_eq!(one["repo"], "Codertocat/Hello-World");
    assert_eq!(one["framework"], "recording");

    assert_eq!(s.api(Method::GET, "/api/previews/nope-pr-1").await.0, 404);
    assert_eq!(s.api(Method::GET, "/api/previews/..%2Fetc").await.0, 400);
    assert_eq!(
        s.api(Method::POST, "/api/previews/nope-pr-1/redeploy")
            .await
            .0,
        404
    );
    assert_eq!(
        s.api(Method::DELETE, "/api/previews/nope-pr-1").await.0,
        404
    );

    let (status, json) = s
        .api(Method::POST, &format!("/api/previews/{ID2}/redeploy"))
        .await;
    assert_eq!(
        (status, json["job"].as_str()),
        (202, Some("deploy")),
        "{json}"
    );
    s.idle().await;
    assert_eq!(s.runner.calls().len(), 2);

    let (status, json) = s.api(Method::DELETE, &format!("/api/previews/{ID2}")).await;
    assert_eq!(
        (status, json["job"].as_str()),
        (202, Some("teardown")),
        "{json}"
    );
    s.idle().await;
    let (_, one) = s.api(Method::GET, &format!("/api/previews/{ID2}")).await;
    assert_eq!(one["status"]["state"], "stopped");
    assert_eq!(one["ports"], Value::Null);
}

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    assert_eq!(
        s.deliver(
            "pull_request",
            &fixture("pull_request.opened.json"),
            &delivery()
        )
        .await
        .0,
        202
    );
    s.idle().await;
    let h: Value = s
        .http
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["queueDepth"], 0);
    assert_eq!(h["livePreviews"], 1);
    assert!(h["uptimeSeconds"].is_u64());
    assert!(h["docker"].is_boolean());
    assert_eq!(h["tls"]["state"], "off", "path routing has no certificate");
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "preview_webhooks_total{event=\"pull_request\",outcome=\"queued\"}",
        "preview_queue_depth",
        "preview_jobs_total{kind=\"deploy\",outcome=\"success\"}",
        "preview_job_duration_seconds_bucket{phase=\"deploy\"",
        "preview_live_previews",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

/// With PREVIEW_DOMAIN, `/health` says HTTPS is pending and URLs are http:// until the wildcard
/// certificate is in TLS_DIR; then it is active and a redeploy gives the preview an https:// URL.
#[tokio::test]
async fn tls_is_pending_until_the_certificate_exists() {
    let tls = tempfile::tempdir().unwrap();
    let tls_dir = tls.path().display().to_string();
    let s = TestServer::start(
        Duration::ZERO,
        &[
            "--preview-domain",
            "preview.example.test",
            "--tls-dir",
            &tls_dir,
        ],
    )
    .await;
    let health = || async {
        let h: Value = s
            .http
            .get(format!("{}/health", s.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        h["tls"].clone()
    };
    assert_eq!(health().await["state"], "pending");
    assert_eq!(health().await["renewal"], "manual", "no DigitalOcean token");
    s.deliver(
        "pull_request",
        &fixture("pull_request.opened.json"),
        &delivery(),
    )
    .await;
    s.idle().await;
    let (_, json) = s.api(Method::GET, "/api/previews").await;
    let url = json["previews"][0]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://") && url.ends_with(".preview.example.test/"),
        "{url}"
    );

    // A certificate appears (as the issuer writes it).
    let p = |name: &str| tls.path().join(name).display().to_string();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-keyout",
            &p("privkey.pem"),
            "-out",
            &p("fullchain.pem"),
        ])
        .args(["-days", "90", "-subj", "/CN=preview.example.test"])
        .args([
            "-addext",
            "subjectAltName=DNS:*.preview.example.test,DNS:preview.example.test",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls_health = health().await;
    assert_eq!(tls_health["state"], "active", "{tls_health}");
    assert!(tls_health["notAfter"].as_str().is_some(), "{tls_health}");

    let (status, _) = s
        .api(Method::POST, &format!("/api/previews/{ID2}/redeploy"))
        .await;
    assert_eq!(status, 202);
    s.idle().await;
    let (_, json) = s.api(Method::GET, "/api/previews").await;
    let url = json["previews"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://"), "{url}");
}
