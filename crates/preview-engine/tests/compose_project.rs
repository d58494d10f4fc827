//! ComposeProject on the real engine: healthy, exits at start, never healthy; down leaves nothing.

use std::time::Duration;

use preview_core::model::ReadyWhen;
use preview_engine::{ComposeProject, Error, HealthPolicy, published_ports};
use preview_exec::compose::Compose;
use preview_testkit::{docker_objects_with_label, free_port, require_docker, unique_suffix};

/// Writes a one-service project whose app runs `script` with python3.
fn project(kind: &str, script: &str, port: u16) -> (tempfile::TempDir, ComposeProject, String) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("rt-{kind}-{}", unique_suffix());
    let label = format!("dev.preview-deployer.test={name}");
    std::fs::write(dir.path().join("app.py"), script).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM python:3.12-slim-bookworm\nLABEL {label}\nCOPY app.py /app.py\nUSER 10001\nCMD [\"python3\", \"/app.py\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("compose.yml"),
        format!(
            "services:\n  app:\n    build: .\n    init: true\n    restart: on-failure:2\n    ports: [\"127.0.0.1:{port}:8080\"]\n    labels: [\"{label}\"]\n    volumes: [data:/data]\nvolumes:\n  data:\n    labels: [\"{label}\"]\nnetworks:\n  default:\n    labels: [\"{label}\"]\n"
        ),
    )
    .unwrap();
    let project = ComposeProject {
        name,
        dir: dir.path().to_owned(),
        file: "compose.yml".into(),
    };
    (dir, project, label)
}

const SERVER: &str = "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200 if self.path == '/health' else 404)\n        self.end_headers()\n        self.wfile.write(b'ok')\nhttp.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n";

async fn run_case(
    kind: &str,
    script: &str,
    (path, ready_when): (&str, ReadyWhen),
    policy: HealthPolicy,
) -> (Result<Duration, Error>, ComposeProject, String, u16) {
    let compose = Compose::detect().await.unwrap();
    let port = free_port();
    let (dir, project, label) = project(kind, script, port);
    let log = dir.path().join("up.log");
    project.up(&compose, &log).await.unwrap();
    assert!(
        !std::fs::read_to_string(&log).unwrap().is_empty(),
        "compose output goes to the log"
    );
    let outcome = project.wait_healthy(port, path, ready_when, policy).await;
    if kind == "healthy" {
        assert!(published_ports().await.unwrap().contains(&port));
    }
    project.down(&compose).await.unwrap();
    assert_eq!(
        docker_objects_with_label(&label).await,
        Vec::<String>::new(),
        "{kind}: leftovers"
    );
    let images = preview_testkit::docker(["images", "-q", "--filter", &format!("label={label}")])
        .await
        .unwrap();
    assert_eq!(images, "", "{kind}: built image removed");
    drop(dir);
    (outcome, project, label, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_app_is_seen_and_torn_down_cleanly() {
    require_docker().await;
    let (outcome, ..) = run_case(
        "healthy",
        SERVER,
        ("/health", ReadyWhen::Success),
        HealthPolicy::default(),
    )
    .await;
    outcome.expect("the app answers /health");
}

/// Without a configured path, a 404 at `/` proves the server is up.
#[tokio::test(flavor = "multi_thread")]
async fn any_answer_below_500_is_ready_without_a_health_path() {
    require_docker().await;
    let policy = HealthPolicy {
        timeout: Duration::from_secs(120),
        ..HealthPolicy::default()
    };
    let (outcome, ..) = run_case("any", SERVER, ("/", ReadyWhen::AnyAnswer), policy).await;
    outcome.expect("a 404 at / counts as up");
}

/// A configured path that keeps answering 404 fails within seconds, not at the timeout, and the
/// error names the status and the key that changes it.
#[tokio::test(flavor = "multi_thread")]
async fn strict_path_that_settles_on_a_4xx_fails_fast() {
    require_docker().await;
    let policy = HealthPolicy {
        timeout: Duration::from_secs(120),
        ..HealthPolicy::default()
    };
    let (outcome, ..) = run_case("strict", SERVER, ("/", ReadyWhen::Success), policy).await;
    match outcome {
        Err(err @ Error::WrongStatus { status: 404, .. }) => {
            let message = err.to_string();
            assert!(message.contains("HTTP 404"), "{message}");
            assert!(message.contains("health_check_path"), "{message}");
        }
        other => panic!("expected WrongStatus 404, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn app_that_exits_at_start_fails_fast() {
    require_docker().await;
    let policy = HealthPolicy {
        timeout: Duration::from_secs(120),
        ..HealthPolicy::default()
    };
    let (outcome, ..) = run_case(
        "exits",
        "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n",
        ("/", ReadyWhen::AnyAnswer),
        policy,
    )
    .await;
    match outcome {
        Err(Error::ContainerExited { container, .. }) => {
            assert!(container.ends_with("-app-1"), "{container}")
        }
        other => panic!("expected ContainerExited, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn app_that_never_answers_times_out() {
    require_docker().await;
    let policy = HealthPolicy {
        timeout: Duration::from_secs(2),
        ..HealthPolicy::default()
    };
    let (outcome, ..) = run_case(
        "silent",
        "import time\ntime.sleep(600)\n",
        ("/", ReadyWhen::AnyAnswer),
        policy,
    )
    .await;
    match outcome {
        Err(Error::Unhealthy { last, .. }) => assert!(!last.is_empty()),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
}

/// The Engine seam on the compose engine: up, ready, usage, stop (sleep: no memory, volume and
/// image kept), converge (wake: ready again), list_ours, tear down leaving nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_compose_engine_sleeps_wakes_and_reports_usage() {
    use preview_engine::{ComposeEngine, Engine};
    use preview_exec::compose::AppEnv;
    require_docker().await;
    let engine = ComposeEngine::new(Compose::detect().await.unwrap());
    assert_eq!(engine.name(), "compose");
    let port = free_port();
    let (dir, project, label) = project("engine", SERVER, port);
    let env = AppEnv::default();
    let log = dir.path().join("up.log");
    engine.up(&project, &env, &log).await.unwrap();
    let ready = |service| {
        engine.wait_ready(
            &project,
            service,
            port,
            "/health",
            ReadyWhen::Success,
            HealthPolicy::default(),
        )
    };
    ready(None).await.unwrap();
    let awake = engine.usage(&project.name).await.unwrap();
    assert_eq!(awake.running, 1, "{awake:?}");
    assert!(
        awake.memory_bytes > 1_000_000,
        "a python server uses memory: {awake:?}"
    );

    engine.stop(&project).await.unwrap();
    let asleep = engine.usage(&project.name).await.unwrap();
    assert_eq!((asleep.running, asleep.memory_bytes), (0, 0), "{asleep:?}");
    let containers = engine.containers(&project.name).await.unwrap();
    assert_eq!(containers.len(), 1, "the container is kept: {containers:?}");
    assert!(containers[0].has_stopped(), "{containers:?}");
    assert!(!published_ports().await.unwrap().contains(&port));

    engine.converge(&project, &env).await.unwrap();
    ready(Some("app")).await.unwrap();
    assert_eq!(engine.usage(&project.name).await.unwrap().running, 1);
    let ours = engine
        .list_ours("com.docker.compose.project")
        .await
        .unwrap();
    assert_eq!(
        ours.get(&project.name)
            .map(|d| std::fs::canonicalize(d).unwrap()),
        Some(std::fs::canonicalize(dir.path()).unwrap())
    );

    engine.tear_down(&project).await.unwrap();
    assert_eq!(
        docker_objects_with_label(&label).await,
        Vec::<String>::new()
    );
    assert!(engine.containers(&project.name).await.unwrap().is_empty());
}

/// The daemon runs one `docker system df` at a time and refuses the others ("a disk usage
/// operation is already running"). A preview's disk use is read all the same while other
/// processes, and other previews of this one, read theirs: a PR comment once lacked its disk
/// line for this.
#[tokio::test(flavor = "multi_thread")]
async fn disk_use_is_read_while_others_read_theirs() {
    use preview_engine::{ComposeEngine, Engine};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    require_docker().await;
    let stop = Arc::new(AtomicBool::new(false));
    let others: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                while !stop.load(Ordering::Relaxed) {
                    let out = tokio::process::Command::new("docker")
                        .args(["system", "df", "-v"])
                        .output()
                        .await
                        .unwrap();
                    refused += usize::from(
                        String::from_utf8_lossy(&out.stderr).contains("already running"),
                    );
                    // As other previews' comments do: often, not back to back.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                refused
            })
        })
        .collect();
    let engine = ComposeEngine::new(Compose::detect().await.unwrap());
    for round in 0..3 {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let engine = engine.clone();
            reads.spawn(async move { engine.disk_usage("absent-pr-1").await });
        }
        for read in reads.join_all().await {
            let usage = read.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!((usage.images_bytes, usage.volumes_bytes), (0, 0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for other in others {
        refused += other.await.unwrap();
    }
    assert!(
        refused > 0,
        "the other processes were refused too, so the reads met a busy daemon"
    );
}
