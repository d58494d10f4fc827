//! What the templates get: records turned into plain rows, with times and sizes for people
//! and every text that could hold a secret value redacted.

use jiff::Timestamp;
use serde::Serialize;

use super::Action;
use super::usage::{HostUsage, PreviewUsage, human_bytes};
use crate::config::Config;
use crate::record::{DeploymentRecord, DeploymentStatus, DesiredState};
use crate::repo_secrets::RepoSecrets;

/// One preview, as the list and its page show it.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    pub id: String,
    pub repo: String,
    pub repo_url: String,
    pub pr: u32,
    pub pr_url: String,
    pub branch: String,
    pub head_sha: String,
    pub head_sha_short: String,
    pub commit_url: String,
    pub deployed_sha_short: Option<String>,
    /// The record's state name: queued, waiting, building, starting, running, failed, stopped...
    pub state: String,
    /// A short note beside the state (the failure reason, the previous commit still serving).
    pub state_note: Option<String>,
    pub age: String,
    pub created_at: String,
    pub updated: String,
    /// The public URL, while something serves there.
    pub url: Option<String>,
    /// The second web service's URL at its own hostname, while something serves.
    pub service_urls: Vec<crate::record::ServiceUrl>,
    pub memory: String,
    pub disk: String,
    pub containers: Option<usize>,
    pub build_time: String,
    pub start_time: String,
    pub framework: Option<String>,
    pub draft: bool,
    pub trusted: bool,
}

const NONE: &str = "—";

impl PreviewRow {
    /// The row of `rec` at `now`, with its containers' `usage` if Docker reported it.
    pub fn new(
        rec: &DeploymentRecord,
        config: &Config,
        usage: Option<&PreviewUsage>,
        redaction: &RepoSecrets,
        now: Timestamp,
    ) -> Self {
        let web = config.git_base_url.trim_end_matches('/');
        let repo = rec.repo.to_string();
        let serving = rec.deployed_sha.is_some()
            && rec.desired == DesiredState::Running
            && !matches!(rec.status, DeploymentStatus::Stopped);
        let state_note = match &rec.status {
            DeploymentStatus::Failed { reason } => {
                let mut note = redaction.redact(reason);
                if serving {
                    note.push_str(" (the previous commit still serves)");
                }
                Some(note)
            }
            DeploymentStatus::Waiting { since } => {
                Some(format!("for a free slot since {}", ago(*since, now)))
            }
            DeploymentStatus::Sleeping => Some(format!(
                "since {}; wakes on the next visit",
                ago(rec.status_changed_at, now)
            )),
            _ => None,
        };
        let (build, start) = last_deploy_times(rec);
        Self {
            id: rec.id.to_string(),
            repo_url: format!("{web}/{repo}"),
            pr: rec.pr_number.get(),
            pr_url: format!("{web}/{repo}/pull/{}", rec.pr_number.get()),
            commit_url: format!("{web}/{repo}/commit/{}", rec.head_sha.as_str()),
            repo,
            branch: rec.branch.to_string(),
            head_sha: rec.head_sha.to_string(),
            head_sha_short: rec.head_sha.short().to_owned(),
            deployed_sha_short: rec.deployed_sha.as_ref().map(|s| s.short().to_owned()),
            state: rec.status.name().to_owned(),
            state_note,
            age: ago(rec.created_at, now),
            created_at: rec.created_at.to_string(),
            updated: ago(rec.updated_at, now),
            url: serving.then(|| rec.url.clone()),
            service_urls: if serving {
                rec.service_urls.clone()
            } else {
                Vec::new()
            },
            memory: usage.map_or(NONE.to_owned(), |u| human_bytes(u.memory)),
            disk: usage.map_or(NONE.to_owned(), |u| human_bytes(u.disk)),
            containers: usage.map(|u| u.containers),
            build_time: build.map_or(NONE.to_owned(), seconds),
            start_time: start.map_or(NONE.to_owned(), seconds),
            framework: rec.framework.clone(),
            draft: rec.draft,
            trusted: rec.trusted,
        }
    }
}

/// The last deploy's build time (building → starting) and start time (starting → running),
/// from the history, when the history holds them for one commit.
pub fn last_deploy_times(rec: &DeploymentRecord) -> (Option<f64>, Option<f64>) {
    let history = &rec.history;
    let Some(b) = history
        .iter()
        .rposition(|c| c.status == DeploymentStatus::Building)
    else {
        return (None, None);
    };
    let sha = &history[b].sha;
    let after = |from: usize, status: &DeploymentStatus| {
        history[from + 1..]
            .iter()
            .position(|c| &c.status == status && &c.sha == sha)
            .map(|i| from + 1 + i)
    };
    let secs = |a: Timestamp, b: Timestamp| b.duration_since(a).as_secs_f64().max(0.0);
    let Some(s) = after(b, &DeploymentStatus::Starting) else {
        return (None, None);
    };
    let build = Some(secs(history[b].at, history[s].at));
    let start = after(s, &DeploymentStatus::Running).map(|r| secs(history[s].at, history[r].at));
    (build, start)
}

fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        format!("{}m {:02}s", (secs / 60.0) as u64, secs as u64 % 60)
    }
}

/// `now - t` for people: `45s`, `12m`, `3h 5m`, `4d 2h`.
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(t).as_secs().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// One entry of a preview's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub at: String,
    pub state: String,
    pub sha_short: String,
    pub note: Option<String>,
}

/// One container of a preview's services, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRow {
    pub service: String,
    pub container: String,
    /// `running`, `done` (a task that ended with 0), `exited 1`, `restarting`, ...
    pub state: String,
    /// The state's colour: one of the page's `state-*` classes.
    pub class: &'static str,
    /// The engine's words: `Up 3 minutes (healthy)`.
    pub status: String,
    /// A task meant to end, such as a migration.
    pub task: bool,
}

/// The rows of a preview's containers, in the order given.
pub fn services(containers: &[preview_engine::ContainerState]) -> Vec<ServiceRow> {
    containers
        .iter()
        .map(|c| {
            let done = c.is_done();
            let state = match (done, c.state.as_str(), c.exit_code) {
                (true, ..) => "done".to_owned(),
                (false, "exited", Some(code)) => format!("exited {code}"),
                (false, state, _) => state.to_owned(),
            };
            let class = if done || c.state == "running" {
                "running"
            } else if c.has_stopped() {
                "failed"
            } else {
                "starting"
            };
            ServiceRow {
                service: c.service.clone(),
                container: c.name.clone(),
                state,
                class,
                status: c.status.clone(),
                task: c.one_shot,
            }
        })
        .collect()
}

/// The history, newest first, failure reasons redacted.
pub fn history(rec: &DeploymentRecord, redaction: &RepoSecrets) -> Vec<HistoryRow> {
    rec.history
        .iter()
        .rev()
        .map(|c| HistoryRow {
            at: c.at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            state: c.status.name().to_owned(),
            sha_short: c.sha.short().to_owned(),
            note: match &c.status {
                DeploymentStatus::Failed { reason } => Some(redaction.redact(reason)),
                _ => None,
            },
        })
        .collect()
}

/// The host's usage for people.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    pub memory: String,
    pub memory_percent: Option<u64>,
    pub disk: String,
    pub disk_percent: Option<u64>,
    pub cpu: String,
}

impl HostView {
    /// Formats a reading.
    pub fn new(u: &HostUsage) -> Self {
        let pair = |used: Option<u64>, total: Option<u64>| match (used, total) {
            (Some(used), Some(total)) if total > 0 => (
                format!("{} of {}", human_bytes(used), human_bytes(total)),
                Some(used * 100 / total),
            ),
            _ => (NONE.to_owned(), None),
        };
        let (memory, memory_percent) = pair(u.memory_used, u.memory_total);
        let (disk, disk_percent) = pair(u.disk_used, u.disk_total);
        let mut cpu = format!("{} cores", u.cpus);
        if let Some(load) = u.load1 {
            cpu.push_str(&format!(", load {load:.2}"));
        }
        if let Some(busy) = u.cpu_busy_percent {
            cpu.push_str(&format!(", {busy:.0}% busy"));
        }
        Self {
            memory,
            memory_percent,
            disk,
            disk_percent,
            cpu,
        }
    }
}

/// The queue for people.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub depth: usize,
    pub active: usize,
    pub waiting: Vec<String>,
}

/// An action's button.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub name: &'static str,
    pub danger: bool,
}

/// The actions a preview's page offers.
pub fn actions() -> Vec<ActionView> {
    Action::ALL
        .iter()
        .map(|a| ActionView {
            name: a.as_str(),
            danger: *a == Action::Destroy,
        })
        .collect()
}

/// The note after an action's redirect: fixed texts only, never the query's own words.
pub fn notice(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "redeploy" => Some("Redeploy queued."),
        "destroy" => Some("Teardown queued."),
        "waiting" => Some("Queued: it waits for a free slot under the cap on live previews."),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_show_a_finished_task_as_done_and_a_failed_one_as_failed() {
        let container = |service: &str, state: &str, code: Option<i32>, one_shot: bool| {
            preview_engine::ContainerState {
                name: format!("p-{service}-1"),
                service: service.into(),
                state: state.into(),
                status: "as docker says".into(),
                exit_code: code,
                one_shot,
            }
        };
        let rows = services(&[
            container("web", "running", None, false),
            container("migrate", "exited", Some(0), true),
            container("seed", "exited", Some(2), true),
            container("worker", "restarting", None, false),
            container("db", "created", None, false),
        ]);
        let seen: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|r| (r.state.as_str(), r.class, r.task))
            .collect();
        assert_eq!(
            seen,
            [
                ("running", "running", false),
                ("done", "running", true),
                ("exited 2", "failed", true),
                ("restarting", "failed", false),
                ("created", "starting", false),
            ]
        );
    }
}
