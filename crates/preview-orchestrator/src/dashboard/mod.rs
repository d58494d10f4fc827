//! The dashboard: server-rendered pages for people, at `/dashboard` on the orchestrator's
//! loopback listener, and through nginx at `/_dashboard/` (path routing) or
//! `dashboard.{PREVIEW_DOMAIN}` (hostnames).
//!
//! - `GET /dashboard` (and `/dashboard/`): every preview, the host's usage and the queue;
//! - `GET /dashboard/previews/{id}`: history, build logs, live logs, actions;
//! - `GET /dashboard/previews/{id}/builds/{name}`: one build log, whole;
//! - `GET /dashboard/previews/{id}/logs/live`: the app's logs as Server-Sent Events;
//! - `GET|POST /dashboard/previews/{id}/actions/{action}`: confirm, then do (CSRF-checked);
//! - `GET|POST /dashboard/login`, `POST /dashboard/logout`.
//!
//! Access: the API token as a bearer header, or the session cookie the login form sets (see
//! [`auth`]). Nothing here ever shows a preview secret's value: failure reasons and logs pass
//! through the repository's redaction first.

pub mod auth;

pub mod live_logs;
pub mod nginx_site;
pub mod usage;
mod views;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use minijinja::{AutoEscape, Environment, Value, context};
use preview_core::id::{PreviewId, RepoFullName};

use crate::build_logs;
use crate::config::Config;
use crate::jobs::JobTrigger;
use crate::queue::{Scheduler, Submission};
use crate::repo_secrets::{RepoSecretStore, RepoSecrets};

use self::auth::{Sessions, Viewer};
use self::usage::{ContainerUsage, HostSampler};

/// The header through which nginx tells the dashboard the path it is served under
/// (`/_dashboard`, or `/` at its own hostname); without it, links point under `/dashboard`.
pub const PREFIX_HEADER: &str = "x-dashboard-prefix";
/// Live log streams open at once (each runs one `docker logs -f` per container).
const MAX_LIVE_STREAMS: usize = 16;
/// Lifetime of a login session.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What the dashboard's handlers share.
pub struct Dashboard {
    config: Arc<Config>,
    scheduler: Scheduler,
    /// Lists a preview's services for its page.
    runner: Arc<dyn crate::jobs::JobRunner>,
    secrets: Arc<RepoSecretStore>,
    sessions: Sessions,
    templates: Environment<'static>,
    host: HostSampler,
    containers: ContainerUsage,
    /// Bounds the live log streams open at once.
    live_streams: Arc<tokio::sync::Semaphore>,
    /// Keeps the `DASHBOARD_HOST` server block in place; stops with the dashboard.
    site_upkeep: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        if let Some(task) = &self.site_upkeep {
            task.abort();
        }
    }
}

impl Dashboard {
    /// A dashboard over the orchestrator's queue and settings, served on `listening` (the
    /// bound address, which nginx proxies to). With `DASHBOARD_HOST` it also starts keeping its
    /// nginx server block (so call it inside the runtime).
    pub fn new(
        config: Arc<Config>,
        scheduler: Scheduler,
        runner: Arc<dyn crate::jobs::JobRunner>,
        secrets: Arc<RepoSecretStore>,
        listening: SocketAddr,
    ) -> Self {
        Self {
            site_upkeep: nginx_site::spawn_upkeep(config.clone(), listening),
            live_streams: Arc::new(tokio::sync::Semaphore::new(MAX_LIVE_STREAMS)),
            host: HostSampler::new(config.deployments_dir.clone()),
            containers: ContainerUsage::new(config.docker_bin.clone()),
            sessions: Sessions::new(SESSION_LIFETIME),
            templates: templates(),
            config,
            scheduler,
            runner,
            secrets,
        }
    }

    fn render(&self, name: &str, ctx: Value) -> Response {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "rendering a dashboard page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }

    fn page(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        let mut response = self.render(name, ctx);
        if response.status() == StatusCode::OK {
            *response.status_mut() = status;
        }
        response
    }

    fn not_found(&self, base: &str, what: &str) -> Response {
        self.page(
            StatusCode::NOT_FOUND,
            "message.html.j2",
            context! { base, title => "Not found", message => what },
        )
    }

    /// The repository's secrets, for redaction only; empty (and logged) when they cannot be read.
    fn secrets_of(&self, repo: &RepoFullName) -> RepoSecrets {
        self.secrets.load(repo).unwrap_or_else(|e| {
            tracing::warn!(repo = %repo, error = %e, "reading preview secrets for redaction failed");
            RepoSecrets::default()
        })
    }
}

/// The page templates, compiled in; every one escapes HTML.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in [
        ("layout.html.j2", include_str!("templates/layout.html.j2")),
        ("list.html.j2", include_str!("templates/list.html.j2")),
        ("preview.html.j2", include_str!("templates/preview.html.j2")),
        (
            "build_log.html.j2",
            include_str!("templates/build_log.html.j2"),
        ),
        ("confirm.html.j2", include_str!("templates/confirm.html.j2")),
        ("login.html.j2", include_str!("templates/login.html.j2")),
        ("message.html.j2", include_str!("templates/message.html.j2")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("dashboard template {name}: {e}"));
    }
    env
}

/// The dashboard's routes, with their own access check (not the internal API's: requests
/// through the local nginx are allowed here, and every one is authenticated).
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/dashboard", get(list_page))
        .route("/dashboard/", get(list_page))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", axum::routing::post(logout))
        .route("/dashboard/previews/{id}", get(preview_page))
        .route(
            "/dashboard/previews/{id}/builds/{name}",
            get(build_log_page),
        )
        .route("/dashboard/previews/{id}/logs/live", get(live_logs_stream))
        .route(
            "/dashboard/previews/{id}/actions/{action}",
            get(confirm_page).post(do_action),
        )
        .route("/dashboard/{*rest}", get(dashboard_fallback))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            auth::require_viewer,
        ))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(dashboard)
}

/// Paths below `/dashboard/` that match no page (a route, not a fallback: the router is merged
/// into the orchestrator's, whose other paths keep their own answers).
async fn dashboard_fallback(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    d.not_found(&base_path(&headers), "There is no such page.")
}

/// The path prefix of links: what nginx says in [`PREFIX_HEADER`], else `/dashboard`.
pub fn base_path(headers: &HeaderMap) -> String {
    let given = headers
        .get(PREFIX_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("/dashboard");
    let valid = given.starts_with('/')
        && given.len() <= 64
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b));
    if valid {
        given.trim_end_matches('/').to_owned()
    } else {
        "/dashboard".to_owned()
    }
}

/// The client as nginx saw it, else the direct peer.
fn client_of(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get("x-real-ip")
        .or_else(|| headers.get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect())
        .unwrap_or_else(|| peer.ip().to_string())
}

async fn list_page(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = base_path(&headers);
    let usage = d.containers.by_project().await;
    let records = d.scheduler.store().list();
    let now = jiff::Timestamp::now();
    let mut secrets: HashMap<String, RepoSecrets> = HashMap::new();
    let rows: Vec<views::PreviewRow> = records
        .iter()
        .map(|rec| {
            let redaction = secrets
                .entry(rec.repo.to_string())
                .or_insert_with(|| d.secrets_of(&rec.repo));
            views::PreviewRow::new(rec, &d.config, usage.get(rec.id.as_str()), redaction, now)
        })
        .collect();
    let notice = views::notice(query.get("notice").map(String::as_str));
    let host = views::HostView::new(&d.host.sample());
    let queue = views::QueueView {
        depth: d.scheduler.queue_depth(),
        active: d.scheduler.active_jobs(),
        waiting: d
            .scheduler
            .waiting()
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    d.render(
        "list.html.j2",
        context! { base, previews => Value::from(minijinja::value::Serde(&rows)), host => Value::from(minijinja::value::Serde(&host)), queue => Value::from(minijinja::value::Serde(&queue)), notice, viewer => viewer.who(), csrf => viewer.csrf() },
    )
}

async fn preview_page(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = base_path(&headers);
    let Some(rec) = PreviewId::parse(&id)
        .ok()
        .and_then(|id| d.scheduler.store().get(&id))
    else {
        return d.not_found(&base, "There is no preview with this id.");
    };
    let redaction = d.secrets_of(&rec.repo);
    let usage = d.containers.by_project().await;
    let now = jiff::Timestamp::now();
    let row = views::PreviewRow::new(&rec, &d.config, usage.get(rec.id.as_str()), &redaction, now);
    let history = views::history(&rec, &redaction);
    let builds = build_logs::list(&d.config.logs_dir, &d.config.deployments_dir, &rec.id);
    let newest_log = builds.first().and_then(|b| {
        build_logs::read(
            &d.config.logs_dir,
            &d.config.deployments_dir,
            &rec.id,
            &b.name,
        )
        .map(|(text, truncated)| {
            context! { name => b.name.clone(), text => redaction.redact(&text), truncated }
        })
    });
    let notice = views::notice(query.get("notice").map(String::as_str));
    let (services, services_error) = match d.runner.services(&rec.id).await {
        Ok(containers) => (views::services(&containers), None),
        Err(e) => (
            Vec::new(),
            Some(format!("The services cannot be listed: {e}")),
        ),
    };
    d.render(
        "preview.html.j2",
        context! {
            base, preview => Value::from(minijinja::value::Serde(&row)), history => Value::from(minijinja::value::Serde(&history)),
            services => Value::from(minijinja::value::Serde(&services)), services_error,
            builds => Value::from(minijinja::value::Serde(&builds)), newest_log, notice,
            actions => Value::from(minijinja::value::Serde(views::actions())),
            viewer => viewer.who(), csrf => viewer.csrf(),
        },
    )
}

async fn build_log_page(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = base_path(&headers);
    let Some(rec) = PreviewId::parse(&id)
        .ok()
        .and_then(|id| d.scheduler.store().get(&id))
    else {
        return d.not_found(&base, "There is no preview with this id.");
    };
    let Some((text, truncated)) = build_logs::read(
        &d.config.logs_dir,
        &d.config.deployments_dir,
        &rec.id,
        &name,
    ) else {
        return d.not_found(
            &base,
            "There is no such build log (it may be past its retention).",
        );
    };
    let text = d.secrets_of(&rec.repo).redact(&text);
    d.render(
        "build_log.html.j2",
        context! { base, id => rec.id.as_str(), name, text, truncated, viewer => viewer.who(), csrf => viewer.csrf() },
    )
}

async fn live_logs_stream(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(rec) = PreviewId::parse(&id)
        .ok()
        .and_then(|id| d.scheduler.store().get(&id))
    else {
        return d.not_found(&base_path(&headers), "There is no preview with this id.");
    };
    let Ok(permit) = d.live_streams.clone().try_acquire_owned() else {
        return d.page(
            StatusCode::SERVICE_UNAVAILABLE,
            "message.html.j2",
            context! { base => base_path(&headers), title => "Busy", message => "Too many live log streams are open; close one and try again." },
        );
    };
    let logs = live_logs::LiveLogs {
        permit,
        docker: d.config.docker_bin.clone(),
        secrets: d.secrets_of(&rec.repo),
        // The app's raw output passes through these files: a private dir the orchestrator owns,
        // not a shared /tmp.
        scratch: d.config.logs_dir.join(".live-logs"),
        id: rec.id,
    };
    let mut response = Sse::new(logs.stream())
        .keep_alive(KeepAlive::default())
        .into_response();
    // nginx must pass events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// What a person can do to a preview from the dashboard.
///
/// Sleeping and waking join here once the scheduler has them: a variant, its entry in
/// [`Action::ALL`] and [`Action::parse`], its words, and its call in [`perform`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Build and deploy the PR's current commit again.
    Redeploy,
    /// Tear the preview down (the PR stays open; its next push deploys again).
    Destroy,
}

impl Action {
    /// Every action, in the order the page shows them.
    pub const ALL: [Action; 2] = [Action::Redeploy, Action::Destroy];

    /// The action of a URL segment.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "redeploy" => Some(Self::Redeploy),
            "destroy" => Some(Self::Destroy),
            _ => None,
        }
    }

    /// Its URL segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redeploy => "redeploy",
            Self::Destroy => "destroy",
        }
    }

    /// What the confirmation page says it does.
    pub fn explanation(self) -> &'static str {
        match self {
            Self::Redeploy => {
                "Builds the pull request's current commit again and switches to it when it is \
                 healthy; the running preview serves until then."
            }
            Self::Destroy => {
                "Stops and removes the preview's containers, volumes (its database too), images \
                 and route. The pull request stays open: its next push deploys it again."
            }
        }
    }
}

async fn perform(d: &Dashboard, action: Action, id: &PreviewId) -> crate::Result<Submission> {
    match action {
        Action::Redeploy => d.scheduler.redeploy(id, JobTrigger::Api).await,
        Action::Destroy => d.scheduler.submit_teardown(id, None, JobTrigger::Api).await,
    }
}

async fn confirm_page(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = base_path(&headers);
    let Some(action) = Action::parse(&action) else {
        return d.not_found(&base, "There is no such action.");
    };
    let Some(rec) = PreviewId::parse(&id)
        .ok()
        .and_then(|id| d.scheduler.store().get(&id))
    else {
        return d.not_found(&base, "There is no preview with this id.");
    };
    d.render(
        "confirm.html.j2",
        context! {
            base, id => rec.id.as_str(), repo => rec.repo.to_string(), pr => rec.pr_number.get(),
            action => action.as_str(), explanation => action.explanation(),
            viewer => viewer.who(), csrf => viewer.csrf(),
        },
    )
}

fn form_fields(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn do_action(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = base_path(&headers);
    let fields = form_fields(&body);
    // The CSRF check comes first: a forged request learns nothing, not even whether the
    // preview exists.
    let csrf_ok = fields
        .get("csrf")
        .is_some_and(|given| viewer.csrf_matches(given));
    if !csrf_ok {
        tracing::warn!(by = %viewer.who(), client = %client_of(&headers, peer), "dashboard action refused: missing or wrong CSRF token");
        return d.page(
            StatusCode::FORBIDDEN,
            "message.html.j2",
            context! { base, title => "Forbidden", message => "The form's CSRF token is missing or wrong. Reload the page and try again." },
        );
    }
    let Some(action) = Action::parse(&action) else {
        return d.not_found(&base, "There is no such action.");
    };
    let Some(id) = PreviewId::parse(&id)
        .ok()
        .filter(|id| d.scheduler.store().get(id).is_some())
    else {
        return d.not_found(&base, "There is no preview with this id.");
    };
    if fields.get("confirmed").map(String::as_str) != Some("yes") {
        return Redirect::to(&format!("{base}/previews/{id}/actions/{}", action.as_str()))
            .into_response();
    }
    let result = perform(&d, action, &id).await;
    let outcome = match &result {
        Ok(Submission::Queued { .. }) => "queued",
        Ok(Submission::Waiting { .. }) => "waiting",
        Ok(Submission::Ignored { id: None, .. }) | Err(crate::Error::NotFound(_)) => "not_found",
        Ok(Submission::Ignored { .. }) => "ignored",
        Err(_) => "error",
    };
    tracing::info!(
        preview = %id,
        action = action.as_str(),
        by = %viewer.who(),
        client = %client_of(&headers, peer),
        outcome,
        "dashboard action"
    );
    match result {
        Ok(Submission::Ignored { id: None, .. }) | Err(crate::Error::NotFound(_)) => {
            d.not_found(&base, "There is no preview with this id.")
        }
        Ok(Submission::Ignored { reason, .. }) => d.page(
            StatusCode::CONFLICT,
            "message.html.j2",
            context! { base, title => "Nothing to do", message => reason },
        ),
        Ok(_) => Redirect::to(&format!(
            "{base}/previews/{id}?notice={}",
            match (action, outcome) {
                (_, "waiting") => "waiting",
                (Action::Redeploy, _) => "redeploy",
                (Action::Destroy, _) => "destroy",
            }
        ))
        .into_response(),
        Err(crate::Error::ShuttingDown) => d.page(
            StatusCode::SERVICE_UNAVAILABLE,
            "message.html.j2",
            context! { base, title => "Shutting down", message => "The orchestrator is shutting down; try again in a moment." },
        ),
        Err(e) => {
            tracing::error!(preview = %id, error = %e, "a dashboard action failed");
            d.page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "message.html.j2",
                context! { base, title => "Failed", message => "The action could not be queued; the orchestrator's log says why." },
            )
        }
    }
}

async fn login_page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let base = base_path(&headers);
    if auth::viewer_of(&d, &headers).is_some() {
        return Redirect::to(&format!("{base}/")).into_response();
    }
    d.render(
        "login.html.j2",
        context! { base, error => false, plain_http => plain_http(&headers) },
    )
}

/// Whether nginx says the browser came over plain HTTP, where a `Secure` cookie is not kept.
fn plain_http(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("http"))
}

async fn login(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = base_path(&headers);
    let fields = form_fields(&body);
    let given = fields.get("token").map(|t| t.trim()).unwrap_or("");
    if !auth::constant_time_eq(given.as_bytes(), d.config.api_token.as_bytes()) {
        tracing::warn!(client = %client_of(&headers, peer), "dashboard login refused: wrong token");
        // A failed guess costs the guesser time; the token is long, this only slows scripts.
        tokio::time::sleep(Duration::from_millis(250)).await;
        return d.page(
            StatusCode::UNAUTHORIZED,
            "login.html.j2",
            context! { base, error => true, plain_http => plain_http(&headers) },
        );
    }
    let (session, label) = d.sessions.create();
    tracing::info!(session = %label, client = %client_of(&headers, peer), "dashboard login");
    let cookie_path = if base.is_empty() { "/" } else { base.as_str() };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                auth::session_set_cookie(&session, cookie_path, d.sessions.lifetime()),
            ),
            (header::LOCATION, format!("{base}/")),
        ],
    )
        .into_response()
}

async fn logout(
    State(d): State<Arc<Dashboard>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = base_path(&headers);
    let fields = form_fields(&body);
    if !fields.get("csrf").is_some_and(|c| viewer.csrf_matches(c)) {
        return d.page(
            StatusCode::FORBIDDEN,
            "message.html.j2",
            context! { base, title => "Forbidden", message => "The form's CSRF token is missing or wrong." },
        );
    }
    if let Some(session) = auth::session_cookie(&headers)
        && let Some(label) = d.sessions.remove(&session)
    {
        tracing::info!(session = %label, "dashboard logout");
    }
    let cookie_path = if base.is_empty() { "/" } else { base.as_str() };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, auth::session_clear_cookie(cookie_path)),
            (header::LOCATION, format!("{base}/login")),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DeploymentRecord;

    fn config() -> Config {
        Config::load(
            [
                "preview-orchestrator",
                "--github-token=t",
                "--github-webhook-secret=s",
                "--allowed-repos=acme/*",
                "--preview-base-url=https://previews.example",
                "--api-token=0123456789abcdef0123",
            ]
            .map(std::ffi::OsString::from)
            .to_vec(),
        )
        .unwrap()
    }

    fn record(pr: u32, status: serde_json::Value, history: serde_json::Value) -> DeploymentRecord {
        serde_json::from_value(serde_json::json!({
            "id": format!("acme-api-pr-{pr}"), "repo": "acme/api", "slug": "acme-api",
            "prNumber": pr, "branch": "feature", "baseBranch": "main",
            "headSha": "0123456789abcdef0123456789abcdef01234567",
            "deployedSha": "0123456789abcdef0123456789abcdef01234567",
            "status": status, "desired": "running", "framework": "fastapi",
            "url": format!("https://previews.example/acme-api/pr-{pr}/"),
            "createdAt": "2026-12-01T10:00:00Z", "updatedAt": "2026-12-06T09:00:00Z",
            "statusChangedAt": "2026-12-06T09:00:00Z", "generation": 3, "history": history,
            "trusted": true,
        }))
        .unwrap()
    }

    fn change(state: &str, at: &str) -> serde_json::Value {
        let status = if state == "failed" {
            serde_json::json!({ "state": "failed", "reason": "build: npm ERR! key=sk_planted" })
        } else {
            serde_json::json!({ "state": state })
        };
        serde_json::json!({ "status": status, "sha": "0123456789abcdef0123456789abcdef01234567", "at": at })
    }

    /// The pages' templates with real view models, at a fixed time, snapshot-tested.
    #[test]
    fn pages_render_as_snapshotted() {
        let config = config();
        let now: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let history = serde_json::json!([
            change("queued", "2026-12-06T09:00:00Z"),
            change("building", "2026-12-06T09:00:01Z"),
            change("starting", "2026-12-06T09:00:31.5Z"),
            change("running", "2026-12-06T09:00:33Z"),
        ]);
        let running = record(1, serde_json::json!({ "state": "running" }), history);
        let mut failed = record(
            2,
            serde_json::json!({ "state": "failed", "reason": "build: npm ERR! key=sk_planted" }),
            serde_json::json!([
                change("building", "2026-12-06T09:00:01Z"),
                change("failed", "2026-12-06T09:01:00Z")
            ]),
        );
        // Its second web service (`preview.hostname`) serves beside it.
        failed.service_urls = vec![crate::record::ServiceUrl {
            service: "admin".into(),
            url: "https://acme-api-pr-2-admin.previews.example/".into(),
        }];
        let redaction =
            RepoSecrets::from_values([("NPM_KEY".to_owned(), "sk_planted".to_owned())].into());
        let usage = usage::PreviewUsage {
            memory: 48 * 1024 * 1024,
            disk: 12_000,
            containers: 2,
        };
        let rows = vec![
            views::PreviewRow::new(&running, &config, Some(&usage), &redaction, now),
            views::PreviewRow::new(&failed, &config, None, &redaction, now),
        ];
        assert_eq!(
            (rows[0].build_time.as_str(), rows[0].start_time.as_str()),
            ("30.5 s", "1.5 s")
        );
        let host = views::HostView::new(&usage::HostUsage {
            memory_used: Some(1 << 30),
            memory_total: Some(4 << 30),
            disk_used: Some(20 << 30),
            disk_total: Some(80 << 30),
            load1: Some(0.5),
            cpus: 2,
            cpu_busy_percent: Some(12.0),
        });
        let queue = views::QueueView {
            depth: 1,
            active: 1,
            waiting: vec!["acme-api-pr-9".into()],
        };
        let env = templates();
        let list = env
            .get_template("list.html.j2")
            .unwrap()
            .render(context! {
                base => "/_dashboard", previews => Value::from(minijinja::value::Serde(&rows)),
                host => Value::from(minijinja::value::Serde(&host)),
                queue => Value::from(minijinja::value::Serde(&queue)),
                notice => views::notice(Some("redeploy")), viewer => "session 1a2b3c4d", csrf => "CSRF",
            })
            .unwrap();
        assert!(!list.contains("sk_planted"));
        insta::assert_snapshot!("list_page", list);
        let page = env
            .get_template("preview.html.j2")
            .unwrap()
            .render(context! {
                base => "/_dashboard", preview => Value::from(minijinja::value::Serde(&rows[1])),
                history => Value::from(minijinja::value::Serde(views::history(&failed, &redaction))),
                builds => Value::from(minijinja::value::Serde(vec![build_logs::BuildLogEntry {
                    name: "20261206T090100Z-0123456.log".into(), sha: "0123456".into(),
                    at: "2026-12-06 09:01:00 UTC".into(), bytes: 42,
                }])),
                newest_log => context! { name => "20261206T090100Z-0123456.log", text => "Step 1/2 : FROM node\n<script>alert(1)</script>\n", truncated => false },
                notice => None::<&str>, actions => Value::from(minijinja::value::Serde(views::actions())),
                services => Value::from(minijinja::value::Serde(views::services(&[
                    preview_engine::ContainerState {
                        name: "acme-api-pr-2-migrate-1".into(), service: "migrate".into(),
                        state: "exited".into(), status: "Exited (0) 2 minutes ago".into(),
                        exit_code: Some(0), one_shot: true,
                    },
                    preview_engine::ContainerState {
                        name: "acme-api-pr-2-web-1".into(), service: "web".into(),
                        state: "restarting".into(), status: "Restarting (1) 3 seconds ago".into(),
                        exit_code: None, one_shot: false,
                    },
                ]))),
                services_error => None::<&str>,
                viewer => "api-token", csrf => "CSRF",
            })
            .unwrap();
        assert!(!page.contains("<script>alert"), "log text is escaped");
        insta::assert_snapshot!("preview_page", page);
        let confirm = env
            .get_template("confirm.html.j2")
            .unwrap()
            .render(context! {
                base => "/dashboard", id => "acme-api-pr-1", repo => "acme/api", pr => 1,
                action => "destroy", explanation => Action::Destroy.explanation(),
                viewer => "api-token", csrf => "CSRF",
            })
            .unwrap();
        insta::assert_snapshot!("confirm_page", confirm);
    }
}
