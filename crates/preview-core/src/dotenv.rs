//! The `.env` file beside a repo's compose file. Compose reads it for the file's `${VAR}`s, and
//! projects rely on it (`POSTGRES_PASSWORD=changethis` for `${POSTGRES_PASSWORD:?}`), so a
//! preview reads it too, as Compose does: `KEY=VALUE` lines, an optional `export`, `#`
//! comments, single quotes (literal), double quotes (with `\n`, `\t`, `\"` and `\\`), and
//! references to keys defined above. Nothing comes from the host's environment: a value that
//! refers to anything else is left unset, with a warning.
//!
//! Its values only fill the compose file's references (the rule is at
//! [`crate::sanitize::VariableRef`]); they never reach a container by themselves.

use std::collections::BTreeMap;

use crate::sanitize::resolve_text;
use crate::{Error, Result};

/// A parsed `.env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DotEnv {
    /// Its variables, unescaped.
    pub values: BTreeMap<String, String>,
    /// Keys left unset, with why, for the plan's warnings.
    pub warnings: Vec<String>,
}

/// The longest value a key may have once resolved; a longer one is left unset, with a warning.
const MAX_VALUE: usize = 8 * 1024;

/// The most lines a quoted value may span.
const MAX_VALUE_LINES: usize = 200;

/// The most all values together may hold: a hostile file whose lines each repeat the value
/// above cannot exhaust memory.
const MAX_TOTAL: usize = 256 * 1024;

/// Parses `text`, the file `file` (relative to the checkout root, for messages). A line it
/// cannot read is left out with a warning, as a key that cannot be resolved is: only values
/// adding up to more than `MAX_TOTAL` refuse the file.
pub fn parse(file: &str, text: &str) -> Result<DotEnv> {
    let mut env = DotEnv::default();
    let mut total = 0;
    let lines: Vec<&str> = text.lines().collect();
    let mut next = 0;
    while next < lines.len() {
        let number = next + 1;
        let line = lines[next].trim();
        next += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut skip = |why: String| {
            env.warnings
                .push(format!("{file}:{number}: {why}; the line is ignored"));
        };
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, raw)) = line.split_once('=') else {
            skip(format!(
                "{line:?} has no `=`: a key without a value would come from the host's environment, which is never read"
            ));
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            skip(format!(
                "{key:?} is not a variable name (letters, digits, `_`, `.` and `-`, not starting with a digit)"
            ));
            continue;
        }
        // A quoted value may go on over the lines below, as Compose reads it.
        let mut raw = raw.trim_start().to_owned();
        let mut read = value(&raw);
        while matches!(read, Err(ValueError::Unclosed(_)))
            && next < lines.len()
            && next - number < MAX_VALUE_LINES
        {
            raw.push('\n');
            raw.push_str(lines[next]);
            next += 1;
            read = value(&raw);
        }
        let (value, interpolate) = match read {
            Ok(read) => read,
            Err(ValueError::Unclosed(why) | ValueError::Invalid(why)) => {
                skip(why);
                continue;
            }
        };
        let resolved = if interpolate {
            resolve_text(&value, &env.values).map(|v| v.replace("$$", "$"))
        } else {
            Ok(value)
        }
        .and_then(|v| match v.len() {
            n if n > MAX_VALUE => Err(format!(
                "its value is {n} bytes once resolved; the limit is {MAX_VALUE}"
            )),
            _ => Ok(v),
        });
        match resolved {
            Ok(resolved) => {
                total += resolved.len();
                if total > MAX_TOTAL {
                    return Err(Error::Config {
                        file: file.to_owned(),
                        line: Some(number as u64),
                        key: None,
                        message: format!("its values add up to more than {MAX_TOTAL} bytes"),
                    });
                }
                env.values.insert(key.to_owned(), resolved);
            }
            Err(why) => {
                env.values.remove(key);
                env.warnings.push(format!(
                    "{file}:{number}: `{key}` is left unset: {why} (a value may refer only to keys above it in {file}; the host's environment is never read)"
                ));
            }
        }
    }
    Ok(env)
}

/// Why a value cannot be read.
enum ValueError {
    /// Its quote is not closed yet: the next line may close it.
    Unclosed(String),
    Invalid(String),
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A value as written after `=`, and whether its references are to be resolved (not in single
/// quotes).
fn value(raw: &str) -> std::result::Result<(String, bool), ValueError> {
    let quote = match raw.chars().next() {
        Some(q @ ('\'' | '"')) => q,
        _ => {
            // Unquoted: a ` #` starts a comment.
            let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
                Some(at) => &raw[..at],
                None => raw,
            };
            return Ok((value.trim_end().to_owned(), true));
        }
    };
    let mut out = String::new();
    let mut chars = raw[1..].chars();
    loop {
        match chars.next() {
            None => {
                return Err(ValueError::Unclosed(format!(
                    "the value's {quote} is never closed"
                )));
            }
            Some(c) if c == quote => break,
            Some('\\') if quote == '"' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(c @ ('"' | '\\' | '$')) => {
                    // An escaped `$` stays literal: written as `$$` for the resolution.
                    if c == '$' {
                        out.push('$');
                    }
                    out.push(c);
                }
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => {
                    return Err(ValueError::Unclosed(format!(
                        "the value's {quote} is never closed"
                    )));
                }
            },
            Some(c) => out.push(c),
        }
    }
    let rest = chars.as_str().trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(ValueError::Invalid(format!(
            "unexpected {rest:?} after the quoted value"
        )));
    }
    Ok((out, quote == '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> BTreeMap<String, String> {
        parse(".env", text).unwrap().values
    }

    #[test]
    fn lines_as_compose_reads_them() {
        let env = values(
            "# comment\n\nDOMAIN=localhost\nexport PROJECT_NAME=\"Full Stack FastAPI Project\"\nSECRET_KEY=changethis # inline comment\nPOSTGRES_PASSWORD=changethis\nDATABASE_URL=postgresql://postgres:${POSTGRES_PASSWORD}@db:5432/app\nLITERAL='${POSTGRES_PASSWORD} stays'\nESCAPED=\"a\\nb \\\"q\\\" \\$HOME\"\nEMPTY=\nHASH=a#b\nDEFAULTED=${UNSET:-fallback}\n",
        );
        assert_eq!(env["DOMAIN"], "localhost");
        assert_eq!(env["PROJECT_NAME"], "Full Stack FastAPI Project");
        assert_eq!(env["SECRET_KEY"], "changethis");
        assert_eq!(
            env["DATABASE_URL"],
            "postgresql://postgres:changethis@db:5432/app"
        );
        assert_eq!(env["LITERAL"], "${POSTGRES_PASSWORD} stays");
        assert_eq!(env["ESCAPED"], "a\nb \"q\" $HOME");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["HASH"], "a#b");
        assert_eq!(env["DEFAULTED"], "fallback");
    }

    #[test]
    fn the_hosts_environment_is_never_read() {
        let env = parse(".env", "A=1\nLEAK=${HOME}\nB=${A}${GITHUB_TOKEN:-none}\n").unwrap();
        assert!(!env.values.contains_key("LEAK"), "{env:?}");
        assert_eq!(env.values["B"], "1none");
        assert_eq!(env.warnings.len(), 1, "{env:?}");
        assert!(
            env.warnings[0].starts_with(".env:2: `LEAK` is left unset: `HOME` is not set"),
            "{env:?}"
        );
    }

    #[test]
    fn hostile_files_cannot_exhaust_memory_or_the_stack() {
        // Each line doubles the value above.
        let mut text = "A0=xxxxxxxxxxxxxxxx\n".to_owned();
        for i in 1..40 {
            text.push_str(&format!("A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
        }
        let env = parse(".env", &text).unwrap();
        assert!(env.values.values().all(|v| v.len() <= MAX_VALUE));
        assert!(
            env.warnings.iter().any(|w| w.contains("the limit is 8192")),
            "{env:?}"
        );
        // Many lines each holding the longest value.
        let mut text = format!("A={}\n", "x".repeat(MAX_VALUE));
        for i in 0..40 {
            text.push_str(&format!("B{i}=${{A}}\n"));
        }
        let err = parse(".env", &text).unwrap_err().to_string();
        assert!(err.contains("add up to more than"), "{err}");
        // Deep nesting is refused, not a stack overflow.
        let deep = format!("A={}x{}\n", "${B:-".repeat(5000), "}".repeat(5000));
        let env = parse(".env", &deep).unwrap();
        assert!(env.warnings[0].contains("nested more than"), "{env:?}");
    }

    #[test]
    fn lines_it_cannot_read_are_left_out_with_a_warning() {
        let env = parse(
            ".env",
            "A=1\nnot a pair\n1A=x\nB='x' y\nBARE\nC=${\nKEY=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\"\nD=2\nOPEN=\"never closed\n",
        )
        .unwrap();
        assert_eq!(env.values["A"], "1");
        assert_eq!(env.values["D"], "2");
        // A quoted value over several lines, as Compose reads it.
        assert_eq!(
            env.values["KEY"],
            "-----BEGIN KEY-----\nabc\n-----END KEY-----"
        );
        assert_eq!(env.values.len(), 3, "{env:?}");
        for needle in [
            ".env:2: \"not a pair\" has no `=`",
            ".env:3: \"1A\" is not a variable name",
            ".env:4: unexpected \"y\" after the quoted value",
            ".env:5: \"BARE\" has no `=`",
            ".env:6: `C` is left unset",
            ".env:11: the value's \" is never closed",
        ] {
            assert!(
                env.warnings.iter().any(|w| w.starts_with(needle)),
                "{needle}: {:?}",
                env.warnings
            );
        }
    }
}
