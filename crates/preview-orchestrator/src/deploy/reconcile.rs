//! Reconcile: make the host match the store. Anything that carries our labels or lives under our
//! directories without a live record goes; a running record whose containers vanished is
//! deployed again; what a killed update started beside the serving commit goes (the two app
//! slots of a preview are one compose project, so neither is an orphan). Runs at startup and in every cleanup sweep, with the other cleanups: previews
//! of pull requests GitHub says are closed (a missed `closed` event) and previews past the TTL.

use std::collections::BTreeSet;

use preview_core::id::PreviewId;
use preview_core::render::labels;
use preview_github::{GitHubClient, PullRequestState};

use super::DockerRunner;
use crate::jobs::JobTrigger;
use crate::queue::Scheduler;
use crate::record::DeploymentStatus;

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Compose projects, nginx confs and work dirs removed, by id.
    pub removed: BTreeSet<String>,
    /// Running previews whose containers were gone and were queued again.
    pub redeployed: BTreeSet<String>,
    /// Previews whose unfinished update (killed mid-way) was settled and its leftovers removed.
    pub cleared: BTreeSet<String>,
    /// Sleeping previews found running (a wake killed after it started them): recorded as
    /// serving again, so that the sleep sweep watches them.
    pub awake: BTreeSet<String>,
}

/// One pass; `scheduler` queues redeploys.
pub async fn reconcile(runner: &DockerRunner, scheduler: &Scheduler) -> ReconcileReport {
    let store = scheduler.store();
    let live: BTreeSet<String> = store.read(|s| {
        s.deployments
            .values()
            .filter(|r| r.status != DeploymentStatus::Stopped)
            .map(|r| r.id.as_str().to_owned())
            .collect()
    });
    let mut report = ReconcileReport::default();
    let mut orphans = BTreeSet::new();
    let settings = &runner.settings;
    // Only projects Compose ran from our deployments dir are ours: another orchestrator on the
    // same engine (another deployments dir, e.g. a test's) owns the rest.
    let ours = std::fs::canonicalize(&settings.deployments_dir)
        .unwrap_or_else(|_| settings.deployments_dir.clone());
    match settings.engine.list_ours(labels::MANAGED).await {
        Ok(projects) => orphans.extend(
            projects
                .into_iter()
                .filter(|(p, dir)| !live.contains(p) && dir.starts_with(&ours))
                .map(|(p, _)| p),
        ),
        Err(e) => tracing::warn!(error = %e, "reconcile could not list containers"),
    }
    for (dir, suffix) in [
        (&settings.nginx_config_dir, ".conf"),
        (&settings.deployments_dir, ""),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(suffix)
                && PreviewId::parse(id).is_ok()
                && !live.contains(id)
            {
                orphans.insert(id.to_owned());
            }
        }
    }
    // The sweep runs beside the jobs: a webhook may have made a record since `live` was read.
    // Each candidate is checked against the store again while the sweep holds the preview's
    // host lock, so a job for it that starts meanwhile waits until the removal is done, and one
    // already at work makes the sweep pass it by.
    let is_live = |id: &str| {
        store.read(|s| {
            s.deployments
                .values()
                .any(|r| r.id.as_str() == id && r.status != DeploymentStatus::Stopped)
        })
    };
    for id in orphans {
        let host = runner.host_lock(&id);
        let Ok(_host) = host.try_lock() else {
            continue;
        };
        if is_live(&id) {
            continue;
        }
        tracing::info!(preview = %id, "reconcile removes an orphaned preview");
        runner.remove_everything(&id).await;
        report.removed.insert(id);
    }
    // Updates that were killed after starting the new commit beside the serving one, of previews
    // no job is deploying: the new slot's containers, compose file and second port go (or the
    // switch, if it happened, is recorded). A job at work holds the host lock and is passed by.
    let settled: Vec<PreviewId> = store.read(|s| {
        s.deployments
            .values()
            .filter(|r| r.status != DeploymentStatus::Stopped && !r.status.is_in_progress())
            .map(|r| r.id.clone())
            .collect()
    });
    for id in settled {
        let host = runner.host_lock(id.as_str());
        let Ok(_host) = host.try_lock() else {
            continue;
        };
        let in_progress = store.read(|s| {
            s.deployments
                .get(&id)
                .is_none_or(|r| r.status == DeploymentStatus::Stopped || r.status.is_in_progress())
        });
        if !in_progress && runner.clear_unfinished_update(&id, store).await {
            report.cleared.insert(id.as_str().to_owned());
        }
    }
    // Ports held by records that are stopped or gone (judged in the same read, for that reason).
    let stale_ports: Vec<PreviewId> = store.read(|s| {
        s.port_allocations
            .keys()
            .filter(|id| {
                s.deployments
                    .get(*id)
                    .is_none_or(|r| r.status == DeploymentStatus::Stopped)
            })
            .cloned()
            .collect()
    });
    for id in stale_ports {
        let _ = store.release_ports(&id).await;
    }
    // Running previews whose containers are gone.
    let running: Vec<PreviewId> = store.read(|s| {
        s.deployments
            .values()
            .filter(|r| r.status == DeploymentStatus::Running)
            .map(|r| r.id.clone())
            .collect()
    });
    for id in running {
        match runner.settings.engine.containers(id.as_str()).await {
            Ok(containers) if containers.is_empty() => {
                tracing::warn!(preview = %id, "a running preview has no containers; deploying it again");
                if scheduler.redeploy(&id, JobTrigger::Resume).await.is_ok() {
                    report.redeployed.insert(id.as_str().to_owned());
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(preview = %id, error = %e, "reconcile could not list containers")
            }
        }
    }
    // Sleeping previews whose containers run: a wake was killed after starting them, and nginx
    // reaches the app directly, so no wake will come. Their stopped containers are not "gone":
    // the next request wakes them.
    let sleeping: Vec<PreviewId> = store.read(|s| {
        s.deployments
            .values()
            .filter(|r| r.status == DeploymentStatus::Sleeping)
            .map(|r| r.id.clone())
            .collect()
    });
    for id in sleeping {
        let host = runner.host_lock(id.as_str());
        let Ok(_host) = host.try_lock() else {
            continue;
        };
        match runner.settings.engine.containers(id.as_str()).await {
            Ok(containers) if containers.iter().any(|c| c.state == "running") => {
                let now = jiff::Timestamp::now();
                let (woke, ticket) = store.switch_status(
                    &id,
                    &DeploymentStatus::Sleeping,
                    DeploymentStatus::Running,
                    now,
                );
                let _ = ticket.wait().await;
                if woke {
                    tracing::info!(preview = %id, "a sleeping preview runs (its wake was interrupted); it serves again");
                    report.awake.insert(id.as_str().to_owned());
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(preview = %id, error = %e, "reconcile could not list containers")
            }
        }
    }
    report
}

/// Tears down previews not updated for `ttl` (counted from the last update, not creation).
pub async fn expire(scheduler: &Scheduler, ttl: std::time::Duration) -> Vec<PreviewId> {
    let now = jiff::Timestamp::now();
    let Ok(ttl) = jiff::SignedDuration::try_from(ttl) else {
        return Vec::new();
    };
    let stale: Vec<PreviewId> = scheduler.store().read(|s| {
        s.deployments
            .values()
            .filter(|r| r.status != DeploymentStatus::Stopped && !r.status.is_in_progress())
            .filter(|r| now.duration_since(r.updated_at) > ttl)
            .map(|r| r.id.clone())
            .collect()
    });
    for id in &stale {
        let trigger = JobTrigger::Cleanup {
            reason: format!("no update for {} days", ttl.as_secs() / 86_400),
        };
        if let Err(e) = scheduler.submit_teardown(id, None, trigger).await {
            tracing::warn!(preview = %id, error = %e, "could not queue the TTL teardown");
        }
    }
    stale
}

/// What one pass over GitHub's pull requests did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClosedSweep {
    /// Previews of closed pull requests, queued for teardown.
    pub closed: Vec<PreviewId>,
    /// Previews whose pull request could not be read (GitHub down, rate limited, gone).
    pub unknown: Vec<PreviewId>,
}

/// The reason a preview's comment gives when polling found its pull request closed.
pub const CLOSED_PR_REASON: &str = "the pull request was closed";

/// Asks GitHub about the pull request of every preview that is not stopped (live, deploying,
/// failed or waiting for a slot) and tears down those that are closed, in case a `closed`
/// event was missed. A failing call is logged and the sweep goes on with the next preview; a
/// rate limit ends the pass (the next sweep tries again).
pub async fn sweep_closed_prs(scheduler: &Scheduler, github: &GitHubClient) -> ClosedSweep {
    let open: Vec<_> = scheduler.store().read(|s| {
        s.deployments
            .values()
            .filter(|r| {
                r.desired == crate::record::DesiredState::Running
                    && r.status != DeploymentStatus::Stopped
            })
            .map(|r| (r.id.clone(), r.repo.clone(), r.pr_number))
            .collect()
    });
    let mut sweep = ClosedSweep::default();
    let mut rest = open.into_iter();
    for (id, repo, pr) in rest.by_ref() {
        match github.pull_request(&repo, pr).await {
            Ok(info) if info.state == PullRequestState::Closed => {
                tracing::info!(preview = %id, merged = info.merged, "GitHub says the pull request is closed; tearing its preview down");
                let trigger = JobTrigger::Cleanup {
                    reason: CLOSED_PR_REASON.into(),
                };
                match scheduler.submit_teardown(&id, None, trigger).await {
                    Ok(_) => sweep.closed.push(id),
                    Err(e) => {
                        tracing::warn!(preview = %id, error = %e, "could not queue the teardown of a closed pull request")
                    }
                }
            }
            Ok(_) => {}
            Err(e @ preview_github::Error::RateLimited { .. }) => {
                tracing::warn!(preview = %id, error = %e, "GitHub rate-limits us; the closed-PR check resumes at the next sweep");
                sweep.unknown.push(id);
                break;
            }
            Err(e) => {
                tracing::warn!(preview = %id, error = %e, "could not ask GitHub whether the pull request is closed");
                sweep.unknown.push(id);
            }
        }
    }
    sweep.unknown.extend(rest.map(|(id, _, _)| id));
    sweep
}

/// Reconciles, tears down previews of closed pull requests (when `github` is given) and
/// expires, at start and then every `every`.
pub fn spawn_sweeps(
    runner: std::sync::Arc<DockerRunner>,
    scheduler: Scheduler,
    github: Option<GitHubClient>,
    ttl: std::time::Duration,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let report = reconcile(&runner, &scheduler).await;
            let closed = match &github {
                Some(github) => sweep_closed_prs(&scheduler, github).await,
                None => ClosedSweep::default(),
            };
            let expired = expire(&scheduler, ttl).await;
            tracing::info!(
                removed = report.removed.len(),
                redeployed = report.redeployed.len(),
                cleared = report.cleared.len(),
                closed = closed.closed.len(),
                unknown_pr_state = closed.unknown.len(),
                expired = expired.len(),
                "cleanup sweep"
            );
            tokio::time::sleep(every).await;
        }
    })
}
