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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use preview_core::id::{BranchName, CommitSha, PrNumber, PreviewId, RepoFullName};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::jobs::{DeployJob, JobContext, JobError, JobRunner, JobTrigger, TeardownJob};
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

struct Inner {
    store: Store,
    runner: Arc<dyn JobRunner>,
    lanes: Mutex<HashMap<PreviewId, Lane>>,
    builds: Arc<Semaphore>,
    shutdown: CancellationToken,
    accepting: AtomicBool,
    tracker: TaskTracker,
    waiting: AtomicUsize,
    active: AtomicUsize,
    base_url: String,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// A queue running jobs with `runner`, at most `max_builds` deploys at once. `base_url` is
    /// `PREVIEW_BASE_URL`, for records' URLs.
    pub fn new(
        store: Store,
        runner: Arc<dyn JobRunner>,
        max_builds: usize,
        base_url: &str,
    ) -> Self {
        let s = Self {
            inner: Arc::new(Inner {
                store,
                runner,
                lanes: Mutex::new(HashMap::new()),
                builds: Arc::new(Semaphore::new(max_builds.max(1))),
                shutdown: CancellationToken::new(),
                accepting: AtomicBool::new(true),
                tracker: TaskTracker::new(),
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                base_url: base_url.trim_end_matches('/').to_owned(),
            }),
        };
        telemetry::set_live_previews(s.inner.store.read(StoreState::live_count));
        s
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
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
        let base_url = &self.inner.base_url;
        let (outcome, ticket) = {
            let mut lanes = self.lanes();
            let ((outcome, job), ticket) = self
                .inner
                .store
                .mutate(|st| decide_deploy(st, &req, now, base_url));
            if let Some(job) = job {
                self.enqueue(&mut lanes, JobSpec::Deploy(job));
            }
            (outcome, ticket)
        };
        ticket.wait().await?;
        Ok(outcome)
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
        let (outcome, ticket) = {
            let mut lanes = self.lanes();
            let ((outcome, job), ticket) = self.inner.store.mutate(|st| {
                let Some(rec) = st.deployments.get_mut(id) else {
                    return (
                        (
                            Submission::Ignored {
                                id: None,
                                reason: format!("no preview {id}"),
                            },
                            None,
                        ),
                        false,
                    );
                };
                if let (Some(ev), Some(last)) = (event_at, rec.event_updated_at)
                    && ev < last
                {
                    return ((stale(id), None), false);
                }
                if rec.desired == DesiredState::Stopped && rec.status == DeploymentStatus::Stopped {
                    return (
                        (
                            Submission::Ignored {
                                id: Some(id.clone()),
                                reason: "the preview is already stopped".into(),
                            },
                            None,
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
                let job = teardown_job(rec, trigger);
                (
                    (
                        Submission::Queued {
                            id: id.clone(),
                            job: JobKind::Teardown,
                            sha: None,
                        },
                        Some(job),
                    ),
                    true,
                )
            });
            if let Some(job) = job {
                self.enqueue(&mut lanes, JobSpec::Teardown(job));
            }
            (outcome, ticket)
        };
        ticket.wait().await?;
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
        })
        .await
    }

    /// Queues again the work the store shows unfinished (after a restart or crash): deploys of
    /// records queued, building or starting, and teardowns of records meant to be stopped.
    pub async fn resume(&self) -> Result<usize> {
        let now = Timestamp::now();
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
            telemetry::job_finished(JobKind::Deploy, "superseded", None);
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
        if !self.is_current(&id, generation) {
            self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
            telemetry::job_finished(JobKind::Deploy, "superseded", None);
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
                let ctx = JobContext::new(id.clone(), generation, cancel, self.inner.store.clone());
                let runner = self.inner.runner.clone();
                // Its own task, so that a panicking runner fails the job, not the lane.
                let r = tokio::spawn(async move { runner.deploy(job, ctx).await }).await;
                drop(permit);
                self.inner.active.fetch_sub(1, Ordering::Relaxed);
                r.unwrap_or_else(|e| {
                    Err(JobError::failed(
                        "runtime",
                        format!("the job panicked: {e}"),
                    ))
                })
            }
        };
        let outcome = match result {
            Ok(()) => {
                let sha = sha.clone();
                self.finish(&id, generation, move |rec, now| {
                    rec.deployed_sha = Some(sha);
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
        telemetry::job_finished(JobKind::Deploy, outcome, Some(started.elapsed()));
    }

    async fn run_teardown(&self, job: TeardownJob, cancel: CancellationToken) {
        let id = job.id.clone();
        let generation = job.generation;
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        telemetry::set_queue_depth(self.queue_depth());
        let started = Instant::now();
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        let ctx = JobContext::new(id.clone(), generation, cancel, self.inner.store.clone());
        let runner = self.inner.runner.clone();
        let result = tokio::spawn(async move { runner.teardown(job, ctx).await })
            .await
            .unwrap_or_else(|e| {
                Err(JobError::failed(
                    "runtime",
                    format!("the job panicked: {e}"),
                ))
            });
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
        telemetry::job_finished(JobKind::Teardown, outcome, Some(started.elapsed()));
    }

    /// Applies a job's final change if the job is still current. Nobody waits for this change
    /// (the webhook was acknowledged long ago), so it is not awaited: the writer persists it with
    /// its next write, and shutdown flushes.
    async fn finish(
        &self,
        id: &PreviewId,
        generation: u64,
        f: impl FnOnce(&mut DeploymentRecord, Timestamp),
    ) {
        let (live, ticket) = self.inner.store.mutate(|s| {
            let changed = match s.deployments.get_mut(id) {
                Some(rec) if rec.generation == generation => {
                    f(rec, Timestamp::now());
                    true
                }
                _ => false,
            };
            (s.live_count(), changed)
        });
        telemetry::set_live_previews(live);
        drop(ticket);
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

/// The store side of a deploy request: create or update the record, or say why not.
fn decide_deploy(
    st: &mut StoreState,
    req: &DeployRequest,
    now: Timestamp,
    base_url: &str,
) -> ((Submission, Option<DeployJob>), bool) {
    let new_slug = st.slugs.get(&req.repo).is_none();
    let slug = st.slugs.slug_for(&req.repo);
    let id = PreviewId::new(&slug, req.pr);
    let rec = match st.deployments.get_mut(&id) {
        Some(rec) => {
            if let (Some(ev), Some(last)) = (req.event_at, rec.event_updated_at)
                && ev < last
            {
                return ((stale(&id), None), new_slug);
            }
            let busy_or_live =
                rec.status.is_in_progress() || rec.status == DeploymentStatus::Running;
            if !req.force
                && rec.desired == DesiredState::Running
                && rec.head_sha == req.sha
                && busy_or_live
            {
                let reason = format!(
                    "already {} at {}",
                    if rec.status == DeploymentStatus::Running {
                        "running"
                    } else {
                        "deploying"
                    },
                    req.sha.short()
                );
                if let Some(ev) = req.event_at {
                    rec.event_updated_at = Some(rec.event_updated_at.map_or(ev, |l| l.max(ev)));
                }
                return (
                    (
                        Submission::Ignored {
                            id: Some(id),
                            reason,
                        },
                        None,
                    ),
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
            rec.draft = req.draft;
            rec.desired = DesiredState::Running;
            rec.generation += 1;
            if let Some(ev) = req.event_at {
                rec.event_updated_at = Some(rec.event_updated_at.map_or(ev, |l| l.max(ev)));
            }
            rec.set_status(DeploymentStatus::Queued, now);
            rec
        }
        None => {
            let mut rec = DeploymentRecord {
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
                status: DeploymentStatus::Queued,
                desired: DesiredState::Running,
                draft: req.draft,
                url: format!("{base_url}{}", id.url_path()),
                comment_id: None,
                github_deployment_id: None,
                framework: None,
                created_at: now,
                updated_at: now,
                status_changed_at: now,
                event_updated_at: req.event_at,
                generation: 1,
                history: Vec::new(),
            };
            rec.set_status(DeploymentStatus::Queued, now);
            st.deployments.insert(rec)
        }
    };
    let job = deploy_job(rec, req.trigger.clone());
    (
        (
            Submission::Queued {
                id,
                job: JobKind::Deploy,
                sha: Some(req.sha.clone()),
            },
            Some(job),
        ),
        true,
    )
}
