//! An in-process fake of the parts of GitHub's REST API that [`crate::GitHubClient`] uses. It
//! keeps comments, deployments, deployment statuses and commit statuses in memory, records every
//! call, and can be told to fail the next matching calls (5xx, rate limits).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path with query.
    pub path: String,
    /// JSON body (`null` when none).
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// When it arrived (wall clock, so that tests can compare it with `x-ratelimit-reset`).
    pub at: std::time::SystemTime,
}

/// A comment held by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeComment {
    /// Its id.
    pub id: u64,
    /// `owner/name` (lowercase) and PR number.
    pub repo: String,
    /// The PR number.
    pub pr: u64,
    /// Its body.
    pub body: String,
}

/// A deployment held by the fake, with its statuses.
#[derive(Debug, Clone)]
pub struct FakeDeployment {
    /// Its id.
    pub id: u64,
    /// `owner/name` (lowercase).
    pub repo: String,
    /// The request body that created it.
    pub request: Value,
    /// Status bodies, oldest first.
    pub statuses: Vec<Value>,
}

struct Failure {
    method: Method,
    path_prefix: String,
    status: StatusCode,
    headers: Vec<(String, String)>,
    apply: bool,
}

#[derive(Default)]
struct FakeState {
    next_id: u64,
    calls: Vec<RecordedCall>,
    comments: Vec<FakeComment>,
    deployments: Vec<FakeDeployment>,
    commit_statuses: BTreeMap<String, Vec<Value>>,
    pulls: BTreeMap<(String, u64), Value>,
    /// `(repo, lowercase login)` to the permission GitHub reports.
    permissions: BTreeMap<(String, String), String>,
    /// Reactions by comment id, in order.
    reactions: BTreeMap<u64, Vec<String>>,
    failures: VecDeque<Failure>,
    /// Answers every call not matched by `failures`, until lifted: GitHub down.
    outage: Option<Failure>,
}

/// The fake API, serving on `127.0.0.1:{random port}` until dropped.
pub struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitHub {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            next_id: 1000,
            ..FakeState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GitHub on loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// The base URL to give the client (`GITHUB_API_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Every comment, in creation order.
    pub fn comments(&self) -> Vec<FakeComment> {
        self.state.lock().unwrap().comments.clone()
    }

    /// Every deployment with its statuses.
    pub fn deployments(&self) -> Vec<FakeDeployment> {
        self.state.lock().unwrap().deployments.clone()
    }

    /// The commit statuses of `sha`, oldest first.
    pub fn commit_statuses(&self, sha: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .commit_statuses
            .get(sha)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets `user`'s permission on `repo` (`admin`, `maintain`, `write`, `triage`, `read` or
    /// `none`). A user never set answers `read`, as GitHub does for anyone on a public repository.
    pub fn set_permission(&self, repo: &str, user: &str, permission: &str) {
        self.state.lock().unwrap().permissions.insert(
            (repo.to_ascii_lowercase(), user.to_ascii_lowercase()),
            permission.to_owned(),
        );
    }

    /// The reactions (`content` values) added to comment `comment_id`, oldest first.
    pub fn reactions(&self, comment_id: u64) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .reactions
            .get(&comment_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets what `GET /repos/{repo}/pulls/{pr}` answers (`repo` is `owner/name`).
    pub fn set_pull_request(&self, repo: &str, pr: u64, body: Value) {
        self.state
            .lock()
            .unwrap()
            .pulls
            .insert((repo.to_ascii_lowercase(), pr), body);
    }

    /// Sets PR `pr` of `repo` to `state` (`open` or `closed`) at `head_sha`, in the shape of
    /// `GET /repos/{owner}/{repo}/pulls/{pr}` (the fields the client reads and their usual
    /// neighbours). A closed PR is not merged; use [`FakeGitHub::set_pull_request`] for more.
    pub fn set_pull_request_state(&self, repo: &str, pr: u64, state: &str, head_sha: &str) {
        let closed = state == "closed";
        let url = format!(
            "https://api.github.com/repos/{}/pulls/{pr}",
            repo.to_ascii_lowercase()
        );
        self.set_pull_request(
            repo,
            pr,
            json!({
                "url": url,
                "number": pr,
                "state": state,
                "locked": false,
                "title": format!("PR {pr}"),
                "draft": false,
                "merged": false,
                "merged_at": null,
                "closed_at": if closed { json!("2025-01-01T00:00:00Z") } else { Value::Null },
                "head": { "ref": format!("pr-{pr}"), "sha": head_sha },
                "base": { "ref": "main" },
            }),
        );
    }

    /// Makes every call answer `status` with `headers` (and change nothing) until
    /// [`FakeGitHub::recover`]: GitHub down (5xx) or rate-limited (403 with rate-limit headers).
    /// Calls are still recorded.
    pub fn fail_all(&self, status: u16, headers: &[(&str, &str)]) {
        self.state.lock().unwrap().outage = Some(Failure {
            method: Method::GET,
            path_prefix: "/".to_owned(),
            status: StatusCode::from_u16(status).expect("a status code"),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            apply: false,
        });
    }

    /// Ends a [`FakeGitHub::fail_all`] outage.
    pub fn recover(&self) {
        self.state.lock().unwrap().outage = None;
    }

    /// Makes the next call with `method` whose path starts with `path_prefix` answer `status`
    /// with `headers`. With `apply`, the call takes effect anyway (a create that "fails" after
    /// creating). Several failures queue up.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
        apply: bool,
    ) {
        self.state.lock().unwrap().failures.push_back(Failure {
            method: method.parse().expect("an HTTP method"),
            path_prefix: path_prefix.to_owned(),
            status: StatusCode::from_u16(status).expect("a status code"),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            apply,
        });
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let mut st = state.lock().unwrap();
    st.calls.push(RecordedCall {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        body: body.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: std::time::SystemTime::now(),
    });
    let failure = st
        .failures
        .iter()
        .position(|f| f.method == method && path.starts_with(&f.path_prefix))
        .and_then(|i| st.failures.remove(i))
        .or_else(|| {
            st.outage.as_ref().map(|f| Failure {
                method: f.method.clone(),
                path_prefix: f.path_prefix.clone(),
                status: f.status,
                headers: f.headers.clone(),
                apply: false,
            })
        });
    match failure {
        Some(f) => {
            if f.apply {
                route(&mut st, &method, &path, &query, body);
            }
            drop(st);
            let mut resp = json_response(f.status, json!({ "message": "injected failure" }));
            for (k, v) in f.headers {
                resp.headers_mut().insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    HeaderValue::from_str(&v).expect("header value"),
                );
            }
            resp
        }
        None => {
            let (status, value) = route(&mut st, &method, &path, &query, body);
            json_response(status, value)
        }
    }
}

fn route(
    st: &mut FakeState,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> (StatusCode, Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    if parts.len() < 3 || parts[0] != "repos" {
        return not_found;
    }
    let repo = format!("{}/{}", parts[1], parts[2]).to_ascii_lowercase();
    let rest = &parts[3..];
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let body_str = body
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match (method.as_str(), rest) {
        ("GET", ["issues", n, "comments"]) => {
            let Ok(pr) = n.parse::<u64>() else {
                return not_found;
            };
            let per_page = param("per_page").unwrap_or(30).max(1);
            let page = param("page").unwrap_or(1).max(1);
            let list: Vec<Value> = st
                .comments
                .iter()
                .filter(|c| c.repo == repo && c.pr == pr)
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|c| json!({ "id": c.id, "body": c.body }))
                .collect();
            (StatusCode::OK, Value::Array(list))
        }
        ("POST", ["issues", n, "comments"]) => {
            let Ok(pr) = n.parse::<u64>() else {
                return not_found;
            };
            st.next_id += 1;
            let id = st.next_id;
            st.comments.push(FakeComment {
                id,
                repo,
                pr,
                body: body_str.clone(),
            });
            (StatusCode::CREATED, json!({ "id": id, "body": body_str }))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id = id.parse::<u64>().unwrap_or(0);
            match st
                .comments
                .iter_mut()
                .find(|c| c.id == id && c.repo == repo)
            {
                Some(c) => {
                    c.body = body_str.clone();
                    (StatusCode::OK, json!({ "id": id, "body": body_str }))
                }
                None => not_found,
            }
        }
        ("POST", ["deployments"]) => {
            st.next_id += 1;
            let id = st.next_id;
            st.deployments.push(FakeDeployment {
                id,
                repo,
                request: body,
                statuses: Vec::new(),
            });
            (StatusCode::CREATED, json!({ "id": id }))
        }
        ("POST", ["deployments", id, "statuses"]) => {
            let id = id.parse::<u64>().unwrap_or(0);
            st.next_id += 1;
            let status_id = st.next_id;
            match st
                .deployments
                .iter_mut()
                .find(|d| d.id == id && d.repo == repo)
            {
                Some(d) => {
                    d.statuses.push(body);
                    (StatusCode::CREATED, json!({ "id": status_id }))
                }
                None => not_found,
            }
        }
        ("POST", ["statuses", sha]) => {
            st.commit_statuses
                .entry(sha.to_string())
                .or_default()
                .push(body);
            (StatusCode::CREATED, json!({ "id": 1 }))
        }
        ("GET", ["collaborators", user, "permission"]) => {
            let permission = st
                .permissions
                .get(&(repo, user.to_ascii_lowercase()))
                .cloned()
                .unwrap_or_else(|| "read".to_owned());
            let role = permission.clone();
            let permission = match permission.as_str() {
                "maintain" => "write".to_owned(),
                "triage" => "read".to_owned(),
                other => other.to_owned(),
            };
            (
                StatusCode::OK,
                json!({ "permission": permission, "role_name": role, "user": { "login": user } }),
            )
        }
        ("POST", ["issues", "comments", id, "reactions"]) => {
            let Ok(id) = id.parse::<u64>() else {
                return not_found;
            };
            let content = body
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            st.reactions.entry(id).or_default().push(content.clone());
            (StatusCode::CREATED, json!({ "id": id, "content": content }))
        }
        ("GET", ["pulls", n]) => {
            let pr = n.parse::<u64>().unwrap_or(0);
            match st.pulls.get(&(repo, pr)) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => not_found,
            }
        }
        _ => not_found,
    }
}
