//! The deployment record: one per repository and pull request, kept in the store.

use jiff::Timestamp;
use preview_core::id::{BranchName, CommitSha, PrNumber, PreviewId, RepoFullName, RepoSlug};
use serde::{Deserialize, Serialize};

/// How many status changes a record keeps.
pub const HISTORY_LEN: usize = 10;

/// Where a preview is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeploymentStatus {
    /// Waiting in its lane or for a build slot.
    Queued,
    /// Fetching, planning, rendering, building images.
    Building,
    /// Containers started; waiting for the health check and nginx.
    Starting,
    /// Serving at its URL.
    Running,
    /// The last job failed; `reason` says where and why.
    Failed {
        /// `phase: message`.
        reason: String,
    },
    /// A newer commit replaced this one before it went live (appears in the history).
    Superseded,
    /// Torn down.
    Stopped,
    /// Idle for `IDLE_SLEEP_MINUTES`: its containers are stopped (volumes, images and ports
    /// kept) and the next request through nginx wakes it.
    Sleeping,
    /// Waiting for a free slot under the cap on live previews (`MAX_CONCURRENT_PREVIEWS`);
    /// waiting PRs deploy in the order of `since`.
    Waiting {
        /// When it joined the queue.
        since: Timestamp,
    },
}

impl DeploymentStatus {
    /// The state's name: `queued`, `building`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Building => "building",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed { .. } => "failed",
            Self::Superseded => "superseded",
            Self::Stopped => "stopped",
            Self::Waiting { .. } => "waiting",
            Self::Sleeping => "sleeping",
        }
    }

    /// Whether a deploy job is queued or in progress.
    pub fn is_in_progress(&self) -> bool {
        matches!(self, Self::Queued | Self::Building | Self::Starting)
    }
}

/// What the preview should become once its lane is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Deployed at `head_sha`.
    Running,
    /// Torn down (the PR was closed, or an operator asked).
    Stopped,
}

/// One entry of a record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusChange {
    /// The status entered.
    pub status: DeploymentStatus,
    /// The commit it concerned.
    pub sha: CommitSha,
    /// When.
    pub at: Timestamp,
}

/// A preview of one pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRecord {
    /// `{slug}-pr-{N}`; also the Compose project name and the work dir's name.
    pub id: PreviewId,
    /// The base repository, as GitHub spells it.
    pub repo: RepoFullName,
    /// The repository's slug in URLs.
    pub slug: RepoSlug,
    /// The PR number.
    pub pr_number: PrNumber,
    /// The head branch.
    pub branch: BranchName,
    /// The base branch.
    pub base_branch: BranchName,
    /// The repository holding the head branch when it is a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_repo: Option<RepoFullName>,
    /// `repository.clone_url` from the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
    /// The commit to deploy: the head of the newest event.
    pub head_sha: CommitSha,
    /// The commit currently serving, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<CommitSha>,
    /// Where it is.
    pub status: DeploymentStatus,
    /// Where it is going.
    pub desired: DesiredState,
    /// Whether the PR is a draft.
    #[serde(default)]
    pub draft: bool,
    /// The public URL, `{PREVIEW_BASE_URL}/{slug}/pr-{N}/`.
    pub url: String,
    /// The sticky PR comment's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<u64>,
    /// The GitHub deployment's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_deployment_id: Option<u64>,
    /// The detected framework, for the comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// When the record was created.
    pub created_at: Timestamp,
    /// When anything last changed.
    pub updated_at: Timestamp,
    /// When `status` last changed.
    pub status_changed_at: Timestamp,
    /// `pull_request.updated_at` of the newest event applied; older deliveries are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_updated_at: Option<Timestamp>,
    /// Bumped by every new job; a job may only write the record while it is current.
    pub generation: u64,
    /// The last [`HISTORY_LEN`] status changes, oldest first.
    #[serde(default)]
    pub history: Vec<StatusChange>,
    /// Whether `head_sha` is trusted (see [`crate::DeployRequest::trusted`]): its PR's author
    /// belongs to the repository, or someone with write permission approved this commit. Its
    /// deploys, and the restarts and redeploys of the same commit, get the repository's secrets.
    /// Records from before the gate existed read as untrusted until their next event.
    #[serde(default)]
    pub trusted: bool,
    /// Whether the serving commit (`deployed_sha`) was deployed as trusted, with the
    /// repository's secrets: a wake starts its app with the same environment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deployed_trusted: bool,
    /// How long the serving commit's build took, in milliseconds (its comment shows it at a
    /// wake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    /// How long the serving commit took from its containers' start to its first healthy
    /// answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// The serving commit's other public URLs: its second web service at its own hostname
    /// (`preview.hostname`), for the comments that follow the live one (asleep, awake).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_urls: Vec<ServiceUrl>,
}

/// A public URL of one of the preview's services other than the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUrl {
    /// The compose service.
    pub service: String,
    /// Its URL, ending in `/`.
    pub url: String,
}

impl DeploymentRecord {
    /// Whether the preview takes one of the `MAX_CONCURRENT_PREVIEWS` slots: a deploy is queued
    /// or running, it serves (including an older commit after a failed update), or its teardown
    /// has not finished yet.
    pub fn holds_slot(&self) -> bool {
        match &self.status {
            DeploymentStatus::Queued
            | DeploymentStatus::Building
            | DeploymentStatus::Starting
            | DeploymentStatus::Running => true,
            // It keeps its ports and containers and wakes without asking for a slot.
            DeploymentStatus::Sleeping => true,
            DeploymentStatus::Failed { .. } => {
                self.desired == DesiredState::Running && self.deployed_sha.is_some()
            }
            DeploymentStatus::Superseded
            | DeploymentStatus::Stopped
            | DeploymentStatus::Waiting { .. } => false,
        }
    }

    /// When it joined the queue for a slot, if it waits.
    pub fn waiting_since(&self) -> Option<Timestamp> {
        match self.status {
            DeploymentStatus::Waiting { since } => Some(since),
            _ => None,
        }
    }

    /// Moves to `status`, stamping the time and the history.
    pub fn set_status(&mut self, status: DeploymentStatus, now: Timestamp) {
        let sha = self.head_sha.clone();
        self.push_history(status.clone(), sha, now);
        self.status = status;
        self.status_changed_at = now;
        self.updated_at = now;
    }

    /// Adds a history entry without changing the status (e.g. `superseded` for an older sha).
    pub fn push_history(&mut self, status: DeploymentStatus, sha: CommitSha, now: Timestamp) {
        if self.history.len() >= HISTORY_LEN {
            let excess = self.history.len() + 1 - HISTORY_LEN;
            self.history.drain(..excess);
        }
        self.history.push(StatusChange {
            status,
            sha,
            at: now,
        });
    }
}
