use std::path::PathBuf;

/// Errors of the orchestrator's library part (store, queue, config).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the store's lock file.
    #[error("another orchestrator is using the store (lock {} is held); stop it first", .0.display())]
    StoreLocked(PathBuf),
    /// The store file is not what this build writes; it was left untouched.
    #[error("store {} is corrupt: {reason}; it was left untouched", path.display())]
    StoreCorrupt { path: PathBuf, reason: String },
    /// The store file has a schema version this build does not know.
    #[error("store {} has schemaVersion {found}, this build reads version {supported}; it was left untouched", path.display())]
    StoreVersion {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    /// A file operation on the store failed.
    #[error("could not {action} {}: {source}", path.display())]
    StoreIo {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// Writing the store failed; the change is not durable.
    #[error("writing the store failed: {0}")]
    StoreWrite(String),
    /// The store's writer is gone (the orchestrator is stopping).
    #[error("the store is closed")]
    StoreClosed,
    /// No port could be allocated.
    #[error("{0}")]
    Ports(String),
    /// No preview has this id.
    #[error("no preview {0}")]
    NotFound(String),
    /// The orchestrator is shutting down and takes no new work.
    #[error("shutting down; not accepting new jobs")]
    ShuttingDown,
    /// A value sent to the API is invalid; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The repository is not one the orchestrator deploys.
    #[error("repository {0} is not in ALLOWED_REPOS")]
    RepoNotAllowed(String),
    /// nginx refused a config change; the files before it were put back.
    #[error("nginx refused the change, which was undone: {0}")]
    NginxRefused(String),
    /// A preview secret's name or value was refused; the message says why, never the value.
    #[error("{0}")]
    SecretInvalid(String),
    /// A file operation on the preview secrets failed.
    #[error("could not {action} the preview secrets file {}: {source}", path.display())]
    SecretsIo {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// A preview secrets file is not valid JSON of names and values; it was left untouched.
    #[error("the preview secrets file {} is corrupt ({reason}); it was left untouched", path.display())]
    SecretsCorrupt { path: PathBuf, reason: String },
    /// A shared database server could not be started or changed. No text of it holds a
    /// password.
    #[error("shared {engine} server: {message}")]
    SharedDatabase {
        engine: &'static str,
        message: String,
        /// The client's or Docker's output that explains it.
        log_tail: String,
    },
    /// A setting is missing or invalid.
    #[error("invalid setting {setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
