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
    /// The repo's compose file asks for something a preview may not have. The fields are the
    /// refusal that comes first in the file; `more` holds the others found in the same pass
    /// (each a `ComposeRefused` without `more`, in line order), so that one push learns of them
    /// all. Alone, it reads `FILE:LINE: service `S`: key `K`: REASON`; with others, a line for
    /// each under `FILE: N refusals:` (see [`Error::from_refusals`]).
    #[error("{}", compose_refused(file, *line, service.as_deref(), key, reason, more))]
    ComposeRefused {
        file: String,
        line: Option<u64>,
        service: Option<String>,
        key: String,
        reason: String,
        more: Vec<Error>,
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

/// The most refusals of one file an error lists; the rest are counted.
const MAX_REFUSALS_LISTED: usize = 20;

/// The most characters one refusal shows in a list of several.
const LISTED_REFUSAL: usize = 600;

/// The most bytes the listed refusals of one file take together: with the header and the count
/// of the rest, the whole message stays well under 8 KiB, however many refusals a hostile file
/// has (the PR comment it goes into is capped at 64 KiB).
const REFUSALS_BUDGET: usize = 6_000;

/// A compose refusal as one line: `FILE:LINE: service `S`: key `K`: REASON`.
fn refusal_line(
    file: &str,
    line: Option<u64>,
    service: Option<&str>,
    key: &str,
    reason: &str,
) -> String {
    format!(
        "{}{}: {}key `{}`: {}",
        shown(file, PART),
        line_suffix(line),
        service_prefix(service),
        shown(key, PART),
        shown(reason, MESSAGE)
    )
}

/// [`Error::ComposeRefused`] shown: its own line alone, or, with `more`, a header and a line for
/// each refusal in order, at most [`MAX_REFUSALS_LISTED`] within [`REFUSALS_BUDGET`] bytes, then
/// how many more there are.
fn compose_refused(
    file: &str,
    line: Option<u64>,
    service: Option<&str>,
    key: &str,
    reason: &str,
    more: &[Error],
) -> String {
    let first = refusal_line(file, line, service, key, reason);
    if more.is_empty() {
        return first;
    }
    let total = 1 + more.len();
    let mut out = format!("{}: {total} refusals:", shown(file, PART));
    let mut used = 0;
    let mut listed = 0;
    for refusal in std::iter::once(first).chain(more.iter().map(Error::to_string)) {
        // One line each, even when a key the repo wrote holds a line break.
        let refusal = refusal.replace('\r', "\\r").replace('\n', "\\n");
        let item = format!("\n- {}", shown(&refusal, LISTED_REFUSAL));
        if listed == MAX_REFUSALS_LISTED || (listed > 0 && used + item.len() > REFUSALS_BUDGET) {
            break;
        }
        used += item.len();
        listed += 1;
        out.push_str(&item);
    }
    if listed < total {
        out.push_str(&format!("\n- and {} more", total - listed));
    }
    out
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
    /// One error for every refusal found in a pass over a compose file, or `None` when none
    /// was: the earliest in the file leads, the others follow in line order (those without a
    /// line last, in the order found) in its `more`, and exact repeats are dropped. An error of
    /// another kind among them is returned as it is: it is not a refusal, and it says more.
    pub fn from_refusals(found: Vec<Error>) -> Option<Error> {
        let mut refusals = Vec::new();
        for mut error in found {
            let Error::ComposeRefused { more, .. } = &mut error else {
                return Some(error);
            };
            let more = std::mem::take(more);
            refusals.push(error);
            refusals.extend(more);
        }
        // What tells a refusal apart: file, line, service, key and reason.
        let fields = |e: &Error| match e {
            Error::ComposeRefused {
                file,
                line,
                service,
                key,
                reason,
                ..
            } => Some((
                file.clone(),
                *line,
                service.clone(),
                key.clone(),
                reason.clone(),
            )),
            _ => None,
        };
        refusals.sort_by_key(|e| fields(e).and_then(|f| f.1).unwrap_or(u64::MAX));
        let mut seen = std::collections::HashSet::new();
        refusals.retain(|e| seen.insert(fields(e)));
        let mut refusals = refusals.into_iter();
        let mut first = refusals.next()?;
        if let Error::ComposeRefused { more, .. } = &mut first {
            *more = refusals.collect();
        }
        Some(first)
    }

    /// The refusals this error holds, in line order: itself and its `more` for
    /// [`Error::ComposeRefused`], none for any other error.
    pub fn refusals(&self) -> Vec<&Error> {
        match self {
            Error::ComposeRefused { more, .. } => std::iter::once(self).chain(more).collect(),
            _ => Vec::new(),
        }
    }

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

    fn refusal(line: Option<u64>, key: &str) -> Error {
        Error::ComposeRefused {
            file: "compose.yaml".into(),
            line,
            service: Some("web".into()),
            key: key.into(),
            reason: "no".into(),
            more: Vec::new(),
        }
    }

    /// Refusals are put in line order (those without a line last, as found), repeats dropped
    /// and lists flattened; another kind of error wins, and no refusal is no error.
    #[test]
    fn refusals_are_gathered_in_line_order() {
        assert!(Error::from_refusals(Vec::new()).is_none());
        let one = Error::from_refusals(vec![refusal(Some(3), "a")]).unwrap();
        assert_eq!(
            one.to_string(),
            "compose.yaml:3: service `web`: key `a`: no"
        );
        let nested = Error::from_refusals(vec![refusal(Some(9), "d"), refusal(None, "e")]);
        let all = Error::from_refusals(vec![
            refusal(None, "f"),
            nested.unwrap(),
            refusal(Some(3), "b"),
            refusal(Some(3), "b"),
            refusal(Some(1), "a"),
        ])
        .unwrap();
        assert_eq!(
            all.to_string(),
            "compose.yaml: 5 refusals:
- compose.yaml:1: service `web`: key `a`: no
- compose.yaml:3: service `web`: key `b`: no
- compose.yaml:9: service `web`: key `d`: no
- compose.yaml: service `web`: key `f`: no
- compose.yaml: service `web`: key `e`: no"
        );
        assert_eq!(all.refusals().len(), 5);
        // A key with a line break stays on its line.
        let broken = Error::from_refusals(vec![refusal(Some(1), "a\nb"), refusal(Some(2), "c")]);
        assert_eq!(
            broken.unwrap().to_string(),
            "compose.yaml: 2 refusals:\n- compose.yaml:1: service `web`: key `a\\nb`: no\n- compose.yaml:2: service `web`: key `c`: no"
        );
        assert!(Error::NoApp("none".into()).refusals().is_empty());
        let other = Error::from_refusals(vec![refusal(Some(1), "a"), Error::NoApp("x".into())]);
        assert!(matches!(other, Some(Error::NoApp(_))));
    }
}
