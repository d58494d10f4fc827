//! Who is looking: the API token as a bearer header, or a session cookie from the login form.
//! Sessions live in memory (a restart logs everyone out) and each carries its own CSRF token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;

use super::Dashboard;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "preview_dashboard_session";
/// At most this many sessions are kept; the oldest goes first beyond it.
const MAX_SESSIONS: usize = 1000;

/// Who made a request, for the CSRF check and for the orchestrator's log.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// Sent the API token as `Authorization: Bearer`.
    Token {
        /// The CSRF token of token-holders (one per process: the bearer header itself cannot
        /// be forged by another site, but forms stay uniform).
        csrf: String,
    },
    /// Logged in through the form.
    Session {
        /// A public label of the session for logs (not its secret id).
        label: String,
        /// The session's CSRF token.
        csrf: String,
    },
}

impl Viewer {
    /// The CSRF token forms must carry.
    pub fn csrf(&self) -> &str {
        match self {
            Self::Token { csrf } | Self::Session { csrf, .. } => csrf,
        }
    }

    /// Names the viewer in the orchestrator's log.
    pub fn who(&self) -> String {
        match self {
            Self::Token { .. } => "api-token".to_owned(),
            Self::Session { label, .. } => format!("session {label}"),
        }
    }

    /// Whether `given` is this viewer's CSRF token (constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.csrf().as_bytes())
    }
}

struct Session {
    label: String,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// The logged-in sessions, keyed by their random id.
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
    token_csrf: String,
}

impl Sessions {
    /// An empty set of sessions, each valid for `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
            lifetime,
            token_csrf: random_hex(32),
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session; returns its secret id (the cookie's value) and its public label.
    pub fn create(&self) -> (String, String) {
        let id = random_hex(32);
        let label = random_hex(4);
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                label: label.clone(),
                csrf: random_hex(32),
                created: now,
                expires: now + self.lifetime,
            },
        );
        (id, label)
    }

    /// The viewer of a live session.
    pub fn viewer(&self, id: &str) -> Option<Viewer> {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let session = map.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Viewer::Session {
            label: session.label.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) -> Option<String> {
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id).map(|s| s.label)
    }

    /// The viewer of a bearer-token request.
    pub fn token_viewer(&self) -> Viewer {
        Viewer::Token {
            csrf: self.token_csrf.clone(),
        }
    }
}

/// `n` random bytes, in hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so the time taken does not tell how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session id of the request's cookie, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Whether the request carries the API token as a bearer header.
fn has_token(dashboard: &Dashboard, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| {
            constant_time_eq(given.as_bytes(), dashboard.config.api_token.as_bytes())
        })
}

/// The viewer of a request, if it is authenticated.
pub fn viewer_of(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Viewer> {
    if has_token(dashboard, headers) {
        return Some(dashboard.sessions.token_viewer());
    }
    session_cookie(headers).and_then(|id| dashboard.sessions.viewer(&id))
}

/// Every dashboard page: the peer must be on this host (the dashboard is reached directly on
/// loopback, or through the local nginx, which adds forwarding headers: unlike the internal API,
/// that is allowed here), and the viewer authenticated, except on the login page. Browsers are
/// sent to the login form, other clients get 401.
pub async fn require_viewer(
    State(dashboard): State<Arc<Dashboard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let local_peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
    if !local_peer {
        return (
            StatusCode::FORBIDDEN,
            "the dashboard answers only this host (directly or through its nginx)",
        )
            .into_response();
    }
    let base = super::base_path(req.headers());
    let path = req.uri().path();
    if path == "/dashboard/login" {
        return next.run(req).await;
    }
    match viewer_of(&dashboard, req.headers()) {
        Some(viewer) => {
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        None => {
            let wants_html = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"));
            if wants_html && req.method() == axum::http::Method::GET {
                Redirect::to(&format!("{base}/login")).into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "log in at the dashboard's /login page, or send the API token as a bearer header",
                )
                    .into_response()
            }
        }
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_set_cookie(id: &str, path: &str, lifetime: Duration) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path={path}; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn session_clear_cookie(path: &str) -> String {
    format!("{SESSION_COOKIE}=; Path={path}; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::new(Duration::from_millis(30));
        let (id, label) = sessions.create();
        assert_eq!(id.len(), 64);
        let viewer = sessions.viewer(&id).expect("a fresh session is live");
        assert_eq!(viewer.who(), format!("session {label}"));
        assert!(viewer.csrf_matches(viewer.csrf()));
        assert!(!viewer.csrf_matches("forged"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.viewer(&id).is_none(), "an expired session is gone");
        let (id, _) = sessions.create();
        assert!(sessions.remove(&id).is_some());
        assert!(sessions.viewer(&id).is_none());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; preview_dashboard_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
