//! The HTTP side: `POST /webhook/github` (and `/webhook`, `/webhook/`), the loopback-only
//! internal API, `/health` and `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use preview_core::id::{CommitSha, PreviewId, RepoFullName};
use preview_core::repo_secrets::MAX_VALUE_BYTES;
use preview_github::{
    DELIVERY_HEADER, EVENT_HEADER, IssueCommentEvent, MAX_PAYLOAD_BYTES, PreviewCommand,
    PullRequestAction, PullRequestEvent, SIGNATURE_HEADER, WebhookEvent, WebhookVerifier,
    parse_event,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::dedup::DeliveryDedup;
use crate::gate::{self, CommandRequest, Commands, Gate};
use crate::jobs::JobTrigger;
use crate::queue::{DeployRequest, Scheduler, Submission};
use crate::repo_secrets::RepoSecretStore;
use crate::telemetry;

mod access_api;
mod secrets_api;
pub mod wake;

/// Everything the handlers share.
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// Who may see each repository's previews.
    pub access: crate::access::AccessControl,
    /// The queue (and through it the store).
    pub scheduler: Scheduler,
    /// Checks webhook signatures.
    pub verifier: WebhookVerifier,
    /// Recent delivery ids.
    pub dedup: DeliveryDedup,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// When the process started.
    pub started: Instant,
    /// Whether Docker answers, cached.
    pub docker: DockerProbe,
    /// Carries out PR commands (`/preview`, the approval label).
    pub commands: Commands,
    /// The per-repository preview secrets.
    pub secrets: Arc<RepoSecretStore>,
    /// Wakes sleeping previews, one wake per preview however many requests wait for it.
    pub wakes: wake::WakeFlights,
}

/// Asks `docker version` at most every 10 s.
pub struct DockerProbe {
    bin: std::path::PathBuf,
    last: Mutex<Option<(Instant, bool)>>,
}

impl DockerProbe {
    /// A probe running `bin`.
    pub fn new(bin: impl Into<std::path::PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            last: Mutex::new(None),
        }
    }

    /// Whether the Docker daemon answered recently.
    pub async fn ok(&self) -> bool {
        if let Some((at, ok)) = *self.last.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < Duration::from_secs(10)
        {
            return ok;
        }
        let ok = preview_exec::Cmd::new(&self.bin, "check that the Docker daemon answers")
            .args(["version", "--format", "{{.Server.Version}}"])
            .pass_env("DOCKER_HOST")
            .timeout(Duration::from_secs(3))
            .run()
            .await
            .is_ok();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        ok
    }
}

/// The router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the internal
/// routes need the peer address.
pub fn router(state: Arc<AppState>) -> Router {
    let internal = Router::new()
        .route("/api/previews", get(list_previews))
        .route(
            "/api/previews/{id}",
            get(get_preview).delete(delete_preview),
        )
        .route("/api/previews/{id}/redeploy", post(redeploy_preview))
        .route("/api/previews/{id}/sleep", post(sleep_preview))
        .route("/api/previews/{id}/services", get(preview_services))
        .route("/api/nodes", get(list_nodes))
        .route(
            "/api/repos/{owner}/{repo}/access",
            get(access_api::get_access)
                .patch(access_api::patch_access)
                .delete(access_api::delete_access),
        )
        .route(
            "/api/repos/{owner}/{name}/secrets",
            get(secrets_api::list_secrets),
        )
        .route(
            "/api/repos/{owner}/{name}/secrets/{secret}",
            put(secrets_api::set_secret)
                .delete(secrets_api::unset_secret)
                // Room for the largest value in base64 and more, so that a value just over
                // the limit gets its precise message from the handler.
                .layer(DefaultBodyLimit::max(2 * MAX_VALUE_BYTES)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .route_layer(middleware::from_fn(require_loopback));
    Router::new()
        // Reached through nginx (it carries forwarding headers), so not behind
        // require_loopback; it checks the peer itself.
        .route("/_wake/{id}", any(wake::wake_route))
        .route("/webhook/github", post(webhook))
        .route("/webhook", post(webhook))
        .route("/webhook/", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .merge(internal)
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(Answer::error(message))).into_response()
}

/// Internal routes answer only direct loopback peers: not the world, and not requests nginx
/// proxied (those carry forwarding headers).
async fn require_loopback(req: Request, next: Next) -> Response {
    let peer_ok = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
    let forwarded = ["x-forwarded-for", "x-real-ip", "forwarded"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    if !peer_ok || forwarded {
        return error(
            StatusCode::FORBIDDEN,
            "the internal API only answers loopback clients",
        );
    }
    next.run(req).await
}

async fn require_token(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), app.config.api_token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_delivery(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The JSON body of a webhook answer (and of the API's job answers). Fields that do not apply
/// are left out. A struct rather than a `serde_json::Value`: it is built for every delivery.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignored: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<PreviewId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha: Option<CommitSha>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl Answer {
    fn error(message: impl std::fmt::Display) -> Self {
        Self {
            error: Some(message.to_string()),
            ..Self::default()
        }
    }
}

/// An answer, its HTTP status and its outcome label (for metrics and the log).
type Reply = (StatusCode, Answer, &'static str);

async fn webhook(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let event = headers
        .get(EVENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            telemetry::webhook(&event, "rejected");
            tracing::warn!(
                status = status.as_u16(),
                "webhook body rejected: {rejection}"
            );
            return error(status, rejection.body_text());
        }
    };
    if let Err(e) = app
        .verifier
        .verify(headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()), &body)
    {
        telemetry::webhook(&event, "unauthorized");
        tracing::warn!(event, "webhook refused: {e}");
        return error(StatusCode::UNAUTHORIZED, e);
    }
    let Some(delivery) = headers
        .get(DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|d| valid_delivery(d))
    else {
        telemetry::webhook(&event, "invalid");
        let answer = Answer {
            field: Some("X-GitHub-Delivery".into()),
            ..Answer::error("missing or invalid X-GitHub-Delivery header")
        };
        return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
    };
    if !app.dedup.claim(delivery) {
        telemetry::webhook(&event, "duplicate");
        tracing::info!(delivery, event, "duplicate delivery");
        let answer = Answer {
            duplicate: Some(true),
            delivery: Some(delivery.to_owned()),
            ..Answer::default()
        };
        return (StatusCode::OK, axum::Json(answer)).into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (status, answer, outcome) =
        handle_delivery(&app, &event, content_type, &body, delivery).await;
    if !status.is_success() {
        app.dedup.forget(delivery);
    }
    telemetry::webhook(&event, outcome);
    tracing::info!(
        delivery,
        event,
        status = status.as_u16(),
        outcome,
        id = answer.id.as_ref().map_or("", PreviewId::as_str),
        reason = answer
            .reason
            .as_deref()
            .or(answer.error.as_deref())
            .unwrap_or(""),
        "webhook"
    );
    (status, axum::Json(answer)).into_response()
}

async fn handle_delivery(
    app: &AppState,
    event: &str,
    content_type: Option<&str>,
    body: &[u8],
    delivery: &str,
) -> Reply {
    let parsed = match parse_event(event, content_type, body) {
        Ok(ev) => ev,
        Err(e) => {
            let answer = Answer {
                field: e.field().map(str::to_owned),
                ..Answer::error(&e)
            };
            return (StatusCode::BAD_REQUEST, answer, "invalid");
        }
    };
    match parsed {
        WebhookEvent::Ping(p) => {
            let answer = Answer {
                ok: Some(true),
                zen: p.zen,
                hook_id: p.hook_id,
                ..Answer::default()
            };
            (StatusCode::OK, answer, "ping")
        }
        WebhookEvent::Other { name } => ignored(None, format!("event `{name}` is not handled")),
        WebhookEvent::PullRequest(pr) => handle_pull_request(app, *pr, delivery).await,
        WebhookEvent::IssueComment(comment) => handle_comment(app, *comment),
    }
}

fn forbidden_repo(repo: &RepoFullName) -> Reply {
    let answer = Answer::error(format!("repository {repo} is not in ALLOWED_REPOS"));
    (StatusCode::FORBIDDEN, answer, "forbidden")
}

/// A comment: a `/preview` command by a person, on a pull request, runs in the background.
fn handle_comment(app: &AppState, comment: IssueCommentEvent) -> Reply {
    if !app.config.is_allowed(&comment.repo) {
        return forbidden_repo(&comment.repo);
    }
    let Some(command) = comment.command else {
        return ignored(None, "the comment is not a /preview command".into());
    };
    if comment.action != "created" {
        return ignored(
            None,
            format!("comment action `{}` is not handled", comment.action),
        );
    }
    if !comment.on_pull_request {
        return ignored(
            None,
            "the comment is on an issue, not a pull request".into(),
        );
    }
    if comment.commenter.is_bot {
        return ignored(
            None,
            format!("comments by bots ({}) are ignored", comment.commenter.login),
        );
    }
    let answer = Answer {
        status: Some("command_received"),
        reason: Some(format!(
            "`{}` by @{}: the permission is checked, then the comment gets a reaction or a reply",
            command.as_str(),
            comment.commenter.login
        )),
        ..Answer::default()
    };
    app.commands.spawn(CommandRequest {
        repo: comment.repo,
        pr: comment.number,
        by: comment.commenter.login,
        command,
        comment_id: Some(comment.comment_id),
        deploy: None,
    });
    (StatusCode::ACCEPTED, answer, "command")
}

fn ignored(id: Option<PreviewId>, reason: String) -> Reply {
    let answer = Answer {
        ignored: Some(true),
        reason: Some(reason),
        id,
        ..Answer::default()
    };
    (StatusCode::ACCEPTED, answer, "ignored")
}

async fn handle_pull_request(app: &AppState, pr: PullRequestEvent, delivery: &str) -> Reply {
    if !app.config.is_allowed(&pr.repo) {
        return forbidden_repo(&pr.repo);
    }
    let skip_drafts = app.config.skip_drafts;
    let trigger = JobTrigger::Webhook {
        action: pr.action.as_str().to_owned(),
        delivery: delivery.to_owned(),
    };
    let deploy = match &pr.action {
        PullRequestAction::Opened
        | PullRequestAction::Reopened
        | PullRequestAction::Synchronize => {
            if skip_drafts && pr.draft {
                return ignored(None, "draft pull request (SKIP_DRAFTS is on)".into());
            }
            true
        }
        PullRequestAction::ReadyForReview => {
            if !skip_drafts {
                return ignored(
                    None,
                    "drafts are deployed already (SKIP_DRAFTS is off)".into(),
                );
            }
            true
        }
        PullRequestAction::Closed => false,
        PullRequestAction::Labeled => return handle_label(app, pr, trigger),
        other => return ignored(None, format!("action `{}` is not handled", other.as_str())),
    };
    if deploy && pr.head_repo.is_none() {
        gate::tell_deleted_fork(&app.scheduler, &pr.repo, pr.number, &pr.head_sha);
        return ignored(
            None,
            "the pull request's fork was deleted (head.repo is null)".into(),
        );
    }
    let trusted = if deploy {
        // Only an outside author's commit needs the store's word (no lock on the usual path).
        let approved = !pr.author_association.is_trusted()
            && gate::approved(&app.scheduler, &pr.repo, pr.number, &pr.head_sha);
        match gate::decide(app.config.deploy_policy, pr.author_association, approved) {
            Gate::Deploy { trusted } => trusted,
            Gate::AwaitApproval => return awaiting_approval(app, &pr),
        }
    } else {
        false
    };
    let result = if deploy {
        app.scheduler
            .submit_deploy(deploy_request(pr, trigger, trusted))
            .await
    } else {
        app.scheduler
            .submit_close(&pr.repo, pr.number, pr.updated_at, trigger)
            .await
    };
    match result {
        Ok(sub) => submission_reply(sub),
        Err(crate::Error::ShuttingDown) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Answer::error("shutting down; GitHub will redeliver"),
            "unavailable",
        ),
        Err(e) => {
            tracing::error!(error = %e, "queueing a job failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Answer::error(&e),
                "error",
            )
        }
    }
}

/// The deploy of the head commit a `pull_request` event describes.
fn deploy_request(pr: PullRequestEvent, trigger: JobTrigger, trusted: bool) -> DeployRequest {
    DeployRequest {
        repo: pr.repo,
        pr: pr.number,
        sha: pr.head_sha,
        branch: pr.head_ref,
        base_branch: pr.base_ref,
        head_repo: pr.head_repo,
        clone_url: pr.clone_url,
        draft: pr.draft,
        event_at: pr.updated_at,
        trigger,
        force: false,
        trusted,
    }
}

/// A PR whose author is not trusted, at a commit nobody approved: its comment says how to approve.
fn awaiting_approval(app: &AppState, pr: &PullRequestEvent) -> Reply {
    let author = pr
        .author
        .as_ref()
        .map_or("the author", |a| a.login.as_str());
    gate::tell_awaiting_approval(&app.scheduler, &pr.repo, pr.number, &pr.head_sha, author);
    let (id, _) = app.scheduler.preview_id_and_url(&pr.repo, pr.number);
    let answer = Answer {
        id: Some(id),
        status: Some("awaiting_approval"),
        sha: Some(pr.head_sha.clone()),
        reason: Some(format!(
            "author_association {} is not trusted under DEPLOY_POLICY=collaborators: someone with \
             write permission approves this commit by commenting /preview or adding the `{}` label",
            pr.author_association.as_str(),
            gate::APPROVAL_LABEL
        )),
        ..Answer::default()
    };
    (StatusCode::ACCEPTED, answer, "awaiting_approval")
}

/// The approval label added by a person: approves and deploys the payload's head commit, once
/// GitHub confirms the person's write permission.
fn handle_label(app: &AppState, pr: PullRequestEvent, trigger: JobTrigger) -> Reply {
    let is_approval = pr
        .label
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(gate::APPROVAL_LABEL));
    if !is_approval {
        return ignored(
            None,
            format!("only the `{}` label is handled", gate::APPROVAL_LABEL),
        );
    }
    let Some(sender) = pr.sender.clone().filter(|s| !s.is_bot) else {
        return ignored(None, "the label was added by a bot or by no one".into());
    };
    if pr.head_repo.is_none() {
        gate::tell_deleted_fork(&app.scheduler, &pr.repo, pr.number, &pr.head_sha);
        return ignored(
            None,
            "the pull request's fork was deleted (head.repo is null)".into(),
        );
    }
    let answer = Answer {
        status: Some("command_received"),
        reason: Some(format!(
            "the `{}` label by @{}: deploys {} once GitHub confirms the permission",
            gate::APPROVAL_LABEL,
            sender.login,
            pr.head_sha.short()
        )),
        sha: Some(pr.head_sha.clone()),
        ..Answer::default()
    };
    app.commands.spawn(CommandRequest {
        repo: pr.repo.clone(),
        pr: pr.number,
        by: sender.login,
        command: PreviewCommand::Deploy,
        comment_id: None,
        deploy: Some(deploy_request(pr, trigger, true)),
    });
    (StatusCode::ACCEPTED, answer, "command")
}

fn submission_reply(sub: Submission) -> Reply {
    match sub {
        Submission::Queued { id, job, sha } => {
            let answer = Answer {
                id: Some(id),
                status: Some("queued"),
                job: Some(job.as_str()),
                sha,
                ..Answer::default()
            };
            (StatusCode::ACCEPTED, answer, "queued")
        }
        Submission::Waiting { id, sha, position } => {
            let answer = Answer {
                id: Some(id),
                status: Some("waiting"),
                sha: Some(sha),
                position: Some(position),
                ..Answer::default()
            };
            (StatusCode::ACCEPTED, answer, "waiting")
        }
        Submission::Ignored { id, reason } => ignored(id, reason),
    }
}

fn preview_view(app: &AppState, id: &PreviewId) -> Option<Value> {
    let store = app.scheduler.store();
    store.read(|s| {
        let rec = s.deployments.get(id)?;
        let mut v = serde_json::to_value(rec).ok()?;
        v["ports"] = serde_json::to_value(s.port_allocations.get(id)).ok()?;
        Some(v)
    })
}

async fn list_previews(State(app): State<Arc<AppState>>) -> Response {
    let ids: Vec<PreviewId> = app
        .scheduler
        .store()
        .read(|s| s.deployments.keys().cloned().collect());
    let previews: Vec<Value> = ids.iter().filter_map(|id| preview_view(&app, id)).collect();
    axum::Json(json!({ "previews": previews })).into_response()
}

fn parse_id(id: &str) -> Result<PreviewId, Response> {
    PreviewId::parse(id).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

async fn get_preview(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match preview_view(&app, &id) {
        Some(v) => axum::Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no preview {id}")),
    }
}

async fn api_submission(result: crate::Result<Submission>, id: &PreviewId) -> Response {
    match result {
        Ok(Submission::Ignored { id: None, .. }) | Err(crate::Error::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, format!("no preview {id}"))
        }
        Ok(sub) => {
            let (status, answer, _) = submission_reply(sub);
            (status, axum::Json(answer)).into_response()
        }
        Err(crate::Error::ShuttingDown) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn redeploy_preview(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    // A redeploy keeps the trust decision recorded for the preview's commit (an untrusted fork
    // PR gets no secrets by being redeployed); the gate decides it (see `gate`).
    let result = app.scheduler.redeploy(&id, JobTrigger::Api).await;
    api_submission(result, &id).await
}

/// Puts a serving preview to sleep now (an operator making room, a benchmark); the next visit
/// wakes it.
async fn sleep_preview(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if app.scheduler.store().get(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no preview {id}"));
    }
    match app.wakes.runner().sleep_now(&id).await {
        Ok(()) => axum::Json(json!({ "ok": true, "id": id.as_str(), "status": "sleeping" }))
            .into_response(),
        Err(reason) => error(StatusCode::CONFLICT, format!("{id} cannot sleep: {reason}")),
    }
}

/// The containers of preview `id` (on a swarm, its tasks), with their state; 404 for an unknown
/// preview.
async fn preview_services(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if app.scheduler.store().get(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no preview {id}"));
    }
    match app.wakes.runner().services(&id).await {
        Ok(services) => axum::Json(json!({ "id": id, "services": services })).into_response(),
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing the services of {id}: {reason}"),
        ),
    }
}

/// The machines previews run on (the host, or each node of the swarm), with their free memory
/// and previews.
async fn list_nodes(State(app): State<Arc<AppState>>) -> Response {
    match app.wakes.runner().nodes().await {
        Ok((engine, nodes)) => {
            axum::Json(json!({ "engine": engine, "nodes": nodes })).into_response()
        }
        Err(reason) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing the nodes: {reason}"),
        ),
    }
}

async fn delete_preview(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let result = app
        .scheduler
        .submit_teardown(&id, None, JobTrigger::Api)
        .await;
    api_submission(result, &id).await
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let docker = app.docker.ok().await;
    let live = app
        .scheduler
        .store()
        .read(crate::store::StoreState::live_count);
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "queueDepth": app.scheduler.queue_depth(),
        "activeJobs": app.scheduler.active_jobs(),
        "livePreviews": live,
        "docker": docker,
        "tls": crate::tls::status(&app.config),
    }))
    .into_response()
}

async fn render_metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
