//! Shared set-up for tests of the whole loop on the real engine: a local git origin that serves
//! `refs/pull/{N}/head`, an in-process orchestrator running the real [`DockerRunner`] against a
//! private nginx and a fake GitHub, signed webhook deliveries, and the check that a preview left
//! nothing behind (Docker objects, nginx conf, work dir, ports).
//!
//! Each [`E2e`] gets its own repository name (`octo-org/{name}-{unique}`), so its Docker objects
//! never collide with another test's, in this process or another one.

// Shared by several test modules; not each uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use preview_core::id::{PreviewId, RepoFullName, RepoSlug};
use preview_exec::Cmd;
use preview_github::fake::{FakeComment, FakeGitHub};
use preview_orchestrator::deploy::DockerRunner;
use preview_orchestrator::{Config, DeploymentRecord, DeploymentStatus, Orchestrator};
use preview_testkit::{
    PrivateNginx, docker, docker_objects_with_label, nginx_binary, repo_root, require_docker,
    unique_suffix,
};
use serde_json::Value;

use crate::harness::{SECRET, args, delivery, pr_payload};

/// The owner of every e2e repository; the harness's allowlist holds `octo-org/*`.
pub const OWNER: &str = "octo-org";

/// Runs `git ARGS` in `dir` with a fixed identity; returns trimmed stdout. Panics on failure.
pub async fn git(dir: &Path, args: &[&str]) -> String {
    Cmd::new("git", "prepare the test origin")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .run()
        .await
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"))
        .stdout_text()
        .trim()
        .to_owned()
}

/// The files of an app: path relative to the repository root → contents.
#[derive(Debug, Clone, Default)]
pub struct Tree(pub BTreeMap<String, Vec<u8>>);

impl Tree {
    /// The sample app `fixtures/apps/{name}`.
    pub fn fixture(name: &str) -> Self {
        Self::dir(&repo_root().join("fixtures/apps").join(name))
    }

    /// Every file under `root`; symlinks are left out.
    pub fn dir(root: &Path) -> Self {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.unwrap().path();
                if path.is_symlink() {
                    continue;
                }
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(root, root, &mut files);
        assert!(!files.is_empty(), "{} holds no files", root.display());
        Self(files)
    }

    /// Adds or replaces the file at `path`.
    pub fn with(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.0.insert(path.to_owned(), contents.into());
        self
    }

    /// Removes the file at `path`.
    pub fn without(mut self, path: &str) -> Self {
        self.0.remove(path);
        self
    }

    /// Replaces `from` with `to` in every UTF-8 file; panics if `from` occurs nowhere.
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        let mut hits = 0;
        for contents in self.0.values_mut() {
            if let Ok(text) = std::str::from_utf8(contents)
                && text.contains(from)
            {
                *contents = text.replace(from, to).into_bytes();
                hits += 1;
            }
        }
        assert!(hits > 0, "{from:?} occurs in no file of the tree");
        self
    }
}

/// A local origin at `{root}/git/{owner}/{name}.git`, served to the orchestrator through
/// `--git-base-url file://{root}/git`.
pub struct Origin {
    /// The repository (a work tree; git serves it like a bare one).
    pub path: PathBuf,
}

impl Origin {
    /// Creates an empty repository for `repo` (`owner/name`) under `{root}/git`.
    pub async fn init(root: &Path, repo: &str) -> Self {
        let path = root.join("git").join(format!("{repo}.git"));
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "--quiet", "-b", "main"]).await;
        Self { path }
    }

    /// Makes the work tree exactly `tree`, commits it, points `refs/pull/{pr}/head` at the
    /// commit and returns its sha.
    pub async fn commit(&self, pr: u64, tree: &Tree, message: &str) -> String {
        for entry in std::fs::read_dir(&self.path).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (rel, contents) in &tree.0 {
            let path = self.path.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        }
        git(&self.path, &["add", "--all", "."]).await;
        git(
            &self.path,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        )
        .await;
        let sha = git(&self.path, &["rev-parse", "HEAD"]).await;
        git(
            &self.path,
            &["update-ref", &format!("refs/pull/{pr}/head"), &sha],
        )
        .await;
        sha
    }
}

/// The domain of the hostname-mode tests; nothing resolves it, requests carry it as `Host`.
pub const PREVIEW_DOMAIN: &str = "preview.test";

/// The harness's arguments with `overrides` replacing or adding settings (`--flag`, value).
pub fn settings(dir: &Path, overrides: &[(&str, String)]) -> Vec<OsString> {
    let base = args(dir, &[]);
    let mut out: Vec<OsString> = vec![base[0].clone()];
    for pair in base[1..].chunks(2) {
        if !overrides.iter().any(|(k, _)| pair[0] == *k) {
            out.extend_from_slice(pair);
        }
    }
    for (k, v) in overrides {
        out.push(k.into());
        out.push(v.into());
    }
    out
}

/// The settings that point an orchestrator in `dir` at `nginx`, `github` and the origins under
/// `{dir}/git`; health waits up to 120 s (cold builds on 2 busy cores). `overrides` come last.
pub fn e2e_settings(
    dir: &Path,
    nginx: &PrivateNginx,
    github: &FakeGitHub,
    overrides: &[(&str, String)],
) -> Vec<OsString> {
    let nginx_cmd = |extra: &str| {
        format!(
            "{} -p {} -c {} {extra}",
            nginx_binary(),
            nginx.prefix().display(),
            nginx.conf_file().display()
        )
    };
    let mut all: Vec<(&str, String)> = vec![
        ("--github-api-url", github.url()),
        (
            "--preview-base-url",
            format!("http://127.0.0.1:{}", nginx.port()),
        ),
        ("--nginx-config-dir", nginx.conf_dir().display().to_string()),
        ("--nginx-test-command", nginx_cmd("-t")),
        ("--nginx-reload-command", nginx_cmd("-s reload")),
        (
            "--git-base-url",
            format!("file://{}", dir.join("git").display()),
        ),
        ("--health-timeout-secs", "120".into()),
        // Hermetic: a certificate on this machine must not switch the test to HTTPS.
        ("--tls-dir", dir.join("tls").display().to_string()),
    ];
    for (k, v) in overrides {
        all.retain(|(key, _)| key != k);
        all.push((k, v.clone()));
    }
    settings(dir, &all)
}

/// A signed `pull_request` delivery of `action` for `repo` (`owner/name`) PR `pr` at `sha`,
/// POSTed to the orchestrator at `api`. Returns the status and the JSON answer.
pub async fn deliver_to(
    api: &str,
    repo: &str,
    action: &str,
    pr: u64,
    sha: &str,
    updated_at: &str,
) -> (u16, Value) {
    let body = pr_event_for(repo, action, pr, sha, updated_at);
    let sig = preview_github::sign(SECRET.as_bytes(), &body);
    let resp = reqwest::Client::new()
        .post(format!("{api}/webhook/github"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", delivery())
        .header("x-hub-signature-256", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A real `pull_request` payload moved to `repo` (base, head and repository).
pub fn pr_event_for(repo: &str, action: &str, pr: u64, sha: &str, updated_at: &str) -> Vec<u8> {
    let (owner, name) = repo.split_once('/').expect("owner/name");
    let known = ["opened", "synchronize", "closed", "reopened"];
    let mut v = pr_payload(if known.contains(&action) {
        action
    } else {
        "opened"
    });
    v["action"] = action.into();
    v["number"] = pr.into();
    v["pull_request"]["number"] = pr.into();
    v["pull_request"]["head"]["sha"] = sha.into();
    v["pull_request"]["updated_at"] = updated_at.into();
    for pointer in [
        "/repository",
        "/pull_request/head/repo",
        "/pull_request/base/repo",
    ] {
        let r = v
            .pointer_mut(pointer)
            .expect("the fixture has the repository");
        r["name"] = name.into();
        r["full_name"] = repo.into();
        r["owner"]["login"] = owner.into();
        r["clone_url"] = format!("https://github.com/{repo}.git").into();
    }
    serde_json::to_vec(&v).unwrap()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the images built for preview `id` (named `{id}-{service}`), one a line.
pub async fn built_image_ids(id: &str) -> String {
    docker([
        "image",
        "ls",
        "-q",
        "--filter",
        &format!("reference={id}-*"),
    ])
    .await
    .expect("listing images")
}

/// What a preview may leave on this host, as readable lines; empty when nothing is left:
/// containers, networks and volumes labelled with `id`, images built for it, its nginx conf
/// (and staged or backup copies) and its work dir.
pub async fn leftovers(id: &str, nginx_conf_dir: &Path, deployments_dir: &Path) -> Vec<String> {
    let mut left =
        docker_objects_with_label(&format!("dev.preview-deployer.deployment={id}")).await;
    let reference = format!("reference={id}-*");
    let images = docker([
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        &reference,
    ])
    .await
    .expect("listing images");
    left.extend(images.lines().map(|i| format!("image {i}")));
    for entry in std::fs::read_dir(nginx_conf_dir).into_iter().flatten() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{id}.")) {
            left.push(format!("nginx conf {name}"));
        }
    }
    let work = deployments_dir.join(id);
    if work.exists() {
        left.push(format!("work dir {}", work.display()));
    }
    left
}

/// One in-process orchestrator with the real runtime, its private nginx, fake GitHub and origin.
pub struct E2e {
    /// Holds the store, work dirs, logs and origins; removed on drop.
    pub dir: tempfile::TempDir,
    pub nginx: PrivateNginx,
    pub github: FakeGitHub,
    /// `owner/name`.
    pub repo: String,
    pub origin: Origin,
    pub orch: Orchestrator,
    pub runner: Arc<DockerRunner>,
    /// `http://{orchestrator}`.
    pub api: String,
    /// Minutes added to a fixed date for each delivery's `updated_at`, so each is newer.
    clock: AtomicU64,
    _left_by_a_failure: RemovedOnPanic,
}

/// `overrides` after the settings that give each preview its own hostname under
/// [`PREVIEW_DOMAIN`], served by `nginx`.
fn with_hostnames<'a>(
    nginx: &PrivateNginx,
    overrides: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut all = vec![
        ("--preview-domain", PREVIEW_DOMAIN.to_owned()),
        ("--nginx-listen", format!("127.0.0.1:{}", nginx.port())),
    ];
    all.extend(overrides.iter().map(|(k, v)| (*k, v.clone())));
    all
}

impl E2e {
    /// Starts everything for a new repository `octo-org/{name}-{unique}`; `overrides` replace
    /// settings (e.g. `("--health-timeout-secs", "5".into())`). Fails loudly without Docker.
    pub async fn start(name: &str, overrides: &[(&str, String)]) -> Self {
        require_docker().await;
        Self::start_on(PrivateNginx::start().await, name, overrides).await
    }

    /// [`E2e::start`] with each preview at its own hostname under [`PREVIEW_DOMAIN`].
    pub async fn start_with_hostnames(name: &str, overrides: &[(&str, String)]) -> Self {
        require_docker().await;
        let nginx = PrivateNginx::start_with_hostnames().await;
        let all = with_hostnames(&nginx, overrides);
        Self::start_on(nginx, name, &all).await
    }

    async fn start_on(nginx: PrivateNginx, name: &str, overrides: &[(&str, String)]) -> Self {
        let github = FakeGitHub::start().await;
        let dir = tempfile::tempdir().unwrap();
        let repo = format!("{OWNER}/{name}-{}", unique_suffix());
        let origin = Origin::init(dir.path(), &repo).await;
        let config = Config::load(e2e_settings(dir.path(), &nginx, &github, overrides)).unwrap();
        let (orch, runner) = start_orchestrator(config).await;
        Self {
            _left_by_a_failure: RemovedOnPanic::for_repo(&repo),
            api: format!("http://{}", orch.addr()),
            dir,
            nginx,
            github,
            repo,
            origin,
            orch,
            runner,
            clock: AtomicU64::new(0),
        }
    }

    /// The preview id of PR `pr`.
    pub fn id(&self, pr: u64) -> PreviewId {
        let repo = RepoFullName::parse(&self.repo).unwrap();
        PreviewId::parse(&format!("{}-pr-{pr}", RepoSlug::base_for(&repo).as_str())).unwrap()
    }

    /// The route of PR `pr` on nginx: `/{slug}/pr-{N}/`.
    pub fn path(&self, pr: u64) -> String {
        let repo = RepoFullName::parse(&self.repo).unwrap();
        format!("/{}/pr-{pr}/", RepoSlug::base_for(&repo).as_str())
    }

    /// The public URL of PR `pr`.
    pub fn url(&self, pr: u64) -> String {
        format!("http://127.0.0.1:{}{}", self.nginx.port(), self.path(pr))
    }

    /// Commits `tree` to the origin as PR `pr`'s head; returns the sha.
    pub async fn commit(&self, pr: u64, tree: &Tree, message: &str) -> String {
        self.origin.commit(pr, tree, message).await
    }

    /// Delivers a signed `action` for PR `pr` at `sha`, each newer than the last.
    pub async fn deliver(&self, action: &str, pr: u64, sha: &str) -> (u16, Value) {
        let minutes = self.clock.fetch_add(1, Ordering::Relaxed);
        let at = jiff::Timestamp::from_second(1_793_491_200 + 60 * minutes as i64)
            .unwrap()
            .to_string();
        deliver_to(&self.api, &self.repo, action, pr, sha, &at).await
    }

    /// Delivers and asserts the delivery was accepted (202).
    pub async fn send(&self, action: &str, pr: u64, sha: &str) {
        let (status, body) = self.deliver(action, pr, sha).await;
        assert_eq!(status, 202, "{action} for PR {pr}: {body}");
    }

    /// The store's record of PR `pr`.
    pub fn record(&self, pr: u64) -> Option<DeploymentRecord> {
        self.orch.store().get(&self.id(pr))
    }

    /// Waits until PR `pr`'s record has `status`; returns it.
    pub async fn wait_status(
        &self,
        pr: u64,
        status: DeploymentStatus,
        timeout: Duration,
    ) -> DeploymentRecord {
        eventually(&format!("PR {pr} to be {status:?}"), timeout, || {
            self.record(pr).filter(|r| r.status == status)
        })
        .await
    }

    /// Asks the internal API to put preview `id` to sleep now; the answer's status and body.
    pub async fn ask_to_sleep(&self, id: &str) -> (u16, String) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/previews/{id}/sleep", self.api))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Waits until PR `pr` runs commit `sha`.
    pub async fn wait_running_at(&self, pr: u64, sha: &str, timeout: Duration) {
        eventually(&format!("PR {pr} to run {sha}"), timeout, || {
            self.record(pr).filter(|r| {
                r.status == DeploymentStatus::Running
                    && r.deployed_sha.as_ref().is_some_and(|s| s.as_str() == sha)
            })
        })
        .await;
    }

    /// Waits until PR `pr`'s record has failed; returns the reason (`phase: message`).
    pub async fn wait_failed(&self, pr: u64, timeout: Duration) -> String {
        eventually(&format!("PR {pr} to fail"), timeout, || {
            match self.record(pr).map(|r| r.status) {
                Some(DeploymentStatus::Failed { reason }) => Some(reason),
                _ => None,
            }
        })
        .await
    }

    /// Waits until the job queue is idle.
    pub async fn idle(&self, timeout: Duration) {
        tokio::time::timeout(timeout, self.orch.scheduler().wait_idle())
            .await
            .expect("the queue drains");
    }

    /// Waits until PR `pr` has exactly one comment and it contains every one of `needles`.
    pub async fn wait_comment(&self, pr: u64, needles: &[&str], timeout: Duration) -> FakeComment {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mine: Vec<FakeComment> = self
                .github
                .comments()
                .into_iter()
                .filter(|c| c.pr == pr && self.repo.eq_ignore_ascii_case(&c.repo))
                .collect();
            if let [one] = mine.as_slice()
                && needles.iter().all(|n| one.body.contains(n))
            {
                return one.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for one comment on PR {pr} containing \
                 {needles:?}; the comments: {mine:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What PR `pr`'s preview left behind; see [`leftovers`].
    pub async fn leftovers(&self, pr: u64) -> Vec<String> {
        leftovers(
            self.id(pr).as_str(),
            &self.nginx.conf_dir(),
            &self.dir.path().join("deployments"),
        )
        .await
    }

    /// Closes PR `pr` at `sha`, waits for its teardown, and asserts it left nothing.
    pub async fn close_and_assert_nothing_left(&self, pr: u64, sha: &str) {
        self.send("closed", pr, sha).await;
        self.wait_status(pr, DeploymentStatus::Stopped, Duration::from_secs(120))
            .await;
        self.assert_nothing_left(pr).await;
    }

    /// Asserts that PR `pr` left nothing: no containers, networks, volumes or built images with
    /// its label or name, no nginx conf, no work dir and no port allocation.
    pub async fn assert_nothing_left(&self, pr: u64) {
        assert_eq!(self.leftovers(pr).await, Vec::<String>::new(), "PR {pr}");
        assert_eq!(
            self.orch.store().ports(&self.id(pr)),
            None,
            "PR {pr}'s ports are released"
        );
    }

    /// Stops the orchestrator (the temp dir, nginx and fake go on drop).
    pub async fn shutdown(self) {
        self.orch.shutdown().await;
    }
}

/// Starts an orchestrator with a [`DockerRunner`] made from `config`, the store attached.
pub async fn start_orchestrator(config: Config) -> (Orchestrator, Arc<DockerRunner>) {
    let runner = Arc::new(DockerRunner::from_config(&config).await.unwrap());
    let orch = Orchestrator::start(config, runner.clone()).await.unwrap();
    runner.attach_store(orch.store().clone());
    (orch, runner)
}

/// A git host for the origins under `root`, speaking smart HTTP through a real
/// `git http-backend`, that answers its first `refuse_first` requests with 503 (a hiccup).
pub struct GitHttpServer {
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    held: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct GitHttpState {
    root: PathBuf,
    refuse_first: u64,
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    /// While set, requests wait before they are served (a git fetch in progress, held).
    stalled: Arc<std::sync::atomic::AtomicBool>,
    /// Requests that arrived while stalled.
    held: Arc<AtomicU64>,
}

impl GitHttpServer {
    /// Serves `http://127.0.0.1:{port}/{owner}/{name}.git` from `{root}/{owner}/{name}.git`.
    pub async fn start(port: u16, root: PathBuf, refuse_first: u64) -> Self {
        let state = GitHttpState {
            root,
            refuse_first,
            refused: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
            stalled: Arc::default(),
            held: Arc::default(),
        };
        let (refused, served) = (state.refused.clone(), state.served.clone());
        let (stalled, held) = (state.stalled.clone(), state.held.clone());
        let app = axum::Router::new()
            .fallback(git_http_backend)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the git host");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            refused,
            served,
            stalled,
            held,
            server,
        }
    }

    /// Holds every request from now on until [`GitHttpServer::release`].
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Lets held and new requests through.
    pub fn release(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Requests that arrived while stalled.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Requests answered 503.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Requests served by git.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

/// One CGI request to `git http-backend`.
async fn git_http_backend(
    axum::extract::State(state): axum::extract::State<GitHttpState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if state.stalled.load(Ordering::SeqCst) {
        state.held.fetch_add(1, Ordering::SeqCst);
        while state.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if state.refused.load(Ordering::SeqCst) < state.refuse_first {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response();
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let out = Cmd::new("git", "serve the test origin over smart HTTP")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin_bytes(body.to_vec())
        .timeout(Duration::from_secs(60))
        .output()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let raw = &out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((end, body_at)) = split else {
        return (StatusCode::INTERNAL_SERVER_ERROR, out.stderr_text()).into_response();
    };
    let mut response =
        axum::response::Response::new(axum::body::Body::from(raw[body_at..].to_vec()));
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            *response.status_mut() = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            axum::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

// The orchestrator as systemd runs it: the real binary, no arguments, every setting (secrets
// included) in its environment, read from an EnvironmentFile. Tests of leaks need this: only then
// does the token sit in the environment that git, Docker and Compose could inherit.

const BIN: &str = env!("CARGO_BIN_EXE_preview-orchestrator");

/// The environment name of each `--flag` of `settings` (program name first), with its value; a
/// flag without a value (`--dry-run-jobs`) is `true`.
pub fn settings_as_env(settings: &[OsString]) -> Vec<(String, String)> {
    use clap::CommandFactory;
    let command = Config::command();
    let mut vars = Vec::new();
    let mut rest = settings[1..].iter().map(|s| s.to_string_lossy()).peekable();
    while let Some(flag) = rest.next() {
        let long = flag.trim_start_matches("--");
        let env = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .unwrap_or_else(|| panic!("{flag} has no environment name"))
            .to_string_lossy()
            .into_owned();
        let value = match rest.peek() {
            Some(next) if !next.starts_with("--") => rest.next().unwrap().into_owned(),
            _ => "true".to_owned(),
        };
        vars.push((env, value));
    }
    vars
}

/// Writes `vars` as a systemd EnvironmentFile, mode 0600 like the Ansible role's
/// `orchestrator.env`: single-quoted values (literal), or double-quoted with `\"` and `\\` for
/// a value holding a `'`.
pub fn write_env_file(path: &Path, vars: &[(String, String)]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::from("# Written by the test, as Ansible writes orchestrator.env.\n");
    for (name, value) in vars {
        assert!(!value.contains('\n'), "{name}: one line per value");
        if value.contains('\'') {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!("{name}=\"{escaped}\"\n"));
        } else {
            text.push_str(&format!("{name}='{value}'\n"));
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Reads an EnvironmentFile as systemd does for the forms [`write_env_file`] writes.
pub fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut vars = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, raw) = line.split_once('=').expect("KEY=value");
        let value = if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_owned()
        } else if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        } else {
            raw.to_owned()
        };
        vars.push((name.to_owned(), value));
    }
    vars
}

/// A running orchestrator binary, started from an env file; SIGKILLed on drop, its log printed
/// if the test fails.
pub struct Daemon {
    child: Option<std::process::Child>,
    /// `http://{addr}` of its API.
    pub api: String,
    log: Arc<std::sync::Mutex<Vec<String>>>,
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
    /// Starts the binary as the systemd unit does (`EnvironmentFile=`, then `Environment=HOME=…
    /// DOCKER_CONFIG=…`, no arguments) and waits for its "listening" line.
    pub fn start(env_file: &Path) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(BIN);
        cmd.env_clear()
            .envs(read_env_file(env_file))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // What the unit adds: PATH (systemd's default), HOME and DOCKER_CONFIG; Docker's CLI
        // finds the Compose plugin under them. DOCKER_HOST when the test bed uses one.
        for name in ["PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG"] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        let mut child = cmd.spawn().expect("start the orchestrator binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let keep = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stdout).lines() {
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The port its API listens on.
    pub fn port(&self) -> u16 {
        self.api.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Its log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        Cmd::new("kill", "send SIGTERM to the orchestrator under test")
            .args(["-TERM", &child.id().to_string()])
            .run()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the orchestrator exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the orchestrator ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The preview's record with its ports, from the internal API.
    pub async fn preview(&self, id: &str) -> Option<Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/previews/{id}", self.api))
            .bearer_auth(crate::harness::TOKEN)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        Some(resp.json().await.unwrap())
    }

    /// Waits until no job is queued or in progress for `id`; returns the record.
    pub async fn settled(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let rec = self.preview(id).await;
            let state = rec.as_ref().map(|r| r["status"]["state"].clone());
            match state.as_ref().and_then(Value::as_str) {
                Some("queued" | "building" | "starting") => {}
                _ => return rec.unwrap_or(Value::Null),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} still in progress: {rec:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Processes whose working directory lies under `dir` (a `docker compose` or `git` the
/// orchestrator started).
pub fn processes_under(dir: &Path) -> Vec<String> {
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

/// Every process descending from `pid`, with its command line and environment (`/proc`).
pub fn descendants(pid: u32) -> Vec<(String, Vec<u8>)> {
    let parent_of = |p: &str| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // The command name may hold spaces; the fields after its closing parenthesis do not.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<(String, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| parent_of(&n).map(|pp| (n, pp)))
        .collect();
    let mut family = vec![pid];
    let mut found = Vec::new();
    while let Some(p) = family.pop() {
        for (child, parent) in &all {
            if *parent == p {
                family.push(child.parse().unwrap());
                let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
                found.push((
                    format!(
                        "{child}: {}",
                        String::from_utf8_lossy(&cmdline).replace('\0', " ")
                    ),
                    environ,
                ));
            }
        }
    }
    found
}

/// `secret` in every form the orchestrator could write it: as is, percent-encoded (URLs),
/// base64 (alone, and as git's `http.extraHeader` value `x-access-token:{secret}`).
pub fn secret_forms(secret: &str) -> Vec<(String, String)> {
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        ("plain".to_owned(), secret.to_owned()),
        ("percent-encoded".to_owned(), percent),
        (
            "base64".to_owned(),
            preview_core::render::compose::base64(secret.as_bytes()),
        ),
        (
            "base64 of git's extraHeader credentials".to_owned(),
            preview_core::render::compose::base64(format!("x-access-token:{secret}").as_bytes()),
        ),
    ]
}

/// The first form of any of `secrets` found in `haystack`: (secret, form).
pub fn find_secret(haystack: &[u8], secrets: &[&str]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(haystack);
    secrets.iter().find_map(|s| {
        secret_forms(s)
            .into_iter()
            .find(|(_, form)| text.contains(form.as_str()))
            .map(|(label, _)| (s.to_string(), label))
    })
}

/// Every file under `dir` (symlinks not followed): path and contents.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_symlink() {
                continue;
            } else if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files
}

/// The world of tests that run the orchestrator binary: dirs, nginx, fake GitHub and origin,
/// which outlive any one [`Daemon`], and the env file each daemon starts from.
pub struct DaemonWorld {
    pub dir: tempfile::TempDir,
    pub nginx: PrivateNginx,
    pub github: FakeGitHub,
    /// `owner/name`.
    pub repo: String,
    pub origin: Origin,
    /// `{dir}/orchestrator.env`.
    pub env_file: PathBuf,
    clock: std::sync::atomic::AtomicU64,
    _left_by_a_failure: RemovedOnPanic,
}

/// When a test of a world fails half-way, removes the Compose projects of its repository's
/// previews (containers, volumes, networks, built images), so that they do not hold ports and
/// memory through the next tests and runs on this machine (a failed CI run left one running).
struct RemovedOnPanic {
    /// `{slug}-pr-`, the start of the repository's preview ids.
    prefix: String,
}

impl RemovedOnPanic {
    fn for_repo(repo: &str) -> Self {
        let repo = RepoFullName::parse(repo).unwrap();
        Self {
            prefix: format!("{}-pr-", RepoSlug::base_for(&repo).as_str()),
        }
    }
}

impl Drop for RemovedOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let projects = docker(&[
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ]);
        let ours: std::collections::BTreeSet<&str> = projects
            .lines()
            .filter(|p| p.starts_with(&self.prefix))
            .collect();
        for project in ours {
            eprintln!("removing {project}, left by the failed test");
            docker(&["compose", "-p", project, "down", "--volumes"]);
            // Its built images are tagged `{project}-{service}`, so `--rmi local` keeps them.
            let images = docker(&[
                "images",
                "-q",
                "--filter",
                &format!("reference={project}-*"),
            ]);
            let images: Vec<&str> = images.lines().collect();
            if !images.is_empty() {
                docker(&[&["rmi", "--force"][..], &images].concat());
            }
        }
    }
}

impl DaemonWorld {
    /// A world for `octo-org/{name}-{unique}`; `overrides` replace settings as for [`E2e`]. One
    /// env file for every life of the daemon, so its port pools stay the same.
    pub async fn new(name: &str, overrides: &[(&str, String)]) -> Self {
        require_docker().await;
        let nginx = PrivateNginx::start().await;
        Self::with_nginx(name, nginx, overrides).await
    }

    /// [`DaemonWorld::new`] with each preview at its own hostname under [`PREVIEW_DOMAIN`].
    pub async fn new_with_hostnames(name: &str, overrides: &[(&str, String)]) -> Self {
        require_docker().await;
        let nginx = PrivateNginx::start_with_hostnames().await;
        let all = with_hostnames(&nginx, overrides);
        Self::with_nginx(name, nginx, &all).await
    }

    async fn with_nginx(name: &str, nginx: PrivateNginx, overrides: &[(&str, String)]) -> Self {
        let github = FakeGitHub::start().await;
        let dir = tempfile::tempdir().unwrap();
        let repo = format!("{OWNER}/{name}-{}", unique_suffix());
        let origin = Origin::init(dir.path(), &repo).await;
        let env_file = dir.path().join("orchestrator.env");
        let world = Self {
            dir,
            nginx,
            github,
            _left_by_a_failure: RemovedOnPanic::for_repo(&repo),
            repo,
            origin,
            env_file,
            clock: std::sync::atomic::AtomicU64::new(0),
        };
        world.set(overrides);
        world
    }

    /// Rewrites the env file with `overrides` (replacing those given before) for the next start.
    pub fn set(&self, overrides: &[(&str, String)]) {
        let settings = e2e_settings(self.dir.path(), &self.nginx, &self.github, overrides);
        let mut vars = settings_as_env(&settings);
        vars.push(("LOG_FORMAT".to_owned(), "json".to_owned()));
        write_env_file(&self.env_file, &vars);
    }

    /// Starts a daemon from the env file.
    pub fn start(&self) -> Daemon {
        Daemon::start(&self.env_file)
    }

    fn slug(&self) -> String {
        let repo = RepoFullName::parse(&self.repo).unwrap();
        RepoSlug::base_for(&repo).as_str().to_owned()
    }

    /// The preview id of PR `pr`.
    pub fn id(&self, pr: u64) -> String {
        format!("{}-pr-{pr}", self.slug())
    }

    /// The route of PR `pr` on nginx.
    pub fn path(&self, pr: u64) -> String {
        format!("/{}/pr-{pr}/", self.slug())
    }

    /// PR `pr`'s work dir.
    pub fn work(&self, pr: u64) -> PathBuf {
        self.dir.path().join("deployments").join(self.id(pr))
    }

    /// Delivers a signed `action` for PR `pr` at `sha` to `daemon`, each newer than the last.
    pub async fn send(&self, daemon: &Daemon, action: &str, pr: u64, sha: &str) {
        let minutes = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let at = jiff::Timestamp::from_second(1_793_491_200 + 60 * minutes as i64)
            .unwrap()
            .to_string();
        let (status, body) = deliver_to(&daemon.api, &self.repo, action, pr, sha, &at).await;
        assert_eq!(status, 202, "{action}: {body}");
    }

    /// What PR `pr` left; see [`leftovers`].
    pub async fn leftovers(&self, pr: u64) -> Vec<String> {
        leftovers(
            &self.id(pr),
            &self.nginx.conf_dir(),
            &self.dir.path().join("deployments"),
        )
        .await
    }

    /// Waits until every process left in PR `pr`'s work dir has ended.
    pub async fn wait_survivors_gone(&self, pr: u64) {
        let work = self.work(pr);
        eventually(
            "the processes the killed orchestrator left to end",
            Duration::from_secs(300),
            || processes_under(&work).is_empty().then_some(()),
        )
        .await;
    }

    /// Closes PR `pr` and checks that nothing is left and its ports are released.
    pub async fn close_and_check(&self, daemon: &Daemon, pr: u64, sha: &str) {
        self.send(daemon, "closed", pr, sha).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut rec = daemon.settled(&self.id(pr)).await;
        while rec["status"]["state"] != "stopped" && rec["status"]["state"] != "failed" {
            assert!(std::time::Instant::now() < deadline, "not stopped: {rec}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            rec = daemon.preview(&self.id(pr)).await.unwrap_or(Value::Null);
        }
        assert_eq!(self.leftovers(pr).await, Vec::<String>::new());
        assert!(rec["ports"].is_null(), "{rec}");
    }
}

/// How long [`visit`] waits for a 200.
const VISIT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a visitor saw: the final body, the time from the first request to the 200, and how
/// many answers before it (waking pages and redirects).
#[derive(Debug)]
pub struct Visit {
    pub body: String,
    pub took: Duration,
    pub waits: usize,
    pub redirects: usize,
}

/// Visits `path` through nginx as a browser does: follows the wake's redirect to the same
/// URL and reloads the waking page after its `Retry-After`, until a 200 (within five minutes:
/// a wake may wait for cold builds of other tests). Any other answer fails the test.
pub async fn visit(port: u16, path: &str) -> Visit {
    visit_host(port, "localhost", path).await
}

/// [`visit`] with the `Host` header `host`.
pub async fn visit_host(port: u16, host: &str, path: &str) -> Visit {
    let started = std::time::Instant::now();
    let (mut waits, mut redirects) = (0, 0);
    loop {
        assert!(
            started.elapsed() < VISIT_TIMEOUT,
            "{path} did not answer 200 in {VISIT_TIMEOUT:?}"
        );
        let answer = match preview_testkit::http_get_host(port, host, path).await {
            Ok(answer) => answer,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let headers = answer.headers.to_ascii_lowercase();
        match answer.status {
            200 => {
                return Visit {
                    body: answer.body,
                    took: started.elapsed(),
                    waits,
                    redirects,
                };
            }
            307 => {
                assert!(
                    headers.contains(&format!("location: {path}")),
                    "the wake sends the browser back where it was going: {}",
                    answer.headers
                );
                redirects += 1;
            }
            503 => {
                assert!(
                    headers.contains("retry-after: ")
                        && answer.body.contains("http-equiv=\"refresh\""),
                    "a waiting browser gets a page that reloads itself: {} {}",
                    answer.headers,
                    answer.body
                );
                waits += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            status => panic!("GET {path}: {status}\n{}\n{}", answer.headers, answer.body),
        }
    }
}

/// `{service} {slot}` of each container of preview `id`, running or not, sorted.
pub async fn services_of(id: &str) -> Vec<String> {
    let out = preview_testkit::docker([
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.Label \"dev.preview-deployer.slot\"}}",
    ])
    .await
    .expect("docker ps");
    // An unslotted service's line ends in a space, which docker() trims from the last line only.
    let mut lines: Vec<String> = out.lines().map(|l| l.trim().to_owned()).collect();
    lines.sort();
    lines
}
