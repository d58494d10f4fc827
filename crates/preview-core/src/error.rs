use std::path::PathBuf;

/// Errors of the core logic. Each variant names the thing (file, key, field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value failed validation; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Every port of a pool is allocated, bound on the host or published by a container.
    #[error("no free port in the {pool} port pool {range}")]
    PortsExhausted { pool: &'static str, range: String },
    /// `preview-config.yml` is not valid: `key` is the top-level key at fault, when known.
    #[error("{file}{}: {}{message}", line_suffix(*line), key_prefix(key.as_deref()))]
    Config {
        file: String,
        line: Option<u64>,
        key: Option<String>,
        message: String,
    },
    /// The repo's `docker-compose.preview.yml` asks for something a preview may not have.
    #[error("{file}{}: {}key `{key}`: {reason}", line_suffix(*line), service_prefix(service.as_deref()))]
    ComposeRefused {
        file: String,
        line: Option<u64>,
        service: Option<String>,
        key: String,
        reason: String,
    },
    /// The app is written in a language (or uses a build tool) we do not build yet.
    #[error("unsupported: {language} (found {found})")]
    Unsupported { language: String, found: String },
    /// No deployable app was found, or several were and none was chosen.
    #[error("{0}")]
    NoApp(String),
    /// A path in the checkout is unsafe to read: a symlink leading outside, or `..` escaping.
    #[error("{}: {reason}", path.display())]
    UnsafePath { path: PathBuf, reason: String },
    /// A file in the checkout is larger than we are willing to read.
    #[error("{}: larger than the {limit}-byte limit for files read from a checkout", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// A file of the checkout could not be read or parsed.
    #[error("{}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    /// Reading the checkout failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A template failed to render: a bug in a template or its inputs.
    #[error("rendering {template}: {message}")]
    Render { template: String, message: String },
}

fn line_suffix(line: Option<u64>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{k}`: ")).unwrap_or_default()
}

fn service_prefix(service: Option<&str>) -> String {
    service
        .map(|s| format!("service `{s}`: "))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn manifest(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Manifest {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
