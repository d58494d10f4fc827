//! `preview dashboard`: where the orchestrator's dashboard is, how to log in, and optionally
//! opens it in a browser.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::remote::ORCHESTRATOR_URL;
use super::secrets::{SecretName, SecretStore};
use super::state::SetupState;
use super::tools::find_on_path;

/// Arguments of `preview dashboard`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Log in with the API token that `preview init` generated (`--show-token` prints it). The session
cookie is Secure: browsers keep it over HTTPS (a domain with its certificate), or on localhost
through the SSH tunnel this command prints.

Examples:
  preview dashboard
  preview dashboard --open
  preview dashboard --json | jq -r .url")]
pub struct DashboardArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Open the URL with xdg-open
    #[arg(long)]
    pub open: bool,
    /// Also print the API token to log in with (it is a secret: mind your terminal's history)
    #[arg(long)]
    pub show_token: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `dashboard --json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardReport {
    /// The public URL, through the server's nginx.
    pub url: String,
    /// Whether the public URL is HTTPS (the login cookie needs it, or localhost).
    pub https: bool,
    /// The SSH tunnel that reaches the dashboard on localhost.
    pub tunnel_command: Vec<String>,
    /// The URL while the tunnel runs.
    pub tunnel_url: String,
    /// The API token, with `--show-token` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The dashboard's public URL: its own hostname under the preview domain (served over HTTPS
/// with the wildcard certificate), else `/_dashboard/` on the server's address.
pub fn public_url(config: &Config, server_ip: &str) -> (String, bool) {
    match &config.tls {
        Some(tls) => (format!("https://dashboard.{}/", tls.domain), true),
        None => (format!("http://{server_ip}/_dashboard/"), false),
    }
}

/// Runs `preview dashboard`.
pub async fn run(args: DashboardArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let Some(server) = state.server.clone() else {
        bail!("no server yet: run `preview setup` first");
    };
    let (url, https) = public_url(&config, &server.ip);
    let port = ORCHESTRATOR_URL.rsplit(':').next().unwrap_or("3000");
    let tunnel_command = vec![
        "ssh".to_owned(),
        "-N".to_owned(),
        "-L".to_owned(),
        format!("{port}:127.0.0.1:{port}"),
        format!("{}@{}", server.ssh_user, server.ip),
    ];
    let token = if args.show_token {
        let store = SecretStore::open(config.secret_store, &config.project, &home)?;
        Some(
            store
                .get(SecretName::ApiToken)?
                .context("the API token is not in the secret store: run `preview init` again")?,
        )
    } else {
        None
    };
    let report = DashboardReport {
        url,
        https,
        tunnel_command,
        tunnel_url: format!("http://127.0.0.1:{port}/dashboard/"),
        token,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.url);
        if !report.https {
            println!(
                "note: over plain HTTP browsers do not keep the login cookie (it is Secure); \
                 use a domain with HTTPS (`preview init --domain`), or the tunnel:\n  {}\n  then {}",
                report.tunnel_command.join(" "),
                report.tunnel_url
            );
        }
        match &report.token {
            Some(token) => println!("API token: {token}"),
            None => {
                println!("log in with the API token (`preview dashboard --show-token` prints it)")
            }
        }
    }
    if args.open {
        open(&report.url).await?;
    }
    Ok(())
}

async fn open(url: &str) -> Result<()> {
    let Some(opener) = find_on_path("xdg-open") else {
        bail!("xdg-open is not installed; open {url} in a browser");
    };
    preview_exec::Cmd::new(opener, "open the dashboard in a browser")
        .arg(url)
        .pass_env("DISPLAY")
        .pass_env("WAYLAND_DISPLAY")
        .pass_env("XDG_RUNTIME_DIR")
        .pass_env("DBUS_SESSION_BUS_ADDRESS")
        .pass_env("HOME")
        .pass_env("BROWSER")
        .timeout(Duration::from_secs(30))
        .run()
        .await
        .with_context(|| format!("xdg-open could not open {url}"))?;
    Ok(())
}
