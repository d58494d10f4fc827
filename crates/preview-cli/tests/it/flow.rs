//! init → setup (failing once in ansible, then resuming) → status → sync → destroy.

use crate::harness::{Bed, DO_TOKEN, GH_TOKEN, REPOS, SERVER_IP, mode};

#[tokio::test(flavor = "multi_thread")]
async fn init_setup_status_sync_destroy() {
    let bed = Bed::new().await;

    // init, non-interactive.
    let init = bed.init().await;
    init.ok();
    assert!(init.stdout.contains("Secrets stored in"), "{init:?}");
    assert!(init.stdout.contains("(file)"), "{init:?}");
    let config = std::fs::read_to_string(bed.pd("config.yml")).unwrap();
    insta::assert_snapshot!("config", bed.normalise(&config));
    assert_eq!(mode(&bed.pd("config.yml")), 0o600);
    assert_eq!(mode(&bed.pd("secrets.yml")), 0o600);
    assert_eq!(mode(&bed.pd("")), 0o700);
    let secrets = bed.all_secrets();
    assert_eq!(secrets[2].len(), 64, "generated webhook secret");
    assert_eq!(secrets[3].len(), 64, "generated API token");
    for secret in &secrets {
        assert!(
            !config.contains(secret.as_str()),
            "a secret leaked into config.yml"
        );
        assert!(!init.stdout.contains(secret.as_str()) && !init.stderr.contains(secret.as_str()));
    }

    // init again with the same values is a no-op.
    let again = bed.init().await;
    again.ok();
    assert!(again.stdout.contains("Already initialised"), "{again:?}");
    assert_eq!(
        bed.all_secrets(),
        secrets,
        "a re-run must keep the generated secrets"
    );

    // setup, with ansible failing once.
    std::fs::write(bed.path("rec/ansible-fail-next"), "").unwrap();
    let first = bed.setup().await;
    first.failed();
    assert!(
        first.stderr.contains("setup stopped in phase `ansible`"),
        "{first:?}"
    );
    let log_line = first
        .stderr
        .lines()
        .find(|l| l.contains("full log: "))
        .expect("the log path is printed on failure");
    let log_path = log_line.rsplit("full log: ").next().unwrap().trim();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("simulated failure"),
        "the log holds the tool output:\n{log}"
    );
    assert!(log.contains("Plan: 6 to add"), "{log}");
    let after_failure = bed.call_count();

    let second = bed.setup().await;
    second.ok();
    assert!(
        second
            .stderr
            .contains("✓ terraform: done by an earlier run"),
        "{second:?}"
    );
    assert!(
        second.stderr.contains("✓ ssh: done by an earlier run"),
        "{second:?}"
    );
    assert!(
        second
            .stdout
            .contains(&format!("Server {SERVER_IP} is ready")),
        "{second:?}"
    );
    let resumed: Vec<String> = bed.calls()[after_failure..].to_vec();
    assert!(
        resumed[0].starts_with("ansible-playbook"),
        "the second run starts at the failed phase: {resumed:#?}"
    );
    assert!(
        !resumed.iter().any(|c| c.starts_with("terraform")),
        "{resumed:#?}"
    );

    // Secrets reached terraform through its environment only.
    assert!(
        bed.terraform_plan_env()
            .contains(&format!("TF_VAR_do_token={DO_TOKEN}\n"))
    );
    assert_eq!(
        std::fs::read_to_string(bed.path("rec/tfvars.mode"))
            .unwrap()
            .trim(),
        "600"
    );
    // The saved plan holds the token: private while it exists, gone once applied.
    assert_eq!(
        std::fs::read_to_string(bed.path("rec/tfplan.mode"))
            .unwrap()
            .trim(),
        "600"
    );
    assert!(!bed.pd("terraform/preview.tfplan").exists());
    let tfvars = std::fs::read_to_string(bed.path("rec/tfvars.json")).unwrap();
    assert!(
        tfvars.contains("\"ssh_public_key\": \"ssh-ed25519 AAAA"),
        "{tfvars}"
    );
    assert!(tfvars.contains("\"worker_count\": 1"), "{tfvars}");
    // and reached Ansible through 0600 files, the secret one removed after the run.
    let files = std::fs::read_to_string(bed.path("rec/ansible-files")).unwrap();
    assert_eq!(
        files,
        "600 vars.yml\n600 secrets.yml\n600 vars.yml\n600 secrets.yml\n"
    );
    let ansible_secrets = std::fs::read_to_string(bed.path("rec/ansible-secrets.yml")).unwrap();
    assert!(ansible_secrets.contains(GH_TOKEN) && ansible_secrets.contains(&secrets[2]));
    assert!(
        !bed.pd("ansible/secrets.yml").exists(),
        "the ansible secrets file outlived the run"
    );
    let inventory = std::fs::read_to_string(bed.pd("ansible/inventory.yml")).unwrap();
    insta::assert_snapshot!("inventory", bed.normalise(&inventory));

    // Webhooks: created (the existing unrelated hook is left alone), then pinged.
    let requests = bed.github_requests().await;
    assert_eq!(
        requests,
        [
            "GET /repos/acme/api/hooks",
            "POST /repos/acme/api/hooks",
            "GET /repos/acme/web/hooks",
            "POST /repos/acme/web/hooks",
            "POST /repos/acme/api/hooks/101/pings",
            "POST /repos/acme/web/hooks/102/pings",
        ]
    );
    let received = bed.github.received_requests().await.unwrap();
    let created: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(created["events"], serde_json::json!(["pull_request"]));
    assert_eq!(created["config"]["content_type"], "json");
    assert_eq!(
        created["config"]["url"],
        format!("http://{SERVER_IP}/webhook/github")
    );
    assert_eq!(created["config"]["secret"], secrets[2].as_str());
    assert_eq!(
        received[1].headers.get("authorization").unwrap(),
        &format!("Bearer {GH_TOKEN}")
    );

    // status, as JSON and as a table.
    let before_status = bed.call_count();
    let status = bed.run(bed.preview(&["status", "--json"])).await;
    status.ok();
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["reachable"], true);
    assert_eq!(report["server"]["ip"], SERVER_IP);
    assert_eq!(report["health"]["version"], "0.1.0");
    assert_eq!(report["health"]["queue_depth"], 1);
    assert_eq!(report["previews"].as_array().unwrap().len(), 2);
    assert_eq!(report["previews"][0]["pr"], 7);
    assert_eq!(report["previews"][0]["app_port"], 8001);
    assert_eq!(report["previews"][0]["db_port"], 9001);
    assert_eq!(report["nodes"]["engine"], "compose");
    assert_eq!(
        report["nodes"]["nodes"][0]["free_memory_bytes"],
        2_952_790_016u64
    );
    let api_call = before_status + 1;
    assert!(
        bed.stdin_of(api_call)
            .contains(&format!("Authorization: Bearer {}", secrets[3])),
        "the API token travels on stdin"
    );
    let table = bed.run(bed.preview(&["status"])).await;
    table.ok();
    assert!(table.stdout.contains("Orchestrator 0.1.0 ok"), "{table:?}");
    assert!(table.stdout.contains("acme/api") && table.stdout.contains("app 8001, db 9001"));
    assert!(
        table.stdout.contains("NODE (compose)") && table.stdout.contains("2.8 GiB of 3.8 GiB"),
        "the node table: {table:?}"
    );
    // One preview, by repository and PR or by PR number alone: its services.
    for selector in ["acme/api#7", "7"] {
        let one = bed.run(bed.preview(&["status", selector])).await;
        one.ok();
        assert!(
            one.stdout.contains("acme-api-pr-7-migrate-1")
                && one.stdout.contains("done")
                && one.stdout.contains("Up 3 minutes (healthy)")
                && !one.stdout.contains("acme/web"),
            "{selector}: {one:?}"
        );
    }
    let one = bed
        .run(bed.preview(&["status", "acme-api-pr-7", "--json"]))
        .await;
    one.ok();
    let report: serde_json::Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(report["previews"].as_array().unwrap().len(), 1);
    assert_eq!(report["services"].as_array().unwrap().len(), 3);
    assert_eq!(report["services"][2]["exitCode"], 0);
    assert!(
        bed.stdin_of(bed.call_count() - 1)
            .contains(&format!("Authorization: Bearer {}", secrets[3])),
        "the API token travels on stdin"
    );
    // A preview that is not there is an error naming those that are.
    let missing = bed.run(bed.preview(&["status", "acme/api#8"])).await;
    missing.failed();
    assert!(
        missing
            .stderr
            .contains("no preview acme/api#8 on the server; there are: acme/api#7, acme/web#3"),
        "{missing:?}"
    );

    // sync.
    let sync = bed
        .run(bed.preview(&[
            "sync",
            "--binary",
            bed.path("preview-orchestrator").to_str().unwrap(),
            "--health-timeout",
            "5",
        ]))
        .await;
    sync.ok();
    assert!(
        sync.stdout.contains("Orchestrator 0.2.0 is live"),
        "{sync:?}"
    );

    // destroy.
    let destroy = bed.run(bed.preview(&["destroy", "--yes"])).await;
    destroy.ok();
    assert!(
        destroy
            .stderr
            .contains("✓ previews: 2 preview(s) torn down"),
        "{destroy:?}"
    );
    assert!(
        destroy.stderr.contains("✓ webhooks: 2 deleted"),
        "{destroy:?}"
    );
    assert!(!bed.pd("config.yml").exists());
    assert!(!bed.pd("secrets.yml").exists());
    assert!(!bed.pd("state.json").exists());
    let requests = bed.github_requests().await;
    assert_eq!(
        requests[requests.len() - 2..],
        [
            "DELETE /repos/acme/api/hooks/101",
            "DELETE /repos/acme/web/hooks/102"
        ]
    );

    // The exact calls, in order, and no secret in any argv.
    insta::assert_snapshot!("calls", bed.calls().join("\n"));
    let argv = bed.recorded_argv();
    for secret in &secrets {
        assert!(
            !argv.contains(secret.as_str()),
            "a secret appeared on a command line"
        );
    }
    for repo in REPOS {
        assert!(requests.iter().any(|r| r.contains(repo)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_rolls_back_when_the_new_version_is_not_healthy() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    std::fs::write(bed.path("rec/break-new-binary"), "").unwrap();
    let before = bed.call_count();
    let sync = bed
        .run(bed.preview(&[
            "sync",
            "--binary",
            bed.path("preview-orchestrator").to_str().unwrap(),
            "--health-timeout",
            "2",
        ]))
        .await;
    sync.failed();
    assert!(
        sync.stderr.contains("previous binary was restored"),
        "{sync:?}"
    );
    assert!(sync.stderr.contains("✓ rollback"), "{sync:?}");
    let calls = bed.calls()[before..].join("\n");
    assert!(
        calls.contains("cp -p /opt/preview-deployer/bin/preview-orchestrator.previous"),
        "{calls}"
    );
    assert_eq!(
        std::fs::read_to_string(bed.path("rec/server-version")).unwrap(),
        "0.1.0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_reports_every_step_and_keeps_config_when_one_fails() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    // GitHub now fails to delete hooks.
    bed.github.reset().await;
    wiremock::Mock::given(wiremock::matchers::method("DELETE"))
        .respond_with(
            wiremock::ResponseTemplate::new(500)
                .set_body_json(serde_json::json!({"message": "boom"})),
        )
        .mount(&bed.github)
        .await;
    let destroy = bed.run(bed.preview(&["destroy", "--yes"])).await;
    destroy.failed();
    assert!(destroy.stderr.contains("✓ previews"), "{destroy:?}");
    assert!(destroy.stderr.contains("✗ webhooks"), "{destroy:?}");
    assert!(
        destroy.stderr.contains("✓ terraform destroy"),
        "{destroy:?}"
    );
    assert!(
        destroy
            .stderr
            .contains("kept, because an earlier step failed"),
        "{destroy:?}"
    );
    assert!(
        destroy
            .stderr
            .contains("destroy did not complete: webhooks failed"),
        "{destroy:?}"
    );
    assert!(
        destroy
            .stderr
            .contains("answered 500 Internal Server Error: boom"),
        "{destroy:?}"
    );
    assert!(bed.pd("config.yml").exists() && bed.pd("secrets.yml").exists());
    let state = std::fs::read_to_string(bed.pd("state.json")).unwrap();
    assert!(
        state.contains("\"acme/api\": 101"),
        "the hooks stay recorded for a retry: {state}"
    );
}

/// `--secret-store auto` on this machine, for real (no mock): init probes the Secret Service and
/// the kernel keyring, says which store it took (falling back to the 0600 file with a warning
/// where neither works, as in containers), setup reads the tokens back in another process with
/// none in its environment, and destroy removes them.
#[tokio::test(flavor = "multi_thread")]
async fn auto_secret_store_falls_back_with_a_warning_and_round_trips() {
    let bed = Bed::new().await;
    auto_secret_store_round_trip(&bed).await;
}

/// The same with a real Secret Service: a private D-Bus session bus and gnome-keyring's secrets
/// component, unlocked with a throwaway password. `auto` takes it, no token is written to disk
/// in the clear, setup reads the tokens back from it, and destroy removes them.
#[tokio::test(flavor = "multi_thread")]
async fn auto_secret_store_takes_a_real_secret_service() {
    let mut bed = Bed::new().await;
    let bus = SessionBus::start(&bed).await;
    bed.env
        .push(("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone()));
    assert_eq!(auto_secret_store_round_trip(&bed).await, "secret-service");
    drop(bus);
}

/// A D-Bus session bus on a socket in the bed, with gnome-keyring's Secret Service on it.
/// Both daemons stop when it is dropped.
struct SessionBus {
    address: String,
    bus: std::process::Child,
}

impl SessionBus {
    async fn start(bed: &Bed) -> Self {
        let socket = bed.path("bus");
        let address = format!("unix:path={}", socket.display());
        let bus = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dbus-daemon (scripts/testbed.sh installs dbus)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(socket.exists(), "the session bus did not start");
        // `--unlock` reads the login keyring's password on stdin, creates it and unlocks it;
        // the daemon forks and serves org.freedesktop.secrets on the bus until the bus goes.
        preview_exec::Cmd::new(
            "gnome-keyring-daemon",
            "start a Secret Service for the test",
        )
        .args(["--unlock", "--components=secrets"])
        .env("HOME", bed.path("home"))
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .stdin_bytes(b"throwaway-password".to_vec())
        .daemonizes()
        .run()
        .await
        .expect("gnome-keyring-daemon (scripts/testbed.sh installs gnome-keyring)");
        // The forked daemon takes its bus name a moment later (on a busy machine, later than the
        // CLI looked for it, which then chose the file store): wait until the name has an owner.
        let owned = || {
            std::process::Command::new("dbus-send")
                .args([
                    &format!("--bus={address}"),
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .expect("dbus-send (scripts/testbed.sh installs dbus-bin)")
                .stdout
                .windows(12)
                .any(|w| w == b"boolean true")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !owned() {
            assert!(
                std::time::Instant::now() < deadline,
                "the Secret Service did not take its bus name in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { address, bus }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        // gnome-keyring-daemon exits when its bus goes away.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// init with `--secret-store auto`, setup and destroy, for real; returns the store init took.
async fn auto_secret_store_round_trip(bed: &Bed) -> &'static str {
    // A project name of its own: keychain entries are per user, shared with other runs.
    let project = format!("auto-{}-{}", std::process::id(), bed.dir.path().display())
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let project: String = project.trim_end_matches('-').chars().take(60).collect();
    let key = bed.path("home/.ssh/id_ed25519");
    let infra = bed.path("infra");
    let init_args = [
        "init",
        "--non-interactive",
        "--project",
        &project,
        "--secret-store",
        "auto",
        "--repo",
        REPOS[0],
        "--repo",
        REPOS[1],
        "--ssh-key",
        key.to_str().unwrap(),
        "--infra-dir",
        infra.to_str().unwrap(),
    ];
    let mut init = bed.preview(&init_args);
    init.env("DIGITALOCEAN_TOKEN", DO_TOKEN)
        .env("GITHUB_TOKEN", GH_TOKEN);
    let init = bed.run(init).await;
    init.ok();
    let config = std::fs::read_to_string(bed.pd("config.yml")).unwrap();
    let kind = ["secret-service", "keyutils", "file"]
        .into_iter()
        .find(|k| init.stdout.contains(&format!("({k})")))
        .unwrap_or_else(|| panic!("init does not say which store it used: {init:?}"));
    assert!(
        config.contains(&format!("secret_store: {kind}")),
        "{config}"
    );
    if kind == "file" {
        assert!(
            init.stderr
                .contains("warning: no OS keychain is available, so secrets are in"),
            "{init:?}"
        );
        assert!(
            init.stderr.contains("secret-service is not usable"),
            "{init:?}"
        );
        assert!(init.stderr.contains("keyutils is not usable"), "{init:?}");
        assert_eq!(mode(&bed.pd("secrets.yml")), 0o600);
    } else {
        assert!(!bed.pd("secrets.yml").exists(), "a keychain leaves no file");
    }

    // setup has no token in its environment: they come from the store init chose.
    bed.setup().await.ok();
    assert!(
        bed.terraform_plan_env()
            .contains(&format!("TF_VAR_do_token={DO_TOKEN}\n"))
    );
    let ansible_secrets = std::fs::read_to_string(bed.path("rec/ansible-secrets.yml")).unwrap();
    assert!(ansible_secrets.contains(GH_TOKEN));
    if kind != "file" {
        assert_eq!(
            files_containing(&bed.path("home"), DO_TOKEN),
            Vec::<std::path::PathBuf>::new(),
            "a keychain leaves no token in the clear"
        );
    }

    let destroy = bed.run(bed.preview(&["destroy", "--yes"])).await;
    destroy.ok();
    assert!(!bed.pd("secrets.yml").exists() && !bed.pd("config.yml").exists());
    // The entries are gone: a fresh init without the tokens in its environment has none to reuse.
    let again = bed.run(bed.preview(&init_args)).await;
    // Where keyutils refuses (containers deny its persistent keyring), its probe key stays in
    // the session keyring and the library cannot remove it; remove it here.
    let _ = preview_exec::Cmd::new("keyctl", "remove the keyutils probe key of this test")
        .args([
            "purge",
            "user",
            &format!("keyring:{project}:probe@preview-deployer"),
        ])
        .run()
        .await;
    again.failed();
    assert!(
        again.stderr.contains("the DigitalOcean token is missing"),
        "{again:?}"
    );
    kind
}

/// The files under `dir` that hold `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}
