//! `preview up [DIR]`: plan, build and run a checkout on this machine, with the same generator
//! and compose path the orchestrator uses, until Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use preview_core::id::{CommitSha, PrNumber, PreviewId, RepoFullName, RepoSlug};
use preview_core::render::{RenderInput, render};
use preview_engine::{ComposeProject, HealthPolicy};
use preview_exec::Cmd;
use preview_exec::compose::Compose;

/// Arguments of `preview up`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  preview up                              # run the current directory's app
  preview up fixtures/apps/python-plain   # run a sample app; Ctrl-C stops and removes it
  preview up ../shop --port 8080 --health-timeout 120")]
pub struct UpArgs {
    /// The checkout to run.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Port on 127.0.0.1 to publish the app on [default: a free one].
    #[arg(long)]
    port: Option<u16>,
    /// Seconds to wait for the app to answer its health path.
    #[arg(long, default_value_t = 120)]
    health_timeout: u64,
    /// Where the generated files and the build log go [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// Runs `preview up`.
pub async fn run(args: UpArgs) -> Result<()> {
    let checkout = args
        .dir
        .canonicalize()
        .with_context(|| format!("{} is not a directory", args.dir.display()))?;
    let planned = preview_core::plan(&checkout).map_err(|e| anyhow!(e))?;
    let plan = &planned.plan;
    eprintln!(
        "plan: {} {} on port {} (health {})",
        plan.language
            .map(|l| l.to_string())
            .unwrap_or_else(|| "repo image".into()),
        plan.framework.map(|f| f.to_string()).unwrap_or_default(),
        plan.port,
        plan.health_path
    );

    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new().prefix("preview-up-").tempdir()?;
            temp.path().to_owned()
        }
    };
    let name = checkout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let repo = RepoFullName::new("local", &sanitize(&name)).map_err(|e| anyhow!(e))?;
    let id = PreviewId::new(
        &RepoSlug::base_for(&repo),
        PrNumber::new(1).map_err(|e| anyhow!(e))?,
    );
    let sha = head_sha(&checkout).await;
    let port = match args.port {
        Some(port) => port,
        None => std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port(),
    };
    let secret = crate::plan::random_secret()?;
    let input = RenderInput::for_preview(
        &id,
        &repo,
        &sha,
        port,
        &checkout,
        work.join("Dockerfile"),
        secret,
    );
    let rendered = render(&planned, &input).map_err(|e| anyhow!(e))?;
    for (file, text) in rendered.files() {
        std::fs::write(work.join(file), text).with_context(|| format!("writing {file}"))?;
    }

    let compose = Compose::detect().await?;
    let project = ComposeProject {
        name: id.as_str().to_owned(),
        dir: work.clone(),
        file: "docker-compose.yml".into(),
    };
    let log = work.join("build.log");
    eprintln!(
        "building and starting {} (log: {})",
        project.name,
        log.display()
    );
    let started = Instant::now();
    let outcome = async {
        project.up(&compose, &log).await?;
        let policy = HealthPolicy {
            timeout: Duration::from_secs(args.health_timeout),
            ..HealthPolicy::default()
        };
        project
            .wait_healthy(port, &plan.health_path, plan.ready_when, policy)
            .await
    }
    .await;
    if let Err(err) = outcome {
        let build_log = std::fs::read(&log).unwrap_or_default();
        if let Some(step) =
            preview_engine::build_log::build_failure(&String::from_utf8_lossy(&build_log))
        {
            let _ = project.down(&compose).await;
            return Err(anyhow!(err)).context(format!(
                "the build failed: {step}\n(whole log: {})",
                log.display()
            ));
        }
        let logs = preview_engine::build_log::strip_ansi(&project.logs_tail(&compose, 30).await);
        let _ = project.down(&compose).await;
        return Err(anyhow!(err))
            .context(format!("the app did not start; last log lines:\n{logs}"));
    }
    // The URL goes to stdout alone, so scripts can read it.
    println!("http://127.0.0.1:{port}/");
    eprintln!(
        "ready in {:.1}s; press Ctrl-C to stop and remove it",
        started.elapsed().as_secs_f64()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping {}", project.name);
    project.down(&compose).await?;
    eprintln!("removed");
    Ok(())
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "app".into() } else { s }
}

/// The checkout's HEAD when it is a git work tree, else zeros (the labels only need a sha).
async fn head_sha(dir: &std::path::Path) -> CommitSha {
    let out = Cmd::new("git", "read the checkout's commit")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .timeout(Duration::from_secs(10))
        .run()
        .await;
    out.ok()
        .and_then(|o| CommitSha::parse(o.stdout_text().trim()).ok())
        .unwrap_or_else(|| CommitSha::parse(&"0".repeat(40)).expect("40 zeros are a sha"))
}
