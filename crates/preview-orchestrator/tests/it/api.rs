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
