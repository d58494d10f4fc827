//! The real job bodies: fetch, plan, render, build and start with Docker Compose, wait for
//! health, route through nginx, and tell the pull request. Teardown undoes all of it.

pub mod feedback;
pub mod reconcile;
pub mod retry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_core::plan::Planned;
use preview_core::render::{Limits, RenderInput};
use preview_exec::compose::Compose;
use preview_exec::nginx::NginxControl;
use preview_runtime::{ComposeProject, HealthPolicy};

use crate::jobs::{BoxFuture, DeployJob, JobContext, JobError, JobRunner, TeardownJob};
use crate::record::DeploymentStatus;
use feedback::{CommentState, Feedback, FeedbackUpdate};
use retry::{RetryPolicy, is_transient_docker, is_transient_git};

/// The compose file's name in a preview's work dir.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// The serving commit's compose file, kept during an update to roll back to.
const PREVIOUS_COMPOSE_FILE: &str = "docker-compose.previous.yml";
/// The tag that keeps the serving commit's images during an update.
const PREVIOUS_TAG: &str = "previous";
/// Lines of a failing phase's log shown on the PR.
const LOG_TAIL_LINES: usize = 50;

/// Where previews live on disk and how they are run.
#[derive(Clone)]
pub struct RuntimeSettings {
    /// One work dir per preview: `{deployments_dir}/{id}/`.
    pub deployments_dir: PathBuf,
    /// One nginx location file per preview: `{nginx_config_dir}/{id}.conf`.
    pub nginx_config_dir: PathBuf,
    /// How to test and reload nginx.
    pub nginx: NginxControl,
    /// The Compose CLI.
    pub compose: Compose,
    /// How long to wait for health, and how often to poll.
    pub health: HealthPolicy,
    /// Limits of every container.
    pub limits: Limits,
    /// Base URL repositories are cloned from: `{git_base_url}/{owner}/{name}.git`.
    pub git_base_url: String,
    /// Token for private repositories; given to git in its environment only.
    pub git_token: Option<String>,
    /// Time allowed for one git command.
    pub git_timeout: Duration,
    /// Retries of transient git and Docker failures.
    pub retry: RetryPolicy,
}

impl RuntimeSettings {
    /// The work dir of preview `id`.
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.deployments_dir.join(id)
    }

    /// The nginx location file of preview `id`.
    pub fn nginx_conf(&self, id: &str) -> PathBuf {
        self.nginx_config_dir.join(format!("{id}.conf"))
    }
}

/// Runs jobs on the local Docker engine.
pub struct DockerRunner {
    settings: RuntimeSettings,
    feedback: Feedback,
    /// nginx has one config; tests and reloads of two previews must not interleave.
    nginx_lock: tokio::sync::Mutex<()>,
    /// One task at a time changes a preview's containers, conf and work dir: its job, or the
    /// reconcile sweep removing it as an orphan.
    host_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Why the phases stopped: a failure to report, or a cancellation at a safe point.
enum Stop {
    Failed(PhaseError),
    Cancelled(JobError),
}

impl From<JobError> for Stop {
    fn from(e: JobError) -> Self {
        Stop::Cancelled(e)
    }
}

fn fail(phase: &'static str, reason: impl std::fmt::Display, log_tail: impl Into<String>) -> Stop {
    Stop::Failed(PhaseError::new(phase, reason, log_tail))
}

/// A phase failure with the log lines that explain it.
struct PhaseError {
    phase: &'static str,
    reason: String,
    log_tail: String,
}

impl PhaseError {
    fn new(
        phase: &'static str,
        reason: impl std::fmt::Display,
        log_tail: impl Into<String>,
    ) -> Self {
        Self {
            phase,
            reason: reason.to_string(),
            log_tail: log_tail.into(),
        }
    }
}

impl DockerRunner {
    /// A runner configured from the orchestrator's settings; finds Docker Compose.
    pub async fn from_config(config: &crate::Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let compose = Compose::detect()
            .await
            .context("the runtime needs Docker Compose")?;
        let nginx = NginxControl::from_command_lines(
            &config.nginx_test_command,
            &config.nginx_reload_command,
        )
        .context("invalid setting NGINX_RELOAD_COMMAND")?;
        let client =
            preview_github::GitHubClient::new(&config.github_api_url, &config.github_token)
                .context("invalid setting GITHUB_API_URL")?;
        let feedback = Feedback::new(
            Some(client),
            feedback::FeedbackSettings {
                comments: config.github_comments,
                deployments: config.github_deployments,
                commit_statuses: config.github_commit_statuses,
            },
        );
        for dir in [&config.deployments_dir, &config.nginx_config_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let settings = RuntimeSettings {
            deployments_dir: config.deployments_dir.clone(),
            nginx_config_dir: config.nginx_config_dir.clone(),
            nginx,
            compose,
            health: HealthPolicy {
                max_interval: Duration::from_secs(config.health_interval_secs.max(1)),
                timeout: Duration::from_secs(config.health_timeout_secs),
                ..HealthPolicy::default()
            },
            limits: Limits {
                memory: config.preview_memory_limit.clone(),
                cpus: config.preview_cpu_limit.clone(),
                ..Limits::default()
            },
            git_base_url: config.git_base_url.clone(),
            git_token: Some(config.github_token.clone()).filter(|t| !t.is_empty()),
            git_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        };
        Ok(Self::new(settings, feedback))
    }

    /// Gives the runner the orchestrator's store (opened after the runner is made).
    pub fn attach_store(&self, store: crate::Store) {
        self.feedback.attach_store(store);
    }

    /// The runner's feedback, to share with the queue (waiting PRs' comments).
    pub fn feedback(&self) -> &Feedback {
        &self.feedback
    }

    /// A runner with `settings`, sending feedback through `feedback`.
    pub fn new(settings: RuntimeSettings, feedback: Feedback) -> Self {
        Self {
            settings,
            feedback,
            nginx_lock: tokio::sync::Mutex::new(()),
            host_locks: std::sync::Mutex::default(),
        }
    }

    fn send(&self, job: &DeployJob, state: CommentState) {
        self.feedback.send(FeedbackUpdate {
            id: job.id.clone(),
            repo: job.repo.clone(),
            pr: job.pr,
            sha: job.sha.clone(),
            url: job.url.clone(),
            state,
        });
    }

    /// The lock over preview `id`'s containers, conf and work dir.
    pub(crate) fn host_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.host_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    async fn deploy_job(&self, job: DeployJob, ctx: JobContext) -> Result<(), JobError> {
        let host = self.host_lock(job.id.as_str());
        let _host = host.lock().await;
        let record = ctx.record();
        // The commit that serves now, if any: an update that fails leaves it serving.
        let previous = record
            .as_ref()
            .and_then(|r| r.deployed_sha.clone())
            .filter(|_| {
                record
                    .as_ref()
                    .is_some_and(|r| self.settings.nginx_conf(r.id.as_str()).exists())
            });
        ctx.checkpoint()?;
        ctx.set_status(DeploymentStatus::Building).await?;
        self.send(
            &job,
            CommentState::Building {
                previous_url: previous.as_ref().map(|_| job.url.clone()),
                previous_sha_short: previous.as_ref().map(|s| s.short().to_owned()),
            },
        );
        let mut rollback = None;
        let outcome = self
            .deploy_phases(&job, &ctx, previous.is_some(), &mut rollback)
            .await;
        match outcome {
            Ok(()) => {
                if let Some(rollback) = rollback {
                    rollback
                        .discard(&self.settings.work_dir(job.id.as_str()))
                        .await;
                }
                Ok(())
            }
            Err(Stop::Cancelled(cancelled)) => Err(cancelled),
            Err(Stop::Failed(failure)) => {
                let mut previous = previous;
                if previous.is_none() {
                    self.remove_everything(job.id.as_str()).await;
                    let _ = ctx.release_ports().await;
                } else if let Some(rollback) = rollback
                    && let Err(e) = self.roll_back(job.id.as_str(), rollback).await
                {
                    // The previous commit cannot serve again: say so rather than claim it does.
                    tracing::error!(preview = %job.id, error = %e, "rolling back to the previous commit failed");
                    previous = None;
                }
                tracing::warn!(preview = %job.id, phase = failure.phase, reason = %failure.reason, "deploy failed");
                self.send(
                    &job,
                    CommentState::Failed {
                        phase: failure.phase.to_owned(),
                        reason: failure.reason.clone(),
                        log_tail: failure.log_tail,
                        previous_url: previous.as_ref().map(|_| job.url.clone()),
                        previous_sha_short: previous.as_ref().map(|s| s.short().to_owned()),
                    },
                );
                Err(JobError::failed(failure.phase, failure.reason))
            }
        }
    }

    /// The phases in order, with a safe point between each two. An update (`updating`) first
    /// keeps what serves now in `rollback`, so that a failure from the build on can go back.
    async fn deploy_phases(
        &self,
        job: &DeployJob,
        ctx: &JobContext,
        updating: bool,
        rollback: &mut Option<Rollback>,
    ) -> Result<(), Stop> {
        let store_failed = |e: crate::Error| fail("store", e, "");
        let id = job.id.as_str();
        let work = self.settings.work_dir(id);
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| fail("fetch", format!("creating {}: {e}", logs.display()), ""))?;
        let started = Instant::now();

        // 1. fetch
        let checkout = work.join("checkout");
        {
            let _t = ctx.phase("fetch");
            let url = format!(
                "{}/{}/{}.git",
                self.settings.git_base_url.trim_end_matches('/'),
                job.repo.owner(),
                job.repo.name()
            );
            let request = preview_exec::git::FetchRequest {
                url,
                pr: u64::from(job.pr.get()),
                sha: job.sha.as_str().to_owned(),
                dest: checkout.clone(),
                token: self.settings.git_token.clone(),
                timeout: self.settings.git_timeout,
            };
            let fetched = self
                .settings
                .retry
                .run(
                    "git fetch",
                    || preview_exec::git::fetch_pull_request(&request),
                    transient_git,
                    || !ctx.is_cancelled(),
                )
                .await;
            ctx.checkpoint()?;
            fetched.map_err(|e| fail("fetch", short_reason(&e), e.stderr_tail()))?;
        }

        // 2. plan
        let planned: Planned = {
            let _t = ctx.phase("plan");
            let root = checkout.clone();
            tokio::task::spawn_blocking(move || preview_core::plan::plan(&root))
                .await
                .map_err(|e| fail("plan", e, ""))?
                .map_err(|e| fail("plan", e, ""))?
        };
        let framework = planned.plan.framework.map(|f| f.as_str().to_owned());
        let _ = ctx.update(|r| r.framework = framework.clone()).await;
        ctx.checkpoint()?;

        // 3. ports, 4. render
        let published = self
            .settings
            .retry
            .run(
                "docker ps",
                preview_runtime::published_ports,
                transient_docker,
                || !ctx.is_cancelled(),
            )
            .await
            .map_err(|e| fail("ports", short_reason(&e), exec_tail(&e)))?;
        let ports = ctx
            .allocate_ports(false, &published)
            .await
            .map_err(store_failed)?;
        let secret = deployment_secret(&work).map_err(|e| fail("render", e, ""))?;
        let mut input = RenderInput::for_preview(
            &job.id,
            &job.repo,
            &job.sha,
            ports.app,
            &checkout,
            work.join("Dockerfile"),
            secret,
        );
        input.limits = self.settings.limits.clone();
        input.public_url = Some(job.url.clone());
        let rendered =
            preview_core::render::render(&planned, &input).map_err(|e| fail("render", e, ""))?;
        if updating {
            match Rollback::keep(id, &work).await {
                Ok(kept) => *rollback = Some(kept),
                Err(e) => {
                    tracing::warn!(preview = id, error = %e, "cannot keep the previous commit to roll back to")
                }
            }
        }
        for (name, contents) in rendered.files() {
            // nginx.conf is installed by the route phase, under the nginx dir, after health.
            if name != "nginx.conf" {
                std::fs::write(work.join(name), contents)
                    .map_err(|e| fail("render", format!("writing {name}: {e}"), ""))?;
            }
        }
        ctx.checkpoint()?;

        // 5. build and start
        let project = ComposeProject {
            name: id.to_owned(),
            dir: work.clone(),
            file: COMPOSE_FILE.to_owned(),
        };
        let build_log = logs.join("build.log");
        let _ = std::fs::remove_file(&build_log);
        let build_started = Instant::now();
        {
            let _t = ctx.phase("build");
            let built = self
                .settings
                .retry
                .run(
                    "docker compose up",
                    || project.up(&self.settings.compose, &build_log),
                    transient_docker,
                    || !ctx.is_cancelled(),
                )
                .await;
            if let Err(e) = built {
                return Err(fail("build", short_reason(&e), tail_of_file(&build_log)));
            }
        }
        let build_secs = build_started.elapsed();
        ctx.set_status(DeploymentStatus::Starting)
            .await
            .map_err(store_failed)?;

        // 6. health
        let health_started = Instant::now();
        {
            let _t = ctx.phase("health");
            if let Err(e) = project
                .wait_healthy(ports.app, &planned.plan.health_path, self.settings.health)
                .await
            {
                let logs = project
                    .logs_tail(&self.settings.compose, LOG_TAIL_LINES)
                    .await;
                return Err(fail("health", e, tail_lines(&logs)));
            }
        }
        let start_secs = health_started.elapsed();
        ctx.checkpoint()?;

        // 7. route
        {
            let _t = ctx.phase("route");
            let _guard = self.nginx_lock.lock().await;
            if let Err(e) = self
                .settings
                .nginx
                .install(&self.settings.nginx_conf(id), &rendered.nginx)
                .await
            {
                return Err(fail("route", short_reason(&e), e.stderr_tail()));
            }
        }
        tracing::info!(preview = %job.id, sha = %job.sha, total_ms = started.elapsed().as_millis() as u64, "preview live");
        self.send(
            job,
            CommentState::Live {
                framework,
                build_secs: format!("{:.1}", build_secs.as_secs_f64()),
                start_secs: format!("{:.1}", start_secs.as_secs_f64()),
            },
        );
        Ok(())
    }

    /// Puts the previous commit back after a failed update: its images, its compose file, and
    /// its containers, started from those images without a build. nginx still routes to the
    /// same port (a failed route phase restored its conf).
    async fn roll_back(&self, id: &str, rollback: Rollback) -> Result<(), String> {
        let work = self.settings.work_dir(id);
        // The failed commit's images, removed once nothing runs them (they would dangle).
        let mut failed_images = Vec::new();
        for image in &rollback.images {
            if let Ok(out) = preview_runtime::docker("read the failed commit's image id")
                .args([
                    "image",
                    "inspect",
                    "--format",
                    "{{.Id}}",
                    &format!("{image}:latest"),
                ])
                .run()
                .await
            {
                failed_images.push(out.stdout_text().trim().to_owned());
            }
        }
        retag(
            &rollback.images,
            PREVIOUS_TAG,
            "latest",
            "restore the previous commit's image",
        )
        .await?;
        std::fs::rename(work.join(PREVIOUS_COMPOSE_FILE), work.join(COMPOSE_FILE))
            .map_err(|e| format!("restoring the previous compose file: {e}"))?;
        let start = self
            .settings
            .compose
            .start(id, &work, COMPOSE_FILE)
            .map_err(|e| e.to_string())?;
        self.settings
            .retry
            .run(
                "docker compose up --no-build",
                || start.run(),
                |e| {
                    matches!(e, preview_exec::Error::Failed { .. })
                        && is_transient_docker(&e.to_string())
                },
                || true,
            )
            .await
            .map_err(|e| e.to_string())?;
        rollback.discard(&work).await;
        failed_images.retain(|i| !i.is_empty());
        if !failed_images.is_empty() {
            // Without --force: an image still in use (the same build as before) stays.
            let _ = preview_runtime::docker("remove the failed commit's images")
                .args(["image", "rm"])
                .args(&failed_images)
                .run()
                .await;
        }
        tracing::info!(preview = id, "rolled back to the previous commit");
        Ok(())
    }

    /// Removes what a preview has on this host: containers, networks, volumes, built images,
    /// its nginx conf and its work dir. Best effort; each failure is logged.
    pub async fn remove_everything(&self, id: &str) {
        let work = self.settings.work_dir(id);
        if work.join(COMPOSE_FILE).exists() {
            let project = ComposeProject {
                name: id.to_owned(),
                dir: work.clone(),
                file: COMPOSE_FILE.to_owned(),
            };
            let down = self
                .settings
                .retry
                .run(
                    "docker compose down",
                    || project.down(&self.settings.compose),
                    transient_docker,
                    || true,
                )
                .await;
            if let Err(e) = down {
                tracing::warn!(preview = id, error = %e, "compose down failed");
            }
        } else if let Err(e) = reconcile::remove_project(id).await {
            tracing::warn!(preview = id, error = %e, "removing containers failed");
        }
        {
            let _guard = self.nginx_lock.lock().await;
            if let Err(e) = self
                .settings
                .nginx
                .remove(&self.settings.nginx_conf(id))
                .await
            {
                tracing::warn!(preview = id, error = %e, "removing the nginx conf failed");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(preview = id, error = %e, "removing the work dir failed");
        }
    }

    async fn teardown_job(&self, job: TeardownJob, ctx: JobContext) -> Result<(), JobError> {
        let host = self.host_lock(job.id.as_str());
        let _host = host.lock().await;
        let record = ctx.record();
        self.remove_everything(job.id.as_str()).await;
        if let Some(record) = record {
            let reason = match &job.trigger {
                crate::jobs::JobTrigger::Cleanup { reason } => reason.clone(),
                crate::jobs::JobTrigger::Api => "an operator removed it".to_owned(),
                _ => "the pull request was closed".to_owned(),
            };
            self.feedback.send(FeedbackUpdate {
                id: job.id.clone(),
                repo: job.repo.clone(),
                pr: job.pr,
                sha: record.head_sha.clone(),
                url: record.url.clone(),
                state: CommentState::Closed { reason },
            });
        }
        Ok(())
    }
}

impl JobRunner for DockerRunner {
    fn deploy(&self, job: DeployJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.deploy_job(job, ctx))
    }

    fn teardown(&self, job: TeardownJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.teardown_job(job, ctx))
    }
}

/// The preview's own secret (database passwords), made once and kept across updates, because a
/// database volume keeps the password it was created with.
fn deployment_secret(work: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = work.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.len() >= 16 => return Ok(secret),
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| {
                const ALPHABET: &[u8] =
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                ALPHABET[rng.random_range(0..ALPHABET.len())] as char
            })
            .collect()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// What an update keeps of the serving commit until it is live: the compose file and the
/// images Compose built (tagged `:previous`), to roll back to if the update fails.
struct Rollback {
    /// Image names (`{project}-{service}`) tagged `:previous`.
    images: Vec<String>,
}

impl Rollback {
    /// Copies the serving compose file aside and tags the serving images `:previous`.
    async fn keep(id: &str, work: &Path) -> Result<Self, String> {
        std::fs::copy(work.join(COMPOSE_FILE), work.join(PREVIOUS_COMPOSE_FILE))
            .map_err(|e| format!("keeping the previous compose file: {e}"))?;
        let images: Vec<String> = preview_runtime::built_images(id)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|image| image.strip_suffix(":latest").map(str::to_owned))
            .collect();
        retag(
            &images,
            "latest",
            PREVIOUS_TAG,
            "keep the serving commit's image",
        )
        .await?;
        Ok(Self { images })
    }

    /// Drops the kept file and tags; images no container uses any more go with their tag.
    async fn discard(self, work: &Path) {
        let _ = std::fs::remove_file(work.join(PREVIOUS_COMPOSE_FILE));
        if self.images.is_empty() {
            return;
        }
        let tags: Vec<String> = self
            .images
            .iter()
            .map(|image| format!("{image}:{PREVIOUS_TAG}"))
            .collect();
        if let Err(e) = preview_runtime::docker("drop the previous commit's image tags")
            .args(["image", "rm"])
            .args(&tags)
            .run()
            .await
        {
            tracing::warn!(error = %e, "dropping the previous images failed");
        }
    }
}

/// A git failure worth another attempt: git ran and failed on the network or the server.
/// Our own timeout is not retried (it is minutes long), nor is a bad argument.
fn transient_git(e: &preview_exec::Error) -> bool {
    matches!(e, preview_exec::Error::Failed { .. }) && is_transient_git(&e.to_string())
}

/// A Docker failure worth another attempt: the CLI ran and the daemon hiccuped.
fn transient_docker(e: &preview_runtime::Error) -> bool {
    matches!(
        e,
        preview_runtime::Error::Exec(preview_exec::Error::Failed { .. })
    ) && is_transient_docker(&e.to_string())
}

/// The stderr tail of a runtime error that ran a command.
fn exec_tail(e: &preview_runtime::Error) -> String {
    match e {
        preview_runtime::Error::Exec(e) => e.stderr_tail().to_owned(),
        _ => String::new(),
    }
}

/// The first line of an error: the rest (stderr) goes into the log tail.
fn short_reason(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

fn tail_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn tail_of_file(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| tail_lines(&String::from_utf8_lossy(&bytes)))
        .unwrap_or_default()
}

/// Tags `{image}:{from}` as `{image}:{to}` for every image.
async fn retag(images: &[String], from: &str, to: &str, description: &str) -> Result<(), String> {
    for image in images {
        preview_runtime::docker(description)
            .args(["tag", &format!("{image}:{from}"), &format!("{image}:{to}")])
            .run()
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
