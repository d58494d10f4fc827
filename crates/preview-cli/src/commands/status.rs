//! `preview status`: whether the server answers, the orchestrator's version, health and queue
//! depth, and a table of the live previews (or all of it as JSON).

use anyhow::{Result, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::remote::{Health, Nodes, Preview, Remote, Unreachable};
use super::secrets::{SecretName, SecretStore};
use super::state::{ServerInfo, SetupState};
use super::tools::{self, Tool};

/// Arguments of `preview status`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Exits with status 1 when the server or the orchestrator does not answer.

Examples:
  preview status
  preview status --json | jq '.previews[] | select(.status != \"running\")'")]
pub struct StatusArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// What `status --json` prints.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The server from the setup state.
    pub server: Option<ServerInfo>,
    /// Whether SSH reached it.
    pub reachable: bool,
    /// The orchestrator's /health, when it answered.
    pub health: Option<Health>,
    /// Live previews, when the API answered.
    pub previews: Vec<Preview>,
    /// The machines previews run on (the server, or each node of the swarm), when the API
    /// answered.
    pub nodes: Option<Nodes>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Runs `preview status`.
pub async fn run(args: StatusArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let report = gather(&config, &home, &state).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report, &config);
    }
    match &report.error {
        Some(error) => bail!("{error}"),
        None => Ok(()),
    }
}

async fn gather(config: &Config, home: &Home, state: &SetupState) -> Result<StatusReport> {
    let Some(server) = state.server.clone() else {
        return Ok(StatusReport {
            server: None,
            reachable: false,
            health: None,
            previews: Vec::new(),
            nodes: None,
            error: Some("no server yet: run `preview setup` first".to_owned()),
        });
    };
    tools::require(&[Tool::Ssh])?;
    let remote = Remote::new(&server, config, home);
    let mut report = StatusReport {
        server: Some(server),
        reachable: true,
        health: None,
        previews: Vec::new(),
        nodes: None,
        error: None,
    };
    match remote.health().await {
        Ok(health) => report.health = Some(health),
        Err(err) => {
            report.reachable = err.downcast_ref::<Unreachable>().is_none();
            report.error = Some(format!("{err:#}"));
            return Ok(report);
        }
    }
    let store = SecretStore::open(config.secret_store, &config.project, home)?;
    let token = store.resolve(SecretName::ApiToken)?;
    match remote.previews(&token).await {
        Ok(previews) => report.previews = previews,
        Err(err) => report.error = Some(format!("{err:#}")),
    }
    match remote.nodes(&token).await {
        Ok(nodes) => report.nodes = Some(nodes),
        Err(err) => report.error = report.error.take().or(Some(format!("{err:#}"))),
    }
    if report.error.is_none()
        && let Some(health) = &report.health
        && health.status != "ok"
    {
        report.error = Some(format!(
            "the orchestrator reports status {:?}",
            health.status
        ));
    }
    Ok(report)
}

fn print_human(report: &StatusReport, config: &Config) {
    let Some(server) = &report.server else {
        println!(
            "Project {}: no server yet (run `preview setup`).",
            config.project
        );
        return;
    };
    let reach = if report.reachable {
        "reachable"
    } else {
        "UNREACHABLE"
    };
    println!(
        "Server      {} ({}@, droplet {}) {reach}",
        server.ip, server.ssh_user, server.droplet_id
    );
    match &report.health {
        Some(h) => {
            println!(
                "Orchestrator {} {}, up {}, queue depth {}, docker {}",
                h.version.as_deref().unwrap_or("(unknown version)"),
                h.status,
                h.uptime_seconds
                    .map(|s| human_age(s as i64))
                    .unwrap_or_else(|| "?".to_owned()),
                h.queue_depth
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".to_owned()),
                match h.docker {
                    Some(true) => "ok",
                    Some(false) => "DOWN",
                    None => "?",
                }
            );
            if let Some(line) = h.tls.as_ref().and_then(|t| t.summary()) {
                println!("TLS         {line}");
            }
        }
        None => println!("Orchestrator not answering"),
    }
    if let Some(error) = &report.error {
        println!("Error       {error}");
    }
    if report.health.is_none() {
        return;
    }
    if let Some(nodes) = &report.nodes {
        println!("{}", node_table(nodes));
    }
    if report.previews.is_empty() {
        println!("No previews.");
        return;
    }
    println!(
        "{}",
        preview_table(&report.previews, jiff::Timestamp::now())
    );
}

/// The preview table: repo, PR, status, age, URL, ports.
pub fn preview_table(previews: &[Preview], now: jiff::Timestamp) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(["REPO", "PR", "STATUS", "AGE", "URL", "PORTS"]);
    for p in previews {
        let age = p
            .created_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|created| human_age(now.as_second() - created.as_second()))
            .unwrap_or_else(|| "?".to_owned());
        let mut ports = Vec::new();
        if let Some(app) = p.app_port {
            ports.push(format!("app {app}"));
        }
        if let Some(db) = p.db_port {
            ports.push(format!("db {db}"));
        }
        table.add_row([
            p.repo.clone(),
            format!("#{}", p.pr),
            p.status.clone(),
            age,
            p.url.clone().unwrap_or_default(),
            ports.join(", "),
        ]);
    }
    table
}

/// The node table: each machine, its state, free memory and previews.
pub fn node_table(nodes: &Nodes) -> Table {
    let gib = |bytes: u64| format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30));
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header([
        format!("NODE ({})", nodes.engine),
        "ROLE".to_owned(),
        "STATE".to_owned(),
        "ADDRESS".to_owned(),
        "FREE MEMORY".to_owned(),
        "PREVIEWS".to_owned(),
    ]);
    for n in &nodes.nodes {
        table.add_row([
            n.id.chars().take(12).collect(),
            n.role.clone(),
            n.state.clone(),
            n.address.clone(),
            format!("{} of {}", gib(n.free_memory_bytes), gib(n.memory_bytes)),
            if n.previews.is_empty() {
                "-".to_owned()
            } else {
                n.previews.join(", ")
            },
        ]);
    }
    table
}

/// `45s`, `12m`, `3h05m`, `2d04h`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(-5), "0s");
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(720), "12m");
        assert_eq!(human_age(3 * 3600 + 300), "3h05m");
        assert_eq!(human_age(2 * 86400 + 4 * 3600), "2d04h");
    }

    #[test]
    fn table_shape() {
        let previews = vec![Preview {
            id: "acme-api-pr-7".into(),
            repo: "acme/api".into(),
            pr: 7,
            status: "running".into(),
            url: Some("http://203.0.113.10/acme-api/pr-7/".into()),
            app_port: Some(8001),
            db_port: Some(9001),
            created_at: Some("2025-01-01T00:00:00Z".into()),
            updated_at: None,
            sha: None,
        }];
        let now: jiff::Timestamp = "2025-01-01T02:30:00Z".parse().unwrap();
        insta::assert_snapshot!(preview_table(&previews, now).to_string());
    }

    #[test]
    fn node_table_shape() {
        // What `GET /api/nodes` sends for a two-node swarm.
        let nodes: Nodes = serde_json::from_str(
            r#"{"engine":"swarm","nodes":[
              {"id":"vnem3da09fgvw07iwh9dn0iig","role":"manager","state":"ready","availability":"active",
               "address":"10.10.0.2","memory_bytes":4294967296,"free_memory_bytes":3221225472,
               "previews":["acme-api-pr-7"]},
              {"id":"wifocr1u9s86ejxn0uhr8381t","role":"worker","state":"down","availability":"active",
               "address":"10.10.0.3","memory_bytes":2147483648,"free_memory_bytes":2147483648,
               "previews":[]}]}"#,
        )
        .unwrap();
        insta::assert_snapshot!(node_table(&nodes).to_string());
    }
}
