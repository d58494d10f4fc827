//! The real binary, started as systemd starts it (settings in the environment, from an env
//! file): settings, SIGKILL during a burst of writes, SIGTERM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::e2e_support::{read_env_file, settings_as_env, write_env_file};
use crate::harness::{SECRET, TOKEN, args, pr_event, sha};

const BIN: &str = env!("CARGO_BIN_EXE_preview-orchestrator");

/// The binary as systemd starts it: no arguments, the harness's settings (secrets included) and
/// `extra` in its environment, read from an env file in `dir`.
fn command(dir: &std::path::Path, extra: &[&str]) -> Command {
    let env_file = dir.join("orchestrator.env");
    write_env_file(&env_file, &settings_as_env(&args(dir, extra)));
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs(read_env_file(&env_file))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the binary and waits for its "listening" log line; returns the child and address.
fn spawn(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = command(dir, extra)
        .spawn()
        .expect("start the orchestrator binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent
                && let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "orchestrator listening"
            {
                let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_owned());
                sent = true;
            }
        }
    });
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the orchestrator did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    (child, format!("http://{addr}"))
}

#[test]
fn help_lists_every_setting_with_its_env_name() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for env in [
        "GITHUB_TOKEN",
        "GITHUB_WEBHOOK_SECRET",
        "ALLOWED_REPOS",
        "PREVIEW_BASE_URL",
        "ORCHESTRATOR_PORT",
        "DEPLOYMENTS_DIR",
        "NGINX_CONFIG_DIR",
        "DEPLOYMENTS_DB",
        "CLEANUP_TTL_DAYS",
        "MAX_CONCURRENT_PREVIEWS",
        "IDLE_SLEEP_MINUTES",
        "IDLE_SLEEP_SECS",
        "MEMORY_RESERVE_MB",
        "MEMINFO_PATH",
        "MIN_FREE_DISK_GB",
        "DISK_GUARD_PATH",
        "ROOM_RETRY_SECS",
        "DATABASE_MODE",
        "SHARED_DATABASE_PROJECT",
        "SHARED_DATABASE_DIR",
        "SHARED_DATABASE_MEMORY_LIMIT",
        "SHARED_DATABASE_SUBNET",
        "LOG_LEVEL",
        "GITHUB_API_URL",
        "ORCHESTRATOR_API_TOKEN",
        "ORCHESTRATOR_BIND",
        "LOGS_DIR",
        "MAX_CONCURRENT_BUILDS",
        "GIT_TIMEOUT_SECS",
        "BUILD_TIMEOUT_SECS",
        "NGINX_TLS_LISTEN",
        "TLS_DIR",
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_DNS_ZONE",
        "ACME_DIRECTORY_URL",
        "ACME_EMAIL",
    ] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[default: /opt/preview-deployer/deployments.json]"));
    assert!(help.contains("[default: 127.0.0.1:3000"));
    assert!(!help.contains("dry-run"), "the benchmark mode stays hidden");
}

#[test]
fn a_missing_or_invalid_setting_is_one_line_naming_it() {
    let out = Command::new(BIN).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("missing setting") && err.contains("GITHUB_TOKEN"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path(), &["--app-port-range", "9100-9000"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("APP_PORT_RANGE"), "{err}");

    for (flag, value, setting) in [
        ("--preview-memory-limit", "lots", "PREVIEW_MEMORY_LIMIT"),
        ("--min-free-disk-gb", "nan", "MIN_FREE_DISK_GB"),
    ] {
        let out = command(dir.path(), &[flag, value]).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(setting), "{err}");
    }

    let out = command(dir.path(), &["--max-concurrent-builds", "zero"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--max-concurrent-builds"), "{err}");

    for domain in [
        "Preview.Example.com",
        "-bad.example.com",
        "a..b",
        "x.example.com/path",
    ] {
        let out = command(dir.path(), &["--preview-domain", domain])
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{domain}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("PREVIEW_DOMAIN"), "{err}");
    }
    let out = command(dir.path(), &["--nginx-listen", "80;include /etc/x"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("NGINX_LISTEN"), "{err}");
    let out = command(
        dir.path(),
        &["--nginx-tls-listen", "443 ssl;include /etc/x"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("NGINX_TLS_LISTEN"), "{err}");

    for (args, setting) in [
        (&["--database-mode", "pooled"][..], "DATABASE_MODE"),
        (
            &["--shared-database-subnet", "10.213.0.1/16"][..],
            "SHARED_DATABASE_SUBNET",
        ),
        (
            &["--shared-database-subnet", "10.213.0.0/28"][..],
            "SHARED_DATABASE_SUBNET",
        ),
        (
            &["--shared-database-project", "Shared DB"][..],
            "SHARED_DATABASE_PROJECT",
        ),
        (
            &["--shared-database-memory-limit", "1g; rm"][..],
            "SHARED_DATABASE_MEMORY_LIMIT",
        ),
        (&["--engine", "kubernetes"][..], "ENGINE"),
        (&["--engine", "swarm"][..], "SWARM_REGISTRY"),
        (
            &["--engine", "swarm", "--swarm-registry", "10.10.0.2"][..],
            "SWARM_REGISTRY",
        ),
        (
            &[
                "--engine",
                "swarm",
                "--swarm-registry",
                "10.10.0.2:5000",
                "--swarm-push-registry",
                "127.0.0.1:5000/x",
            ][..],
            "SWARM_PUSH_REGISTRY",
        ),
        (
            &[
                "--engine",
                "swarm",
                "--swarm-registry",
                "10.10.0.2:5000",
                "--database-mode",
                "shared",
            ][..],
            "DATABASE_MODE",
        ),
    ] {
        let out = command(dir.path(), args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(setting), "{args:?}: {err}");
    }
    let inside = dir.path().join("deployments").join("shared");
    let out = command(
        dir.path(),
        &["--shared-database-dir", inside.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("SHARED_DATABASE_DIR") && err.contains("outside DEPLOYMENTS_DIR"),
        "{err}"
    );
}

async fn sigterm(child: &Child) {
    preview_exec::Cmd::new("kill", "send SIGTERM to the orchestrator under test")
        .args(["-TERM", &child.id().to_string()])
        .run()
        .await
        .unwrap();
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the orchestrator did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn predecessor_env_names_and_a_toml_file_work() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("orchestrator.toml");
    std::fs::write(
        &toml,
        format!(
            "github_token = \"t\"\ngithub_webhook_secret = \"s\"\nallowed_repos = [\"a/b\", \"c/*\"]\n\
             api_token = \"{TOKEN}\"\nmax_concurrent_builds = 3\n"
        ),
    )
    .unwrap();
    let base_cmd = || {
        let mut c = Command::new(BIN);
        c.args(["--config", toml.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("PREVIEW_BASE_URL", "https://p.example")
            .env("ORCHESTRATOR_PORT", "0")
            .env("DEPLOYMENTS_DB", dir.path().join("d.json"))
            .env("LOGS_DIR", dir.path().join("logs"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // The environment beats the file.
    let out = base_cmd()
        .env("MAX_CONCURRENT_BUILDS", "zzz")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("--max-concurrent-builds"), "{err}");
    // File + predecessor env names start it; SIGTERM stops it cleanly.
    let mut child = base_cmd().spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let line = lines
        .find(|l| l.contains("orchestrator listening"))
        .expect("it starts");
    assert!(line.contains("127.0.0.1:"), "{line}");
    // SIGTERM at once: the handler is installed before the listening line is logged.
    sigterm(&child).await;
    let drain = std::thread::spawn(move || lines.collect::<Vec<_>>());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let rest = drain.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}\n{rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .collect();
    assert_eq!(logs.len(), 1, "one daily log file");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_setting = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown key `no_such_setting`"), "{err}");
}

struct KillOnDrop(Option<Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn previews(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{base}/api/previews"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["previews"].as_array().unwrap().clone()
}

/// SIGKILL during a burst of acknowledged writes; after a restart the store loads and holds every
/// acknowledged change (a PR's head is its last acknowledged sha, or the one in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acknowledged_change() {
    const PRS: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn(dir.path(), &["--dry-run-jobs"]);
    let mut guard = KillOnDrop(Some(child));
    let http = reqwest::Client::new();
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for lane in 0..16u64 {
        let (http, base, acked, stop) = (http.clone(), base.clone(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut k = 0u64;
            'outer: loop {
                for pr in (1..=PRS).filter(|p| p % 16 == lane) {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let action = if k == 0 { "opened" } else { "synchronize" };
                    let body = pr_event(action, pr, &sha(pr, k), None);
                    let sig = preview_github::sign(SECRET.as_bytes(), &body);
                    let r = http
                        .post(format!("{base}/webhook/github"))
                        .header("x-github-event", "pull_request")
                        .header("x-github-delivery", format!("crash-{pr}-{k}"))
                        .header("x-hub-signature-256", sig)
                        .body(body)
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status() == 202 => {
                            acked.lock().unwrap().insert(pr, k);
                        }
                        Ok(resp) => panic!("unexpected status {}", resp.status()),
                        Err(_) => break 'outer,
                    }
                }
                k += 1;
            }
        }));
    }
    // Kill it mid-burst, with requests in flight.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if acked.lock().unwrap().values().map(|k| k + 1).sum::<u64>() >= 1500 {
            break;
        }
    }
    let mut child = guard.0.take().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked_at_kill = acked.lock().unwrap().clone();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() == PRS as usize);

    // Restart on the same store: it loads, and resumes what was queued.
    let (child, base) = spawn(dir.path(), &["--dry-run-jobs"]);
    guard.0 = Some(child);
    let list = previews(&http, &base).await;
    assert_eq!(list.len(), PRS as usize);
    for p in &list {
        let pr = p["prNumber"].as_u64().unwrap();
        let k = acked[&pr];
        let head = p["headSha"].as_str().unwrap();
        assert!(
            head == sha(pr, k) || head == sha(pr, k + 1),
            "PR {pr}: store has {head}, last acknowledged {} (k={k}, at kill {:?})",
            sha(pr, k),
            acked_at_kill.get(&pr)
        );
    }
    // Everything ends running (benchmark-mode jobs), and SIGTERM stops it cleanly.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let list = previews(&http, &base).await;
            if list.iter().all(|p| p["status"]["state"] == "running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("resumed jobs finish");
    let mut child = guard.0.take().unwrap();
    sigterm(&child).await;
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    preview_orchestrator::store::load(&dir.path().join("deployments.json")).unwrap();
    eprintln!(
        "crash: {} acknowledged webhooks before SIGKILL",
        acked_at_kill.values().map(|k| k + 1).sum::<u64>()
    );
}
