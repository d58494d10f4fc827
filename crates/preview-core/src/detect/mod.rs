//! Framework detection: one [`Detector`] per language family, each reading only the few files its
//! ecosystem uses (manifests, lockfiles, version files, an entry file or two), never the whole tree.

use std::path::{Path, PathBuf};

use crate::checkout::{Checkout, EntryKind, MANIFEST_LIMIT, SOURCE_LIMIT};
use crate::model::{Database, ExtraService, Framework, Language, PackageManager, Recipe};
use crate::{Error, Result};

pub mod go;
pub mod node;
pub mod php;
pub mod python;
pub mod rust;

/// How good a candidate is: a recognised framework beats a plain app, which beats a manifest that
/// only holds tooling (a root package.json with prettier, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strength {
    /// A manifest without anything to run.
    Tooling,
    /// An app we can start, without a framework we know.
    Plain,
    /// An app of a framework we know.
    Framework,
}

/// What one detector found in one directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub language: Language,
    pub framework: Option<Framework>,
    pub strength: Strength,
    /// The file that identified the language, e.g. `package.json`.
    pub evidence: String,
    pub language_version: Option<String>,
    pub package_manager: Option<PackageManager>,
    pub build_commands: Vec<String>,
    pub start_argv: Vec<String>,
    pub startup_commands: Vec<String>,
    pub port: u16,
    pub port_env: Option<String>,
    pub database: Option<Database>,
    pub extra_services: Vec<ExtraService>,
    /// The build context relative to the checkout root, when it lies above the app dir.
    pub context_dir: Option<String>,
    pub recipe: Recipe,
    pub reasons: Vec<String>,
    /// Warnings about the app itself, whoever builds its image.
    pub warnings: Vec<String>,
    /// Warnings about the image preview-deployer generates (its install, build and start
    /// command): moot, and not shown, when the repo builds its own image.
    pub build_warnings: Vec<String>,
}

/// The directory a detector looks at, inside a checkout.
pub struct Ctx<'a> {
    pub checkout: &'a Checkout,
    /// Relative to the checkout root; `.` is the root.
    pub dir: String,
    /// The framework preview-config.yml names, if any; detectors honour it.
    pub forced: Option<Framework>,
    /// True when preview-config.yml's `app_path` chose this dir: detectors may then look upward
    /// for the module or workspace it belongs to.
    pub explicit: bool,
    /// The directory's entries, read once: most probes are for its direct children, and one
    /// `readdir` is far cheaper than a `stat` per marker file per detector.
    listing: std::sync::OnceLock<std::collections::HashMap<String, EntryKind>>,
}

impl<'a> Ctx<'a> {
    /// A context for `dir` (relative to the checkout root).
    pub fn new(
        checkout: &'a Checkout,
        dir: &str,
        forced: Option<Framework>,
        explicit: bool,
    ) -> Self {
        Self {
            checkout,
            dir: dir.to_owned(),
            forced,
            explicit,
            listing: std::sync::OnceLock::new(),
        }
    }

    /// The kind of `name` when it is a direct child, from the cached listing.
    fn child_kind(&self, name: &str) -> Option<Option<EntryKind>> {
        if let Some((first, _)) = name.split_once('/') {
            // Deeper paths are resolved by the checkout, unless their first directory is missing.
            return match self.child_kind(first) {
                Some(None) => Some(None),
                _ => None,
            };
        }
        let listing = self.listing.get_or_init(|| {
            self.checkout
                .list_dir(&self.rel("."))
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name, e.kind))
                .collect()
        });
        Some(listing.get(name).copied())
    }

    /// `name` relative to the checkout root.
    pub fn rel(&self, name: &str) -> PathBuf {
        join(&self.dir, name)
    }

    /// `name` relative to the checkout root, as text for messages.
    pub fn show(&self, name: &str) -> String {
        self.rel(name).display().to_string()
    }

    /// True if `name` is a regular file inside the checkout.
    pub fn is_file(&self, name: &str) -> bool {
        match self.child_kind(name) {
            Some(kind) => kind == Some(EntryKind::File),
            None => self.checkout.is_file(self.rel(name)),
        }
    }

    /// True if `name` is a directory inside the checkout.
    pub fn is_dir(&self, name: &str) -> bool {
        match self.child_kind(name) {
            Some(kind) => kind == Some(EntryKind::Dir),
            None => self.checkout.is_dir(self.rel(name)),
        }
    }

    /// Reads a manifest; an unsafe or oversized one is an error naming it.
    pub fn read_manifest(&self, name: &str) -> Result<Option<String>> {
        if self.child_kind(name) == Some(None) {
            return Ok(None);
        }
        self.checkout.read_text(&self.rel(name), MANIFEST_LIMIT)
    }

    /// Peeks into a source file; anything unreadable is `None`.
    pub fn peek_source(&self, name: &str) -> Option<String> {
        if self.child_kind(name) == Some(None) {
            return None;
        }
        self.checkout.peek_text(&self.rel(name), SOURCE_LIMIT)
    }

    /// Names of the regular files directly in `sub` (relative to the app dir).
    pub fn files_in(&self, sub: &str) -> Vec<String> {
        self.entries_in(sub, EntryKind::File)
    }

    /// Names of the directories directly in `sub` (relative to the app dir).
    pub fn dirs_in(&self, sub: &str) -> Vec<String> {
        self.entries_in(sub, EntryKind::Dir)
    }

    fn entries_in(&self, sub: &str, kind: EntryKind) -> Vec<String> {
        self.checkout
            .list_dir(&self.rel(sub))
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name)
            .collect()
    }
}

/// Joins repo-relative paths, treating `.` as the root.
pub fn join(dir: &str, name: &str) -> PathBuf {
    if dir == "." || dir.is_empty() {
        PathBuf::from(name)
    } else {
        Path::new(dir).join(name)
    }
}

/// Joins repo-relative paths as text with `/`.
pub fn join_str(dir: &str, name: &str) -> String {
    if dir == "." || dir.is_empty() {
        name.to_owned()
    } else if name == "." {
        dir.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// One language family.
pub trait Detector: Sync {
    /// The language it detects.
    fn language(&self) -> Language;
    /// The files whose presence means this language, for messages.
    fn markers(&self) -> &'static [&'static str];
    /// Looks at `ctx.dir`; `Ok(None)` when nothing of this language is there.
    fn detect(&self, ctx: &Ctx) -> Result<Option<Detection>>;
}

/// Every detector, in tie-break order.
pub fn detectors() -> [&'static dyn Detector; 5] {
    [
        &node::NodeDetector,
        &python::PythonDetector,
        &go::GoDetector,
        &php::PhpDetector,
        &rust::RustDetector,
    ]
}

/// The detector of `language`.
pub fn detector_for(language: Language) -> &'static dyn Detector {
    detectors()
        .into_iter()
        .find(|d| d.language() == language)
        .expect("one detector per language")
}

/// Runs every detector on `dir` (or only the forced language's) and returns what each found, the
/// best first: strongest, then in [`Language::ALL`] order.
pub fn detect_all(
    checkout: &Checkout,
    dir: &str,
    explicit: bool,
    forced_language: Option<Language>,
    forced: Option<Framework>,
) -> Result<Vec<Detection>> {
    let ctx = Ctx::new(checkout, dir, forced, explicit);
    let mut found = Vec::new();
    for detector in detectors() {
        if forced_language.is_some_and(|l| l != detector.language()) {
            continue;
        }
        if let Some(detection) = detector.detect(&ctx)? {
            found.push(detection);
        }
    }
    // Stable sort keeps the detectors' tie-break order among equals.
    found.sort_by_key(|d| std::cmp::Reverse(d.strength));
    Ok(found)
}

/// Files that mean a language we do not build, with its name.
const UNSUPPORTED: [(&str, &str); 16] = [
    ("Gemfile", "ruby"),
    ("config.ru", "ruby"),
    ("mix.exs", "elixir"),
    ("rebar.config", "erlang"),
    ("pom.xml", "java"),
    ("build.gradle", "java"),
    ("build.gradle.kts", "kotlin"),
    ("build.sbt", "scala"),
    ("deno.json", "deno"),
    ("deno.jsonc", "deno"),
    ("Package.swift", "swift"),
    ("pubspec.yaml", "dart"),
    ("stack.yaml", "haskell"),
    ("cpanfile", "perl"),
    ("CMakeLists.txt", "c/c++"),
    ("project.clj", "clojure"),
];

/// The unsupported language `dir` is written in, if its files say so.
pub fn unsupported_language(checkout: &Checkout, dir: &str) -> Option<Error> {
    for (file, language) in UNSUPPORTED {
        if checkout.is_file(join(dir, file)) {
            return Some(Error::Unsupported {
                language: language.to_owned(),
                found: join_str(dir, file),
            });
        }
    }
    let entries = checkout.list_dir(&join(dir, ".")).ok()?;
    for entry in entries {
        let name = entry.name.as_str();
        let language = if name.ends_with(".csproj") || name.ends_with(".sln") {
            "dotnet (c#)"
        } else if name.ends_with(".fsproj") {
            "dotnet (f#)"
        } else if name.ends_with(".cabal") {
            "haskell"
        } else if name.ends_with(".gemspec") {
            "ruby"
        } else {
            continue;
        };
        return Some(Error::Unsupported {
            language: language.to_owned(),
            found: join_str(dir, name),
        });
    }
    None
}

/// Normalises a package name for comparisons: lowercase, `_` and `.` as `-`.
pub fn normalize_package(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The process types of a Procfile that a preview uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procfile {
    /// `web:`, the command that serves HTTP on `$PORT`.
    pub web: Option<String>,
    /// `release:`, run before each release starts (migrations).
    pub release: Option<String>,
}

/// Parses a Procfile (`name: command` lines; `#` comments), as Heroku, nixpacks and railpack do.
pub fn parse_procfile(text: &str) -> Procfile {
    let mut procfile = Procfile::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            continue;
        };
        let command = command.trim();
        if command.is_empty() {
            continue;
        }
        match name.trim() {
            "web" => procfile.web.get_or_insert_with(|| command.to_owned()),
            "release" => procfile.release.get_or_insert_with(|| command.to_owned()),
            _ => continue,
        };
    }
    procfile
}

/// The first version asdf's `.tool-versions` lists for any of `names` (`nodejs 20.11.0 18.19.0`).
pub fn tool_versions_entry(text: &str, names: &[&str]) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let tool = words.next()?;
            names.contains(&tool).then(|| words.next()).flatten()
        })
        .map(str::to_owned)
}

/// The version mise's `[tools]` table pins for any of `names`: `node = "20"`, `node = ["20"]` or
/// `node = { version = "20" }`.
pub fn mise_tools_entry(text: &str, names: &[&str]) -> Option<String> {
    let table: toml::Table = text.parse().ok()?;
    let tools = table.get("tools")?.as_table()?;
    let value = names.iter().find_map(|n| tools.get(*n))?;
    let version = match value {
        toml::Value::String(s) => Some(s.as_str()),
        toml::Value::Array(a) => a.first().and_then(|v| v.as_str()),
        toml::Value::Table(t) => t.get("version").and_then(|v| v.as_str()),
        _ => None,
    }?;
    Some(version.to_owned())
}

/// Splits a simple command line on whitespace when it holds no shell syntax; otherwise runs it
/// through `sh -c` (inside the container, never on the host), with `exec` so the app is the
/// child the init forwards signals to.
pub fn command_argv(command: &str) -> Vec<String> {
    let simple = command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " -_./:=@%+,".contains(c));
    if simple {
        command.split_whitespace().map(str::to_owned).collect()
    } else {
        vec!["sh".to_owned(), "-c".to_owned(), format!("exec {command}")]
    }
}

/// Joins an argv for display, quoting words that need it.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first integer literal passed to a `.listen(` / `port=` style call in `source`, if the
/// source does not read the port from the environment: a hard-coded port we should publish.
pub fn hard_coded_port(source: &str, env_markers: &[&str]) -> Option<u16> {
    if env_markers.iter().any(|m| source.contains(m)) {
        return None;
    }
    for marker in [
        "listen(",
        "port=",
        "port =",
        "port: ",
        "\"0.0.0.0\", ",
        "'0.0.0.0', ",
    ] {
        for (index, _) in source.match_indices(marker) {
            let rest = &source[index + marker.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(port) = digits.parse::<u16>()
                && port >= 80
            {
                return Some(port);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_simple_commands_only() {
        assert_eq!(command_argv("node dist/main.js"), ["node", "dist/main.js"]);
        assert_eq!(
            command_argv("npm run migrate && node x"),
            ["sh", "-c", "exec npm run migrate && node x"]
        );
        assert_eq!(
            display_argv(&["sh".into(), "-c".into(), "a b".into()]),
            "sh -c 'a b'"
        );
    }

    #[test]
    fn tool_version_files() {
        let asdf = "# tools\nruby 3.3.0\nnodejs 20.11.0 18.19.0\npython 3.11.4\n";
        assert_eq!(
            tool_versions_entry(asdf, &["nodejs", "node"]).as_deref(),
            Some("20.11.0")
        );
        assert_eq!(tool_versions_entry(asdf, &["golang"]), None);
        let mise =
            "[tools]\nnode = \"22\"\npython = [\"3.12\", \"3.11\"]\ngo = { version = \"1.23\" }\n";
        assert_eq!(mise_tools_entry(mise, &["node"]).as_deref(), Some("22"));
        assert_eq!(mise_tools_entry(mise, &["python"]).as_deref(), Some("3.12"));
        assert_eq!(
            mise_tools_entry(mise, &["golang", "go"]).as_deref(),
            Some("1.23")
        );
        assert_eq!(mise_tools_entry("not toml [", &["node"]), None);
    }

    #[test]
    fn procfiles() {
        let p = parse_procfile(
            "# comment\nrelease: python manage.py migrate\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\nworker: celery -A x\nweb: second\n",
        );
        assert_eq!(
            p.web.as_deref(),
            Some("gunicorn app:app --bind 0.0.0.0:$PORT")
        );
        assert_eq!(p.release.as_deref(), Some("python manage.py migrate"));
        assert_eq!(parse_procfile("worker: x\nweb:\n"), Procfile::default());
        // $PORT needs a shell inside the container; the command never runs on the host.
        assert_eq!(
            command_argv("gunicorn app:app --bind 0.0.0.0:$PORT"),
            ["sh", "-c", "exec gunicorn app:app --bind 0.0.0.0:$PORT"]
        );
    }

    #[test]
    fn finds_hard_coded_ports() {
        assert_eq!(
            hard_coded_port("app.listen(4000)", &["process.env.PORT"]),
            Some(4000)
        );
        assert_eq!(
            hard_coded_port(
                "app.listen(process.env.PORT || 4000)",
                &["process.env.PORT"]
            ),
            None
        );
        assert_eq!(hard_coded_port("x = 1", &[]), None);
    }
}
