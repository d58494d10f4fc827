//! Sleep and wake on this host.
//!
//! **The last request.** Each preview's nginx config appends its requests to the preview's
//! activity log (`{work dir}/logs/access.log`) through a 32 KiB buffer written when full or
//! `flush` seconds after its first line (a quarter of the idle time, 1 to 60 s). The file's
//! modification time is the last request's, give or take `flush`; the sweep reads it with one
//! `stat`. Per request this costs nginx a copy into memory, and the file is on disk, so it
//! survives a restart of the orchestrator (and of nginx). The sweep empties a log past
//! [`MAX_ACTIVITY_LOG`] and puts its modification time back.
//!
//! **Idle** is the time since the later of that and the record's last status change (a deploy
//! or a wake is activity too). A preview whose installed config has no wake route (deployed
//! before sleeping was on) never sleeps: nothing could wake it.
//!
//! **Sleep** stops the project's containers ([`preview_engine::Engine::stop`]): volumes, images,
//! the port and the nginx config stay. **Wake** starts them from the built images
//! ([`preview_engine::Engine::converge`]) with the environment the serving commit was deployed
//! with (its secrets when it was trusted: without them Compose would recreate the app without
//! them), then waits for readiness as a deploy does. Both hold the preview's host lock, so they
//! never overlap a deploy or teardown of the same preview.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use preview_core::id::PreviewId;
use preview_core::render::SleepRoute;
use preview_engine::{ComposeProject, HealthPolicy};

use super::{COMPOSE_FILE, DockerRunner, transient_docker};
use crate::feedback::{CommentState, FeedbackUpdate, Footprint};
use crate::jobs::WakeOutcome;
use crate::record::{DeploymentRecord, DeploymentStatus, DesiredState};
use crate::repo_secrets::RepoSecrets;

/// An activity log longer than this is emptied by the sweep (only its time matters).
const MAX_ACTIVITY_LOG: u64 = 1 << 20;
/// The longest pause between a wake's readiness polls.
const WAKE_POLL: Duration = Duration::from_millis(100);
/// Marks a config that routes a sleeping preview's requests to the wake endpoint.
const WAKE_ROUTE: &str = "/_preview_wake/";

impl DockerRunner {
    /// The nginx hooks of preview `id` when previews sleep; `None` when sleeping is off, the
    /// orchestrator is not listening on loopback, or the work dir's path cannot go into an
    /// nginx config unquoted.
    pub(super) fn sleep_route(&self, id: &str) -> Option<SleepRoute> {
        let idle = self.settings.idle_sleep?;
        let addr = *self.wake_addr.get()?;
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let log = self.activity_log(id);
        let log = log.to_str()?;
        if !ip.is_loopback()
            || !log
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        {
            tracing::warn!(
                preview = id,
                %addr,
                log,
                "this preview cannot sleep: the orchestrator must listen on loopback and the \
                 deployments dir's path be of [A-Za-z0-9._/-]"
            );
            return None;
        }
        Some(SleepRoute {
            activity_log: log.to_owned(),
            flush_secs: (idle.as_secs() / 4).clamp(1, 60),
            wake_addr: SocketAddr::new(ip, addr.port()),
        })
    }

    fn activity_log(&self, id: &str) -> PathBuf {
        self.settings.work_dir(id).join("logs").join("access.log")
    }

    /// The compose project of preview `id` as it serves.
    pub(super) fn serving_project(&self, id: &str) -> ComposeProject {
        ComposeProject {
            name: id.to_owned(),
            dir: self.settings.work_dir(id),
            file: COMPOSE_FILE.to_owned(),
        }
    }

    /// Whether the installed nginx config of `id` sends its requests to the wake endpoint.
    pub(super) fn wakes_through_nginx(&self, id: &str) -> bool {
        std::fs::read_to_string(self.settings.nginx_conf(id))
            .is_ok_and(|conf| conf.contains(WAKE_ROUTE))
    }

    /// How long preview `rec` has had no request (and no deploy or wake).
    pub(super) fn idle_for(&self, rec: &DeploymentRecord) -> Duration {
        let changed = SystemTime::UNIX_EPOCH
            + Duration::from_millis(
                u64::try_from(rec.status_changed_at.as_millisecond()).unwrap_or(0),
            );
        let log = self.activity_log(rec.id.as_str());
        let requested = std::fs::metadata(&log).and_then(|m| m.modified()).ok();
        if let Some(at) = requested {
            trim_activity_log(&log, at);
        }
        let last = requested.map_or(changed, |r| r.max(changed));
        SystemTime::now()
            .duration_since(last)
            .unwrap_or(Duration::ZERO)
    }

    /// Puts every serving preview idle for the idle time to sleep; returns them.
    pub(super) async fn sleep_idle_previews(&self) -> Vec<PreviewId> {
        let (Some(idle), Some(store)) = (self.settings.idle_sleep, self.store.get()) else {
            return Vec::new();
        };
        let serving = store.serving();
        let mut slept = Vec::new();
        for rec in serving {
            if self.idle_for(&rec) >= idle
                && self.wakes_through_nginx(rec.id.as_str())
                && self.put_to_sleep(&rec.id, store, idle).await
            {
                slept.push(rec.id);
            }
        }
        slept
    }

    /// Puts preview `id` to sleep now, whatever its idle time; the error says why it cannot.
    pub(super) async fn sleep_preview_now(&self, id: &PreviewId) -> Result<(), String> {
        let store = self.store.get().ok_or("the orchestrator is starting")?;
        if store.get(id).map(|r| r.status) == Some(DeploymentStatus::Sleeping) {
            return Ok(());
        }
        if !self.wakes_through_nginx(id.as_str()) {
            return Err(
                "its nginx config has no wake route (sleeping is off, or it was deployed before \
                 sleeping was on; a redeploy adds it)"
                    .into(),
            );
        }
        if self.put_to_sleep(id, store, Duration::ZERO).await {
            Ok(())
        } else {
            Err("it is not serving, or a job is deploying or removing it".into())
        }
    }

    /// Stops preview `id`'s containers and records it as sleeping, unless a job holds it or it
    /// was used meanwhile. Returns whether it sleeps.
    pub(super) async fn put_to_sleep(
        &self,
        id: &PreviewId,
        store: &crate::Store,
        idle: Duration,
    ) -> bool {
        let host = self.host_lock(id.as_str());
        // A job at work on it: it is not idle.
        let Ok(_host) = host.try_lock() else {
            return false;
        };
        let Some(rec) = store.get(id).filter(|r| {
            r.status == DeploymentStatus::Running && r.desired == DesiredState::Running
        }) else {
            return false;
        };
        let idle_for = self.idle_for(&rec);
        if idle_for < idle {
            return false;
        }
        let project = self.serving_project(id.as_str());
        let stopped = self
            .settings
            .retry
            .run(
                "docker compose stop",
                || self.settings.engine.stop(&project),
                transient_docker,
                || true,
            )
            .await;
        if let Err(e) = stopped {
            // Some containers may have stopped: the next request's wake starts them again.
            tracing::warn!(preview = %id, error = %e, "putting an idle preview to sleep failed");
            return false;
        }
        let now = jiff::Timestamp::now();
        // A webhook may have queued a deploy meanwhile: it then runs from the stopped
        // containers, as a push to a sleeping preview does.
        // The TTL counts from the last push, not from the last sleep.
        let (slept, ticket) = store.switch_status(
            id,
            &DeploymentStatus::Running,
            DeploymentStatus::Sleeping,
            now,
        );
        if let Err(e) = ticket.wait().await {
            tracing::warn!(preview = %id, error = %e, "could not save the sleeping state");
        }
        if slept {
            self.room_freed.notify_waiters();
            tracing::info!(preview = %id, idle_secs = idle_for.as_secs(), "the preview sleeps");
            self.tell(
                &rec,
                CommentState::Asleep {
                    footprint: Footprint::asleep(rec.build_ms, rec.start_ms),
                    service_urls: rec.service_urls.clone(),
                },
            );
        }
        slept
    }

    /// Wakes preview `id`: starts its containers and waits until it answers.
    pub(super) async fn wake_preview(&self, id: &PreviewId) -> WakeOutcome {
        let Some(store) = self.store.get() else {
            return WakeOutcome::Busy("starting up".into());
        };
        // A job holds the host lock for as long as a build takes: say so at once rather than
        // wait for it.
        if store
            .get(id)
            .is_some_and(|r| r.status.is_in_progress() && r.desired == DesiredState::Running)
        {
            return WakeOutcome::Busy("being deployed".into());
        }
        let host = self.host_lock(id.as_str());
        let _host = host.lock().await;
        let Some(rec) = store.get(id) else {
            return WakeOutcome::NotFound;
        };
        if rec.desired != DesiredState::Running {
            return WakeOutcome::Busy("being removed".into());
        }
        // Whether its containers need starting: a sleeping preview's do. So do some of a
        // serving one's after a sleep killed half-way; when all of them run (or ended as they
        // should, as a migration does), the app itself is slow or failing, and the wake only
        // waits for it to answer (never a redirect the browser would loop on).
        let start = match &rec.status {
            DeploymentStatus::Sleeping => true,
            DeploymentStatus::Running => match self.settings.engine.containers(id.as_str()).await {
                Ok(c) => c.is_empty() || c.iter().any(|c| c.state != "running" && !c.is_done()),
                Err(e) => return WakeOutcome::Failed(e.to_string()),
            },
            DeploymentStatus::Waiting { .. } => {
                return WakeOutcome::Busy("waiting for a free preview slot".into());
            }
            s if s.is_in_progress() => return WakeOutcome::Busy("being deployed".into()),
            _ => return WakeOutcome::NotFound,
        };
        let started = Instant::now();
        let secrets = if rec.deployed_trusted {
            match self.settings.secrets.load(&rec.repo) {
                Ok(secrets) => secrets,
                Err(e) => return WakeOutcome::Failed(format!("reading the secrets: {e}")),
            }
        } else {
            RepoSecrets::default()
        };
        if start {
            self.make_room_for_wake(&rec.id).await;
        }
        if let Err(reason) = self.start_from_images(&rec, store, &secrets, start).await {
            let reason = secrets.redact(&reason);
            tracing::warn!(preview = %id, reason, "waking the preview failed");
            return WakeOutcome::Failed(reason);
        }
        // On a swarm the app may have started on another node than before (or been moved
        // there by Swarm): the route follows it before the visitor is sent back.
        if let Err(reason) = self.route_to_app(id).await {
            tracing::warn!(preview = %id, reason, "routing the woken preview failed");
            return WakeOutcome::Failed(reason);
        }
        let now = jiff::Timestamp::now();
        let (woke, ticket) = store.switch_status(
            id,
            &DeploymentStatus::Sleeping,
            DeploymentStatus::Running,
            now,
        );
        if let Err(e) = ticket.wait().await {
            tracing::warn!(preview = %id, error = %e, "could not save the awake state");
        }
        let took = started.elapsed();
        tracing::info!(preview = %id, wake_ms = took.as_millis() as u64, "the preview woke");
        if woke {
            self.tell(
                &rec,
                CommentState::Awake {
                    framework: rec.framework.clone(),
                    wake_secs: format!("{:.1}", took.as_secs_f64()),
                    footprint: Footprint::awake(rec.build_ms, rec.start_ms),
                    service_urls: rec.service_urls.clone(),
                },
            );
        }
        WakeOutcome::Awake
    }

    /// Starts preview `rec`'s containers from their built images (when `start`) and waits for
    /// readiness.
    async fn start_from_images(
        &self,
        rec: &DeploymentRecord,
        store: &crate::Store,
        secrets: &RepoSecrets,
        start: bool,
    ) -> Result<(), String> {
        let id = rec.id.as_str();
        let project = self.serving_project(id);
        let env = secrets.app_env();
        if start {
            self.settings
                .retry
                .run(
                    "docker compose up (wake)",
                    || self.settings.engine.converge(&project, &env),
                    transient_docker,
                    || true,
                )
                .await
                .map_err(|e| format!("starting the containers: {e}"))?;
        }
        let port = store
            .ports(&rec.id)
            .map(|a| a.app)
            .ok_or("the preview holds no app port")?;
        // Readiness as the deploy planned it, from the same checkout.
        let checkout = self.settings.work_dir(id).join("checkout");
        let planned = tokio::task::spawn_blocking(move || preview_core::plan::plan(&checkout))
            .await
            .map_err(|e| format!("planning: {e}"))?
            .map_err(|e| format!("planning: {e}"))?;
        self.settings
            .engine
            .wait_ready(
                &project,
                None,
                port,
                &planned.plan.health_path,
                planned.plan.ready_when,
                // Someone waits for this answer: poll at least every 100 ms.
                HealthPolicy {
                    max_interval: self.settings.health.max_interval.min(WAKE_POLL),
                    ..self.settings.health
                },
            )
            .await
            .map_err(|e| format!("health: {e}"))?;
        Ok(())
    }

    fn tell(&self, rec: &DeploymentRecord, state: CommentState) {
        self.feedback.send(FeedbackUpdate {
            id: rec.id.clone(),
            repo: rec.repo.clone(),
            pr: rec.pr_number,
            sha: rec.deployed_sha.clone().unwrap_or(rec.head_sha.clone()),
            url: rec.url.clone(),
            state,
        });
    }
}

/// Empties an activity log past [`MAX_ACTIVITY_LOG`], keeping its modification time `at`.
/// nginx appends (`O_APPEND`), so its next line goes to the start of the emptied file.
fn trim_activity_log(path: &std::path::Path, at: SystemTime) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.len() <= MAX_ACTIVITY_LOG {
        return;
    }
    let trimmed = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(0)?;
            f.set_modified(at)
        });
    if let Err(e) = trimmed {
        tracing::warn!(log = %path.display(), error = %e, "emptying an activity log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_activity_log_is_emptied_and_keeps_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, vec![b'x'; MAX_ACTIVITY_LOG as usize + 1]).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_modified(at)
            .unwrap();
        trim_activity_log(&log, at);
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.modified().unwrap(), at);
        // A short one stays as it is.
        std::fs::write(&log, b"a line\n").unwrap();
        trim_activity_log(&log, at);
        assert_eq!(std::fs::read(&log).unwrap(), b"a line\n");
    }
}
