//! The job queue: one serial lane per preview, a global limit on concurrent builds, supersede and
//! cancellation rules, graceful shutdown.
//!
//! Rules, per lane:
//! * a new deploy drops any queued deploy and cancels a running deploy (it is superseded);
//! * a teardown drops everything queued and cancels a running deploy;
//! * a deploy after a queued teardown waits for it (close, then reopen);
//! * deploys take a build slot (default 2 at once); teardowns do not.
//!
//! A job's writes to its record are dropped once a newer job bumped the record's generation, so
//! a cancelled job that takes a while to reach its safe point cannot overwrite the newer state.
//!
//! The cap on live previews (`MAX_CONCURRENT_PREVIEWS`, see [`PreviewCap`]): a preview holds a
//! slot from its first queued deploy until its teardown finished
//! ([`DeploymentRecord::holds_slot`]). A deploy of a PR that holds no slot when all are taken
//! either waits (status `waiting`, persisted, in arrival order; its comment gives its place and
//! the oldest previews) or, with `CAP_POLICY=evict-oldest`, tears down the least recently
//! updated preview and takes the slot once that teardown finished. Whenever a job finishes, the
//! first waiting PRs take the free slots. Updates of a preview that holds a slot never wait.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use preview_core::id::{BranchName, CommitSha, PrNumber, PreviewId, RepoFullName, RepoSlug};
use preview_core::routing::Routing;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::CapPolicy;
use crate::feedback::{CommentState, Feedback, FeedbackUpdate};
use crate::jobs::{
    BoxFuture, BuildSlot, DeployJob, JobContext, JobError, JobRunner, JobTrigger, TeardownJob,
};
use crate::record::{DeploymentRecord, DeploymentStatus, DesiredState};
use crate::store::{Store, StoreState};
use crate::telemetry;
use crate::{Error, Result};

/// A request to deploy a PR at a commit.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The base repository.
    pub repo: RepoFullName,
    /// The PR.
    pub pr: PrNumber,
    /// The head commit.
    pub sha: CommitSha,
    /// The head branch.
    pub branch: BranchName,
    /// The base branch.
    pub base_branch: BranchName,
    /// The head repository, for forks.
    pub head_repo: Option<RepoFullName>,
    /// `repository.clone_url`.
    pub clone_url: Option<String>,
    /// Whether the PR is a draft.
    pub draft: bool,
    /// `pull_request.updated_at`: a request older than the newest applied one is ignored.
    pub event_at: Option<Timestamp>,
    /// Why.
    pub trigger: JobTrigger,
    /// Deploy even if the preview is already at this sha.
    pub force: bool,
    /// Whether the commit is trusted (its author is a collaborator, or a maintainer approved
    /// it): only then does the preview get the repository's secrets. Recorded with the commit,
    /// so a restart or redeploy of the same commit decides the same.
    pub trusted: bool,
}

/// Which kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Deploy or update.
    Deploy,
    /// Tear down.
    Teardown,
}

impl JobKind {
    /// `deploy` or `teardown`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Deploy => "deploy",
            JobKind::Teardown => "teardown",
        }
    }
}

/// What the queue did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// A job was queued (and the record's change is on disk).
    Queued {
        /// The preview.
        id: PreviewId,
        /// The job.
        job: JobKind,
        /// The commit, for deploys.
        sha: Option<CommitSha>,
    },
    /// Every preview slot is taken: the PR waits for one (the record's change is on disk).
    Waiting {
        /// The preview.
        id: PreviewId,
        /// The commit it will deploy.
        sha: CommitSha,
        /// Its place in the queue, from 1.
        position: usize,
    },
    /// Nothing to do.
    Ignored {
        /// The preview, when one exists.
        id: Option<PreviewId>,
        /// Why.
        reason: String,
    },
}

enum JobSpec {
    Deploy(DeployJob),
    Teardown(TeardownJob),
}

impl JobSpec {
    fn kind(&self) -> JobKind {
        match self {
            JobSpec::Deploy(_) => JobKind::Deploy,
            JobSpec::Teardown(_) => JobKind::Teardown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelReason {
    Superseded,
    Closed,
}

struct Running {
    kind: JobKind,
    cancel: CancellationToken,
    reason: Option<CancelReason>,
}

#[derive(Default)]
struct Lane {
    pending: VecDeque<JobSpec>,
    running: Option<Running>,
}

/// The cap on live previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewCap {
    /// Most previews holding a slot at once (at least 1).
    pub max_live: usize,
    /// What a PR does when every slot is taken.
    pub policy: CapPolicy,
}

impl Default for PreviewCap {
    /// 50 (the seed's 10 kept every preview awake; most of 50 sleep), and new PRs wait.
    fn default() -> Self {
        Self {
            max_live: 50,
            policy: CapPolicy::Queue,
        }
    }
}

/// How many of the least recently updated previews a waiting PR's comment names.
const OLDEST_NAMED: usize = 5;

struct Inner {
    store: Store,
    cap: PreviewCap,
    /// Where waiting PRs' comments go; set once the runtime's feedback exists.
    feedback: std::sync::OnceLock<Feedback>,
    runner: Arc<dyn JobRunner>,
    lanes: Mutex<HashMap<PreviewId, Lane>>,
    builds: Arc<Semaphore>,
    shutdown: CancellationToken,
    accepting: AtomicBool,
    tracker: TaskTracker,
    waiting: AtomicUsize,
    active: AtomicUsize,
    routing: Routing,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// A queue running jobs with `runner`, at most `max_builds` deploys at once, under the
    /// default cap (50 live previews, new PRs wait). `routing` gives records their URLs.
    pub fn new(
        store: Store,
        runner: Arc<dyn JobRunner>,
        max_builds: usize,
        routing: Routing,
    ) -> Self {
        Self::with_cap(store, runner, max_builds, routing, PreviewCap::default())
    }

    /// [`Scheduler::new`] with the cap on live previews `cap`.
    pub fn with_cap(
        store: Store,
        runner: Arc<dyn JobRunner>,
        max_builds: usize,
        routing: Routing,
        cap: PreviewCap,
    ) -> Self {
        let s = Self {
            inner: Arc::new(Inner {
                store,
                cap: PreviewCap {
                    max_live: cap.max_live.max(1),
                    policy: cap.policy,
                },
                feedback: std::sync::OnceLock::new(),
                runner,
                lanes: Mutex::new(HashMap::new()),
                builds: Arc::new(Semaphore::new(max_builds.max(1))),
                shutdown: CancellationToken::new(),
                accepting: AtomicBool::new(true),
                tracker: TaskTracker::new(),
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                routing,
            }),
        };
        telemetry::set_live_previews(s.inner.store.read(StoreState::live_count));
        s
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The cap on live previews.
    pub fn cap(&self) -> PreviewCap {
        self.inner.cap
    }

    /// Gives the queue the runtime's feedback, through which it tells waiting PRs their place
    /// (and that they left the queue). One feedback for the runtime and the queue keeps a PR's
    /// comment updates in one ordered lane. Only the first call counts.
    pub fn set_feedback(&self, feedback: Feedback) {
        feedback.attach_store(self.inner.store.clone());
        let _ = self.inner.feedback.set(feedback);
    }

    /// The record of PR `repo`#`pr`, if it has one.
    pub fn record_for(&self, repo: &RepoFullName, pr: PrNumber) -> Option<DeploymentRecord> {
        self.inner.store.read(|st| {
            let slug = st.slugs.get(repo)?;
            st.deployments.get(&PreviewId::new(slug, pr)).cloned()
        })
    }

    /// The preview id and URL PR `repo`#`pr` has, or would get if it deployed now.
    pub fn preview_id_and_url(&self, repo: &RepoFullName, pr: PrNumber) -> (PreviewId, String) {
        let slug = self.inner.store.read(|st| st.slugs.get(repo).cloned());
        let id = PreviewId::new(&slug.unwrap_or_else(|| RepoSlug::base_for(repo)), pr);
        let url = self.inner.routing.url(&id);
        (id, url)
    }

    /// Sends `update` to its PR's comment lane (nothing when feedback is off).
    pub fn send_feedback(&self, update: FeedbackUpdate) {
        self.notify(vec![update]);
    }

    /// The waiting PRs, first in line first.
    pub fn waiting(&self) -> Vec<PreviewId> {
        self.inner.store.read(waiting_queue)
    }

    fn notify(&self, updates: Vec<FeedbackUpdate>) {
        if let Some(feedback) = self.inner.feedback.get() {
            for update in updates {
                feedback.send(update);
            }
        }
    }

    /// Jobs queued or waiting for a build slot.
    pub fn queue_depth(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Jobs running.
    pub fn active_jobs(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<PreviewId, Lane>> {
        self.inner.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_accepting(&self) -> Result<()> {
        if self.inner.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// Queues a deploy, superseding older work for the PR; returns once the record is on disk.
    pub async fn submit_deploy(&self, req: DeployRequest) -> Result<Submission> {
        self.check_accepting()?;
        let now = Timestamp::now();
        let routing = &self.inner.routing;
        let cap = self.inner.cap;
        let (decision, ticket) = {
            let mut lanes = self.lanes();
            let (mut decision, ticket) = self
                .inner
                .store
                .mutate(|st| decide_deploy(st, &req, now, routing, cap));
            if let Some(job) = decision.evict.take() {
                tracing::info!(preview = %job.id, for_preview = ?decision.outcome, "evicting the least recently updated preview for the cap");
                self.enqueue(&mut lanes, JobSpec::Teardown(job));
            }
            if let Some(job) = decision.deploy.take() {
                self.enqueue(&mut lanes, JobSpec::Deploy(job));
            }
            (decision, ticket)
        };
        ticket.wait().await?;
        self.notify(decision.notices);
        Ok(decision.outcome)
    }

    /// Queues a teardown of the preview of `repo`#`pr` (a `closed` event).
    pub async fn submit_close(
        &self,
        repo: &RepoFullName,
        pr: PrNumber,
        event_at: Option<Timestamp>,
        trigger: JobTrigger,
    ) -> Result<Submission> {
        self.check_accepting()?;
        let id = self
            .inner
            .store
            .read(|st| st.slugs.get(repo).map(|slug| PreviewId::new(slug, pr)));
        match id {
            Some(id) => self.submit_teardown(&id, event_at, trigger).await,
            None => Ok(Submission::Ignored {
                id: None,
                reason: "no preview exists for this pull request".into(),
            }),
        }
    }

    /// Queues a teardown of preview `id` (close, DELETE, cleanup).
    pub async fn submit_teardown(
        &self,
        id: &PreviewId,
        event_at: Option<Timestamp>,
        trigger: JobTrigger,
    ) -> Result<Submission> {
        self.check_accepting()?;
        let now = Timestamp::now();
        let cap = self.inner.cap;
        let (outcome, notices, ticket) = {
            let mut lanes = self.lanes();
            let ((outcome, work), ticket) = self.inner.store.mutate(|st| {
                let Some(rec) = st.deployments.get_mut(id) else {
                    return (
                        (
                            Submission::Ignored {
                                id: None,
                                reason: format!("no preview {id}"),
                            },
                            TeardownWork::None,
                        ),
                        false,
                    );
                };
                if let (Some(ev), Some(last)) = (event_at, rec.event_updated_at)
                    && ev < last
                {
                    return ((stale(id), TeardownWork::None), false);
                }
                if rec.desired == DesiredState::Stopped && rec.status == DeploymentStatus::Stopped {
                    return (
                        (
                            Submission::Ignored {
                                id: Some(id.clone()),
                                reason: "the preview is already stopped".into(),
                            },
                            TeardownWork::None,
                        ),
                        false,
                    );
                }
                rec.desired = DesiredState::Stopped;
                rec.generation += 1;
                rec.updated_at = now;
                if let Some(ev) = event_at {
                    rec.event_updated_at = Some(rec.event_updated_at.map_or(ev, |l| l.max(ev)));
                }
                let queued = Submission::Queued {
                    id: id.clone(),
                    job: JobKind::Teardown,
                    sha: None,
                };
                if rec.waiting_since().is_some() {
                    // Nothing was deployed: it leaves the queue, and the PRs behind it move up.
                    rec.set_status(DeploymentStatus::Stopped, now);
                    let mut notices = vec![FeedbackUpdate {
                        id: rec.id.clone(),
                        repo: rec.repo.clone(),
                        pr: rec.pr_number,
                        sha: rec.head_sha.clone(),
                        url: rec.url.clone(),
                        state: CommentState::LeftQueue {
                            reason: teardown_reason(&trigger),
                        },
                    }];
                    notices.extend(waiting_notices(st, cap.max_live));
                    return ((queued, TeardownWork::Notify(notices)), true);
                }
                let job = teardown_job(rec, trigger);
                ((queued, TeardownWork::Job(job)), true)
            });
            let notices = match work {
                TeardownWork::Job(job) => {
                    self.enqueue(&mut lanes, JobSpec::Teardown(job));
                    Vec::new()
                }
                TeardownWork::Notify(notices) => notices,
                TeardownWork::None => Vec::new(),
            };
            (outcome, notices, ticket)
        };
        ticket.wait().await?;
        self.notify(notices);
        Ok(outcome)
    }

    /// Deploys preview `id` again at its head commit (the API's redeploy).
    pub async fn redeploy(&self, id: &PreviewId, trigger: JobTrigger) -> Result<Submission> {
        let rec = self
            .inner
            .store
            .get(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.submit_deploy(DeployRequest {
            repo: rec.repo,
            pr: rec.pr_number,
            sha: rec.head_sha,
            branch: rec.branch,
            base_branch: rec.base_branch,
            head_repo: rec.head_repo,
            clone_url: rec.clone_url,
            draft: rec.draft,
            event_at: None,
            trigger,
            force: true,
            // The same commit: the decision recorded for it.
            trusted: rec.trusted,
        })
        .await
    }

    /// Queues again the work the store shows unfinished (after a restart or crash): deploys of
    /// records queued, building or starting, and teardowns of records meant to be stopped. Then
    /// waiting PRs take the slots that are free (the cap may have been raised).
    pub async fn resume(&self) -> Result<usize> {
        let now = Timestamp::now();
        let max_live = self.inner.cap.max_live;
        let (count, ticket) = {
            let mut lanes = self.lanes();
            let (jobs, ticket) = self.inner.store.mutate(|st| {
                let mut jobs = Vec::new();
                for rec in st.deployments.values_mut() {
                    let job = match rec.desired {
                        DesiredState::Running if rec.status.is_in_progress() => {
                            rec.generation += 1;
                            rec.set_status(DeploymentStatus::Queued, now);
                            JobSpec::Deploy(deploy_job(rec, JobTrigger::Resume))
                        }
                        DesiredState::Stopped if rec.status != DeploymentStatus::Stopped => {
                            rec.generation += 1;
                            JobSpec::Teardown(teardown_job(rec, JobTrigger::Resume))
                        }
                        _ => continue,
                    };
                    jobs.push(job);
                }
                let (promoted, _) = promote_waiting(st, max_live, now);
                jobs.extend(promoted.into_iter().map(JobSpec::Deploy));
                let changed = !jobs.is_empty();
                (jobs, changed)
            });
            let count = jobs.len();
            for job in jobs {
                self.enqueue(&mut lanes, job);
            }
            (count, ticket)
        };
        ticket.wait().await?;
        Ok(count)
    }

    fn enqueue(&self, lanes: &mut HashMap<PreviewId, Lane>, job: JobSpec) {
        let id = match &job {
            JobSpec::Deploy(j) => j.id.clone(),
            JobSpec::Teardown(j) => j.id.clone(),
        };
        let mut spawn = false;
        let lane = lanes.entry(id.clone()).or_insert_with(|| {
            spawn = true;
            Lane::default()
        });
        let before = lane.pending.len();
        match job.kind() {
            JobKind::Deploy => {
                lane.pending.retain(|j| j.kind() != JobKind::Deploy);
                if let Some(r) = &mut lane.running
                    && r.kind == JobKind::Deploy
                    && r.reason.is_none()
                {
                    r.reason = Some(CancelReason::Superseded);
                    r.cancel.cancel();
                }
            }
            JobKind::Teardown => {
                lane.pending.clear();
                if let Some(r) = &mut lane.running
                    && r.kind == JobKind::Deploy
                {
                    r.reason = Some(CancelReason::Closed);
                    r.cancel.cancel();
                }
            }
        }
        let dropped = before - lane.pending.len();
        for _ in 0..dropped {
            telemetry::job_finished(JobKind::Deploy.as_str(), "superseded", None);
        }
        lane.pending.push_back(job);
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        self.inner.waiting.fetch_sub(dropped, Ordering::Relaxed);
        telemetry::set_queue_depth(self.queue_depth());
        if spawn {
            let this = self.clone();
            self.inner
                .tracker
                .spawn(async move { this.run_lane(id).await });
        }
    }

    async fn run_lane(self, id: PreviewId) {
        loop {
            let next = {
                let mut lanes = self.lanes();
                let lane = lanes.get_mut(&id).expect("a lane has one worker");
                let next = if self.inner.shutdown.is_cancelled() {
                    None
                } else {
                    lane.pending.pop_front()
                };
                match next {
                    Some(job) => {
                        let cancel = self.inner.shutdown.child_token();
                        lane.running = Some(Running {
                            kind: job.kind(),
                            cancel: cancel.clone(),
                            reason: None,
                        });
                        Some((job, cancel))
                    }
                    None => {
                        let left = lane.pending.len();
                        lanes.remove(&id);
                        self.inner.waiting.fetch_sub(left, Ordering::Relaxed);
                        None
                    }
                }
            };
            let Some((job, cancel)) = next else {
                telemetry::set_queue_depth(self.queue_depth());
                return;
            };
            match job {
                JobSpec::Deploy(job) => self.run_deploy(job, cancel).await,
                JobSpec::Teardown(job) => self.run_teardown(job, cancel).await,
            }
            let mut lanes = self.lanes();
            if let Some(lane) = lanes.get_mut(&id) {
                lane.running = None;
            }
        }
    }

    fn cancel_reason(&self, id: &PreviewId) -> Option<CancelReason> {
        self.lanes()
            .get(id)
            .and_then(|l| l.running.as_ref())
            .and_then(|r| r.reason)
    }

    fn is_current(&self, id: &PreviewId, generation: u64) -> bool {
        self.inner
            .store
            .read(|s| s.deployments.get(id).map(|r| r.generation))
            == Some(generation)
    }

    async fn run_deploy(&self, job: DeployJob, cancel: CancellationToken) {
        let id = job.id.clone();
        let generation = job.generation;
        let sha = job.sha.clone();
        let trusted = job.trusted;
        if !self.is_current(&id, generation) {
            self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
            telemetry::job_finished(JobKind::Deploy.as_str(), "superseded", None);
            return;
        }
        let permit = tokio::select! {
            p = self.inner.builds.clone().acquire_owned() => p.ok(),
            _ = cancel.cancelled() => None,
        };
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        telemetry::set_queue_depth(self.queue_depth());
        let started = Instant::now();
        let result = match permit {
            None => Err(JobError::Cancelled),
            Some(permit) => {
                self.inner.active.fetch_add(1, Ordering::Relaxed);
                let slot = BuildSlot::holding(self.inner.builds.clone(), permit);
                let ctx = JobContext::new(
                    id.clone(),
                    generation,
                    cancel,
                    self.inner.store.clone(),
                    slot.clone(),
                );
                let r = unless_panicked(self.inner.runner.deploy(job, ctx)).await;
                slot.release();
                self.inner.active.fetch_sub(1, Ordering::Relaxed);
                r
            }
        };
        let outcome = match result {
            Ok(()) => {
                let sha = sha.clone();
                self.finish(&id, generation, move |rec, now| {
                    rec.deployed_sha = Some(sha);
                    rec.deployed_trusted = trusted;
                    if rec.status != DeploymentStatus::Running {
                        rec.set_status(DeploymentStatus::Running, now);
                    }
                })
                .await;
                "success"
            }
            Err(JobError::Cancelled) => match self.cancel_reason(&id) {
                Some(CancelReason::Superseded) => "superseded",
                Some(CancelReason::Closed) => "cancelled",
                None if self.inner.shutdown.is_cancelled() => "interrupted",
                None => {
                    self.finish(&id, generation, |rec, now| {
                        rec.set_status(
                            DeploymentStatus::Failed {
                                reason: "cancelled".into(),
                            },
                            now,
                        )
                    })
                    .await;
                    "cancelled"
                }
            },
            Err(e @ JobError::Failed { .. }) => {
                tracing::warn!(preview = %id, sha = %sha, error = %e, "deploy failed");
                let reason = e.to_string();
                self.finish(&id, generation, move |rec, now| {
                    rec.set_status(DeploymentStatus::Failed { reason }, now)
                })
                .await;
                "failed"
            }
        };
        tracing::debug!(preview = %id, sha = %sha, outcome, "deploy finished");
        telemetry::job_finished(JobKind::Deploy.as_str(), outcome, Some(started.elapsed()));
    }

    async fn run_teardown(&self, job: TeardownJob, cancel: CancellationToken) {
        let id = job.id.clone();
        let generation = job.generation;
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        telemetry::set_queue_depth(self.queue_depth());
        let started = Instant::now();
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        let ctx = JobContext::new(
            id.clone(),
            generation,
            cancel,
            self.inner.store.clone(),
            BuildSlot::default(),
        );
        let result = unless_panicked(self.inner.runner.teardown(job, ctx)).await;
        self.inner.active.fetch_sub(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(()) => {
                if let Err(e) = self.inner.store.release_ports(&id).await {
                    tracing::error!(preview = %id, error = %e, "releasing ports failed");
                }
                self.finish(&id, generation, |rec, now| {
                    rec.deployed_sha = None;
                    rec.set_status(DeploymentStatus::Stopped, now);
                })
                .await;
                "success"
            }
            Err(JobError::Cancelled) => "interrupted",
            Err(e @ JobError::Failed { .. }) => {
                tracing::warn!(preview = %id, error = %e, "teardown failed");
                let reason = format!("teardown: {e}");
                self.finish(&id, generation, move |rec, now| {
                    rec.set_status(DeploymentStatus::Failed { reason }, now)
                })
                .await;
                "failed"
            }
        };
        telemetry::job_finished(JobKind::Teardown.as_str(), outcome, Some(started.elapsed()));
    }

    /// Applies a job's final change if the job is still current, then lets the first waiting
    /// PRs take the slots that are free. Nobody waits for this change (the webhook was
    /// acknowledged long ago), so it is not awaited: the writer persists it with its next write,
    /// and shutdown flushes.
    async fn finish(
        &self,
        id: &PreviewId,
        generation: u64,
        f: impl FnOnce(&mut DeploymentRecord, Timestamp),
    ) {
        let max_live = self.inner.cap.max_live;
        let mut lanes = self.lanes();
        let ((live, promoted, notices), ticket) = self.inner.store.mutate(|s| {
            let now = Timestamp::now();
            let mut changed = match s.deployments.get_mut(id) {
                Some(rec) if rec.generation == generation => {
                    f(rec, now);
                    true
                }
                _ => false,
            };
            let (promoted, notices) = promote_waiting(s, max_live, now);
            changed |= !promoted.is_empty();
            ((s.live_count(), promoted, notices), changed)
        });
        for job in promoted {
            tracing::info!(preview = %job.id, sha = %job.sha, "a preview slot is free: deploying the first waiting PR");
            self.enqueue(&mut lanes, JobSpec::Deploy(job));
        }
        drop(lanes);
        telemetry::set_live_previews(live);
        drop(ticket);
        self.notify(notices);
    }

    /// Stops taking work, cancels running jobs (they stop at their next safe point), waits up to
    /// `grace` for them, and writes the store. Returns whether every job stopped in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.tracker.close();
        self.inner.shutdown.cancel();
        let done = tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok();
        if let Err(e) = self.inner.store.flush().await {
            tracing::error!(error = %e, "final store write failed");
        }
        done
    }

    /// Waits until no lane has work (for tests and tools).
    pub async fn wait_idle(&self) {
        loop {
            if self.lanes().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn stale(id: &PreviewId) -> Submission {
    Submission::Ignored {
        id: Some(id.clone()),
        reason: "stale event: a newer event for this pull request was already applied".into(),
    }
}

fn deploy_job(rec: &DeploymentRecord, trigger: JobTrigger) -> DeployJob {
    DeployJob {
        id: rec.id.clone(),
        repo: rec.repo.clone(),
        slug: rec.slug.clone(),
        pr: rec.pr_number,
        sha: rec.head_sha.clone(),
        branch: rec.branch.clone(),
        clone_url: rec.clone_url.clone(),
        url: rec.url.clone(),
        generation: rec.generation,
        trigger,
        trusted: rec.trusted,
    }
}

fn teardown_job(rec: &DeploymentRecord, trigger: JobTrigger) -> TeardownJob {
    TeardownJob {
        id: rec.id.clone(),
        repo: rec.repo.clone(),
        pr: rec.pr_number,
        generation: rec.generation,
        trigger,
    }
}

/// What a teardown request leads to.
enum TeardownWork {
    /// Nothing (unknown, stale or already stopped).
    None,
    /// A teardown job.
    Job(TeardownJob),
    /// A waiting PR left the queue: only comments to update.
    Notify(Vec<FeedbackUpdate>),
}

/// Why a preview is torn down, as its comment says.
pub fn teardown_reason(trigger: &JobTrigger) -> String {
    match trigger {
        JobTrigger::Cleanup { reason } => reason.clone(),
        JobTrigger::Api => "an operator removed it".to_owned(),
        JobTrigger::Command { command, by } => format!("@{by} commented `{command}`"),
        JobTrigger::Webhook { .. } | JobTrigger::Resume => "the pull request was closed".to_owned(),
    }
}

/// The waiting previews, first in line first (by the time they joined, then by id).
pub fn waiting_queue(st: &StoreState) -> Vec<PreviewId> {
    let mut waiting: Vec<(Timestamp, &PreviewId)> = st
        .deployments
        .values()
        .filter_map(|r| r.waiting_since().map(|since| (since, &r.id)))
        .collect();
    waiting.sort();
    waiting.into_iter().map(|(_, id)| id.clone()).collect()
}

fn slots_held(st: &StoreState) -> usize {
    st.deployments.values().filter(|r| r.holds_slot()).count()
}

/// Slots that free up once teardowns already queued finish.
fn slots_freeing(st: &StoreState) -> usize {
    st.deployments
        .values()
        .filter(|r| r.holds_slot() && r.desired == DesiredState::Stopped)
        .count()
}

/// The previews a waiting PR could ask to close: the least recently updated that hold a slot
/// and are meant to run, as GitHub references (`#N`, or `owner/name#N` from another repo).
fn oldest_previews(st: &StoreState, from: &RepoFullName) -> Vec<String> {
    let mut live: Vec<&DeploymentRecord> = st
        .deployments
        .values()
        .filter(|r| r.holds_slot() && r.desired == DesiredState::Running)
        .collect();
    live.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)));
    live.iter()
        .take(OLDEST_NAMED)
        .map(|r| {
            if &r.repo == from {
                format!("#{}", r.pr_number)
            } else {
                format!("{}#{}", r.repo, r.pr_number)
            }
        })
        .collect()
}

/// The comment of the waiting preview `id` at `position`.
fn waiting_notice(
    st: &StoreState,
    id: &PreviewId,
    position: usize,
    max_live: usize,
) -> Option<FeedbackUpdate> {
    let rec = st.deployments.get(id)?;
    Some(FeedbackUpdate {
        id: rec.id.clone(),
        repo: rec.repo.clone(),
        pr: rec.pr_number,
        sha: rec.head_sha.clone(),
        url: rec.url.clone(),
        state: CommentState::Queued {
            position,
            cap: max_live,
            oldest: oldest_previews(st, &rec.repo),
        },
    })
}

/// The comments of every waiting PR that no teardown already under way will make room for
/// (those get a slot within moments, and their next comment says they are building).
fn waiting_notices(st: &StoreState, max_live: usize) -> Vec<FeedbackUpdate> {
    let freeing = slots_freeing(st);
    waiting_queue(st)
        .iter()
        .enumerate()
        .skip(freeing)
        .filter_map(|(i, id)| waiting_notice(st, id, i + 1, max_live))
        .collect()
}

/// Moves the first waiting PRs into the free slots: their deploys, and (when any moved) the
/// comments of those still waiting, whose places changed.
fn promote_waiting(
    st: &mut StoreState,
    max_live: usize,
    now: Timestamp,
) -> (Vec<DeployJob>, Vec<FeedbackUpdate>) {
    let mut held = slots_held(st);
    if held >= max_live {
        return (Vec::new(), Vec::new());
    }
    let mut jobs = Vec::new();
    for id in waiting_queue(st) {
        if held >= max_live {
            break;
        }
        let Some(rec) = st.deployments.get_mut(&id) else {
            continue;
        };
        rec.generation += 1;
        rec.set_status(DeploymentStatus::Queued, now);
        jobs.push(deploy_job(
            rec,
            JobTrigger::Cleanup {
                reason: "a preview slot became free".into(),
            },
        ));
        held += 1;
    }
    let notices = if jobs.is_empty() {
        Vec::new()
    } else {
        waiting_notices(st, max_live)
    };
    (jobs, notices)
}

/// What a deploy request does.
struct DeployDecision {
    outcome: Submission,
    /// The deploy to queue.
    deploy: Option<DeployJob>,
    /// The preview evicted to make room (`CAP_POLICY=evict-oldest`).
    evict: Option<TeardownJob>,
    /// Comments of waiting PRs.
    notices: Vec<FeedbackUpdate>,
}

impl DeployDecision {
    fn nothing(outcome: Submission) -> Self {
        Self {
            outcome,
            deploy: None,
            evict: None,
            notices: Vec::new(),
        }
    }
}

/// Runs a job on the lane's own task and turns a panic into a failed job, so that a panicking
/// runner fails its job, not its lane (without a task of its own per job).
async fn unless_panicked(mut job: BoxFuture<'_, Result<(), JobError>>) -> Result<(), JobError> {
    std::future::poll_fn(|cx| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.as_mut().poll(cx)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("no message");
                std::task::Poll::Ready(Err(JobError::failed(
                    "runtime",
                    format!("the job panicked: {message}"),
                )))
            })
    })
    .await
}

/// The store side of a deploy request: create or update the record, or say why not; when every
/// slot is taken by others, make it wait (and with `evict-oldest`, evict a preview for it).
fn decide_deploy(
    st: &mut StoreState,
    req: &DeployRequest,
    now: Timestamp,
    routing: &Routing,
    cap: PreviewCap,
) -> (DeployDecision, bool) {
    let new_slug = st.slugs.get(&req.repo).is_none();
    let slug = st.slugs.slug_for(&req.repo);
    let id = PreviewId::new(&slug, req.pr);
    // Whether it may deploy now: it holds a slot already (an update never waits), or one is free.
    let deploy_now =
        st.deployments.get(&id).is_some_and(|r| r.holds_slot()) || slots_held(st) < cap.max_live;
    let rec = match st.deployments.get_mut(&id) {
        Some(rec) => {
            if let (Some(ev), Some(last)) = (req.event_at, rec.event_updated_at)
                && ev < last
            {
                return (DeployDecision::nothing(stale(&id)), new_slug);
            }
            let waiting = rec.waiting_since().is_some();
            let asleep = rec.status == DeploymentStatus::Sleeping;
            let busy_or_live = rec.status.is_in_progress()
                || rec.status == DeploymentStatus::Running
                || asleep
                || waiting;
            // A changed trust decision changes what the app gets: it is not a no-op.
            if !req.force
                && rec.desired == DesiredState::Running
                && rec.head_sha == req.sha
                && rec.trusted == req.trusted
                && busy_or_live
            {
                let reason = format!(
                    "already {} at {}",
                    if rec.status == DeploymentStatus::Running {
                        "running"
                    } else if asleep {
                        "asleep (the next visit wakes it)"
                    } else if waiting {
                        "waiting for a free preview slot"
                    } else {
                        "deploying"
                    },
                    req.sha.short()
                );
                if let Some(ev) = req.event_at {
                    rec.event_updated_at = Some(rec.event_updated_at.map_or(ev, |l| l.max(ev)));
                }
                return (
                    DeployDecision::nothing(Submission::Ignored {
                        id: Some(id),
                        reason,
                    }),
                    new_slug,
                );
            }
            if rec.status.is_in_progress() && rec.head_sha != req.sha {
                let old = rec.head_sha.clone();
                rec.push_history(DeploymentStatus::Superseded, old, now);
            }
            rec.repo = req.repo.clone();
            rec.branch = req.branch.clone();
            rec.base_branch = req.base_branch.clone();
            rec.head_repo = req.head_repo.clone();
            if req.clone_url.is_some() {
                rec.clone_url = req.clone_url.clone();
            }
            rec.head_sha = req.sha.clone();
            rec.trusted = req.trusted;
            rec.draft = req.draft;
            rec.desired = DesiredState::Running;
            rec.generation += 1;
            // A changed PREVIEW_DOMAIN moves the preview at its next deploy.
            rec.url = routing.url(&id);
            if let Some(ev) = req.event_at {
                rec.event_updated_at = Some(rec.event_updated_at.map_or(ev, |l| l.max(ev)));
            }
            rec
        }
        None => st.deployments.insert(DeploymentRecord {
            id: id.clone(),
            repo: req.repo.clone(),
            slug: slug.clone(),
            pr_number: req.pr,
            branch: req.branch.clone(),
            base_branch: req.base_branch.clone(),
            head_repo: req.head_repo.clone(),
            clone_url: req.clone_url.clone(),
            head_sha: req.sha.clone(),
            deployed_sha: None,
            deployed_trusted: false,
            status: DeploymentStatus::Queued,
            desired: DesiredState::Running,
            draft: req.draft,
            url: routing.url(&id),
            comment_id: None,
            github_deployment_id: None,
            framework: None,
            created_at: now,
            updated_at: now,
            status_changed_at: now,
            event_updated_at: req.event_at,
            generation: 1,
            history: Vec::new(),
            trusted: req.trusted,
            build_ms: None,
            start_ms: None,
            service_urls: Vec::new(),
        }),
    };
    if deploy_now {
        rec.set_status(DeploymentStatus::Queued, now);
        let job = deploy_job(rec, req.trigger.clone());
        let outcome = Submission::Queued {
            id,
            job: JobKind::Deploy,
            sha: Some(req.sha.clone()),
        };
        return (
            DeployDecision {
                outcome,
                deploy: Some(job),
                evict: None,
                notices: Vec::new(),
            },
            true,
        );
    }
    // Every slot is taken: wait, keeping the place in the queue across pushes.
    let since = rec.waiting_since().unwrap_or(now);
    rec.set_status(DeploymentStatus::Waiting { since }, now);
    let queue = waiting_queue(st);
    let position = queue
        .iter()
        .position(|w| *w == id)
        .map_or(queue.len(), |i| i + 1);
    let mut freeing = slots_freeing(st);
    let mut evict = None;
    if cap.policy == CapPolicy::EvictOldest && freeing < position {
        evict = evict_oldest(st, cap.max_live, now);
        freeing += usize::from(evict.is_some());
    }
    let notices = if position > freeing {
        waiting_notice(st, &id, position, cap.max_live)
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    tracing::info!(preview = %id, position, cap = cap.max_live, evicting = ?evict.as_ref().map(|j: &TeardownJob| j.id.to_string()), "every preview slot is taken: the PR waits");
    (
        DeployDecision {
            outcome: Submission::Waiting {
                id,
                sha: req.sha.clone(),
                position,
            },
            deploy: None,
            evict,
            notices,
        },
        true,
    )
}

/// Marks the least recently updated preview that serves (not one being built) for teardown;
/// its teardown job.
fn evict_oldest(st: &mut StoreState, max_live: usize, now: Timestamp) -> Option<TeardownJob> {
    let victim = st
        .deployments
        .values()
        .filter(|r| {
            r.desired == DesiredState::Running && r.holds_slot() && !r.status.is_in_progress()
        })
        .min_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)))?
        .id
        .clone();
    let rec = st.deployments.get_mut(&victim)?;
    rec.desired = DesiredState::Stopped;
    rec.generation += 1;
    rec.updated_at = now;
    Some(teardown_job(
        rec,
        JobTrigger::Cleanup {
            reason: eviction_reason(max_live),
        },
    ))
}

/// Why an evicted preview was torn down, as its comment says.
pub fn eviction_reason(max_live: usize) -> String {
    format!(
        "evicted to free a slot: all {max_live} preview slots were in use and this was the least \
         recently updated preview; a new push deploys it again"
    )
}
