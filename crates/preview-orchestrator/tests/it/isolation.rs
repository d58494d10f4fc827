//! Preview isolation on the real engine: a preview cannot reach another preview's network, the
//! orchestrator's API or the Docker socket, runs as non-root, and none of the orchestrator's
//! secrets reach its environment, its logs or its work dir.

use std::time::Duration;

use preview_testkit::{docker, unique_suffix, wait_for_http};

use crate::e2e_support::{E2e, Tree};
use crate::harness::{SECRET, TOKEN};

const LIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The id of PR `pr`'s app container.
async fn app_container(e2e: &E2e, pr: u64) -> String {
    let out = docker([
        "ps",
        "-q",
        "--filter",
        &format!("label=dev.preview-deployer.deployment={}", e2e.id(pr)),
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

#[tokio::test(flavor = "multi_thread")]
async fn previews_cannot_reach_each_other_the_orchestrator_or_docker_and_hold_no_secrets() {
    let github_token = format!("ghs_isolation_{}", unique_suffix());
    let e2e = E2e::start("isolation", &[("--github-token", github_token.clone())]).await;
    let (a_pr, b_pr) = (4, 5);
    for pr in [a_pr, b_pr] {
        let tree = Tree::fixture("python-plain").replace("python-plain ok", &format!("pr {pr}"));
        let sha = e2e.commit(pr, &tree, "isolated").await;
        e2e.send("opened", pr, &sha).await;
    }
    for pr in [a_pr, b_pr] {
        let health = format!("{}health", e2e.path(pr));
        let live =
            wait_for_http(e2e.nginx.port(), &health, LIVE_TIMEOUT, |r| r.status == 200).await;
        assert_eq!(live.body, format!("pr {pr}\n"));
    }
    let a = app_container(&e2e, a_pr).await;
    let b = app_container(&e2e, b_pr).await;
    let ip = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
    let (a_ip, b_ip) = (inspect(&a, ip).await, inspect(&b, ip).await);
    let gateway = inspect(&a, "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}").await;
    assert!(!a_ip.is_empty() && !b_ip.is_empty() && !gateway.is_empty());

    // A listener on all of the host's addresses proves the probe can see the host at all; the
    // orchestrator listens on loopback only, so the same host is closed on its port.
    let host_listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    let orchestrator_port = e2e.orch.addr().port();
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

    // No secret of the orchestrator in the container's environment, its logs or the work dir.
    let secrets = [github_token.as_str(), SECRET, TOKEN];
    let env = inspect(&a, "{{json .Config.Env}}").await;
    let logs = docker(["logs", &a]).await.unwrap();
    for secret in secrets {
        assert!(!env.contains(secret), "a secret in the environment: {env}");
        assert!(!logs.contains(secret), "a secret in the logs: {logs}");
    }
    let work = e2e
        .dir
        .path()
        .join("deployments")
        .join(e2e.id(a_pr).as_str());
    let mut stack = vec![work];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_symlink() {
                continue;
            } else if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                for secret in secrets {
                    assert!(!text.contains(secret), "a secret in {}", path.display());
                }
            }
        }
    }
    assert!(files > 5, "the work dir was read ({files} files)");

    for pr in [a_pr, b_pr] {
        let sha = e2e.record(pr).unwrap().head_sha.as_str().to_owned();
        e2e.send("closed", pr, &sha).await;
    }
    e2e.idle(Duration::from_secs(120)).await;
    for pr in [a_pr, b_pr] {
        e2e.assert_nothing_left(pr).await;
    }
    e2e.shutdown().await;
}
