//! `preview destroy`: tears down every preview, deletes the webhooks setup made, destroys the
//! server with terraform, then removes the secrets and the config. Every step runs and reports
//! even when an earlier one failed, except the last: secrets and config are kept while anything
//! is left behind, because a second `destroy` needs them.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::Args;

use super::config::Config;
use super::home::{Home, HomeArgs, remove_if_exists};
use super::infra::Terraform;
use super::progress::Phase;
use super::remote::Remote;
use super::secrets::{SecretName, SecretStore};
use super::state::SetupState;
use super::tools::{self, Tool};
use super::webhooks::GitHubHooks;

/// Arguments of `preview destroy`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Asks you to type the project name unless --yes is given.

Examples:
  preview destroy
  preview destroy --yes --keep-config")]
pub struct DestroyArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep config.yml and the stored secrets, to run `preview setup` again later
    #[arg(long)]
    pub keep_config: bool,
}

/// Runs `preview destroy`.
pub async fn run(args: DestroyArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let store = SecretStore::open(config.secret_store, &config.project, &home)?;
    let mut state = SetupState::load(&home)?;
    confirm(&args, &config)?;
    tools::require(&[Tool::Terraform])?;
    let log = home.new_log("destroy")?;
    eprintln!("Tool output goes to {}", log.display());

    let mut failed: Vec<&str> = Vec::new();

    // 1. Previews, through the orchestrator's API.
    let phase = Phase::start("previews");
    match &state.server {
        None => phase.done("skipped: no server recorded"),
        Some(server) => {
            let remote = Remote::new(server, &config, &home).with_log(log.clone());
            match teardown_previews(&remote, &store).await {
                Ok(n) => phase.done(&format!("{n} preview(s) torn down")),
                Err(err) => {
                    phase.failed(&format!("{err:#}"));
                    failed.push("previews");
                }
            }
        }
    }

    // 2. Webhooks that setup created.
    let phase = Phase::start("webhooks");
    if state.webhooks.is_empty() {
        phase.done("skipped: setup recorded none");
    } else {
        match delete_webhooks(&config, &store, &mut state, &home).await {
            Ok(n) => phase.done(&format!("{n} deleted")),
            Err(err) => {
                phase.failed(&format!("{err:#}"));
                failed.push("webhooks");
            }
        }
    }

    // 3. The server and everything terraform made.
    let phase = Phase::start("terraform destroy");
    let destroyed = async {
        let token = store.resolve(SecretName::DoToken)?;
        let tf = Terraform::prepare(&config, &home, token, log.clone())?;
        tf.init().await?;
        tf.destroy().await
    }
    .await;
    match destroyed {
        Ok(()) => {
            state.server = None;
            state.completed.clear();
            state.finished_at = None;
            state.save(&home)?;
            phase.done("server and network resources destroyed");
        }
        Err(err) => {
            phase.failed(&format!("{err:#}"));
            failed.push("terraform destroy");
        }
    }

    // 4. Secrets and config.
    let phase = Phase::start("secrets and config");
    if args.keep_config {
        phase.done("kept (--keep-config)");
    } else if !failed.is_empty() {
        phase.done(
            "kept, because an earlier step failed: run `preview destroy` again after fixing it",
        );
    } else {
        match forget(&store, &home).await {
            Ok(()) => phase.done(&format!(
                "removed from {} and {}",
                store.describe(),
                home.root().display()
            )),
            Err(err) => {
                phase.failed(&format!("{err:#}"));
                failed.push("secrets and config");
            }
        }
    }

    if failed.is_empty() {
        println!("Destroyed project {}.", config.project);
        Ok(())
    } else {
        bail!(
            "destroy did not complete: {} failed; full log: {}",
            failed.join(", "),
            log.display()
        )
    }
}

fn confirm(args: &DestroyArgs, config: &Config) -> Result<()> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("destroy needs confirmation: run it in a terminal, or pass --yes");
    }
    let typed: String = dialoguer::Input::new()
        .with_prompt(format!(
            "This deletes every preview, the webhooks and the server. Type the project name ({}) to continue",
            config.project
        ))
        .allow_empty(true)
        .interact_text()?;
    if typed.trim() != config.project {
        bail!("cancelled: the name did not match, nothing was changed");
    }
    Ok(())
}

async fn teardown_previews(remote: &Remote, store: &SecretStore) -> Result<usize> {
    tools::require(&[Tool::Ssh])?;
    let token = store.resolve(SecretName::ApiToken)?;
    let previews = remote.previews(&token).await?;
    let mut errors = Vec::new();
    for preview in &previews {
        if let Err(err) = remote.delete_preview(&token, &preview.id).await {
            errors.push(format!("{}: {err:#}", preview.id));
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!("{}", errors.join("; ")));
    }
    // Teardown is asynchronous (202); give it a moment so terraform does not race it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !previews.is_empty() && std::time::Instant::now() < deadline {
        match remote.previews(&token).await {
            Ok(left) if left.is_empty() => break,
            Ok(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            Err(_) => break,
        }
    }
    Ok(previews.len())
}

async fn delete_webhooks(
    config: &Config,
    store: &SecretStore,
    state: &mut SetupState,
    home: &Home,
) -> Result<usize> {
    let token = store.resolve(SecretName::GithubToken)?;
    let hooks = GitHubHooks::new(&config.github_api_url(), &token)?;
    let mut errors = Vec::new();
    let mut deleted = 0;
    for (repo, id) in state.webhooks.clone() {
        match hooks.delete(&repo, id).await {
            Ok(()) => {
                deleted += 1;
                state.webhooks.remove(&repo);
                state.save(home)?;
            }
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    if errors.is_empty() {
        Ok(deleted)
    } else {
        Err(anyhow!("{}", errors.join("; ")))
    }
}

async fn forget(store: &SecretStore, home: &Home) -> Result<()> {
    for name in SecretName::ALL {
        store.delete(name)?;
    }
    SetupState::remove(home)?;
    remove_if_exists(&home.known_hosts_path())?;
    let ansible = home.ansible_dir();
    if ansible.is_dir() {
        std::fs::remove_dir_all(&ansible)?;
    }
    remove_if_exists(&home.config_path())?;
    Ok(())
}
