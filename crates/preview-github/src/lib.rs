//! GitHub for preview-deployer: webhook signature verification, typed and validated webhook
//! events, and (feature `client`, on by default) a small REST client for the feedback a preview
//! gives on its pull request: a sticky comment, deployments with statuses, commit statuses and the
//! pull request's state.

#[cfg(feature = "client")]
mod client;
mod command;
mod error;
mod event;
#[cfg(feature = "fake")]
pub mod fake;
mod lenient;
mod signature;

#[cfg(feature = "client")]
pub use client::{
    CommentRef, CommitState, DeploymentState, GitHubClient, NewCommitStatus, NewDeployment,
    NewDeploymentStatus, Permission, PullRequestInfo, PullRequestState, Reaction, RetryPolicy,
    comment_marker,
};
pub use command::{MAX_ECHO, PreviewCommand, parse_command};
pub use error::{Error, Result};
pub use event::{
    Actor, AuthorAssociation, IssueCommentEvent, Ping, PullRequestAction, PullRequestEvent,
    WebhookEvent, json_payload, parse_event,
};
pub use signature::{WebhookVerifier, sign};

/// Header carrying `sha256=<hex HMAC of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Header naming the event (`ping`, `pull_request`, ...).
pub const EVENT_HEADER: &str = "x-github-event";
/// Header carrying the delivery's unique id (kept across redeliveries).
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// GitHub caps webhook payloads at 25 MB.
pub const MAX_PAYLOAD_BYTES: usize = 25 * 1024 * 1024;
