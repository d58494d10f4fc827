//! The wake endpoint nginx sends a sleeping preview's requests to (the sweep that puts idle
//! previews to sleep is [`crate::jobs::spawn_sleep_sweep`]).
//!
//! A sleeping preview's app port refuses connections, so nginx makes a 502 of its own, and the
//! preview's config sends that (and only that) to `/_wake/{id}` here, with the request's URI in
//! `X-Preview-Uri`. Every request for the preview joins the one wake in flight
//! ([`WakeFlights`]). A wake that ends within [`ANSWER_WITHIN`] answers with a redirect to the
//! same URI, which the app now serves; a longer one answers with a small page that reloads
//! itself (`Retry-After` and a meta refresh), so a browser never waits long on a blank tab.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use preview_core::id::PreviewId;
use tokio::sync::watch;

use super::AppState;
use crate::jobs::{JobRunner, WakeOutcome};

/// How long a request waits for the wake before it gets the page that reloads itself.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// The header nginx puts the original request URI in.
pub const URI_HEADER: &str = "x-preview-uri";
/// Seconds after which the waking page reloads itself.
const RELOAD_SECS: u64 = 1;

type Flight = watch::Receiver<Option<WakeOutcome>>;

/// One wake per preview at a time; later requests wait for the one in flight.
pub struct WakeFlights {
    runner: Arc<dyn JobRunner>,
    flights: Mutex<HashMap<PreviewId, Flight>>,
}

impl WakeFlights {
    /// Wakes through `runner`.
    pub fn new(runner: Arc<dyn JobRunner>) -> Self {
        Self {
            runner,
            flights: Mutex::default(),
        }
    }

    /// The runner that wakes (and puts to sleep).
    pub fn runner(&self) -> &Arc<dyn JobRunner> {
        &self.runner
    }

    /// The wake of `id` in flight, or a new one. The wake runs in its own task: a browser that
    /// gives up does not cancel it.
    pub fn join(&self, id: &PreviewId) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(id)
            && flight.borrow().is_none()
        {
            return flight.clone();
        }
        // Finished flights go: the map holds only wakes in progress.
        flights.retain(|_, f| f.borrow().is_none());
        let (done, flight) = watch::channel(None);
        flights.insert(id.clone(), flight.clone());
        let runner = self.runner.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let outcome = runner.wake(&id).await;
            // Waiters see the outcome; the next request after it starts a new flight.
            let _ = done.send(Some(outcome));
        });
        flight
    }
}

/// `/_wake/{id}`, any method: wakes the preview and sends the browser back to where it was
/// going. Loopback peers only (nginx on this host); forwarding headers are expected.
pub async fn wake_route(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "the wake endpoint only answers nginx",
        )
            .into_response();
    }
    let Ok(id) = PreviewId::parse(&id) else {
        return page(StatusCode::NOT_FOUND, Page::not_found());
    };
    let back_to = back_to(
        headers
            .get(URI_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("/"),
    );
    let mut flight = app.wakes.join(&id);
    let outcome = tokio::time::timeout(ANSWER_WITHIN, async {
        flight
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|o| o.clone())
    })
    .await;
    match outcome {
        Ok(Some(WakeOutcome::Awake)) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&back_to) {
                headers.insert(header::LOCATION, location);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        // Still waking: the page reloads itself and joins the same wake.
        Err(_) => page(StatusCode::SERVICE_UNAVAILABLE, Page::waking(&id)),
        Ok(Some(WakeOutcome::Busy(what))) => {
            page(StatusCode::SERVICE_UNAVAILABLE, Page::busy(&id, &what))
        }
        Ok(Some(WakeOutcome::Failed(reason))) => {
            tracing::warn!(preview = %id, reason, "a wake failed");
            page(StatusCode::BAD_GATEWAY, Page::failed(&id, &reason))
        }
        Ok(Some(WakeOutcome::NotFound) | None) => page(StatusCode::NOT_FOUND, Page::not_found()),
    }
}

/// Where to send the browser back to: the request's own path and query. Leading slashes and
/// backslashes collapse to one slash, so that the answer can never point at another host
/// (`//evil.example` is a protocol-relative URL).
fn back_to(uri: &str) -> String {
    let path = uri.trim_start_matches(['/', '\\']);
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return "/".to_owned();
    }
    format!("/{path}")
}

/// What the page a waiting browser gets says.
#[derive(Debug, serde::Serialize)]
struct Page {
    title: String,
    message: String,
    /// Seconds until it reloads itself; none for a page with nothing to wait for.
    reload_secs: Option<u64>,
}

impl Page {
    fn waking(id: &PreviewId) -> Self {
        Self {
            title: "Waking up".into(),
            message: format!(
                "The preview {id} was asleep after a while without visitors. It is starting; \
                 this page reloads itself until it answers."
            ),
            reload_secs: Some(RELOAD_SECS),
        }
    }

    fn busy(id: &PreviewId, what: &str) -> Self {
        Self {
            title: "Deploying".into(),
            message: format!("The preview {id} is {what}; this page reloads itself."),
            reload_secs: Some(3),
        }
    }

    fn failed(id: &PreviewId, reason: &str) -> Self {
        Self {
            title: "Could not wake the preview".into(),
            message: format!("Waking the preview {id} failed: {reason}. Reload to try again."),
            reload_secs: None,
        }
    }

    fn not_found() -> Self {
        Self {
            title: "No preview here".into(),
            message: "No preview serves at this address.".into(),
            reload_secs: None,
        }
    }
}

/// The page, from templates/waking.html.j2; values are HTML-escaped.
fn render_page(page: &Page) -> String {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template(
        "waking.html",
        include_str!("../../templates/waking.html.j2"),
    )
    .expect("the waking page template parses");
    env.get_template("waking.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(page))))
        .expect("the waking page renders")
}

fn page(status: StatusCode, page: Page) -> Response {
    let mut response = (status, render_page(&page)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = page.reload_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_way_back_stays_on_this_host() {
        assert_eq!(back_to("/octo-app/pr-1/a?b=c"), "/octo-app/pr-1/a?b=c");
        assert_eq!(back_to("//evil.example/x"), "/evil.example/x");
        assert_eq!(back_to("/\\evil.example"), "/evil.example");
        assert_eq!(back_to(""), "/");
        assert_eq!(back_to("/a\r\nSet-Cookie: x"), "/");
    }

    /// Counts its wakes; each takes 200 ms.
    #[derive(Default)]
    struct CountingRunner(std::sync::atomic::AtomicUsize);

    impl JobRunner for CountingRunner {
        fn deploy(
            &self,
            _job: crate::DeployJob,
            _ctx: crate::JobContext,
        ) -> crate::BoxFuture<'_, Result<(), crate::JobError>> {
            Box::pin(async { Ok(()) })
        }

        fn teardown(
            &self,
            _job: crate::TeardownJob,
            _ctx: crate::JobContext,
        ) -> crate::BoxFuture<'_, Result<(), crate::JobError>> {
            Box::pin(async { Ok(()) })
        }

        fn wake<'a>(&'a self, _id: &'a PreviewId) -> crate::BoxFuture<'a, WakeOutcome> {
            Box::pin(async {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                WakeOutcome::Awake
            })
        }
    }

    #[tokio::test]
    async fn requests_during_a_wake_share_it_and_a_later_one_starts_another() {
        let runner = Arc::new(CountingRunner::default());
        let flights = WakeFlights::new(runner.clone());
        let id = PreviewId::parse("octo-org-hello-api-pr-7").unwrap();
        let waiters: Vec<_> = (0..20).map(|_| flights.join(&id)).collect();
        for mut flight in waiters {
            let outcome = flight.wait_for(Option::is_some).await.unwrap().clone();
            assert_eq!(outcome, Some(WakeOutcome::Awake));
        }
        assert_eq!(runner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut again = flights.join(&id);
        again.wait_for(Option::is_some).await.unwrap();
        assert_eq!(runner.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn waiting_pages() {
        let id = PreviewId::parse("octo-org-hello-api-pr-7").unwrap();
        for (name, page) in [
            ("waking", Page::waking(&id)),
            ("busy", Page::busy(&id, "being deployed")),
            (
                "failed",
                Page::failed(&id, "health: <the app did not answer>"),
            ),
            ("not_found", Page::not_found()),
        ] {
            insta::assert_snapshot!(name, render_page(&page));
        }
    }
}
