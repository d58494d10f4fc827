//! `preview secrets`: the value reaches the server's curl on stdin only (never an argv, here or
//! there), list and unset speak to the API, and refusals are precise.

use std::process::Stdio;

use crate::harness::Bed;

/// The calls to ssh recorded after `from`, with their index.
fn ssh_calls_since(bed: &Bed, from: usize) -> Vec<(usize, String)> {
    bed.calls()
        .into_iter()
        .enumerate()
        .skip(from)
        .filter(|(_, c)| c.starts_with("ssh"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_list_unset_through_ssh_with_the_value_on_stdin_only() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    let token = bed.secret("api_token");
    let value = "sk_live_cli_0123456789 \"quoted\" \\ and more";
    let value_b64 = preview_core::render::compose::base64(value.as_bytes());

    // set, the value piped on stdin with a final newline (dropped).
    let before = bed.call_count();
    let value_file = bed.path("value.txt");
    std::fs::write(&value_file, format!("{value}\n")).unwrap();
    let mut cmd = bed.preview(&["secrets", "set", "acme/api", "STRIPE_KEY"]);
    cmd.stdin(Stdio::from(std::fs::File::open(&value_file).unwrap()));
    let set = bed.run(cmd).await;
    set.ok();
    assert!(
        set.stdout.contains("STRIPE_KEY set for acme/api"),
        "{set:?}"
    );
    let calls = ssh_calls_since(&bed, before);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (n, argv) = &calls[0];
    assert!(
        argv.contains("curl -sS") && argv.contains("-X PUT -w"),
        "{argv}"
    );
    assert!(
        argv.contains("/api/repos/acme/api/secrets/STRIPE_KEY?encoding=base64"),
        "{argv}"
    );
    let stdin = bed.stdin_of(*n);
    assert!(
        stdin.contains(&format!("Authorization: Bearer {token}")),
        "{stdin}"
    );
    assert!(
        stdin.contains(&format!("data-raw = \"{value_b64}\"")),
        "{stdin}"
    );
    // Neither the value (in any form) nor the token is on any command line.
    let everything = bed.recorded_argv();
    for secret in [value, value_b64.as_str(), "sk_live_cli", token.as_str()] {
        assert!(!everything.contains(secret), "{secret} on a command line");
    }
    assert!(!set.stdout.contains("sk_live") && !set.stderr.contains("sk_live"));

    // list, as text and JSON: names only.
    let list = bed.run(bed.preview(&["secrets", "list", "acme/api"])).await;
    list.ok();
    assert_eq!(list.stdout, "SENTRY_DSN\nSTRIPE_KEY\n");
    let json = bed
        .run(bed.preview(&["secrets", "list", "acme/api", "--json"]))
        .await;
    json.ok();
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        parsed["secrets"],
        serde_json::json!(["SENTRY_DSN", "STRIPE_KEY"])
    );
    assert_eq!(parsed["repo"], "acme/api");

    // unset.
    let unset = bed
        .run(bed.preview(&["secrets", "unset", "acme/api", "STRIPE_KEY"]))
        .await;
    unset.ok();
    assert!(
        unset.stdout.contains("STRIPE_KEY removed from acme/api"),
        "{unset:?}"
    );
    assert!(bed.calls().last().unwrap().contains("DELETE"));

    // The server's refusal, in its own words.
    let unknown = bed
        .run(bed.preview(&["secrets", "list", "stranger/repo"]))
        .await;
    unknown.failed();
    assert!(
        unknown
            .stderr
            .contains("unknown repository stranger/repo: it is not in ALLOWED_REPOS (HTTP 404)"),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_happen_before_the_server_is_contacted() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    let before = bed.call_count();

    // A value on the command line: refused, and not echoed.
    let argv_value = bed
        .run(bed.preview(&["secrets", "set", "acme/api", "STRIPE_KEY", "sk_live_typed"]))
        .await;
    argv_value.failed();
    assert!(
        argv_value
            .stderr
            .contains("takes no value on the command line"),
        "{argv_value:?}"
    );
    assert!(
        !argv_value.stderr.contains("sk_live_typed"),
        "{argv_value:?}"
    );

    // A bad or reserved name, a bad repository: clap says why.
    for (args, want) in [
        (
            vec!["secrets", "set", "acme/api", "MY-KEY"],
            "environment variable name",
        ),
        (
            vec!["secrets", "set", "acme/api", "PORT"],
            "the preview sets this variable itself",
        ),
        (
            vec!["secrets", "unset", "acme", "KEY"],
            "expected owner/name",
        ),
    ] {
        let run = bed.run(bed.preview(&args)).await;
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains(want), "{args:?}: {run:?}");
    }

    // An empty or oversized value on stdin.
    for (bytes, want) in [
        (b"\n".to_vec(), "it is empty"),
        (vec![b'x'; 70 * 1024], "more than 65536 bytes (64 KiB)"),
    ] {
        let file = bed.path("value.bin");
        std::fs::write(&file, &bytes).unwrap();
        let mut cmd = bed.preview(&["secrets", "set", "acme/api", "STRIPE_KEY"]);
        cmd.stdin(Stdio::from(std::fs::File::open(&file).unwrap()));
        let run = bed.run(cmd).await;
        run.failed();
        assert!(run.stderr.contains(want), "{run:?}");
    }
    assert_eq!(bed.call_count(), before, "nothing reached ssh");

    // --help teaches: where the value comes from, what a preview gets, examples.
    let help = bed.run(bed.preview(&["secrets", "--help"])).await;
    help.ok();
    for needle in [
        "only when its commit is trusted",
        "preview secrets set acme/api STRIPE_KEY",
        "never at build time",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {}", help.stdout);
    }
    let help = bed.run(bed.preview(&["secrets", "set", "--help"])).await;
    help.ok();
    assert!(
        help.stdout.contains("never taken from the command line"),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout.contains("[A-Za-z_][A-Za-z0-9_]*"),
        "{}",
        help.stdout
    );
}
