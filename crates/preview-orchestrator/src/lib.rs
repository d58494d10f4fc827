//! The orchestrator daemon as a library, so that tests (and the runtime) can start it in-process
//! with their own [`JobRunner`].
//!
//! Start-up ([`Orchestrator::start`]): lock and load the store, queue again the work it shows
//! unfinished, bind the listener and serve. Shut-down ([`Orchestrator::shutdown`]): stop
//! accepting, let running jobs reach a safe point within the grace period, write the store.

pub mod access;
pub mod build_logs;
pub mod capacity;
pub mod config;
pub mod dashboard;
pub mod dedup;
pub mod deploy;
mod error;
pub mod feedback;
pub mod gate;
pub mod http;
pub mod jobs;
mod nginx;
pub mod queue;
pub mod record;
pub mod repo_secrets;
pub mod shared_databases;
pub mod store;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use config::{CapPolicy, Config, DatabaseMode, DeployPolicy};
pub use error::{Error, Result};
pub use jobs::{
    BoxFuture, DeployJob, DryRunRunner, JobContext, JobError, JobRunner, JobTrigger,
    MissingRuntime, TeardownJob, WakeOutcome,
};
pub use queue::{DeployRequest, JobKind, PreviewCap, Scheduler, Submission};
pub use record::{DeploymentRecord, DeploymentStatus, DesiredState, StatusChange};
pub use store::Store;

/// A running orchestrator.
pub struct Orchestrator {
    addr: SocketAddr,
    scheduler: Scheduler,
    store: Store,
    stop_http: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    upkeep: tokio::task::JoinHandle<()>,
    certificate_upkeep: Option<tokio::task::JoinHandle<()>>,
    sleep_sweep: Option<tokio::task::JoinHandle<()>>,
    route_watch: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

impl Orchestrator {
    /// Opens the store, resumes unfinished work, binds `config.bind_addr()` and serves.
    pub async fn start(config: Config, runner: Arc<dyn JobRunner>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let pools = config.port_pools()?;
        let store = Store::open(&config.deployments_db, pools)?;
        runner
            .on_start(store.clone())
            .await
            .context("the job runner's start-up (reconcile) failed")?;
        let access = access::AccessControl::open(&config)?;
        match access.restore().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(repos = n, "access files written again from the settings"),
            // The files are in place; nginx takes them at its next successful reload.
            Err(e) => tracing::error!(error = %e, "restoring the access files of previews failed"),
        }
        let bind = config.bind_addr();
        let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| {
            format!("invalid setting ORCHESTRATOR_BIND: cannot listen on {bind}")
        })?;
        let addr = listener.local_addr()?;
        // Before any job renders an nginx config: a sleeping preview's wake comes back here.
        runner.on_listening(addr);
        let scheduler = Scheduler::with_cap(
            store.clone(),
            runner.clone(),
            config.max_concurrent_builds as usize,
            config.routing(),
            queue::PreviewCap {
                max_live: config.max_concurrent_previews,
                policy: config.cap_policy,
            },
        );
        let resumed = scheduler.resume().await?;
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resumed unfinished jobs from the store");
        }
        let metrics = telemetry::metrics_handle();
        let upkeep = telemetry::spawn_upkeep(metrics.clone());
        let certificate_upkeep = tls::spawn_upkeep(&config, scheduler.clone())?;
        let sleep_sweep = config
            .idle_sleep()
            .map(|idle| jobs::spawn_sleep_sweep(runner.clone(), idle));
        // On a swarm, apps move when their node fails: routes follow them.
        let route_watch = (config.engine == config::EngineKind::Swarm)
            .then(|| jobs::spawn_route_watch(runner.clone(), std::time::Duration::from_secs(2)));
        let grace = config.shutdown_grace();
        let github =
            preview_github::GitHubClient::new(&config.github_api_url, &config.github_token)
                .context("invalid setting GITHUB_API_URL or GITHUB_TOKEN")?;
        let state = Arc::new(http::AppState {
            commands: gate::Commands::new(github, scheduler.clone()),
            verifier: preview_github::WebhookVerifier::new(config.github_webhook_secret.as_bytes()),
            dedup: dedup::DeliveryDedup::new(config.webhook_dedup_capacity as usize),
            docker: http::DockerProbe::new(config.docker_bin.clone()),
            secrets: Arc::new(repo_secrets::RepoSecretStore::new(config.secrets_dir())),
            config: Arc::new(config),
            access,
            scheduler: scheduler.clone(),
            metrics,
            started: Instant::now(),
            wakes: http::wake::WakeFlights::new(runner.clone()),
        });
        let (stop_http, stopped) = oneshot::channel::<()>();
        let dashboard = Arc::new(dashboard::Dashboard::new(
            state.config.clone(),
            scheduler.clone(),
            runner,
            state.secrets.clone(),
            addr,
        ));
        let app = http::router(state).merge(dashboard::router(dashboard));
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(%addr, store = %store.path().display(), "orchestrator listening");
        Ok(Self {
            addr,
            scheduler,
            store,
            stop_http: Some(stop_http),
            server,
            upkeep,
            certificate_upkeep,
            sleep_sweep,
            route_watch,
            grace,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queue.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> bool {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting connections (requests in flight finish), gives running jobs the grace
    /// period to reach a safe point, writes the store and releases its lock. Returns whether
    /// every job stopped in time.
    pub async fn shutdown(mut self) -> bool {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        // In-flight requests finish; idle keep-alive connections are closed by the server.
        match tokio::time::timeout(self.grace, &mut self.server).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the HTTP server failed"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("HTTP connections did not close in time");
                self.server.abort();
            }
        }
        let clean = self.scheduler.shutdown(self.grace).await;
        if !clean {
            tracing::warn!(
                "some jobs did not reach a safe point in time; they resume at next start"
            );
        }
        self.upkeep.abort();
        if let Some(task) = &self.certificate_upkeep {
            task.abort();
        }
        for task in [&self.sleep_sweep, &self.route_watch].into_iter().flatten() {
            task.abort();
        }
        self.store.close();
        clean
    }
}
