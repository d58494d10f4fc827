//! `preview setup`: terraform creates the server, Ansible configures it, the GitHub webhooks are
//! created or updated, and the result is verified. Each phase is recorded in the state file when
//! it completes, so a run that fails continues from the failed phase the next time.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::infra::{self, PlanSummary, PlaybookInputs, Terraform};
use super::progress::{self, Phase};
use super::remote::Remote;
use super::secrets::{SecretName, SecretStore};
use super::state::{SetupPhase, SetupState};
use super::tools::{self, Tool};
use super::webhooks::{GitHubHooks, HookChange, webhook_url};

/// Arguments of `preview setup`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Phases: terraform (init, plan, apply) → ssh (wait for the server) → ansible (configure it) →
webhooks (create or update) → verify (watch /health, ping the webhooks). A run that fails
continues from the failed phase the next time; the full tool output is in the log file whose
path is printed.

Examples:
  preview setup
  preview setup --yes --binary target/release/preview-orchestrator")]
pub struct SetupArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Apply the terraform plan without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Run every phase again, even those an interrupted run completed
    #[arg(long)]
    pub restart: bool,
    /// Orchestrator binary to install, instead of building it with cargo
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Seconds to wait for the new server to answer SSH
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub ssh_timeout: u64,
    /// Seconds to wait for the orchestrator's /health
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub health_timeout: u64,
}

/// Runs `preview setup`.
pub async fn run(args: SetupArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    tools::require(&[Tool::Terraform, Tool::AnsiblePlaybook, Tool::Ssh])?;
    let store = SecretStore::open(config.secret_store, &config.project, &home)?;
    let mut state = SetupState::load(&home)?;
    let finished = SetupPhase::ALL.iter().all(|p| state.is_done(*p));
    if args.restart || finished {
        state.completed.clear();
    }
    let log = home.new_log("setup")?;
    eprintln!("Tool output goes to {}", log.display());

    let run = SetupRun {
        args: &args,
        config: &config,
        home: &home,
        store: &store,
        log: &log,
    };
    for phase in SetupPhase::ALL {
        if state.is_done(phase) {
            progress::skipped(&phase.to_string(), "done by an earlier run");
            continue;
        }
        let spinner = Phase::start(phase.to_string());
        let result = run.phase(phase, &mut state, &spinner).await;
        match result {
            Ok(detail) => {
                spinner.done(&detail);
                state.mark_done(phase);
                state.save(&home)?;
            }
            Err(err) => {
                spinner.failed("failed");
                state.save(&home)?;
                return Err(err.context(format!(
                    "setup stopped in phase `{phase}`; full log: {}\nfix the cause and run `preview setup` again: it continues from `{phase}`",
                    log.display()
                )));
            }
        }
    }
    state.finished_at = Some(jiff::Timestamp::now().to_string());
    state.save(&home)?;
    let server = state.require_server()?;
    println!("Server {} is ready.", server.ip);
    println!(
        "Webhooks deliver to {}",
        webhook_url(config.tls.as_ref().map(|t| t.domain.as_str()), &server.ip)?
    );
    // The machines previews will run on: the server, or each node of the swarm.
    let token = store.resolve(SecretName::ApiToken)?;
    match Remote::new(server, &config, &home).nodes(&token).await {
        Ok(nodes) => println!("{}", super::status::node_table(&nodes)),
        Err(err) => eprintln!("(could not list the nodes: {err:#})"),
    }
    println!(
        "Open a pull request in {} to get a preview.",
        config.github.repositories.join(", ")
    );
    Ok(())
}

struct SetupRun<'a> {
    args: &'a SetupArgs,
    config: &'a Config,
    home: &'a Home,
    store: &'a SecretStore,
    log: &'a Path,
}

impl SetupRun<'_> {
    async fn phase(
        &self,
        phase: SetupPhase,
        state: &mut SetupState,
        spinner: &Phase,
    ) -> Result<String> {
        match phase {
            SetupPhase::Terraform => self.terraform(state, spinner).await,
            SetupPhase::Ssh => self.ssh(state, spinner).await,
            SetupPhase::Ansible => self.ansible(state, spinner).await,
            SetupPhase::Webhooks => self.webhooks(state, spinner).await,
            SetupPhase::Verify => self.verify(state, spinner).await,
        }
    }

    fn remote(&self, state: &SetupState) -> Result<Remote> {
        let server = state.require_server()?;
        Ok(Remote::new(server, self.config, self.home).with_log(self.log.to_owned()))
    }

    async fn terraform(&self, state: &mut SetupState, spinner: &Phase) -> Result<String> {
        let token = self.store.resolve(SecretName::DoToken)?;
        let tf = Terraform::prepare(self.config, self.home, token, self.log.to_owned())?;
        spinner.message("terraform init");
        tf.init().await?;
        spinner.message("terraform plan");
        let plan = match tf.plan().await {
            Ok(plan) => plan,
            Err(err) => {
                tf.discard_plan()?;
                return Err(err);
            }
        };
        // The saved plan holds the DigitalOcean token: it goes whether it is applied or not.
        let applied = self.apply_plan(&tf, &plan, spinner).await;
        tf.discard_plan()?;
        applied?;
        let server = tf.outputs().await?;
        let detail = format!("{}; server {} ({})", plan.line, server.ip, server.ssh_user);
        state.server = Some(server);
        Ok(detail)
    }

    /// Shows the plan's summary and applies it, asking first unless `--yes`.
    async fn apply_plan(&self, tf: &Terraform, plan: &PlanSummary, spinner: &Phase) -> Result<()> {
        if plan.has_changes {
            spinner.suspend(|| eprintln!("terraform: {}", plan.line));
            if !self.args.yes {
                if !std::io::stdin().is_terminal() {
                    bail!(
                        "terraform would apply `{}`; pass --yes to apply without a prompt",
                        plan.line
                    );
                }
                let go = spinner.suspend(|| {
                    dialoguer::Confirm::new()
                        .with_prompt("Apply this plan?")
                        .default(false)
                        .interact()
                })?;
                if !go {
                    bail!("cancelled: the plan was not applied");
                }
            }
            spinner.message("terraform apply");
            tf.apply().await?;
        }
        Ok(())
    }

    async fn ssh(&self, state: &mut SetupState, spinner: &Phase) -> Result<String> {
        let remote = self.remote(state)?;
        spinner.message(format!("waiting for {}", remote.destination()));
        remote
            .wait_for_ssh(
                Duration::from_secs(self.args.ssh_timeout),
                Duration::from_secs(5),
            )
            .await?;
        Ok(format!("{} answers", remote.destination()))
    }

    async fn ansible(&self, state: &mut SetupState, spinner: &Phase) -> Result<String> {
        let remote = self.remote(state)?;
        spinner.message("orchestrator binary");
        let binary = infra::orchestrator_binary(self.args.binary.as_deref(), self.log).await?;
        let github_token = self.store.resolve(SecretName::GithubToken)?;
        let webhook_secret = self.store.resolve(SecretName::WebhookSecret)?;
        let api_token = self.store.resolve(SecretName::ApiToken)?;
        spinner.message("ansible-playbook");
        infra::run_playbook(
            &PlaybookInputs {
                config: self.config,
                remote: &remote,
                binary: &binary,
                github_token: &github_token,
                webhook_secret: &webhook_secret,
                api_token: &api_token,
            },
            self.home,
            self.log,
        )
        .await?;
        Ok(format!("{} configured", remote.host()))
    }

    async fn webhooks(&self, state: &mut SetupState, spinner: &Phase) -> Result<String> {
        let server = state.require_server()?.clone();
        let url = webhook_url(
            self.config.tls.as_ref().map(|t| t.domain.as_str()),
            &server.ip,
        )?;
        let token = self.store.resolve(SecretName::GithubToken)?;
        let secret = self.store.resolve(SecretName::WebhookSecret)?;
        let hooks = GitHubHooks::new(&self.config.github_api_url(), &token)?;
        let (mut created, mut updated) = (0, 0);
        for repo in &self.config.github.repositories {
            spinner.message(repo.clone());
            let (id, change) = hooks.ensure(repo, &url, &secret).await?;
            match change {
                HookChange::Created => created += 1,
                HookChange::Updated => updated += 1,
            }
            state.webhooks.insert(repo.clone(), id);
            state.save(self.home)?;
        }
        // Repositories dropped from the config lose the hook an earlier setup made.
        let dropped: Vec<(String, u64)> = state
            .webhooks
            .iter()
            .filter(|(repo, _)| !self.config.github.repositories.contains(repo))
            .map(|(r, id)| (r.clone(), *id))
            .collect();
        for (repo, id) in &dropped {
            hooks.delete(repo, *id).await?;
            state.webhooks.remove(repo);
            state.save(self.home)?;
        }
        let mut detail = format!("{created} created, {updated} updated");
        if !dropped.is_empty() {
            detail.push_str(&format!(", {} removed", dropped.len()));
        }
        Ok(format!("{detail} → {url}"))
    }

    async fn verify(&self, state: &mut SetupState, spinner: &Phase) -> Result<String> {
        let remote = self.remote(state)?;
        spinner.message("waiting for /health");
        let health = remote
            .wait_for_health(
                None,
                Duration::from_secs(self.args.health_timeout),
                Duration::from_secs(2),
            )
            .await?;
        if health.docker == Some(false) {
            bail!(
                "the orchestrator on {} is up but cannot reach Docker",
                remote.host()
            );
        }
        let token = self.store.resolve(SecretName::GithubToken)?;
        let hooks = GitHubHooks::new(&self.config.github_api_url(), &token)?;
        for repo in &self.config.github.repositories {
            spinner.message(format!("ping {repo}"));
            let id = state.webhooks.get(repo).copied().ok_or_else(|| {
                anyhow!("no webhook recorded for {repo}; run `preview setup --restart`")
            })?;
            hooks
                .ping(repo, id)
                .await
                .with_context(|| format!("pinging the webhook of {repo}"))?;
        }
        Ok(format!(
            "orchestrator {} healthy; {} webhook(s) pinged",
            health.version.as_deref().unwrap_or("(unknown version)"),
            self.config.github.repositories.len()
        ))
    }
}
