//! The repo-owned `docker-compose.preview.yml`, sanitised. Keys are allow-listed per service; the
//! ones that would reach the host are refused with the service and key named: `privileged`, host
//! network/pid/ipc, `devices`, `cap_add`, the Docker socket, bind mounts outside the checkout and
//! host ports. Limits, labels, restart policy and published ports are the orchestrator's, so the
//! repo's are dropped with a warning. What passes is handed to the compose template.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::checkout::{Checkout, normalize_relative};
use crate::config::{parser_options, yaml_error};
use crate::{Error, Result};

/// File names looked for, in the app dir and then at the repo root.
pub const FILE_NAMES: [&str; 2] = ["docker-compose.preview.yml", "docker-compose.preview.yaml"];

/// The compose service that is the app, when the file has one by that name.
pub const APP_SERVICE: &str = "app";

/// Where the compose file lives, to resolve its relative paths.
pub struct SanitizeContext<'a> {
    /// The checkout, for symlink-safe checks of bind mounts, env files and build contexts.
    pub checkout: &'a Checkout,
    /// The file, relative to the checkout root, e.g. `docker-compose.preview.yml`.
    pub file: String,
}

impl SanitizeContext<'_> {
    fn dir(&self) -> &str {
        match self.file.rsplit_once('/') {
            Some((dir, _)) => dir,
            None => ".",
        }
    }
}

/// A repo compose file that passed the sanitiser.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SanitizedCompose {
    /// The file, relative to the checkout root.
    pub file: String,
    /// Its services, by name.
    pub services: Vec<RepoService>,
    /// The service that is the app.
    pub app_service: String,
    /// Named volumes it declares.
    pub volumes: Vec<String>,
    /// Networks it declares, with whether each is `internal`.
    pub networks: Vec<(String, bool)>,
    /// What was dropped or changed, for the plan's warnings.
    pub warnings: Vec<String>,
}

/// One service of a sanitised compose file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoService {
    pub name: String,
    pub build: Option<RepoBuild>,
    pub image: Option<String>,
    /// `None` values pass the variable through from the (clean) compose environment.
    pub environment: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<Mount>,
    /// Env files, relative to the checkout root.
    pub env_files: Vec<String>,
    /// The ports it exposes to the other services (`expose`).
    pub expose: Vec<String>,
    /// Every other allowed key, verbatim.
    pub passthrough: Map<String, Value>,
}

/// A build section; paths relative to the checkout root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoBuild {
    pub context: String,
    /// The Dockerfile, relative to the checkout root, or `None` for the context's `Dockerfile`.
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub target: Option<String>,
    pub args: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    /// Other allowed build keys, verbatim (`no_cache`, `pull`, `shm_size`, ...).
    pub passthrough: Map<String, Value>,
}

/// A volume of a service, in long syntax.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// A bind mount of a path inside the checkout (relative to the checkout root).
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    /// A named volume of the project.
    Volume {
        source: String,
        target: String,
        read_only: bool,
    },
    /// An anonymous volume.
    Anonymous { target: String },
    /// A tmpfs mount, as given.
    Tmpfs { target: String, spec: Value },
}

/// Service keys that pass verbatim.
const PASSTHROUGH: [&str; 31] = [
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "healthcheck",
    "depends_on",
    "tmpfs",
    "stop_signal",
    "read_only",
    "shm_size",
    "ulimits",
    "extra_hosts",
    "hostname",
    "domainname",
    "dns",
    "dns_search",
    "dns_opt",
    "platform",
    "pull_policy",
    "profiles",
    "stdin_open",
    "tty",
    "cap_drop",
    "group_add",
    "links",
    "networks",
    "init",
    "attach",
    "mac_address",
    "annotations",
    "post_start",
];

/// Service keys the orchestrator sets itself; the repo's values are dropped with a warning.
const OVERRIDDEN: [&str; 17] = [
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "mem_swappiness",
    "cpus",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpuset",
    "cpu_count",
    "cpu_percent",
    "pids_limit",
    "restart",
    "deploy",
    "stop_grace_period",
    "container_name",
    "scale",
];

/// Service keys refused outright, with why.
const REFUSED: [(&str, &str); 24] = [
    (
        "ports",
        "host ports are assigned by the orchestrator (use `expose` for ports other services reach)",
    ),
    ("devices", "host devices are not available to previews"),
    (
        "device_cgroup_rules",
        "host devices are not available to previews",
    ),
    ("cap_add", "previews run without added capabilities"),
    (
        "security_opt",
        "security options are set by the orchestrator (no-new-privileges)",
    ),
    ("sysctls", "kernel parameters are not settable by previews"),
    (
        "cgroup_parent",
        "previews run in the orchestrator's cgroups",
    ),
    ("cgroup", "previews run in their own cgroup namespace"),
    ("runtime", "previews use the default runtime"),
    ("isolation", "previews use the default isolation"),
    (
        "oom_kill_disable",
        "previews may be killed when out of memory",
    ),
    (
        "oom_score_adj",
        "previews may not change their OOM priority",
    ),
    ("storage_opt", "storage options are the host's"),
    (
        "external_links",
        "previews may not link to containers outside their project",
    ),
    ("gpus", "host GPUs are not available to previews"),
    ("logging", "logging is configured by the orchestrator"),
    ("credential_spec", "not supported in previews"),
    (
        "configs",
        "configs read host files or the environment; put the file in the image",
    ),
    (
        "secrets",
        "secrets read host files or the environment; use env in preview-config.yml",
    ),
    ("blkio_config", "block I/O limits are the orchestrator's"),
    ("volume_driver", "volume drivers can mount host paths"),
    ("userns_mode", "previews run in the default user namespace"),
    ("uts", "previews run in their own UTS namespace"),
    (
        "extends",
        "extending other files is not supported; inline the service",
    ),
];

/// Build keys that pass verbatim.
const BUILD_PASSTHROUGH: [&str; 6] = [
    "no_cache",
    "pull",
    "shm_size",
    "ulimits",
    "cache_from",
    "extra_hosts",
];

/// The line of `key` inside `service` in the compose text, found by indentation; for messages.
fn locate(text: &str, service: Option<&str>, key: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_line = |l: &str, k: &str| {
        let t = l.trim_start().trim_start_matches("- ");
        t.strip_prefix(k)
            .is_some_and(|r| r.trim_start().starts_with(':'))
            || t.strip_prefix(&format!("\"{k}\""))
                .is_some_and(|r| r.trim_start().starts_with(':'))
    };
    let (start, base) = match service {
        Some(s) => {
            let services = lines
                .iter()
                .position(|l| key_line(l, "services") && indent(l) == 0)?;
            let at = lines
                .iter()
                .enumerate()
                .skip(services + 1)
                .find(|(_, l)| key_line(l, s) && indent(l) > 0)?
                .0;
            (at + 1, indent(lines[at]))
        }
        None => (0, usize::MAX),
    };
    for (i, l) in lines.iter().enumerate().skip(start) {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if service.is_some() && indent(l) <= base {
            break;
        }
        if key_line(l, key) && (service.is_some() || indent(l) == 0) {
            return Some(i as u64 + 1);
        }
    }
    None
}

struct Refusals<'a> {
    text: &'a str,
    file: &'a str,
}

impl Refusals<'_> {
    fn refuse(&self, service: Option<&str>, key: &str, reason: impl Into<String>) -> Error {
        let top = key.split('.').next().unwrap_or(key);
        Error::ComposeRefused {
            file: self.file.to_owned(),
            line: locate(self.text, service, top),
            service: service.map(str::to_owned),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Parses and sanitises the compose file's text.
pub fn sanitize(text: &str, ctx: &SanitizeContext) -> Result<SanitizedCompose> {
    let r = Refusals {
        text,
        file: &ctx.file,
    };
    if text.len() as u64 > crate::checkout::CONFIG_LIMIT {
        return Err(Error::Config {
            file: ctx.file.clone(),
            line: None,
            key: None,
            message: format!(
                "the file is {} bytes; the limit is {}",
                text.len(),
                crate::checkout::CONFIG_LIMIT
            ),
        });
    }
    let root: Value = serde_saphyr::from_str_with_options(text, parser_options())
        .map_err(|e| yaml_error(&ctx.file, None, &e))?;
    let Value::Object(root) = root else {
        return Err(r.refuse(
            None,
            "services",
            "the file must be a mapping with a `services` key",
        ));
    };
    let mut warnings = Vec::new();
    let mut services_value = None;
    let mut volumes = Vec::new();
    let mut networks = Vec::new();
    for (key, value) in root {
        match key.as_str() {
            "services" => services_value = Some(value),
            "version" => {}
            "name" => warnings.push(format!(
                "{}: `name` is ignored; the project is named after the preview",
                ctx.file
            )),
            "volumes" => volumes = top_level_volumes(&r, value)?,
            "networks" => networks = top_level_networks(&r, value)?,
            k if k.starts_with("x-") => {}
            "include" => {
                return Err(r.refuse(
                    None,
                    "include",
                    "including other files is not supported; inline them",
                ));
            }
            "secrets" | "configs" => {
                return Err(r.refuse(
                    None,
                    &key,
                    "top-level secrets and configs read host files or the environment",
                ));
            }
            _ => return Err(r.refuse(None, &key, "unknown top-level key")),
        }
    }
    let Some(Value::Object(services_map)) = services_value else {
        return Err(r.refuse(
            None,
            "services",
            "the file must define `services` as a mapping",
        ));
    };
    if services_map.is_empty() {
        return Err(r.refuse(None, "services", "no services are defined"));
    }
    let mut services = Vec::new();
    for (name, value) in services_map {
        if !valid_service_name(&name) {
            return Err(r.refuse(Some(&name), "services", "service names are [a-zA-Z0-9._-]"));
        }
        let Value::Object(map) = value else {
            return Err(r.refuse(Some(&name), &name, "a service must be a mapping"));
        };
        services.push(sanitize_service(
            &r,
            ctx,
            &name,
            map,
            &volumes,
            &mut warnings,
        )?);
    }
    let app_service = if services.iter().any(|s| s.name == APP_SERVICE) {
        APP_SERVICE.to_owned()
    } else {
        let built: Vec<&RepoService> = services.iter().filter(|s| s.build.is_some()).collect();
        match built.as_slice() {
            [one] => one.name.clone(),
            _ => {
                return Err(r.refuse(
                    None,
                    "services",
                    "cannot tell which service is the app: name it `app` (or let exactly one service have `build`)",
                ));
            }
        }
    };
    Ok(SanitizedCompose {
        file: ctx.file.clone(),
        services,
        app_service,
        volumes,
        networks,
        warnings,
    })
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn top_level_volumes(r: &Refusals, value: Value) -> Result<Vec<String>> {
    let Value::Object(map) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, spec) in map {
        if !valid_service_name(&name) {
            return Err(r.refuse(
                None,
                &format!("volumes.{name}"),
                "volume names are [a-zA-Z0-9._-]",
            ));
        }
        if let Value::Object(spec) = spec {
            for key in spec.keys() {
                if key != "labels" {
                    return Err(r.refuse(
                        None,
                        &format!("volumes.{name}.{key}"),
                        "volumes are plain local volumes of the preview: drivers, driver options, names and external volumes can reach the host or other previews",
                    ));
                }
            }
        }
        out.push(name);
    }
    Ok(out)
}

fn top_level_networks(r: &Refusals, value: Value) -> Result<Vec<(String, bool)>> {
    let Value::Object(map) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, spec) in map {
        if !valid_service_name(&name) {
            return Err(r.refuse(
                None,
                &format!("networks.{name}"),
                "network names are [a-zA-Z0-9._-]",
            ));
        }
        let mut internal = false;
        if let Value::Object(spec) = spec {
            for (key, v) in spec {
                match key.as_str() {
                    "labels" => {}
                    "internal" => internal = v.as_bool().unwrap_or(false),
                    "driver" if v.as_str() == Some("bridge") => {}
                    _ => {
                        return Err(r.refuse(
                            None,
                            &format!("networks.{name}.{key}"),
                            "networks are private bridges of the preview: drivers, names, IPAM and external networks could join the host or other previews",
                        ));
                    }
                }
            }
        }
        out.push((name, internal));
    }
    Ok(out)
}

fn sanitize_service(
    r: &Refusals,
    ctx: &SanitizeContext,
    name: &str,
    map: Map<String, Value>,
    declared_volumes: &[String],
    warnings: &mut Vec<String>,
) -> Result<RepoService> {
    let svc = Some(name);
    let mut out = RepoService {
        name: name.to_owned(),
        build: None,
        image: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::new(),
        volumes: Vec::new(),
        env_files: Vec::new(),
        expose: Vec::new(),
        passthrough: Map::new(),
    };
    for (key, value) in map {
        let k = key.as_str();
        if let Some((_, reason)) = REFUSED.iter().find(|(r, _)| *r == k) {
            return Err(r.refuse(svc, k, *reason));
        }
        match k {
            "privileged" => {
                if value.as_bool() != Some(false) {
                    return Err(r.refuse(svc, k, "privileged containers control the host"));
                }
            }
            "network_mode" => {
                let mode = value.as_str().unwrap_or_default();
                if !(mode == "none" || mode.starts_with("service:")) {
                    return Err(r.refuse(
                        svc,
                        k,
                        format!("network_mode {mode:?} would leave the preview's own network (only `none` and `service:NAME` are allowed)"),
                    ));
                }
                out.passthrough.insert(key, value);
            }
            "pid" | "ipc" => {
                let mode = value.as_str().unwrap_or_default();
                if mode == "host" || mode.starts_with("container:") || (k == "ipc" && mode == "shareable") {
                    return Err(r.refuse(
                        svc,
                        k,
                        format!("{k} {mode:?} shares a namespace outside the preview"),
                    ));
                }
                out.passthrough.insert(key, value);
            }
            "volumes_from" => {
                for v in value.as_array().into_iter().flatten() {
                    let s = v.as_str().unwrap_or_default();
                    if s.starts_with("container:") {
                        return Err(r.refuse(svc, k, "volumes of containers outside the preview are not reachable"));
                    }
                }
                out.passthrough.insert(key, value);
            }
            "build" => out.build = Some(sanitize_build(r, ctx, name, value)?),
            "image" => {
                let Value::String(image) = value else {
                    return Err(r.refuse(svc, k, "must be a string"));
                };
                out.image = Some(image);
            }
            "environment" => out.environment = key_values(r, svc, k, value)?,
            "labels" => {
                out.labels = key_values(r, svc, k, value)?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect();
            }
            "env_file" => {
                let files = match value {
                    Value::String(s) => vec![s],
                    Value::Array(items) => items
                        .into_iter()
                        .map(|i| match i {
                            Value::String(s) => Ok(s),
                            Value::Object(m) => m
                                .get("path")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .ok_or_else(|| r.refuse(svc, k, "each entry needs a path")),
                            _ => Err(r.refuse(svc, k, "entries must be paths")),
                        })
                        .collect::<Result<_>>()?,
                    _ => return Err(r.refuse(svc, k, "must be a path or a list of paths")),
                };
                for file in files {
                    let rel = inside_checkout(r, ctx, svc, k, &file)?;
                    if !ctx.checkout.is_file(&rel) {
                        return Err(r.refuse(svc, k, format!("{file:?} is not a file in the checkout")));
                    }
                    out.env_files.push(rel);
                }
            }
            "volumes" => {
                let Value::Array(items) = value else {
                    return Err(r.refuse(svc, k, "must be a list"));
                };
                for item in items {
                    out.volumes.push(sanitize_volume(r, ctx, name, item, declared_volumes)?);
                }
            }
            "expose" => {
                for v in value.as_array().into_iter().flatten() {
                    let port = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(r.refuse(svc, k, "entries must be ports")),
                    };
                    out.expose.push(port);
                }
            }
            "develop" => warnings.push(format!("service `{name}`: `develop` is ignored in previews")),
            _ if OVERRIDDEN.contains(&k) => warnings.push(format!(
                "service `{name}`: `{k}` is ignored; limits, restart policy and names are set by the orchestrator"
            )),
            _ if PASSTHROUGH.contains(&k) || k.starts_with("x-") => {
                out.passthrough.insert(key, value);
            }
            _ => return Err(r.refuse(svc, k, "this key is not allowed in previews")),
        }
    }
    if out.build.is_some()
        && let Some(image) = out.image.take()
    {
        warnings.push(format!(
            "service `{name}`: `image: {image}` is ignored because the service is built; a built image must not take another image's name on the host"
        ));
    }
    Ok(out)
}

fn sanitize_build(
    r: &Refusals,
    ctx: &SanitizeContext,
    service: &str,
    value: Value,
) -> Result<RepoBuild> {
    let svc = Some(service);
    let map = match value {
        Value::String(context) => {
            let mut m = Map::new();
            m.insert("context".into(), Value::String(context));
            m
        }
        Value::Object(m) => m,
        _ => return Err(r.refuse(svc, "build", "must be a path or a mapping")),
    };
    let mut build = RepoBuild {
        context: ".".into(),
        dockerfile: None,
        dockerfile_inline: None,
        target: None,
        args: BTreeMap::new(),
        labels: BTreeMap::new(),
        passthrough: Map::new(),
    };
    let mut dockerfile = None;
    for (key, value) in map {
        let k = format!("build.{key}");
        match key.as_str() {
            "context" => {
                let Value::String(c) = value else {
                    return Err(r.refuse(svc, &k, "must be a path"));
                };
                if c.contains("://") || c.starts_with("git@") {
                    return Err(r.refuse(svc, &k, "remote build contexts are not fetched"));
                }
                build.context = inside_checkout(r, ctx, svc, &k, &c)?;
                if !ctx.checkout.is_dir(&build.context) {
                    return Err(r.refuse(
                        svc,
                        &k,
                        format!("{c:?} is not a directory in the checkout"),
                    ));
                }
            }
            "dockerfile" => {
                let Value::String(d) = value else {
                    return Err(r.refuse(svc, &k, "must be a path"));
                };
                dockerfile = Some(d);
            }
            "dockerfile_inline" => build.dockerfile_inline = value.as_str().map(str::to_owned),
            "target" => build.target = value.as_str().map(str::to_owned),
            "args" => build.args = key_values(r, svc, &k, value)?,
            "labels" => {
                build.labels = key_values(r, svc, &k, value)?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect();
            }
            b if BUILD_PASSTHROUGH.contains(&b) => {
                build.passthrough.insert(key, value);
            }
            "network" => {
                return Err(r.refuse(
                    svc,
                    &k,
                    "build steps use the default build network, never the host's",
                ));
            }
            "tags" => {
                return Err(r.refuse(
                    svc,
                    &k,
                    "extra tags could overwrite other images on the host",
                ));
            }
            "privileged" | "entitlements" => {
                return Err(r.refuse(svc, &k, "builds run unprivileged"));
            }
            "additional_contexts" | "ssh" | "secrets" => {
                return Err(r.refuse(
                    svc,
                    &k,
                    "builds see only the checkout, never host files, agents or secrets",
                ));
            }
            "cache_to" => return Err(r.refuse(svc, &k, "cache exports can write to the host")),
            _ => return Err(r.refuse(svc, &k, "this build key is not allowed in previews")),
        }
    }
    if let Some(d) = dockerfile {
        let joined = crate::detect::join_str(&build.context, &d);
        let rel = inside_checkout(r, ctx, svc, "build.dockerfile", &joined).map_err(|_| {
            r.refuse(
                svc,
                "build.dockerfile",
                format!("{d:?} is outside the checkout"),
            )
        })?;
        if !ctx.checkout.is_file(&rel) {
            return Err(r.refuse(
                svc,
                "build.dockerfile",
                format!("{d:?} is not a file in the checkout"),
            ));
        }
        build.dockerfile = Some(rel);
    }
    Ok(build)
}

fn sanitize_volume(
    r: &Refusals,
    ctx: &SanitizeContext,
    service: &str,
    item: Value,
    declared: &[String],
) -> Result<Mount> {
    let svc = Some(service);
    let (kind, source, target, read_only, tmpfs_spec) = match item {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, *target, ""),
                [source, target] => (Some(*source), *target, ""),
                [source, target, mode] => (Some(*source), *target, *mode),
                _ => return Err(r.refuse(svc, "volumes", format!("cannot read volume {s:?}"))),
            };
            let kind = match source {
                None => "anonymous",
                Some(src) if src.starts_with(['.', '/', '~']) => "bind",
                Some(_) => "volume",
            };
            let read_only = mode.split(',').any(|m| m == "ro");
            (
                kind.to_owned(),
                source.map(str::to_owned),
                target.to_owned(),
                read_only,
                Value::Null,
            )
        }
        Value::Object(m) => {
            let kind = m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("volume")
                .to_owned();
            let source = m.get("source").and_then(Value::as_str).map(str::to_owned);
            let target = m
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(bind) = m.get("bind").and_then(Value::as_object)
                && bind
                    .get("propagation")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.contains("shared") || p.contains("slave"))
            {
                return Err(r.refuse(
                    svc,
                    "volumes",
                    "mount propagation to or from the host is not allowed",
                ));
            }
            let read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let kind = if kind == "volume" && source.is_none() {
                "anonymous".to_owned()
            } else {
                kind
            };
            (
                kind,
                source,
                target,
                read_only,
                m.get("tmpfs").cloned().unwrap_or(Value::Null),
            )
        }
        _ => return Err(r.refuse(svc, "volumes", "entries must be strings or mappings")),
    };
    if !target.starts_with('/') {
        return Err(r.refuse(
            svc,
            "volumes",
            format!("the target {target:?} must be an absolute path in the container"),
        ));
    }
    let mentions_socket = |s: &str| {
        s.contains("docker.sock") || s.contains("containerd.sock") || s.ends_with("/docker")
    };
    if source.as_deref().is_some_and(mentions_socket) || target.contains("docker.sock") {
        return Err(r.refuse(
            svc,
            "volumes",
            "the Docker socket would give the preview control of the host",
        ));
    }
    match kind.as_str() {
        "bind" => {
            let source = source.unwrap_or_default();
            let rel = inside_checkout(r, ctx, svc, "volumes", &source).map_err(|_| {
                r.refuse(
                    svc,
                    "volumes",
                    format!("the bind mount {source:?} is outside the checkout; previews may only mount their own files"),
                )
            })?;
            Ok(Mount::Bind {
                source: rel,
                target,
                read_only,
            })
        }
        "volume" => {
            let source = source.unwrap_or_default();
            if !declared.contains(&source) {
                return Err(r.refuse(
                    svc,
                    "volumes",
                    format!("the volume {source:?} is not declared under the top-level `volumes`"),
                ));
            }
            Ok(Mount::Volume {
                source,
                target,
                read_only,
            })
        }
        "anonymous" => Ok(Mount::Anonymous { target }),
        "tmpfs" => Ok(Mount::Tmpfs {
            target,
            spec: tmpfs_spec,
        }),
        other => Err(r.refuse(
            svc,
            "volumes",
            format!("volume type {other:?} is not allowed"),
        )),
    }
}

/// A path of the compose file, relative to its directory, as a checkout-relative path that
/// stays inside the checkout, symlinks included.
fn inside_checkout(
    r: &Refusals,
    ctx: &SanitizeContext,
    svc: Option<&str>,
    key: &str,
    path: &str,
) -> Result<String> {
    let outside = |why: String| r.refuse(svc, key, why);
    if path.starts_with('/') || path.starts_with('~') {
        return Err(outside(format!(
            "{path:?} is a host path outside the checkout"
        )));
    }
    let joined = crate::detect::join_str(ctx.dir(), path);
    let rel = normalize_relative(&joined)
        .map_err(|_| outside(format!("{path:?} leads outside the checkout")))?;
    ctx.checkout
        .resolve(std::path::Path::new(&rel))
        .map_err(|e| outside(format!("{path:?}: {e}")))?;
    Ok(rel)
}

/// `environment`, `labels` and `args` as a map, from either the list or the mapping form.
fn key_values(
    r: &Refusals,
    svc: Option<&str>,
    key: &str,
    value: Value,
) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                let Value::String(s) = item else {
                    return Err(r.refuse(svc, key, "list entries must be KEY=value strings"));
                };
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None => out.insert(s, None),
                };
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let v = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => {
                        return Err(r.refuse(
                            svc,
                            key,
                            format!("the value of {k} must be a scalar"),
                        ));
                    }
                };
                out.insert(k, v);
            }
        }
        _ => return Err(r.refuse(svc, key, "must be a list or a mapping")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout() -> (tempfile::TempDir, Checkout) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join(".env.preview"), "A=1\n").unwrap();
        std::os::unix::fs::symlink("/var/run", root.join("run-link")).unwrap();
        let c = Checkout::open(&root).unwrap();
        (dir, c)
    }

    fn run(text: &str) -> Result<SanitizedCompose> {
        let (_d, c) = checkout();
        sanitize(
            text,
            &SanitizeContext {
                checkout: &c,
                file: "docker-compose.preview.yml".into(),
            },
        )
    }

    #[test]
    fn a_plain_file_passes() {
        let s = run("services:\n  app:\n    build: .\n    environment:\n      - A=1\n      - B\n    volumes:\n      - ./data:/data:ro\n      - cache:/cache\n    env_file: .env.preview\n    depends_on: [worker]\n  worker:\n    image: redis:7-bookworm\n    mem_limit: 4g\nvolumes:\n  cache: {}\n").unwrap();
        assert_eq!(s.app_service, "app");
        let app = &s.services[0];
        assert_eq!(app.environment["A"].as_deref(), Some("1"));
        assert_eq!(app.environment["B"], None);
        assert_eq!(
            app.volumes[0],
            Mount::Bind {
                source: "data".into(),
                target: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(app.env_files, [".env.preview"]);
        assert!(
            s.warnings.iter().any(|w| w.contains("mem_limit")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn refusals_name_service_key_and_line() {
        let cases = [
            (
                "services:\n  app:\n    build: .\n    privileged: true\n",
                "docker-compose.preview.yml:4: service `app`: key `privileged`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    network_mode: host\n",
                "service `app`: key `network_mode`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    pid: host\n",
                "service `app`: key `pid`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    ipc: host\n",
                "service `app`: key `ipc`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    devices: [/dev/sda]\n",
                "service `app`: key `devices`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    cap_add: [SYS_ADMIN]\n",
                "service `app`: key `cap_add`: ",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n",
                "service `app`: key `volumes`: the Docker socket",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - /etc:/host-etc\n",
                "service `app`: key `volumes`: the bind mount \"/etc\" is outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - ../..:/up\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - ./run-link/x:/x\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    volumes:\n      - type: bind\n        source: /\n        target: /host\n",
                "outside the checkout",
            ),
            (
                "services:\n  app:\n    build: .\n    ports: ['8080:8080']\n",
                "docker-compose.preview.yml:4: service `app`: key `ports`: host ports",
            ),
            (
                "services:\n  app:\n    build:\n      context: .\n      network: host\n",
                "service `app`: key `build.network`",
            ),
            (
                "services:\n  app:\n    build: ../\n",
                "service `app`: key `build.context`",
            ),
            (
                "services:\n  app:\n    build: .\n    env_file: /etc/environment\n",
                "service `app`: key `env_file`",
            ),
            (
                "services:\n  app:\n    build: .\n    frobnicate: 1\n",
                "service `app`: key `frobnicate`: this key is not allowed",
            ),
            (
                "services:\n  app:\n    build: .\nvolumes:\n  data:\n    driver_opts: {type: none, o: bind, device: /etc}\n",
                "key `volumes.data.driver_opts`",
            ),
            (
                "services:\n  app:\n    build: .\nnetworks:\n  ext:\n    external: true\n",
                "key `networks.ext.external`",
            ),
            (
                "services:\n  a:\n    image: x\n  b:\n    image: y\n",
                "cannot tell which service is the app",
            ),
        ];
        for (text, expected) in cases {
            let err = run(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text}\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn alias_bombs_are_refused() {
        let (mut text, last) = crate::test_support::alias_bomb(7);
        text.push_str(&format!(
            "services:\n  app:\n    build: .\n    command: *{last}\n"
        ));
        let err = run(&text).unwrap_err().to_string();
        assert!(err.contains("budget") || err.contains("alias"), "{err}");
    }
}
