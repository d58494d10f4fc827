//! Typed webhook events. Every field we use is validated here, and an error names the field's JSON
//! path, so that nothing unchecked (a branch, a sha, a name) reaches a command line or a path.

use std::borrow::Cow;

use serde_json::value::RawValue;

use preview_core::id::{BranchName, CommitSha, PrNumber, RepoFullName};

use crate::command::{PreviewCommand, parse_command};
use crate::lenient::{Obj, Scalar, flag, json_fields, opt_string, string, uint};
use crate::{Error, Result};

/// A verified, parsed delivery.
#[derive(Debug, Clone)]
pub enum WebhookEvent {
    /// GitHub checking the hook.
    Ping(Ping),
    /// A `pull_request` event.
    PullRequest(Box<PullRequestEvent>),
    /// An `issue_comment` event (comments on issues and on pull requests).
    IssueComment(Box<IssueCommentEvent>),
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
    /// `labeled`: `label` names the label added.
    Labeled,
    /// Any other action (`unlabeled`, `edited`, ...).
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
            "labeled" => Self::Labeled,
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
            Self::Labeled => "labeled",
            Self::Other(s) => s,
        }
    }
}

/// How the author of a pull request is related to its repository (`author_association`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorAssociation {
    Owner,
    Member,
    Collaborator,
    Contributor,
    FirstTimeContributor,
    FirstTimer,
    Mannequin,
    /// `NONE`, a value GitHub may add later, or no value at all: no relation we know of.
    None,
}

impl AuthorAssociation {
    fn parse(s: &str) -> Self {
        match s {
            "OWNER" => Self::Owner,
            "MEMBER" => Self::Member,
            "COLLABORATOR" => Self::Collaborator,
            "CONTRIBUTOR" => Self::Contributor,
            "FIRST_TIME_CONTRIBUTOR" => Self::FirstTimeContributor,
            "FIRST_TIMER" => Self::FirstTimer,
            "MANNEQUIN" => Self::Mannequin,
            _ => Self::None,
        }
    }

    /// The value as GitHub spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Member => "MEMBER",
            Self::Collaborator => "COLLABORATOR",
            Self::Contributor => "CONTRIBUTOR",
            Self::FirstTimeContributor => "FIRST_TIME_CONTRIBUTOR",
            Self::FirstTimer => "FIRST_TIMER",
            Self::Mannequin => "MANNEQUIN",
            Self::None => "NONE",
        }
    }

    /// Whether the author belongs to the repository: its owner, a member of its organisation,
    /// or an invited collaborator. A `CONTRIBUTOR` only had a PR merged once, and is not.
    pub fn is_trusted(self) -> bool {
        matches!(self, Self::Owner | Self::Member | Self::Collaborator)
    }
}

/// A GitHub account named in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The login. For a person it is validated like a repository owner (letters, digits, `-`,
    /// `_`), so it may go into an API path; a bot's (`name[bot]`) is only checked to be short and
    /// printable, and is never used in a path.
    pub login: String,
    /// Whether the account is a bot (`type: Bot`, or a login ending in `[bot]`).
    pub is_bot: bool,
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
    /// `pull_request.author_association`.
    pub author_association: AuthorAssociation,
    /// `pull_request.user`: who opened the PR. Read only when the author is not trusted (the
    /// gate's comment names them): an account object costs a webhook about 3 % more to parse.
    pub author: Option<Actor>,
    /// `sender`: who added the label. Read only for `labeled`, for the same reason.
    pub sender: Option<Actor>,
    /// `label.name`, for `labeled` and `unlabeled`.
    pub label: Option<String>,
}

/// A validated `issue_comment` event.
#[derive(Debug, Clone)]
pub struct IssueCommentEvent {
    /// `created`, `edited` or `deleted`.
    pub action: String,
    /// The repository.
    pub repo: RepoFullName,
    /// The issue's or pull request's number.
    pub number: PrNumber,
    /// Whether the comment is on a pull request (`issue.pull_request` is present).
    pub on_pull_request: bool,
    /// `comment.id`.
    pub comment_id: u64,
    /// The command in the comment, if it is one.
    pub command: Option<PreviewCommand>,
    /// `comment.user`.
    pub commenter: Actor,
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
        sender: &'a RawValue = "sender",
        label: Obj<RawLabel<'a>> = "label",
    }

    struct RawActor<'a> {
        login: Scalar<'a> = "login",
        type_: Scalar<'a> = "type",
    }

    struct RawLabel<'a> {
        name: Scalar<'a> = "name",
    }

    struct RawCommentEvent<'a> {
        action: Scalar<'a> = "action",
        issue: Obj<RawIssue<'a>> = "issue",
        comment: Obj<RawComment<'a>> = "comment",
        repository: Obj<RawRepo<'a>> = "repository",
    }

    struct RawIssue<'a> {
        number: Scalar<'a> = "number",
        pull_request: Scalar<'a> = "pull_request",
    }

    struct RawComment<'a> {
        id: Scalar<'a> = "id",
        body: Scalar<'a> = "body",
        user: Obj<RawActor<'a>> = "user",
    }

    struct RawPr<'a> {
        head: Obj<RawBranch<'a>> = "head",
        base: Obj<RawBase<'a>> = "base",
        draft: Scalar<'a> = "draft",
        merged: Scalar<'a> = "merged",
        updated_at: Scalar<'a> = "updated_at",
        author_association: Scalar<'a> = "author_association",
        user: &'a RawValue = "user",
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

/// Longest label name accepted (GitHub allows 50 characters).
const MAX_LABEL_LEN: usize = 100;
/// Longest bot login accepted.
const MAX_BOT_LOGIN_LEN: usize = 64;

/// The JSON paths of an account object and its fields, for errors.
struct ActorPaths {
    actor: &'static str,
    login: &'static str,
    type_: &'static str,
}

const PR_USER: ActorPaths = ActorPaths {
    actor: "pull_request.user",
    login: "pull_request.user.login",
    type_: "pull_request.user.type",
};

const SENDER: ActorPaths = ActorPaths {
    actor: "sender",
    login: "sender.login",
    type_: "sender.type",
};

const COMMENT_USER: ActorPaths = ActorPaths {
    actor: "comment.user",
    login: "comment.user.login",
    type_: "comment.user.type",
};

/// An account object kept unparsed, parsed now; `None` when absent or null.
fn actor_from_raw(raw: Option<&RawValue>, paths: &ActorPaths) -> Result<Option<Actor>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let parsed = serde_json::from_str::<Obj<RawActor<'_>>>(raw.get()).map_err(malformed)?;
    actor(Some(parsed), paths)
}

/// An account object; `None` when absent or null.
fn actor(raw: Option<Obj<RawActor<'_>>>, paths: &ActorPaths) -> Result<Option<Actor>> {
    let raw = match raw {
        None | Some(Obj::Not("null")) => return Ok(None),
        some => Obj::get(some, paths.actor)?,
    };
    let login = string(&raw.login, paths.login)?;
    let is_bot = opt_string(&raw.type_, paths.type_)? == Some("Bot") || login.ends_with("[bot]");
    if is_bot {
        let name = login.strip_suffix("[bot]").unwrap_or(login);
        if login.len() > MAX_BOT_LOGIN_LEN
            || name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid_field(
                paths.login,
                "expected a bot login: letters, digits, '-', '_', then [bot]",
            ));
        }
    } else {
        preview_core::id::validate_owner(login).map_err(core_err(paths.login))?;
    }
    Ok(Some(Actor {
        login: login.to_owned(),
        is_bot,
    }))
}

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
        "issue_comment" => {
            parse_issue_comment(&json).map(|e| WebhookEvent::IssueComment(Box::new(e)))
        }
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
    let author_association = opt_string(&pr.author_association, "pull_request.author_association")?
        .map_or(AuthorAssociation::None, AuthorAssociation::parse);
    let label = match raw.label {
        None | Some(Obj::Not("null")) => None,
        some => {
            let label = Obj::get(some, "label")?;
            let name = string(&label.name, "label.name")?;
            if name.chars().count() > MAX_LABEL_LEN || name.chars().any(char::is_control) {
                return Err(Error::invalid_field(
                    "label.name",
                    format!("expected at most {MAX_LABEL_LEN} printable characters"),
                ));
            }
            Some(name.to_owned())
        }
    };
    Ok(PullRequestEvent {
        author_association,
        author: if author_association.is_trusted() {
            None
        } else {
            actor_from_raw(pr.user, &PR_USER)?
        },
        sender: if action == PullRequestAction::Labeled {
            actor_from_raw(raw.sender, &SENDER)?
        } else {
            None
        },
        label,
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

fn parse_issue_comment(json: &[u8]) -> Result<IssueCommentEvent> {
    let raw = Obj::get(
        Some(serde_json::from_slice::<Obj<RawCommentEvent<'_>>>(json).map_err(malformed)?),
        "payload",
    )?;
    let action = string(&raw.action, "action")?;
    if action.is_empty()
        || action.len() > 32
        || !action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(Error::invalid_field(
            "action",
            "expected a lowercase word such as `created`",
        ));
    }
    let repo = repo_full_name(Obj::get(raw.repository, "repository")?, &REPOSITORY)?;
    let issue = Obj::get(raw.issue, "issue")?;
    let number =
        PrNumber::new(uint(&issue.number, "issue.number")?).map_err(core_err("issue.number"))?;
    let on_pull_request = !matches!(issue.pull_request, None | Some(Scalar::Null));
    let comment = Obj::get(raw.comment, "comment")?;
    let comment_id = uint(&comment.id, "comment.id")?;
    let command = opt_string(&comment.body, "comment.body")?.and_then(parse_command);
    let commenter = actor(comment.user, &COMMENT_USER)?
        .ok_or_else(|| Error::invalid_field("comment.user", "missing"))?;
    Ok(IssueCommentEvent {
        action: action.to_owned(),
        repo,
        number,
        on_pull_request,
        comment_id,
        command,
        commenter,
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
