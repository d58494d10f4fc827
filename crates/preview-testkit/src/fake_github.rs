//! A stateful fake of the GitHub REST API parts the orchestrator uses: issue comments,
//! deployments and their statuses, commit statuses and pull requests. It speaks the real shapes,
//! records every call, and can be told to fail (5xx, or a 403 rate limit with its headers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub authorization: Option<String>,
}

/// How the fake answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 500 Internal Server Error.
    ServerError,
    /// 403 with `x-ratelimit-remaining: 0` and a reset one second ahead.
    RateLimited,
}

#[derive(Default)]
struct Data {
    calls: Vec<Call>,
    next_id: u64,
    comments: BTreeMap<u64, Value>,
    deployments: Vec<Value>,
    deployment_statuses: Vec<Value>,
    commit_statuses: Vec<Value>,
    pulls: BTreeMap<(String, u64), Value>,
    failures: Vec<Failure>,
    fail_always: Option<Failure>,
}

/// The fake's shared state; clone it freely.
#[derive(Clone, Default)]
pub struct FakeGitHub(Arc<Mutex<Data>>);

/// A running fake on a 127.0.0.1 port; it stops when dropped.
pub struct RunningFakeGitHub {
    pub state: FakeGitHub,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningFakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Starts the fake on a free port.
    pub async fn start() -> RunningFakeGitHub {
        let state = FakeGitHub::default();
        let app = Router::new()
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                get(list_comments).post(create_comment),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                patch(update_comment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments",
                get(list_deployments).post(create_deployment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                post(create_deployment_status),
            )
            .route(
                "/repos/{owner}/{repo}/statuses/{sha}",
                post(create_commit_status),
            )
            .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                record_and_fail,
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RunningFakeGitHub { state, url, task }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        f(&mut self.0.lock().expect("fake GitHub state"))
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|d| d.calls.clone())
    }

    /// Comments on `owner/repo#number`, oldest first.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<Value> {
        let url = format!("/repos/{repo}/issues/{number}");
        self.with(|d| {
            d.comments
                .values()
                .filter(|c| c["issue_url"].as_str() == Some(&url))
                .cloned()
                .collect()
        })
    }

    /// Deployments created so far.
    pub fn deployments(&self) -> Vec<Value> {
        self.with(|d| d.deployments.clone())
    }

    /// Deployment statuses created so far, in order.
    pub fn deployment_statuses(&self) -> Vec<Value> {
        self.with(|d| d.deployment_statuses.clone())
    }

    /// Commit statuses created so far, in order.
    pub fn commit_statuses(&self) -> Vec<Value> {
        self.with(|d| d.commit_statuses.clone())
    }

    /// Sets what GET /pulls/{number} answers, e.g. `{"state": "closed"}` merged into a PR shape.
    pub fn set_pull(&self, repo: &str, number: u64, state: &str, head_sha: &str) {
        let pr = json!({"number": number, "state": state, "head": {"sha": head_sha}});
        self.with(|d| d.pulls.insert((repo.to_owned(), number), pr));
    }

    /// The next `n` requests fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.with(|d| d.failures.extend(std::iter::repeat_n(failure, n)));
    }

    /// Every request fails with `failure` until [`FakeGitHub::recover`].
    pub fn fail_always(&self, failure: Failure) {
        self.with(|d| d.fail_always = Some(failure));
    }

    /// Stops failing.
    pub fn recover(&self) {
        self.with(|d| {
            d.fail_always = None;
            d.failures.clear();
        });
    }
}

async fn record_and_fail(
    State(state): State<FakeGitHub>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let failure = state.with(|d| {
        d.calls.push(Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        if d.failures.is_empty() {
            d.fail_always
        } else {
            Some(d.failures.remove(0))
        }
    });
    match failure {
        Some(Failure::ServerError) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"message": "Server Error"})),
        )
            .into_response(),
        Some(Failure::RateLimited) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + 1)
                .unwrap_or_default();
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
            headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            headers.insert("retry-after", "1".parse().unwrap());
            (
                StatusCode::FORBIDDEN,
                headers,
                Json(json!({"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"})),
            )
                .into_response()
        }
        None => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("Not Found: {method} {uri}"), "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn next_id(d: &mut Data) -> u64 {
    d.next_id += 1;
    d.next_id
}

async fn list_comments(
    State(state): State<FakeGitHub>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Json<Value> {
    Json(Value::Array(
        state.comments(&format!("{owner}/{repo}"), number),
    ))
}

async fn create_comment(
    State(state): State<FakeGitHub>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let Some(text) = body["body"].as_str() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "body is required"})),
        )
            .into_response();
    };
    let comment = state.with(|d| {
        let id = next_id(d);
        let comment = json!({
            "id": id,
            "node_id": format!("IC_{id}"),
            "body": text,
            "issue_url": format!("/repos/{owner}/{repo}/issues/{number}"),
            "html_url": format!("https://github.com/{owner}/{repo}/pull/{number}#issuecomment-{id}"),
            "user": {"login": "preview-bot", "type": "Bot"},
        });
        d.comments.insert(id, comment.clone());
        comment
    });
    (StatusCode::CREATED, Json(comment)).into_response()
}

async fn update_comment(
    State(state): State<FakeGitHub>,
    Path((_owner, _repo, id)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let updated = state.with(|d| {
        let comment = d.comments.get_mut(&id)?;
        comment["body"] = body["body"].clone();
        Some(comment.clone())
    });
    match updated {
        Some(comment) => Json(comment).into_response(),
        None => not_found(Method::PATCH, format!("/comments/{id}").parse().unwrap()).await,
    }
}

async fn list_deployments(State(state): State<FakeGitHub>) -> Json<Value> {
    Json(Value::Array(state.deployments()))
}

async fn create_deployment(
    State(state): State<FakeGitHub>,
    Path((owner, repo)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let deployment = state.with(|d| {
        let id = next_id(d);
        let mut deployment = body.clone();
        deployment["id"] = json!(id);
        deployment["url"] = json!(format!("/repos/{owner}/{repo}/deployments/{id}"));
        deployment["environment"] = body
            .get("environment")
            .cloned()
            .unwrap_or(json!("production"));
        d.deployments.push(deployment.clone());
        deployment
    });
    (StatusCode::CREATED, Json(deployment)).into_response()
}

async fn create_deployment_status(
    State(state): State<FakeGitHub>,
    Path((_owner, _repo, id)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let status = state.with(|d| {
        let mut status = body.clone();
        status["id"] = json!(next_id(d));
        status["deployment_id"] = json!(id);
        d.deployment_statuses.push(status.clone());
        status
    });
    (StatusCode::CREATED, Json(status)).into_response()
}

async fn create_commit_status(
    State(state): State<FakeGitHub>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let status = state.with(|d| {
        let mut status = body.clone();
        status["id"] = json!(next_id(d));
        status["sha"] = json!(sha);
        d.commit_statuses.push(status.clone());
        status
    });
    (StatusCode::CREATED, Json(status)).into_response()
}

async fn get_pull(
    State(state): State<FakeGitHub>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let repo = format!("{owner}/{repo}");
    match state.with(|d| d.pulls.get(&(repo, number)).cloned()) {
        Some(pr) => Json(pr).into_response(),
        None => not_found(Method::GET, format!("/pulls/{number}").parse().unwrap()).await,
    }
}
