//! What runs previews, behind the [`Engine`] trait: [`ComposeEngine`] runs a rendered preview on
//! the local Docker engine, [`SwarmEngine`] on a Docker Swarm of several nodes. The orchestrator and `preview up` share this path, so what a developer
//! sees locally is what a PR gets on the server.

pub mod build_log;
pub mod build_objects;
mod compose_engine;
mod containers;
mod engine;
mod health;
pub mod image_lock;
mod project;
pub mod stack_file;
mod swarm_engine;

use compose_engine::memory_in_use;
pub use compose_engine::{ComposeEngine, meminfo_bytes, parse_size};
pub use containers::{ContainerState, project_containers};
pub use engine::{BoxFuture, DiskUsage, Engine, Node, Usage};
pub use health::{HealthPolicy, wait_healthy, wait_healthy_service};
pub use project::{
    ComposeProject, SlotContainer, built_images, docker, project_dirs_with_label,
    projects_with_label, published_ports, remove_built_images, remove_containers, slot_containers,
};
pub use swarm_engine::{DOCKER_HOST_LABEL, SwarmEngine};

/// Errors of running a preview.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command failed.
    #[error(transparent)]
    Exec(#[from] preview_exec::Error),
    /// The app did not answer its health path in time.
    #[error("the app did not answer {url} with {accepted} within {}s; last: {last}{}", timeout.as_secs(), unhealthy_hint(last))]
    Unhealthy {
        url: String,
        accepted: &'static str,
        timeout: std::time::Duration,
        last: String,
    },
    /// A configured health path kept answering the same 4xx from a server that is up.
    #[error(
        "{url} answered HTTP {status} for {for_secs:.0} s, but a configured health_check_path must answer 2xx or 3xx; set health_check_path in preview-config.yml to a path that does, or remove it (then any answer below 500 at / counts)"
    )]
    WrongStatus {
        url: String,
        status: u16,
        for_secs: f64,
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

/// What to change when nothing answered, or the app kept failing.
fn unhealthy_hint(last: &str) -> &'static str {
    if last.starts_with("HTTP 5") {
        " (the app answers with an error: its log below says why)"
    } else if last.starts_with("HTTP") {
        ""
    } else {
        " (nothing answered: the app must listen on 0.0.0.0 at the port in $PORT; app_port in preview-config.yml sets that port)"
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
