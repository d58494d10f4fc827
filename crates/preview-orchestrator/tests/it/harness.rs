//! Shared set-up: a recording job runner, an in-process orchestrator on a free loopback port,
//! and signed webhook deliveries built from the vendored real payloads.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preview_orchestrator::{
    BoxFuture, Config, DeployJob, DeploymentStatus, JobContext, JobError, JobRunner, Orchestrator,
    TeardownJob,
};
use serde_json::Value;

pub const SECRET: &str = "It's a Secret to Everybody";
pub const TOKEN: &str = "test-api-token-0123456789abcdef";
pub const REPO: &str = "Codertocat/Hello-World";
pub const ID2: &str = "codertocat-hello-world-pr-2";

/// A vendored payload from preview-github's fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../preview-github/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `pull_request` fixture for `action`, as JSON.
pub fn pr_payload(action: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("pull_request.{action}.json"))).unwrap()
}

/// A `pull_request` body for PR `number` at `sha`, with `updated_at` (None: null).
pub fn pr_event(action: &str, number: u64, sha: &str, updated_at: Option<&str>) -> Vec<u8> {
    let known = [
        "opened",
        "synchronize",
        "closed",
        "reopened",
        "ready_for_review",
        "labeled",
    ];
    let mut v = pr_payload(if known.contains(&action) {
        action
    } else {
        "opened"
    });
    v["action"] = action.into();
    v["number"] = number.into();
    v["pull_request"]["number"] = number.into();
    v["pull_request"]["head"]["sha"] = sha.into();
    v["pull_request"]["updated_at"] = updated_at.map_or(Value::Null, Value::from);
    serde_json::to_vec(&v).unwrap()
}

/// A 40-hex sha made from two numbers.
pub fn sha(a: u64, b: u64) -> String {
    format!("{a:020x}{b:020x}")
}

static PORT_BASE: AtomicU64 = AtomicU64::new(0);

/// Disjoint port ranges per test server, so parallel tests do not compete: 300 ports each (200
/// app, 100 db) from 20000-59899, taken in turn, so a range comes back only after 133 other
/// test servers (with 40 it came back while a long test still held it: two orchestrators gave
/// the same port to two previews, and the second could not start). The process id picks the
/// first, for two test processes run at once.
fn port_ranges() -> (String, String) {
    const SLOTS: u64 = 133;
    let n = PORT_BASE.fetch_add(1, Ordering::Relaxed);
    let slot = (u64::from(std::process::id()) + n) % SLOTS;
    let base = 20_000 + slot * 300;
    (
        format!("{}-{}", base, base + 199),
        format!("{}-{}", base + 200, base + 299),
    )
}

/// The arguments every test orchestrator gets; `extra` are appended.
pub fn args(dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let (app, db) = port_ranges();
    let mut v: Vec<OsString> = vec!["preview-orchestrator".into()];
    for (k, val) in [
        ("--github-token", "gh-test-token".to_owned()),
        ("--github-webhook-secret", SECRET.to_owned()),
        (
            "--allowed-repos",
            "codertocat/hello-world,octo-org/*".to_owned(),
        ),
        ("--preview-base-url", "https://previews.example".to_owned()),
        ("--api-token", TOKEN.to_owned()),
        ("--bind", "127.0.0.1:0".to_owned()),
        (
            "--deployments-db",
            dir.join("deployments.json").display().to_string(),
        ),
        (
            "--deployments-dir",
            dir.join("deployments").display().to_string(),
        ),
        ("--logs-dir", dir.join("logs").display().to_string()),
        ("--app-port-range", app),
        ("--db-port-range", db),
        ("--shutdown-grace-secs", "5".to_owned()),
        // Storms run 50+ PRs at once; tests of the cap (cap.rs) set their own.
        ("--max-concurrent-previews", "1000".to_owned()),
    ] {
        v.push(k.into());
        v.push(val.into());
    }
    v.extend(extra.iter().map(OsString::from));
    v
}

/// What the recording runner saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: &'static str,
    pub id: String,
    pub sha: Option<String>,
    pub outcome: &'static str,
}

/// A job runner that records calls, sleeps a little (checking for cancellation), takes ports and
/// walks the statuses like the runtime will. It flags two jobs of one lane running at once.
pub struct RecordingRunner {
    pub delay: Mutex<Duration>,
    pub calls: Mutex<Vec<Call>>,
    running_ids: Mutex<HashSet<String>>,
    pub lane_overlap: AtomicUsize,
    deploys_now: AtomicUsize,
    pub max_parallel_deploys: AtomicUsize,
    pub started: AtomicUsize,
    /// Deploys of this sha fail.
    pub fail_sha: Mutex<Option<String>>,
    /// Deploys of this sha panic while building.
    pub panic_sha: Mutex<Option<String>>,
    /// Ignore cancellation (to test that stale writes are dropped).
    pub stubborn: std::sync::atomic::AtomicBool,
}

impl RecordingRunner {
    pub fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay: Mutex::new(delay),
            calls: Mutex::new(Vec::new()),
            running_ids: Mutex::new(HashSet::new()),
            lane_overlap: AtomicUsize::new(0),
            deploys_now: AtomicUsize::new(0),
            max_parallel_deploys: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            fail_sha: Mutex::new(None),
            panic_sha: Mutex::new(None),
            stubborn: Default::default(),
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn enter(&self, id: &str) {
        if !self.running_ids.lock().unwrap().insert(id.to_owned()) {
            self.lane_overlap.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn leave(&self, id: &str) {
        self.running_ids.lock().unwrap().remove(id);
    }

    async fn pause(&self, ctx: &JobContext) -> Result<(), JobError> {
        let total = *self.delay.lock().unwrap();
        let step = Duration::from_millis(2);
        let mut slept = Duration::ZERO;
        while slept < total {
            if !self.stubborn.load(Ordering::SeqCst) {
                ctx.checkpoint()?;
            }
            tokio::time::sleep(step.min(total - slept)).await;
            slept += step;
        }
        if self.stubborn.load(Ordering::SeqCst) {
            Ok(())
        } else {
            ctx.checkpoint()
        }
    }

    async fn do_deploy(&self, job: &DeployJob, ctx: &JobContext) -> Result<(), JobError> {
        ctx.set_status(DeploymentStatus::Building).await?;
        if self.panic_sha.lock().unwrap().as_deref() == Some(job.sha.as_str()) {
            panic!("a runner bug at {}", job.sha);
        }
        self.pause(ctx).await?;
        let ports = ctx.allocate_ports(false, &BTreeSet::new()).await?;
        assert!(ports.app > 0);
        if self.fail_sha.lock().unwrap().as_deref() == Some(job.sha.as_str()) {
            return Err(JobError::failed("build", "exit status 1"));
        }
        ctx.set_status(DeploymentStatus::Starting).await?;
        self.pause(ctx).await?;
        ctx.update(|r| r.framework = Some("recording".into()))
            .await?;
        Ok(())
    }
}

impl JobRunner for RecordingRunner {
    fn deploy(&self, job: DeployJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            self.enter(job.id.as_str());
            let now = self.deploys_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_parallel_deploys.fetch_max(now, Ordering::SeqCst);
            let r = self.do_deploy(&job, &ctx).await;
            self.deploys_now.fetch_sub(1, Ordering::SeqCst);
            self.leave(job.id.as_str());
            self.calls.lock().unwrap().push(Call {
                kind: "deploy",
                id: job.id.to_string(),
                sha: Some(job.sha.to_string()),
                outcome: match &r {
                    Ok(()) => "ok",
                    Err(JobError::Cancelled) => "cancelled",
                    Err(_) => "failed",
                },
            });
            r
        })
    }

    fn teardown(&self, job: TeardownJob, ctx: JobContext) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.enter(job.id.as_str());
            let _ = self.pause(&ctx).await;
            self.leave(job.id.as_str());
            self.calls.lock().unwrap().push(Call {
                kind: "teardown",
                id: job.id.to_string(),
                sha: None,
                outcome: "ok",
            });
            Ok(())
        })
    }
}

/// An in-process orchestrator and a client for it.
pub struct TestServer {
    pub orch: Option<Orchestrator>,
    pub runner: Arc<RecordingRunner>,
    pub http: reqwest::Client,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(delay: Duration, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, RecordingRunner::new(delay), extra).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        runner: Arc<RecordingRunner>,
        extra: &[&str],
    ) -> Self {
        let config = Config::load(args(dir.path(), extra)).unwrap();
        let orch = Orchestrator::start(config, runner.clone()).await.unwrap();
        let base = format!("http://{}", orch.addr());
        Self {
            orch: Some(orch),
            runner,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            base,
            dir,
        }
    }

    pub fn orch(&self) -> &Orchestrator {
        self.orch.as_ref().unwrap()
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("deployments.json")
    }

    /// A signed `pull_request` delivery for PR `number` at `sha`, with a new delivery id.
    pub async fn pull_request(&self, action: &str, number: u64, sha: &str) -> (u16, Value) {
        self.deliver(
            "pull_request",
            &pr_event(action, number, sha, None),
            &delivery(),
        )
        .await
    }

    /// POSTs a signed delivery; returns the status and the JSON answer.
    pub async fn deliver(&self, event: &str, body: &[u8], delivery: &str) -> (u16, Value) {
        let sig = preview_github::sign(SECRET.as_bytes(), body);
        self.post_webhook(
            "/webhook/github",
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await
    }

    pub async fn post_webhook(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn api(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn idle(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.orch().scheduler().wait_idle())
            .await
            .expect("the queue drains");
    }

    pub async fn stop(mut self) -> (tempfile::TempDir, Arc<RecordingRunner>) {
        if let Some(o) = self.orch.take() {
            o.shutdown().await;
        }
        (self.dir, self.runner)
    }
}

/// A fresh delivery id.
pub fn delivery() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "72d3162e-cc78-11e3-81ab-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}
