//! A small GitHub REST client: the few calls a preview makes, with retries on 5xx and transport
//! errors (exponential backoff with jitter) and GitHub's rate limits honoured (`Retry-After`,
//! `x-ratelimit-reset`).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use preview_core::id::{BranchName, CommitSha, PrNumber, RepoFullName};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Error, Result};

/// How the client retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Longest wait for a rate limit to lift; a longer one fails with [`Error::RateLimited`].
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(60),
        }
    }
}

/// The hidden HTML marker that identifies a preview's sticky comment.
pub fn comment_marker(preview_id: &str) -> String {
    let safe: String = preview_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        .collect();
    format!("<!-- preview-deployer id={safe} -->")
}

/// A comment the client wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommentRef {
    /// The comment's id.
    pub id: u64,
    /// Whether it was created now (rather than edited).
    pub created: bool,
}

/// A deployment to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeployment {
    /// The commit (sha) deployed.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The environment name, e.g. `preview/pr-12`.
    pub environment: String,
    /// Shown on GitHub.
    pub description: String,
    /// Previews go away; GitHub shows them as such.
    pub transient_environment: bool,
    /// Never production.
    pub production_environment: bool,
}

impl NewDeployment {
    /// A transient, non-production deployment of `sha` to `environment`.
    pub fn preview(sha: &CommitSha, environment: impl Into<String>) -> Self {
        Self {
            git_ref: sha.to_string(),
            environment: environment.into(),
            description: "preview-deployer".into(),
            transient_environment: true,
            production_environment: false,
        }
    }
}

/// A deployment status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Queued,
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
}

/// A deployment status to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeploymentStatus {
    /// The state.
    pub state: DeploymentState,
    /// The preview's URL, for `success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<String>,
    /// A link to logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// Shown on GitHub (cut to 140 characters).
    pub description: String,
    /// Whether GitHub marks earlier successful deployments of the environment inactive.
    pub auto_inactive: bool,
}

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

/// A commit status to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewCommitStatus {
    /// The state.
    pub state: CommitState,
    /// Where the status links to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// Shown on GitHub (cut to 140 characters).
    pub description: String,
    /// The status's name, e.g. `preview-deployer`.
    pub context: String,
}

/// Whether a pull request is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullRequestState {
    Open,
    Closed,
}

/// What the client reads about a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestInfo {
    /// Open or closed.
    pub state: PullRequestState,
    /// Whether it was merged.
    pub merged: bool,
    /// Whether it is a draft.
    pub draft: bool,
    /// Its head commit.
    pub head_sha: CommitSha,
    /// Its head branch, when the answer names a valid one.
    pub head_ref: Option<BranchName>,
    /// Its base branch, when the answer names a valid one.
    pub base_ref: Option<BranchName>,
    /// The repository holding the head branch; `None` when the fork was deleted.
    pub head_repo: Option<RepoFullName>,
}

/// A user's permission on a repository, as `GET /repos/{owner}/{repo}/collaborators/{user}/permission`
/// answers it (`maintain` is reported as `write`, `triage` as `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Admin,
    Write,
    Read,
    None,
}

impl Permission {
    /// Whether the user may push to the repository, and so approve and command previews.
    pub fn can_write(self) -> bool {
        matches!(self, Self::Admin | Self::Write)
    }

    /// The permission as GitHub spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Write => "write",
            Self::Read => "read",
            Self::None => "none",
        }
    }
}

/// A reaction to a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// 👀: heard.
    Eyes,
    /// 👍: done.
    ThumbsUp,
    /// 😕: could not do it.
    Confused,
}

impl Reaction {
    /// The `content` value of the reactions API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eyes => "eyes",
            Self::ThumbsUp => "+1",
            Self::Confused => "confused",
        }
    }
}

/// The GitHub REST client.
#[derive(Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    base: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base", &self.base)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed, and whether and when to try again.
struct Attempt {
    error: Error,
    retry: Retry,
}

#[derive(Clone, Copy, PartialEq)]
enum Retry {
    No,
    Backoff,
    After(Duration),
}

const MAX_DESCRIPTION: usize = 140;
const MAX_COMMENT_PAGES: u32 = 50;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

impl GitHubClient {
    /// A client for the API at `base_url` (`https://api.github.com`, or
    /// `https://HOST/api/v3` for GitHub Enterprise) authenticating with `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Self> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::Config {
                setting: "GITHUB_API_URL",
                reason: format!("{base_url:?} is not an http(s) URL"),
            });
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Config {
                setting: "GITHUB_TOKEN",
                reason: "contains characters not allowed in a header".into(),
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("preview-deployer/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::Config {
                setting: "GITHUB_API_URL",
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base.to_owned(),
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter()
    }

    /// One attempt: send, read the body, classify failures.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> std::result::Result<(StatusCode, Vec<u8>), Attempt> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |source: reqwest::Error| {
            // A request that never connected was never seen by GitHub: safe to send again.
            let retry = if source.is_connect()
                || *method == Method::GET
                || (source.is_timeout() && *method != Method::POST)
            {
                Retry::Backoff
            } else {
                Retry::No
            };
            Attempt {
                error: Error::Transport {
                    method: method.to_string(),
                    path: path.to_owned(),
                    source,
                },
                retry,
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok((status, bytes));
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| cut(&String::from_utf8_lossy(&bytes), 200));
        let api = |message: String| Error::Api {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
            message,
        };
        if let Some(wait) = rate_limit_wait(status, &headers) {
            if wait > self.retry.max_rate_limit_wait {
                return Err(Attempt {
                    error: Error::RateLimited {
                        method: method.to_string(),
                        path: path.to_owned(),
                        retry_after: wait,
                    },
                    retry: Retry::No,
                });
            }
            return Err(Attempt {
                error: api(message),
                retry: Retry::After(wait),
            });
        }
        let retry = if status.is_server_error() {
            Retry::Backoff
        } else {
            Retry::No
        };
        Err(Attempt {
            error: api(message),
            retry,
        })
    }

    /// Sends with retries; `retry_post` allows retrying a POST after a 5xx (for calls whose
    /// duplicates do no harm).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        retry_post: bool,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let retry_5xx = method != Method::POST || retry_post;
        let op = || self.attempt(&method, path, body.as_ref());
        op.retry(self.backoff())
            .when(|a: &Attempt| match a.retry {
                Retry::No => false,
                Retry::After(_) => true,
                Retry::Backoff => {
                    retry_5xx || matches!(a.error, Error::Transport { ref source, .. } if source.is_connect())
                }
            })
            .adjust(|a: &Attempt, next| match (a.retry, next) {
                (Retry::After(wait), Some(_)) => Some(wait),
                _ => next,
            })
            .notify(|a: &Attempt, wait| {
                tracing::warn!(error = %a.error, wait_ms = wait.as_millis() as u64, "GitHub call failed; retrying");
            })
            .await
            .map_err(|a| a.error)
    }

    fn decode<T: for<'de> Deserialize<'de>>(method: &str, path: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            method: method.to_owned(),
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The first comment on the PR whose body contains `marker`.
    pub async fn find_comment(
        &self,
        repo: &RepoFullName,
        pr: PrNumber,
        marker: &str,
    ) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Comment {
            id: u64,
            #[serde(default)]
            body: Option<String>,
        }
        for page in 1..=MAX_COMMENT_PAGES {
            let path = format!(
                "/repos/{}/{}/issues/{}/comments?per_page=100&page={page}",
                repo.owner(),
                repo.name(),
                pr
            );
            let (_, bytes) = self.request(Method::GET, &path, None, false).await?;
            let comments: Vec<Comment> = Self::decode("GET", &path, &bytes)?;
            if let Some(c) = comments
                .iter()
                .find(|c| c.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Ok(Some(c.id));
            }
            if comments.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    async fn edit_comment(&self, repo: &RepoFullName, id: u64, body: &str) -> Result<bool> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{id}",
            repo.owner(),
            repo.name()
        );
        match self
            .request(Method::PATCH, &path, Some(json!({ "body": body })), false)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the PR's sticky comment: edits the comment carrying `marker` (trying `known_id`
    /// first), or creates it. `body` gets the marker prepended when it lacks it. A create that
    /// fails ambiguously is followed by a new search before trying again, so the comment is never
    /// posted twice.
    pub async fn upsert_comment(
        &self,
        repo: &RepoFullName,
        pr: PrNumber,
        marker: &str,
        body: &str,
        known_id: Option<u64>,
    ) -> Result<CommentRef> {
        let body = if body.contains(marker) {
            body.to_owned()
        } else {
            format!("{marker}\n{body}")
        };
        if let Some(id) = known_id
            && self.edit_comment(repo, id, &body).await?
        {
            return Ok(CommentRef { id, created: false });
        }
        let mut backoff = backon::BackoffBuilder::build(self.backoff());
        loop {
            if let Some(id) = self.find_comment(repo, pr, marker).await?
                && self.edit_comment(repo, id, &body).await?
            {
                return Ok(CommentRef { id, created: false });
            }
            let path = format!(
                "/repos/{}/{}/issues/{}/comments",
                repo.owner(),
                repo.name(),
                pr
            );
            match self
                .request(Method::POST, &path, Some(json!({ "body": body })), false)
                .await
            {
                Ok((_, bytes)) => {
                    #[derive(Deserialize)]
                    struct Created {
                        id: u64,
                    }
                    let c: Created = Self::decode("POST", &path, &bytes)?;
                    return Ok(CommentRef {
                        id: c.id,
                        created: true,
                    });
                }
                Err(e @ (Error::Api { status: 500.., .. } | Error::Transport { .. })) => {
                    match backoff.next() {
                        Some(wait) => {
                            tracing::warn!(error = %e, "creating the PR comment failed; searching again before retrying");
                            tokio::time::sleep(wait).await;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a deployment and returns its id.
    pub async fn create_deployment(
        &self,
        repo: &RepoFullName,
        deployment: &NewDeployment,
    ) -> Result<u64> {
        let path = format!("/repos/{}/{}/deployments", repo.owner(), repo.name());
        let mut body = serde_json::to_value(deployment).expect("serializable");
        body["auto_merge"] = json!(false);
        body["required_contexts"] = json!([]);
        body["description"] = json!(cut(&deployment.description, MAX_DESCRIPTION));
        let (_, bytes) = self.request(Method::POST, &path, Some(body), true).await?;
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        Ok(Self::decode::<Created>("POST", &path, &bytes)?.id)
    }

    /// Adds a status to a deployment and returns the status's id.
    pub async fn create_deployment_status(
        &self,
        repo: &RepoFullName,
        deployment_id: u64,
        status: &NewDeploymentStatus,
    ) -> Result<u64> {
        let path = format!(
            "/repos/{}/{}/deployments/{deployment_id}/statuses",
            repo.owner(),
            repo.name()
        );
        let mut body = serde_json::to_value(status).expect("serializable");
        body["description"] = json!(cut(&status.description, MAX_DESCRIPTION));
        let (_, bytes) = self.request(Method::POST, &path, Some(body), true).await?;
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        Ok(Self::decode::<Created>("POST", &path, &bytes)?.id)
    }

    /// Sets a commit status on `sha`.
    pub async fn create_commit_status(
        &self,
        repo: &RepoFullName,
        sha: &CommitSha,
        status: &NewCommitStatus,
    ) -> Result<()> {
        let path = format!("/repos/{}/{}/statuses/{sha}", repo.owner(), repo.name());
        let mut body = serde_json::to_value(status).expect("serializable");
        body["description"] = json!(cut(&status.description, MAX_DESCRIPTION));
        self.request(Method::POST, &path, Some(body), true).await?;
        Ok(())
    }

    /// Reads a pull request's state, draft flag, head commit and branches.
    pub async fn pull_request(&self, repo: &RepoFullName, pr: PrNumber) -> Result<PullRequestInfo> {
        let path = format!("/repos/{}/{}/pulls/{pr}", repo.owner(), repo.name());
        let (_, bytes) = self.request(Method::GET, &path, None, false).await?;
        #[derive(Deserialize)]
        struct Owner {
            login: String,
        }
        #[derive(Deserialize)]
        struct Repo {
            name: String,
            owner: Owner,
        }
        #[derive(Deserialize)]
        struct Head {
            sha: String,
            #[serde(default, rename = "ref")]
            ref_: Option<String>,
            #[serde(default)]
            repo: Option<Repo>,
        }
        #[derive(Deserialize)]
        struct Base {
            #[serde(default, rename = "ref")]
            ref_: Option<String>,
        }
        #[derive(Deserialize)]
        struct Pr {
            state: PullRequestState,
            #[serde(default)]
            merged: Option<bool>,
            #[serde(default)]
            draft: Option<bool>,
            head: Head,
            #[serde(default)]
            base: Option<Base>,
        }
        let pr: Pr = Self::decode("GET", &path, &bytes)?;
        let head_sha = CommitSha::parse(&pr.head.sha).map_err(|e| Error::Decode {
            method: "GET".into(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        let branch = |r: Option<String>| r.and_then(|r| BranchName::parse(&r).ok());
        Ok(PullRequestInfo {
            state: pr.state,
            merged: pr.merged.unwrap_or(false),
            draft: pr.draft.unwrap_or(false),
            head_sha,
            head_ref: branch(pr.head.ref_),
            base_ref: branch(pr.base.and_then(|b| b.ref_)),
            head_repo: pr
                .head
                .repo
                .and_then(|r| RepoFullName::new(&r.owner.login, &r.name).ok()),
        })
    }

    /// `user`'s permission on `repo`. A user GitHub does not know is [`Permission::None`].
    pub async fn collaborator_permission(
        &self,
        repo: &RepoFullName,
        user: &str,
    ) -> Result<Permission> {
        preview_core::id::validate_owner(user)
            .map_err(|e| Error::invalid_field("user login", e.to_string()))?;
        let path = format!(
            "/repos/{}/{}/collaborators/{user}/permission",
            repo.owner(),
            repo.name()
        );
        let bytes = match self.request(Method::GET, &path, None, false).await {
            Ok((_, bytes)) => bytes,
            Err(Error::Api { status: 404, .. }) => return Ok(Permission::None),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Answer {
            permission: String,
        }
        let answer: Answer = Self::decode("GET", &path, &bytes)?;
        Ok(match answer.permission.as_str() {
            "admin" => Permission::Admin,
            "write" | "maintain" => Permission::Write,
            "read" | "triage" => Permission::Read,
            _ => Permission::None,
        })
    }

    /// Adds `reaction` to the PR (issue) comment `comment_id`. Reacting twice is harmless.
    pub async fn add_reaction(
        &self,
        repo: &RepoFullName,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<()> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{comment_id}/reactions",
            repo.owner(),
            repo.name()
        );
        self.request(
            Method::POST,
            &path,
            Some(json!({ "content": reaction.as_str() })),
            true,
        )
        .await?;
        Ok(())
    }

    /// Posts a new (not sticky) comment on the PR: a reply to a command.
    pub async fn create_comment(
        &self,
        repo: &RepoFullName,
        pr: PrNumber,
        body: &str,
    ) -> Result<u64> {
        let path = format!(
            "/repos/{}/{}/issues/{}/comments",
            repo.owner(),
            repo.name(),
            pr
        );
        let (_, bytes) = self
            .request(Method::POST, &path, Some(json!({ "body": body })), false)
            .await?;
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        Ok(Self::decode::<Created>("POST", &path, &bytes)?.id)
    }
}

/// How long GitHub asks us to wait, when the answer is a rate limit: `Retry-After` (seconds), or
/// for an exhausted primary limit `x-ratelimit-reset` (epoch seconds).
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header_u64 = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = header_u64("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    if header_u64("x-ratelimit-remaining") == Some(0) {
        let reset = header_u64("x-ratelimit-reset")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    // GitHub's secondary limits without a header: wait a minute, as GitHub's docs advise.
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Some(Duration::from_secs(60));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h),
            Some(Duration::from_secs(7))
        );
        assert_eq!(rate_limit_wait(StatusCode::INTERNAL_SERVER_ERROR, &h), None);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn marker_and_cut() {
        assert_eq!(
            comment_marker("octo-hello-pr-3"),
            "<!-- preview-deployer id=octo-hello-pr-3 -->"
        );
        assert_eq!(comment_marker("a-->b"), "<!-- preview-deployer id=a--b -->");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
    }
}
