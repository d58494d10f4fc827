//! `GET /api/repos/{owner}/{name}/secrets`, `PUT` and `DELETE .../secrets/{secret}`: the
//! per-repository preview secrets (see [`crate::repo_secrets`]). Internal routes: loopback and
//! the bearer token only. Values go in and never come out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use preview_core::id::RepoFullName;
use preview_core::repo_secrets::{MAX_VALUE_BYTES, SecretName};
use serde_json::json;

use super::{AppState, error};

/// The repository of an API path, if it is one the orchestrator deploys.
fn allowed_repo(app: &AppState, owner: &str, name: &str) -> Result<RepoFullName, Response> {
    let repo = RepoFullName::new(owner, name).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    if !app.config.is_allowed(&repo) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("unknown repository {repo}: it is not in ALLOWED_REPOS"),
        ));
    }
    Ok(repo)
}

fn secret_name(name: &str) -> Result<SecretName, Response> {
    SecretName::parse(name).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

/// A failure of the secrets store: the message names the file, never a value.
fn secrets_failed(e: crate::Error) -> Response {
    match e {
        crate::Error::SecretInvalid(reason) => error(StatusCode::BAD_REQUEST, reason),
        e => {
            tracing::error!(error = %e, "the preview secrets store failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// `GET /api/repos/{owner}/{name}/secrets`: the names of the repository's secrets, never a value.
pub(super) async fn list_secrets(
    State(app): State<Arc<AppState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let repo = match allowed_repo(&app, &owner, &name) {
        Ok(repo) => repo,
        Err(r) => return r,
    };
    match app.secrets.names(&repo) {
        Ok(names) => {
            axum::Json(json!({ "repo": repo.full_name(), "secrets": names })).into_response()
        }
        Err(e) => secrets_failed(e),
    }
}

/// `PUT /api/repos/{owner}/{name}/secrets/{secret}`: the body is the value, as is, or in base64
/// with `?encoding=base64` (the CLI's way: curl's config format, which carries the body, holds
/// lines of 100 KiB at most, and base64 needs no escaping). At most 64 KiB of UTF-8 text without
/// NUL. Previews get it at their next deploy.
pub(super) async fn set_secret(
    State(app): State<Arc<AppState>>,
    Path((owner, name, secret)): Path<(String, String, String)>,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let repo = match allowed_repo(&app, &owner, &name) {
        Ok(repo) => repo,
        Err(r) => return r,
    };
    let secret = match secret_name(&secret) {
        Ok(secret) => secret,
        Err(r) => return r,
    };
    let value = match body {
        Ok(value) => value,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("invalid secret value: it is larger than {MAX_VALUE_BYTES} bytes (64 KiB)"),
            );
        }
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let value = match uri.query() {
        None | Some("") => value,
        Some("encoding=base64") => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(value.trim_ascii()) {
                Ok(decoded) => Bytes::from(decoded),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid secret value: the body is not valid base64 (encoding=base64)",
                    );
                }
            }
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the only query this route takes is encoding=base64",
            );
        }
    };
    if value.len() > MAX_VALUE_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "invalid secret value: it is {} bytes; at most {MAX_VALUE_BYTES} bytes (64 KiB)",
                value.len()
            ),
        );
    }
    let store = app.secrets.clone();
    let (repo_for_task, secret_for_task) = (repo.clone(), secret.clone());
    let written =
        tokio::task::spawn_blocking(move || store.set(&repo_for_task, &secret_for_task, &value))
            .await;
    match written {
        Ok(Ok(existed)) => {
            tracing::info!(repo = %repo, secret = %secret, replaced = existed, "preview secret set");
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = json!({
                "repo": repo.full_name(),
                "secret": secret,
                "status": if existed { "updated" } else { "created" },
                "note": "previews get it at their next deploy, and only for trusted commits",
            });
            (status, axum::Json(answer)).into_response()
        }
        Ok(Err(e)) => secrets_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `DELETE /api/repos/{owner}/{name}/secrets/{secret}`.
pub(super) async fn unset_secret(
    State(app): State<Arc<AppState>>,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> Response {
    let repo = match allowed_repo(&app, &owner, &name) {
        Ok(repo) => repo,
        Err(r) => return r,
    };
    let secret = match secret_name(&secret) {
        Ok(secret) => secret,
        Err(r) => return r,
    };
    let store = app.secrets.clone();
    let (repo_for_task, secret_for_task) = (repo.clone(), secret.clone());
    let removed =
        tokio::task::spawn_blocking(move || store.unset(&repo_for_task, &secret_for_task)).await;
    match removed {
        Ok(Ok(true)) => {
            tracing::info!(repo = %repo, secret = %secret, "preview secret removed");
            axum::Json(json!({
                "repo": repo.full_name(),
                "secret": secret,
                "status": "removed",
            }))
            .into_response()
        }
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            format!("repository {repo} has no secret {secret}"),
        ),
        Ok(Err(e)) => secrets_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
