//! `preview status`: whether the server answers, the orchestrator's version, health and queue
//! depth, and a table of the live previews (or all of it as JSON). Given one preview, it shows
//! that preview's services: each container (on a swarm, each task) and its state.

use anyhow::{Result, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use preview_engine::ContainerState;
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
Exits with status 1 when the server or the orchestrator does not answer, or when the preview
asked for is not there.

Examples:
  preview status
  preview status acme/api#7        # that preview's services: app, database, worker, ...
  preview status 7                 # the same, when only one repository has a PR #7
  preview status --json | jq '.previews[] | select(.status != \"running\")'
  preview status acme-api-pr-7 --json | jq '.services[] | select(.state != \"running\")'")]
pub struct StatusArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Show one preview and its services: `OWNER/REPO#PR`, a PR number, or a preview id
    #[arg(value_name = "PREVIEW", value_parser = PreviewSelector::parse)]
    pub preview: Option<PreviewSelector>,
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
    /// The services of the preview asked for (then `previews` holds only it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ContainerState>>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Runs `preview status`.
pub async fn run(args: StatusArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let report = gather(&config, &home, &state, args.preview.as_ref()).await?;
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

async fn gather(
    config: &Config,
    home: &Home,
    state: &SetupState,
    preview: Option<&PreviewSelector>,
) -> Result<StatusReport> {
    let Some(server) = state.server.clone() else {
        return Ok(StatusReport {
            server: None,
            reachable: false,
            health: None,
            previews: Vec::new(),
            nodes: None,
            services: None,
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
        services: None,
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
    if let Some(selector) = preview
        && report.error.is_none()
    {
        match selector.find(&report.previews) {
            Ok(one) => {
                let one = one.clone();
                match remote.preview_services(&token, &one.id).await {
                    Ok(services) => report.services = Some(services),
                    Err(err) => report.error = Some(format!("{err:#}")),
                }
                report.previews = vec![one];
            }
            Err(err) => report.error = Some(err),
        }
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
    if let Some(services) = &report.services {
        if services.is_empty() {
            println!("No containers: the preview is not started.");
        } else {
            println!("{}", service_table(services));
        }
    }
}

/// Which preview `preview status PREVIEW` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewSelector {
    /// `acme-api-pr-7`.
    Id(String),
    /// `acme/api#7`.
    RepoPr { repo: String, pr: u64 },
    /// `7` or `#7`: the only preview of a PR numbered so.
    Pr(u64),
}

impl PreviewSelector {
    /// Reads `OWNER/REPO#PR`, `#PR`, `PR` or a preview id.
    pub fn parse(text: &str) -> Result<Self, String> {
        let number = |n: &str| match n.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{n:?} is not a PR number (a whole number from 1); give OWNER/REPO#PR, a PR number or a preview id such as acme-api-pr-7"
            )),
        };
        if let Some((repo, pr)) = text.split_once('#') {
            if repo.is_empty() {
                return number(pr).map(Self::Pr);
            }
            let valid_repo = repo.split_once('/').is_some_and(|(owner, name)| {
                [owner, name].iter().all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                })
            });
            if !valid_repo {
                return Err(format!(
                    "{repo:?} is not a repository: write it OWNER/REPO, as in acme/api#7"
                ));
            }
            return Ok(Self::RepoPr {
                repo: repo.to_owned(),
                pr: number(pr)?,
            });
        }
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return number(text).map(Self::Pr);
        }
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "{text:?} is neither OWNER/REPO#PR, a PR number nor a preview id (letters, digits, `-`, `_`, `.`)"
            ));
        }
        Ok(Self::Id(text.to_owned()))
    }

    /// The one preview of `previews` this selects, or why there is none.
    pub fn find<'a>(&self, previews: &'a [Preview]) -> Result<&'a Preview, String> {
        let matches: Vec<&Preview> = previews
            .iter()
            .filter(|p| match self {
                Self::Id(id) => p.id == *id,
                Self::RepoPr { repo, pr } => p.repo.eq_ignore_ascii_case(repo) && p.pr == *pr,
                Self::Pr(pr) => p.pr == *pr,
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => {
                let known: Vec<String> = previews
                    .iter()
                    .map(|p| format!("{}#{}", p.repo, p.pr))
                    .collect();
                Err(format!(
                    "no preview {self} on the server; {}",
                    if known.is_empty() {
                        "there are none".to_owned()
                    } else {
                        format!("there are: {}", known.join(", "))
                    }
                ))
            }
            several => {
                let repos: Vec<&str> = several.iter().map(|p| p.repo.as_str()).collect();
                Err(format!(
                    "{self} is previewed in {} repositories ({}): name one, as in `preview status {}{self}`",
                    several.len(),
                    repos.join(", "),
                    repos[0]
                ))
            }
        }
    }
}

impl std::fmt::Display for PreviewSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::RepoPr { repo, pr } => write!(f, "{repo}#{pr}"),
            Self::Pr(pr) => write!(f, "#{pr}"),
        }
    }
}

/// The service table: each container (on a swarm, each task), its state and the engine's
/// words for it. A task that ended as it should (a migration that exited 0) is `done`.
pub fn service_table(services: &[ContainerState]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(["SERVICE", "CONTAINER", "STATE", "STATUS"]);
    for c in services {
        table.add_row([
            c.service.clone(),
            c.name.clone(),
            if c.is_done() {
                "done".to_owned()
            } else {
                c.state.clone()
            },
            c.status.clone(),
        ]);
    }
    table
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

    fn preview(repo: &str, pr: u64) -> Preview {
        Preview {
            id: format!("{}-pr-{pr}", repo.replace('/', "-")),
            repo: repo.into(),
            pr,
            status: "running".into(),
            url: None,
            app_port: None,
            db_port: None,
            created_at: None,
            updated_at: None,
            sha: None,
        }
    }

    #[test]
    fn a_preview_is_named_by_repo_and_pr_by_pr_or_by_id() {
        use PreviewSelector::*;
        let parse = PreviewSelector::parse;
        assert_eq!(
            parse("acme/api#7"),
            Ok(RepoPr {
                repo: "acme/api".into(),
                pr: 7
            })
        );
        assert_eq!(parse("#7"), Ok(Pr(7)));
        assert_eq!(parse("7"), Ok(Pr(7)));
        assert_eq!(parse("acme-api-pr-7"), Ok(Id("acme-api-pr-7".into())));
        for (bad, says) in [
            ("acme/api#x", "\"x\" is not a PR number"),
            ("acme/api#0", "\"0\" is not a PR number"),
            ("#", "\"\" is not a PR number"),
            ("acme#7", "\"acme\" is not a repository"),
            ("acme/api/x#7", "is not a repository"),
            ("a b", "is neither OWNER/REPO#PR"),
            ("../x", "is neither OWNER/REPO#PR"),
            ("", "is neither OWNER/REPO#PR"),
            ("99999999999999999999999", "is not a PR number"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_selector_finds_one_preview_or_says_why_not() {
        let previews = [
            preview("acme/api", 7),
            preview("acme/web", 7),
            preview("acme/web", 3),
        ];
        let find = |text: &str| {
            PreviewSelector::parse(text)
                .unwrap()
                .find(&previews)
                .map(|p| p.id.clone())
        };
        assert_eq!(find("ACME/Api#7").unwrap(), "acme-api-pr-7");
        assert_eq!(find("3").unwrap(), "acme-web-pr-3");
        assert_eq!(find("acme-web-pr-7").unwrap(), "acme-web-pr-7");
        assert_eq!(
            find("7").unwrap_err(),
            "#7 is previewed in 2 repositories (acme/api, acme/web): name one, as in `preview status acme/api#7`"
        );
        assert_eq!(
            find("acme/api#3").unwrap_err(),
            "no preview acme/api#3 on the server; there are: acme/api#7, acme/web#7, acme/web#3"
        );
        assert_eq!(
            PreviewSelector::Pr(1).find(&[]).unwrap_err(),
            "no preview #1 on the server; there are none"
        );
    }

    #[test]
    fn service_table_shape() {
        let container =
            |service: &str, state: &str, status: &str, exit_code, one_shot| ContainerState {
                name: format!("acme-api-pr-7-{service}-1"),
                service: service.into(),
                state: state.into(),
                status: status.into(),
                exit_code,
                one_shot,
            };
        insta::assert_snapshot!(
            service_table(&[
                container("app", "running", "Up 3 minutes (healthy)", None, false),
                container(
                    "worker",
                    "restarting",
                    "Restarting (1) 5 seconds ago",
                    Some(1),
                    false
                ),
                container(
                    "migrate",
                    "exited",
                    "Exited (0) 3 minutes ago",
                    Some(0),
                    true
                ),
                container("seed", "exited", "Exited (2) 3 minutes ago", Some(2), true),
            ])
            .to_string()
        );
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
