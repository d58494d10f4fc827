//! What a preview tells its pull request: one sticky comment, a GitHub deployment with statuses,
//! and a commit status, each optional. Updates go through a lane per preview, in order, in the
//! background: GitHub being slow or down never blocks or fails a deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use preview_core::id::{CommitSha, PrNumber, PreviewId, RepoFullName};
use preview_github::{
    CommitState, DeploymentState, GitHubClient, NewCommitStatus, NewDeployment,
    NewDeploymentStatus, comment_marker,
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::store::Store;

/// Which kinds of feedback are on.
#[derive(Debug, Clone, Copy)]
pub struct FeedbackSettings {
    pub comments: bool,
    pub deployments: bool,
    pub commit_statuses: bool,
}

pub use crate::record::ServiceUrl;

/// The state a PR comment shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CommentState {
    /// A build started; `previous_*` name the preview that keeps serving meanwhile.
    Building {
        previous_url: Option<String>,
        previous_sha_short: Option<String>,
    },
    /// Waiting for a free slot under the cap on live previews.
    Queued {
        position: usize,
        cap: usize,
        oldest: Vec<String>,
    },
    /// Serving.
    Live {
        framework: Option<String>,
        /// Where the database is and how it was made, in shared mode.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        database: Option<String>,
        /// The plan's warnings, worth the author's attention.
        warnings: Vec<String>,
        footprint: Footprint,
        /// The URL of the repo's second web service at its own hostname, beside the app's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        service_urls: Vec<ServiceUrl>,
    },
    /// A job failed in `phase`.
    Failed {
        phase: String,
        reason: String,
        log_tail: String,
        previous_url: Option<String>,
        previous_sha_short: Option<String>,
        /// The plan's warnings, when planning got that far: often the cause.
        warnings: Vec<String>,
        /// The images that could not be had, when that is the failure (the `images` phase).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing_images: Vec<MissingImage>,
    },
    /// Asleep after a while without requests; the next visit wakes it.
    Asleep {
        footprint: Footprint,
        /// The second web service's URL, which wakes it too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        service_urls: Vec<ServiceUrl>,
    },
    /// Woke from sleep for a visit and serves again.
    Awake {
        framework: Option<String>,
        wake_secs: String,
        footprint: Footprint,
        /// The second web service's URL, beside the app's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        service_urls: Vec<ServiceUrl>,
    },
    /// Waiting for free disk before building (`MIN_FREE_DISK_GB`), after pruning what no
    /// preview uses.
    #[serde(rename = "waiting_disk")]
    WaitingForDisk { free_gb: String, min_gb: String },
    /// Waiting for memory before starting: `need_mb` (the containers' limits plus the reserve)
    /// does not fit in what `previews` awake previews and the rest leave, after idle previews
    /// were put to sleep.
    #[serde(rename = "waiting_memory")]
    WaitingForMemory {
        in_use_gb: String,
        total_gb: String,
        previews: usize,
        need_mb: String,
    },
    /// Torn down, and why.
    Closed { reason: String },
    /// Closed while it waited for a slot: nothing was ever deployed.
    #[serde(rename = "left_queue")]
    LeftQueue { reason: String },
    /// The PR's author is not trusted (`DEPLOY_POLICY=collaborators`): this commit waits for
    /// someone with write permission to approve it; `previous_*` name an approved preview that
    /// keeps serving.
    #[serde(rename = "awaiting_approval")]
    AwaitingApproval {
        author: String,
        label: String,
        previous_url: Option<String>,
        previous_sha_short: Option<String>,
    },
    /// Nothing can be deployed, and why.
    #[serde(rename = "not_deployed")]
    NotDeployed { reason: String },
}

/// An image a preview needs that is neither on the host nor could be pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingImage {
    /// The reference, e.g. `postgres:18`.
    pub image: String,
    /// Who wants it, e.g. ``service `db`, `backend/Dockerfile:3` ``.
    pub wanted_by: String,
    /// Why the pull failed, in one line.
    pub error: String,
}

/// What a preview takes, as its comment shows it. Memory and disk are read by the comment's
/// lane just before it writes (from the engine attached with [`Feedback::attach_engine`]), so
/// the job that sent the update does not wait for `docker stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Footprint {
    /// `awake` or `asleep`.
    pub state: String,
    /// Memory its containers use now (`41 MB`); `None` until read, or when unreadable.
    pub memory: Option<String>,
    /// Disk its built images (their own layers) and volumes take (`312 MB`); `None` until
    /// read, or when unreadable.
    pub disk: Option<String>,
    /// The serving commit's build time, in seconds.
    pub build_secs: Option<String>,
    /// The serving commit's start time (containers started to healthy), in seconds.
    pub start_secs: Option<String>,
}

impl Footprint {
    /// An awake preview's, with its build and start times in milliseconds; memory and disk to
    /// be read.
    pub fn awake(build_ms: Option<u64>, start_ms: Option<u64>) -> Self {
        let secs = |ms: u64| format!("{:.1}", ms as f64 / 1000.0);
        Self {
            state: "awake".into(),
            build_secs: build_ms.map(secs),
            start_secs: start_ms.map(secs),
            ..Self::default()
        }
    }

    /// A sleeping preview's: no memory in use; disk to be read.
    pub fn asleep(build_ms: Option<u64>, start_ms: Option<u64>) -> Self {
        Self {
            state: "asleep".into(),
            memory: Some("0 B".into()),
            ..Self::awake(build_ms, start_ms)
        }
    }
}

/// One update for one preview.
#[derive(Debug, Clone)]
pub struct FeedbackUpdate {
    pub id: PreviewId,
    pub repo: RepoFullName,
    pub pr: PrNumber,
    pub sha: CommitSha,
    pub url: String,
    pub state: CommentState,
}

/// Sends feedback to GitHub, one ordered lane per preview.
#[derive(Clone)]
pub struct Feedback {
    inner: Arc<Inner>,
}

struct Inner {
    client: Option<GitHubClient>,
    settings: FeedbackSettings,
    /// Set once the orchestrator has opened its store (it is opened after the runner is made).
    store: std::sync::OnceLock<Store>,
    /// What runs the previews: footprints are read from it.
    engine: std::sync::OnceLock<Arc<dyn preview_engine::Engine>>,
    lanes: Mutex<HashMap<PreviewId, mpsc::UnboundedSender<FeedbackUpdate>>>,
}

impl Feedback {
    /// Feedback through `client`; `None` turns all of it off.
    pub fn new(client: Option<GitHubClient>, settings: FeedbackSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                settings,
                store: std::sync::OnceLock::new(),
                engine: std::sync::OnceLock::new(),
                lanes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Gives feedback the store, where it keeps the comment and deployment ids.
    pub fn attach_store(&self, store: Store) {
        let _ = self.inner.store.set(store);
    }

    /// Gives feedback the engine, from which comments read a preview's memory and disk.
    pub fn attach_engine(&self, engine: Arc<dyn preview_engine::Engine>) {
        let _ = self.inner.engine.set(engine);
    }

    /// Queues `update` behind the preview's earlier ones and returns at once.
    pub fn send(&self, update: FeedbackUpdate) {
        if self.inner.client.is_none() {
            return;
        }
        let mut lanes = self.inner.lanes.lock().expect("feedback lanes");
        let lane = lanes.entry(update.id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_lane(self.inner.clone(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(update)) = lane.send(update) {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_lane(self.inner.clone(), rx));
            let _ = tx.send(update);
            *lane = tx;
        }
    }
}

async fn run_lane(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<FeedbackUpdate>) {
    while let Some(update) = rx.recv().await {
        deliver(&inner, &update).await;
    }
}

async fn deliver(inner: &Inner, update: &FeedbackUpdate) {
    let (Some(client), Some(store)) = (&inner.client, inner.store.get()) else {
        return;
    };
    let settings = inner.settings;
    let record = store.get(&update.id);
    if settings.comments {
        let marker = comment_marker(update.id.as_str());
        let mut update = update.clone();
        if let Some(engine) = inner.engine.get() {
            measure(engine.as_ref(), &mut update).await;
        }
        let body = render_comment(&update);
        let known = record.as_ref().and_then(|r| r.comment_id);
        match client
            .upsert_comment(&update.repo, update.pr, &marker, &body, known)
            .await
        {
            Ok(comment) if known != Some(comment.id) => {
                let _ = store
                    .update(&update.id, |r| r.comment_id = Some(comment.id))
                    .await;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(preview = %update.id, error = %err, "could not write the PR comment")
            }
        }
    }
    if settings.deployments {
        deliver_deployment(
            store,
            client,
            update,
            record.and_then(|r| r.github_deployment_id),
        )
        .await;
    }
    if settings.commit_statuses {
        let (state, description) = match &update.state {
            CommentState::Building { .. } => {
                (CommitState::Pending, "Building the preview".to_owned())
            }
            CommentState::Live { .. } => (CommitState::Success, "Preview live".to_owned()),
            CommentState::Failed { phase, .. } => {
                (CommitState::Failure, format!("Preview failed in {phase}"))
            }
            CommentState::AwaitingApproval { .. } => (
                CommitState::Pending,
                "Awaiting approval: someone with write permission comments /preview".to_owned(),
            ),
            // Sleep and wake change neither the commit's status nor the deployment.
            CommentState::Queued { .. }
            | CommentState::WaitingForDisk { .. }
            | CommentState::WaitingForMemory { .. }
            | CommentState::Asleep { .. }
            | CommentState::Awake { .. }
            | CommentState::Closed { .. }
            | CommentState::LeftQueue { .. }
            | CommentState::NotDeployed { .. } => return,
        };
        let status = NewCommitStatus {
            state,
            target_url: matches!(update.state, CommentState::Live { .. })
                .then(|| update.url.clone()),
            description,
            context: "preview-deployer".into(),
        };
        if let Err(err) = client
            .create_commit_status(&update.repo, &update.sha, &status)
            .await
        {
            tracing::warn!(preview = %update.id, error = %err, "could not set the commit status");
        }
    }
}

/// Fills in the memory and disk of `update`'s footprint, if it has one, from `engine`; what
/// cannot be read stays out of the comment.
async fn measure(engine: &dyn preview_engine::Engine, update: &mut FeedbackUpdate) {
    let footprint = match &mut update.state {
        CommentState::Live { footprint, .. }
        | CommentState::Awake { footprint, .. }
        | CommentState::Asleep { footprint, .. } => footprint,
        _ => return,
    };
    let name = update.id.as_str();
    if footprint.memory.is_none() {
        match engine.usage(name).await {
            Ok(usage) => footprint.memory = Some(crate::capacity::human(usage.memory_bytes)),
            Err(e) => {
                tracing::info!(preview = name, error = %e, "reading the memory in use failed")
            }
        }
    }
    if footprint.disk.is_none() {
        match engine.disk_usage(name).await {
            Ok(disk) => {
                footprint.disk = Some(crate::capacity::human(
                    disk.images_bytes.saturating_add(disk.volumes_bytes),
                ))
            }
            Err(e) => tracing::info!(preview = name, error = %e, "reading the disk in use failed"),
        }
    }
}

async fn deliver_deployment(
    store: &Store,
    client: &GitHubClient,
    update: &FeedbackUpdate,
    known: Option<u64>,
) {
    let (state, description) = match &update.state {
        CommentState::Building { .. } => (DeploymentState::InProgress, "Building"),
        CommentState::Live { .. } => (DeploymentState::Success, "Preview live"),
        CommentState::Failed { .. } => (DeploymentState::Failure, "Preview failed"),
        CommentState::Closed { .. } => (DeploymentState::Inactive, "Preview closed"),
        CommentState::Queued { .. }
        | CommentState::WaitingForDisk { .. }
        | CommentState::WaitingForMemory { .. }
        | CommentState::Asleep { .. }
        | CommentState::Awake { .. }
        | CommentState::LeftQueue { .. }
        | CommentState::AwaitingApproval { .. }
        | CommentState::NotDeployed { .. } => return,
    };
    // A build of a new commit gets a new deployment; later states update it. Closing what never
    // had one makes none.
    let deployment = match (&update.state, known) {
        (CommentState::Closed { .. }, None) => return,
        (CommentState::Building { .. }, _) | (_, None) => {
            let environment = format!("preview/{}", update.id.as_str());
            match client
                .create_deployment(
                    &update.repo,
                    &NewDeployment::preview(&update.sha, environment),
                )
                .await
            {
                Ok(id) => {
                    let _ = store
                        .update(&update.id, |r| r.github_deployment_id = Some(id))
                        .await;
                    id
                }
                Err(err) => {
                    tracing::warn!(preview = %update.id, error = %err, "could not create the GitHub deployment");
                    return;
                }
            }
        }
        (_, Some(id)) => id,
    };
    let status = NewDeploymentStatus {
        state,
        environment_url: matches!(update.state, CommentState::Live { .. })
            .then(|| update.url.clone()),
        log_url: None,
        description: description.into(),
        auto_inactive: true,
    };
    if let Err(err) = client
        .create_deployment_status(&update.repo, deployment, &status)
        .await
    {
        tracing::warn!(preview = %update.id, error = %err, "could not set the deployment status");
    }
}

/// The comment body for `update`, from templates/pr-comment.md.j2.
pub fn render_comment(update: &FeedbackUpdate) -> String {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.add_template("pr-comment", include_str!("../templates/pr-comment.md.j2"))
        .expect("the comment template parses");
    let state = serde_json::to_value(&update.state).expect("serializable");
    let mut ctx = serde_json::json!({
        "marker": comment_marker(update.id.as_str()),
        "preview_id": update.id.as_str(),
        "url": update.url,
        "sha": update.sha.as_str(),
        "sha_short": update.sha.short(),
    });
    if let (Some(ctx), Some(state)) = (ctx.as_object_mut(), state.as_object()) {
        ctx.extend(state.clone());
    }
    env.get_template("pr-comment")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
        .expect("the comment template renders")
}

#[cfg(test)]
mod tests {
    use super::*;
    use preview_core::id::{PreviewId, RepoSlug};

    fn update(state: CommentState) -> FeedbackUpdate {
        let repo = RepoFullName::parse("octo-org/hello-api").unwrap();
        let slug = RepoSlug::base_for(&repo);
        let pr = PrNumber::new(7).unwrap();
        FeedbackUpdate {
            id: PreviewId::new(&slug, pr),
            repo,
            pr,
            sha: CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap(),
            url: "http://203.0.113.10/octo-org-hello-api/pr-7/".into(),
            state,
        }
    }

    #[test]
    fn comment_states() {
        let previous = || {
            (
                Some("http://203.0.113.10/octo-org-hello-api/pr-7/".to_owned()),
                Some("fedcba9".to_owned()),
            )
        };
        let states = [
            (
                "building",
                CommentState::Building {
                    previous_url: None,
                    previous_sha_short: None,
                },
            ),
            (
                "building_update",
                CommentState::Building {
                    previous_url: previous().0,
                    previous_sha_short: previous().1,
                },
            ),
            (
                "queued",
                CommentState::Queued {
                    position: 2,
                    cap: 10,
                    oldest: vec!["#3".into(), "octo-org/web#12".into()],
                },
            ),
            (
                "live",
                CommentState::Live {
                    framework: Some("fastapi".into()),
                    footprint: Footprint {
                        memory: Some("41 MB".into()),
                        disk: Some("312 MB".into()),
                        ..Footprint::awake(Some(12_300), Some(800))
                    },
                    database: None,
                    warnings: vec![
                        "gunicorn is not a dependency: the app runs on Flask's development server; add gunicorn".into(),
                    ],
                    service_urls: Vec::new(),
                },
            ),
            (
                "live_second_web_service",
                CommentState::Live {
                    framework: None,
                    footprint: Footprint::awake(Some(9_400), Some(700)),
                    database: None,
                    warnings: Vec::new(),
                    service_urls: vec![ServiceUrl {
                        service: "admin".into(),
                        url: "https://octo-org-hello-api-pr-7-admin.preview.example.com/".into(),
                    }],
                },
            ),
            (
                "live_shared_database",
                CommentState::Live {
                    framework: Some("nestjs".into()),
                    footprint: Footprint::awake(Some(20_100), Some(1_200)),
                    database: Some(
                        "postgres on the shared server, cloned from the template database of `db/seed.sql` (0.3 s)".into(),
                    ),
                    warnings: Vec::new(),
                    service_urls: Vec::new(),
                },
            ),
            (
                "failed",
                CommentState::Failed {
                    phase: "build".into(),
                    reason: "step 4/9 `RUN npm ci` failed: npm ERR! missing lockfile".into(),
                    log_tail: "Step 4/9 : RUN npm ci\nnpm ERR! missing lockfile".into(),
                    previous_url: None,
                    previous_sha_short: None,
                    warnings: vec![
                        "node 14.x is asked for, but the supported versions are 18, 20, 22, 24; node:18-bookworm-slim is used and the build may fail".into(),
                    ],
                    missing_images: Vec::new(),
                },
            ),
            (
                // A compose file refused in several places: a line for each, as the list
                // `preview_core::Error` makes of them.
                "failed_refusals",
                CommentState::Failed {
                    phase: "plan".into(),
                    reason: {
                        let refusal = |line, key: &str, reason: &str| {
                            preview_core::Error::ComposeRefused {
                                file: "compose.yaml".into(),
                                line: Some(line),
                                service: Some("media".into()),
                                key: key.into(),
                                reason: reason.into(),
                                more: Vec::new(),
                            }
                        };
                        preview_core::Error::from_refusals(vec![
                            refusal(10, "volumes", "variables are not substituted in `volumes` (found `MEDIA_LIBRARY`): the sanitiser judges this key's value as written, so write the value itself"),
                            refusal(5, "network_mode", "network_mode \"host\" would leave the preview's own network (only `none` and `service:NAME` are allowed)"),
                        ])
                        .unwrap()
                        .to_string()
                    },
                    log_tail: String::new(),
                    previous_url: None,
                    previous_sha_short: None,
                    warnings: Vec::new(),
                    missing_images: Vec::new(),
                },
            ),
            (
                "failed_images",
                CommentState::Failed {
                    phase: "images".into(),
                    reason: "3 images cannot be had: `adminer`, `postgres:18`, `oven/bun:1`".into(),
                    log_tail: String::new(),
                    previous_url: None,
                    previous_sha_short: None,
                    warnings: Vec::new(),
                    missing_images: vec![
                        MissingImage {
                            image: "adminer".into(),
                            wanted_by: "service `adminer`".into(),
                            error: "the registry registry-1.docker.io cannot be reached: no such host"
                                .into(),
                        },
                        MissingImage {
                            image: "postgres:18".into(),
                            wanted_by: "service `db`".into(),
                            error: "not found in the registry, or it needs a login".into(),
                        },
                        MissingImage {
                            image: "oven/bun:1".into(),
                            wanted_by: "`web/Dockerfile:2`, `worker/Dockerfile:1`".into(),
                            error: "the pull did not finish within 600 s".into(),
                        },
                    ],
                },
            ),
            (
                "failed_update",
                CommentState::Failed {
                    phase: "health".into(),
                    reason: "the app did not answer".into(),
                    log_tail: String::new(),
                    previous_url: previous().0,
                    previous_sha_short: previous().1,
                    warnings: Vec::new(),
                    missing_images: Vec::new(),
                },
            ),
            (
                "waiting_disk",
                CommentState::WaitingForDisk {
                    free_gb: "3.2".into(),
                    min_gb: "5.0".into(),
                },
            ),
            (
                "waiting_memory",
                CommentState::WaitingForMemory {
                    in_use_gb: "3.1".into(),
                    total_gb: "3.8".into(),
                    previews: 12,
                    need_mb: "768".into(),
                },
            ),
            (
                "waiting_memory_one",
                CommentState::WaitingForMemory {
                    in_use_gb: "3.6".into(),
                    total_gb: "3.8".into(),
                    previews: 1,
                    need_mb: "768".into(),
                },
            ),
            (
                "asleep",
                CommentState::Asleep {
                    footprint: Footprint {
                        disk: Some("312 MB".into()),
                        ..Footprint::asleep(Some(12_300), Some(800))
                    },
                    service_urls: Vec::new(),
                },
            ),
            (
                "asleep_second_web_service",
                CommentState::Asleep {
                    footprint: Footprint::asleep(Some(9_400), Some(700)),
                    service_urls: vec![ServiceUrl {
                        service: "admin".into(),
                        url: "https://octo-org-hello-api-pr-7-admin.preview.example.com/".into(),
                    }],
                },
            ),
            (
                "awake",
                CommentState::Awake {
                    framework: Some("fastapi".into()),
                    wake_secs: "1.4".into(),
                    footprint: Footprint {
                        memory: Some("38 MB".into()),
                        disk: Some("312 MB".into()),
                        ..Footprint::awake(Some(12_300), Some(800))
                    },
                    service_urls: Vec::new(),
                },
            ),
            (
                "awake_unmeasured",
                CommentState::Awake {
                    framework: None,
                    wake_secs: "0.9".into(),
                    footprint: Footprint::awake(None, None),
                    service_urls: Vec::new(),
                },
            ),
            (
                "awake_second_web_service",
                CommentState::Awake {
                    framework: None,
                    wake_secs: "0.9".into(),
                    footprint: Footprint::awake(None, None),
                    service_urls: vec![ServiceUrl {
                        service: "admin".into(),
                        url: "https://octo-org-hello-api-pr-7-admin.preview.example.com/".into(),
                    }],
                },
            ),
            (
                "closed",
                CommentState::Closed {
                    reason: "the pull request was closed".into(),
                },
            ),
            (
                "closed_evicted",
                CommentState::Closed {
                    reason: "evicted to free a slot: all 10 preview slots were in use and this was the least \
                         recently updated preview; a new push deploys it again"
                        .into(),
                },
            ),
            (
                "left_queue",
                CommentState::LeftQueue {
                    reason: "the pull request was closed".into(),
                },
            ),
            (
                "awaiting_approval",
                CommentState::AwaitingApproval {
                    author: "stranger".into(),
                    label: "preview".into(),
                    previous_url: None,
                    previous_sha_short: None,
                },
            ),
            (
                "awaiting_approval_again",
                CommentState::AwaitingApproval {
                    author: "stranger".into(),
                    label: "preview".into(),
                    previous_url: previous().0,
                    previous_sha_short: previous().1,
                },
            ),
            (
                "not_deployed",
                CommentState::NotDeployed {
                    reason: "The fork this pull request comes from was deleted, so there is no \
                         branch to preview. Restore the fork, or open a new pull request from a \
                         branch that exists."
                        .into(),
                },
            ),
        ];
        for (name, state) in states {
            let body = render_comment(&update(state));
            assert!(body.starts_with("<!-- preview-deployer id=octo-org-hello-api-pr-7 -->"));
            insta::assert_snapshot!(name, body);
        }
    }
}
