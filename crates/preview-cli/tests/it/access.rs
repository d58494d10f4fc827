//! `preview access` against the fake server: what travels over SSH (the token and a password
//! hash, on curl's stdin; never the password), and what the operator sees.

use std::process::Stdio;

use preview_core::access::PasswordHash;

use crate::harness::Bed;

const PASSWORD: &str = "correct horse battery staple";
const ANSWER: &str = r#"{"repo":"acme/api","public":false,"basicAuth":{"user":"reviewer"},"allow":["203.0.113.0/24"],"uncovered":["acme-api-pr-7"]}"#;

/// A bed with a server, whose orchestrator answers the access API with `ANSWER`.
async fn bed_with_server() -> Bed {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    std::fs::write(bed.path("rec/access-answer"), ANSWER).unwrap();
    bed
}

/// The stdin of the last recorded ssh call, and its argv line.
fn last_ssh(bed: &Bed) -> (String, String) {
    let mut names: Vec<_> = std::fs::read_dir(bed.path("rec/calls"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let last = names.last().unwrap();
    let n = last.file_name().unwrap().to_string_lossy().into_owned();
    let argv = std::fs::read_to_string(last).unwrap();
    assert!(argv.starts_with("ssh"), "{argv}");
    let stdin = std::fs::read_to_string(bed.path(&format!("rec/stdin/{n}"))).unwrap();
    (argv, stdin)
}

#[tokio::test(flavor = "multi_thread")]
async fn set_sends_only_a_hash_of_the_password_read_from_stdin() {
    let bed = bed_with_server().await;
    std::fs::write(bed.path("password"), format!("{PASSWORD}\n")).unwrap();
    let mut cmd = bed.preview(&[
        "access",
        "set",
        "acme/api",
        "--basic-auth",
        "reviewer",
        "--allow",
        "203.0.113.0/24",
    ]);
    cmd.stdin(Stdio::from(
        std::fs::File::open(bed.path("password")).unwrap(),
    ));
    let run = bed.run(cmd).await;
    run.ok();
    assert_eq!(
        run.stdout.trim(),
        "acme/api: previews need the password of user reviewer and a client in 203.0.113.0/24"
    );
    assert!(
        run.stderr.contains("acme-api-pr-7 predate access control"),
        "{run:?}"
    );

    let (argv, stdin) = last_ssh(&bed);
    assert!(argv.contains("-X PATCH"), "{argv}");
    assert!(argv.contains("/api/repos/acme/api/access"), "{argv}");
    assert!(argv.contains("-K -"), "the body comes from stdin: {argv}");
    assert!(
        stdin.contains(&format!("Bearer {}", bed.secret("api_token"))),
        "{stdin}"
    );
    // The hash sent is the password's: recomputed from its salt, it matches.
    let body = stdin
        .lines()
        .find_map(|l| l.strip_prefix("data-binary = "))
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&body[1..body.len() - 1].replace("\\\"", "\"")).unwrap();
    let hash = json["basicAuth"]["passwordHash"].as_str().unwrap();
    let salt = hash.split('$').nth(2).unwrap();
    assert_eq!(PasswordHash::new(PASSWORD, salt).unwrap().as_str(), hash);
    assert_eq!(json["allow"], serde_json::json!(["203.0.113.0/24"]));
    // The password is in no argv, environment or stdin that left this process.
    for dir in ["rec/calls", "rec/env", "rec/stdin"] {
        for entry in std::fs::read_dir(bed.path(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains(PASSWORD),
                "the password is in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn show_unset_and_refusals() {
    let bed = bed_with_server().await;
    let run = bed
        .run(bed.preview(&["access", "show", "acme/api", "--json"]))
        .await;
    run.ok();
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(shown["basicAuth"]["user"], "reviewer");
    let (argv, _) = last_ssh(&bed);
    assert!(
        argv.contains("GET") && argv.contains("/api/repos/acme/api/access"),
        "{argv}"
    );

    bed.run(bed.preview(&["access", "unset", "acme/api"]))
        .await
        .ok();
    let (argv, _) = last_ssh(&bed);
    assert!(
        argv.contains("DELETE"),
        "unset alone removes everything: {argv}"
    );
    bed.run(bed.preview(&["access", "unset", "acme/api", "--allow"]))
        .await
        .ok();
    let (argv, stdin) = last_ssh(&bed);
    assert!(argv.contains("PATCH"), "{argv}");
    assert!(
        stdin.contains(r#"data-binary = "{\"allow\":null}""#),
        "{stdin}"
    );

    // The server's refusal is shown as it says it.
    std::fs::write(
        bed.path("rec/access-answer"),
        r#"{"error":"repository acme/other is not in ALLOWED_REPOS"}"#,
    )
    .unwrap();
    std::fs::write(bed.path("rec/access-status"), "404").unwrap();
    let run = bed
        .run(bed.preview(&["access", "show", "acme/other"]))
        .await;
    run.failed();
    assert!(
        run.stderr
            .contains("repository acme/other is not in ALLOWED_REPOS (HTTP 404)"),
        "{run:?}"
    );

    // A short password (stdin is not a terminal here) is refused before any connection.
    let calls = bed.calls().len();
    std::fs::write(bed.path("password"), "short\n").unwrap();
    let mut cmd = bed.preview(&["access", "set", "acme/api", "--basic-auth", "reviewer"]);
    cmd.stdin(Stdio::from(
        std::fs::File::open(bed.path("password")).unwrap(),
    ));
    let run = bed.run(cmd).await;
    run.failed();
    assert!(
        run.stderr
            .contains("invalid password: must be at least 8 characters"),
        "{run:?}"
    );
    assert_eq!(bed.calls().len(), calls, "nothing was sent");
}
