//! The rules of per-repository preview secrets (`preview secrets set owner/repo NAME`): what a
//! name and a value may be. The values themselves live on the server only (the orchestrator's
//! secrets dir); this module holds no value and does no I/O, so the CLI and the orchestrator check
//! input the same way.
//!
//! A secret reaches a trusted preview's app as an environment variable at start. The rendered
//! compose file names it without a value (`NAME: null`), and Compose takes the value from its own
//! process environment, where the orchestrator puts it (see [`crate::render::RenderInput`]'s
//! `secret_names`). Hence the reserved names: those the preview sets itself, and those Docker
//! Compose and the Docker CLI read from their own environment (a secret named `DOCKER_HOST` would
//! point Compose at another daemon).

use crate::{Error, Result};

/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Largest secret value, in bytes (64 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Names the preview sets for every app, or for some frameworks, databases and services: a secret
/// may not replace them. Kept in step with the renderer's own variables by a test.
pub const PREVIEW_VARIABLES: [&str; 21] = [
    "PORT",
    "HOST",
    "HOSTNAME",
    "ROCKET_PORT",
    "ROCKET_ADDRESS",
    "PREVIEW",
    "DATABASE_URL",
    "MONGODB_URI",
    "MONGO_URL",
    "DB_CONNECTION",
    "DB_HOST",
    "DB_PORT",
    "DB_DATABASE",
    "DB_USERNAME",
    "DB_PASSWORD",
    "REDIS_URL",
    "REDIS_HOST",
    "APP_KEY",
    "APP_ENV",
    "APP_URL",
    "LOG_CHANNEL",
];

/// Name prefixes of the preview's own variables (`PREVIEW_URL`, `PREVIEW_SHA`, ...).
const PREVIEW_PREFIXES: [&str; 1] = ["PREVIEW_"];

/// Variables Docker Compose and the Docker CLI read from their environment, plus what every
/// command the orchestrator runs gets (`PATH`, `LC_ALL`).
const TOOL_VARIABLES: [&str; 3] = ["PATH", "HOME", "LC_ALL"];
/// Prefixes of the same.
const TOOL_PREFIXES: [&str; 4] = ["COMPOSE_", "DOCKER_", "BUILDKIT_", "BUILDX_"];

/// A valid secret name: an environment variable name `[A-Za-z_][A-Za-z0-9_]*` of at most
/// [`MAX_NAME_LEN`] bytes, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SecretName(String);

impl SecretName {
    /// Checks `name`; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |reason: String| {
            Err(Error::Invalid {
                field: "secret name".to_owned(),
                reason,
            })
        };
        if name.is_empty() {
            return bad("it is empty".to_owned());
        }
        if name.len() > MAX_NAME_LEN {
            return bad(format!("{} bytes long; at most {MAX_NAME_LEN}", name.len()));
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return bad(format!(
                "{name:?} starts with a digit; an environment variable name is [A-Za-z_][A-Za-z0-9_]*"
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return bad(format!(
                "{name:?} holds {c:?}; an environment variable name is [A-Za-z_][A-Za-z0-9_]*"
            ));
        }
        if let Some(why) = reserved_reason(name) {
            return bad(format!("{name} is reserved: {why}"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `name` may not be a secret's name, if it is reserved.
pub fn reserved_reason(name: &str) -> Option<&'static str> {
    if PREVIEW_VARIABLES.contains(&name) || PREVIEW_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some("the preview sets this variable itself");
    }
    if TOOL_VARIABLES.contains(&name) || TOOL_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(
            "Docker Compose reads this variable from its own environment, which is how secrets reach the app",
        );
    }
    None
}

/// Checks a secret's value: at most [`MAX_VALUE_BYTES`], not empty, no NUL byte (an environment
/// variable cannot hold one). The error never quotes the value.
pub fn validate_value(value: &[u8]) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::Invalid {
            field: "secret value".to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return bad("it is empty (to remove a secret, unset it)".to_owned());
    }
    if value.len() > MAX_VALUE_BYTES {
        return bad(format!(
            "it is {} bytes; at most {MAX_VALUE_BYTES} bytes (64 KiB)",
            value.len()
        ));
    }
    if value.contains(&0) {
        return bad("it holds a NUL byte, which an environment variable cannot".to_owned());
    }
    if std::str::from_utf8(value).is_err() {
        return bad("it is not UTF-8 text".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        SecretName::parse(name).unwrap_err().to_string()
    }

    #[test]
    fn names_are_environment_variable_names() {
        for ok in [
            "STRIPE_KEY",
            "_x",
            "a1",
            "Sentry_DSN_2",
            &"A".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(SecretName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(reason(""), "invalid secret name: it is empty");
        assert!(
            reason("1KEY").contains("starts with a digit"),
            "{}",
            reason("1KEY")
        );
        assert!(
            reason("MY-KEY").contains("holds '-'"),
            "{}",
            reason("MY-KEY")
        );
        assert!(reason("KEY=x").contains("holds '='"));
        assert!(reason("KÉY").contains("holds 'É'"));
        assert!(reason("A B").contains("holds ' '"));
        assert!(
            reason(&"A".repeat(MAX_NAME_LEN + 1)).contains("129 bytes long; at most 128"),
            "{}",
            reason(&"A".repeat(MAX_NAME_LEN + 1))
        );
    }

    #[test]
    fn names_the_preview_or_compose_uses_are_reserved() {
        for name in [
            "PORT",
            "DATABASE_URL",
            "PREVIEW",
            "PREVIEW_URL",
            "PREVIEW_ANYTHING",
            "APP_KEY",
        ] {
            assert!(
                reason(name).contains("the preview sets this variable itself"),
                "{name}: {}",
                reason(name)
            );
        }
        for name in [
            "DOCKER_HOST",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "PATH",
            "HOME",
            "BUILDKIT_PROGRESS",
        ] {
            assert!(reason(name).contains("Docker Compose reads"), "{name}");
        }
        // Case matters for environment variables: these are the app's own.
        for name in ["port", "docker_host", "Preview_url", "APP_SECRET"] {
            assert!(SecretName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn values_are_bounded_text_without_nul() {
        assert!(validate_value(b"sk_live_123").is_ok());
        assert!(validate_value("multi\nline \"quoted\" \\ $HOME ünïcode".as_bytes()).is_ok());
        assert!(validate_value(&vec![b'x'; MAX_VALUE_BYTES]).is_ok());
        let over = validate_value(&vec![b'x'; MAX_VALUE_BYTES + 1])
            .unwrap_err()
            .to_string();
        assert_eq!(
            over,
            "invalid secret value: it is 65537 bytes; at most 65536 bytes (64 KiB)"
        );
        assert!(
            validate_value(b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            validate_value(b"a\0b")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        let not_utf8 = validate_value(&[0xff, 0xfe]).unwrap_err().to_string();
        assert!(not_utf8.contains("not UTF-8"), "{not_utf8}");
    }
}
