//! `preview access`: who may see a repository's previews. Basic auth (one user; the password is
//! hashed here, so only its SHA-512-crypt hash leaves this machine) and an allowlist of client
//! networks, enforced by nginx for every preview of the repository, including live ones. The
//! settings go to the orchestrator's internal API over SSH, as the other commands do.

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use preview_core::access::{
    ClientCidr, MAX_PASSWORD_LEN, PasswordHash, validate_password, validate_user,
};
use preview_core::id::RepoFullName;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::remote::Remote;
use super::secrets::{SecretName, SecretStore};
use super::state::SetupState;
use super::tools::{self, Tool};

/// Arguments of `preview access`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Access control applies to every preview of the repository at once, live ones included, through
nginx; the webhook and the orchestrator's health checks are never behind it. With both basic auth
and an allowlist, a visitor needs both.

Examples:
  preview access set acme/api --basic-auth reviewer          # prompts for the password
  echo \"$PASSWORD\" | preview access set acme/api --basic-auth reviewer
  preview access set acme/api --allow 203.0.113.0/24 --allow 2001:db8::/32
  preview access show acme/api
  preview access unset acme/api --allow                     # keep basic auth
  preview access unset acme/api                             # public again")]
pub struct AccessArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    #[command(subcommand)]
    pub command: AccessCommand,
}

/// The `preview access` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AccessCommand {
    /// Require a password or a client network for the repository's previews; what is not named
    /// stays as it is
    #[command(after_help = "\
The password is read from a hidden prompt (asked twice), or from stdin when stdin is not a
terminal; never from the command line. It is hashed (SHA-512-crypt) on this machine: only the hash
reaches the server. --allow replaces the whole allowlist.

Examples:
  preview access set acme/api --basic-auth reviewer
  preview access set acme/api --allow 203.0.113.0/24 --allow 198.51.100.7")]
    #[command(group(ArgGroup::new("control").required(true).multiple(true).args(["basic_auth", "allow"])))]
    Set(SetArgs),
    /// Show who may see the repository's previews
    #[command(after_help = "\
Examples:
  preview access show acme/api
  preview access show acme/api --json")]
    Show(ShowArgs),
    /// Remove access control: all of it, or only --basic-auth or --allow
    #[command(after_help = "\
Examples:
  preview access unset acme/api               # public again
  preview access unset acme/api --basic-auth  # keep the allowlist")]
    Unset(UnsetArgs),
}

/// Arguments of `preview access set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// The repository, as owner/name
    #[arg(value_name = "OWNER/REPO", value_parser = parse_repo)]
    pub repo: RepoFullName,
    /// Ask visitors for this user and a password (prompted for, or read from stdin)
    #[arg(long, value_name = "USER", value_parser = parse_user)]
    pub basic_auth: Option<String>,
    /// Let in only clients from this network, an IPv4 or IPv6 address or CIDR (repeatable)
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<ClientCidr>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `preview access show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The repository, as owner/name
    #[arg(value_name = "OWNER/REPO", value_parser = parse_repo)]
    pub repo: RepoFullName,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `preview access unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// The repository, as owner/name
    #[arg(value_name = "OWNER/REPO", value_parser = parse_repo)]
    pub repo: RepoFullName,
    /// Remove basic auth only
    #[arg(long)]
    pub basic_auth: bool,
    /// Remove the allowlist only
    #[arg(long)]
    pub allow: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_repo(text: &str) -> Result<RepoFullName, String> {
    RepoFullName::parse(text).map_err(|e| e.to_string())
}

fn parse_user(text: &str) -> Result<String, String> {
    validate_user(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_cidr(text: &str) -> Result<ClientCidr, String> {
    text.parse().map_err(|e: preview_core::Error| e.to_string())
}

/// What the orchestrator answers about a repository's access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessView {
    /// `owner/name`.
    pub repo: String,
    /// True when anyone may see the previews.
    pub public: bool,
    /// The basic-auth user, if set.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthView>,
    /// Allowed client networks; empty means any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Live previews whose nginx conf predates access control (covered from their next deploy).
    #[serde(default)]
    pub uncovered: Vec<String>,
}

/// The user of basic auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicAuthView {
    /// The user name.
    pub user: String,
}

impl AccessView {
    /// One line for people.
    pub fn summary(&self) -> String {
        let mut needs = Vec::new();
        if let Some(auth) = &self.basic_auth {
            needs.push(format!("the password of user {}", auth.user));
        }
        if !self.allow.is_empty() {
            needs.push(format!("a client in {}", self.allow.join(", ")));
        }
        if needs.is_empty() {
            format!("{}: previews are public (no access control)", self.repo)
        } else {
            format!("{}: previews need {}", self.repo, needs.join(" and "))
        }
    }
}

/// The `PATCH` body of `set`: only what the flags name.
pub fn set_body(user: Option<(&str, &PasswordHash)>, allow: &[ClientCidr]) -> Value {
    let mut body = json!({});
    if let Some((user, hash)) = user {
        body["basicAuth"] = json!({ "user": user, "passwordHash": hash.as_str() });
    }
    if !allow.is_empty() {
        body["allow"] = allow.iter().map(ToString::to_string).collect();
    }
    body
}

/// The `PATCH` body of `unset --basic-auth`/`--allow`; `None` for `unset` alone (a `DELETE`).
pub fn unset_body(basic_auth: bool, allow: bool) -> Option<Value> {
    if !basic_auth && !allow {
        return None;
    }
    let mut body = json!({});
    if basic_auth {
        body["basicAuth"] = Value::Null;
    }
    if allow {
        body["allow"] = Value::Null;
    }
    Some(body)
}

/// A random salt of 16 characters of crypt's alphabet.
fn random_salt() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The password from a hidden prompt (twice), or from stdin when it is not a terminal (one
/// trailing newline dropped).
fn read_password(user: &str) -> Result<String> {
    let password = if std::io::stdin().is_terminal() {
        dialoguer::Password::new()
            .with_prompt(format!("Password for {user}"))
            .with_confirmation("Repeat it", "the passwords differ; try again")
            .validate_with(|s: &String| validate_password(s).map_err(|e| e.to_string()))
            .interact()
            .context("reading the password")?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .take((MAX_PASSWORD_LEN * 4 + 2) as u64)
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        text.strip_suffix('\r').unwrap_or(text).to_owned()
    };
    validate_password(&password).map_err(|e| anyhow!("{e}"))?;
    Ok(password)
}

/// Runs `preview access`.
pub async fn run(args: AccessArgs) -> Result<()> {
    // The password is asked for before anything else, so a bad one costs no connection.
    let (method, repo, body, json_out) = match &args.command {
        AccessCommand::Set(set) => {
            let hash = match &set.basic_auth {
                Some(user) => Some(PasswordHash::new(&read_password(user)?, &random_salt())?),
                None => None,
            };
            let user = set.basic_auth.as_deref().zip(hash.as_ref());
            (
                "PATCH",
                &set.repo,
                Some(set_body(user, &set.allow)),
                set.json,
            )
        }
        AccessCommand::Show(show) => ("GET", &show.repo, None, show.json),
        AccessCommand::Unset(unset) => match unset_body(unset.basic_auth, unset.allow) {
            Some(body) => ("PATCH", &unset.repo, Some(body), unset.json),
            None => ("DELETE", &unset.repo, None, unset.json),
        },
    };
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let Some(server) = state.server.clone() else {
        bail!("no server yet: run `preview setup` first");
    };
    tools::require(&[Tool::Ssh])?;
    let remote = Remote::new(&server, &config, &home);
    let token = SecretStore::open(config.secret_store, &config.project, &home)?
        .resolve(SecretName::ApiToken)?;
    let path = format!("/api/repos/{}/{}/access", repo.owner(), repo.name());
    let response = match &body {
        Some(body) => remote.api_json(method, &path, &token, body).await?,
        None => remote.api(method, &path, Some(&token)).await?,
    };
    if response.status != 200 {
        let error = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| response.body.trim().to_owned());
        bail!(
            "access of {repo} on {}: {error} (HTTP {})",
            remote.host(),
            response.status
        );
    }
    let view: AccessView = serde_json::from_str(&response.body)
        .with_context(|| format!("the orchestrator on {} sent a bad answer", remote.host()))?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("{}", view.summary());
        if !view.uncovered.is_empty() && !view.public {
            eprintln!(
                "warning: {} predate access control and stay public until their next deploy (push a commit, or `curl -X POST http://127.0.0.1:3000/api/previews/ID/redeploy` with the API token on the server)",
                view.uncovered.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "preview")]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Access(AccessArgs),
    }

    fn parse(args: &[&str]) -> Result<AccessCommand, String> {
        let mut argv = vec!["preview", "access"];
        argv.extend(args);
        Cli::try_parse_from(argv)
            .map(|cli| match cli.command {
                Top::Access(a) => a.command,
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn set_takes_a_user_and_repeated_networks() {
        let AccessCommand::Set(set) = parse(&[
            "set",
            "acme/api",
            "--basic-auth",
            "reviewer",
            "--allow",
            "203.0.113.0/24",
            "--allow",
            "2001:db8::/32",
        ])
        .unwrap() else {
            panic!("not set")
        };
        assert_eq!(set.repo.full_name(), "acme/api");
        assert_eq!(set.basic_auth.as_deref(), Some("reviewer"));
        let allow: Vec<String> = set.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["203.0.113.0/24", "2001:db8::/32"]);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        for (args, says) in [
            (&["set", "acme/api"][..], "--basic-auth <USER>"),
            (
                &["set", "acme/api", "--allow", "203.0.113.7/24"],
                "the network is 203.0.113.0/24",
            ),
            (
                &["set", "acme/api", "--allow", "10.0.0.0/40"],
                "more than 32",
            ),
            (
                &["set", "acme/api", "--allow", "localhost"],
                "not an IPv4 or IPv6 address",
            ),
            (
                &["set", "acme/api", "--basic-auth", "a:b"],
                "':' is not allowed",
            ),
            (&["set", "acme", "--basic-auth", "a"], "is not owner/name"),
            (
                &["set", "acme/api", "--basic-auth", "a", "--password", "x"],
                "unexpected argument '--password'",
            ),
            (&["show"], "<OWNER/REPO>"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    #[test]
    fn unset_removes_all_or_what_it_names() {
        let AccessCommand::Unset(unset) = parse(&["unset", "acme/api", "--allow"]).unwrap() else {
            panic!("not unset")
        };
        assert_eq!(
            unset_body(unset.basic_auth, unset.allow),
            Some(json!({ "allow": null }))
        );
        assert_eq!(unset_body(false, false), None, "everything: a DELETE");
        assert!(matches!(
            parse(&["show", "acme/api", "--json"]).unwrap(),
            AccessCommand::Show(ShowArgs { json: true, .. })
        ));
    }

    #[test]
    fn set_sends_the_hash_and_never_the_password() {
        let hash = PasswordHash::new("correct horse battery", &random_salt()).unwrap();
        let body = set_body(Some(("reviewer", &hash)), &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(body["basicAuth"]["user"], "reviewer");
        assert!(
            body["basicAuth"]["passwordHash"]
                .as_str()
                .unwrap()
                .starts_with("$6$")
        );
        assert_eq!(body["allow"], json!(["10.0.0.0/8"]));
        assert!(!body.to_string().contains("correct horse"));
        assert_eq!(
            set_body(None, &["10.0.0.0/8".parse().unwrap()]),
            json!({ "allow": ["10.0.0.0/8"] })
        );
        let salt = random_salt();
        assert_eq!(salt.len(), 16);
        assert_ne!(salt, random_salt(), "salts are random");
    }

    #[test]
    fn help_teaches_with_examples() {
        let mut cli = Cli::command();
        let access = cli.find_subcommand_mut("access").unwrap();
        let help = access.render_long_help().to_string();
        assert!(
            help.contains("preview access set acme/api --basic-auth reviewer"),
            "{help}"
        );
        assert!(help.contains("webhook"), "{help}");
        let set = access
            .find_subcommand_mut("set")
            .unwrap()
            .render_long_help()
            .to_string();
        for needle in [
            "stdin",
            "never from the command line",
            "--allow <CIDR>",
            "Examples",
        ] {
            assert!(set.contains(needle), "{needle}: {set}");
        }
    }

    #[test]
    fn summaries_say_what_a_visitor_needs() {
        let mut view = AccessView {
            repo: "acme/api".into(),
            public: false,
            basic_auth: Some(BasicAuthView {
                user: "reviewer".into(),
            }),
            allow: vec!["10.0.0.0/8".into()],
            uncovered: Vec::new(),
        };
        assert_eq!(
            view.summary(),
            "acme/api: previews need the password of user reviewer and a client in 10.0.0.0/8"
        );
        view.basic_auth = None;
        view.allow.clear();
        assert_eq!(
            view.summary(),
            "acme/api: previews are public (no access control)"
        );
    }
}
