//! `preview-orchestrator`: the daemon. See the library for what it does.

use std::sync::Arc;

use anyhow::Context;
use preview_orchestrator::config::ConfigError;
use preview_orchestrator::deploy::DockerRunner;
use preview_orchestrator::deploy::reconcile::spawn_sweeps;
use preview_orchestrator::{Config, DryRunRunner, JobRunner, Orchestrator, telemetry};
use std::time::Duration;

fn main() -> std::process::ExitCode {
    let config = match Config::load(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(ConfigError::Display(text)) => {
            print!("{text}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(ConfigError::Invalid(line)) => {
            eprintln!("preview-orchestrator: {line}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("preview-orchestrator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let _logs = telemetry::init_logging(
        &config.log_level,
        config.log_format,
        &config.logs_dir,
        config.log_retention_days,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(config.worker_threads))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let docker = if config.dry_run_jobs {
            tracing::warn!(
                "BENCHMARK MODE (--dry-run-jobs): jobs only touch the store; nothing is deployed"
            );
            None
        } else {
            Some(Arc::new(DockerRunner::from_config(&config).await?))
        };
        let runner: Arc<dyn JobRunner> = match &docker {
            Some(docker) => docker.clone(),
            None => Arc::new(DryRunRunner),
        };
        let ttl = Duration::from_secs(u64::from(config.cleanup_ttl_days) * 86_400);
        let config_github = (config.github_api_url.clone(), config.github_token.clone());
        // Handlers first: a SIGTERM right after the "listening" line must not kill us outright.
        let signal = shutdown_signal()?;
        let orchestrator = Orchestrator::start(config, runner).await?;
        let github = preview_github::GitHubClient::new(&config_github.0, &config_github.1)
            .context("invalid setting GITHUB_API_URL")?;
        let sweeps = docker.map(|docker| {
            docker.attach_store(orchestrator.store().clone());
            // One feedback for the runner and the queue: a PR's comment updates stay in order.
            orchestrator
                .scheduler()
                .set_feedback(docker.feedback().clone());
            spawn_sweeps(
                docker,
                orchestrator.scheduler().clone(),
                Some(github),
                ttl,
                Duration::from_secs(3600),
            )
        });
        let clean = orchestrator.run_until(signal).await;
        if let Some(sweeps) = sweeps {
            sweeps.abort();
        }
        tracing::info!(clean, "stopped");
        anyhow::Ok(())
    })
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
