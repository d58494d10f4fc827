//! What is read from a Dockerfile: the command its target stage runs ([`run_command`]), and the
//! images it builds from: its `FROM` lines, `COPY --from=` and
//! `RUN --mount=...,from=`, less its own stages (by name or index) and `scratch`. The `ARG`s
//! declared before the first `FROM` are substituted, with the build's args over their defaults,
//! as Docker does; a reference that still holds a variable is reported as such, to be skipped.
//!
//! The text is the repository's: nothing here may panic on it, whatever its bytes or size (the
//! caller caps the size).

use std::collections::{BTreeMap, HashMap, HashSet};

/// How deeply `${A:-${B:-...}}` may nest before the reference counts as unresolved.
const MAX_NESTING: usize = 8;

/// The longest a reference may grow as its variables are substituted: Docker accepts no
/// reference this long (a name of at most 255 bytes, a tag of 128, a sha512 digest), and a
/// hostile `FROM $A$A$A...` with a long `A` must not grow without bound.
pub const MAX_REFERENCE: usize = 1024;

/// An image reference found in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The 1-based line its instruction starts on.
    pub line: usize,
    /// The reference as written, e.g. `python:${PY}`.
    pub written: String,
    /// The reference with the global `ARG`s substituted, or why it has none.
    pub resolved: Result<String, Unresolved>,
}

/// Why a reference found in a Dockerfile has no value to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// A variable it needs has no value, or its syntax is one Docker would not expand.
    Variable,
    /// Its variables make it longer than [`MAX_REFERENCE`] bytes.
    TooLong,
}

/// The images the Dockerfile `text` names, in order; `args` are the build's args, `target` the
/// stage the build stops at (the classic builder builds every stage up to it, and none after).
pub fn images(text: &str, args: &BTreeMap<String, String>, target: Option<&str>) -> Vec<Found> {
    let mut found = Vec::new();
    // The stages so far, and the names of those named (lowercased, as Docker compares them).
    let mut stages = 0usize;
    let mut stage_names: HashSet<String> = HashSet::new();
    let mut global_args: HashMap<String, Option<String>> = HashMap::new();
    let mut target_reached = false;
    for instruction in instructions(text) {
        let (keyword, rest) = split_word(&instruction.text);
        let keyword = keyword.to_ascii_lowercase();
        let is_stage = |name: &str| {
            let name = name.to_ascii_lowercase();
            name.bytes().all(|b| b.is_ascii_digit()) || stage_names.contains(&name)
        };
        let mut name = |written: &str| {
            if !is_stage(written) && !written.eq_ignore_ascii_case("scratch") {
                found.push(Found {
                    line: instruction.line,
                    written: written.to_owned(),
                    resolved: expand(written, &global_args),
                });
            }
        };
        match keyword.as_str() {
            "arg" if stages == 0 => {
                for declaration in rest.split_whitespace() {
                    let (key, default) = match declaration.split_once('=') {
                        Some((key, value)) => (key, Some(unquote(value).to_owned())),
                        None => (declaration, None),
                    };
                    // A build arg is taken as given; a default may name the ARGs above it
                    // (`ARG BASE=python:${PY}`), and one that names an ARG without a value has
                    // none itself.
                    let value = match (args.get(key), default) {
                        (Some(given), _) => Some(given.clone()),
                        (None, Some(d)) if d.contains('$') => expand(&d, &global_args).ok(),
                        (None, d) => d,
                    };
                    global_args.insert(key.to_owned(), value);
                }
            }
            "from" => {
                if target_reached {
                    break;
                }
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .skip_while(|w| w.starts_with("--"))
                    .collect();
                let Some(image) = words.first() else { continue };
                name(image);
                let stage = match words.as_slice() {
                    [_, r#as, stage, ..] if r#as.eq_ignore_ascii_case("as") => {
                        Some(stage.to_ascii_lowercase())
                    }
                    _ => None,
                };
                target_reached =
                    target.is_some_and(|t| stage.as_deref() == Some(&*t.to_ascii_lowercase()));
                stage_names.extend(stage);
                stages += 1;
            }
            "copy" | "add" => {
                for flag in flags(rest) {
                    if let Some(from) = flag.strip_prefix("--from=") {
                        name(from);
                    }
                }
            }
            "run" => {
                for flag in flags(rest) {
                    let Some(mount) = flag.strip_prefix("--mount=") else {
                        continue;
                    };
                    for option in mount.split(',') {
                        if let Some(("from", from)) = option.split_once('=') {
                            name(from);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// What a container built from the Dockerfile `text` runs, as written (`ENTRYPOINT` then `CMD`,
/// each exec-form array joined by spaces): the `target` stage's, else the last stage's, inherited
/// from the stage it is built `FROM` when it sets none. `None` when no stage on that chain sets
/// either, or the target is not a stage.
pub fn run_command(text: &str, target: Option<&str>) -> Option<String> {
    struct Stage {
        name: Option<String>,
        parent: Option<usize>,
        entrypoint: Option<String>,
        cmd: Option<String>,
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(text) {
        let (keyword, rest) = split_word(&instruction.text);
        match keyword.to_ascii_lowercase().as_str() {
            "from" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .skip_while(|w| w.starts_with("--"))
                    .collect();
                let Some(image) = words.first() else { continue };
                let image = image.to_ascii_lowercase();
                let parent = stages
                    .iter()
                    .rposition(|s| s.name.as_deref() == Some(image.as_str()));
                let name = match words.as_slice() {
                    [_, r#as, stage, ..] if r#as.eq_ignore_ascii_case("as") => {
                        Some(stage.to_ascii_lowercase())
                    }
                    _ => None,
                };
                stages.push(Stage {
                    name,
                    parent,
                    entrypoint: None,
                    cmd: None,
                });
            }
            "cmd" => {
                if let Some(stage) = stages.last_mut() {
                    stage.cmd = Some(command_words(rest));
                }
            }
            "entrypoint" => {
                if let Some(stage) = stages.last_mut() {
                    stage.entrypoint = Some(command_words(rest));
                    // Docker resets an inherited CMD when a stage sets its ENTRYPOINT.
                    stage.cmd.get_or_insert_with(String::new);
                }
            }
            _ => {}
        }
    }
    let mut at = match target {
        Some(t) => {
            let t = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))?
        }
        None => stages.len().checked_sub(1)?,
    };
    let (mut entrypoint, mut cmd) = (None, None);
    // Each stage's parent comes before it, so the walk ends.
    loop {
        let stage = &stages[at];
        entrypoint = entrypoint.or_else(|| stage.entrypoint.clone());
        cmd = cmd.or_else(|| stage.cmd.clone());
        match stage.parent {
            Some(parent) if entrypoint.is_none() || cmd.is_none() => at = parent,
            _ => break,
        }
    }
    let words: Vec<String> = [entrypoint, cmd]
        .into_iter()
        .flatten()
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A `CMD` or `ENTRYPOINT` argument as words joined by single spaces: an exec-form JSON array's,
/// else the shell form's.
fn command_words(args: &str) -> String {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(words) => words.join(" "),
        Err(_) => args.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// One instruction: its continuation lines joined, comments and heredoc bodies left out.
struct Instruction {
    line: usize,
    text: String,
}

/// The instructions of `text`, honouring the `escape` parser directive, line continuations,
/// comment lines and heredocs (`RUN <<EOF` ... `EOF`), whose bodies are not instructions.
fn instructions(text: &str) -> Vec<Instruction> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let escape = escape_directive(text);
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut joined = String::new();
        let mut current = line;
        loop {
            let body = current.trim_end();
            match body.strip_suffix(escape) {
                Some(head) => {
                    joined.push_str(head);
                    joined.push(' ');
                }
                None => {
                    joined.push_str(body);
                    break;
                }
            }
            // The next line that is neither empty nor a comment continues the instruction.
            let next = lines.by_ref().map(|(_, l)| l).find(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            });
            match next {
                Some(next) => current = next,
                None => break,
            }
        }
        for terminator in heredoc_terminators(&joined) {
            lines.by_ref().find(|(_, l)| l.trim() == terminator);
        }
        out.push(Instruction {
            line: index + 1,
            text: joined,
        });
    }
    out
}

/// The escape character: `\`, or what a `# escape=` parser directive at the top sets.
fn escape_directive(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        if key.trim().eq_ignore_ascii_case("escape") && value.trim() == "`" {
            return '`';
        }
    }
    '\\'
}

/// The words that end the heredocs an instruction opens: `<<EOF`, `<<-EOF`, `<<"EOF"`.
fn heredoc_terminators(instruction: &str) -> Vec<String> {
    let (keyword, rest) = split_word(instruction);
    if !["run", "copy", "add"].contains(&keyword.to_ascii_lowercase().as_str()) {
        return Vec::new();
    }
    rest.split("<<")
        .skip(1)
        .filter_map(|after| {
            let after = after.strip_prefix('-').unwrap_or(after);
            let word: String = after
                .chars()
                .skip_while(|c| matches!(c, '"' | '\''))
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit())).then_some(word)
        })
        .collect()
}

/// The first word of `text` and the rest, trimmed.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// The leading `--flag` words of an instruction's arguments.
fn flags(args: &str) -> impl Iterator<Item = &str> {
    args.split_whitespace().take_while(|w| w.starts_with("--"))
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// `text` with `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}` substituted from `vars`;
/// unresolved when a variable it needs has no value, the syntax is one Docker would not expand,
/// or it grows beyond [`MAX_REFERENCE`] bytes.
fn expand(text: &str, vars: &HashMap<String, Option<String>>) -> Result<String, Unresolved> {
    let mut out = String::new();
    expand_into(text, vars, 0, &mut out)?;
    Ok(out)
}

fn expand_into(
    text: &str,
    vars: &HashMap<String, Option<String>>,
    depth: usize,
    out: &mut String,
) -> Result<(), Unresolved> {
    if depth > MAX_NESTING {
        return Err(Unresolved::Variable);
    }
    let push = |out: &mut String, piece: &str| {
        if out.len() + piece.len() > MAX_REFERENCE {
            return Err(Unresolved::TooLong);
        }
        out.push_str(piece);
        Ok(())
    };
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        push(out, &rest[..at])?;
        let after = &rest[at + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let end = closing_brace(braced).ok_or(Unresolved::Variable)?;
            let inner = &braced[..end];
            let name_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, modifier) = inner.split_at(name_len);
            let current = vars
                .get(name)
                .and_then(Option::as_deref)
                .filter(|v| !v.is_empty());
            match (modifier, current) {
                ("", Some(v)) => push(out, v)?,
                ("", None) => return Err(Unresolved::Variable),
                (m, Some(v)) if m.starts_with(":-") => push(out, v)?,
                (m, None) if m.starts_with(":-") => expand_into(&m[2..], vars, depth + 1, out)?,
                (m, Some(_)) if m.starts_with(":+") => expand_into(&m[2..], vars, depth + 1, out)?,
                (m, None) if m.starts_with(":+") => {}
                _ => return Err(Unresolved::Variable),
            }
            rest = &braced[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                return Err(Unresolved::Variable);
            }
            let value = vars
                .get(&after[..name_len])
                .and_then(Option::as_deref)
                .ok_or(Unresolved::Variable)?;
            push(out, value)?;
            rest = &after[name_len..];
        }
    }
    push(out, rest)
}

/// The byte offset of the `}` closing a `${`, whose text after the brace is `text`.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Vec<(usize, Result<String, Unresolved>)> {
        images(text, &BTreeMap::new(), None)
            .into_iter()
            .map(|f| (f.line, f.resolved))
            .collect()
    }

    fn image(line: usize, reference: &str) -> (usize, Result<String, Unresolved>) {
        (line, Ok(reference.to_owned()))
    }

    #[test]
    fn the_command_of_the_target_stage_or_the_last() {
        let text = "FROM node:22 AS development\nWORKDIR /code\nCMD [\"npm\", \"start\"]\n\n\
                    FROM development AS build\nRUN npm run build\n\n\
                    FROM nginx:1.27\nCOPY --from=build /code/build /usr/share/nginx/html\n\
                    ENTRYPOINT [\"nginx\", \"-g\", \"daemon off;\"]\n";
        assert_eq!(
            run_command(text, Some("development")).as_deref(),
            Some("npm start")
        );
        // Inherited from the stage it is built from.
        assert_eq!(
            run_command(text, Some("BUILD")).as_deref(),
            Some("npm start")
        );
        assert_eq!(
            run_command(text, None).as_deref(),
            Some("nginx -g daemon off;")
        );
        assert_eq!(run_command(text, Some("nope")), None);
        // Shell form, continuation lines; an ENTRYPOINT resets the CMD it inherits.
        let text = "FROM python:3.12 AS base\nCMD python \\\n  app.py\nFROM base\nENTRYPOINT [\"tini\", \"--\"]\n";
        assert_eq!(
            run_command(text, Some("base")).as_deref(),
            Some("python app.py")
        );
        assert_eq!(run_command(text, None).as_deref(), Some("tini --"));
        assert_eq!(run_command("FROM scratch\n", None), None);
        assert_eq!(run_command("", None), None);
    }

    #[test]
    fn stages_named_earlier_and_scratch_are_not_images() {
        let text = "\
FROM oven/bun:1 AS assets
RUN bun build
FROM python:3.12-slim-bookworm AS Build
COPY --from=assets /dist /dist
FROM build
COPY --from=BUILD /app /app
FROM scratch
COPY --from=1 /app /app
COPY --link --from=ghcr.io/astral-sh/uv:0.9.26 /uv /bin/
";
        assert_eq!(
            resolved(text),
            [
                image(1, "oven/bun:1"),
                image(3, "python:3.12-slim-bookworm"),
                image(9, "ghcr.io/astral-sh/uv:0.9.26"),
            ]
        );
    }

    #[test]
    fn a_stage_named_later_is_an_image_where_it_is_used_before() {
        let text = "FROM base\nFROM debian:bookworm AS base\n";
        assert_eq!(
            resolved(text),
            [image(1, "base"), image(2, "debian:bookworm")]
        );
    }

    #[test]
    fn platform_flags_and_lower_case_keywords() {
        let text = "from --platform=$BUILDPLATFORM node:22 as web\nFROM --platform=linux/amd64 --quiet python:3.12\n";
        assert_eq!(
            resolved(text),
            [image(1, "node:22"), image(2, "python:3.12")]
        );
    }

    #[test]
    fn global_args_are_substituted_with_the_builds_args_over_their_defaults() {
        let text = "\
ARG PY=3.12
ARG VARIANT=\"slim-bookworm\" REGISTRY
ARG UV_VERSION
FROM python:${PY}-$VARIANT
ARG PY=3.99
FROM ${REGISTRY:-docker.io}/library/redis:${TAG:-7}
FROM ghcr.io/astral-sh/uv:${UV_VERSION}
FROM node:${PY:+22}
";
        let args = BTreeMap::from([("UV_VERSION".to_owned(), "0.9.26".to_owned())]);
        let found: Vec<_> = images(text, &args, None)
            .into_iter()
            .map(|f| (f.line, f.resolved))
            .collect();
        assert_eq!(
            found,
            [
                image(4, "python:3.12-slim-bookworm"),
                image(6, "docker.io/library/redis:7"),
                image(7, "ghcr.io/astral-sh/uv:0.9.26"),
                image(8, "node:22"),
            ]
        );
    }

    #[test]
    fn an_args_default_may_name_the_args_above_it() {
        let text = "\
ARG PY=3.12
ARG VARIANT=slim
ARG BASE=python:${PY}-$VARIANT
ARG NONE
ARG BROKEN=node:${NONE}
FROM $BASE
FROM ${BROKEN}
";
        let found = |args: &[(&str, &str)]| -> Vec<_> {
            let args = args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            images(text, &args, None)
                .into_iter()
                .map(|f| (f.line, f.resolved))
                .collect()
        };
        assert_eq!(
            found(&[]),
            [image(6, "python:3.12-slim"), (7, Err(Unresolved::Variable))]
        );
        // A build arg given for an ARG above reaches the default that names it; one given for
        // the ARG itself is taken as it is.
        assert_eq!(found(&[("PY", "3.11")])[0], image(6, "python:3.11-slim"));
        assert_eq!(found(&[("BASE", "node:22")])[0], image(6, "node:22"));
        assert_eq!(found(&[("NONE", "20")])[1], image(7, "node:20"));
    }

    #[test]
    fn a_variable_without_a_value_leaves_the_reference_unresolved() {
        let text = "\
ARG TAG
FROM python:${TAG}
FROM node:$UNDECLARED
FROM redis:${TAG/x/y}
FROM ${BROKEN
FROM postgres:$
COPY --from=$TAG /a /b
";
        let found = images(text, &BTreeMap::new(), None);
        assert_eq!(found.len(), 6);
        assert!(
            found
                .iter()
                .all(|f| f.resolved == Err(Unresolved::Variable)),
            "{found:#?}"
        );
        assert_eq!(found[0].written, "python:${TAG}");
        assert_eq!(found[5].line, 7);
    }

    #[test]
    fn copy_from_and_run_mounts_name_images_and_stages() {
        let text = "\
FROM python:3.12 AS base
COPY --from=0 /a /b
COPY --chown=1000 --from=base /a /b
RUN --mount=type=cache,target=/root/.cache,from=base pip install x
RUN --mount=type=bind,from=ghcr.io/astral-sh/uv:0.9.26,source=/uv,target=/bin/uv uv sync
ADD --from=alpine:3 /x /y
COPY src/ --from=not-a-flag /dst
";
        assert_eq!(
            resolved(text),
            [
                image(1, "python:3.12"),
                image(5, "ghcr.io/astral-sh/uv:0.9.26"),
                image(6, "alpine:3"),
            ]
        );
    }

    #[test]
    fn continuations_comments_and_heredocs() {
        let text = "\
# syntax=docker/dockerfile:1
FROM \\
  # a comment inside the instruction
\x20
  python:3.12 \\
  AS app
RUN <<EOF
FROM not-an-instruction:1
EOF
RUN cat <<-'END' > /x && cat <<DONE > /y
\tFROM inside:1
\tEND
FROM inside:2
DONE
COPY --from=app /a /b
FROM node:22
";
        assert_eq!(
            resolved(text),
            [image(2, "python:3.12"), image(16, "node:22")]
        );
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n  AS win\nCOPY --from=win C:\\a C:\\b\n";
        assert_eq!(
            resolved(text),
            [image(2, "mcr.microsoft.com/windows/servercore:ltsc2022")]
        );
    }

    #[test]
    fn the_build_stops_at_its_target() {
        let text = "FROM python:3.12 AS dev\nFROM node:22 AS Prod\nCOPY --from=redis:7 / /\nFROM golang:1.25\n";
        let stages = |target| -> Vec<String> {
            images(text, &BTreeMap::new(), target)
                .into_iter()
                .filter_map(|f| f.resolved.ok())
                .collect()
        };
        assert_eq!(stages(Some("dev")), ["python:3.12"]);
        assert_eq!(stages(Some("prod")), ["python:3.12", "node:22", "redis:7"]);
        assert_eq!(stages(None).len(), 4);
        assert_eq!(stages(Some("missing")).len(), 4);
    }

    /// Found by the hostile-input properties: each `$A` copied the whole of a long `A`, so a
    /// few hundred bytes of `FROM` asked for megabytes (a 256 KiB file, for gigabytes).
    #[test]
    fn variables_cannot_grow_a_reference_beyond_any_valid_one() {
        let text = format!(
            "ARG A={}\nFROM {}\nFROM ${{B:-$A}}\n",
            "x".repeat(1000),
            "$A".repeat(500)
        );
        let found = images(&text, &BTreeMap::new(), None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].resolved, Err(Unresolved::TooLong));
        assert_eq!(found[1].resolved, Ok("x".repeat(1000)));
        let args = BTreeMap::from([("A".to_owned(), "y".repeat(600))]);
        let found = images(&text, &args, None);
        assert_eq!(found[0].resolved, Err(Unresolved::TooLong));
        assert_eq!(found[1].resolved, Ok("y".repeat(600)));
    }

    #[test]
    fn hostile_text_never_panics() {
        let mut text = String::from(
            "\u{feff}FROM ${{{{{{\nFROM $\u{0}\u{7f}ü${ü:-é}\nARG =\nARG ==x\nCOPY --from= a b\nRUN --mount=from a\nRUN <<\nRUN <<-\"\n",
        );
        text.push_str(&"FROM a \\\n".repeat(1000));
        text.push_str(&"${".repeat(10_000));
        text.push_str("\nFROM x");
        text.push_str(&"${A:-".repeat(100_000));
        text.push_str(&"}".repeat(100_000));
        text.push_str("\nFROM y:1 \\");
        let found = images(&text, &BTreeMap::new(), Some("x"));
        assert_eq!(found.last().map(|f| f.written.as_str()), Some("y:1"));
        assert!(
            found
                .iter()
                .any(|f| f.written.starts_with("x${A:-")
                    && f.resolved == Err(Unresolved::Variable))
        );
        let step = text.len() / 40;
        for cut in (0..text.len()).step_by(step) {
            if text.is_char_boundary(cut) {
                let _ = images(&text[..cut], &BTreeMap::new(), None);
            }
        }
    }
}
