//! `preview secrets set|list|unset owner/repo ...`: the per-repository secrets that trusted
//! previews get as environment variables. They live on the server only (the orchestrator's
//! SECRETS_DIR), reached like every other command does: ssh, then curl on the server to the
//! loopback API, the token and the value in a curl config on curl's stdin. A value is never on
//! a command line, here or on the server, and the CLI never prints one.
//!
//! (The CLI's own tokens, kept in the OS keychain, are [`super::secrets`]'s.)

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use preview_core::id::RepoFullName;
use preview_core::repo_secrets::{MAX_VALUE_BYTES, SecretName, validate_value};
use serde::Deserialize;

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::remote::{ApiResponse, Remote};
use super::secrets::{SecretName as StoredSecret, SecretStore};
use super::state::SetupState;
use super::tools::{self, Tool};

/// Arguments of `preview secrets`.
#[derive(Debug, Args)]
#[command(after_help = "\
Secrets are per repository and live on the server only. A preview gets them as environment
variables when its app starts, and only when its commit is trusted (a collaborator's, or one a
maintainer approved); never at build time, never in an image, a file of the preview, a PR
comment or the API. Running previews get a change at their next deploy.

Examples:
  preview secrets set acme/api STRIPE_KEY               # type the value at a hidden prompt
  pass show stripe | preview secrets set acme/api STRIPE_KEY
  preview secrets set acme/api TLS_KEY < key.pem        # the file's bytes (one final newline dropped)
  preview secrets list acme/api
  preview secrets list acme/api --json
  preview secrets unset acme/api STRIPE_KEY")]
pub struct SecretsArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    #[command(subcommand)]
    pub command: SecretsCommand,
}

/// What to do with a repository's secrets.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a secret: the value comes from a hidden prompt, or from stdin when it is not a terminal
    #[command(after_help = "\
The value is never taken from the command line: it would stay in your shell history and show
in `ps`. Type it at the prompt, or pipe or redirect it on stdin (one final newline is dropped).
At most 64 KiB of UTF-8 text.")]
    Set {
        /// The repository, owner/name (as in ALLOWED_REPOS)
        #[arg(value_parser = parse_repo)]
        repo: RepoFullName,
        /// The variable's name: [A-Za-z_][A-Za-z0-9_]*; not one the preview sets itself (PORT,
        /// PREVIEW_*, DATABASE_URL, ...) nor one Docker Compose reads (DOCKER_*, COMPOSE_*, ...)
        #[arg(value_parser = parse_name)]
        name: SecretName,
        /// Refused: a value on the command line
        #[arg(hide = true, num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        value_on_command_line: Vec<String>,
    },
    /// List the names of a repository's secrets (never their values)
    List {
        /// The repository, owner/name
        #[arg(value_parser = parse_repo)]
        repo: RepoFullName,
        /// Print JSON: {"repo": ..., "secrets": [names]}
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret; previews lose it at their next deploy
    Unset {
        /// The repository, owner/name
        #[arg(value_parser = parse_repo)]
        repo: RepoFullName,
        /// The variable's name
        #[arg(value_parser = parse_name)]
        name: SecretName,
    },
}

fn parse_repo(text: &str) -> std::result::Result<RepoFullName, String> {
    RepoFullName::parse(text).map_err(|e| format!("{e} (expected owner/name)"))
}

fn parse_name(text: &str) -> std::result::Result<SecretName, String> {
    SecretName::parse(text).map_err(|e| e.to_string())
}

/// The API path of `repo`'s secrets, or of its secret `name`.
pub fn api_path(repo: &RepoFullName, name: Option<&SecretName>) -> String {
    let base = format!("/api/repos/{}/{}/secrets", repo.owner(), repo.name());
    match name {
        Some(name) => format!("{base}/{name}"),
        None => base,
    }
}

/// The value read from stdin: at most one byte more than allowed is read, and one final
/// newline (`\n` or `\r\n`, as `echo` and editors add) is dropped.
pub fn value_from_reader(mut reader: impl Read) -> Result<String> {
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(MAX_VALUE_BYTES as u64 + 3)
        .read_to_end(&mut bytes)
        .context("reading the secret's value from stdin")?;
    if bytes.len() > MAX_VALUE_BYTES + 2 {
        bail!("invalid secret value: stdin holds more than {MAX_VALUE_BYTES} bytes (64 KiB)");
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    validate_value(&bytes)?;
    Ok(String::from_utf8(bytes).expect("validate_value checked UTF-8"))
}

/// Runs `preview secrets`.
pub async fn run(args: SecretsArgs) -> Result<()> {
    match args.command {
        SecretsCommand::Set {
            repo,
            name,
            value_on_command_line,
        } => {
            if !value_on_command_line.is_empty() {
                // The words are not echoed: they may be the value.
                bail!(
                    "`preview secrets set` takes no value on the command line ({} more word(s) given): \
                     it would stay in your shell history and show in `ps`. Run \
                     `preview secrets set {repo} {name}` and type the value at the prompt, or pipe \
                     it on stdin. If that was the real value, consider it exposed and rotate it.",
                    value_on_command_line.len()
                );
            }
            let value = read_value(&repo, &name)?;
            let (remote, token) = connect(&args.home)?;
            let response = remote
                .api_with_body("PUT", &api_path(&repo, Some(&name)), &token, &value)
                .await?;
            let answer = expect_success(&response, &format!("setting {name} for {repo}"))?;
            let what = if answer.status.as_deref() == Some("updated") {
                "updated"
            } else {
                "set"
            };
            println!(
                "{name} {what} for {repo}. Previews of trusted commits get it at their next deploy."
            );
            Ok(())
        }
        SecretsCommand::List { repo, json } => {
            let (remote, token) = connect(&args.home)?;
            let response = remote
                .api("GET", &api_path(&repo, None), Some(&token))
                .await?;
            let answer = expect_success(&response, &format!("listing the secrets of {repo}"))?;
            let names = answer.secrets.unwrap_or_default();
            if json {
                let out = serde_json::json!({ "repo": repo.full_name(), "secrets": names });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if names.is_empty() {
                println!("{repo} has no preview secrets.");
            } else {
                for name in names {
                    println!("{name}");
                }
            }
            Ok(())
        }
        SecretsCommand::Unset { repo, name } => {
            let (remote, token) = connect(&args.home)?;
            let response = remote
                .api("DELETE", &api_path(&repo, Some(&name)), Some(&token))
                .await?;
            expect_success(&response, &format!("removing {name} from {repo}"))?;
            println!("{name} removed from {repo}. Previews lose it at their next deploy.");
            Ok(())
        }
    }
}

/// The value from a hidden prompt (entered twice) on a terminal, else from stdin.
fn read_value(repo: &RepoFullName, name: &SecretName) -> Result<String> {
    if std::io::stdin().is_terminal() {
        let value = dialoguer::Password::new()
            .with_prompt(format!("Value of {name} for {repo} (hidden)"))
            .with_confirmation("Again, to confirm", "the two entries differ")
            .interact()
            .context("reading the secret's value")?;
        validate_value(value.as_bytes())?;
        Ok(value)
    } else {
        value_from_reader(std::io::stdin().lock())
    }
}

/// The server and the API token, as `preview status` finds them.
fn connect(home: &HomeArgs) -> Result<(Remote, String)> {
    let home = Home::resolve(home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let Some(server) = state.server.as_ref() else {
        bail!("no server yet: run `preview setup` first");
    };
    tools::require(&[Tool::Ssh])?;
    let store = SecretStore::open(config.secret_store, &config.project, &home)?;
    let token = store.resolve(StoredSecret::ApiToken)?;
    Ok((Remote::new(server, &config, &home), token))
}

/// The API's answer (names only; the server never sends a value).
#[derive(Debug, Default, Deserialize)]
struct SecretsAnswer {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    secrets: Option<Vec<String>>,
    #[serde(default)]
    error: Option<String>,
}

/// The answer of a 2xx, or the server's own message as the error.
fn expect_success(response: &ApiResponse, what: &str) -> Result<SecretsAnswer> {
    let answer: SecretsAnswer = serde_json::from_str(&response.body).unwrap_or_default();
    if (200..300).contains(&response.status) {
        return Ok(answer);
    }
    match answer.error {
        Some(message) => bail!("{what}: {message} (HTTP {})", response.status),
        None => bail!(
            "{what}: the orchestrator answered HTTP {}: {}",
            response.status,
            response.body.trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SecretsArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<SecretsCommand, String> {
        Cli::try_parse_from(std::iter::once("secrets").chain(argv.iter().copied()))
            .map(|c| c.args.command)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_subcommands_parse() {
        match parse(&["set", "Acme/API", "STRIPE_KEY"]).unwrap() {
            SecretsCommand::Set {
                repo,
                name,
                value_on_command_line,
            } => {
                assert_eq!(repo.full_name(), "Acme/API");
                assert_eq!(name.as_str(), "STRIPE_KEY");
                assert!(value_on_command_line.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["list", "acme/api", "--json"]).unwrap(),
            SecretsCommand::List { json: true, .. }
        ));
        assert!(matches!(
            parse(&["unset", "acme/api", "STRIPE_KEY"]).unwrap(),
            SecretsCommand::Unset { .. }
        ));
    }

    #[test]
    fn bad_repositories_and_names_are_refused_with_the_reason() {
        let err = parse(&["set", "acme", "KEY"]).unwrap_err();
        assert!(err.contains("expected owner/name"), "{err}");
        let err = parse(&["list", "acme/a b"]).unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
        let err = parse(&["set", "acme/api", "MY-KEY"]).unwrap_err();
        assert!(err.contains("environment variable name"), "{err}");
        let err = parse(&["unset", "acme/api", "DATABASE_URL"]).unwrap_err();
        assert!(
            err.contains("the preview sets this variable itself"),
            "{err}"
        );
        let err = parse(&["set", "acme/api", "DOCKER_HOST"]).unwrap_err();
        assert!(err.contains("Docker Compose reads"), "{err}");
        assert!(
            parse(&["get", "acme/api", "KEY"]).is_err(),
            "no way to read a value back"
        );
    }

    /// A value typed after the name is caught by the command, which refuses it without echoing
    /// it (clap's own error would print it).
    #[test]
    fn a_value_on_the_command_line_is_caught_not_echoed() {
        match parse(&["set", "acme/api", "KEY", "sk_live_oops", "--json"]).unwrap() {
            SecretsCommand::Set {
                value_on_command_line,
                ..
            } => assert_eq!(value_on_command_line, ["sk_live_oops", "--json"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stdin_values_lose_one_final_newline_and_are_bounded() {
        assert_eq!(value_from_reader(&b"sk_live_1\n"[..]).unwrap(), "sk_live_1");
        assert_eq!(
            value_from_reader(&b"sk_live_1\r\n"[..]).unwrap(),
            "sk_live_1"
        );
        assert_eq!(value_from_reader(&b"a\nb\n\n"[..]).unwrap(), "a\nb\n");
        assert_eq!(value_from_reader(&b"no newline"[..]).unwrap(), "no newline");
        let max = vec![b'x'; MAX_VALUE_BYTES];
        assert_eq!(value_from_reader(&max[..]).unwrap().len(), MAX_VALUE_BYTES);
        let over = vec![b'x'; MAX_VALUE_BYTES + 100];
        let err = value_from_reader(&over[..]).unwrap_err().to_string();
        assert!(err.contains("more than 65536 bytes (64 KiB)"), "{err}");
        let just_over = vec![b'x'; MAX_VALUE_BYTES + 1];
        let err = value_from_reader(&just_over[..]).unwrap_err().to_string();
        assert!(err.contains("65537 bytes; at most 65536"), "{err}");
        let err = value_from_reader(&b"\n"[..]).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn api_paths() {
        let repo = RepoFullName::parse("Acme/api.v2").unwrap();
        assert_eq!(api_path(&repo, None), "/api/repos/Acme/api.v2/secrets");
        let name = SecretName::parse("STRIPE_KEY").unwrap();
        assert_eq!(
            api_path(&repo, Some(&name)),
            "/api/repos/Acme/api.v2/secrets/STRIPE_KEY"
        );
    }
}
