//! Runtime benchmark, run by `scripts/bench-runtime.sh` (release build): time-to-preview through
//! the orchestrator against raw `docker compose up -d --build` of the very files it rendered, cold
//! and warm, and an update's time against a first deploy's.
//!
//! The orchestrator runs in-process (`Orchestrator` + `DockerRunner`, as `main.rs` starts them,
//! without the hourly sweeps, whose reconcile would remove other users' previews on a shared
//! engine). Around it everything is real: a local git origin served over `file://`, the real
//! Docker engine and Compose, a private nginx, and FakeGitHub (comments, deployments and commit
//! statuses are sent, in the background as always).
//!
//! The app is a Flask app whose `requirements.txt` is installed by `pip` in its own layer, so the
//! layer cache matters. "Cold" means that layer and everything after it are rebuilt: each cold
//! run writes a fresh nonce into a comment of `requirements.txt`, so no cache entry can match (the
//! base image stays; nobody else's images or cache are touched). "Warm" means the dependency
//! layer is in the cache and only the app source is new: for the orchestrator, a second PR of
//! the same repository opened while the first is live; for raw compose, a second `up` after a
//! `down` that kept the images. (This engine uses Docker's classic builder, whose cache lives in
//! the images themselves: removing the image removes the cache.) An update is a `synchronize`
//! that changes only the app source. The images each run built are removed at its end.
//!
//! Settings (environment): `BENCH_REPS` (default 3), `BENCH_POLL_MS` (default 10).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use preview_core::id::PreviewId;
use preview_engine::ComposeProject;
use preview_exec::Cmd;
use preview_exec::compose::Compose;
use preview_github::fake::FakeGitHub;
use preview_orchestrator::deploy::DockerRunner;
use preview_orchestrator::{Config, DeploymentStatus, Orchestrator};
use preview_testkit::{PrivateNginx, free_port, http_get, nginx_binary, repo_root};

const SECRET: &str = "bench-runtime-webhook-secret";
const API_TOKEN: &str = "bench-runtime-api-token-0123456789";
const SLUG: &str = "codertocat-hello-world";
/// Each run gets its own PR, numbered from here.
const FIRST_PR: u64 = 700;
/// Give up on one deploy after this long.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);

const APP: &str = r#"from flask import Flask

BODY = "@BODY@\n"

app = Flask(__name__)


@app.get("/")
@app.get("/health")
def health():
    return BODY, 200, {"Content-Type": "text/plain"}
"#;

fn main() -> anyhow::Result<()> {
    let reps: usize = env_or("BENCH_REPS", 3)?;
    let poll = Duration::from_millis(env_or("BENCH_POLL_MS", 10)?);
    if reps == 0 {
        bail!("BENCH_REPS must be at least 1");
    }
    // Two workers: the orchestrator's default is one, plus one for the measuring client.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(reps, poll))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// Times of one repetition, in seconds.
#[derive(Default)]
struct Rep {
    orch_cold: f64,
    orch_update: f64,
    orch_warm: f64,
    raw_cold: f64,
    raw_warm: f64,
    /// How long raw `compose up` itself took, before the app answered.
    raw_cold_up: f64,
    raw_warm_up: f64,
    /// Raw `up` over the running warm project with new app source (a recreate), and its `up`.
    raw_update: f64,
    raw_update_up: f64,
    /// Build steps Docker reported CACHED: orchestrator cold, update, warm; raw cold, warm.
    cached: [usize; 5],
    /// Per phase of the orchestrator's cold and warm first deploys (from its own histogram).
    phases_cold: BTreeMap<String, f64>,
    phases_warm: BTreeMap<String, f64>,
    phases_update: BTreeMap<String, f64>,
}

struct Bench {
    dir: tempfile::TempDir,
    origin: PathBuf,
    nginx: PrivateNginx,
    _github: FakeGitHub,
    orch: Orchestrator,
    api: String,
    http: reqwest::Client,
    compose: Compose,
    poll: Duration,
    delivery: u64,
}

async fn run(reps: usize, poll: Duration) -> anyhow::Result<()> {
    preview_testkit::require_docker().await;
    let mut bench = Bench::start(poll).await?;
    let requirements =
        std::fs::read_to_string(repo_root().join("fixtures/apps/flask/requirements.txt"))
            .context("reading the Flask sample's requirements.txt")?;
    let mut results = Vec::new();
    for rep in 0..reps {
        eprintln!("== repetition {}/{reps}", rep + 1);
        let r = bench.repetition(rep, &requirements).await?;
        eprintln!(
            "   orchestrator cold {:.2} s, warm {:.2} s, update {:.2} s; raw compose cold {:.2} s (up {:.2} s), warm {:.2} s (up {:.2} s); CACHED steps {:?}",
            r.orch_cold,
            r.orch_warm,
            r.orch_update,
            r.raw_cold,
            r.raw_cold_up,
            r.raw_warm,
            r.raw_warm_up,
            r.cached
        );
        results.push(r);
    }
    report(&results, poll);
    bench.orch.shutdown().await;
    drop(bench.dir);
    Ok(())
}

impl Bench {
    async fn start(poll: Duration) -> anyhow::Result<Self> {
        let nginx = PrivateNginx::start().await;
        let github = FakeGitHub::start().await;
        let dir = tempfile::Builder::new()
            .prefix("bench-runtime.")
            .tempdir()?;
        let origin = dir.path().join("git/Codertocat/Hello-World.git");
        std::fs::create_dir_all(&origin)?;
        git(&origin, &["init", "--quiet", "-b", "main"]).await?;
        let nginx_cmd = |extra: &str| {
            format!(
                "{} -p {} -c {} {extra}",
                nginx_binary(),
                nginx.prefix().display(),
                nginx.conf_file().display()
            )
        };
        let d = dir.path();
        let app_base = 30_000 + free_port() % 20_000;
        let settings: Vec<(&str, String)> = vec![
            ("--github-token", "bench-token".into()),
            ("--github-webhook-secret", SECRET.into()),
            ("--github-api-url", github.url()),
            ("--allowed-repos", "Codertocat/Hello-World".into()),
            (
                "--preview-base-url",
                format!("http://127.0.0.1:{}", nginx.port()),
            ),
            ("--api-token", API_TOKEN.into()),
            ("--bind", "127.0.0.1:0".into()),
            (
                "--deployments-db",
                d.join("deployments.json").display().to_string(),
            ),
            (
                "--deployments-dir",
                d.join("deployments").display().to_string(),
            ),
            ("--logs-dir", d.join("logs").display().to_string()),
            ("--app-port-range", format!("{app_base}-{}", app_base + 99)),
            (
                "--db-port-range",
                format!("{}-{}", app_base + 100, app_base + 199),
            ),
            ("--nginx-config-dir", nginx.conf_dir().display().to_string()),
            ("--nginx-test-command", nginx_cmd("-t")),
            ("--nginx-reload-command", nginx_cmd("-s reload")),
            (
                "--git-base-url",
                format!("file://{}", d.join("git").display()),
            ),
            ("--health-timeout-secs", "300".into()),
        ];
        let mut args: Vec<std::ffi::OsString> = vec!["preview-orchestrator".into()];
        for (k, v) in settings {
            args.push(k.into());
            args.push(v.into());
        }
        let config = Config::load(args).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let runner = Arc::new(DockerRunner::from_config(&config).await?);
        let orch = Orchestrator::start(config, runner.clone()).await?;
        runner.attach_store(orch.store().clone());
        let api = format!("http://{}", orch.addr());
        Ok(Self {
            dir,
            origin,
            nginx,
            _github: github,
            orch,
            api,
            http: reqwest::Client::new(),
            compose: Compose::detect().await?,
            poll,
            delivery: 0,
        })
    }

    /// Commits the app answering `body`, with `nonce` in a comment of requirements.txt, as the
    /// head of PR `pr`; returns the sha.
    async fn commit(
        &self,
        pr: u64,
        body: &str,
        requirements: &str,
        nonce: &str,
    ) -> anyhow::Result<String> {
        write_app(&self.origin, body, requirements, nonce)?;
        git(&self.origin, &["add", "."]).await?;
        git(
            &self.origin,
            &["commit", "--quiet", "--allow-empty", "-m", body],
        )
        .await?;
        let sha = git(&self.origin, &["rev-parse", "HEAD"]).await?;
        git(
            &self.origin,
            &["update-ref", &format!("refs/pull/{pr}/head"), &sha],
        )
        .await?;
        Ok(sha)
    }

    async fn deliver(&mut self, action: &str, pr: u64, sha: &str) -> anyhow::Result<()> {
        self.delivery += 1;
        let body = pr_event(action, pr, sha)?;
        let sig = preview_github::sign(SECRET.as_bytes(), &body);
        let status = self
            .http
            .post(format!("{}/webhook/github", self.api))
            .header("x-github-event", "pull_request")
            .header(
                "x-github-delivery",
                format!("bench-runtime-{}-{}", std::process::id(), self.delivery),
            )
            .header("x-hub-signature-256", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .status();
        if status != 202 {
            bail!("the webhook for {action} of PR {pr} got HTTP {status}");
        }
        Ok(())
    }

    /// Polls `port{path}` every `poll` until it answers 200 with `body`; fails early if the
    /// preview `id` failed.
    async fn until_serving(
        &self,
        port: u16,
        path: &str,
        body: &str,
        id: Option<&PreviewId>,
    ) -> anyhow::Result<()> {
        let want = format!("{body}\n");
        let deadline = Instant::now() + DEPLOY_TIMEOUT;
        let mut n = 0u64;
        loop {
            if let Ok(answer) = http_get(port, path).await
                && answer.status == 200
                && answer.body == want
            {
                return Ok(());
            }
            n += 1;
            if let Some(id) = id
                && n.is_multiple_of(20)
                && let Some(rec) = self.orch.store().get(id)
                && let DeploymentStatus::Failed { reason } = &rec.status
            {
                bail!("the preview {id} failed: {reason}");
            }
            if Instant::now() > deadline {
                bail!("127.0.0.1:{port}{path} did not serve {body:?} within {DEPLOY_TIMEOUT:?}");
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Sends `action` for `pr` at `sha` and times it until nginx serves `body` at the PR's path.
    async fn timed_webhook(
        &mut self,
        action: &str,
        pr: u64,
        sha: &str,
        body: &str,
    ) -> anyhow::Result<f64> {
        let id = preview_id(pr);
        let path = format!("/{SLUG}/pr-{pr}/");
        let started = Instant::now();
        self.deliver(action, pr, sha).await?;
        self.until_serving(self.nginx.port(), &path, body, Some(&id))
            .await?;
        let took = started.elapsed().as_secs_f64();
        // The job ends a moment after nginx serves (feedback, store); wait for it, so its phase
        // times are counted in this measurement and it does not overlap the next one.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.orch.store().get(&id).is_some_and(|r| {
            r.status == DeploymentStatus::Running
                && r.deployed_sha.as_ref().map(|s| s.as_str()) == Some(sha)
        }) {
            if Instant::now() > deadline {
                bail!("the preview {id} serves {sha} but its job did not finish");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(took)
    }

    async fn close(&mut self, pr: u64, sha: &str) -> anyhow::Result<()> {
        self.deliver("closed", pr, sha).await?;
        let id = preview_id(pr);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.orch.store().get(&id).map(|r| r.status) != Some(DeploymentStatus::Stopped) {
            if Instant::now() > deadline {
                bail!("the preview {id} did not stop");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn phase_sums(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.api))
            .bearer_auth(API_TOKEN)
            .send()
            .await?
            .text()
            .await?;
        let mut sums = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("preview_job_duration_seconds_sum{phase=\"")
                && let Some((phase, value)) = rest.split_once("\"} ")
                && let Ok(v) = value.trim().parse::<f64>()
            {
                sums.insert(phase.to_owned(), v);
            }
        }
        Ok(sums)
    }

    /// An orchestrator first deploy, timed, with the time of each phase.
    async fn timed_first_deploy(
        &mut self,
        pr: u64,
        sha: &str,
        body: &str,
    ) -> anyhow::Result<(f64, BTreeMap<String, f64>)> {
        let before = self.phase_sums().await?;
        let took = self.timed_webhook("opened", pr, sha, body).await?;
        Ok((took, phase_delta(&before, &self.phase_sums().await?)))
    }

    async fn repetition(&mut self, rep: usize, requirements: &str) -> anyhow::Result<Rep> {
        let mut r = Rep::default();
        let run = format!("{}-{rep}", std::process::id());
        let pr = FIRST_PR + 2 * rep as u64;
        let id = preview_id(pr);
        let work = self.dir.path().join("deployments").join(id.as_str());
        let build_log = work.join("logs/build.log");

        // Orchestrator, cold first deploy, then an update of the app source only.
        let nonce = format!("orchestrator {run} {}", unique());
        let body = format!("bench {run} orchestrator cold");
        let sha = self.commit(pr, &body, requirements, &nonce).await?;
        (r.orch_cold, r.phases_cold) = self.timed_first_deploy(pr, &sha, &body).await?;
        r.cached[0] = cached_steps(&build_log);
        let mut images = vec![image_id(&format!("{id}-app")).await];
        let raw_dir = self.dir.path().join(format!("raw-{rep}"));
        let app_port = self
            .orch
            .store()
            .ports(&id)
            .context("the running preview holds no ports")?
            .app;
        copy_rendered(&work, &raw_dir).await?;
        let body = format!("bench {run} orchestrator update");
        let sha = self.commit(pr, &body, requirements, &nonce).await?;
        let before = self.phase_sums().await?;
        r.orch_update = self.timed_webhook("synchronize", pr, &sha, &body).await?;
        r.phases_update = phase_delta(&before, &self.phase_sums().await?);
        r.cached[1] = cached_steps(&build_log);

        // Orchestrator, warm first deploy: a new PR of the same repository with the same
        // dependencies, while the first one is live (its image holds the dependency layer; the
        // engine's classic builder keeps a layer only as long as an image uses it).
        let pr2 = pr + 1;
        let id2 = preview_id(pr2);
        let body = format!("bench {run} orchestrator warm");
        let sha2 = self.commit(pr2, &body, requirements, &nonce).await?;
        (r.orch_warm, r.phases_warm) = self.timed_first_deploy(pr2, &sha2, &body).await?;
        r.cached[2] = cached_steps(
            &self
                .dir
                .path()
                .join("deployments")
                .join(id2.as_str())
                .join("logs/build.log"),
        );
        images.push(image_id(&format!("{id}-app")).await);
        images.push(image_id(&format!("{id2}-app")).await);
        self.close(pr2, &sha2).await?;
        self.close(pr, &sha).await?;

        // Raw compose on the same rendered files: cold, then `down` (images kept, as the cache
        // lives in them) and warm with new app source.
        let project = format!("bench-raw-{}", unique());
        let port = free_port();
        retarget_compose(&raw_dir, id.as_str(), app_port, port)?;
        let raw = ComposeProject {
            name: project.clone(),
            dir: raw_dir.clone(),
            file: preview_orchestrator::deploy::COMPOSE_FILE.to_owned(),
        };
        let checkout = raw_dir.join("checkout");
        let raw_nonce = format!("raw {run} {}", unique());
        let raw_log = raw_dir.join("raw-build.log");
        let result = async {
            let body = format!("bench {run} raw cold");
            write_app(&checkout, &body, requirements, &raw_nonce)?;
            (r.raw_cold_up, r.raw_cold) = self.timed_raw_up(&raw, port, &body, &raw_log).await?;
            r.cached[3] = cached_steps(&raw_log);
            images.push(image_id(&format!("{project}-app")).await);
            self.compose
                .down(&raw.name, &raw.dir, &raw.file)?
                .run()
                .await?;
            let body = format!("bench {run} raw warm");
            write_app(&checkout, &body, requirements, &raw_nonce)?;
            (r.raw_warm_up, r.raw_warm) = self.timed_raw_up(&raw, port, &body, &raw_log).await?;
            r.cached[4] = cached_steps(&raw_log);
            images.push(image_id(&format!("{project}-app")).await);
            let body = format!("bench {run} raw update");
            write_app(&checkout, &body, requirements, &raw_nonce)?;
            (r.raw_update_up, r.raw_update) =
                self.timed_raw_up(&raw, port, &body, &raw_log).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = raw.down(&self.compose).await {
            eprintln!("   removing the raw compose project {project} failed: {e}");
        }
        // Images this run built that were replaced and left dangling (untagged).
        for image in images.into_iter().flatten() {
            let _ = preview_testkit::docker(["image", "rm", &image]).await;
        }
        result?;
        Ok(r)
    }

    /// `docker compose up -d --build` (the same command the orchestrator runs), then a tight
    /// HTTP loop on the published port until the app answers `body`. Returns the seconds until
    /// `up` returned and until the app answered.
    async fn timed_raw_up(
        &self,
        project: &ComposeProject,
        port: u16,
        body: &str,
        log: &Path,
    ) -> anyhow::Result<(f64, f64)> {
        let _ = std::fs::remove_file(log);
        let started = Instant::now();
        project
            .up(&self.compose, log)
            .await
            .with_context(|| format!("raw compose up (log: {})", log.display()))?;
        let up = started.elapsed().as_secs_f64();
        self.until_serving(port, "/", body, None).await?;
        Ok((up, started.elapsed().as_secs_f64()))
    }
}

/// Build steps a build log reports as taken from the layer cache (the classic builder says
/// "Using cache", BuildKit "CACHED").
fn cached_steps(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| {
            text.lines()
                .filter(|l| l.contains("Using cache") || l.contains(" CACHED"))
                .count()
        })
        .unwrap_or(0)
}

fn phase_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The id of image `reference`, if it exists.
async fn image_id(reference: &str) -> Option<String> {
    preview_testkit::docker(["image", "inspect", "--format", "{{.Id}}", reference])
        .await
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

fn preview_id(pr: u64) -> PreviewId {
    PreviewId::parse(&format!("{SLUG}-pr-{pr}")).expect("a valid preview id")
}

fn unique() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn write_app(dir: &Path, body: &str, requirements: &str, nonce: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join("app.py"), APP.replace("@BODY@", body))?;
    std::fs::write(
        dir.join("requirements.txt"),
        format!("# bench cache key: {nonce}\n{requirements}"),
    )?;
    Ok(())
}

/// Copies what the orchestrator rendered for a preview (checkout, Dockerfile, compose file).
async fn copy_rendered(work: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for name in [
        "checkout",
        "Dockerfile",
        preview_orchestrator::deploy::COMPOSE_FILE,
    ] {
        Cmd::new("cp", "copy the rendered preview for the raw compose run")
            .arg("-a")
            .arg(work.join(name))
            .arg(to.join(name))
            .run()
            .await
            .with_context(|| format!("copying {}", work.join(name).display()))?;
    }
    Ok(())
}

/// Points the copied compose file at its new directory and port, and renames our labels, so no
/// reconcile of any orchestrator on this engine mistakes the raw project for one of its own.
fn retarget_compose(dir: &Path, id: &str, from_port: u16, to_port: u16) -> anyhow::Result<()> {
    let file = dir.join(preview_orchestrator::deploy::COMPOSE_FILE);
    let text = std::fs::read_to_string(&file)?;
    let work = dir
        .parent()
        .context("raw dir has a parent")?
        .join("deployments")
        .join(id);
    let published = format!("published: \"{from_port}\"");
    if !text.contains(&published) {
        bail!("the rendered compose file does not publish {from_port}:\n{text}");
    }
    let text = text
        .replace(&work.display().to_string(), &dir.display().to_string())
        .replace(&published, &format!("published: \"{to_port}\""))
        .replace("dev.preview-deployer.", "bench.raw-compose.");
    std::fs::write(file, text)?;
    Ok(())
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    Ok(Cmd::new("git", "prepare the benchmark's git origin")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .run()
        .await?
        .stdout_text()
        .trim()
        .to_owned())
}

/// A real `pull_request` payload (vendored fixture) for `pr` at `sha`, updated now.
fn pr_event(action: &str, pr: u64, sha: &str) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../preview-github/tests/fixtures")
        .join(format!("pull_request.{action}.json"));
    let mut v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["action"] = action.into();
    v["number"] = pr.into();
    v["pull_request"]["number"] = pr.into();
    v["pull_request"]["head"]["sha"] = sha.into();
    v["pull_request"]["updated_at"] = jiff::Timestamp::now().to_string().into();
    Ok(serde_json::to_vec(&v)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn report(results: &[Rep], poll: Duration) {
    let col = |f: fn(&Rep) -> f64| results.iter().map(f).collect::<Vec<_>>();
    let line = |name: &str, v: Vec<f64>| {
        let all = v
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{name:<44} median {:>6.2} s   min {:>6.2} s   (runs: {all})",
            median(v.clone()),
            min(&v)
        );
    };
    println!();
    println!(
        "== runtime benchmark: Flask app (pip install of 9 pinned packages in its own layer), {} repetitions, HTTP poll every {} ms",
        results.len(),
        poll.as_millis()
    );
    println!(
        "time to preview (webhook sent -> first 200 with the new body through nginx at /{SLUG}/pr-N/):"
    );
    line(
        "  orchestrator, cold (deps layer rebuilt)",
        col(|r| r.orch_cold),
    );
    line(
        "  orchestrator, warm (deps layer cached)",
        col(|r| r.orch_warm),
    );
    println!(
        "raw compose (same rendered files; `up -d --build` -> first 200 on the published port):"
    );
    line("  raw compose, cold", col(|r| r.raw_cold));
    line("  raw compose, warm", col(|r| r.raw_warm));
    line("    of which `up` itself, cold", col(|r| r.raw_cold_up));
    line("    of which `up` itself, warm", col(|r| r.raw_warm_up));
    println!("update (synchronize, app source only -> first 200 with the new body through nginx):");
    line("  orchestrator update", col(|r| r.orch_update));
    line(
        "  raw compose update (`up` over the running app)",
        col(|r| r.raw_update),
    );
    line("    of which `up` itself", col(|r| r.raw_update_up));

    let phases = |pick: fn(&Rep) -> &BTreeMap<String, f64>| {
        let names: Vec<String> = results
            .iter()
            .flat_map(|r| pick(r).keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        names
            .iter()
            .map(|p| {
                let v: Vec<f64> = results
                    .iter()
                    .map(|r| pick(r).get(p).copied().unwrap_or(0.0))
                    .collect();
                format!("{p} {:.2}", median(v))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "orchestrator phases, median s: cold: {}",
        phases(|r| &r.phases_cold)
    );
    println!(
        "                               warm: {}",
        phases(|r| &r.phases_warm)
    );
    println!(
        "                             update: {}",
        phases(|r| &r.phases_update)
    );

    let outside = |total: fn(&Rep) -> f64, phases: fn(&Rep) -> &BTreeMap<String, f64>| {
        median(
            results
                .iter()
                .map(|r| total(r) - phases(r).get("build").copied().unwrap_or(0.0))
                .collect(),
        ) * 1000.0
    };
    println!(
        "time outside `compose up`, median ms: orchestrator cold {:.0}, warm {:.0}, update {:.0}; raw compose cold {:.0}, warm {:.0}, update {:.0}",
        outside(|r| r.orch_cold, |r| &r.phases_cold),
        outside(|r| r.orch_warm, |r| &r.phases_warm),
        outside(|r| r.orch_update, |r| &r.phases_update),
        median(col(|r| r.raw_cold - r.raw_cold_up)) * 1000.0,
        median(col(|r| r.raw_warm - r.raw_warm_up)) * 1000.0,
        median(col(|r| r.raw_update - r.raw_update_up)) * 1000.0,
    );
    let cached = |i: usize| {
        results
            .iter()
            .map(|r| r.cached[i].to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "build steps CACHED per run: orchestrator cold {}, update {}, warm {}; raw cold {}, warm {}",
        cached(0),
        cached(1),
        cached(2),
        cached(3),
        cached(4)
    );

    println!();
    println!("bars (medians):");
    for (name, orch, raw) in [
        ("cold", col(|r| r.orch_cold), col(|r| r.raw_cold)),
        ("warm", col(|r| r.orch_warm), col(|r| r.raw_warm)),
    ] {
        let (o, w) = (median(orch), median(raw));
        let over = o - w;
        let pct = 100.0 * over / w;
        println!(
            "  overhead {name}: {:+.0} ms ({pct:+.1}%) over raw compose   <= 10%: {}   <= 1 s: {}",
            over * 1000.0,
            pass(pct <= 10.0),
            pass(over <= 1.0)
        );
    }
    let (o, w) = (
        median(col(|r| r.orch_update)),
        median(col(|r| r.raw_update)),
    );
    println!(
        "  overhead update: {:+.0} ms ({:+.1}%) over a raw compose update   (for information)",
        (o - w) * 1000.0,
        100.0 * (o - w) / w
    );
    let cold = median(col(|r| r.orch_cold));
    let warm = median(col(|r| r.orch_warm));
    let update = median(col(|r| r.orch_update));
    let per_rep: Vec<f64> = results
        .iter()
        .map(|r| r.orch_update / r.orch_cold)
        .collect();
    println!(
        "  update / first deploy (cold): {:.2}x (per run: {})   <= 0.5x: {}",
        update / cold,
        per_rep
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        pass(update / cold <= 0.5)
    );
    println!(
        "  update / first deploy (warm): {:.2}x   (for information: a new PR whose deps were built before)",
        update / warm
    );
}
