//! What the operator sees when something is missing or wrong.

use crate::harness::Bed;

#[tokio::test(flavor = "multi_thread")]
async fn every_command_shows_an_example_in_its_help() {
    let bed = Bed::new().await;
    for command in ["init", "setup", "sync", "status", "destroy", "access"] {
        let run = bed.run(bed.preview(&[command, "--help"])).await;
        run.ok();
        assert!(
            run.stdout.contains("Example"),
            "{command} --help:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("preview {command}")),
            "{command}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_tool_says_what_to_install() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    std::fs::create_dir(bed.path("partial")).unwrap();
    for tool in ["ssh", "ansible-playbook"] {
        std::fs::copy(
            bed.path(&format!("bin/{tool}")),
            bed.path(&format!("partial/{tool}")),
        )
        .unwrap();
    }
    let mut cmd = bed.preview(&["setup", "--yes"]);
    cmd.env("PATH", bed.path("partial"));
    let run = bed.run(cmd).await;
    run.failed();
    assert!(
        run.stderr
            .contains("`terraform` is not on PATH: install Terraform"),
        "{run:?}"
    );
    assert_eq!(bed.call_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_names_the_key() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    let path = bed.pd("config.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("ttl_days:", "ttl_dayz:")).unwrap();
    let run = bed.run(bed.preview(&["status"])).await;
    run.failed();
    assert!(run.stderr.contains("ttl_dayz"), "{run:?}");
    std::fs::write(&path, text.replace("region: fra1", "region: mars1")).unwrap();
    let run = bed.run(bed.preview(&["status"])).await;
    run.failed();
    assert!(
        run.stderr.contains("digitalocean.region: \"mars1\""),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_error_names_the_host() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = bed.path("preview-orchestrator");
    let mut cmd = bed.preview(&["setup", "--yes", "--binary", binary.to_str().unwrap()]);
    cmd.env("GITHUB_API_URL", format!("http://127.0.0.1:{port}"));
    let run = bed.run(cmd).await;
    run.failed();
    assert!(
        run.stderr.contains("setup stopped in phase `webhooks`"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("cannot reach the GitHub API at 127.0.0.1:{port}")),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_secrets_missing_from_the_environment_and_differing_values() {
    let bed = Bed::new().await;
    let mut cmd = bed.preview(&["init", "--non-interactive", "--repo", "acme/api"]);
    cmd.env("PREVIEW_INFRA_DIR", bed.path("infra"));
    let run = bed.run(cmd).await;
    run.failed();
    assert!(
        run.stderr
            .contains("set PREVIEW_DO_TOKEN or DIGITALOCEAN_TOKEN"),
        "{run:?}"
    );
    assert!(!bed.pd("config.yml").exists());

    bed.init().await.ok();
    let mut cmd = bed.preview(&["init", "--non-interactive", "--repo", "acme/other"]);
    cmd.env("PREVIEW_INFRA_DIR", bed.path("infra"));
    let run = bed.run(cmd).await;
    run.failed();
    assert!(
        run.stderr.contains("github.repositories differs"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_force_overwrites_the_config_and_keeps_generated_secrets() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    let webhook_secret = bed.secret("webhook_secret");
    let mut cmd = bed.preview(&[
        "init",
        "--non-interactive",
        "--force",
        "--repo",
        "acme/other",
        "--ttl-days",
        "3",
    ]);
    cmd.env("PREVIEW_INFRA_DIR", bed.path("infra"));
    bed.run(cmd).await.ok();
    let config = std::fs::read_to_string(bed.pd("config.yml")).unwrap();
    assert!(
        config.contains("- acme/other") && !config.contains("acme/api"),
        "{config}"
    );
    assert!(config.contains("ttl_days: 3"), "{config}");
    assert_eq!(bed.secret("webhook_secret"), webhook_secret);
    assert_eq!(bed.secret("do_token"), crate::harness::DO_TOKEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_will_not_apply_unconfirmed_without_a_terminal() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    let run = bed.run(bed.preview(&["setup"])).await;
    run.failed();
    assert!(
        run.stderr.contains(
            "terraform would apply `Plan: 6 to add, 0 to change, 0 to destroy.`; pass --yes"
        ),
        "{run:?}"
    );
    assert!(
        !bed.calls()
            .iter()
            .any(|c| c.starts_with("terraform ⇥ apply"))
    );
    assert!(
        !bed.pd("terraform/preview.tfplan").exists(),
        "a declined plan (it holds the token) is not left on disk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_before_init_say_to_run_it() {
    let bed = Bed::new().await;
    for args in [
        &["setup", "--yes"][..],
        &["sync"],
        &["status"],
        &["destroy", "--yes"],
    ] {
        let command = args[0];
        let run = bed.run(bed.preview(args)).await;
        run.failed();
        assert!(
            run.stderr.contains("run `preview init` first"),
            "{command}: {run:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_json_prints_the_plan_or_an_error_object() {
    let bed = Bed::new().await;
    let apps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/apps");
    let ok = bed
        .run(bed.preview(&["plan", "--json", apps.join("flask").to_str().unwrap()]))
        .await;
    ok.ok();
    let plan: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(plan["language"], "python");
    assert_eq!(plan["framework"], "flask");
    assert_eq!(plan["dockerfile"], "generated");
    assert!(plan["reasons"].as_array().is_some_and(|r| !r.is_empty()));

    for (app, message) in [
        ("ruby-unsupported", "unsupported: ruby (found Gemfile)"),
        ("hostile-bad-keys", "preview-config.yml:2: key `app_prot`"),
    ] {
        let run = bed
            .run(bed.preview(&["plan", "--json", apps.join(app).to_str().unwrap()]))
            .await;
        assert_ne!(run.code, Some(0), "{app}: {run:?}");
        let error: serde_json::Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("{app}: not one JSON object ({e}): {run:?}"));
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{app}: {error}");
    }
}
