//! Preview isolation on the real engine: a preview cannot reach another preview's network, the
//! orchestrator's API or the Docker socket, and runs as non-root. The orchestrator runs as systemd
//! runs it, its secrets in its environment from an env file, and none of them, in any form we
//! produce (plain, percent-encoded, base64, git's extraHeader), reaches the processes it starts,
//! the containers' configuration and environment, their logs, the built images, the work dir
//! with the compose project's files, the nginx conf or the orchestrator's log files.

use std::time::Duration;

use preview_testkit::{docker, unique_suffix, wait_for_http};

use crate::e2e_support::{
    DaemonWorld, Tree, built_image_ids, descendants, files_under, find_secret,
};
use crate::harness::{SECRET, TOKEN};

const LIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The id of PR `pr`'s app container.
async fn app_container(world: &DaemonWorld, pr: u64) -> String {
    let out = docker([
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={}", world.id(pr)),
        "--filter",
        "label=com.docker.compose.service=app",
    ])
    .await
    .unwrap();
    let ids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one app container for PR {pr}: {out:?}");
    ids[0].to_owned()
}

async fn inspect(container: &str, format: &str) -> String {
    docker(["inspect", "--format", format, container])
        .await
        .unwrap()
        .trim()
        .to_owned()
}

/// Tries a TCP connection from inside `container` to each `host:port` (2 s each, in parallel);
/// returns `open` or `closed` for each, in order.
async fn reachable_from(container: &str, targets: &[String]) -> Vec<String> {
    const PROBE: &str = "import socket, sys\n\
        for target in sys.argv[1:]:\n\
        \x20   host, port = target.rsplit(':', 1)\n\
        \x20   try:\n\
        \x20       socket.create_connection((host, int(port)), timeout=2).close()\n\
        \x20       print('open')\n\
        \x20   except OSError:\n\
        \x20       print('closed')\n";
    let mut args = vec![
        "exec".to_owned(),
        container.to_owned(),
        "python3".into(),
        "-c".into(),
        PROBE.into(),
    ];
    args.extend(targets.iter().cloned());
    let out = docker(&args).await.unwrap();
    out.lines().map(str::to_owned).collect()
}

/// Every place a secret could land for PR `pr`, as (what, bytes).
async fn leak_surfaces(world: &DaemonWorld, pr: u64) -> Vec<(String, Vec<u8>)> {
    let id = world.id(pr);
    let mut found = Vec::new();
    let containers = docker([
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={id}"),
    ])
    .await
    .unwrap();
    for c in containers.split_whitespace() {
        // The whole configuration: environment, labels, command, mounts.
        let config = docker(["inspect", c]).await.unwrap();
        found.push((format!("docker inspect {c}"), config.into_bytes()));
        let logs = docker(["logs", c]).await.unwrap();
        found.push((format!("docker logs {c}"), logs.into_bytes()));
    }
    let images = built_image_ids(&id).await;
    for i in images.split_whitespace() {
        let config = docker(["image", "inspect", i]).await.unwrap();
        found.push((format!("docker image inspect {i}"), config.into_bytes()));
        let history = docker(["history", "--no-trunc", i]).await.unwrap();
        found.push((format!("docker history {i}"), history.into_bytes()));
    }
    for dir in [
        world.work(pr),
        world.nginx.conf_dir(),
        world.dir.path().join("logs"),
    ] {
        for (path, bytes) in files_under(&dir) {
            found.push((path.display().to_string(), bytes));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn previews_cannot_reach_each_other_the_orchestrator_or_docker_and_hold_no_secrets() {
    let github_token = format!("ghs_isolation_{}", unique_suffix());
    let world = DaemonWorld::new("isolation", &[("--github-token", github_token.clone())]).await;
    let secrets = [github_token.as_str(), SECRET, TOKEN];
    let daemon = world.start();
    // As under systemd: the secrets are in the daemon's environment, not on its command line.
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
    for secret in secrets {
        assert!(
            String::from_utf8_lossy(&environ).contains(secret),
            "the daemon's environment holds {secret:?}"
        );
    }
    assert_eq!(find_secret(&cmdline, &secrets), None, "no secret in argv");

    let (a_pr, b_pr) = (4, 5);
    let mut shas = Vec::new();
    for pr in [a_pr, b_pr] {
        // A build step of a few seconds, so the processes the daemon runs for it can be read.
        let tree = Tree::fixture("python-plain")
            .replace("python-plain ok", &format!("pr {pr}"))
            .with(
                "preview-config.yml",
                "build_commands:\n  - \"echo building && sleep 4\"\n",
            );
        let sha = world.origin.commit(pr, &tree, "isolated").await;
        world.send(&daemon, "opened", pr, &sha).await;
        shas.push(sha);
    }
    // Until both are live, read the environment and arguments of every process the daemon
    // started (git, docker, compose and their plugins): inherited secrets would show here.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + LIVE_TIMEOUT;
    loop {
        for (process, environ) in descendants(daemon.pid()) {
            let program = process.split_whitespace().nth(1).unwrap_or("").to_owned();
            // A child between fork and exec is still the daemon's image, with the daemon's own
            // environment (which holds the token by design); what it execs is read next round.
            if program.ends_with("/preview-orchestrator") {
                continue;
            }
            // git alone gets the token, as an extraHeader in its environment (never in argv).
            let is_git = program
                .rsplit('/')
                .next()
                .is_some_and(|p| p.starts_with("git"));
            let leak = find_secret(process.as_bytes(), &secrets)
                .or_else(|| (!is_git).then(|| find_secret(&environ, &secrets)).flatten());
            if let Some(leak) = leak {
                panic!("a secret ({leak:?}) reached the process {process}");
            }
            seen.insert(program);
        }
        let mut live = 0;
        for pr in [a_pr, b_pr] {
            if let Some(rec) = daemon.preview(&world.id(pr)).await {
                assert_ne!(rec["status"]["state"], "failed", "{rec}");
                live += usize::from(rec["status"]["state"] == "running");
            }
        }
        if live == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not live in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("processes read while deploying: {seen:?}");
    assert!(
        seen.iter().any(|p| p == "docker" || p.ends_with("/docker")),
        "the docker CLI was seen: {seen:?}"
    );
    for pr in [a_pr, b_pr] {
        let health = format!("{}health", world.path(pr));
        let live = wait_for_http(world.nginx.port(), &health, LIVE_TIMEOUT, |r| {
            r.status == 200
        })
        .await;
        assert_eq!(live.body, format!("pr {pr}\n"));
    }
    // The token from the env file is the one GitHub got.
    let bearer = format!("Bearer {github_token}");
    assert!(
        world
            .github
            .calls()
            .iter()
            .any(|c| c.authorization.as_deref() == Some(bearer.as_str())),
        "the fake GitHub saw the env file's token"
    );

    let a = app_container(&world, a_pr).await;
    let b = app_container(&world, b_pr).await;
    let ip = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
    let (a_ip, b_ip) = (inspect(&a, ip).await, inspect(&b, ip).await);
    let gateway = inspect(&a, "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}").await;
    assert!(!a_ip.is_empty() && !b_ip.is_empty() && !gateway.is_empty());

    // A listener on all of the host's addresses proves the probe can see the host at all; the
    // orchestrator listens on loopback only, so the same host is closed on its port.
    let host_listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let orchestrator_port = daemon.port();
    let probes = reachable_from(
        &a,
        &[
            format!("{a_ip}:8000"),
            format!("{gateway}:{host_port}"),
            format!("{b_ip}:8000"),
            format!("{gateway}:{orchestrator_port}"),
        ],
    )
    .await;
    assert_eq!(
        probes,
        ["open", "open", "closed", "closed"],
        "own app, a host port on all addresses, another preview, the orchestrator's API"
    );
    drop(host_listener);

    let checks = docker([
        "exec",
        &a,
        "python3",
        "-c",
        "import os; print(os.getuid(), os.path.exists('/var/run/docker.sock'), \
         os.path.exists('/run/docker.sock'))",
    ])
    .await
    .unwrap();
    let mut fields = checks.split_whitespace();
    assert_ne!(
        fields.next(),
        Some("0"),
        "the app runs as non-root: {checks}"
    );
    assert_eq!(
        fields.collect::<Vec<_>>(),
        ["False", "False"],
        "no Docker socket"
    );

    // No secret, in any form, where a preview or a person reading its files could find it.
    let mut read = 0;
    for pr in [a_pr, b_pr] {
        for (what, bytes) in leak_surfaces(&world, pr).await {
            if let Some(leak) = find_secret(&bytes, &secrets) {
                panic!("a secret ({leak:?}) in {what}");
            }
            read += 1;
        }
    }
    assert!(read > 20, "the leak surfaces were read ({read})");

    for (pr, sha) in [a_pr, b_pr].into_iter().zip(&shas) {
        world.close_and_check(&daemon, pr, sha).await;
    }
    daemon.stop().await;
}
