//! Crash: `kill -9` of the real `preview-orchestrator` binary while a preview builds on the real
//! engine (a private nginx, a fake GitHub, a local git origin), then a restart on the same store
//! and dirs. After reconcile and the resumed job, the preview either runs at the last sha and
//! answers through nginx, or nothing of it is left; never orphans. Covers a first deploy
//! (`opened`) and an update (`synchronize` of a running preview) in flight at the kill.
//!
//! The kill hits only the orchestrator's own process (as `kill -9 PID` does): the `docker
//! compose` it started may outlive it, and the test waits for every process it left in the work
//! dir to end before it judges the result.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use preview_core::id::{RepoFullName, RepoSlug};
use preview_github::fake::FakeGitHub;
use preview_testkit::{PrivateNginx, http_get, require_docker, unique_suffix, wait_for_http};
use serde_json::Value;

use crate::e2e_support::{OWNER, Origin, Tree, deliver_to, e2e_settings, eventually, leftovers};
use crate::harness::TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_preview-orchestrator");
const PR: u64 = 3;

/// The Python stdlib sample, answering `body`, with a build step that takes a few seconds (so the
/// kill lands mid-build) and names `body` (so the test knows whose build the log shows).
fn app(body: &str) -> Tree {
    Tree::fixture("python-plain")
        .replace("python-plain ok", body)
        .with(
            "preview-config.yml",
            format!("build_commands:\n  - \"echo building {body} && sleep 8\"\n"),
        )
}

/// A running orchestrator binary, SIGKILLed on drop; its log is printed if the test fails.
struct Daemon {
    child: Option<Child>,
    api: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- orchestrator log ({}):", self.api);
            for line in self.log.lock().unwrap().iter() {
                eprintln!("{line}");
            }
        }
    }
}

impl Daemon {
    /// Starts the binary with `args` and waits for its "listening" line.
    fn start(args: &[OsString]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(&args[1..])
            .env_clear()
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Docker's CLI finds the Compose plugin under $HOME and its daemon through DOCKER_HOST.
        for name in ["PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG"] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        let mut child = cmd.spawn().expect("start the orchestrator binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let keep = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                if !sent
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "orchestrator listening"
                {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        });
        let mut daemon = Self {
            child: Some(child),
            api: String::new(),
            log,
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the orchestrator binary starts listening");
        daemon.api = format!("http://{addr}");
        daemon
    }

    /// `kill -9`.
    fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and waits for a clean exit.
    async fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        preview_exec::Cmd::new("kill", "send SIGTERM to the orchestrator under test")
            .args(["-TERM", &child.id().to_string()])
            .run()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the orchestrator exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the orchestrator ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The preview's record with its ports, from the internal API.
    async fn preview(&self, id: &str) -> Option<Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/previews/{id}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        Some(resp.json().await.unwrap())
    }

    /// Waits until no job is queued or in progress for `id`; returns the record.
    async fn settled(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let rec = self.preview(id).await;
            let state = rec.as_ref().map(|r| r["status"]["state"].clone());
            match state.as_ref().and_then(Value::as_str) {
                Some("queued" | "building" | "starting") => {}
                _ => return rec.unwrap_or(Value::Null),
            }
            assert!(Instant::now() < deadline, "{id} still in progress: {rec:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Processes whose working directory lies under `dir` (a `docker compose` or `git` the killed
/// orchestrator started).
fn processes_under(dir: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(&dir)
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// One crash scenario's world: the dirs, nginx, fake GitHub and origin that survive the kill.
struct World {
    dir: tempfile::TempDir,
    nginx: PrivateNginx,
    github: FakeGitHub,
    repo: String,
    origin: Origin,
    args: Vec<OsString>,
    clock: u64,
}

impl World {
    async fn new(name: &str) -> Self {
        require_docker().await;
        let nginx = PrivateNginx::start().await;
        let github = FakeGitHub::start().await;
        let dir = tempfile::tempdir().unwrap();
        let repo = format!("{OWNER}/{name}-{}", unique_suffix());
        let origin = Origin::init(dir.path(), &repo).await;
        // One set of arguments for both lives, so the port pools stay the same.
        let args = e2e_settings(dir.path(), &nginx, &github, &[]);
        Self {
            dir,
            nginx,
            github,
            repo,
            origin,
            args,
            clock: 0,
        }
    }

    fn slug(&self) -> String {
        let repo = RepoFullName::parse(&self.repo).unwrap();
        RepoSlug::base_for(&repo).as_str().to_owned()
    }

    fn id(&self) -> String {
        format!("{}-pr-{PR}", self.slug())
    }

    fn path(&self) -> String {
        format!("/{}/pr-{PR}/", self.slug())
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("deployments").join(self.id())
    }

    async fn send(&mut self, daemon: &Daemon, action: &str, sha: &str) {
        self.clock += 1;
        let at = jiff::Timestamp::from_second(1_793_491_200 + 60 * self.clock as i64)
            .unwrap()
            .to_string();
        let (status, body) = deliver_to(&daemon.api, &self.repo, action, PR, sha, &at).await;
        assert_eq!(status, 202, "{action}: {body}");
    }

    /// Waits until the build of the commit answering `body` runs its slow step; fails at once,
    /// with the PR comment's log tail, if the deploy fails first.
    async fn wait_mid_build(&self, daemon: &Daemon, body: &str) {
        let log = self.work().join("logs/build.log");
        let needle = format!("building {body}");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.contains(&needle) && !l.contains("RUN"))
            {
                return;
            }
            if let Some(rec) = daemon.preview(&self.id()).await
                && rec["status"]["state"] == "failed"
            {
                panic!(
                    "the deploy failed before its slow build step: {rec}\ncomments: {:#?}",
                    self.github.comments()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the build of {body:?} did not reach its slow step; build.log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every process the killed orchestrator left in the work dir has ended.
    async fn wait_survivors_gone(&self) {
        let work = self.work();
        eventually(
            "the processes the killed orchestrator left to end",
            Duration::from_secs(300),
            || processes_under(&work).is_empty().then_some(()),
        )
        .await;
    }

    async fn leftovers(&self) -> Vec<String> {
        leftovers(
            &self.id(),
            &self.nginx.conf_dir(),
            &self.dir.path().join("deployments"),
        )
        .await
    }

    /// Waits until the build of `sha` (serving `body`) is under way, kills the orchestrator with
    /// SIGKILL, starts it again and checks the outcome the issue allows; returns the new daemon.
    async fn kill_mid_build_and_restart(
        &self,
        daemon: Daemon,
        sha: &str,
        body: &str,
        what: &str,
    ) -> Daemon {
        self.wait_mid_build(&daemon, body).await;
        daemon.kill9();
        eprintln!("survivors of the kill: {:?}", processes_under(&self.work()));
        let daemon = Daemon::start(&self.args);
        let live = self.assert_running_or_nothing(&daemon, sha, body).await;
        eprintln!(
            "{what}: after restart the preview is {}",
            if live { "live" } else { "gone" }
        );
        daemon
    }

    /// The outcome the issue allows: running at `sha` and answering `body` through nginx, with
    /// only the project's own objects; or nothing left at all. Returns which.
    async fn assert_running_or_nothing(&self, daemon: &Daemon, sha: &str, body: &str) -> bool {
        daemon.settled(&self.id()).await;
        // A compose process of the killed orchestrator may still be creating containers.
        self.wait_survivors_gone().await;
        let rec = daemon.settled(&self.id()).await;
        let state = rec["status"]["state"].as_str().unwrap_or("none").to_owned();
        if state == "running" {
            assert_eq!(rec["deployedSha"], sha, "{rec}");
            assert_eq!(rec["headSha"], sha, "{rec}");
            wait_for_http(
                self.nginx.port(),
                &self.path(),
                Duration::from_secs(30),
                |a| a.status == 200 && a.body == format!("{body}\n"),
            )
            .await;
            let port = rec["ports"]["app"]
                .as_u64()
                .expect("a running preview has ports");
            let direct = http_get(u16::try_from(port).unwrap(), "/").await.unwrap();
            assert_eq!(
                direct.body,
                format!("{body}\n"),
                "its allocated port serves it"
            );
            // One app container and one nginx conf (no staged or backup copy).
            let objects = self.leftovers().await;
            let count = |kind: &str| objects.iter().filter(|o| o.starts_with(kind)).count();
            assert_eq!(count("container "), 1, "{objects:?}");
            assert_eq!(count("nginx conf "), 1, "{objects:?}");
            true
        } else {
            eprintln!("{} ended {state}: {:#?}", self.id(), self.github.comments());
            assert_eq!(self.leftovers().await, Vec::<String>::new(), "{rec}");
            assert!(rec["ports"].is_null(), "ports released: {rec}");
            false
        }
    }

    /// Closes the PR and checks that nothing is left; then stops the daemon.
    async fn close_and_stop(&mut self, daemon: Daemon, sha: &str) {
        self.send(&daemon, "closed", sha).await;
        let rec = daemon.settled(&self.id()).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut rec = rec;
        while rec["status"]["state"] != "stopped" && rec["status"]["state"] != "failed" {
            assert!(Instant::now() < deadline, "not stopped: {rec}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            rec = daemon.preview(&self.id()).await.unwrap_or(Value::Null);
        }
        assert_eq!(self.leftovers().await, Vec::<String>::new());
        assert!(rec["ports"].is_null(), "{rec}");
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_first_build_then_restart_leaves_a_live_preview_or_nothing() {
    let mut world = World::new("crash-open").await;
    let body = format!("crash open {}", unique_suffix());
    let sha = world.origin.commit(PR, &app(&body), "first").await;

    let daemon = Daemon::start(&world.args);
    world.send(&daemon, "opened", &sha).await;
    let daemon = world
        .kill_mid_build_and_restart(daemon, &sha, &body, "crash mid first build")
        .await;
    world.close_and_stop(daemon, &sha).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_update_then_restart_leaves_a_live_preview_or_nothing() {
    let mut world = World::new("crash-sync").await;
    let first = format!("crash sync first {}", unique_suffix());
    let sha1 = world.origin.commit(PR, &app(&first), "first").await;
    let daemon = Daemon::start(&world.args);
    world.send(&daemon, "opened", &sha1).await;
    let rec = daemon.settled(&world.id()).await;
    assert_eq!(
        rec["status"]["state"],
        "running",
        "{rec}\ncomments: {:#?}",
        world.github.comments()
    );
    wait_for_http(
        world.nginx.port(),
        &world.path(),
        Duration::from_secs(30),
        |a| a.status == 200 && a.body == format!("{first}\n"),
    )
    .await;

    let second = format!("crash sync second {}", unique_suffix());
    let sha2 = world.origin.commit(PR, &app(&second), "second").await;
    world.send(&daemon, "synchronize", &sha2).await;
    let daemon = world
        .kill_mid_build_and_restart(daemon, &sha2, &second, "crash mid update")
        .await;
    world.close_and_stop(daemon, &sha2).await;
}
