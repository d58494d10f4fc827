//! Webhook intake on arbitrary input: signature check, content-type handling and event parsing
//! must never panic, and whatever parses must satisfy the validators again.
//!
//! Input layout: byte 0 picks the event name, byte 1 the content type, byte 2 whether the body
//! is signed with the right key; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preview_core::id::{BranchName, CommitSha, PrNumber, RepoFullName};
use preview_github::{WebhookEvent, WebhookVerifier, parse_event, sign};

const EVENTS: [&str; 7] = [
    "pull_request",
    "ping",
    "push",
    "",
    "Pull_Request",
    "issues",
    "issue_comment",
];
const TYPES: [Option<&str>; 5] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    None,
    Some("application/x-www-form-urlencoded; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let event = EVENTS[data[0] as usize % EVENTS.len()];
    let content_type = TYPES[data[1] as usize % TYPES.len()];
    let body = &data[3..];

    let verifier = WebhookVerifier::new(b"fuzz secret");
    let header = if data[2] % 2 == 0 {
        sign(b"fuzz secret", body)
    } else {
        String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned()
    };
    let verified = verifier.verify(Some(header.as_bytes()), body).is_ok();
    if data[2] % 2 == 0 {
        assert!(verified, "a correct signature must verify");
    }

    match parse_event(event, content_type, body) {
        Ok(WebhookEvent::PullRequest(ev)) => {
            // Everything that came out validated must validate again.
            assert!(PrNumber::new(u64::from(ev.number.get())).is_ok());
            assert!(CommitSha::parse(ev.head_sha.as_str()).is_ok());
            assert_eq!(ev.head_sha.as_str().len(), 40);
            assert!(BranchName::parse(ev.head_ref.as_str()).is_ok());
            assert!(BranchName::parse(ev.base_ref.as_str()).is_ok());
            assert!(!ev.head_ref.as_str().starts_with('-'));
            assert!(RepoFullName::parse(&ev.repo.full_name()).is_ok());
            if let Some(url) = &ev.clone_url {
                assert!(url.starts_with("http://") || url.starts_with("https://"));
            }
        }
        Ok(WebhookEvent::IssueComment(ev)) => {
            assert!(PrNumber::new(u64::from(ev.number.get())).is_ok());
            assert!(RepoFullName::parse(&ev.repo.full_name()).is_ok());
            if !ev.commenter.is_bot {
                assert!(preview_core::id::validate_owner(&ev.commenter.login).is_ok());
            }
        }
        Ok(_) => {}
        Err(e) => {
            assert!(matches!(e.webhook_status(), 400 | 401), "{e}");
        }
    }
});
