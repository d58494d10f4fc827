//! The real job bodies: fetch, plan, render, get every image the preview needs, build and
//! start, wait for readiness, route through nginx, and tell the pull request.
//! Teardown undoes all of it. Containers are reached only through [`DeploySettings::engine`], a
//! [`preview_engine::Engine`]: today the compose engine on this host (the steps below are
//! described in its terms); a Swarm engine plugs in at the same seam.
//!
//! # Updates without downtime
//!
//! A first deploy starts the whole compose project (`up -d --build --remove-orphans`). An update
//! of a preview that serves must not fail a request, so the new commit starts beside the old one
//! and nginx switches once it is ready:
//!
//! 1. **Beside.** Both commits' app containers live in the preview's one compose project, in two
//!    *slots* ([`AppSlot`]) that differ only in the app's service name (`app` and `app-green`;
//!    for a repo's compose file, its app service's name and that plus `-green`). The green one
//!    carries the plain name as a network alias, so the app reaches `db` and `redis`, and they
//!    reach it, by name as before, on the same network, with the same volumes. The new commit
//!    gets the slot that is not serving and a second app port from the pool
//!    ([`Store::allocate_next_app_port`](crate::Store::allocate_next_app_port), recorded as the
//!    allocation's `nextApp`). Its compose file is written as `docker-compose.next.yml`; the
//!    serving commit's `docker-compose.yml` stays as it is. Compose then builds the images
//!    (`build`), creates the services that do not exist yet without touching running ones
//!    (`up --no-recreate --no-deps db ...`: the database keeps running), and starts the new app
//!    service alone (`up --no-deps app-green`); the serving app is an orphan to this file and
//!    Compose leaves it alone. A second web service routed at its own hostname
//!    ([`hostname_service`]) is slotted with the app: it starts beside the serving one too, as
//!    `{name}-green` (or back under its plain name), at a second port of its own (`nextService`).
//! 2. **Ready.** The usual health wait, on the new port; then the new second service's.
//! 3. **Switch.** The nginx conf, rendered for the new ports (both server blocks in one conf,
//!    one reload), is installed with `nginx -t` and a reload. Then the next compose file becomes
//!    `docker-compose.yml` and the new ports become the allocation's `app` and `service` in one
//!    change, the old ones going back to the pool.
//! 4. **Drain, retire.** A reload returns before nginx serves the new config, and old workers
//!    finish their requests: the old ports are drained ([`drain`]), then `up --no-build
//!    --remove-orphans` from the new file removes the old slot's containers (the app and the
//!    routed second service together; and recreates a service whose own definition the commit
//!    changed, such as a rebuilt worker); the old slot's images go too.
//!
//! Only the app carries the commit's sha and its slot as labels; the other services, networks
//! and volumes have the same definition at every commit, so Compose never recreates them on an
//! update. (A preview deployed before this carries the sha on every object: on its first update
//! Compose recreates its network, so its containers restart once; its volumes stay.) A failed
//! update (build, health or nginx) removes the new slot's containers and images, the next compose
//! file and the second ports: the serving commit was never touched.
//!
//! **Crashes.** What serves is what nginx routes to: the port in the installed conf, and the slot
//! of the container that publishes it (a switch killed half-way, its backup conf still there,
//! goes back to the conf before it). An update that was killed is finished or undone from
//! there ([`DockerRunner::settle`]): a switch that happened is recorded (the next file renamed,
//! both ports switched), and the resumed job first removes whatever the slot it starts in holds.
//! The reconcile sweep does the same for previews no job is updating
//! ([`DockerRunner::clear_unfinished_update`]), so a half-finished start never lingers.

pub mod drain;
mod moves;

mod admission;
mod hostname_service;
mod images;
pub mod reconcile;
pub mod retry;
mod sleep;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_core::id::PreviewId;
use preview_core::plan::Planned;
use preview_core::render::{AppSlot, Limits, RenderInput};
use preview_engine::{ComposeEngine, ComposeProject, Engine, HealthPolicy, SwarmEngine, build_log};
use preview_exec::compose::{AppEnv, Compose};
use preview_exec::nginx::NginxControl;

use crate::feedback::{self, CommentState, Feedback, FeedbackUpdate};
use crate::jobs::{BoxFuture, DeployJob, JobContext, JobError, JobRunner, TeardownJob};
use crate::record::DeploymentStatus;
use crate::repo_secrets::{RepoSecretStore, RepoSecrets};
use retry::{RetryPolicy, is_transient_docker, is_transient_git};

/// The compose file's name in a preview's work dir.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// An update's new commit's compose file, until nginx routes to it.
pub const NEXT_COMPOSE_FILE: &str = "docker-compose.next.yml";
/// Lines of a failing phase's log shown on the PR.
const LOG_TAIL_LINES: usize = 50;

/// Where previews live on disk and how they are run.
#[derive(Clone)]
pub struct DeploySettings {
    /// One work dir per preview: `{deployments_dir}/{id}/`.
    pub deployments_dir: PathBuf,
    /// One nginx location file per preview: `{nginx_config_dir}/{id}.conf`.
    pub nginx_config_dir: PathBuf,
    /// How to test and reload nginx.
    pub nginx: NginxControl,
    /// What runs the previews; the jobs reach containers only through it.
    pub engine: Arc<dyn Engine>,
    /// Keeps a copy of each deploy's build log, for the dashboard.
    pub build_logs: crate::build_logs::BuildLogArchive,
    /// How long to wait for health, and how often to poll.
    pub health: HealthPolicy,
    /// Limits of every container.
    pub limits: Limits,
    /// Base URL repositories are cloned from: `{git_base_url}/{owner}/{name}.git`.
    pub git_base_url: String,
    /// By path or by hostname: decides the nginx config each preview gets.
    pub routing: preview_core::routing::Routing,
    /// Token for private repositories; given to git in its environment only.
    pub git_token: Option<String>,
    /// Time allowed for one git command.
    pub git_timeout: Duration,
    /// Retries of transient git and Docker failures.
    pub retry: RetryPolicy,
    /// How an update drains the old app port after the switch.
    pub drain: drain::DrainPolicy,
    /// The per-repository preview secrets: a trusted commit's app gets them at start.
    pub secrets: Arc<RepoSecretStore>,
    /// How long a preview may go without a request before it sleeps; `None`: never.
    pub idle_sleep: Option<Duration>,
    /// Below how much free disk new builds wait; `None`: no guard.
    pub disk_guard: Option<crate::capacity::DiskGuard>,
    /// Admission by memory; `None`: off.
    pub memory: Option<crate::capacity::MemoryAdmission>,
    /// How often a deploy waiting for disk or memory checks again.
    pub room_retry: Duration,
    /// Where previews' databases live: their own server, or the engine's shared one.
    pub database_mode: crate::DatabaseMode,
    /// The engine's shared database servers (used in shared mode; teardown drops a preview's
    /// database there in either mode, in case the mode changed).
    pub shared_databases: Arc<crate::shared_databases::SharedDatabases>,
}

impl DeploySettings {
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
    settings: DeploySettings,
    feedback: Feedback,
    /// [`crate::nginx::NGINX_LOCK`].
    nginx_lock: &'static tokio::sync::Mutex<()>,
    /// One task at a time changes a preview's containers, conf and work dir: its job, or the
    /// reconcile sweep removing it as an orphan.
    host_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The store, once the orchestrator has opened it (sleep and wake read and write it).
    store: std::sync::OnceLock<crate::Store>,
    /// Where the orchestrator listens: a sleeping preview's nginx config wakes it there.
    wake_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Told when a preview sleeps or is torn down: deploys waiting for room look again.
    room_freed: tokio::sync::Notify,
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
    /// The images that cannot be had, when that is the failure.
    missing_images: Vec<feedback::MissingImage>,
}

impl PhaseError {
    /// The failure with every secret value taken out of its reason and log tail: they go to the
    /// PR comment, the log and the API.
    fn redacted(self, secrets: &RepoSecrets) -> Self {
        Self {
            phase: self.phase,
            reason: secrets.redact(&self.reason),
            log_tail: secrets.redact(&self.log_tail),
            missing_images: self
                .missing_images
                .into_iter()
                .map(|m| feedback::MissingImage {
                    image: secrets.redact(&m.image),
                    wanted_by: secrets.redact(&m.wanted_by),
                    error: secrets.redact(&m.error),
                })
                .collect(),
        }
    }

    fn new(
        phase: &'static str,
        reason: impl std::fmt::Display,
        log_tail: impl Into<String>,
    ) -> Self {
        // Terminal colour codes show as garbage on GitHub.
        Self {
            phase,
            reason: build_log::strip_ansi(&reason.to_string()),
            log_tail: build_log::strip_ansi(&log_tail.into()),
            missing_images: Vec::new(),
        }
    }
}

impl DockerRunner {
    /// A runner configured from the orchestrator's settings; finds Docker Compose.
    pub async fn from_config(config: &crate::Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut compose = Compose::detect()
            .await
            .context("the runtime needs Docker Compose")?;
        compose.up_timeout = Duration::from_secs(config.build_timeout_secs);
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
        let settings = DeploySettings {
            deployments_dir: config.deployments_dir.clone(),
            nginx_config_dir: config.nginx_config_dir.clone(),
            nginx,
            engine: match config.engine {
                crate::config::EngineKind::Compose => Arc::new(ComposeEngine::new(compose.clone())),
                crate::config::EngineKind::Swarm => {
                    let registry = config
                        .swarm_registry
                        .clone()
                        .context("ENGINE=swarm needs SWARM_REGISTRY")?;
                    let push = config
                        .swarm_push_registry
                        .clone()
                        .unwrap_or(registry.clone());
                    Arc::new(SwarmEngine::new(compose.clone(), registry, push))
                }
            },
            build_logs: crate::build_logs::BuildLogArchive::new(config),
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
            routing: config.routing(),
            git_token: Some(config.github_token.clone()).filter(|t| !t.is_empty()),
            git_timeout: Duration::from_secs(config.git_timeout_secs),
            retry: RetryPolicy::default(),
            drain: drain::DrainPolicy::default(),
            secrets: Arc::new(RepoSecretStore::new(config.secrets_dir())),
            idle_sleep: config.idle_sleep(),
            disk_guard: match config.min_free_disk_bytes() {
                None => None,
                Some(min_free_bytes) => Some(crate::capacity::DiskGuard {
                    path: match &config.disk_guard_path {
                        Some(path) => path.clone(),
                        None => docker_root_dir()
                            .await
                            .unwrap_or_else(|| config.deployments_dir.clone()),
                    },
                    min_free_bytes,
                }),
            },
            memory: Some(crate::capacity::MemoryAdmission {
                // On a swarm the previews run on the nodes Swarm places them on, by their
                // reservations: this host's memory says nothing about them.
                source: match config.engine {
                    crate::config::EngineKind::Compose => {
                        crate::capacity::MemorySource::Meminfo(config.meminfo_path.clone())
                    }
                    crate::config::EngineKind::Swarm => crate::capacity::MemorySource::Nodes,
                },
                reserve_bytes: config.memory_reserve_mb.saturating_mul(1 << 20),
                container_limit_bytes: crate::capacity::parse_memory_limit(
                    &config.preview_memory_limit,
                )
                .context("invalid setting PREVIEW_MEMORY_LIMIT")?,
            }),
            room_retry: Duration::from_secs(config.room_retry_secs),
            database_mode: config.database_mode,
            shared_databases: Arc::new(crate::shared_databases::SharedDatabases::new(
                config.shared_servers(),
                config.shared_database_dir(),
                compose.clone(),
            )),
        };
        Ok(Self::new(settings, feedback))
    }

    /// Gives the runner the orchestrator's store (opened after the runner is made).
    pub fn attach_store(&self, store: crate::Store) {
        let _ = self.store.set(store.clone());
        self.feedback.attach_store(store);
    }

    /// The runner's feedback, to share with the queue (waiting PRs' comments).
    pub fn feedback(&self) -> &Feedback {
        &self.feedback
    }

    /// A runner with `settings`, sending feedback through `feedback`.
    pub fn new(settings: DeploySettings, feedback: Feedback) -> Self {
        feedback.attach_engine(settings.engine.clone());
        Self {
            settings,
            feedback,
            nginx_lock: &crate::nginx::NGINX_LOCK,
            host_locks: std::sync::Mutex::default(),
            store: std::sync::OnceLock::new(),
            wake_addr: std::sync::OnceLock::new(),
            room_freed: tokio::sync::Notify::new(),
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
        let mut beside = None;
        let mut warnings = Vec::new();
        // The repository's secrets: the app gets them only when the commit is trusted, and
        // every failure text is redacted of them whatever the commit (a serving trusted app's
        // logs may be in the tail).
        let loaded = self.settings.secrets.load(&job.repo);
        let secrets = loaded.as_ref().cloned().unwrap_or_default();
        let outcome = match loaded {
            Err(e) => Err(fail("secrets", e, "")),
            Ok(_) => {
                self.deploy_phases(
                    &job,
                    &ctx,
                    previous.is_some(),
                    &secrets,
                    &mut beside,
                    &mut warnings,
                )
                .await
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Stop::Cancelled(cancelled)) => {
                if let Some(beside) = beside {
                    self.abandon(&job.id, ctx.store(), &beside).await;
                }
                Err(cancelled)
            }
            Err(Stop::Failed(failure)) => {
                let failure = failure.redacted(&secrets);
                if previous.is_none() {
                    self.remove_everything(job.id.as_str()).await;
                    let _ = ctx.release_ports().await;
                } else if let Some(beside) = beside {
                    // The serving commit was never touched: only the new one goes.
                    self.abandon(&job.id, ctx.store(), &beside).await;
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
                        warnings,
                        missing_images: failure.missing_images,
                    },
                );
                Err(JobError::failed(failure.phase, failure.reason))
            }
        }
    }

    /// The phases in order, with a safe point between each two. An update (`updating`) starts
    /// the new commit beside the serving one, described in `beside` as soon as it is chosen, so
    /// that a failure can remove it (see the module docs). The plan's warnings go to
    /// `warnings`, for the failure comment.
    async fn deploy_phases(
        &self,
        job: &DeployJob,
        ctx: &JobContext,
        updating: bool,
        secrets: &RepoSecrets,
        beside: &mut Option<SideBySide>,
        warnings: &mut Vec<String>,
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
        let mut planned: Planned = {
            let _t = ctx.phase("plan");
            let root = checkout.clone();
            tokio::task::spawn_blocking(move || preview_core::plan::plan(&root))
                .await
                .map_err(|e| fail("plan", e, ""))?
                .map_err(|e| fail("plan", e, ""))?
        };
        hostname_service::route(&mut planned, &self.settings.routing, &job.id);
        let framework = planned.plan.framework.map(|f| f.as_str().to_owned());
        warnings.clone_from(&planned.plan.warnings);
        let _ = ctx.update(|r| r.framework = framework.clone()).await;
        ctx.checkpoint()?;

        // 3. ports: an update first settles what a killed update left, and clears the slot it
        // starts in, so that the ports its leftovers published are free again.
        let (serving, slot) = if updating {
            let serving = self.settle(&job.id, ctx.store()).await;
            let slot = serving
                .as_ref()
                .and_then(|s| s.slot)
                .map_or(AppSlot::Green, AppSlot::other);
            self.remove_slot(id, slot)
                .await
                .map_err(|e| fail("ports", short_reason(&e), exec_tail(&e)))?;
            (serving, slot)
        } else {
            (None, AppSlot::Blue)
        };
        let published = self
            .settings
            .retry
            .run(
                "docker ps",
                || self.settings.engine.published_ports(),
                transient_docker,
                || !ctx.is_cancelled(),
            )
            .await
            .map_err(|e| fail("ports", short_reason(&e), exec_tail(&e)))?;
        let ports = ctx
            .allocate_ports(false, &published)
            .await
            .map_err(store_failed)?;
        let service_port =
            hostname_service::hold_port(ctx.store(), &job.id, &planned, &published, updating)
                .await
                .map_err(store_failed)?;
        let host_port = if updating {
            let port = ctx
                .store()
                .allocate_next_app_port(&job.id, &published)
                .await
                .map_err(store_failed)?;
            // The serving commit's second web service, if it routes one: its port (kept until
            // the switch, whatever the new commit routes) and the service publishing it.
            let serving_routed_port = ctx.store().ports(&job.id).and_then(|a| a.service);
            let serving_routed_service = serving.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| serving_routed_port.is_some_and(|p| c.published.contains(&p)))
                    .map(|c| c.service.clone())
            });
            *beside = Some(SideBySide {
                serving_port: serving.as_ref().map_or(ports.app, |s| s.port),
                serving_routed_port,
                serving_service: serving.and_then(|s| s.service),
                slot,
                port,
                service: None,
                routed_service: None,
                serving_routed_service,
            });
            port
        } else {
            ports.app
        };

        // 3b. database, on the engine's shared server in shared mode
        let shared_database = self
            .shared_database(job, &planned, &checkout, &work, ctx)
            .await?;
        ctx.checkpoint()?;

        // 4. render
        let secret = deployment_secret(&work).map_err(|e| fail("render", e, ""))?;
        let mut input = RenderInput::for_preview(
            &job.id,
            &job.repo,
            &job.sha,
            host_port,
            &checkout,
            work.join("Dockerfile"),
            secret,
        );
        input.limits = self.settings.limits.clone();
        input.public_url = Some(job.url.clone());
        input.host = self.settings.routing.host_route(&job.id);
        // Every preview includes its repository's access file, so `preview access` reaches it
        // without a redeploy.
        input.access_include = Some(
            crate::access::include_pattern(&self.settings.nginx_config_dir, &job.repo)
                .map_err(|e| fail("render", e, ""))?,
        );
        input.app_slot = slot;
        input.sleep = self.sleep_route(id);
        input.shared_database = shared_database.as_ref().map(|p| p.database.clone());
        input.service_route = hostname_service::service_route(
            &self.settings.routing,
            &job.id,
            &planned,
            service_port,
        );
        // Secrets only for a trusted commit: their names in the compose file, their values in
        // Compose's environment for every command of this deploy that may create the app.
        let app_secrets = if job.trusted {
            secrets.clone()
        } else {
            RepoSecrets::default()
        };
        input.secret_names = app_secrets.names();
        let app_env = app_secrets.app_env();
        tracing::info!(
            preview = %job.id,
            trusted = job.trusted,
            secrets = input.secret_names.len(),
            "rendering"
        );
        let rendered =
            preview_core::render::render(&planned, &input).map_err(|e| fail("render", e, ""))?;
        let compose_file = if let Some(beside) = beside.as_mut() {
            beside.service = Some(rendered.services.app.clone());
            beside.routed_service.clone_from(&rendered.services.routed);
            NEXT_COMPOSE_FILE
        } else {
            COMPOSE_FILE
        };
        for (name, contents) in rendered.files() {
            // nginx.conf is installed by the route phase, under the nginx dir, after health.
            let name = match name {
                "nginx.conf" => continue,
                "docker-compose.yml" => compose_file,
                other => other,
            };
            std::fs::write(work.join(name), contents)
                .map_err(|e| fail("render", format!("writing {name}: {e}"), ""))?;
        }
        ctx.checkpoint()?;

        // 5. room: free disk for the build, memory for the containers it starts (the new app
        // and those of the others that do not run: all of them, unless an awake preview is
        // updated)
        {
            let running: BTreeSet<String> = match self.settings.engine.containers(id).await {
                Ok(containers) => containers
                    .into_iter()
                    .filter(|c| c.state == "running")
                    .map(|c| c.service)
                    .collect(),
                Err(_) => BTreeSet::new(),
            };
            let starting = 1 + rendered
                .services
                .others
                .iter()
                .filter(|s| !running.contains(*s))
                .count();
            let previous_sha_short = updating
                .then(|| ctx.record().and_then(|r| r.deployed_sha))
                .flatten()
                .map(|s| s.short().to_owned());
            let building = CommentState::Building {
                previous_url: previous_sha_short.as_ref().map(|_| job.url.clone()),
                previous_sha_short,
            };
            self.wait_for_room(job, ctx, starting, &building).await?;
        }

        // 5b. images: every image the preview needs is here before any build starts
        {
            let _t = ctx.phase("images");
            let needed = preview_core::checkout::Checkout::open(&checkout)
                .map(|c| rendered.needed_images(&input, &c))
                .map_err(|e| fail("images", e, ""))?;
            self.ensure_images(&needed, ctx).await?;
        }

        // 6. build and start
        let project = ComposeProject {
            name: id.to_owned(),
            dir: work.clone(),
            file: compose_file.to_owned(),
        };
        let build_log = logs.join("build.log");
        let _ = std::fs::remove_file(&build_log);
        let build_started = Instant::now();
        {
            let _t = ctx.phase("build");
            let built = if updating {
                self.start_beside(&app_env, &project, &build_log, ctx).await
            } else {
                self.settings
                    .retry
                    .run(
                        "docker compose up",
                        || self.settings.engine.up(&project, &app_env, &build_log),
                        transient_docker,
                        || !ctx.is_cancelled(),
                    )
                    .await
            };
            self.settings.build_logs.keep(&job.id, &job.sha, &build_log);
            if let Err(e) = built {
                let log = std::fs::read(&build_log).unwrap_or_default();
                let log = String::from_utf8_lossy(&log);
                // The failing Dockerfile step says more than the compose command line.
                let reason = build_log::build_failure(&log).unwrap_or_else(|| short_reason(&e));
                return Err(fail("build", reason, tail_lines(&log)));
            }
        }
        let build_secs = build_started.elapsed();
        ctx.set_status(DeploymentStatus::Starting)
            .await
            .map_err(store_failed)?;

        // 7. health (of the new app only: during an update the serving one goes on as it is)
        let health_started = Instant::now();
        {
            let _t = ctx.phase("health");
            let healthy = self
                .settings
                .engine
                .wait_ready(
                    &project,
                    updating.then_some(rendered.services.app.as_str()),
                    host_port,
                    &planned.plan.health_path,
                    planned.plan.ready_when,
                    self.settings.health,
                )
                .await
                .map_err(|e| e.to_string());
            let healthy = match healthy {
                Ok(_) => {
                    let engine = &*self.settings.engine;
                    let second = input.service_route.as_ref().map(|s| s.host_port);
                    let service = rendered.services.routed.as_deref();
                    let health = self.settings.health;
                    hostname_service::wait_ready(
                        engine, &project, &planned, service, second, health,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = healthy {
                let logs = self
                    .settings
                    .engine
                    .logs_tail(&project, LOG_TAIL_LINES)
                    .await;
                return Err(fail("health", e, tail_lines(&logs)));
            }
        }
        let start_secs = health_started.elapsed();
        ctx.checkpoint()?;
        // On a swarm the app runs on some node: nginx routes to that node's address.
        let upstream = self
            .app_upstream(id, host_port)
            .await
            .map_err(|e| fail("route", e, ""))?;
        let nginx_conf = if upstream == input.upstream {
            rendered.nginx
        } else {
            input.upstream = upstream;
            preview_core::render::render_nginx(&input).map_err(|e| fail("route", e, ""))?
        };

        // 8. route
        {
            let _t = ctx.phase("route");
            let _guard = self.nginx_lock.lock().await;
            if let Err(e) = self
                .settings
                .nginx
                .install(&self.settings.nginx_conf(id), &nginx_conf)
                .await
            {
                return Err(fail("route", short_reason(&e), e.stderr_tail()));
            }
        }
        // From here on the new commit serves: nothing may fail the job any more.
        let beside = beside.take();
        if let Some(beside) = &beside {
            if let Err(e) = std::fs::rename(work.join(NEXT_COMPOSE_FILE), work.join(COMPOSE_FILE)) {
                tracing::warn!(preview = id, error = %e, "could not make the new compose file the current one");
            }
            if let Err(e) = ctx.store().switch_to_next_ports(&job.id, beside.port).await {
                tracing::warn!(preview = id, error = %e, "could not record the new ports");
            }
            // A second web service the new commit no longer routes gives its port back now,
            // not when the update began: the serving commit's served there until the switch.
            if beside.routed_service.is_none()
                && beside.serving_routed_port.is_some()
                && let Err(e) = ctx.store().release_service_port(&job.id).await
            {
                tracing::warn!(preview = id, error = %e, "could not give back the second web service's port");
            }
        }
        tracing::info!(preview = %job.id, sha = %job.sha, total_ms = started.elapsed().as_millis() as u64, "preview live");
        let (build_ms, start_ms) = (build_secs.as_millis() as u64, start_secs.as_millis() as u64);
        let service_urls = hostname_service::urls(&self.settings.routing, &job.id, &planned);
        let _ = ctx
            .update(|r| {
                r.build_ms = Some(build_ms);
                r.start_ms = Some(start_ms);
                r.service_urls.clone_from(&service_urls);
            })
            .await;
        self.send(
            job,
            CommentState::Live {
                framework,
                database: shared_database
                    .as_ref()
                    .map(|p| p.describe(planned.plan.database_seed.as_deref())),
                warnings: planned.plan.warnings.clone(),
                footprint: feedback::Footprint::awake(Some(build_ms), Some(start_ms)),
                service_urls,
            },
        );

        // 9. drain the old port, then retire the old commit's containers
        if let Some(beside) = beside {
            let _t = ctx.phase("retire");
            self.retire(&app_env, id, &beside).await;
        }
        Ok(())
    }

    /// In shared mode, for a generated compose file and a Postgres or MySQL database: makes the
    /// preview's database and role on the engine's shared server (or finds them from an earlier
    /// deploy), seeding a new one from the repo's `database.seed`. `None` otherwise: the
    /// compose file then brings its own server, as in dedicated mode.
    async fn shared_database(
        &self,
        job: &DeployJob,
        planned: &Planned,
        checkout: &Path,
        work: &Path,
        ctx: &JobContext,
    ) -> Result<Option<crate::shared_databases::Provisioned>, Stop> {
        use preview_core::model::Database;
        let engine = match planned.plan.database {
            Some(engine @ (Database::Postgres | Database::Mysql))
                if self.settings.database_mode == crate::DatabaseMode::Shared
                    && planned.repo_compose.is_none() =>
            {
                engine
            }
            _ => return Ok(None),
        };
        let _t = ctx.phase("database");
        let seed = match planned.plan.database_seed.clone() {
            Some(path) => {
                let root = checkout.to_owned();
                let read = tokio::task::spawn_blocking(move || {
                    preview_core::checkout::Checkout::open(&root)
                        .and_then(|c| preview_core::seed::read_seed(&c, &path))
                })
                .await
                .map_err(|e| fail("database", e, ""))?;
                Some(read.map_err(|e| fail("database", e, ""))?)
            }
            None => None,
        };
        let password = crate::shared_databases::password_file(&work.join("database-password"))
            .map_err(|e| fail("database", format!("the database password: {e}"), ""))?;
        let provisioned = self
            .settings
            .shared_databases
            .provision(&job.id, engine, &password, seed.as_ref())
            .await
            .map_err(|e| match e {
                crate::Error::SharedDatabase { ref log_tail, .. } => {
                    let tail = log_tail.clone();
                    fail("database", e, tail)
                }
                other => fail("database", other, ""),
            })?;
        Ok(Some(provisioned))
    }

    /// Builds the images of `project` (the next compose file) and brings its services to it
    /// beside the serving app ([`preview_engine::Engine::start_beside`]). `env` carries the
    /// deploy's secrets, for the commands that create containers.
    async fn start_beside(
        &self,
        env: &AppEnv,
        project: &ComposeProject,
        log: &Path,
        ctx: &JobContext,
    ) -> preview_engine::Result<()> {
        let engine = &self.settings.engine;
        let go_on = || !ctx.is_cancelled();
        let retry = &self.settings.retry;
        retry
            .run(
                "docker compose build",
                || engine.build(project, log),
                transient_docker,
                go_on,
            )
            .await?;
        retry
            .run(
                "docker compose up (the new commit beside the serving one)",
                || engine.start_beside(project, env, log),
                transient_docker,
                go_on,
            )
            .await
    }

    /// Finishes or reads what an update of preview `id` left, from what nginx routes to: when
    /// nginx routes to the allocation's `nextApp` (an update was killed after its switch), that
    /// switch is recorded. Returns what serves, or `None` when nothing is routed.
    pub(crate) async fn settle(&self, id: &PreviewId, store: &crate::Store) -> Option<Serving> {
        let conf = self.settings.nginx_conf(id.as_str());
        let backup = conf.with_extension("conf.previous");
        if backup.exists() && conf.exists() {
            // A switch was killed between writing the new conf and finishing the reload: nginx
            // may serve either. The conf before it goes back, as its containers still run, and
            // the update counts as not switched.
            tracing::info!(preview = %id, "an nginx switch was not finished; restoring the conf before it");
            let _guard = self.nginx_lock.lock().await;
            match std::fs::rename(&backup, &conf) {
                Ok(()) => {
                    if let Err(e) = self.settings.nginx.reload().await {
                        tracing::warn!(preview = %id, error = %e, "reloading nginx failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(preview = %id, error = %e, "restoring the nginx conf failed")
                }
            }
        }
        let port = serving_port(&conf)?;
        let work = self.settings.work_dir(id.as_str());
        if store.ports(id).and_then(|a| a.next_app) == Some(port) {
            tracing::info!(preview = %id, port, "an update was switched but not finished; recording the switch");
            let next = work.join(NEXT_COMPOSE_FILE);
            if next.exists()
                && let Err(e) = std::fs::rename(&next, work.join(COMPOSE_FILE))
            {
                tracing::warn!(preview = %id, error = %e, "could not make the new compose file the current one");
            }
            if let Err(e) = store.switch_to_next_ports(id, port).await {
                tracing::warn!(preview = %id, error = %e, "could not record the new ports");
            }
        }
        let containers = match self.settings.engine.slot_containers(id.as_str()).await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(preview = %id, error = %e, "could not list the preview's containers");
                Vec::new()
            }
        };
        let serving = containers.iter().find(|c| c.published.contains(&port));
        Some(Serving {
            port,
            // An app from before slots has no slot label: it is in the blue one.
            slot: serving.map(|c| c.slot.unwrap_or(AppSlot::Blue)),
            service: serving.map(|c| c.service.clone()),
            containers,
        })
    }

    /// Removes the containers of preview `id` in app slot `slot`.
    async fn remove_slot(&self, id: &str, slot: AppSlot) -> preview_engine::Result<()> {
        let ids: Vec<String> = self
            .settings
            .engine
            .slot_containers(id)
            .await?
            .into_iter()
            .filter(|c| c.slot == Some(slot))
            .map(|c| c.id)
            .collect();
        if !ids.is_empty() {
            tracing::info!(
                preview = id,
                slot = slot.as_str(),
                containers = ids.len(),
                "removing the containers of the slot an update starts in"
            );
        }
        self.settings.engine.remove_containers(&ids).await
    }

    /// Undoes an update's start beside the serving commit: its containers, its image, the next
    /// compose file and the second port go. Best effort; each failure is logged.
    async fn abandon(&self, id: &PreviewId, store: &crate::Store, beside: &SideBySide) {
        if let Err(e) = self.remove_slot(id.as_str(), beside.slot).await {
            tracing::warn!(preview = %id, error = %e, "removing the new commit's containers failed");
        }
        for service in beside.service.iter().chain(&beside.routed_service) {
            self.remove_image_of(id.as_str(), service).await;
        }
        // What the failed build left; the serving commit's own image chain is tagged, so stays.
        let log = self
            .settings
            .work_dir(id.as_str())
            .join("logs")
            .join("build.log");
        self.remove_build_leftovers(id.as_str(), Some(&log), BTreeSet::new())
            .await;
        let _ = std::fs::remove_file(self.settings.work_dir(id.as_str()).join(NEXT_COMPOSE_FILE));
        if let Err(e) = store.release_next_ports(id).await {
            tracing::warn!(preview = %id, error = %e, "could not give back the new commit's ports");
        }
        tracing::info!(preview = %id, "the update was undone; the previous commit serves on");
    }

    /// After the switch: drains the old port, then removes the old slot's containers (as
    /// orphans of the now current compose file, without starting anything again) and image. Best effort; failures are logged
    /// and the next update or the teardown removes what is left. `compose` is the deploy's,
    /// with its secrets: without them Compose would recreate the new app without them.
    async fn retire(&self, env: &AppEnv, id: &str, beside: &SideBySide) {
        let started = Instant::now();
        let old_ports: Vec<u16> = std::iter::once(beside.serving_port)
            .chain(beside.serving_routed_port)
            .collect();
        let open = drain::drain(&old_ports, self.settings.drain).await;
        if open > 0 {
            tracing::warn!(
                preview = id,
                ports = ?old_ports,
                open,
                "connections to the old commit are cut after the drain time"
            );
        }
        let drained = started.elapsed();
        let work = self.settings.work_dir(id);
        let project = ComposeProject {
            name: id.to_owned(),
            dir: work,
            file: COMPOSE_FILE.to_owned(),
        };
        let Some(app_service) = &beside.service else {
            return;
        };
        let retired = self
            .settings
            .retry
            .run(
                "docker compose up --no-deps --remove-orphans",
                || self.settings.engine.retire(&project, env, app_service),
                transient_docker,
                || true,
            )
            .await;
        if let Err(e) = retired {
            tracing::warn!(preview = id, error = %e, "removing the previous commit's containers failed");
            return;
        }
        let retired_images = [
            (&beside.serving_service, &beside.service),
            (&beside.serving_routed_service, &beside.routed_service),
        ];
        for (old, new) in retired_images {
            if let Some(service) = old
                && Some(service) != new.as_ref()
            {
                self.remove_image_of(id, service).await;
            }
        }
        // The earlier builds' stage images, but not what this commit's build used: the cache
        // of the next push.
        let log = self.settings.work_dir(id).join("logs").join("build.log");
        let current = preview_engine::build_objects::objects_in_log(&String::from_utf8_lossy(
            &std::fs::read(&log).unwrap_or_default(),
        ));
        self.remove_build_leftovers(id, None, current.images).await;
        tracing::info!(
            preview = id,
            drain_ms = drained.as_millis() as u64,
            retire_ms = started.elapsed().as_millis() as u64,
            "the previous commit is retired"
        );
    }

    /// The images named by the builds of every preview but `id` (their ledgers): the layer
    /// cache their next builds use, which `id`'s cleanup keeps.
    fn build_cache_of_others(&self, id: &str) -> BTreeSet<String> {
        let mut keep = BTreeSet::new();
        for entry in std::fs::read_dir(&self.settings.deployments_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_str() != Some(id) {
                keep.extend(preview_engine::build_objects::read_ledger(&entry.path()).images);
            }
        }
        keep
    }

    /// Removes what builds of preview `id` left (stopped build containers, untagged stage
    /// images): those the build log `only` names, or those of all its builds; never what other
    /// previews' builds use, nor the images in `keep`. Best effort; a failure is logged.
    async fn remove_build_leftovers(
        &self,
        id: &str,
        only: Option<&Path>,
        mut keep: BTreeSet<String>,
    ) {
        keep.extend(self.build_cache_of_others(id));
        let project = ComposeProject {
            name: id.to_owned(),
            dir: self.settings.work_dir(id),
            file: COMPOSE_FILE.to_owned(),
        };
        match self
            .settings
            .engine
            .remove_build_leftovers(&project, only, &keep)
            .await
        {
            Ok(removed) if removed != Default::default() => tracing::info!(
                preview = id,
                containers = removed.containers,
                images = removed.images,
                "removed what the preview's builds left"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(preview = id, error = %e, "removing what the builds left failed")
            }
        }
    }

    /// Removes the image built for `service` of preview `id`; best effort.
    async fn remove_image_of(&self, id: &str, service: &str) {
        if let Err(e) = self.settings.engine.remove_service_image(id, service).await {
            tracing::warn!(preview = id, service, error = %e, "removing an image failed");
        }
    }

    /// For the reconcile sweep, on a preview no job is changing: settles an update that was
    /// killed (see [`DockerRunner::settle`]) and removes what its start beside left (containers
    /// of the slot that does not serve, or publishing another port; the next compose file; the
    /// second port). Leaves everything when it cannot tell what serves. Returns whether it
    /// removed anything.
    pub(crate) async fn clear_unfinished_update(
        &self,
        id: &PreviewId,
        store: &crate::Store,
    ) -> bool {
        let Some(serving) = self.settle(id, store).await else {
            return false;
        };
        let Some(slot) = serving.slot else {
            return false;
        };
        // The second web service publishes the port it holds, not the app's: it stays.
        let service_port = store.ports(id).and_then(|a| a.service);
        let leftovers: Vec<String> = serving
            .containers
            .iter()
            .filter(|c| {
                c.slot == Some(slot.other())
                    || (!c.published.is_empty()
                        && !c.published.contains(&serving.port)
                        && !c.published.iter().all(|p| Some(*p) == service_port))
            })
            .map(|c| c.id.clone())
            .collect();
        let next_file = self.settings.work_dir(id.as_str()).join(NEXT_COMPOSE_FILE);
        let next_ports = store
            .ports(id)
            .is_some_and(|a| a.next_app.is_some() || a.next_service.is_some());
        if leftovers.is_empty() && !next_ports && !next_file.exists() {
            return false;
        }
        tracing::info!(preview = %id, containers = leftovers.len(), "reconcile removes what an unfinished update started");
        if let Err(e) = self.settings.engine.remove_containers(&leftovers).await {
            tracing::warn!(preview = %id, error = %e, "removing an unfinished update's containers failed");
        }
        let _ = std::fs::remove_file(next_file);
        if let Err(e) = store.release_next_ports(id).await {
            tracing::warn!(preview = %id, error = %e, "could not give back an unfinished update's ports");
        }
        true
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
                    || self.settings.engine.tear_down(&project),
                    transient_docker,
                    || true,
                )
                .await;
            if let Err(e) = down {
                tracing::warn!(preview = id, error = %e, "compose down failed");
            }
        } else if let Err(e) = self.settings.engine.tear_down_named(id).await {
            tracing::warn!(preview = id, error = %e, "removing containers failed");
        }
        // Its images are gone: what its builds left (stage images, a failed step's container)
        // is no longer the cache of anything of its own.
        self.remove_build_leftovers(id, None, BTreeSet::new()).await;
        // After its containers: the network the app shared with the database server goes too.
        if let Ok(preview) = PreviewId::parse(id) {
            let shared_mode = self.settings.database_mode == crate::DatabaseMode::Shared;
            self.settings
                .shared_databases
                .drop_preview(&preview, shared_mode)
                .await;
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
        self.room_freed.notify_waiters();
        if let Some(record) = record {
            let reason = crate::queue::teardown_reason(&job.trigger);
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

    fn on_start(&self, store: crate::Store) -> BoxFuture<'_, Result<(), JobError>> {
        let _ = self.store.set(store);
        Box::pin(async { Ok(()) })
    }

    fn on_listening(&self, addr: std::net::SocketAddr) {
        let _ = self.wake_addr.set(addr);
    }

    fn sleep_idle(&self) -> BoxFuture<'_, Vec<PreviewId>> {
        Box::pin(self.sleep_idle_previews())
    }

    fn follow_moves(&self) -> BoxFuture<'_, Vec<PreviewId>> {
        Box::pin(self.follow_moves())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<(&'static str, Vec<preview_engine::Node>), String>> {
        Box::pin(async {
            let engine = &self.settings.engine;
            let nodes = engine.nodes().await.map_err(|e| e.to_string())?;
            Ok((engine.name(), nodes))
        })
    }

    fn services<'a>(
        &'a self,
        id: &'a PreviewId,
    ) -> BoxFuture<'a, Result<Vec<preview_engine::ContainerState>, String>> {
        Box::pin(async move {
            let mut containers = self
                .settings
                .engine
                .containers(id.as_str())
                .await
                .map_err(|e| e.to_string())?;
            containers.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
            Ok(containers)
        })
    }

    fn sleep_now<'a>(&'a self, id: &'a PreviewId) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.sleep_preview_now(id))
    }

    fn wake<'a>(&'a self, id: &'a PreviewId) -> BoxFuture<'a, crate::jobs::WakeOutcome> {
        Box::pin(self.wake_preview(id))
    }
}

/// Docker's root dir (where images and volumes grow), as `docker info` gives it.
async fn docker_root_dir() -> Option<PathBuf> {
    let out = preview_engine::docker("ask Docker where it keeps images")
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .run()
        .await
        .ok()?;
    let dir = out.stdout_text().trim().to_owned();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
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

/// What serves a preview, as [`DockerRunner::settle`] finds it.
pub(crate) struct Serving {
    /// The app port nginx routes to.
    port: u16,
    /// The slot of the container publishing it, if one does.
    slot: Option<AppSlot>,
    /// Its compose service.
    service: Option<String>,
    /// Every container of the preview's project.
    containers: Vec<preview_engine::SlotContainer>,
}

/// An update's new commit, started beside the serving one.
pub(crate) struct SideBySide {
    /// The app port nginx routes to until the switch.
    serving_port: u16,
    /// The serving app's compose service, when a container publishes that port.
    serving_service: Option<String>,
    /// The slot the new commit starts in.
    slot: AppSlot,
    /// The new commit's app port.
    port: u16,
    /// The new commit's app service, once rendered.
    service: Option<String>,
    /// The new commit's second web service routed at its own hostname (in the new slot), once
    /// rendered, when the plan routes one.
    routed_service: Option<String>,
    /// That service's name in the serving slot, whose image the retirement removes.
    serving_routed_service: Option<String>,
    /// The port nginx routes that service's host to until the switch, drained after it.
    serving_routed_port: Option<u16>,
}

/// The app port an installed nginx conf routes to (`proxy_pass http://{host}:{port}`);
/// `None` when there is no conf or it names none.
fn serving_port(conf: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(conf).ok()?;
    upstream_in_conf(&text).map(|(_, port)| port)
}

/// The upstream address and port of an nginx conf's `proxy_pass http://{host}:{port}`.
fn upstream_in_conf(text: &str) -> Option<(IpAddr, u16)> {
    const UPSTREAM: &str = "proxy_pass http://";
    let at = text.find(UPSTREAM)? + UPSTREAM.len();
    let end = at + text[at..].find(['/', ';', '\n'])?;
    let address: std::net::SocketAddr = text[at..end].parse().ok()?;
    Some((address.ip(), address.port()))
}

/// A git failure worth another attempt: git ran and failed on the network or the server.
/// Our own timeout is not retried (it is minutes long), nor is a bad argument.
fn transient_git(e: &preview_exec::Error) -> bool {
    matches!(e, preview_exec::Error::Failed { .. }) && is_transient_git(&e.to_string())
}

/// A Docker failure worth another attempt: the CLI ran and the daemon hiccuped.
fn transient_docker(e: &preview_engine::Error) -> bool {
    matches!(
        e,
        preview_engine::Error::Exec(preview_exec::Error::Failed { .. })
    ) && is_transient_docker(&e.to_string())
}

/// The stderr tail of a runtime error that ran a command.
fn exec_tail(e: &preview_engine::Error) -> String {
    match e {
        preview_engine::Error::Exec(e) => e.stderr_tail().to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_is_read_from_the_rendered_conf() {
        let input = RenderInput::new(
            "octo-app-pr-1",
            "octo/app",
            1,
            "a".repeat(40),
            "octo-app",
            8123,
            "/checkout",
            "/work/Dockerfile",
            "0123456789abcdef",
        );
        let conf = preview_core::render::render_nginx(&input).unwrap();
        let local = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(upstream_in_conf(&conf), Some((local, 8123)));
        // The same with each preview at its own hostname (a server block).
        let mut input = input;
        input.host = Some(preview_core::render::HostRoute {
            hostname: "octo-app-pr-1.preview.example.com".into(),
            listen: vec!["80".into()],
            tls: None,
        });
        let conf = preview_core::render::render_nginx(&input).unwrap();
        assert!(conf.contains("server_name"), "{conf}");
        assert_eq!(upstream_in_conf(&conf), Some((local, 8123)));
        // A swarm node's address, v4 and v6.
        for node in [IpAddr::from([10, 231, 0, 2]), "fd00::2".parse().unwrap()] {
            input.upstream = node;
            let conf = preview_core::render::render_nginx(&input).unwrap();
            assert_eq!(upstream_in_conf(&conf), Some((node, 8123)), "{conf}");
        }
        assert_eq!(upstream_in_conf("location / { return 404; }"), None);
        assert_eq!(serving_port(Path::new("/nonexistent/x.conf")), None);
    }
}
