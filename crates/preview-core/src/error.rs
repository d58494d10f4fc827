use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Errors of the core logic. Each variant names the thing (file, key, field) at fault. When
/// shown, each part a repository controls is cut to at most a thousand characters, its middle
/// left out: an error is the reason in the PR comment, which GitHub caps at 65,536 characters,
/// and its messages quote the repo's keys and values, which can be as long as the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value failed validation; `field` names it.
    #[error("invalid {}: {}", shown(field, PART), shown(reason, MESSAGE))]
    Invalid { field: String, reason: String },
    /// Every port of a pool is allocated, bound on the host or published by a container.
    #[error("no free port in the {pool} port pool {range}")]
    PortsExhausted { pool: &'static str, range: String },
    /// `preview-config.yml` is not valid: `key` is the top-level key at fault, when known.
    #[error("{}{}: {}{}", shown(file, PART), line_suffix(*line), key_prefix(key.as_deref()), shown(message, MESSAGE))]
    Config {
        file: String,
        line: Option<u64>,
        key: Option<String>,
        message: String,
    },
    /// The repo's `docker-compose.preview.yml` asks for something a preview may not have.
    #[error("{}{}: {}key `{}`: {}", shown(file, PART), line_suffix(*line), service_prefix(service.as_deref()), shown(key, PART), shown(reason, MESSAGE))]
    ComposeRefused {
        file: String,
        line: Option<u64>,
        service: Option<String>,
        key: String,
        reason: String,
    },
    /// The app is written in a language (or uses a build tool) we do not build yet.
    #[error(
        "unsupported: {} (found {})",
        shown(language, PART),
        shown(found, PART)
    )]
    Unsupported { language: String, found: String },
    /// No deployable app was found, or several were and none was chosen.
    #[error("{}", shown(.0, MESSAGE))]
    NoApp(String),
    /// A path in the checkout is unsafe to read: a symlink leading outside, or `..` escaping.
    #[error("{}: {}", shown_path(path), shown(reason, MESSAGE))]
    UnsafePath { path: PathBuf, reason: String },
    /// A file in the checkout is larger than we are willing to read.
    #[error(
        "{}: larger than the {limit}-byte limit for files read from a checkout",
        shown_path(path)
    )]
    TooLarge { path: PathBuf, limit: u64 },
    /// A file of the checkout could not be read or parsed.
    #[error("{}: {}", shown_path(path), shown(message, MESSAGE))]
    Manifest { path: PathBuf, message: String },
    /// Reading the checkout failed.
    #[error("{}: {source}", shown_path(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A template failed to render: a bug in a template or its inputs.
    #[error("rendering {template}: {}", shown(message, MESSAGE))]
    Render { template: String, message: String },
}

fn line_suffix(line: Option<u64>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{}`: ", shown(k, PART)))
        .unwrap_or_default()
}

fn service_prefix(service: Option<&str>) -> String {
    service
        .map(|s| format!("service `{}`: ", shown(s, PART)))
        .unwrap_or_default()
}

/// The most characters an error shows of a name: a file, key, service or field.
const PART: usize = 200;

/// The most characters an error shows of its message.
const MESSAGE: usize = 1_000;

/// `text`, or if it has more than `max` characters, its start and end with the middle left out:
/// the start says what is wrong, the end often how to fix it.
fn shown(text: &str, max: usize) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return Cow::Borrowed(text);
    }
    let head: String = text.chars().take(max * 2 / 3).collect();
    let tail: String = text.chars().skip(count - max / 3).collect();
    let left_out = count - max * 2 / 3 - max / 3;
    Cow::Owned(format!("{head}…({left_out} characters)…{tail}"))
}

fn shown_path(path: &Path) -> String {
    shown(&path.display().to_string(), PART).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PreviewConfig;

    /// Found by the hostile-input properties: a long value or key made an error as long as the
    /// file (64 KiB), too long for the PR comment it is the reason of.
    #[test]
    fn errors_show_at_most_a_thousand_characters_of_what_the_repo_wrote() {
        let long = "x".repeat(60_000);
        let err = PreviewConfig::parse(&format!("framework: {long}\n"), "preview-config.yml")
            .unwrap_err()
            .to_string();
        assert!(err.chars().count() < 1_300, "{} characters", err.len());
        assert!(
            err.starts_with("preview-config.yml:1: key `framework`: unknown framework \"xxx"),
            "{err}"
        );
        assert!(err.contains("…(59"), "{err}");
        assert!(err.ends_with("\"; use one of nestjs, express, fastify, nextjs, nuxt, sveltekit, astro, remix, react-router, angular, vite, cra, static, django, fastapi, flask, laravel, node, python, go, php, rust"), "{err}");
        let err = PreviewConfig::parse(&format!("{long}: 1\n"), "preview-config.yml")
            .unwrap_err()
            .to_string();
        assert!(err.chars().count() < 1_500, "{} characters", err.len());
        assert!(err.starts_with("preview-config.yml:1: key `xxx"), "{err}");
        // What fits is shown whole.
        assert_eq!(shown("short", PART), "short");
        assert_eq!(shown(&"é".repeat(PART), PART).chars().count(), PART);
        let over = "é".repeat(PART + 1);
        let cut = shown(&over, PART);
        assert_eq!(
            cut,
            format!("{}…(2 characters)…{}", "é".repeat(133), "é".repeat(66))
        );
    }
}
