//! The whole loop on the real engine, a private nginx, real git and a fake GitHub: a signed
//! `opened` webhook deploys the Python sample behind nginx, `synchronize` serves the new commit
//! under the same sticky comment, and `closed` leaves nothing behind.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use preview_exec::Cmd;
use preview_github::fake::FakeGitHub;
use preview_orchestrator::runtime::DockerRunner;
use preview_orchestrator::{Config, DeploymentStatus, Orchestrator};
use preview_testkit::{
    PrivateNginx, docker_objects_with_label, nginx_binary, repo_root, require_docker, wait_for_http,
};

use crate::harness::{ID2, SECRET, args, delivery, pr_event};

async fn git(dir: &Path, args: &[&str]) -> String {
    Cmd::new("git", "prepare the test origin")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .run()
        .await
        .unwrap()
        .stdout_text()
        .trim()
        .to_owned()
}

/// Copies the Python sample into `repo` with `body` as its answer, commits, and points
/// refs/pull/2/head at the commit.
async fn commit_sample(repo: &Path, body: &str) -> String {
    let sample = repo_root().join("fixtures/apps/python-plain/main.py");
    let source = std::fs::read_to_string(sample).unwrap();
    let source = source.replace("python-plain ok", body);
    std::fs::write(repo.join("main.py"), source).unwrap();
    git(repo, &["add", "."]).await;
    git(repo, &["commit", "--quiet", "-m", body]).await;
    let sha = git(repo, &["rev-parse", "HEAD"]).await;
    git(repo, &["update-ref", "refs/pull/2/head", &sha]).await;
    sha
}

/// The harness's arguments with `overrides` replacing or adding settings.
fn settings(dir: &Path, overrides: &[(&str, String)]) -> Vec<OsString> {
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

async fn deliver(base: &str, action: &str, sha: &str, at: &str) -> u16 {
    let body = pr_event(action, 2, sha, Some(at));
    let sig = preview_github::sign(SECRET.as_bytes(), &body);
    reqwest::Client::new()
        .post(format!("{base}/webhook/github"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", delivery())
        .header("x-hub-signature-256", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_update_close_on_the_real_engine() {
    require_docker().await;
    let nginx = PrivateNginx::start().await;
    let github = FakeGitHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("git/Codertocat/Hello-World.git");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "--quiet", "-b", "main"]).await;
    let first = commit_sample(&origin, "e2e first commit").await;

    let nginx_cmd = |extra: &str| {
        format!(
            "{} -p {} -c {} {extra}",
            nginx_binary(),
            nginx.prefix().display(),
            nginx.conf_file().display()
        )
    };
    let base_url = format!("http://127.0.0.1:{}", nginx.port());
    let config = Config::load(settings(
        dir.path(),
        &[
            ("--github-api-url", github.url()),
            ("--preview-base-url", base_url.clone()),
            ("--nginx-config-dir", nginx.conf_dir().display().to_string()),
            ("--nginx-test-command", nginx_cmd("-t")),
            ("--nginx-reload-command", nginx_cmd("-s reload")),
            (
                "--git-base-url",
                format!("file://{}", dir.path().join("git").display()),
            ),
            ("--health-timeout-secs", "120".into()),
        ],
    ))
    .unwrap();
    let runner = Arc::new(DockerRunner::from_config(&config).await.unwrap());
    let orch = Orchestrator::start(config, runner.clone()).await.unwrap();
    runner.attach_store(orch.store().clone());
    let api = format!("http://{}", orch.addr());
    let path = "/codertocat-hello-world/pr-2/";
    let url = format!("{base_url}{path}");

    // opened → live behind nginx, prefix stripped
    assert_eq!(
        deliver(&api, "opened", &first, "2026-11-01T00:00:00Z").await,
        202
    );
    let live = wait_for_http(
        nginx.port(),
        &format!("{path}health"),
        Duration::from_secs(240),
        |a| a.status == 200,
    )
    .await;
    assert_eq!(live.body, "e2e first commit\n");
    let comment = eventually("the live comment", Duration::from_secs(30), || {
        github
            .comments()
            .into_iter()
            .find(|c| c.body.contains("Preview live"))
    })
    .await;
    assert!(comment.body.contains(&url), "{}", comment.body);
    assert!(comment.body.contains(&first), "{}", comment.body);
    eventually("a successful deployment", Duration::from_secs(30), || {
        github.deployments().into_iter().find(|d| {
            d.statuses
                .iter()
                .any(|s| s["state"] == "success" && s["environment_url"] == url.as_str())
        })
    })
    .await;

    // synchronize → the new commit serves, still one comment
    let second = commit_sample(&origin, "e2e second commit").await;
    assert_eq!(
        deliver(&api, "synchronize", &second, "2026-11-02T00:00:00Z").await,
        202
    );
    wait_for_http(
        nginx.port(),
        &format!("{path}health"),
        Duration::from_secs(240),
        |a| a.body == "e2e second commit\n",
    )
    .await;
    eventually(
        "the comment to show the second commit",
        Duration::from_secs(30),
        || {
            let comments = github.comments();
            (comments.len() == 1 && comments[0].body.contains(&second)).then_some(())
        },
    )
    .await;

    // closed → nothing left
    assert_eq!(
        deliver(&api, "closed", &second, "2026-11-03T00:00:00Z").await,
        202
    );
    let id = preview_core::id::PreviewId::parse(ID2).unwrap();
    eventually("the preview to stop", Duration::from_secs(120), || {
        (orch.store().get(&id).map(|r| r.status) == Some(DeploymentStatus::Stopped)).then_some(())
    })
    .await;
    let label = format!("dev.preview-deployer.deployment={ID2}");
    assert_eq!(
        docker_objects_with_label(&label).await,
        Vec::<String>::new()
    );
    assert!(!nginx.conf_dir().join(format!("{ID2}.conf")).exists());
    assert!(!dir.path().join("deployments").join(ID2).exists());
    assert!(orch.store().ports(&id).is_none(), "ports released");
    wait_for_http(
        nginx.port(),
        &format!("{path}health"),
        Duration::from_secs(10),
        |a| a.status == 404,
    )
    .await;
    eventually("the closed comment", Duration::from_secs(30), || {
        let comments = github.comments();
        (comments.len() == 1 && comments[0].body.contains("Preview closed")).then_some(())
    })
    .await;
    orch.shutdown().await;
}
