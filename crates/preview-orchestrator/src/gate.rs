//! Who gets a preview.
//!
//! Under `DEPLOY_POLICY=collaborators` (the default) a pull request deploys on its own only when
//! its author belongs to the repository (`author_association` `OWNER`, `MEMBER` or
//! `COLLABORATOR`). Any other PR, such as one from a stranger's fork, waits until someone with
//! write permission approves its head commit, by commenting `/preview` or by adding the
//! [`APPROVAL_LABEL`] label. That permission is asked of GitHub
//! (`GET /repos/{owner}/{repo}/collaborators/{user}/permission`), never read from the payload.
//!
//! An approval covers one commit: it is kept as the record's `trusted` flag for its `head_sha`,
//! so a later push by the same author waits again, as CI systems treat outside contributions.
//! Only trusted commits get the repository's preview secrets, under either policy.
//!
//! Commands run in the background once the webhook is answered, because the permission check and
//! the pull request's head take GitHub calls and GitHub gives a delivery 10 s. A command comment
//! gets 👀 when heard, then 👍 when done; a refusal or a failure gets a short reply and 😕.

use preview_core::id::{CommitSha, PrNumber, PreviewId, RepoFullName};
use preview_github::{AuthorAssociation, GitHubClient, PreviewCommand, PullRequestState, Reaction};
use serde::Serialize;

use crate::config::DeployPolicy;
use crate::feedback::{CommentState, FeedbackUpdate};
use crate::jobs::JobTrigger;
use crate::queue::{DeployRequest, Scheduler};

/// The label that approves a waiting PR's head commit.
pub const APPROVAL_LABEL: &str = "preview";

/// What a PR whose fork was deleted is told.
pub const DELETED_FORK: &str = "The fork this pull request comes from was deleted, so there is no \
     branch to preview. Restore the fork, or open a new pull request from a branch that exists.";

/// What the gate lets a pull request's head commit do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Deploy it; `trusted` says whether it gets the repository's secrets.
    Deploy { trusted: bool },
    /// Wait until someone with write permission approves it.
    AwaitApproval,
}

/// The gate's rule: a commit is trusted when its author belongs to the repository or it was
/// approved; under [`DeployPolicy::Collaborators`] only trusted commits deploy.
pub fn decide(policy: DeployPolicy, association: AuthorAssociation, approved: bool) -> Gate {
    let trusted = association.is_trusted() || approved;
    match policy {
        DeployPolicy::Collaborators if !trusted => Gate::AwaitApproval,
        _ => Gate::Deploy { trusted },
    }
}

/// Whether commit `sha` of `repo`#`pr` is approved already: its record holds it as a trusted head
/// (a redelivery, or a reopened PR at the approved commit).
pub fn approved(scheduler: &Scheduler, repo: &RepoFullName, pr: PrNumber, sha: &CommitSha) -> bool {
    scheduler.store().read(|st| {
        st.slugs
            .get(repo)
            .and_then(|slug| st.deployments.get(&PreviewId::new(slug, pr)))
            .is_some_and(|r| r.trusted && &r.head_sha == sha)
    })
}

/// Updates the PR's sticky comment: commit `sha` by `author` waits for approval.
pub fn tell_awaiting_approval(
    scheduler: &Scheduler,
    repo: &RepoFullName,
    pr: PrNumber,
    sha: &CommitSha,
    author: &str,
) {
    tell(scheduler, repo, pr, sha, |serving| {
        CommentState::AwaitingApproval {
            author: author.to_owned(),
            label: APPROVAL_LABEL.to_owned(),
            previous_url: serving.as_ref().map(|(url, _)| url.clone()),
            previous_sha_short: serving.map(|(_, sha)| sha),
        }
    });
}

/// Updates the PR's sticky comment: its fork was deleted.
pub fn tell_deleted_fork(
    scheduler: &Scheduler,
    repo: &RepoFullName,
    pr: PrNumber,
    sha: &CommitSha,
) {
    tell(scheduler, repo, pr, sha, |_| CommentState::NotDeployed {
        reason: DELETED_FORK.to_owned(),
    });
}

/// Sends `state` (given the URL and short sha of a preview that serves, if one does) to the PR's
/// comment lane.
fn tell(
    scheduler: &Scheduler,
    repo: &RepoFullName,
    pr: PrNumber,
    sha: &CommitSha,
    state: impl FnOnce(Option<(String, String)>) -> CommentState,
) {
    let (id, url) = scheduler.preview_id_and_url(repo, pr);
    let serving = scheduler.record_for(repo, pr).and_then(|r| {
        let deployed = r.deployed_sha?;
        Some((r.url, deployed.short().to_owned()))
    });
    scheduler.send_feedback(FeedbackUpdate {
        id,
        repo: repo.clone(),
        pr,
        sha: sha.clone(),
        url,
        state: state(serving),
    });
}

/// A command to carry out: a `/preview` comment, or the approval label being added.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// The repository (allowed).
    pub repo: RepoFullName,
    /// The pull request.
    pub pr: PrNumber,
    /// Who asked: a person's login (validated; bots never get here).
    pub by: String,
    /// What they asked.
    pub command: PreviewCommand,
    /// The comment to react to; `None` for the label.
    pub comment_id: Option<u64>,
    /// For the label: the deploy its signed payload describes. A comment has none, and the PR's
    /// head is read from GitHub.
    pub deploy: Option<DeployRequest>,
}

/// Why a command was not carried out, as the reply says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// The user may not push to the repository.
    NoPermission { what: String, permission: String },
    /// `/preview` followed by something that is not a command.
    Unknown { text: String },
    /// The PR is closed.
    Closed,
    /// The PR's fork was deleted.
    DeletedFork { reason: String },
    /// GitHub or the queue failed.
    Failed { command: String, reason: String },
}

/// Renders the reply to `login` for `refusal`, from templates/command-reply.md.j2.
pub fn render_reply(login: &str, refusal: &Refusal) -> String {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_template(
        "command-reply",
        include_str!("../templates/command-reply.md.j2"),
    )
    .expect("the reply template parses");
    let mut ctx = serde_json::to_value(refusal).expect("serializable");
    ctx["login"] = login.into();
    env.get_template("command-reply")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
        .expect("the reply template renders")
}

/// Carries out PR commands.
#[derive(Clone)]
pub struct Commands {
    github: GitHubClient,
    scheduler: Scheduler,
}

impl Commands {
    /// Commands asking `github` and queueing on `scheduler`.
    pub fn new(github: GitHubClient, scheduler: Scheduler) -> Self {
        Self { github, scheduler }
    }

    /// Runs `request` in the background.
    pub fn spawn(&self, request: CommandRequest) {
        let this = self.clone();
        tokio::spawn(async move { this.run(request).await });
    }

    /// Runs `request`: reacts, checks the permission, acts, and reacts or replies.
    pub async fn run(&self, request: CommandRequest) {
        self.react(&request, Reaction::Eyes).await;
        let outcome = self.act(&request).await;
        match &outcome {
            Ok(()) => self.react(&request, Reaction::ThumbsUp).await,
            Err(refusal) => {
                tracing::info!(repo = %request.repo, pr = request.pr.get(), by = request.by, command = request.command.as_str(), ?refusal, "PR command refused");
                let body = render_reply(&request.by, refusal);
                if let Err(err) = self
                    .github
                    .create_comment(&request.repo, request.pr, &body)
                    .await
                {
                    tracing::warn!(error = %err, "could not reply to a PR command");
                }
                self.react(&request, Reaction::Confused).await;
            }
        }
    }

    async fn react(&self, request: &CommandRequest, reaction: Reaction) {
        if let Some(id) = request.comment_id
            && let Err(err) = self.github.add_reaction(&request.repo, id, reaction).await
        {
            tracing::warn!(error = %err, "could not react to a PR command");
        }
    }

    async fn act(&self, request: &CommandRequest) -> Result<(), Refusal> {
        let what = match request.comment_id {
            Some(_) => format!("`{}`", request.command.as_str()),
            None => format!("adding the `{APPROVAL_LABEL}` label"),
        };
        if let PreviewCommand::Unknown(text) = &request.command {
            return Err(Refusal::Unknown { text: text.clone() });
        }
        let failed = |reason: String| Refusal::Failed {
            command: request.command.as_str().to_owned(),
            reason,
        };
        let permission = self
            .github
            .collaborator_permission(&request.repo, &request.by)
            .await
            .map_err(|e| failed(format!("asking GitHub for your permission failed: {e}")))?;
        if !permission.can_write() {
            return Err(Refusal::NoPermission {
                what,
                permission: permission.as_str().to_owned(),
            });
        }
        tracing::info!(repo = %request.repo, pr = request.pr.get(), by = request.by, %what, "PR command accepted");
        let trigger = JobTrigger::Command {
            command: request.command.as_str().to_owned(),
            by: request.by.clone(),
        };
        let submitted = match &request.command {
            PreviewCommand::Destroy => {
                self.scheduler
                    .submit_close(&request.repo, request.pr, None, trigger)
                    .await
            }
            PreviewCommand::Deploy | PreviewCommand::Redeploy => {
                let mut deploy = match &request.deploy {
                    Some(deploy) => deploy.clone(),
                    None => self.head_of(request).await?,
                };
                deploy.trigger = trigger;
                deploy.trusted = true;
                deploy.force = request.command == PreviewCommand::Redeploy;
                self.scheduler.submit_deploy(deploy).await
            }
            PreviewCommand::Unknown(_) => unreachable!("answered above"),
        };
        submitted.map(drop).map_err(|e| failed(e.to_string()))
    }

    /// The deploy of the PR's head as GitHub has it now.
    async fn head_of(&self, request: &CommandRequest) -> Result<DeployRequest, Refusal> {
        let failed = |reason: String| Refusal::Failed {
            command: request.command.as_str().to_owned(),
            reason,
        };
        let info = self
            .github
            .pull_request(&request.repo, request.pr)
            .await
            .map_err(|e| failed(format!("reading the pull request from GitHub failed: {e}")))?;
        if info.state == PullRequestState::Closed {
            return Err(Refusal::Closed);
        }
        let Some(head_repo) = info.head_repo else {
            return Err(Refusal::DeletedFork {
                reason: DELETED_FORK.to_owned(),
            });
        };
        let (Some(branch), Some(base_branch)) = (info.head_ref, info.base_ref) else {
            return Err(failed(
                "GitHub's answer names no valid head or base branch".into(),
            ));
        };
        Ok(DeployRequest {
            repo: request.repo.clone(),
            pr: request.pr,
            sha: info.head_sha,
            branch,
            base_branch,
            head_repo: Some(head_repo),
            clone_url: None,
            draft: info.draft,
            event_at: None,
            trigger: JobTrigger::Api,
            force: false,
            trusted: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_rule() {
        use AuthorAssociation as A;
        use DeployPolicy::{Collaborators, Everyone};
        for association in [A::Owner, A::Member, A::Collaborator] {
            for policy in [Collaborators, Everyone] {
                for approved in [false, true] {
                    assert_eq!(
                        decide(policy, association, approved),
                        Gate::Deploy { trusted: true }
                    );
                }
            }
        }
        for association in [
            A::Contributor,
            A::FirstTimeContributor,
            A::FirstTimer,
            A::Mannequin,
            A::None,
        ] {
            assert_eq!(
                decide(Collaborators, association, false),
                Gate::AwaitApproval
            );
            assert_eq!(
                decide(Collaborators, association, true),
                Gate::Deploy { trusted: true }
            );
            assert_eq!(
                decide(Everyone, association, false),
                Gate::Deploy { trusted: false }
            );
        }
    }

    #[test]
    fn replies() {
        let cases = [
            (
                "no_permission",
                Refusal::NoPermission {
                    what: "`/preview`".into(),
                    permission: "read".into(),
                },
            ),
            (
                "unknown",
                Refusal::Unknown {
                    text: "deploy now".into(),
                },
            ),
            ("closed", Refusal::Closed),
            (
                "deleted_fork",
                Refusal::DeletedFork {
                    reason: DELETED_FORK.into(),
                },
            ),
            (
                "failed",
                Refusal::Failed {
                    command: "/preview".into(),
                    reason: "GET /repos/o/r/pulls/3 answered 502".into(),
                },
            ),
        ];
        for (name, refusal) in cases {
            let body = render_reply("octocat", &refusal);
            assert!(body.starts_with("@octocat, "), "{body}");
            insta::assert_snapshot!(name, body);
        }
    }
}
