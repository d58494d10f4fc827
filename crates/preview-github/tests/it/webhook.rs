use preview_github::{
    AuthorAssociation, Error, PreviewCommand, PullRequestAction, WebhookEvent, WebhookVerifier,
    parse_event, sign,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::fixture;

#[test]
fn githubs_documented_vector_verifies() {
    let secret = b"It's a Secret to Everybody";
    let body = b"Hello, World!";
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(sign(secret, body), expected);
    let v = WebhookVerifier::new(secret);
    v.verify(Some(expected.as_bytes()), body).unwrap();
    // Upper-case hex is still the same signature.
    v.verify(
        Some(
            expected
                .to_uppercase()
                .replace("SHA256=", "sha256=")
                .as_bytes(),
        ),
        body,
    )
    .unwrap();
}

#[test]
fn wrong_or_missing_signatures_are_rejected() {
    let v = WebhookVerifier::new(b"It's a Secret to Everybody");
    let good = sign(b"It's a Secret to Everybody", b"Hello, World!");
    assert!(matches!(
        v.verify(None, b"Hello, World!"),
        Err(Error::MissingSignature)
    ));
    assert!(matches!(
        v.verify(Some(good.as_bytes()), b"Hello, World?"),
        Err(Error::SignatureMismatch)
    ));
    let other = sign(b"another secret", b"Hello, World!");
    assert!(matches!(
        v.verify(Some(other.as_bytes()), b"Hello, World!"),
        Err(Error::SignatureMismatch)
    ));
    for e in [Error::MissingSignature, Error::SignatureMismatch] {
        assert_eq!(e.webhook_status(), 401);
    }
}

#[test]
fn real_payloads_parse_and_carry_their_action() {
    for (file, action) in [
        ("opened", PullRequestAction::Opened),
        ("closed", PullRequestAction::Closed),
        ("synchronize", PullRequestAction::Synchronize),
        ("reopened", PullRequestAction::Reopened),
        ("ready_for_review", PullRequestAction::ReadyForReview),
        ("converted_to_draft", PullRequestAction::ConvertedToDraft),
        ("labeled", PullRequestAction::Labeled),
    ] {
        let body = fixture(&format!("pull_request.{file}.json"));
        let WebhookEvent::PullRequest(ev) =
            parse_event("pull_request", Some("application/json"), &body).unwrap()
        else {
            panic!("{file}: not a pull_request event");
        };
        assert_eq!(ev.action, action, "{file}");
        assert_eq!(ev.repo.full_name(), "Codertocat/Hello-World");
        assert_eq!(ev.number.get(), 2);
        assert_eq!(
            ev.head_sha.as_str(),
            "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
        );
        assert_eq!(ev.head_ref.as_str(), "changes");
        assert_eq!(ev.base_ref.as_str(), "master");
        assert!(!ev.is_fork());
        assert!(ev.updated_at.is_some());
        assert_eq!(
            ev.clone_url.as_deref(),
            Some("https://github.com/Codertocat/Hello-World.git")
        );
        assert_eq!(ev.draft, file == "converted_to_draft", "{file}");
        assert_eq!(ev.author_association, AuthorAssociation::Owner, "{file}");
        assert!(ev.author_association.is_trusted());
        // Account objects are read only when the gate needs them.
        assert_eq!(ev.author, None, "{file}: a trusted author is not read");
        assert_eq!(
            ev.sender.as_ref().map(|s| (s.login.as_str(), s.is_bot)),
            (file == "labeled").then_some(("Codertocat", false)),
            "{file}"
        );
        assert_eq!(ev.label.is_some(), file == "labeled", "{file}");
    }
}

/// The vendored `issue_comment` example, changed by `edit`.
fn comment_event(
    edit: impl FnOnce(&mut Value),
) -> Result<preview_github::IssueCommentEvent, Error> {
    let mut v: Value = serde_json::from_slice(&fixture("issue_comment.created.json")).unwrap();
    edit(&mut v);
    match parse_event("issue_comment", None, &serde_json::to_vec(&v).unwrap())? {
        WebhookEvent::IssueComment(c) => Ok(*c),
        other => panic!("{other:?}"),
    }
}

#[test]
fn issue_comments_carry_their_command_and_author() {
    // The vendored example is a conversation comment on an issue.
    let c = comment_event(|_| {}).unwrap();
    assert_eq!(c.action, "created");
    assert_eq!(c.repo.full_name(), "Codertocat/Hello-World");
    assert_eq!(c.number.get(), 1);
    assert!(!c.on_pull_request);
    assert_eq!(c.comment_id, 492700400);
    assert_eq!(c.command, None);
    assert_eq!(c.commenter.login, "Codertocat");
    assert!(!c.commenter.is_bot);

    let c = comment_event(|v| {
        v["issue"]["pull_request"] =
            json!({"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1"});
        v["comment"]["body"] = json!("/preview destroy\r\nthanks");
    })
    .unwrap();
    assert!(c.on_pull_request);
    assert_eq!(c.command, Some(PreviewCommand::Destroy));

    let bot = comment_event(|v| {
        v["comment"]["user"]["login"] = json!("dependabot[bot]");
        v["comment"]["user"]["type"] = json!("Bot");
    })
    .unwrap();
    assert!(bot.commenter.is_bot);
    assert!(
        comment_event(|v| v["comment"]["user"]["login"] = json!("renovate[bot]"))
            .unwrap()
            .commenter
            .is_bot
    );
}

#[test]
fn invalid_comment_fields_are_named() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["comment"]["user"]["login"] = json!("../admin")),
            "comment.user.login",
        ),
        (
            Box::new(|v| v["comment"]["user"]["login"] = json!("evil/x[bot]")),
            "comment.user.login",
        ),
        (
            Box::new(|v| v["comment"]["user"] = json!(null)),
            "comment.user",
        ),
        (Box::new(|v| v["comment"]["id"] = json!("1")), "comment.id"),
        (
            Box::new(|v| v["comment"]["body"] = json!(7)),
            "comment.body",
        ),
        (
            Box::new(|v| v["issue"]["number"] = json!(0)),
            "issue.number",
        ),
        (Box::new(|v| v["issue"] = json!([])), "issue"),
        (Box::new(|v| v["action"] = json!("Created!")), "action"),
        (
            Box::new(|v| v["repository"]["owner"]["login"] = json!("a b")),
            "repository.owner.login",
        ),
    ];
    for (edit, field) in cases {
        let err = comment_event(edit).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert_eq!(err.webhook_status(), 400);
    }
}

#[test]
fn pull_request_trust_fields() {
    let parse = |body: Vec<u8>| match parse_event("pull_request", None, &body).unwrap() {
        WebhookEvent::PullRequest(ev) => *ev,
        other => panic!("{other:?}"),
    };
    for (value, want) in [
        (json!("NONE"), AuthorAssociation::None),
        (
            json!("FIRST_TIME_CONTRIBUTOR"),
            AuthorAssociation::FirstTimeContributor,
        ),
        (json!("CONTRIBUTOR"), AuthorAssociation::Contributor),
        (json!("MEMBER"), AuthorAssociation::Member),
        (json!("COLLABORATOR"), AuthorAssociation::Collaborator),
        (json!("SOMETHING_NEW"), AuthorAssociation::None),
        (Value::Null, AuthorAssociation::None),
    ] {
        let ev = parse(mutated("/pull_request/author_association", value.clone()));
        assert_eq!(ev.author_association, want, "{value}");
        assert_eq!(
            ev.author_association.is_trusted(),
            matches!(
                want,
                AuthorAssociation::Member | AuthorAssociation::Collaborator
            ),
            "{value}"
        );
    }
    let missing = parse(mutated(
        "/pull_request/author_association!remove",
        Value::Null,
    ));
    assert_eq!(missing.author_association, AuthorAssociation::None);
    let err = parse_event(
        "pull_request",
        None,
        &mutated("/pull_request/author_association", json!(3)),
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("pull_request.author_association"));
    // An outside author is read, and validated; so is a label's sender.
    let outside = parse(mutated("/pull_request/author_association", json!("NONE")));
    assert_eq!(outside.author.unwrap().login, "Codertocat");
    let mut v: Value =
        serde_json::from_slice(&mutated("/pull_request/author_association", json!("NONE")))
            .unwrap();
    v["pull_request"]["user"]["login"] = json!("x y");
    let err = parse_event("pull_request", None, &serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(err.field(), Some("pull_request.user.login"));
    let mut labeled: Value = serde_json::from_slice(&fixture("pull_request.labeled.json")).unwrap();
    labeled["sender"]["login"] = json!("x y");
    let err =
        parse_event("pull_request", None, &serde_json::to_vec(&labeled).unwrap()).unwrap_err();
    assert_eq!(err.field(), Some("sender.login"));
    let mut labeled: Value = serde_json::from_slice(&fixture("pull_request.labeled.json")).unwrap();
    labeled["label"]["name"] = json!("a\u{7}b");
    let err =
        parse_event("pull_request", None, &serde_json::to_vec(&labeled).unwrap()).unwrap_err();
    assert_eq!(err.field(), Some("label.name"));
    let deleted_fork = parse(mutated("/pull_request/head/repo", Value::Null));
    assert!(deleted_fork.head_repo.is_none());
}

#[test]
fn ping_and_other_events() {
    let WebhookEvent::Ping(p) = parse_event("ping", None, &fixture("ping.json")).unwrap() else {
        panic!("not a ping");
    };
    assert_eq!(p.hook_id, Some(109948940));
    assert_eq!(p.repository.unwrap().full_name(), "Octocoders/Hello-World");
    assert!(matches!(
        parse_event("push", None, b"{}").unwrap(),
        WebhookEvent::Other { name } if name == "push"
    ));
    assert!(matches!(
        parse_event("push", None, b"{"),
        Err(Error::MalformedPayload(_))
    ));
    for bad in ["", "Pull-Request", "x y", &"a".repeat(65)] {
        assert_eq!(
            parse_event(bad, None, b"{}").unwrap_err().webhook_status(),
            400
        );
    }
}

#[test]
fn form_encoded_delivery() {
    let json = fixture("pull_request.opened.json");
    let body: String = form_urlencoded_payload(&json);
    let ev = parse_event(
        "pull_request",
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
    .unwrap();
    assert!(matches!(ev, WebhookEvent::PullRequest(e) if e.action == PullRequestAction::Opened));
}

fn form_urlencoded_payload(json: &[u8]) -> String {
    let mut s = String::from("payload=");
    for b in json {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                s.push(*b as char)
            }
            b' ' => s.push('+'),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

fn mutated(pointer: &str, value: Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture("pull_request.opened.json")).unwrap();
    if value.is_null() && pointer.ends_with("!remove") {
        let p = pointer.trim_end_matches("!remove");
        let (parent, key) = p.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key);
    } else {
        *v.pointer_mut(pointer).unwrap() = value;
    }
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn every_invalid_field_is_named() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/number", json!(0), "number"),
        ("/number", json!(2147483649u64), "number"),
        ("/number", json!(-3), "number"),
        ("/number", json!(1.5), "number"),
        ("/number", json!("2"), "number"),
        ("/number!remove", Value::Null, "number"),
        ("/action", json!(7), "action"),
        (
            "/repository/owner/login",
            json!("bad owner"),
            "repository.owner.login",
        ),
        (
            "/repository/owner/login",
            json!("-x"),
            "repository.owner.login",
        ),
        ("/repository/name", json!("a/b"), "repository.name"),
        ("/repository/name", json!(".."), "repository.name"),
        (
            "/repository/name",
            json!("x".repeat(101)),
            "repository.name",
        ),
        ("/repository/owner", json!("str"), "repository.owner"),
        ("/repository", json!(null), "repository"),
        (
            "/pull_request/head/sha",
            json!("abc"),
            "pull_request.head.sha",
        ),
        (
            "/pull_request/head/sha",
            json!("z".repeat(40)),
            "pull_request.head.sha",
        ),
        (
            "/pull_request/head/ref",
            json!("a..b"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/head/ref",
            json!("-rf"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/head/ref",
            json!("x y"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/head/ref",
            json!("x.lock"),
            "pull_request.head.ref",
        ),
        (
            "/pull_request/base/ref",
            json!("@"),
            "pull_request.base.ref",
        ),
        ("/pull_request/head", json!([]), "pull_request.head"),
        ("/pull_request/draft", json!("yes"), "pull_request.draft"),
        (
            "/pull_request/updated_at",
            json!("yesterday"),
            "pull_request.updated_at",
        ),
        (
            "/pull_request/head/repo/owner/login",
            json!("a b"),
            "pull_request.head.repo.owner.login",
        ),
        (
            "/repository/clone_url",
            json!("ext::sh -c x"),
            "repository.clone_url",
        ),
    ];
    for (pointer, value, field) in cases {
        let body = mutated(pointer, value.clone());
        let err = parse_event("pull_request", None, &body).unwrap_err();
        assert_eq!(err.field(), Some(field), "{pointer} = {value}: {err}");
        assert_eq!(err.webhook_status(), 400);
    }
    // A deleted fork (head.repo null) is fine.
    let body = mutated("/pull_request/head/repo", Value::Null);
    let WebhookEvent::PullRequest(ev) = parse_event("pull_request", None, &body).unwrap() else {
        panic!()
    };
    assert!(ev.head_repo.is_none());
}

#[test]
fn malformed_json_is_400() {
    for body in [
        &b""[..],
        b"{",
        b"nul",
        b"{\"action\":\"opened\",}",
        b"\xff\xfe",
    ] {
        let err = parse_event("pull_request", Some("application/json"), body).unwrap_err();
        assert_eq!(err.webhook_status(), 400, "{body:?}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_input_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        event in "(ping|pull_request|push|[a-z_]{0,12}|.{0,8})",
        ct in proptest::option::of("(application/json|application/x-www-form-urlencoded|text/.{0,6}|.{0,10})"),
        sig in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
    ) {
        let v = WebhookVerifier::new(b"secret");
        let _ = v.verify(sig.as_deref(), &body);
        let _ = parse_event(&event, ct.as_deref(), &body);
    }

    #[test]
    fn mutated_real_payloads_never_panic(
        cut in 0usize..25_000,
        flips in proptest::collection::vec((0usize..25_000, any::<u8>()), 0..8),
    ) {
        let mut body = fixture("pull_request.synchronize.json");
        for (i, b) in flips {
            let n = body.len();
            body[i % n] = b;
        }
        body.truncate(cut.max(1));
        let _ = parse_event("pull_request", None, &body);
    }
}
