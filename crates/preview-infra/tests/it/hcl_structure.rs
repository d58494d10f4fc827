//! Structural checks of `terraform/*.tf`, parsed with hcl-rs.
//!
//! `terraform validate` needs the DigitalOcean provider, which cannot be downloaded here, so the
//! properties that matter for safety are checked on the syntax tree instead: what the firewall
//! opens, what is sensitive, what the CLI can read back. Every check also runs against a mutated
//! copy of the real files, so a check that silently stopped looking would fail its own test.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use hcl::{Block, Body, Expression};
use preview_infra::REQUIRED_OUTPUTS;

use crate::terraform_dir;

/// The only inbound ports the server may expose outside the VPC.
const ALLOWED_INBOUND_PORTS: [u32; 3] = [22, 80, 443];
/// The sources of every rule that is for the VPC only.
const VPC_SOURCES: &str = "[local.vpc_ip_range]";
/// The server's VPC address, the source of the workers' second SSH rule.
const SERVER_VPC_ADDRESS: &str = "digitalocean_droplet.server.ipv4_address_private";
const EVERYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];
/// Substrings of variable names that hold secrets.
const SECRET_NAME_PARTS: [&str; 6] = [
    "token",
    "secret",
    "password",
    "private_key",
    "api_key",
    "access_key",
];

/// The `.tf` sources, as text, so tests can mutate them before parsing.
#[derive(Clone)]
struct Sources(Vec<(String, String)>);

impl Sources {
    fn load() -> Self {
        let dir = terraform_dir();
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&path).unwrap();
                (name, text)
            })
            .collect();
        files.sort();
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        for expected in ["main.tf", "outputs.tf", "variables.tf", "versions.tf"] {
            assert!(
                names.contains(&expected),
                "terraform/{expected} is missing; found {names:?}"
            );
        }
        Self(files)
    }

    /// A copy with `from` (which must occur exactly once in `file`) replaced by `to`.
    fn replaced(&self, file: &str, from: &str, to: &str) -> Self {
        let mut copy = self.clone();
        let (_, text) = copy.0.iter_mut().find(|(name, _)| name == file).unwrap();
        assert_eq!(
            text.matches(from).count(),
            1,
            "mutation target {from:?} must occur once in {file}"
        );
        *text = text.replacen(from, to, 1);
        copy
    }

    fn appended(&self, file: &str, extra: &str) -> Self {
        let mut copy = self.clone();
        let (_, text) = copy.0.iter_mut().find(|(name, _)| name == file).unwrap();
        text.push_str(extra);
        copy
    }

    /// All files merged into one body, as terraform does.
    fn parse(&self) -> Body {
        let mut merged = Vec::new();
        for (name, text) in &self.0 {
            let body = hcl::parse(text).unwrap_or_else(|e| panic!("terraform/{name}: {e}"));
            merged.extend(body.into_inner());
        }
        Body(merged)
    }
}

/// Blocks of one kind (`resource`, `variable`, ...), optionally of one resource type.
fn blocks<'a>(body: &'a Body, kind: &'a str, first_label: Option<&'a str>) -> Vec<&'a Block> {
    body.blocks()
        .filter(|b| b.identifier() == kind)
        .filter(|b| first_label.is_none_or(|l| b.labels().first().map(|x| x.as_str()) == Some(l)))
        .collect()
}

fn label(block: &Block, index: usize) -> &str {
    block.labels().get(index).map(|l| l.as_str()).unwrap_or("")
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn literal(expr: Option<&Expression>) -> Option<&str> {
    match expr {
        Some(Expression::String(s)) => Some(s),
        _ => None,
    }
}

/// Follows `local.NAME` to the expression it names, so rules may use locals.
fn resolve<'a>(config: &'a Body, expr: &'a Expression) -> &'a Expression {
    let text = expr.to_string();
    if let Some(name) = text.strip_prefix("local.") {
        for locals in blocks(config, "locals", None) {
            if let Some(found) = attr(locals.body(), name) {
                return resolve(config, found);
            }
        }
    }
    expr
}

fn string_list(config: &Body, expr: Option<&Expression>) -> Option<Vec<String>> {
    match expr.map(|e| resolve(config, e)) {
        Some(Expression::Array(items)) => items
            .iter()
            .map(|item| match item {
                Expression::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Ports of a firewall rule's `port_range` ("22", "8000-9000", "all"; absent means all).
fn ports(range: Option<&str>) -> Result<(u32, u32), String> {
    let range = match range {
        None | Some("all") => return Ok((1, 65535)),
        Some(r) => r,
    };
    let (low, high) = range.split_once('-').unwrap_or((range, range));
    let parse = |p: &str| {
        p.trim()
            .parse::<u32>()
            .map_err(|_| format!("port_range {range:?}"))
    };
    Ok((parse(low)?, parse(high)?))
}

/// Every problem found, one line each; empty means the configuration is acceptable.
fn problems(config: &Body) -> Vec<String> {
    let mut found = Vec::new();
    check_provider_and_state(config, &mut found);
    check_droplet(config, &mut found);
    check_firewall(config, &mut found);
    check_reserved_ip(config, &mut found);
    check_alerts(config, &mut found);
    check_sensitive(config, &mut found);
    check_outputs(config, &mut found);
    found
}

fn check_provider_and_state(config: &Body, found: &mut Vec<String>) {
    let terraform = blocks(config, "terraform", None);
    if terraform.is_empty() {
        found.push("no terraform {} block".into());
    }
    let mut pinned = false;
    for block in &terraform {
        if attr(block.body(), "required_version").is_none() {
            found.push("terraform {} has no required_version".into());
        }
        for inner in block.body().blocks() {
            if matches!(inner.identifier(), "backend" | "cloud") {
                found.push(format!(
                    "terraform {{}} configures a {} block; local state is the default and a remote backend is opt-in (see README)",
                    inner.identifier()
                ));
            }
            if inner.identifier() == "required_providers" {
                let Some(Expression::Object(req)) = attr(inner.body(), "digitalocean") else {
                    continue;
                };
                let get = |k: &str| {
                    req.iter()
                        .find(|(key, _)| key.to_string() == k)
                        .map(|(_, v)| v)
                };
                let source = literal(get("source"));
                let version = literal(get("version"));
                if source != Some("digitalocean/digitalocean") {
                    found.push(format!("digitalocean provider source is {source:?}"));
                }
                match version {
                    Some(v) if v.starts_with("~> 2.") => pinned = true,
                    other => found.push(format!(
                        "digitalocean provider version must be pinned as \"~> 2.x\", found {other:?}"
                    )),
                }
            }
        }
    }
    if !pinned {
        found.push("required_providers does not pin digitalocean".into());
    }
}

fn check_droplet(config: &Body, found: &mut Vec<String>) {
    let droplets = blocks(config, "resource", Some("digitalocean_droplet"));
    let names: Vec<&str> = droplets.iter().map(|d| label(d, 1)).collect();
    if names != ["server", "worker"] {
        found.push(format!(
            "expected the digitalocean_droplets server and worker, found {names:?}"
        ));
        return;
    }
    for droplet in &droplets {
        let name = label(droplet, 1);
        let body = droplet.body();
        if literal(attr(body, "image")) != Some("ubuntu-24-04-x64") {
            found.push(format!(
                "droplet {name}: the image must be Ubuntu 24.04 LTS (ubuntu-24-04-x64)"
            ));
        }
        if !matches!(attr(body, "monitoring"), Some(Expression::Bool(true))) {
            found.push(format!("droplet {name} must have monitoring = true"));
        }
        match attr(body, "tags") {
            Some(Expression::Array(items)) if items.is_empty() => {
                found.push(format!("droplet {name}: its tags are empty"))
            }
            Some(_) => {}
            None => found.push(format!("droplet {name} has no tags")),
        }
        let text = |key: &str| attr(body, key).map(ToString::to_string).unwrap_or_default();
        if text("region") != "var.region" {
            found.push(format!(
                "droplet {name}: its region must come from var.region, found {:?}",
                text("region")
            ));
        }
        if !text("size").contains("var.droplet_size") {
            found.push(format!(
                "droplet {name}: its size must come from var.droplet_size, found {:?}",
                text("size")
            ));
        }
        // One VPC for every node: the Swarm and registry rules admit its range only. The
        // workers follow the server into whichever VPC it is really in.
        let vpc = if name == "server" {
            "local.vpc_id"
        } else {
            "digitalocean_droplet.server.vpc_uuid"
        };
        if text("vpc_uuid") != vpc {
            found.push(format!(
                "droplet {name} must be in the VPC (vpc_uuid = {vpc}), found {:?}",
                text("vpc_uuid")
            ));
        }
        let ignored = droplet
            .body()
            .blocks()
            .filter(|b| b.identifier() == "lifecycle")
            .filter_map(|b| attr(b.body(), "ignore_changes"))
            .map(ToString::to_string)
            .collect::<String>();
        for key in ["image", "ssh_keys"]
            .into_iter()
            .chain((name == "server").then_some("vpc_uuid"))
        {
            if !ignored.contains(key) {
                found.push(format!(
                    "droplet {name} must ignore changes of {key}: a change would replace it with its previews"
                ));
            }
        }
        if !text("ssh_keys").contains("digitalocean_ssh_key.") {
            found.push(format!(
                "droplet {name}: its ssh_keys must come from a digitalocean_ssh_key resource"
            ));
        }
        let count = text("count");
        match name {
            "server" if !count.is_empty() => found.push(format!(
                "droplet server must be one droplet, found count = {count}"
            )),
            "worker" if count != "var.worker_count" => found.push(format!(
                "droplet worker must be counted by var.worker_count, found {count:?}"
            )),
            _ => {}
        }
    }
    for variable in ["droplet_size", "region", "worker_count", "vpc_ip_range"] {
        let has_validation = blocks(config, "variable", None).iter().any(|v| {
            label(v, 0) == variable && v.body().blocks().any(|b| b.identifier() == "validation")
        });
        if !has_validation {
            found.push(format!("variable {variable} has no validation block"));
        }
    }
    let ssh_key_from_var = blocks(config, "resource", Some("digitalocean_ssh_key"))
        .iter()
        .any(|k| {
            attr(k.body(), "public_key")
                .is_some_and(|e| e.to_string().contains("var.ssh_public_key"))
        });
    if !ssh_key_from_var {
        found.push("no digitalocean_ssh_key takes public_key from var.ssh_public_key".into());
    }
}

/// Which droplets a firewall guards, by the tag it attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guarded {
    Server,
    Worker,
}

/// A rule's sources, as the firewall checks classify them.
#[derive(Debug, PartialEq, Eq)]
enum RuleSources {
    Admins,
    Everyone,
    Vpc,
    ServerInVpc,
    Other(String),
}

fn rule_sources(config: &Body, rule: &Body) -> RuleSources {
    let expr = attr(rule, "source_addresses");
    // hcl-rs prints arrays over several lines; the comparison ignores layout.
    let text: String = expr
        .map(ToString::to_string)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if text == "var.admin_cidrs" {
        RuleSources::Admins
    } else if text == VPC_SOURCES {
        RuleSources::Vpc
    } else if text.contains(SERVER_VPC_ADDRESS) && !text.contains(',') {
        RuleSources::ServerInVpc
    } else if string_list(config, expr).as_deref() == Some(&EVERYWHERE.map(String::from)[..]) {
        RuleSources::Everyone
    } else {
        RuleSources::Other(text)
    }
}

/// A rule's port range as text, following `local.NAME`.
fn port_range<'a>(config: &'a Body, rule: &'a Body) -> Option<&'a str> {
    match attr(rule, "port_range").map(|e| resolve(config, e)) {
        Some(Expression::String(s)) => Some(s),
        _ => None,
    }
}

fn check_firewall(config: &Body, found: &mut Vec<String>) {
    let firewalls = blocks(config, "resource", Some("digitalocean_firewall"));
    if firewalls.is_empty() {
        found.push("no digitalocean_firewall".into());
    }
    let droplet_tags = blocks(config, "resource", Some("digitalocean_droplet"))
        .iter()
        .filter_map(|d| attr(d.body(), "tags"))
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    // (guarded droplets, protocol, low port, high port, sources) of every inbound rule.
    let mut opened: BTreeSet<(&str, String, u32, u32, &str)> = BTreeSet::new();
    for firewall in firewalls {
        let name = label(firewall, 1);
        let body = firewall.body();
        if attr(body, "droplet_ids").is_some() {
            found.push(format!(
                "firewall {name} must attach by tag, not droplet_ids"
            ));
        }
        let mut guarded = None;
        match attr(body, "tags") {
            Some(Expression::Array(tags)) if !tags.is_empty() => {
                for tag in tags {
                    let tag = tag.to_string();
                    if !droplet_tags.contains(&tag) {
                        found.push(format!("firewall {name} tag {tag} is not on the droplet"));
                    }
                    guarded = match (guarded, tag.as_str()) {
                        (None, "digitalocean_tag.server.id") => Some(Guarded::Server),
                        (None, "digitalocean_tag.worker.id") => Some(Guarded::Worker),
                        (g, _) => {
                            if g.is_some() {
                                found.push(format!(
                                    "firewall {name} guards the server and the workers at once"
                                ));
                            }
                            g
                        }
                    };
                }
            }
            _ => found.push(format!("firewall {name} is not attached by tags")),
        }
        let Some(guarded) = guarded else {
            found.push(format!(
                "firewall {name} is attached by neither digitalocean_tag.server nor digitalocean_tag.worker"
            ));
            continue;
        };
        let kind = match guarded {
            Guarded::Server => "server",
            Guarded::Worker => "worker",
        };
        for dynamic in body.blocks().filter(|b| b.identifier() == "dynamic") {
            found.push(format!(
                "firewall {name} has a dynamic \"{}\" block, which this check cannot see through",
                label(dynamic, 0)
            ));
        }
        for rule in body.blocks().filter(|b| b.identifier() == "inbound_rule") {
            let protocol = literal(attr(rule.body(), "protocol")).unwrap_or("?");
            let range = port_range(config, rule.body());
            let (low, high) = match ports(range) {
                Ok(p) => p,
                Err(e) => {
                    found.push(format!("firewall {name}: unreadable inbound {e}"));
                    continue;
                }
            };
            let sources = rule_sources(config, rule.body());
            let ok = match &sources {
                RuleSources::Admins | RuleSources::Everyone => {
                    if protocol != "tcp" {
                        found.push(format!(
                            "firewall {name} opens inbound {protocol} (port_range {range:?}) publicly; only tcp 22, 80 and 443 may be open"
                        ));
                        continue;
                    }
                    if low != high || !ALLOWED_INBOUND_PORTS.contains(&low) {
                        found.push(format!(
                            "firewall {name} opens inbound tcp {low}-{high}; only 22, 80 and 443 may be open"
                        ));
                        continue;
                    }
                    if low == 22 && sources != RuleSources::Admins {
                        found.push(format!(
                            "firewall {name}: port 22 must be open to var.admin_cidrs only, found everyone"
                        ));
                        continue;
                    }
                    if low != 22 && sources != RuleSources::Everyone {
                        found.push(format!(
                            "firewall {name}: port {low} must be open to everyone"
                        ));
                        continue;
                    }
                    if low != 22 && guarded == Guarded::Worker {
                        found.push(format!(
                            "firewall {name} opens port {low} on the workers; they serve nothing to the public"
                        ));
                        continue;
                    }
                    true
                }
                RuleSources::Vpc => {
                    let allowed = vpc_ports(guarded);
                    let ok = allowed
                        .iter()
                        .any(|(p, l, h)| *p == protocol && (*l, *h) == (low, high));
                    if !ok {
                        found.push(format!(
                            "firewall {name} opens inbound {protocol} {low}-{high} to the VPC; the {kind}s may open only {allowed:?} there"
                        ));
                    }
                    ok
                }
                RuleSources::ServerInVpc => {
                    let ok =
                        guarded == Guarded::Worker && protocol == "tcp" && (low, high) == (22, 22);
                    if !ok {
                        found.push(format!(
                            "firewall {name} opens inbound {protocol} {low}-{high} to the server's VPC address; only SSH on the workers is for it"
                        ));
                    }
                    ok
                }
                RuleSources::Other(text) => {
                    found.push(format!(
                        "firewall {name} opens inbound {protocol} {low}-{high} to {text}; sources must be var.admin_cidrs (22), everyone (80, 443) or the VPC ({VPC_SOURCES})"
                    ));
                    false
                }
            };
            if ok {
                let tag = match sources {
                    RuleSources::Admins => "admins",
                    RuleSources::Everyone => "everyone",
                    RuleSources::Vpc => "vpc",
                    _ => "server",
                };
                opened.insert((kind, protocol.to_string(), low, high, tag));
            }
        }
        let mut outbound = BTreeSet::new();
        for rule in body.blocks().filter(|b| b.identifier() == "outbound_rule") {
            let protocol = literal(attr(rule.body(), "protocol")).unwrap_or("?");
            let everywhere = string_list(config, attr(rule.body(), "destination_addresses"))
                .is_some_and(|d| EVERYWHERE.iter().all(|e| d.iter().any(|x| x == e)));
            let all_ports = protocol == "icmp"
                || ports(literal(attr(rule.body(), "port_range"))) == Ok((1, 65535));
            if everywhere && all_ports {
                outbound.insert(protocol.to_string());
            }
        }
        for protocol in ["tcp", "udp", "icmp"] {
            if !outbound.contains(protocol) {
                found.push(format!(
                    "firewall {name} does not allow all outbound {protocol}"
                ));
            }
        }
    }
    let public = |kind: &str| -> BTreeSet<u32> {
        opened
            .iter()
            .filter(|(k, _, _, _, s)| *k == kind && matches!(*s, "admins" | "everyone"))
            .map(|(_, _, low, _, _)| *low)
            .collect()
    };
    let expected: BTreeSet<u32> = ALLOWED_INBOUND_PORTS.into_iter().collect();
    if public("server") != expected {
        found.push(format!(
            "the server's firewall opens inbound ports {:?} publicly; expected exactly {expected:?}",
            public("server")
        ));
    }
    if public("worker") != BTreeSet::from([22]) {
        found.push(format!(
            "the workers' firewall opens inbound ports {:?} publicly; expected exactly SSH from var.admin_cidrs",
            public("worker")
        ));
    }
    for guarded in [Guarded::Server, Guarded::Worker] {
        let kind = if guarded == Guarded::Server {
            "server"
        } else {
            "worker"
        };
        for (protocol, low, high) in vpc_ports(guarded) {
            if !opened.contains(&(kind, protocol.to_string(), low, high, "vpc")) {
                found.push(format!(
                    "the {kind}s' firewall does not open {protocol} {low}-{high} to the VPC (Swarm, registry or preview ports)"
                ));
            }
        }
    }
    if !opened.contains(&("worker", "tcp".into(), 22, 22, "server")) {
        found.push(
            "the workers' firewall does not let the server in over SSH (the orchestrator's clean-up)"
                .into(),
        );
    }
}

/// What the VPC may reach on each kind of droplet: Swarm's ports (2377 on the manager only),
/// the registry on the server, the previews' app ports on the workers.
fn vpc_ports(guarded: Guarded) -> Vec<(&'static str, u32, u32)> {
    let swarm = [
        ("tcp", 7946, 7946),
        ("udp", 7946, 7946),
        ("udp", 4789, 4789),
    ];
    let (low, high) = app_port_range();
    match guarded {
        Guarded::Server => [("tcp", 2377, 2377), ("tcp", 5000, 5000)]
            .into_iter()
            .chain(swarm)
            .collect(),
        Guarded::Worker => swarm.into_iter().chain([("tcp", low, high)]).collect(),
    }
}

/// The orchestrator's default APP_PORT_RANGE, from its own settings.
fn app_port_range() -> (u32, u32) {
    use clap::CommandFactory;
    let command = preview_orchestrator::Config::command();
    let arg = command
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == "APP_PORT_RANGE"))
        .expect("the orchestrator has an APP_PORT_RANGE setting");
    let default = arg.get_default_values()[0].to_string_lossy().into_owned();
    ports(Some(&default)).unwrap_or_else(|e| panic!("APP_PORT_RANGE's default: {e}"))
}

fn check_reserved_ip(config: &Body, found: &mut Vec<String>) {
    if blocks(config, "resource", Some("digitalocean_reserved_ip")).is_empty() {
        found.push("no digitalocean_reserved_ip".into());
    }
    let assigned = blocks(
        config,
        "resource",
        Some("digitalocean_reserved_ip_assignment"),
    )
    .iter()
    .any(|a| {
        let text = |k| {
            attr(a.body(), k)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        text("ip_address").starts_with("digitalocean_reserved_ip.")
            && text("droplet_id").starts_with("digitalocean_droplet.")
    });
    if !assigned {
        found.push(
            "no digitalocean_reserved_ip_assignment ties the reserved IP to the droplet".into(),
        );
    }
}

fn check_alerts(config: &Body, found: &mut Vec<String>) {
    match blocks(config, "variable", None)
        .into_iter()
        .find(|v| label(v, 0) == "alert_email")
    {
        None => found.push("no variable alert_email".into()),
        Some(v) => {
            if !matches!(attr(v.body(), "default"), None | Some(Expression::Null)) {
                found.push("variable alert_email must have no default e-mail (null)".into());
            }
        }
    }
    let alerts = blocks(config, "resource", Some("digitalocean_monitor_alert"));
    if alerts.is_empty() {
        found.push("no digitalocean_monitor_alert".into());
    }
    for alert in alerts {
        let name = label(alert, 1);
        let gate = attr(alert.body(), "for_each").or_else(|| attr(alert.body(), "count"));
        let gated =
            gate.is_some_and(|g| resolve(config, g).to_string().contains("var.alert_email"));
        if !gated {
            found.push(format!(
                "monitor alert {name} must be created only when var.alert_email is set (count/for_each)"
            ));
        }
        let mails = alert
            .body()
            .blocks()
            .filter(|b| b.identifier() == "alerts")
            .filter_map(|b| attr(b.body(), "email"))
            .map(ToString::to_string)
            .collect::<String>();
        if !mails.contains("var.alert_email") || mails.contains('@') {
            found.push(format!(
                "monitor alert {name} must mail var.alert_email only, found {mails:?}"
            ));
        }
    }
}

fn check_sensitive(config: &Body, found: &mut Vec<String>) {
    let mut secrets = Vec::new();
    for variable in blocks(config, "variable", None) {
        let name = label(variable, 0);
        if !SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
            continue;
        }
        secrets.push(name.to_string());
        if !matches!(
            attr(variable.body(), "sensitive"),
            Some(Expression::Bool(true))
        ) {
            found.push(format!(
                "variable {name} holds a secret and must be sensitive = true"
            ));
        }
        if !matches!(
            attr(variable.body(), "default"),
            None | Some(Expression::Null)
        ) {
            found.push(format!(
                "variable {name} holds a secret and must not have a default"
            ));
        }
    }
    if !secrets.iter().any(|s| s == "do_token") {
        found.push("no variable do_token for the DigitalOcean API token".into());
    }
    for output in blocks(config, "output", None) {
        let value = attr(output.body(), "value")
            .map(ToString::to_string)
            .unwrap_or_default();
        let leaks = secrets.iter().any(|s| value.contains(&format!("var.{s}")));
        let sensitive = matches!(
            attr(output.body(), "sensitive"),
            Some(Expression::Bool(true))
        );
        if leaks && !sensitive {
            found.push(format!(
                "output {} shows a secret and must be sensitive",
                label(output, 0)
            ));
        }
    }
}

fn check_outputs(config: &Body, found: &mut Vec<String>) {
    let outputs = blocks(config, "output", None);
    for required in REQUIRED_OUTPUTS {
        match outputs.iter().find(|o| label(o, 0) == required) {
            None => found.push(format!("output {required} is missing")),
            Some(output) => {
                if attr(output.body(), "value").is_none() {
                    found.push(format!("output {required} has no value"));
                }
                if literal(attr(output.body(), "description")).is_none_or(str::is_empty) {
                    found.push(format!("output {required} has no description"));
                }
            }
        }
    }
}

fn report(problems: &[String]) -> String {
    let mut text = String::new();
    for p in problems {
        let _ = writeln!(text, "  - {p}");
    }
    text
}

/// Asserts that `sources` has a problem containing every one of `needles`.
fn assert_flagged(sources: &Sources, needles: &[&str]) {
    let found = problems(&sources.parse());
    assert!(
        found.iter().any(|p| needles.iter().all(|n| p.contains(n))),
        "expected a problem mentioning {needles:?}, found:\n{}",
        report(&found)
    );
}

#[test]
fn the_terraform_code_passes_every_structural_check() {
    let found = problems(&Sources::load().parse());
    assert!(
        found.is_empty(),
        "terraform/ has problems:\n{}",
        report(&found)
    );
}

#[test]
fn the_firewall_opens_exactly_22_80_and_443_outside_the_vpc() {
    let config = Sources::load().parse();
    let firewall = blocks(&config, "resource", Some("digitalocean_firewall"))[0];
    assert_eq!(label(firewall, 1), "server");
    let mut ports: Vec<&str> = firewall
        .body()
        .blocks()
        .filter(|b| b.identifier() == "inbound_rule")
        .filter(|r| rule_sources(&config, r.body()) != RuleSources::Vpc)
        .filter_map(|r| literal(attr(r.body(), "port_range")))
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, ["22", "443", "80"]);
}

#[test]
fn the_swarm_registry_and_preview_ports_are_open_to_the_vpc_only() {
    let sources = Sources::load();
    for (port, protocol) in [("2377", "tcp"), ("5000", "tcp")] {
        let rule = format!(
            "protocol         = \"{protocol}\"\n    port_range       = \"{port}\"\n    source_addresses = [local.vpc_ip_range]\n  }}\n\n"
        );
        let config = sources.clone();
        let public = config.replaced(
            "main.tf",
            &rule,
            &rule.replace("[local.vpc_ip_range]", "local.everywhere"),
        );
        assert_flagged(&public, &[port, "only 22, 80 and 443"]);
        let gone = config.replaced("main.tf", &rule, &rule.replace(port, "1"));
        assert_flagged(&gone, &["does not open", port]);
    }
    let app_ports = sources.replaced(
        "main.tf",
        "    port_range       = local.app_port_range\n    source_addresses = [local.vpc_ip_range]",
        "    port_range       = local.app_port_range\n    source_addresses = local.everywhere",
    );
    assert_flagged(&app_ports, &["8000-8999"]);
    // The workers' VXLAN rule, told apart from the server's by its comment.
    let vxlan = "(VXLAN).\n  inbound_rule {\n    protocol         = \"udp\"\n    port_range       = \"4789\"";
    let no_vxlan = sources.replaced("main.tf", vxlan, &vxlan.replace("4789", "4790"));
    assert_flagged(&no_vxlan, &["workers' firewall does not open udp 4789"]);
    let wide_vpc = sources.replaced(
        "main.tf",
        "protocol         = \"tcp\"\n    port_range       = \"2377\"",
        "protocol         = \"tcp\"\n    port_range       = \"1-65535\"",
    );
    assert_flagged(&wide_vpc, &["1-65535", "to the VPC"]);
}

#[test]
fn the_workers_app_ports_are_the_orchestrators_app_port_range() {
    assert_eq!(app_port_range(), (8000, 8999));
    let other = Sources::load().replaced("main.tf", "\"8000-8999\"", "\"8000-9999\"");
    assert_flagged(&other, &["8000-9999", "to the VPC"]);
}

#[test]
fn the_workers_take_ssh_from_the_admins_and_the_server_only() {
    let sources = Sources::load();
    let from_server =
        "source_addresses = [\"${digitalocean_droplet.server.ipv4_address_private}/32\"]";
    let no_server = sources.replaced("main.tf", from_server, "source_addresses = var.admin_cidrs");
    assert_flagged(&no_server, &["does not let the server in"]);
    let whole_vpc = sources.replaced(
        "main.tf",
        from_server,
        "source_addresses = [local.vpc_ip_range]",
    );
    assert_flagged(&whole_vpc, &["22-22", "to the VPC"]);
}

#[test]
fn every_droplet_is_in_the_vpc_and_workers_follow_worker_count() {
    let sources = Sources::load();
    let outside = sources.replaced(
        "main.tf",
        "var.worker_size\n  vpc_uuid   = digitalocean_droplet.server.vpc_uuid",
        "var.worker_size\n  vpc_uuid   = var.vpc_uuid",
    );
    assert_flagged(&outside, &["droplet worker", "VPC"]);
    let fixed = sources.replaced("main.tf", "count      = var.worker_count", "count      = 2");
    assert_flagged(&fixed, &["var.worker_count"]);
    let replaceable = sources.replaced(
        "main.tf",
        "ignore_changes = [image, ssh_keys, vpc_uuid]",
        "ignore_changes = [image, ssh_keys]",
    );
    assert_flagged(&replaceable, &["droplet server", "vpc_uuid"]);
    let public_worker = sources.appended(
        "main.tf",
        r#"
resource "digitalocean_firewall" "worker_web" {
  name = "web"
  tags = [digitalocean_tag.worker.id]
  inbound_rule {
    protocol         = "tcp"
    port_range       = "80"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }
}
"#,
    );
    assert_flagged(&public_worker, &["workers", "80"]);
}

#[test]
fn an_extra_inbound_port_is_caught() {
    let extra = r#"
resource "digitalocean_firewall" "debug" {
  name = "debug"
  tags = [digitalocean_tag.server.id]
  inbound_rule {
    protocol         = "tcp"
    port_range       = "3000"
    source_addresses = ["0.0.0.0/0"]
  }
}
"#;
    assert_flagged(&Sources::load().appended("main.tf", extra), &["3000"]);
}

#[test]
fn a_widened_or_non_tcp_inbound_rule_is_caught() {
    let sources = Sources::load();
    let widened = sources.replaced(
        "main.tf",
        r#"port_range       = "443""#,
        r#"port_range       = "443-9000""#,
    );
    assert_flagged(&widened, &["443-9000"]);
    let udp = sources.replaced(
        "main.tf",
        "protocol         = \"tcp\"\n    port_range       = \"80\"",
        "protocol         = \"udp\"\n    port_range       = \"80\"",
    );
    assert_flagged(&udp, &["inbound udp"]);
    let all_ports = sources.replaced(
        "main.tf",
        r#"port_range       = "80""#,
        r#"port_range       = "all""#,
    );
    assert_flagged(&all_ports, &["1-65535"]);
}

#[test]
fn ssh_must_follow_the_admin_cidrs() {
    let open = Sources::load().replaced(
        "main.tf",
        "port_range       = \"22\"\n    source_addresses = var.admin_cidrs\n  }\n\n  inbound_rule {\n    protocol         = \"tcp\"\n    port_range       = \"80\"",
        "port_range       = \"22\"\n    source_addresses = local.everywhere\n  }\n\n  inbound_rule {\n    protocol         = \"tcp\"\n    port_range       = \"80\"",
    );
    assert_flagged(&open, &["port 22", "admin_cidrs"]);
}

#[test]
fn a_firewall_attached_by_droplet_id_is_caught() {
    let by_id = Sources::load().replaced(
        "main.tf",
        "tags = [digitalocean_tag.server.id]\n\n  inbound_rule",
        "droplet_ids = [digitalocean_droplet.server.id]\n\n  inbound_rule",
    );
    assert_flagged(&by_id, &["droplet_ids"]);
}

#[test]
fn secrets_must_be_sensitive() {
    let sources = Sources::load();
    let plain_token = sources.replaced(
        "variables.tf",
        "  default     = null\n  sensitive   = true\n",
        "  default     = null\n",
    );
    assert_flagged(&plain_token, &["do_token", "sensitive"]);
    let new_secret = sources.appended(
        "variables.tf",
        "\nvariable \"webhook_secret\" {\n  type = string\n}\n",
    );
    assert_flagged(&new_secret, &["webhook_secret", "sensitive"]);
    let leaked = sources.appended(
        "outputs.tf",
        "\noutput \"token\" {\n  value = var.do_token\n}\n",
    );
    assert_flagged(&leaked, &["output token"]);
}

#[test]
fn every_output_the_cli_reads_is_declared() {
    for required in REQUIRED_OUTPUTS {
        let header = format!("output \"{required}\" {{");
        let renamed = Sources::load().replaced("outputs.tf", &header, "output \"renamed\" {");
        assert_flagged(&renamed, &[required, "missing"]);
    }
}

#[test]
fn alerts_exist_only_with_an_email_and_there_is_no_default_email() {
    let sources = Sources::load();
    let defaulted = sources.replaced(
        "variables.tf",
        "type        = string\n  default     = null\n\n  validation {\n    condition     = var.alert_email",
        "type        = string\n  default     = \"ops@example.com\"\n\n  validation {\n    condition     = var.alert_email",
    );
    assert_flagged(&defaulted, &["alert_email", "no default"]);
    let ungated = sources.replaced("main.tf", "  for_each = local.alerts\n", "");
    assert_flagged(&ungated, &["only when var.alert_email"]);
}

#[test]
fn the_droplet_is_ubuntu_24_04_with_monitoring() {
    let sources = Sources::load();
    assert_flagged(
        &sources.replaced(
            "main.tf",
            "var.name\n  image      = \"ubuntu-24-04-x64\"",
            "var.name\n  image      = \"ubuntu-22-04-x64\"",
        ),
        &["droplet server", "Ubuntu 24.04"],
    );
    assert_flagged(
        &sources.replaced(
            "main.tf",
            "count.index + 1}\"\n  image      = \"ubuntu-24-04-x64\"",
            "count.index + 1}\"\n  image      = \"ubuntu-22-04-x64\"",
        ),
        &["droplet worker", "Ubuntu 24.04"],
    );
    for (droplet, vpc) in [
        ("droplet_size", "local.vpc_id"),
        ("var.worker_size", "digitalocean_droplet.server.vpc_uuid"),
    ] {
        let at = format!("{droplet}\n  vpc_uuid   = {vpc}\n  monitoring = true");
        assert_flagged(
            &sources.replaced("main.tf", &at, &at.replace("= true", "= false")),
            &["monitoring"],
        );
    }
}

#[test]
fn state_stays_local_and_the_provider_stays_pinned() {
    let sources = Sources::load();
    let remote = sources.appended(
        "versions.tf",
        "\nterraform {\n  required_version = \">= 1.5.0\"\n  backend \"s3\" {}\n}\n",
    );
    assert_flagged(&remote, &["backend"]);
    let unpinned = sources.replaced("versions.tf", "version = \"~> 2.", "version = \">= 2.");
    assert_flagged(&unpinned, &["pinned"]);
}
