/// Everything that can go wrong in this crate: webhook verification and parsing, and REST calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    /// The signature header is not `sha256=<64 hex digits>`.
    #[error("malformed X-Hub-Signature-256 header: {0}")]
    MalformedSignature(&'static str),
    /// The signature does not match the body under our secret.
    #[error("X-Hub-Signature-256 does not match the body")]
    SignatureMismatch,
    /// A required header is absent or not text.
    #[error("missing or invalid {0} header")]
    MissingHeader(&'static str),
    /// The payload is not JSON (or not a form with a `payload` field).
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// A payload field is missing or fails validation; `field` is its JSON path.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },

    /// The API base URL or token cannot be used.
    #[cfg(feature = "client")]
    #[error("invalid GitHub client setting {setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    /// GitHub answered with an error status.
    #[cfg(feature = "client")]
    #[error("GitHub API {method} {path}: HTTP {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    /// GitHub's rate limit is exhausted for longer than we are willing to wait.
    #[cfg(feature = "client")]
    #[error("GitHub API {method} {path}: rate limited for {}s more", retry_after.as_secs())]
    RateLimited {
        method: String,
        path: String,
        retry_after: std::time::Duration,
    },
    /// The request did not get an answer (connect, TLS, timeout, ...).
    #[cfg(feature = "client")]
    #[error("GitHub API {method} {path}: {source}")]
    Transport {
        method: String,
        path: String,
        source: reqwest::Error,
    },
    /// GitHub answered 2xx with a body we cannot read.
    #[cfg(feature = "client")]
    #[error("GitHub API {method} {path}: unexpected response: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
}

impl Error {
    /// The HTTP status a webhook endpoint should answer with for this error: 401 for signature
    /// problems, 400 for bad payloads, 500 otherwise.
    pub fn webhook_status(&self) -> u16 {
        match self {
            Error::MissingSignature | Error::MalformedSignature(_) | Error::SignatureMismatch => {
                401
            }
            Error::MissingHeader(_) | Error::MalformedPayload(_) | Error::InvalidField { .. } => {
                400
            }
            #[allow(unreachable_patterns)]
            _ => 500,
        }
    }

    /// The field a validation error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidField { field, .. } => Some(field),
            Error::MissingHeader(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
