//! `GET`, `PATCH` and `DELETE /api/repos/{owner}/{repo}/access`: who may see a repository's
//! previews (see [`crate::access`]). Internal routes: loopback and the bearer token only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use preview_core::id::RepoFullName;
use serde_json::json;

use super::AppState;
use crate::Error;
use crate::access::AccessChange;

/// The largest change body taken: a user, a hash and 64 CIDRs fit many times over.
const MAX_BODY_BYTES: usize = 16 * 1024;

fn repo_of(owner: &str, name: &str) -> Result<RepoFullName, Response> {
    RepoFullName::new(owner, name).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.to_string(), "field": "repository" })),
        )
            .into_response()
    })
}

/// An error as the API answers it: bad input is 400 naming the field, an unknown repository
/// 404, anything else 500.
fn error_response(e: &Error) -> Response {
    let (status, field) = match e {
        Error::Invalid { field, .. } => (StatusCode::BAD_REQUEST, Some(field.as_str())),
        Error::RepoNotAllowed(_) => (StatusCode::NOT_FOUND, None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "changing preview access failed");
    }
    let mut body = json!({ "error": e.to_string() });
    if let Some(field) = field {
        body["field"] = field.into();
    }
    (status, axum::Json(body)).into_response()
}

/// `GET`: the repository's settings (never the hash).
pub(super) async fn get_access(
    State(app): State<Arc<AppState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let repo = match repo_of(&owner, &name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match app.access.view(&repo, app.scheduler.store()).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `PATCH`: changes what the body names (`basicAuth`, `allow`; `null` removes one).
pub(super) async fn patch_access(
    State(app): State<Arc<AppState>>,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let repo = match repo_of(&owner, &name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if body.len() > MAX_BODY_BYTES {
        return error_response(&Error::Invalid {
            field: "body".into(),
            reason: format!("larger than {MAX_BODY_BYTES} bytes"),
        });
    }
    let change: AccessChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            // serde's message names the field and the reason; the body is never echoed.
            return error_response(&Error::Invalid {
                field: "body".into(),
                reason: e.to_string(),
            });
        }
    };
    match app
        .access
        .change(&repo, change, app.scheduler.store())
        .await
    {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `DELETE`: the repository's previews become public again.
pub(super) async fn delete_access(
    State(app): State<Arc<AppState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let repo = match repo_of(&owner, &name) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match app
        .access
        .change(&repo, AccessChange::everything_off(), app.scheduler.store())
        .await
    {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => error_response(&e),
    }
}
