//! The jobs the queue runs, and the interface their bodies sit behind ([`JobRunner`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use preview_core::id::{BranchName, CommitSha, PrNumber, PreviewId, RepoFullName, RepoSlug};
use preview_core::ports::PortAllocation;
use tokio_util::sync::CancellationToken;

use crate::record::{DeploymentRecord, DeploymentStatus};
use crate::store::Store;

/// A boxed future, so that [`JobRunner`] can be used as `Arc<dyn JobRunner>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What started a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTrigger {
    /// A webhook delivery with this action and delivery id.
    Webhook { action: String, delivery: String },
    /// The internal API (redeploy or delete).
    Api,
    /// Startup found the job unfinished in the store.
    Resume,
    /// The cleanup service (TTL, cap, closed PR found by polling).
    Cleanup { reason: String },
    /// A PR command (`/preview ...` or the `preview` label) by a user with write permission.
    Command { command: String, by: String },
}

/// Deploy (or update) a preview at a commit.
#[derive(Debug, Clone)]
pub struct DeployJob {
    /// The preview.
    pub id: PreviewId,
    /// Its repository.
    pub repo: RepoFullName,
    /// The repository's URL slug.
    pub slug: RepoSlug,
    /// The PR.
    pub pr: PrNumber,
    /// The commit to deploy.
    pub sha: CommitSha,
    /// The head branch.
    pub branch: BranchName,
    /// Where to fetch from (`repository.clone_url`), when the event said.
    pub clone_url: Option<String>,
    /// The preview's public URL.
    pub url: String,
    /// The record's generation this job belongs to.
    pub generation: u64,
    /// Why it runs.
    pub trigger: JobTrigger,
    /// Whether the commit is trusted: only then does the app get the repository's secrets.
    pub trusted: bool,
}

/// Tear a preview down.
#[derive(Debug, Clone)]
pub struct TeardownJob {
    /// The preview.
    pub id: PreviewId,
    /// Its repository.
    pub repo: RepoFullName,
    /// The PR.
    pub pr: PrNumber,
    /// The record's generation this job belongs to.
    pub generation: u64,
    /// Why it runs.
    pub trigger: JobTrigger,
}

/// How a job ended, other than well.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job stopped at a safe point because it was cancelled (superseded, closed, shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The job failed in `phase`.
    #[error("{phase}: {reason}")]
    Failed { phase: String, reason: String },
}

impl JobError {
    /// A failure in `phase`.
    pub fn failed(phase: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Failed {
            phase: phase.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<crate::Error> for JobError {
    fn from(e: crate::Error) -> Self {
        JobError::failed("store", e)
    }
}

/// The bodies of jobs: the Docker runtime in production, a recorder in tests, a no-op in the
/// benchmark mode.
///
/// A job runs alone in its preview's lane. It should call [`JobContext::checkpoint`] between
/// phases (the safe points) and report progress through the context, whose writes are dropped
/// once a newer job superseded this one. Returning `Ok` from `deploy` marks the preview running
/// at the job's sha; returning `Ok` from `teardown` marks it stopped and releases its ports.
pub trait JobRunner: Send + Sync + 'static {
    /// Deploys or updates a preview.
    fn deploy(&self, job: DeployJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>>;
    /// Tears a preview down: containers, volumes, networks, nginx conf, work dir.
    fn teardown(&self, job: TeardownJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>>;

    /// Runs once at startup, after the store is loaded and before unfinished jobs are queued
    /// again and webhooks are served: the place to reconcile Docker, nginx and the work dirs
    /// with the store. An error stops startup.
    fn on_start(&self, store: Store) -> BoxFuture<'_, Result<(), JobError>> {
        let _ = store;
        Box::pin(async { Ok(()) })
    }

    /// Runs once the HTTP server listens at `addr`, before unfinished jobs are queued again:
    /// nginx configs rendered from now on send a sleeping preview's requests there.
    fn on_listening(&self, addr: std::net::SocketAddr) {
        let _ = addr;
    }

    /// Puts the previews that had no request for the idle time to sleep; returns them.
    fn sleep_idle(&self) -> BoxFuture<'_, Vec<PreviewId>> {
        Box::pin(async { Vec::new() })
    }

    /// Routes the serving previews whose apps moved to another node (on a swarm) to where they
    /// run now; returns them.
    fn follow_moves(&self) -> BoxFuture<'_, Vec<PreviewId>> {
        Box::pin(async { Vec::new() })
    }

    /// The engine's name and the machines previews run on (`GET /api/nodes`).
    fn nodes(&self) -> BoxFuture<'_, Result<(&'static str, Vec<preview_engine::Node>), String>> {
        Box::pin(async { Err("this runner runs no previews".to_owned()) })
    }

    /// The containers of preview `id`'s services and their states (`GET
    /// /api/previews/{id}/services`, the dashboard's preview page); the error says why they
    /// cannot be listed.
    fn services<'a>(
        &'a self,
        id: &'a PreviewId,
    ) -> BoxFuture<'a, Result<Vec<preview_engine::ContainerState>, String>> {
        let _ = id;
        Box::pin(async { Err("this runner runs no previews".to_owned()) })
    }

    /// Puts preview `id` to sleep now, idle or not (`POST /api/previews/{id}/sleep`); the
    /// error says why it cannot.
    fn sleep_now<'a>(&'a self, id: &'a PreviewId) -> BoxFuture<'a, Result<(), String>> {
        let _ = id;
        Box::pin(async { Err("this runner does not put previews to sleep".to_owned()) })
    }

    /// Wakes preview `id` if it sleeps and waits until it answers. Callers share one wake per
    /// preview (the wake endpoint's `WakeFlights`).
    fn wake<'a>(&'a self, id: &'a PreviewId) -> BoxFuture<'a, WakeOutcome> {
        let _ = id;
        Box::pin(async { WakeOutcome::NotFound })
    }
}

/// How a wake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeOutcome {
    /// The preview answers: it woke, or it was awake.
    Awake,
    /// A job is deploying or removing it; try again shortly. Says which.
    Busy(String),
    /// No preview serves under this id.
    NotFound,
    /// Waking failed, and why.
    Failed(String),
}

/// A deploy's build slot (`MAX_CONCURRENT_BUILDS`): given up while the deploy waits for disk
/// or memory, so that other deploys build meanwhile, and taken again before it builds. A
/// teardown has none.
#[derive(Clone, Default)]
pub struct BuildSlot {
    inner: Option<Arc<BuildSlotInner>>,
}

struct BuildSlotInner {
    builds: Arc<tokio::sync::Semaphore>,
    held: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl BuildSlot {
    /// The slot `permit` of `builds`.
    pub(crate) fn holding(
        builds: Arc<tokio::sync::Semaphore>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Self {
            inner: Some(Arc::new(BuildSlotInner {
                builds,
                held: std::sync::Mutex::new(Some(permit)),
            })),
        }
    }

    fn held(&self) -> Option<std::sync::MutexGuard<'_, Option<tokio::sync::OwnedSemaphorePermit>>> {
        self.inner
            .as_ref()
            .map(|i| i.held.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the job holds its slot (a job without one counts as holding it).
    pub fn is_held(&self) -> bool {
        self.held().is_none_or(|held| held.is_some())
    }

    /// Gives the slot up, if held.
    pub fn release(&self) {
        if let Some(mut held) = self.held() {
            held.take();
        }
    }

    /// Takes the slot again, waiting for one to be free; at once when held.
    pub async fn acquire(&self) {
        let Some(inner) = &self.inner else { return };
        if self.is_held() {
            return;
        }
        if let Ok(permit) = inner.builds.clone().acquire_owned().await
            && let Some(mut held) = self.held()
        {
            *held = Some(permit);
        }
    }
}

/// What a running job may see and do.
#[derive(Clone)]
pub struct JobContext {
    id: PreviewId,
    generation: u64,
    cancel: CancellationToken,
    store: Store,
    build_slot: BuildSlot,
}

impl JobContext {
    pub(crate) fn new(
        id: PreviewId,
        generation: u64,
        cancel: CancellationToken,
        store: Store,
        build_slot: BuildSlot,
    ) -> Self {
        Self {
            id,
            generation,
            cancel,
            store,
            build_slot,
        }
    }

    /// The deploy's build slot.
    pub fn build_slot(&self) -> &BuildSlot {
        &self.build_slot
    }

    /// The preview.
    pub fn id(&self) -> &PreviewId {
        &self.id
    }

    /// The generation this job belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Fires when the job should stop at its next safe point.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A safe point: `Err(Cancelled)` if the job should stop here.
    pub fn checkpoint(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Whether this job is still the newest for its preview.
    pub fn is_current(&self) -> bool {
        self.store
            .read(|s| s.deployments.get(&self.id).map(|r| r.generation))
            == Some(self.generation)
    }

    /// A copy of the record.
    pub fn record(&self) -> Option<DeploymentRecord> {
        self.store.get(&self.id)
    }

    /// The store, for reads the context does not cover.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Changes the record if this job is still current, and waits until it is on disk. Returns
    /// whether the change was made.
    pub async fn update(
        &self,
        f: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<bool, crate::Error> {
        let generation = self.generation;
        let (changed, ticket) = self
            .store
            .mutate(|s| match s.deployments.get_mut(&self.id) {
                Some(rec) if rec.generation == generation => {
                    f(rec);
                    rec.updated_at = Timestamp::now();
                    (true, true)
                }
                _ => (false, false),
            });
        ticket.wait().await?;
        Ok(changed)
    }

    /// Moves the record to `status` if this job is still current.
    pub async fn set_status(&self, status: DeploymentStatus) -> Result<bool, crate::Error> {
        self.update(|r| r.set_status(status, Timestamp::now()))
            .await
    }

    /// The preview's ports, allocating them on first use (see [`Store::allocate_ports`]).
    /// `published` holds the host ports published by running containers.
    pub async fn allocate_ports(
        &self,
        need_db: bool,
        published: &BTreeSet<u16>,
    ) -> Result<PortAllocation, crate::Error> {
        self.store
            .allocate_ports(&self.id, need_db, published)
            .await
    }

    /// Gives the preview's ports back.
    pub async fn release_ports(&self) -> Result<(), crate::Error> {
        self.store.release_ports(&self.id).await
    }

    /// Times a phase (`fetch`, `build`, `health`, ...) into the job-duration histogram; the
    /// time is recorded when the returned guard drops.
    pub fn phase(&self, phase: &'static str) -> PhaseTimer {
        PhaseTimer {
            phase,
            started: Instant::now(),
        }
    }
}

/// Records a phase's duration when dropped.
pub struct PhaseTimer {
    phase: &'static str,
    started: Instant,
}

impl Drop for PhaseTimer {
    fn drop(&mut self) {
        crate::telemetry::record_phase(self.phase, self.started.elapsed());
    }
}

/// BENCHMARK MODE ONLY (`--dry-run-jobs`): jobs that touch nothing outside the store. A deploy
/// takes its ports (a store write the first time) and returns; the queue then marks the preview
/// running at the job's sha. A teardown returns at once (the queue releases the ports and marks
/// it stopped). No Docker, no git, no nginx, no GitHub.
#[derive(Debug, Default)]
pub struct DryRunRunner;

impl JobRunner for DryRunRunner {
    fn deploy(&self, _job: DeployJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            ctx.checkpoint()?;
            ctx.allocate_ports(false, &BTreeSet::new()).await?;
            ctx.checkpoint()
        })
    }

    fn teardown(&self, _job: TeardownJob, _ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Stands in until the Docker runtime is plugged in: every job fails and says why.
#[derive(Debug, Default)]
pub struct MissingRuntime;

impl JobRunner for MissingRuntime {
    fn deploy(&self, _job: DeployJob, _ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async {
            Err(JobError::failed(
                "runtime",
                "this build has no deploy runtime yet",
            ))
        })
    }

    fn teardown(&self, _job: TeardownJob, _ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Follows apps that move between nodes ([`JobRunner::follow_moves`]) every `every`.
pub fn spawn_route_watch(
    runner: std::sync::Arc<dyn JobRunner>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let moved = runner.follow_moves().await;
            if !moved.is_empty() {
                tracing::info!(previews = moved.len(), "previews routed to their new nodes");
            }
        }
    })
}

/// Puts idle previews to sleep every `idle / 4` (at least every second, at most every minute),
/// so that a preview sleeps at most a quarter of the idle time late.
pub fn spawn_sleep_sweep(
    runner: std::sync::Arc<dyn JobRunner>,
    idle: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let every = (idle / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let slept = runner.sleep_idle().await;
            if !slept.is_empty() {
                tracing::info!(previews = slept.len(), "idle previews put to sleep");
            }
        }
    })
}
