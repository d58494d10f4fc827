//! Every external program the project runs goes through [`Cmd`]: an argument vector (never a shell
//! string), a human description, a timeout that kills the whole process group, a clean environment
//! and captured output with a size cap.

mod capture;
mod cmd;
pub mod compose;
pub mod fs;
pub mod git;
pub mod nginx;

pub use capture::CappedBuffer;
pub use cmd::{Cmd, Output};

/// Errors from running external programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is not installed or not on PATH.
    #[error("{description}: `{program}` was not found on PATH; install it or fix PATH")]
    NotFound {
        description: String,
        program: String,
    },
    /// The program exists but could not be started.
    #[error("{description}: could not start `{program}`: {source}")]
    Spawn {
        description: String,
        program: String,
        source: std::io::Error,
    },
    /// The program ran past its timeout and its process group was killed.
    #[error("{description}: `{command}` timed out after {}s and was killed{}", timeout.as_secs_f32(), tail_suffix(stderr_tail))]
    Timeout {
        description: String,
        command: String,
        timeout: std::time::Duration,
        stderr_tail: String,
    },
    /// The program exited unsuccessfully.
    #[error("{description}: `{command}` {status}{}", tail_suffix(stderr_tail))]
    Failed {
        description: String,
        command: String,
        /// Human form of the exit status, e.g. "exited with code 1" or "was killed by signal 9".
        status: String,
        code: Option<i32>,
        stdout_tail: String,
        stderr_tail: String,
    },
    /// Reading the program's output or writing its input failed.
    #[error("{description}: I/O error while running `{program}`: {source}")]
    Io {
        description: String,
        program: String,
        source: std::io::Error,
    },
    /// An argument failed validation before any program was started.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", tail.trim_end())
    }
}

impl Error {
    /// The captured stderr tail, if the error carries one.
    pub fn stderr_tail(&self) -> &str {
        match self {
            Error::Timeout { stderr_tail, .. } | Error::Failed { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
