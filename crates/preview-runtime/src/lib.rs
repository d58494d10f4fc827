//! Runs a rendered preview on the local Docker engine. The orchestrator and `preview up` share
//! this path, so what a developer sees locally is what a PR gets on the server.

mod containers;
mod health;
mod project;

pub use containers::{ContainerState, project_containers};
pub use health::{HealthPolicy, wait_healthy};
pub use project::{
    ComposeProject, built_images, docker, project_dirs_with_label, projects_with_label,
    published_ports, remove_built_images,
};

/// Errors of running a preview.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command failed.
    #[error(transparent)]
    Exec(#[from] preview_exec::Error),
    /// The app did not answer its health path in time.
    #[error("the app did not answer {url} with a 2xx or 3xx within {}s; last: {last}", timeout.as_secs())]
    Unhealthy {
        url: String,
        timeout: std::time::Duration,
        last: String,
    },
    /// A container of the preview stopped while we waited for it.
    #[error("container {container} {state} while starting{}", exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default())]
    ContainerExited {
        container: String,
        state: String,
        exit_code: Option<i32>,
    },
    /// Docker answered with something we could not read.
    #[error("could not read docker's answer: {0}")]
    Parse(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
