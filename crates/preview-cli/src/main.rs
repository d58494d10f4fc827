//! `preview`: the command-line interface of preview-deployer.

mod commands;
mod plan;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted previews of backend pull requests, on one droplet.
#[derive(Debug, Parser)]
#[command(
    name = "preview",
    version,
    after_help = "\
Examples:
  preview init                # answer a few questions
  preview setup               # create and configure the server, add the webhooks
  preview status              # server health and live previews
  preview access set acme/api --basic-auth reviewer   # previews behind a password
  preview plan ./my-app       # what would be built for a checkout, and why
  preview up ./my-app         # build and run it here, no server needed
  preview secrets set acme/api STRIPE_KEY   # a secret for trusted previews (hidden prompt)
  preview dashboard --open    # previews, build logs and live logs in the browser"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask for tokens, repositories and options; store the secrets; write config.yml
    Init(commands::InitArgs),
    /// Create the server with terraform, configure it with Ansible, add the GitHub webhooks
    Setup(commands::SetupArgs),
    /// Build and ship a new orchestrator binary, rolling back if it is not healthy
    Sync(commands::SyncArgs),
    /// Show the server's health and the live previews, or one preview's services
    Status(commands::StatusArgs),
    /// Tear down the previews, the webhooks and the server
    Destroy(commands::DestroyArgs),
    /// Choose who may see a repository's previews: basic auth, client networks
    Access(commands::AccessArgs),
    /// Show what would be built for a checkout, and why; optionally write the generated files
    Plan(plan::PlanArgs),
    /// Build and run a checkout on this machine, no server needed; Ctrl-C removes it
    Up(up::UpArgs),
    /// Set, list or unset a repository's preview secrets (env variables of trusted previews)
    Secrets(commands::SecretsArgs),
    /// Print the URL of the server's dashboard (previews, logs, actions), or open it
    Dashboard(commands::DashboardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(args) => commands::init::run(args).await,
            Command::Setup(args) => commands::setup::run(args).await,
            Command::Sync(args) => commands::sync::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Destroy(args) => commands::destroy::run(args).await,
            Command::Access(args) => commands::access::run(args).await,
            Command::Plan(args) => plan::run(args),
            Command::Up(args) => up::run(args).await,
            Command::Secrets(args) => commands::preview_secrets::run(args).await,
            Command::Dashboard(args) => commands::dashboard::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
