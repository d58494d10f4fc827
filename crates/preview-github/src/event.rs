//! Typed webhook events. Every field we use is validated here, and an error names the field's JSON
//! path, so that nothing unchecked (a branch, a sha, a name) reaches a command line or a path.

use std::borrow::Cow;

use preview_core::id::{BranchName, CommitSha, PrNumber, RepoFullName};

use crate::lenient::{Obj, Scalar, flag, json_fields, opt_string, string, uint};
use crate::{Error, Result};

/// A verified, parsed delivery.
#[derive(Debug, Clone)]
pub enum WebhookEvent {
    /// GitHub checking the hook.
    Ping(Ping),
    /// A `pull_request` event.
    PullRequest(Box<PullRequestEvent>),
    /// Any other event; `name` is `X-GitHub-Event`.
    Other { name: String },
}

/// The `ping` event.
#[derive(Debug, Clone)]
pub struct Ping {
    /// GitHub's zen line.
    pub zen: Option<String>,
    /// The hook's id.
    pub hook_id: Option<u64>,
    /// The repository, for repository hooks.
    pub repository: Option<RepoFullName>,
}

/// What happened to the pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullRequestAction {
    /// `opened`
    Opened,
    /// `reopened`
    Reopened,
    /// `synchronize`: new commits on the head branch.
    Synchronize,
    /// `closed` (merged or not)
    Closed,
    /// `ready_for_review`: a draft became ready.
    ReadyForReview,
    /// `converted_to_draft`
    ConvertedToDraft,
    /// Any other action (`labeled`, `edited`, ...).
    Other(String),
}

impl PullRequestAction {
    fn parse(s: &str) -> Self {
        match s {
            "opened" => Self::Opened,
            "reopened" => Self::Reopened,
            "synchronize" => Self::Synchronize,
            "closed" => Self::Closed,
            "ready_for_review" => Self::ReadyForReview,
            "converted_to_draft" => Self::ConvertedToDraft,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The action as GitHub spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Opened => "opened",
            Self::Reopened => "reopened",
            Self::Synchronize => "synchronize",
            Self::Closed => "closed",
            Self::ReadyForReview => "ready_for_review",
            Self::ConvertedToDraft => "converted_to_draft",
            Self::Other(s) => s,
        }
    }
}

/// A validated `pull_request` event.
#[derive(Debug, Clone)]
pub struct PullRequestEvent {
    /// The action.
    pub action: PullRequestAction,
    /// The base repository (where the PR is open).
    pub repo: RepoFullName,
    /// The PR number.
    pub number: PrNumber,
    /// The head commit.
    pub head_sha: CommitSha,
    /// The head branch (in `head_repo`).
    pub head_ref: BranchName,
    /// The base branch.
    pub base_ref: BranchName,
    /// The repository holding the head branch; differs from `repo` for forks, `None` when the
    /// fork was deleted.
    pub head_repo: Option<RepoFullName>,
    /// Whether the PR is a draft.
    pub draft: bool,
    /// Whether the PR was merged (for `closed`).
    pub merged: bool,
    /// `pull_request.updated_at`: orders deliveries of the same PR.
    pub updated_at: Option<jiff::Timestamp>,
    /// `repository.clone_url`, checked to be an http(s) URL.
    pub clone_url: Option<String>,
}

impl PullRequestEvent {
    /// Whether the head branch lives in another repository than the base.
    pub fn is_fork(&self) -> bool {
        self.head_repo.as_ref().is_some_and(|h| h != &self.repo)
    }
}

json_fields! {
    struct RawPrEvent<'a> {
        action: Scalar<'a> = "action",
        number: Scalar<'a> = "number",
        pull_request: Obj<RawPr<'a>> = "pull_request",
        repository: Obj<RawRepo<'a>> = "repository",
    }

    struct RawPr<'a> {
        head: Obj<RawBranch<'a>> = "head",
        base: Obj<RawBase<'a>> = "base",
        draft: Scalar<'a> = "draft",
        merged: Scalar<'a> = "merged",
        updated_at: Scalar<'a> = "updated_at",
    }

    struct RawBranch<'a> {
        ref_: Scalar<'a> = "ref",
        sha: Scalar<'a> = "sha",
        repo: Obj<RawRepo<'a>> = "repo",
    }

    /// `pull_request.base`: only its branch; the base repository is `repository`, and leaving
    /// `base.repo` to be skipped unread saves visiting its hundred keys.
    struct RawBase<'a> {
        ref_: Scalar<'a> = "ref",
    }

    struct RawRepo<'a> {
        name: Scalar<'a> = "name",
        owner: Obj<RawUser<'a>> = "owner",
        clone_url: Scalar<'a> = "clone_url",
    }

    struct RawUser<'a> {
        login: Scalar<'a> = "login",
    }

    struct RawPing<'a> {
        zen: Scalar<'a> = "zen",
        hook_id: Scalar<'a> = "hook_id",
        repository: Obj<RawRepo<'a>> = "repository",
    }
}

/// Longest clone URL accepted.
const MAX_URL_LEN: usize = 2048;

fn core_err(field: &str) -> impl FnOnce(preview_core::Error) -> Error + '_ {
    move |e| match e {
        preview_core::Error::Invalid { reason, .. } => Error::invalid_field(field, reason),
        other => Error::invalid_field(field, other.to_string()),
    }
}

/// The JSON paths of a repository object and its fields, for errors.
struct RepoPaths {
    repo: &'static str,
    owner: &'static str,
    login: &'static str,
    name: &'static str,
}

const REPOSITORY: RepoPaths = RepoPaths {
    repo: "repository",
    owner: "repository.owner",
    login: "repository.owner.login",
    name: "repository.name",
};

const HEAD_REPO: RepoPaths = RepoPaths {
    repo: "pull_request.head.repo",
    owner: "pull_request.head.repo.owner",
    login: "pull_request.head.repo.owner.login",
    name: "pull_request.head.repo.name",
};

fn repo_full_name(raw: RawRepo<'_>, paths: &RepoPaths) -> Result<RepoFullName> {
    let owner = Obj::get(raw.owner, paths.owner)?;
    let login = string(&owner.login, paths.login)?;
    let name = string(&raw.name, paths.name)?;
    preview_core::id::validate_owner(login).map_err(core_err(paths.login))?;
    preview_core::id::validate_repo_name(name).map_err(core_err(paths.name))?;
    RepoFullName::new(login, name).map_err(core_err(paths.repo))
}

fn clone_url(raw: &Option<Scalar<'_>>) -> Result<Option<String>> {
    const FIELD: &str = "repository.clone_url";
    let Some(url) = opt_string(raw, FIELD)? else {
        return Ok(None);
    };
    let ok_scheme = url.starts_with("https://") || url.starts_with("http://");
    if !ok_scheme
        || url.len() > MAX_URL_LEN
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::invalid_field(
            FIELD,
            "expected an http(s) URL without spaces or control characters",
        ));
    }
    Ok(Some(url.to_owned()))
}

/// The JSON document of a delivery: the body itself, or the `payload` field of a form-encoded one.
pub fn json_payload<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    let is_form = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !is_form {
        return Ok(Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
        .ok_or_else(|| Error::invalid_field("payload", "form body has no payload field"))
}

fn malformed(e: serde_json::Error) -> Error {
    Error::MalformedPayload(e.to_string())
}

/// Parses a verified delivery. `event` is `X-GitHub-Event`, `content_type` the request's
/// `Content-Type`. Call only after [`crate::WebhookVerifier::verify`].
pub fn parse_event(event: &str, content_type: Option<&str>, body: &[u8]) -> Result<WebhookEvent> {
    if event.is_empty()
        || event.len() > 64
        || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(Error::MissingHeader("X-GitHub-Event"));
    }
    let json = json_payload(content_type, body)?;
    match event {
        "ping" => parse_ping(&json).map(WebhookEvent::Ping),
        "pull_request" => parse_pull_request(&json).map(|e| WebhookEvent::PullRequest(Box::new(e))),
        other => {
            // Still insist on JSON, so that garbage is told apart from events we ignore.
            serde_json::from_slice::<serde::de::IgnoredAny>(&json).map_err(malformed)?;
            Ok(WebhookEvent::Other {
                name: other.to_owned(),
            })
        }
    }
}

fn parse_ping(json: &[u8]) -> Result<Ping> {
    let raw = Obj::get(
        Some(serde_json::from_slice::<Obj<RawPing<'_>>>(json).map_err(malformed)?),
        "payload",
    )?;
    let hook_id = match &raw.hook_id {
        None | Some(Scalar::Null) => None,
        some => Some(uint(some, "hook_id")?),
    };
    let repository = match raw.repository {
        None | Some(Obj::Not("null")) => None,
        some => Some(repo_full_name(
            Obj::get(some, REPOSITORY.repo)?,
            &REPOSITORY,
        )?),
    };
    Ok(Ping {
        zen: opt_string(&raw.zen, "zen")?.map(str::to_owned),
        hook_id,
        repository,
    })
}

fn parse_pull_request(json: &[u8]) -> Result<PullRequestEvent> {
    let raw = Obj::get(
        Some(serde_json::from_slice::<Obj<RawPrEvent<'_>>>(json).map_err(malformed)?),
        "payload",
    )?;
    let action = PullRequestAction::parse(string(&raw.action, "action")?);
    let repository = Obj::get(raw.repository, "repository")?;
    let clone_url = clone_url(&repository.clone_url)?;
    let repo = repo_full_name(repository, &REPOSITORY)?;
    let number = PrNumber::new(uint(&raw.number, "number")?).map_err(core_err("number"))?;
    let pr = Obj::get(raw.pull_request, "pull_request")?;
    let head = Obj::get(pr.head, "pull_request.head")?;
    let base = Obj::get(pr.base, "pull_request.base")?;
    let head_sha = CommitSha::parse(string(&head.sha, "pull_request.head.sha")?)
        .map_err(core_err("pull_request.head.sha"))?;
    let head_ref = BranchName::parse_field(
        string(&head.ref_, "pull_request.head.ref")?,
        "pull_request.head.ref",
    )
    .map_err(core_err("pull_request.head.ref"))?;
    let base_ref = BranchName::parse_field(
        string(&base.ref_, "pull_request.base.ref")?,
        "pull_request.base.ref",
    )
    .map_err(core_err("pull_request.base.ref"))?;
    let head_repo = match head.repo {
        None | Some(Obj::Not("null")) => None,
        some => Some(repo_full_name(Obj::get(some, HEAD_REPO.repo)?, &HEAD_REPO)?),
    };
    let updated_at = opt_string(&pr.updated_at, "pull_request.updated_at")?
        .map(|s| {
            s.parse::<jiff::Timestamp>().map_err(|e| {
                Error::invalid_field("pull_request.updated_at", format!("not RFC 3339: {e}"))
            })
        })
        .transpose()?;
    Ok(PullRequestEvent {
        action,
        repo,
        number,
        head_sha,
        head_ref,
        base_ref,
        head_repo,
        draft: flag(&pr.draft, "pull_request.draft")?,
        merged: flag(&pr.merged, "pull_request.merged")?,
        updated_at,
        clone_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_payload_is_extracted() {
        let body = b"payload=%7B%22a%22%3A1%7D&x=y";
        let json = json_payload(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            body,
        )
        .unwrap();
        assert_eq!(&*json, br#"{"a":1}"#);
        assert!(json_payload(Some("application/x-www-form-urlencoded"), b"x=1").is_err());
        assert_eq!(
            &*json_payload(Some("application/json"), b"[]").unwrap(),
            b"[]"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse_pull_request(br#"{"action":"opened","number":"1"}"#).unwrap_err();
        assert_eq!(err.field(), Some("repository"), "{err}");
        let err = parse_pull_request(
            br#"{"action":"opened","number":-1,"repository":{"name":"r","owner":{"login":"o"}}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("number"), "{err}");
        let err = parse_pull_request(br#"[1,2]"#).unwrap_err();
        assert_eq!(err.field(), Some("payload"));
        let err = parse_pull_request(br#"{"action":1"#).unwrap_err();
        assert!(matches!(err, Error::MalformedPayload(_)));
    }

    #[test]
    fn object_fields_read_like_derive() {
        fn repo(body: &str) -> serde_json::Result<RawRepo<'_>> {
            serde_json::from_str(body)
        }
        // Escaped keys still match; other keys (objects, arrays, escapes) are skipped.
        let r = repo(r#"{"na\u006de":"n","x":{"name":"inner"},"y":[1,{"a":"\""}],"owner":null}"#)
            .unwrap();
        assert!(matches!(&r.name, Some(Scalar::Str(s)) if s == "n"));
        assert!(r.owner.is_none(), "null is None");
        assert!(r.clone_url.is_none());
        // A repeated key is refused, as #[derive(Deserialize)] refuses it.
        let err = repo(r#"{"name":"a","name":"b"}"#).err().unwrap();
        assert!(err.to_string().contains("duplicate field `name`"), "{err}");
        let err = repo(r#"{"name":null,"name":"b"}"#).err().unwrap();
        assert!(err.to_string().contains("duplicate field `name`"), "{err}");
    }
}
