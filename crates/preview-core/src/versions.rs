//! Which runtime image an app gets: the newest supported version that satisfies what the app
//! declares (`engines.node`, `.python-version`, `go.mod`, `require.php`, ...), else the nearest,
//! with a warning. The supported versions live in runtime-versions.tsv.

use crate::images;
use crate::model::Language;

const TABLE: &str = include_str!("../runtime-versions.tsv");

/// The image chosen for an app, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The image reference, e.g. `node:22-bookworm-slim`.
    pub image: String,
    /// Why this image, for the plan's reasons.
    pub reason: String,
    /// Set when the declared version is not supported and the nearest one is used instead.
    pub warning: Option<String>,
}

/// The supported versions of `language`, oldest first, with its image pattern.
fn row(language: Language) -> (Vec<&'static str>, &'static str) {
    TABLE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut cols = l.split('\t');
            (cols.next()? == language.as_str()).then(|| {
                let versions = cols.next().unwrap_or_default().split(' ').collect();
                (versions, cols.next().unwrap_or_default())
            })
        })
        .unwrap_or_else(|| panic!("no row for {language} in runtime-versions.tsv"))
}

/// Every image of every supported version, for the test bed and tests.
pub fn all_images() -> Vec<(Language, String)> {
    Language::ALL
        .into_iter()
        .flat_map(|language| {
            let (versions, pattern) = row(language);
            versions
                .into_iter()
                .map(move |v| (language, pattern.replace("{v}", v)))
        })
        .collect()
}

/// The supported versions of `language`, oldest first.
pub fn supported(language: Language) -> Vec<&'static str> {
    row(language).0
}

/// Picks the image for `language` given what the app declares (as written, e.g. `>=18 <21`,
/// `^8.1`, `3.11.4`, `go1.22.3`), or the default image when it declares nothing.
pub fn choose(language: Language, declared: Option<&str>) -> Choice {
    let (versions, pattern) = row(language);
    let image = |v: &str| pattern.replace("{v}", v);
    let default = images::image_for(language.image_role()).to_owned();
    let Some(declared) = declared.map(str::trim).filter(|d| !d.is_empty()) else {
        return Choice {
            reason: format!("base_image={default}, the default for {language}"),
            image: default,
            warning: None,
        };
    };
    let lines: Vec<Version> = versions.iter().map(|v| Version::parse(v)).collect();
    let precision = lines.first().map_or(1, |v| v.parts.len());
    let wanted = normalize(language, declared);
    if let Some(constraint) = Constraint::parse(&wanted) {
        if let Some(i) = (0..lines.len())
            .rev()
            .find(|&i| constraint.allows(&lines[i], precision))
        {
            return Choice {
                image: image(versions[i]),
                reason: format!(
                    "base_image={} because {language} {declared} is asked for (the newest supported version that satisfies it)",
                    image(versions[i])
                ),
                warning: None,
            };
        }
        // Nothing supported satisfies it: the nearest to the first version it names.
        if let Some(target) = constraint.first_version() {
            let nearest = (0..lines.len())
                .min_by_key(|&i| (lines[i].distance(&target), std::cmp::Reverse(i)))
                .expect("every language has a supported version");
            let chosen = image(versions[nearest]);
            return Choice {
                reason: format!(
                    "base_image={chosen}, the nearest supported version to {language} {declared}"
                ),
                warning: Some(format!(
                    "{language} {declared} is asked for, but the supported versions are {}; {chosen} is used and the build may fail",
                    versions.join(", ")
                )),
                image: chosen,
            };
        }
    }
    Choice {
        warning: Some(format!(
            "{language} version {declared:?} is not understood; the default {default} is used"
        )),
        reason: format!("base_image={default}, the default for {language}"),
        image: default,
    }
}

/// Maps aliases and prefixes to plain constraints: `lts/iron` → `20`, `go1.22` → `1.22`,
/// `python-3.11` → `3.11`, `stable` → `*`.
fn normalize(language: Language, declared: &str) -> String {
    let d = declared.trim().trim_matches('"');
    let lower = d.to_ascii_lowercase();
    match (language, lower.as_str()) {
        (Language::Node, "lts/*" | "lts" | "node" | "latest" | "current" | "stable")
        | (Language::Rust, "stable" | "beta" | "nightly")
        | (_, "*" | "latest") => "*".to_owned(),
        (Language::Node, "lts/hydrogen") => "18".to_owned(),
        (Language::Node, "lts/iron") => "20".to_owned(),
        (Language::Node, "lts/jod") => "22".to_owned(),
        (Language::Node, "lts/krypton") => "24".to_owned(),
        _ => {
            let d = lower
                .strip_prefix("python-")
                .or_else(|| lower.strip_prefix("go"))
                .unwrap_or(&lower);
            // A rust channel with a date or a host (`1.75.0-x86_64-unknown-linux-gnu`).
            let d = if language == Language::Rust {
                d.split('-').next().unwrap_or(d)
            } else {
                d
            };
            d.to_owned()
        }
    }
}

/// A version with up to three numeric parts; a missing or wildcard part is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    parts: Vec<u64>,
}

impl Version {
    fn parse(text: &str) -> Self {
        let parts = text
            .trim()
            .trim_start_matches(['v', 'V'])
            .split('.')
            .take(3)
            .map_while(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        Self { parts }
    }

    fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    /// How far apart two versions are, comparing the major first.
    fn distance(&self, other: &Version) -> (u64, u64) {
        (
            self.part(0).abs_diff(other.part(0)),
            self.part(1).abs_diff(other.part(1)),
        )
    }

    /// This version cut to `n` parts, padded with zeros.
    fn cut(&self, n: usize) -> Vec<u64> {
        (0..n).map(|i| self.part(i)).collect()
    }

    /// True when parts beyond the first `n` are present and not all zero.
    fn finer_than(&self, n: usize) -> bool {
        self.parts.iter().skip(n).any(|p| *p != 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
    Caret,
    Tilde,
    Ne,
    Any,
}

/// Alternatives (`||`, `|`) of all-of lists (`,` or spaces) of comparisons.
struct Constraint {
    any_of: Vec<Vec<(Op, Version)>>,
}

impl Constraint {
    fn parse(text: &str) -> Option<Self> {
        let mut any_of = Vec::new();
        for alternative in text.split("||").flat_map(|a| a.split('|')) {
            let mut all_of = Vec::new();
            // `>= 18` is one comparison: glue operators to the number after them.
            let mut pending = String::new();
            for word in alternative.split([',', ' ']).filter(|w| !w.is_empty()) {
                pending.push_str(word);
                if word.chars().all(|c| "<>=!~^".contains(c)) {
                    continue;
                }
                all_of.push(comparison(&pending)?);
                pending.clear();
            }
            if !all_of.is_empty() {
                any_of.push(all_of);
            }
        }
        (!any_of.is_empty()).then_some(Self { any_of })
    }

    /// True when the supported line `line` (a version of `precision` parts standing for its
    /// newest release) holds a release that satisfies the constraint.
    fn allows(&self, line: &Version, precision: usize) -> bool {
        self.any_of.iter().any(|all| {
            all.iter()
                .all(|(op, bound)| allows(*op, bound, line, precision))
        })
    }

    fn first_version(&self) -> Option<Version> {
        self.any_of
            .iter()
            .flatten()
            .map(|(_, v)| v.clone())
            .find(|v| !v.parts.is_empty())
    }
}

fn comparison(word: &str) -> Option<(Op, Version)> {
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("~=", Op::Tilde),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("^", Op::Caret),
        ("~", Op::Tilde),
    ]
    .into_iter()
    .find_map(|(prefix, op)| word.strip_prefix(prefix).map(|rest| (op, rest)))
    .unwrap_or((Op::Eq, word));
    let rest = rest.trim();
    if matches!(rest, "*" | "x" | "X") {
        return Some((Op::Any, Version { parts: Vec::new() }));
    }
    let version = Version::parse(rest);
    if version.parts.is_empty() {
        return None;
    }
    Some((op, version))
}

/// One comparison against a supported line, at the line's precision: `>=18.17` allows line 18,
/// `<3.12.4` allows line 3.12, `^8.1` allows 8.1 to 8.x, `3.11.*` allows 3.11 only.
fn allows(op: Op, bound: &Version, line: &Version, precision: usize) -> bool {
    let l = line.cut(precision);
    let b = bound.cut(precision);
    // The bound's own parts, for prefix matches: `3` matches every 3.x line.
    let given = bound.parts.len().min(precision);
    match op {
        Op::Any | Op::Ne => true,
        Op::Eq => l[..given] == b[..given],
        Op::Ge => l >= b,
        Op::Gt if bound.parts.len() > precision => l >= b,
        Op::Gt => l > b,
        Op::Le => l <= b,
        Op::Lt if bound.finer_than(precision) => l <= b,
        Op::Lt => l < b,
        // Same major (for 0.x, the same minor), and not older than the bound.
        Op::Caret => {
            let same = if bound.part(0) == 0 && precision > 1 {
                l[..2] == b[..2]
            } else {
                l[0] == b[0]
            };
            same && l >= b
        }
        // `~1.2` and `~=1.2`: at least the bound, below the next major.
        Op::Tilde => l[0] == b[0] && l >= b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(language: Language, declared: &str) -> String {
        choose(language, Some(declared)).image
    }

    #[test]
    fn node_ranges_pick_the_newest_supported_major() {
        assert_eq!(image(Language::Node, ">=18"), "node:24-bookworm-slim");
        assert_eq!(image(Language::Node, "18.x"), "node:18-bookworm-slim");
        assert_eq!(image(Language::Node, "^20.11.1"), "node:20-bookworm-slim");
        assert_eq!(image(Language::Node, ">=18 <21"), "node:20-bookworm-slim");
        assert_eq!(image(Language::Node, ">= 18.17.0"), "node:24-bookworm-slim");
        assert_eq!(
            image(Language::Node, "20.x || 22.x"),
            "node:22-bookworm-slim"
        );
        assert_eq!(image(Language::Node, "v22.3.0"), "node:22-bookworm-slim");
        assert_eq!(image(Language::Node, "lts/iron"), "node:20-bookworm-slim");
        assert_eq!(image(Language::Node, "lts/*"), "node:24-bookworm-slim");
        assert_eq!(image(Language::Node, "~18.17"), "node:18-bookworm-slim");
        assert_eq!(image(Language::Node, "<21"), "node:20-bookworm-slim");
        assert_eq!(image(Language::Node, ">20"), "node:24-bookworm-slim");
    }

    #[test]
    fn unsupported_versions_take_the_nearest_and_warn() {
        let old = choose(Language::Node, Some("14.x"));
        assert_eq!(old.image, "node:18-bookworm-slim");
        assert!(old.warning.unwrap().contains("18, 20, 22, 24"));
        let new = choose(Language::Python, Some("3.15"));
        assert_eq!(new.image, "python:3.14-slim-bookworm");
        assert!(new.warning.is_some());
        let go = choose(Language::Go, Some("1.19"));
        assert_eq!(go.image, "golang:1.21-bookworm");
        assert!(go.warning.is_some());
        let junk = choose(Language::Node, Some("banana"));
        assert_eq!(junk.image, images::image_for("node"));
        assert!(junk.warning.unwrap().contains("not understood"));
    }

    #[test]
    fn python_php_go_and_rust_declarations() {
        assert_eq!(
            image(Language::Python, "3.11.4"),
            "python:3.11-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, "python-3.10.12"),
            "python:3.10-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, ">=3.9"),
            "python:3.14-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, ">=3.10,<3.13"),
            "python:3.12-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, "^3.10"),
            "python:3.14-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, "~=3.10"),
            "python:3.14-slim-bookworm"
        );
        assert_eq!(
            image(Language::Python, "==3.11.*"),
            "python:3.11-slim-bookworm"
        );
        assert_eq!(image(Language::Python, "3"), "python:3.14-slim-bookworm");
        assert_eq!(
            image(Language::Python, "<3.12.4"),
            "python:3.12-slim-bookworm"
        );
        assert_eq!(image(Language::Php, "^8.1"), "php:8.4-cli-bookworm");
        assert_eq!(image(Language::Php, "^7.4|^8.0"), "php:8.4-cli-bookworm");
        assert_eq!(image(Language::Php, ">=8.1 <8.4"), "php:8.3-cli-bookworm");
        assert_eq!(image(Language::Php, "8.2.*"), "php:8.2-cli-bookworm");
        assert_eq!(image(Language::Go, "1.22"), "golang:1.22-bookworm");
        assert_eq!(image(Language::Go, "1.23.4"), "golang:1.23-bookworm");
        assert_eq!(image(Language::Go, "go1.24.1"), "golang:1.24-bookworm");
        assert_eq!(image(Language::Rust, "stable"), "rust:1.83-slim-bookworm");
        assert_eq!(image(Language::Rust, "1.83.0"), "rust:1.83-slim-bookworm");
        let newer = choose(Language::Rust, Some("1.85"));
        assert_eq!(newer.image, "rust:1.83-slim-bookworm");
        assert!(newer.warning.is_some());
    }

    #[test]
    fn no_declaration_takes_the_default_and_every_default_is_supported() {
        for language in Language::ALL {
            let choice = choose(language, None);
            assert_eq!(choice.image, images::image_for(language.image_role()));
            assert!(choice.warning.is_none());
            assert!(
                all_images().contains(&(language, choice.image.clone())),
                "{language}: the default {} is not in runtime-versions.tsv",
                choice.image
            );
        }
    }
}
