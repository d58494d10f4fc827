//! Variables in a repo's compose file: which keys may refer to them, the references each
//! service makes, and their resolution from the preview's own values (the rule is at
//! [`VariableRef`]). Compose's interpolation syntax is parsed here, depth- and size-limited.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{OVERRIDDEN, REFUSED, Refusals, RepoService, SanitizedCompose, ServiceLines};
use crate::{Error, Result};

/// A reference to a variable in a repo's compose file.
///
/// The rule. Compose would resolve `${VAR}` and `$VAR` from its own environment, and on the
/// droplet that is the orchestrator's (its GitHub token, its webhook secret, HOME, ...). So
/// references resolve only from the `.env` beside the file ([`crate::dotenv`], the repo's own
/// values) and the preview's own variables: preview-config.yml's `env` and `env_file`, and the
/// variables the preview sets for the app (`PORT` or the configured port
/// variable, `PREVIEW`, `PREVIEW_BASE_PATH`, `PREVIEW_PR`, `PREVIEW_SHA`, `PREVIEW_URL`, and
/// `HOST` for Node; see [`crate::render::compose::preview_variable_names`]). The orchestrator
/// substitutes them when rendering, and every `$` of the file Compose reads is escaped.
/// - `${V}`, `$V`, `${V?msg}`, `${V:?msg}`, and an `environment` or `build.args` entry without a
///   value (which Compose fills from its environment) need V's value: any other V is refused
///   when planning, with the file, service and line, so the PR comment says what to change.
/// - `${V:-text}`, `${V-text}`, `${V:+text}`, `${V+text}` bring their own text: a V outside the
///   preview counts as unset, so its value is never read and the repo's text is used. The
///   text follows the same rule (`${A:-${GITHUB_TOKEN}}` is refused).
/// - `$$` is a literal `$`. Any other `$` is invalid, as it is for Compose.
/// - References are allowed only in keys whose value the sanitiser does not judge
///   ([`INTERPOLATED`]): a path, a network mode or a build context must be checked as written,
///   not after substitution.
/// - Per-repository preview secrets ([`crate::repo_secrets`]) are not among the names a
///   reference may use. They reach the app service's environment by themselves, and only when
///   the commit is trusted: the renderer names them there without a value and Compose fills them
///   in at start from its own environment. Substituting them here would write their values into
///   the compose file in the work dir, and could carry them into a build arg (an image layer),
///   a label or another service; so `${STRIPE_KEY}` or a bare `STRIPE_KEY` entry is refused like
///   any other variable outside the preview (or, with a default, counts as unset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableRef {
    /// The variable's name.
    pub name: String,
    /// Whether the reference needs a value (no text of its own to fall back to).
    pub required: bool,
    /// The service it is in.
    pub service: String,
    /// The key it is under, e.g. `environment` or `build.args`.
    pub key: String,
    /// Its line in the file, when found.
    pub line: Option<u64>,
}

/// Service keys (and build keys, as `build.KEY`) whose values may refer to variables.
pub const INTERPOLATED: [&str; 16] = [
    "environment",
    "labels",
    "command",
    "entrypoint",
    "healthcheck",
    "working_dir",
    "user",
    "image",
    "hostname",
    "extra_hosts",
    "post_start",
    "annotations",
    "build.args",
    "build.labels",
    "build.target",
    "build.dockerfile_inline",
];

/// A port entry with each `${NAME:-default}` (or `${NAME-default}`) replaced by its default,
/// as it reads when the preview sets none of them: `${PORT:-8000}` is 8000. Anything else with
/// a `$` is left as it is (and then not a port).
pub(super) fn with_defaults(entry: &str) -> String {
    let mut out = String::new();
    let mut rest = entry;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let inner = &rest[at + 2..at + end];
        match inner.split_once(":-").or_else(|| inner.split_once('-')) {
            Some((_, default)) if !default.contains('$') => out.push_str(default),
            _ => out.push_str(&rest[at..=at + end]),
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A piece of a string as Compose's interpolation reads it.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// `$$`, a literal `$`.
    Dollar,
    /// `$NAME`, `${NAME}` or `${NAME<op>text}`.
    Var {
        name: String,
        op: Option<(Op, Vec<Piece>)>,
    },
}

/// The operators of `${NAME<op>text}`; `colon` means that empty counts as unset.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// `:-` or `-`: the text when unset.
    Default { colon: bool },
    /// `:?` or `?`: an error when unset.
    Required { colon: bool },
    /// `:+` or `+`: the text when set, else nothing.
    Alternative { colon: bool },
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// How deep `${A:-${B:-...}}` may nest: deeper is refused, so that hostile input cannot exhaust
/// the stack of the recursive parse and resolution.
const MAX_NESTING: usize = 8;

/// How long a value may grow when its references are resolved: a hostile `.env` doubling a
/// value on each line must not exhaust memory.
const MAX_RESOLVED: usize = crate::checkout::CONFIG_LIMIT as usize;

/// How long all the values of one compose file may grow together when their references are
/// resolved: each is capped at 64 KiB, and a 64 KiB file of `- ${A}${A}...` items
/// with an 8 KiB `A` must not render a compose file of 100 MB.
pub const MAX_RESOLVED_TOTAL: usize = 16 * MAX_RESOLVED;

/// Parses `s` as Compose interpolates it.
fn parse_template(s: &str) -> std::result::Result<Vec<Piece>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at = 0;
    parse_pieces(&chars, &mut at, 0)
}

/// `depth` is how many `${NAME<op>` enclose the text at `at` (0 at the top).
fn parse_pieces(
    chars: &[char],
    at: &mut usize,
    depth: usize,
) -> std::result::Result<Vec<Piece>, String> {
    let nested = depth > 0;
    if depth > MAX_NESTING {
        return Err(format!("variables are nested more than {MAX_NESTING} deep"));
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let name = |chars: &[char], at: &mut usize| {
        let start = *at;
        while chars.get(*at).copied().is_some_and(is_name_char) {
            *at += 1;
        }
        chars[start..*at].iter().collect::<String>()
    };
    loop {
        let Some(&c) = chars.get(*at) else {
            if nested {
                return Err("a `${` is not closed by `}`".to_owned());
            }
            break;
        };
        if nested && c == '}' {
            *at += 1;
            break;
        }
        if c != '$' {
            text.push(c);
            *at += 1;
            continue;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        match chars.get(*at + 1).copied() {
            Some('$') => {
                *at += 2;
                pieces.push(Piece::Dollar);
            }
            Some('{') => {
                *at += 2;
                if !chars.get(*at).copied().is_some_and(is_name_start) {
                    return Err("`${` must be followed by a variable name".to_owned());
                }
                let name = name(chars, at);
                let colon = chars.get(*at) == Some(&':');
                let op_at = *at + usize::from(colon);
                let op = match chars.get(op_at) {
                    Some('}') if !colon => None,
                    Some('-') => Some(Op::Default { colon }),
                    Some('?') => Some(Op::Required { colon }),
                    Some('+') => Some(Op::Alternative { colon }),
                    _ => {
                        return Err(format!(
                            "`${{{name}` must be followed by `}}`, `:-`, `-`, `:?`, `?`, `:+` or `+`"
                        ));
                    }
                };
                *at = op_at + 1;
                let op = match op {
                    None => None,
                    Some(op) => Some((op, parse_pieces(chars, at, depth + 1)?)),
                };
                pieces.push(Piece::Var { name, op });
            }
            Some(c) if is_name_start(c) => {
                *at += 1;
                let name = name(chars, at);
                pieces.push(Piece::Var { name, op: None });
            }
            _ => {
                return Err(
                    "a `$` must start a variable (`${NAME}`) or be doubled (`$$`) for a literal `$`"
                        .to_owned(),
                );
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The variables `pieces` refer to, with whether each needs a value.
fn referenced(pieces: &[Piece], out: &mut Vec<(String, bool)>) {
    for p in pieces {
        if let Piece::Var { name, op } = p {
            let required = matches!(op, None | Some((Op::Required { .. }, _)));
            out.push((name.clone(), required));
            if let Some((_, text)) = op {
                referenced(text, out);
            }
        }
    }
}

/// Whether a reference may stand at `key` (see [`INTERPOLATED`]).
fn may_interpolate(key: &str) -> bool {
    INTERPOLATED.contains(&key) || INTERPOLATED.contains(&key.split('.').next().unwrap_or(key))
}

/// What [`scan_variables`] found in one service.
pub(super) struct ScannedService {
    /// Every variable the service refers to.
    pub refs: Vec<VariableRef>,
    /// The keys (`build.KEY` for build keys) whose variables were refused, and noted: their
    /// values as written are not what the repo meant, so they are not judged further.
    pub refused_keys: BTreeSet<String>,
}

/// Every variable a service refers to, refusing (and noting) invalid `$` syntax and references
/// in keys whose values the sanitiser judges, each string on its own. Keys refused whatever
/// their value ([`REFUSED`]) are left to that refusal, which says more.
pub(super) fn scan_variables(
    r: &Refusals,
    service: &str,
    map: &Map<String, Value>,
    preview_file: bool,
) -> ScannedService {
    let mut strings = Vec::new();
    let mut bare = Vec::new();
    for (key, value) in map {
        // A project file's `ports` are dropped unread (beyond their container port), so their
        // variables are never substituted.
        if key == "ports" && !preview_file {
            continue;
        }
        // Dropped or replaced by the orchestrator: their variables are never substituted.
        if OVERRIDDEN.contains(&key.as_str()) || key == "restart" || key == "develop" {
            continue;
        }
        if REFUSED.iter().any(|(refused, _)| refused == key) {
            continue;
        }
        if key == "build"
            && let Value::Object(build) = value
        {
            for (k, v) in build {
                let key = format!("build.{k}");
                if k == "args" {
                    bare_entries(v, &key, &mut bare);
                }
                collect_strings(v, &key, &mut strings);
            }
        } else {
            if key == "environment" {
                bare_entries(value, key, &mut bare);
            }
            collect_strings(value, key, &mut strings);
        }
    }
    let mut refs = Vec::new();
    let mut refused_keys = BTreeSet::new();
    let mut lines = ServiceLines::new(r.lines(), service);
    for (key, text) in strings {
        let pieces = match parse_template(text) {
            Ok(pieces) => pieces,
            Err(why) => {
                let line = lines.locate(&key, &[text.to_owned()]);
                r.note(r.refuse_at(service, &key, line, format!("{text:?}: {why}")));
                refused_keys.insert(key);
                continue;
            }
        };
        let mut names = Vec::new();
        referenced(&pieces, &mut names);
        if let Some((name, _)) = names.first()
            && !may_interpolate(&key)
        {
            let line = lines.locate(&key, &needles(name));
            r.note(r.refuse_at(
                service,
                &key,
                line,
                format!(
                    "variables are not substituted in `{key}` (found `{name}`): the sanitiser judges this key's value as written, so write the value itself"
                ),
            ));
            refused_keys.insert(key);
            continue;
        }
        for (name, required) in names {
            let line = lines.locate_variable(&key, &name);
            refs.push(VariableRef {
                name,
                required,
                service: service.to_owned(),
                key: key.clone(),
                line,
            });
        }
    }
    for (key, name) in bare {
        refs.push(VariableRef {
            line: lines.locate(&key, std::slice::from_ref(&name)),
            name,
            required: true,
            service: service.to_owned(),
            key,
        });
    }
    ScannedService { refs, refused_keys }
}

fn needles(name: &str) -> [String; 2] {
    [format!("${{{name}"), format!("${name}")]
}

/// Every string under `value`, with the key they belong to.
fn collect_strings<'v>(value: &'v Value, key: &str, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::String(s) if s.contains('$') => out.push((key.to_owned(), s)),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, key, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, key, out)),
        _ => {}
    }
}

/// `environment` and `build.args` entries without a value, which Compose fills from its own
/// environment: references like `${NAME}`.
fn bare_entries(value: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Array(items) => {
            for item in items {
                if let Value::String(s) = item
                    && !s.contains('=')
                {
                    out.push((key.to_owned(), s.clone()));
                }
            }
        }
        Value::Object(map) => {
            for (name, v) in map {
                if v.is_null() {
                    out.push((key.to_owned(), name.clone()));
                }
            }
        }
        _ => {}
    }
}

/// Refuses every reference to a variable that is not one of `names`, the preview's own, unless
/// it brings its own text (see [`VariableRef`]): all of them at once, in line order.
///
/// This runs once the plan knows the preview's variables, which needs a file the sanitiser
/// passed (the web service chosen); so these refusals come after the sanitiser's, not with them.
pub fn check_variables(compose: &SanitizedCompose, names: &BTreeSet<String>) -> Result<()> {
    let mut unknown: Vec<&VariableRef> = compose
        .variables
        .iter()
        .filter(|v| v.required && !names.contains(&v.name))
        .collect();
    // The first in the file says why; the others refer to it.
    unknown.sort_by_key(|v| v.line.unwrap_or(u64::MAX));
    let known: Vec<&str> = names.iter().map(String::as_str).collect();
    let refusals = unknown
        .iter()
        .enumerate()
        .map(|(i, v)| Error::ComposeRefused {
            file: compose.file.clone(),
            line: v.line,
            service: Some(v.service.clone()),
            key: v.key.clone(),
            reason: if i == 0 {
                format!(
                    "`{}` is not a variable of this preview, and Compose's own environment is never used; a repo's compose file may use only the variables of the `.env` beside it, of preview-config.yml's env and env_file, and those the preview sets ({}); preview secrets reach the app's environment by themselves and cannot be referred to; write `$$` for a literal `$`",
                    v.name,
                    known.join(", ")
                )
            } else {
                format!("`{}` is not a variable of this preview either", v.name)
            },
            more: Vec::new(),
        })
        .collect();
    match Error::from_refusals(refusals) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `text` with its references replaced by `values` (the preview's own variables) and every `$`
/// escaped, so Compose reads it literally.
pub fn resolve_text(
    text: &str,
    values: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
    let pieces = parse_template(text)?;
    let mut out = String::new();
    resolve_pieces(&pieces, values, &mut out)?;
    if out.len() > MAX_RESOLVED {
        return Err(format!(
            "the value grows beyond {MAX_RESOLVED} bytes once its variables are resolved"
        ));
    }
    Ok(out)
}

fn resolve_pieces(
    pieces: &[Piece],
    values: &BTreeMap<String, String>,
    out: &mut String,
) -> std::result::Result<(), String> {
    let escaped = |v: &str| v.replace('$', "$$");
    for p in pieces {
        if out.len() > MAX_RESOLVED {
            return Err(format!(
                "the value grows beyond {MAX_RESOLVED} bytes once its variables are resolved"
            ));
        }
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Dollar => out.push_str("$$"),
            Piece::Var { name, op } => {
                let value = values.get(name);
                let unset = |colon: bool| value.is_none_or(|v| colon && v.is_empty());
                match op {
                    None => match value {
                        Some(v) => out.push_str(&escaped(v)),
                        None => return Err(format!("`{name}` is not set for this preview")),
                    },
                    Some((Op::Default { colon }, text)) => match value {
                        Some(v) if !unset(*colon) => out.push_str(&escaped(v)),
                        _ => resolve_pieces(text, values, out)?,
                    },
                    Some((Op::Required { colon }, text)) => match value {
                        Some(v) if !unset(*colon) => out.push_str(&escaped(v)),
                        _ => {
                            let mut why = String::new();
                            resolve_pieces(text, values, &mut why)?;
                            return Err(format!("`{name}` is required: {why}"));
                        }
                    },
                    Some((Op::Alternative { colon }, text)) => {
                        if !unset(*colon) {
                            resolve_pieces(text, values, out)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

impl SanitizedCompose {
    /// Its services with their variables substituted from `values` (the preview's own), as
    /// [`RepoService::resolved`] does, all together within [`MAX_RESOLVED_TOTAL`] bytes.
    pub fn resolved_services(&self, values: &BTreeMap<String, String>) -> Result<Vec<RepoService>> {
        let left = Cell::new(MAX_RESOLVED_TOTAL);
        self.services
            .iter()
            .map(|s| s.resolved_within(&self.file, values, &left))
            .collect()
    }
}

impl RepoService {
    /// The service with its variables substituted from `values` (the preview's own) and every
    /// `$` escaped for Compose; an entry without a value takes the preview's. Its values
    /// together may grow to at most [`MAX_RESOLVED_TOTAL`] bytes.
    pub fn resolved(&self, file: &str, values: &BTreeMap<String, String>) -> Result<RepoService> {
        self.resolved_within(file, values, &Cell::new(MAX_RESOLVED_TOTAL))
    }

    /// [`Self::resolved`], taking the bytes of its values from `left`.
    fn resolved_within(
        &self,
        file: &str,
        values: &BTreeMap<String, String>,
        left: &Cell<usize>,
    ) -> Result<RepoService> {
        let refuse = |key: &str, reason: String| Error::ComposeRefused {
            file: file.to_owned(),
            line: None,
            service: Some(self.name.clone()),
            key: key.to_owned(),
            reason,
            more: Vec::new(),
        };
        let text = |key: &str, s: &str| {
            let resolved = resolve_text(s, values).map_err(|why| refuse(key, why))?;
            match left.get().checked_sub(resolved.len()) {
                Some(rest) => left.set(rest),
                None => {
                    return Err(refuse(
                        key,
                        format!(
                            "the file's values grow beyond {MAX_RESOLVED_TOTAL} bytes once their variables are resolved"
                        ),
                    ));
                }
            }
            Ok(resolved)
        };
        let pairs = |key: &str, map: &BTreeMap<String, Option<String>>| {
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Some(v) => text(key, v)?,
                        None => text(key, &format!("${{{k}}}"))?,
                    };
                    Ok((k.clone(), Some(v)))
                })
                .collect::<Result<BTreeMap<_, _>>>()
        };
        let labels = |key: &str, map: &BTreeMap<String, String>| {
            map.iter()
                .map(|(k, v)| Ok((k.clone(), text(key, v)?)))
                .collect::<Result<BTreeMap<_, _>>>()
        };
        let mut out = self.clone();
        out.environment = pairs("environment", &self.environment)?;
        out.labels = labels("labels", &self.labels)?;
        out.image = self
            .image
            .as_deref()
            .map(|i| text("image", i))
            .transpose()?;
        out.passthrough = resolve_map(&self.passthrough, &text)?;
        if let Some(b) = &self.build {
            let mut build = b.clone();
            build.args = pairs("build.args", &b.args)?;
            build.labels = labels("build.labels", &b.labels)?;
            build.target = b
                .target
                .as_deref()
                .map(|t| text("build.target", t))
                .transpose()?;
            build.dockerfile_inline = b
                .dockerfile_inline
                .as_deref()
                .map(|d| text("build.dockerfile_inline", d))
                .transpose()?;
            build.passthrough = resolve_map(&b.passthrough, &text)?;
            out.build = Some(build);
        }
        Ok(out)
    }
}

fn resolve_map(
    map: &Map<String, Value>,
    text: &impl Fn(&str, &str) -> Result<String>,
) -> Result<Map<String, Value>> {
    fn walk(key: &str, v: &Value, text: &impl Fn(&str, &str) -> Result<String>) -> Result<Value> {
        Ok(match v {
            Value::String(s) => Value::String(text(key, s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| walk(key, i, text))
                    .collect::<Result<_>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, i)| Ok((k.clone(), walk(key, i, text)?)))
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
    map.iter()
        .map(|(k, v)| Ok((k.clone(), walk(k, v, text)?)))
        .collect()
}
