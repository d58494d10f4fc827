//! `preview-config.yml`: the repo's own settings. Every key is optional; a key given overrides
//! detection. The schema is strict: an unknown key, a wrong type or an invalid value is an error
//! that names the key and its line. Alias bombs and oversized files are refused by the parser's
//! budget before any value is built.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

use crate::checkout::{CONFIG_LIMIT, normalize_relative};
use crate::model::{Database, ExtraService, Framework, Language};
use crate::{Error, Result};

/// The file names looked for at the repo root, in this order.
pub const FILE_NAMES: [&str; 2] = ["preview-config.yml", "preview-config.yaml"];

/// Every key the file may hold.
pub const KEYS: [&str; 16] = [
    "framework",
    "database",
    "health_check_path",
    "app_port",
    "app_port_env",
    "app_entrypoint",
    "build_commands",
    "startup_commands",
    "env",
    "env_file",
    "extra_services",
    "dockerfile",
    "app_path",
    "compose",
    "web_service",
    "hostname_service",
];

/// What the `compose` key says about the repo's compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeChoice {
    /// This file (a normalised repo-relative path) instead of the ones looked for.
    File(String),
    /// `compose: none`: no compose file is used, even if one exists.
    Off,
}

/// A value with the line it was given on, for later errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: u64,
}

/// What the `framework` key picks: a framework, or a plain app of a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkChoice {
    Framework(Framework),
    Plain(Language),
}

impl FrameworkChoice {
    /// The language either way.
    pub fn language(self) -> Language {
        match self {
            FrameworkChoice::Framework(f) => f.language(),
            FrameworkChoice::Plain(l) => l,
        }
    }

    /// The framework, if one was named.
    pub fn framework(self) -> Option<Framework> {
        match self {
            FrameworkChoice::Framework(f) => Some(f),
            FrameworkChoice::Plain(_) => None,
        }
    }
}

/// The validated content of `preview-config.yml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviewConfig {
    /// The file it came from (`preview-config.yml` or `.yaml`).
    pub file: String,
    pub framework: Option<Located<FrameworkChoice>>,
    /// `Some(None)` when the file says `database: none`; `None` when it names no engine (a
    /// `database` mapping with only a `seed` leaves the engine to detection).
    pub database: Option<Located<Option<Database>>>,
    /// `database.seed`: a normalised repo-relative path to an SQL file that seeds a new
    /// preview's database; whether it exists, stays inside and fits is checked by the planner.
    pub database_seed: Option<Located<String>>,
    pub health_check_path: Option<Located<String>>,
    pub app_port: Option<Located<u16>>,
    pub app_port_env: Option<Located<String>>,
    pub app_entrypoint: Option<Located<String>>,
    pub build_commands: Option<Located<Vec<String>>>,
    pub startup_commands: Option<Located<Vec<String>>>,
    /// Variables, each with the line it was given on.
    pub env: BTreeMap<String, Located<String>>,
    /// Normalised repo-relative path; whether it stays inside through symlinks is checked when read.
    pub env_file: Option<Located<String>>,
    pub extra_services: Option<Located<Vec<ExtraService>>>,
    /// Normalised repo-relative path.
    pub dockerfile: Option<Located<String>>,
    /// Normalised repo-relative path.
    pub app_path: Option<Located<String>>,
    /// `compose`: another compose file, or none; whether the file exists and stays inside
    /// through symlinks is checked by the planner.
    pub compose: Option<Located<ComposeChoice>>,
    /// `web_service`: the compose service that is the web app.
    pub web_service: Option<Located<String>>,
    /// `hostname_service`: the compose service routed at its own hostname beside the web app
    /// (as the `preview.hostname` label says; see [`crate::sanitize::HostnameService`]).
    pub hostname_service: Option<Located<String>>,
}

/// The file as written, before validation. Every field keeps its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    framework: Option<Spanned<String>>,
    database: Option<Spanned<RawDatabase>>,
    health_check_path: Option<Spanned<String>>,
    app_port: Option<Spanned<i64>>,
    app_port_env: Option<Spanned<String>>,
    app_entrypoint: Option<Spanned<String>>,
    build_commands: Option<Spanned<Vec<Spanned<String>>>>,
    startup_commands: Option<Spanned<Vec<Spanned<String>>>>,
    env: Option<Spanned<BTreeMap<String, Spanned<EnvValue>>>>,
    env_file: Option<Spanned<String>>,
    extra_services: Option<Spanned<Vec<Spanned<String>>>>,
    dockerfile: Option<Spanned<String>>,
    app_path: Option<Spanned<String>>,
    compose: Option<Spanned<String>>,
    web_service: Option<Spanned<String>>,
    hostname_service: Option<Spanned<String>>,
}

/// The `database` key as written: an engine's name (`postgres`, `none`, ...), or a mapping with
/// an optional `engine` and a `seed`.
#[derive(Debug)]
enum RawDatabase {
    Name(Option<String>),
    Settings {
        engine: Option<String>,
        seed: Option<String>,
    },
}

/// The keys of a `database` mapping.
const DATABASE_KEYS: [&str; 2] = ["engine", "seed"];

impl<'de> Deserialize<'de> for RawDatabase {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDatabase;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a database name (postgres, mysql, mongodb, none) or a mapping with `engine` and `seed`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawDatabase, E> {
                Ok(RawDatabase::Name(Some(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<RawDatabase, E> {
                Ok(RawDatabase::Name(None))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<RawDatabase, E> {
                Ok(RawDatabase::Name(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawDatabase, A::Error> {
                let (mut engine, mut seed) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "engine" if engine.is_none() => engine = Some(map.next_value::<String>()?),
                        "seed" if seed.is_none() => seed = Some(map.next_value::<String>()?),
                        "engine" | "seed" => {
                            return Err(de::Error::custom(format!("duplicate key `{key}`")));
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{other}` in the database mapping; its keys are {}",
                                DATABASE_KEYS.join(", ")
                            )));
                        }
                    }
                }
                Ok(RawDatabase::Settings { engine, seed })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An env value: any scalar, kept as the text YAML gives it (`true`, `3`, `x`); `~` is empty.
#[derive(Debug)]
struct EnvValue(String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(String::new()))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue(String::new()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parser limits: a preview config is a few dozen lines, so anything far beyond is hostile.
pub(crate) fn parser_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(CONFIG_LIMIT as usize),
            max_events: 100_000,
            max_aliases: 256,
            max_anchors: 256,
            max_depth: 24,
            max_documents: 1,
            max_nodes: 20_000,
            max_total_scalar_bytes: CONFIG_LIMIT as usize,
            max_merge_keys: 256,
            max_recorded_anchor_events: 20_000,
            max_recorded_anchor_bytes: CONFIG_LIMIT as usize,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 256,
        },
        with_snippet: false,
        // YAML 1.2 like Compose: `yes`, `on` and `y` are strings, `0755` stays as written.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    }
}

/// A YAML syntax or budget error of `file`, as a config error; budget breaches (alias bombs,
/// huge or deeply nested documents) say that they were refused.
pub(crate) fn yaml_error(file: &str, text: Option<&str>, err: &serde_saphyr::Error) -> Error {
    let (line, message) = split_parse_error(err);
    let budget = message.contains("budget") || message.contains("alias");
    let message = if budget {
        format!(
            "refused: the YAML exceeds the parser's limits on aliases, anchors, nodes or depth (an alias bomb?): {message}"
        )
    } else if message.starts_with("duplicate mapping key") {
        "duplicate key".to_owned()
    } else {
        message
    };
    let key = match (budget, text, line) {
        (false, Some(text), Some(line)) => top_level_key_at(text, line),
        _ => None,
    };
    Error::Config {
        file: file.to_owned(),
        line,
        key,
        message,
    }
}

/// Line of a parse error and its message without the parser's `line N column M:` prefix.
pub(crate) fn split_parse_error(err: &serde_saphyr::Error) -> (Option<u64>, String) {
    let line = err.location().map(|l| l.line()).filter(|l| *l > 0);
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest.to_owned(),
        _ => first.to_owned(),
    };
    (line, message)
}

/// The top-level key whose block holds `line` (1-based), found in the text: the nearest line at
/// or above it that starts in column 1 with `key:`. Good for block style, which config files use.
pub(crate) fn top_level_key_at(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let upto = usize::try_from(line).ok()?.min(lines.len());
    lines[..upto].iter().rev().find_map(|l| {
        let first = l.chars().next()?;
        if !(first.is_ascii_alphanumeric() || first == '_' || first == '"' || first == '\'') {
            return None;
        }
        let (key, _) = l.split_once(':')?;
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        (!key.is_empty()).then(|| key.to_owned())
    })
}

fn line_of<T>(s: &Spanned<T>) -> u64 {
    s.referenced.line()
}

impl PreviewConfig {
    /// Parses and validates the text of `file`. Paths are checked lexically here; whether they
    /// exist and stay inside through symlinks is checked against the checkout by the planner.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let err = |line: Option<u64>, key: Option<&str>, message: String| Error::Config {
            file: file.to_owned(),
            line,
            key: key.map(str::to_owned),
            message,
        };
        if text.len() as u64 > CONFIG_LIMIT {
            return Err(err(
                None,
                None,
                format!(
                    "the file is {} bytes; the limit is {CONFIG_LIMIT}",
                    text.len()
                ),
            ));
        }
        if text.trim().is_empty() {
            return Ok(Self {
                file: file.to_owned(),
                ..Self::default()
            });
        }
        // A first pass into an untyped tree applies the parser budget to the whole file, so an
        // alias bomb is refused as such, before any key is looked at.
        serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(text, parser_options())
            .map_err(|e| yaml_error(file, Some(text), &e))?;
        let raw: Raw =
            serde_saphyr::from_str_with_options(text, parser_options()).map_err(|e| {
                let (line, message) = split_parse_error(&e);
                if let Some(rest) = message.strip_prefix("unknown field `") {
                    let key = rest.split('`').next().unwrap_or_default();
                    return err(
                        line,
                        Some(key),
                        format!("unknown key; the known keys are {}", KEYS.join(", ")),
                    );
                }
                let key = line.and_then(|l| top_level_key_at(text, l));
                err(line, key.as_deref(), message)
            })?;

        let mut config = PreviewConfig {
            file: file.to_owned(),
            ..Self::default()
        };

        if let Some(s) = raw.framework {
            let line = line_of(&s);
            let name = s.value.trim().to_ascii_lowercase();
            let choice = Framework::ALL
                .iter()
                .find(|f| f.as_str() == name)
                .map(|f| FrameworkChoice::Framework(*f))
                .or_else(|| {
                    Language::ALL
                        .iter()
                        .find(|l| l.as_str() == name)
                        .map(|l| FrameworkChoice::Plain(*l))
                })
                .ok_or_else(|| {
                    let known: Vec<&str> = Framework::ALL
                        .iter()
                        .map(|f| f.as_str())
                        .chain(Language::ALL.iter().map(|l| l.as_str()))
                        .collect();
                    err(
                        Some(line),
                        Some("framework"),
                        format!(
                            "unknown framework {:?}; use one of {}",
                            s.value,
                            known.join(", ")
                        ),
                    )
                })?;
            config.framework = Some(Located {
                value: choice,
                line,
            });
        }

        if let Some(s) = raw.database {
            let line = line_of(&s);
            let (engine, seed) = match s.value {
                RawDatabase::Name(name) => (Some(name), None),
                RawDatabase::Settings { engine, seed } => (engine.map(Some), seed),
            };
            if let Some(name) = engine {
                let value = match name.as_deref().map(str::trim) {
                    None | Some("none") | Some("") => None,
                    Some("postgres") => Some(Database::Postgres),
                    Some("mysql") => Some(Database::Mysql),
                    Some("mongodb") => Some(Database::Mongodb),
                    Some(other) => {
                        return Err(err(
                            Some(line),
                            Some("database"),
                            format!(
                                "unknown database {other:?}; use postgres, mysql, mongodb or none"
                            ),
                        ));
                    }
                };
                config.database = Some(Located { value, line });
            }
            if let Some(seed) = seed {
                if seed.split('/').any(|part| part.trim() == "..") {
                    return Err(err(
                        Some(line),
                        Some("database"),
                        format!(
                            "seed: {seed:?} may not contain `..`; give a path inside the repository"
                        ),
                    ));
                }
                let path = normalize_relative(seed.trim()).map_err(|reason| {
                    err(
                        Some(line),
                        Some("database"),
                        format!("seed: a seed outside the repo is refused: {reason}"),
                    )
                })?;
                if path == "." {
                    return Err(err(
                        Some(line),
                        Some("database"),
                        "seed: must name an SQL file in the repository".to_owned(),
                    ));
                }
                if matches!(
                    config.database,
                    Some(Located {
                        value: None | Some(Database::Mongodb),
                        ..
                    })
                ) {
                    return Err(err(
                        Some(line),
                        Some("database"),
                        "seed: only a postgres or mysql database is seeded".to_owned(),
                    ));
                }
                config.database_seed = Some(Located { value: path, line });
            }
        }

        if let Some(s) = raw.health_check_path {
            let line = line_of(&s);
            let path = s.value;
            if !path.starts_with('/') {
                return Err(err(
                    Some(line),
                    Some("health_check_path"),
                    format!("{path:?} must start with `/`"),
                ));
            }
            if path.len() > 1024 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    Some(line),
                    Some("health_check_path"),
                    format!("{path:?} must be a URL path without spaces or control characters"),
                ));
            }
            config.health_check_path = Some(Located { value: path, line });
        }

        if let Some(s) = raw.app_port {
            let line = line_of(&s);
            let port = u16::try_from(s.value)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    err(
                        Some(line),
                        Some("app_port"),
                        format!("port {} is out of range 1-65535", s.value),
                    )
                })?;
            config.app_port = Some(Located { value: port, line });
        }

        if let Some(s) = raw.app_port_env {
            let line = line_of(&s);
            if !is_env_name(&s.value) {
                return Err(err(
                    Some(line),
                    Some("app_port_env"),
                    format!(
                        "{:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        s.value
                    ),
                ));
            }
            config.app_port_env = Some(Located {
                value: s.value,
                line,
            });
        }

        if let Some(s) = raw.app_entrypoint {
            let line = line_of(&s);
            let value = s.value.trim().to_owned();
            if value.is_empty() || value.contains('\0') {
                return Err(err(
                    Some(line),
                    Some("app_entrypoint"),
                    "must be a non-empty command".to_owned(),
                ));
            }
            config.app_entrypoint = Some(Located { value, line });
        }

        for (key, raw_list, slot) in [
            (
                "build_commands",
                raw.build_commands,
                &mut config.build_commands,
            ),
            (
                "startup_commands",
                raw.startup_commands,
                &mut config.startup_commands,
            ),
        ] {
            if let Some(list) = raw_list {
                let line = line_of(&list);
                let mut commands = Vec::new();
                for item in list.value {
                    let text = item.value.trim();
                    if text.is_empty() || text.contains('\0') {
                        return Err(err(
                            Some(line_of(&item)),
                            Some(key),
                            "a command must not be empty".to_owned(),
                        ));
                    }
                    commands.push(text.to_owned());
                }
                *slot = Some(Located {
                    value: commands,
                    line,
                });
            }
        }

        if let Some(env) = raw.env {
            for (name, value) in env.value {
                let line = line_of(&value);
                if !is_env_name(&name) {
                    return Err(err(
                        Some(line),
                        Some("env"),
                        format!(
                            "{name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                        ),
                    ));
                }
                if value.value.0.contains('\0') {
                    return Err(err(
                        Some(line),
                        Some("env"),
                        format!("the value of {name} holds a NUL byte"),
                    ));
                }
                config.env.insert(
                    name,
                    Located {
                        value: value.value.0,
                        line,
                    },
                );
            }
        }

        for (key, raw_path, slot) in [
            ("env_file", raw.env_file, &mut config.env_file),
            ("dockerfile", raw.dockerfile, &mut config.dockerfile),
            ("app_path", raw.app_path, &mut config.app_path),
        ] {
            if let Some(s) = raw_path {
                let line = line_of(&s);
                let path = normalize_relative(s.value.trim()).map_err(|reason| {
                    let outside = if key == "env_file" {
                        "an env_file outside the repo is refused: "
                    } else {
                        ""
                    };
                    err(Some(line), Some(key), format!("{outside}{reason}"))
                })?;
                if key != "app_path" && path == "." {
                    return Err(err(Some(line), Some(key), "must name a file".to_owned()));
                }
                *slot = Some(Located { value: path, line });
            }
        }

        if let Some(s) = raw.compose {
            let line = line_of(&s);
            let written = s.value.trim();
            let choice = if written.eq_ignore_ascii_case("none") {
                ComposeChoice::Off
            } else {
                if written.split('/').any(|part| part == "..") {
                    return Err(err(
                        Some(line),
                        Some("compose"),
                        format!(
                            "{written:?} holds `..`; give a path inside the repository without it"
                        ),
                    ));
                }
                let path = normalize_relative(written)
                    .map_err(|reason| err(Some(line), Some("compose"), reason))?;
                if path == "." {
                    return Err(err(
                        Some(line),
                        Some("compose"),
                        "must name a compose file in the repository, or be `none`".to_owned(),
                    ));
                }
                if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
                    return Err(err(
                        Some(line),
                        Some("compose"),
                        format!("{written:?} is not a .yml or .yaml file"),
                    ));
                }
                ComposeChoice::File(path)
            };
            config.compose = Some(Located {
                value: choice,
                line,
            });
        }
        // `web_service` and `hostname_service` name a service of the compose file.
        let service_key = |key: &str, s: &Spanned<String>| {
            let line = line_of(s);
            let name = s.value.trim();
            if !valid_service_name(name) {
                return Err(err(
                    Some(line),
                    Some(key),
                    format!("{name:?} is not a compose service name ([a-zA-Z0-9._-], at most 63)"),
                ));
            }
            if matches!(
                config.compose,
                Some(Located {
                    value: ComposeChoice::Off,
                    ..
                })
            ) {
                return Err(err(
                    Some(line),
                    Some(key),
                    "names a compose service, but compose is none".to_owned(),
                ));
            }
            Ok(Located {
                value: name.to_owned(),
                line,
            })
        };
        config.web_service = raw
            .web_service
            .map(|s| service_key("web_service", &s))
            .transpose()?;
        config.hostname_service = raw
            .hostname_service
            .map(|s| service_key("hostname_service", &s))
            .transpose()?;

        if let Some(list) = raw.extra_services {
            let line = line_of(&list);
            let mut services = Vec::new();
            for item in list.value {
                let name = item.value.trim().to_ascii_lowercase();
                let service = ExtraService::CATALOGUE
                    .iter()
                    .find(|s| s.as_str() == name)
                    .copied()
                    .ok_or_else(|| {
                        let catalogue: Vec<&str> =
                            ExtraService::CATALOGUE.iter().map(|s| s.as_str()).collect();
                        err(
                            Some(line_of(&item)),
                            Some("extra_services"),
                            format!(
                                "{:?} is not in the catalogue ({})",
                                item.value,
                                catalogue.join(", ")
                            ),
                        )
                    })?;
                if !services.contains(&service) {
                    services.push(service);
                }
            }
            services.sort();
            config.extra_services = Some(Located {
                value: services,
                line,
            });
        }

        Ok(config)
    }

    /// An error about `key` of this file, at `line`.
    pub fn error(&self, key: &str, line: u64, message: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.clone(),
            line: Some(line),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// True for a POSIX-portable environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256
}

/// Parses a dotenv file: `KEY=value` lines, `#` comments, optional `export `, optional quotes.
/// Errors name the line.
pub fn parse_env_file(text: &str, file: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::Config {
                file: file.to_owned(),
                line: Some(index as u64 + 1),
                key: None,
                message: "expected KEY=value".to_owned(),
            });
        };
        let key = key.trim();
        if !is_env_name(key) {
            return Err(Error::Config {
                file: file.to_owned(),
                line: Some(index as u64 + 1),
                key: Some(key.to_owned()),
                message: "not a valid environment variable name".to_owned(),
            });
        }
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

/// A compose service (or volume, network) name: 1 to 63 of `[a-zA-Z0-9._-]`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PreviewConfig> {
        PreviewConfig::parse(text, "preview-config.yml")
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn every_key_parses() {
        let config = parse(
            "framework: nestjs\ndatabase: postgres\nhealth_check_path: /healthz\napp_port: 4000\n\
             app_port_env: APP_PORT\napp_entrypoint: node dist/main.js\nbuild_commands:\n  - npm run build\n\
             startup_commands: [npx prisma migrate deploy]\nenv:\n  DEBUG: true\n  RETRIES: 3\n  NAME: x\n\
             env_file: .env.preview\nextra_services: [redis]\ndockerfile: docker/Dockerfile\napp_path: ./apps/api/\n",
        )
        .unwrap();
        assert_eq!(
            config.framework.unwrap().value,
            FrameworkChoice::Framework(Framework::Nestjs)
        );
        assert_eq!(config.database.unwrap().value, Some(Database::Postgres));
        assert_eq!(config.app_port.as_ref().unwrap().value, 4000);
        assert_eq!(config.app_port.unwrap().line, 4);
        assert_eq!(config.env["DEBUG"].value, "true");
        assert_eq!(config.env["RETRIES"].value, "3");
        assert_eq!(config.app_path.unwrap().value, "apps/api");
        assert_eq!(
            config.startup_commands.unwrap().value,
            ["npx prisma migrate deploy"]
        );
        assert_eq!(config.extra_services.unwrap().value, [ExtraService::Redis]);
    }

    #[test]
    fn the_compose_and_web_service_keys() {
        let config = parse("compose: ./deploy/stack.yaml\nweb_service: api\n").unwrap();
        assert_eq!(
            config.compose,
            Some(Located {
                value: ComposeChoice::File("deploy/stack.yaml".into()),
                line: 1
            })
        );
        assert_eq!(config.web_service.unwrap().value, "api");
        assert_eq!(
            parse("compose: none\n").unwrap().compose.unwrap().value,
            ComposeChoice::Off
        );
        for (text, want) in [
            (
                "compose: /etc/compose.yml\n",
                "preview-config.yml:1: key `compose`: \"/etc/compose.yml\" is absolute; give a path inside the repository",
            ),
            (
                "compose: a/../compose.yml\n",
                "preview-config.yml:1: key `compose`: \"a/../compose.yml\" holds `..`; give a path inside the repository without it",
            ),
            (
                "compose: .\n",
                "preview-config.yml:1: key `compose`: must name a compose file in the repository, or be `none`",
            ),
            (
                "compose: Dockerfile\n",
                "preview-config.yml:1: key `compose`: \"Dockerfile\" is not a .yml or .yaml file",
            ),
            (
                "compose: none\nweb_service: api\n",
                "preview-config.yml:2: key `web_service`: names a compose service, but compose is none",
            ),
            (
                "web_service: \"a b\"\n",
                "preview-config.yml:1: key `web_service`: \"a b\" is not a compose service name ([a-zA-Z0-9._-], at most 63)",
            ),
        ] {
            assert_eq!(error(text), want, "{text}");
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap().app_port, None);
        assert_eq!(parse("# nothing\n").unwrap().framework, None);
        assert_eq!(
            parse("database: none\n").unwrap().database.unwrap().value,
            None
        );
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            (
                "app_port: 3000\nfoo: 1\n",
                "preview-config.yml:2: key `foo`: unknown key",
            ),
            (
                "\n\napp_port: 70000\n",
                "preview-config.yml:3: key `app_port`: port 70000 is out of range",
            ),
            (
                "app_port: 0\n",
                "preview-config.yml:1: key `app_port`: port 0 is out of range",
            ),
            ("app_port: abc\n", "preview-config.yml:1: key `app_port`: "),
            (
                "health_check_path: health\n",
                "preview-config.yml:1: key `health_check_path`: \"health\" must start with `/`",
            ),
            (
                "health_check_path: [1]\n",
                "preview-config.yml:1: key `health_check_path`: ",
            ),
            (
                "env:\n  GOOD: 1\n  1BAD: x\n",
                "preview-config.yml:3: key `env`: \"1BAD\" is not a valid environment variable name",
            ),
            (
                "env:\n  LIST: [1, 2]\n",
                "preview-config.yml:2: key `env`: ",
            ),
            (
                "env_file: ../secrets.env\n",
                "preview-config.yml:1: key `env_file`: an env_file outside the repo is refused",
            ),
            (
                "env_file: /etc/passwd\n",
                "preview-config.yml:1: key `env_file`: an env_file outside the repo is refused",
            ),
            (
                "extra_services:\n  - redis\n  - kafka\n",
                "preview-config.yml:3: key `extra_services`: \"kafka\" is not in the catalogue (redis)",
            ),
            (
                "build_commands: npm run build\n",
                "preview-config.yml:1: key `build_commands`: ",
            ),
            (
                "framework: rails\n",
                "preview-config.yml:1: key `framework`: unknown framework \"rails\"",
            ),
            (
                "database: oracle\n",
                "preview-config.yml:1: key `database`: unknown database",
            ),
            (
                "app_port: 1\napp_port: 2\n",
                "preview-config.yml:2: key `app_port`: duplicate",
            ),
            (
                "app_port_env: 'MY-PORT'\n",
                "preview-config.yml:1: key `app_port_env`: \"MY-PORT\" is not a valid",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with(expected),
                "{text:?}\n got: {message}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn a_database_mapping_names_an_engine_and_a_seed() {
        let config = parse("database:\n  engine: postgres\n  seed: ./db/seed.sql\n").unwrap();
        assert_eq!(config.database.unwrap().value, Some(Database::Postgres));
        let seed = config.database_seed.unwrap();
        assert_eq!((seed.value.as_str(), seed.line), ("db/seed.sql", 2));
        // Without an engine, detection picks it.
        let config = parse("database: {seed: seed.sql}\n").unwrap();
        assert_eq!(config.database, None);
        assert_eq!(config.database_seed.unwrap().value, "seed.sql");
        let cases = [
            (
                "database: {engine: postgres, seed: ../outside.sql}\n",
                "preview-config.yml:1: key `database`: seed: \"../outside.sql\" may not contain `..`",
            ),
            (
                "database: {seed: db/../../x.sql}\n",
                "preview-config.yml:1: key `database`: seed: \"db/../../x.sql\" may not contain `..`",
            ),
            (
                "database: {seed: /etc/passwd}\n",
                "preview-config.yml:1: key `database`: seed: a seed outside the repo is refused: \"/etc/passwd\" is absolute",
            ),
            (
                "database: {seed: .}\n",
                "preview-config.yml:1: key `database`: seed: must name an SQL file",
            ),
            (
                "database: {engine: mongodb, seed: s.sql}\n",
                "preview-config.yml:1: key `database`: seed: only a postgres or mysql database is seeded",
            ),
            (
                "database: {engine: none, seed: s.sql}\n",
                "preview-config.yml:1: key `database`: seed: only a postgres or mysql database is seeded",
            ),
            (
                "database: {engine: oracle}\n",
                "preview-config.yml:1: key `database`: unknown database \"oracle\"",
            ),
            (
                "database:\n  engine: postgres\n  seeds: x.sql\n",
                "preview-config.yml:2: key `database`: unknown key `seeds` in the database mapping; its keys are engine, seed",
            ),
            (
                "database: [postgres]\n",
                "preview-config.yml:1: key `database`: ",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with(expected),
                "{text:?}\n got: {message}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn alias_bomb_is_refused() {
        let (mut text, last) = crate::test_support::alias_bomb(6);
        text.push_str(&format!("env: *{last}\n"));
        let message = error(&text);
        assert!(
            message.starts_with("preview-config.yml:") && message.contains("refused"),
            "{message}"
        );
    }

    #[test]
    fn oversized_file_is_refused() {
        let text = format!("# {}\n", "x".repeat(CONFIG_LIMIT as usize));
        let message = error(&text);
        assert!(message.contains("the limit is 65536"), "{message}");
    }

    #[test]
    fn finds_the_top_level_key_of_a_line() {
        let text = "app_port: 1\nenv:\n  A: 1\n  B: [x]\nextra_services:\n  - x\n";
        assert_eq!(top_level_key_at(text, 4).as_deref(), Some("env"));
        assert_eq!(top_level_key_at(text, 6).as_deref(), Some("extra_services"));
        assert_eq!(top_level_key_at(text, 1).as_deref(), Some("app_port"));
    }

    #[test]
    fn env_files_parse() {
        let env = parse_env_file("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\n", ".env").unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "x=y");
        let err = parse_env_file("A=1\nnot a pair\n", ".env")
            .unwrap_err()
            .to_string();
        assert_eq!(err, ".env:2: expected KEY=value");
    }
}
