//! The Swarm engine on a real two-node swarm: the test bed's engine is the manager, and a second
//! `dockerd` in a network namespace is the worker (`scripts/swarm-bed.sh`). These tests need
//! that swarm, so they are ignored in the plain `cargo test` and run by `scripts/test-swarm.sh`,
//! which makes the swarm, runs them with `--ignored` and takes it down again.
//!
//! A PR's whole life goes through the real orchestrator, nginx and the fake GitHub: it lands on
//! the worker (the manager's CPU is reserved by a ballast service, so the preview's reservation
//! fits only there), updates without downtime, and leaves nothing on either node when closed.
//! Then a worker failure: its preview is rescheduled on the manager by Swarm, and the
//! orchestrator routes nginx to it there.

use std::time::{Duration, Instant};

use preview_engine::{Engine, SwarmEngine};
use preview_orchestrator::deploy::reconcile::reconcile;
use preview_orchestrator::record::DeploymentStatus;

use crate::e2e_support::{E2e, Tree, eventually};
use crate::harness::TOKEN;

/// Cold builds share 2 cores with other work.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
const BALLAST: &str = "preview-swarm-test-ballast";

/// A setting `scripts/swarm-bed.sh up` printed (test-swarm.sh exports them).
fn bed(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through scripts/test-swarm.sh, which makes the two-node swarm")
    })
}

/// The stdlib sample answering `body` (no database: its CPU reservation alone decides its node).
fn app(body: &str) -> Tree {
    Tree::fixture("python-plain").replace("python-plain ok", body)
}

async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What stack `id` left on the node behind `host` (`-H`), or on the manager when `None`:
/// containers, volumes, networks and images of the preview.
async fn left_on_node(host: Option<&str>, id: &str) -> Vec<String> {
    let h: Vec<&str> = host.map(|h| vec!["-H", h]).unwrap_or_default();
    let label = format!("label=com.docker.stack.namespace={id}");
    let mut left = Vec::new();
    for (kind, list) in [
        ("container", vec!["ps", "-aq", "--filter", &label]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ("network", vec!["network", "ls", "-q", "--filter", &label]),
    ] {
        let out = docker(&[h.clone(), list].concat()).await;
        left.extend(out.lines().map(|l| format!("{kind} {l}")));
    }
    let images = docker(
        &[
            h.clone(),
            vec!["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        ]
        .concat(),
    )
    .await;
    left.extend(
        images
            .lines()
            .filter(|i| i.contains(&format!("/{id}/")) || i.starts_with(&format!("{id}-")))
            .map(|i| format!("image {i}")),
    );
    left
}

/// The node running the app of stack `id` (its one app slot's service, `app` or `app-green`).
async fn app_node(id: &str) -> String {
    let services = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("name={id}_app"),
    ])
    .await;
    let services: Vec<&str> = services.lines().collect();
    assert_eq!(services.len(), 1, "one app service for {id}: {services:?}");
    let task = docker(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        services[0],
    ])
    .await;
    let task = task.lines().next().expect("a running task").to_owned();
    docker(&[
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.NodeID}}",
        &task,
    ])
    .await
    .trim()
    .to_owned()
}

/// GETs `url` until it answers 200 with `body`; returns how long that took.
async fn wait_body(url: &str, body: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap();
    let mut last = String::new();
    while started.elapsed() < timeout {
        match client.get(url).send().await {
            Ok(a) if a.status() == 200 => {
                let text = a.text().await.unwrap_or_default();
                if text == body {
                    return started.elapsed();
                }
                last = format!("200 {text:?}");
            }
            Ok(a) => last = format!("{}", a.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer {body:?} within {timeout:?}; last: {last}");
}

/// Waits until PR `pr` runs at `sha`; returns the time since `since`. A failed deploy fails
/// the test with its reason and build log.
async fn wait_live(e2e: &E2e, pr: u64, sha: &str, since: Instant) -> Duration {
    loop {
        let record = e2e.record(pr);
        match record.as_ref().map(|r| &r.status) {
            Some(DeploymentStatus::Running)
                if record
                    .as_ref()
                    .and_then(|r| r.deployed_sha.as_ref())
                    .is_some_and(|s| s.as_str() == sha) =>
            {
                return since.elapsed();
            }
            Some(DeploymentStatus::Failed { reason }) => {
                let log = e2e
                    .dir
                    .path()
                    .join("deployments")
                    .join(e2e.id(pr).as_str())
                    .join("logs/build.log");
                panic!(
                    "PR {pr} failed: {reason}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            _ if since.elapsed() > LIVE_TIMEOUT => panic!("PR {pr} not live at {sha}: {record:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Opens PR `pr` with `tree`; returns its sha and its time to live (webhook to running).
async fn open(e2e: &E2e, pr: u64, tree: &Tree) -> (String, Duration) {
    let sha = e2e.commit(pr, tree, "first").await;
    let sent = Instant::now();
    e2e.send("opened", pr, &sha).await;
    let took = wait_live(e2e, pr, &sha, sent).await;
    (sha, took)
}

/// Closes PR `pr` and asserts it left nothing: on the manager (and the orchestrator's own
/// leftovers: nginx conf, work dir, ports), and on each node behind `hosts`.
async fn close_leaving_nothing(e2e: &E2e, pr: u64, sha: &str, hosts: &[&str]) {
    e2e.send("closed", pr, sha).await;
    e2e.wait_status(pr, DeploymentStatus::Stopped, Duration::from_secs(120))
        .await;
    e2e.assert_nothing_left(pr).await;
    let id = e2e.id(pr);
    assert_eq!(
        left_on_node(None, id.as_str()).await,
        Vec::<String>::new(),
        "on the manager"
    );
    for host in hosts {
        assert_eq!(
            left_on_node(Some(host), id.as_str()).await,
            Vec::<String>::new(),
            "on {host}"
        );
    }
}

/// The tags the registry still holds for the images of stack `id` (`{id}/{service}`).
async fn tags_in_registry(registry: &str, id: &str) -> Vec<String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let answer = client.get(&url).send().await.unwrap();
            if answer.status() == 404 {
                return serde_json::Value::Null;
            }
            answer.json::<serde_json::Value>().await.unwrap()
        }
    };
    let catalog = get(format!("http://{registry}/v2/_catalog?n=1000")).await;
    let mut tags = Vec::new();
    for repo in catalog["repositories"].as_array().into_iter().flatten() {
        let repo = repo.as_str().unwrap();
        if !repo.starts_with(&format!("{id}/")) {
            continue;
        }
        let listed = get(format!("http://{registry}/v2/{repo}/tags/list")).await;
        for tag in listed["tags"].as_array().into_iter().flatten() {
            tags.push(format!("{repo}:{}", tag.as_str().unwrap()));
        }
    }
    tags
}

/// The upstream the installed nginx conf of `id` routes to.
fn routed_to(e2e: &E2e, id: &str) -> String {
    let conf = std::fs::read_to_string(e2e.nginx.conf_dir().join(format!("{id}.conf"))).unwrap();
    let at = conf.find("proxy_pass http://").expect("a proxy_pass") + "proxy_pass http://".len();
    conf[at..].split(['/', ';']).next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the two-node swarm of scripts/test-swarm.sh"]
async fn a_pr_lives_on_the_swarm_and_moves_when_its_worker_dies() {
    // The orchestrator's log, for a failure's story (test-swarm.sh runs this test alone).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("preview_orchestrator=info,preview_engine=info")
        .with_test_writer()
        .try_init();
    let registry = bed("SWARM_REGISTRY");
    let push_registry = bed("SWARM_PUSH_REGISTRY");
    let worker_host = bed("SWARM_WORKER_HOST");
    let worker_id = bed("SWARM_WORKER_ID");
    let worker_addr = bed("SWARM_WORKER_ADDR");
    let manager_addr = bed("SWARM_MANAGER_ADDR");

    // Time to live on one host, for comparison: the same apps through the compose engine.
    let with_db = |body| app(body).with("preview-config.yml", "database: postgres\n");
    let compose = E2e::start("swarm-compare", &[]).await;
    let mut compose_live = Vec::new();
    for (pr, tree) in [(1, with_db("compose ok")), (2, app("compose ok"))] {
        let (sha, took) = open(&compose, pr, &tree).await;
        compose_live.push(took);
        compose.close_and_assert_nothing_left(pr, &sha).await;
    }
    compose.shutdown().await;

    let e2e = E2e::start(
        "swarm",
        &[
            ("--engine", "swarm".into()),
            ("--swarm-registry", registry.clone()),
            ("--swarm-push-registry", push_registry.clone()),
        ],
    )
    .await;
    // The manager's CPU is taken, so the preview's reservation (0.5 CPU) fits on the worker only.
    // A ballast a failed run left behind goes first.
    let _ = std::process::Command::new("docker")
        .args(["service", "rm", BALLAST])
        .output();
    docker(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        BALLAST,
        "--reserve-cpu",
        "1.7",
        "--constraint",
        "node.role==manager",
        "--restart-condition",
        "none",
        "debian:bookworm-slim",
        "sleep",
        "infinity",
    ])
    .await;

    // Open: built on the manager, pushed, placed on the worker, routed there by nginx.
    let pr = 1;
    let id = e2e.id(pr);
    // With a database: its volume is on the worker too, and must go with the preview.
    let (_, swarm_live) = open(&e2e, pr, &with_db("swarm first")).await;
    assert_eq!(
        app_node(id.as_str()).await,
        worker_id,
        "the preview runs on the worker"
    );
    assert_eq!(
        routed_to(&e2e, id.as_str()),
        format!("{worker_addr}:{}", e2e.orch.store().ports(&id).unwrap().app)
    );
    wait_body(&e2e.url(pr), "swarm first\n", Duration::from_secs(30)).await;
    eprintln!(
        "time to live, webhook to running, app with Postgres: compose {:.1} s, swarm {:.1} s (the worker pulls every image first)",
        compose_live[0].as_secs_f64(),
        swarm_live.as_secs_f64()
    );

    // The API lists both nodes, and where the preview runs (what `preview status` shows).
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/nodes", e2e.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["engine"], "swarm", "{listed}");
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{listed}");
    let worker = nodes
        .iter()
        .find(|n| n["id"] == worker_id.as_str())
        .unwrap();
    assert_eq!(worker["address"], worker_addr.as_str(), "{listed}");
    assert_eq!(worker["previews"][0], id.as_str(), "{listed}");
    let reserved =
        worker["memory_bytes"].as_u64().unwrap() - worker["free_memory_bytes"].as_u64().unwrap();
    assert_eq!(
        reserved,
        1024 << 20,
        "the preview reserves its memory limit: {listed}"
    );
    let engine = SwarmEngine::new(
        preview_exec::compose::Compose::detect().await.unwrap(),
        registry.clone(),
        push_registry.clone(),
    );
    // The database restarted once when it was pinned to its node: it may still be starting.
    let mut usage = engine.usage(id.as_str()).await.unwrap();
    for _ in 0..100 {
        if usage.running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        usage = engine.usage(id.as_str()).await.unwrap();
    }
    assert_eq!(usage.running, 2, "the app and its database: {usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");

    // Update: the new commit starts beside the old one and takes over; the old slot goes.
    let db_task = || async {
        let service = format!("{id}_db");
        docker(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            &service,
        ])
        .await
    };
    let db_before = db_task().await;
    let sha2 = e2e.commit(pr, &with_db("swarm second"), "second").await;
    let sent = Instant::now();
    e2e.send("synchronize", pr, &sha2).await;
    let update_live = wait_live(&e2e, pr, &sha2, sent).await;
    wait_body(&e2e.url(pr), "swarm second\n", Duration::from_secs(30)).await;
    eprintln!("update on the swarm: {:.1} s", update_live.as_secs_f64());
    eventually(
        "the old slot's service to go",
        Duration::from_secs(60),
        || {
            let services = std::process::Command::new("docker")
                .args([
                    "service",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={id}"),
                ])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&services.stdout).lines().count() == 2).then_some(())
        },
    )
    .await;

    assert_eq!(
        db_task().await,
        db_before,
        "the database's task ran through the update"
    );

    // Sleep scales the preview's services to zero; a visit through nginx wakes it.
    // The update's retirement may still hold the preview (409): asked again until it sleeps.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match e2e.ask_to_sleep(id.as_str()).await {
            (200, _) => break,
            (409, _) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (status, body) => panic!("sleep: {status} {body}"),
        }
    }
    assert_eq!(
        engine.usage(id.as_str()).await.unwrap().running,
        0,
        "nothing runs asleep"
    );
    let woke = wait_body(&e2e.url(pr), "swarm second\n", Duration::from_secs(60)).await;
    e2e.wait_status(pr, DeploymentStatus::Running, Duration::from_secs(10))
        .await;
    // The database woke on the node that holds its volume: its pin outlived the sleep.
    let db_service = format!("{id}_db");
    let constraints = docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Placement.Constraints}}",
        &db_service,
    ])
    .await;
    assert!(
        constraints.contains(&format!("node.id == {worker_id}")),
        "the database stays pinned to the worker: {constraints}"
    );
    eprintln!(
        "wake on the swarm, first request to its 200: {:.1} s",
        woke.as_secs_f64()
    );

    let pushed = tags_in_registry(&push_registry, id.as_str()).await;
    assert!(
        pushed.len() >= 3,
        "the app's two commits and the database: {pushed:?}"
    );

    // Close: nothing left on either node, nor in the registry.
    close_leaving_nothing(&e2e, pr, &sha2, &[&worker_host]).await;
    assert_eq!(
        tags_in_registry(&push_registry, id.as_str()).await,
        Vec::<String>::new(),
        "the registry holds none of its images"
    );

    // A worker failure: the preview on the worker is rescheduled on the manager (the ballast
    // is gone, so it fits there), and nginx follows it.
    let pr = 2;
    let id = e2e.id(pr);
    let (sha, warm_live) = open(&e2e, pr, &app("swarm survivor")).await;
    eprintln!(
        "time to live, webhook to running, app alone: compose {:.1} s, swarm {:.1} s (its base image already on the worker)",
        compose_live[1].as_secs_f64(),
        warm_live.as_secs_f64()
    );
    assert_eq!(
        app_node(id.as_str()).await,
        worker_id,
        "the preview runs on the worker"
    );
    wait_body(&e2e.url(pr), "swarm survivor\n", Duration::from_secs(30)).await;
    docker(&["service", "rm", BALLAST]).await;
    let killed = Instant::now();
    let bed_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/swarm-bed.sh");
    let out = std::process::Command::new(bed_script)
        .arg("kill-worker")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = wait_body(&e2e.url(pr), "swarm survivor\n", Duration::from_secs(120)).await;
    let port = e2e.orch.store().ports(&id).unwrap().app;
    assert_eq!(
        routed_to(&e2e, id.as_str()),
        format!("{manager_addr}:{port}")
    );
    assert_ne!(
        app_node(id.as_str()).await,
        worker_id,
        "rescheduled off the dead worker"
    );
    eprintln!(
        "worker killed: served again from the manager after {:.1} s ({:.1} s since the kill)",
        back.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    // The dead worker cannot be cleaned: it keeps the preview's image until it is pruned.
    close_leaving_nothing(&e2e, pr, &sha, &[]).await;

    // Reconcile covers stacks: a stack whose record says stopped (its teardown was lost to a
    // crash) is an orphan, and goes.
    let pr = 3;
    let id = e2e.id(pr);
    open(&e2e, pr, &app("swarm orphan")).await;
    let (_, ticket) = e2e.orch.store().mutate(|s| {
        s.deployments.get_mut(&id).unwrap().status = DeploymentStatus::Stopped;
        ((), true)
    });
    ticket.wait().await.unwrap();
    let report = reconcile(&e2e.runner, e2e.orch.scheduler()).await;
    assert!(report.removed.contains(id.as_str()), "{report:?}");
    assert_eq!(
        left_on_node(None, id.as_str()).await,
        Vec::<String>::new(),
        "on the manager"
    );
    e2e.shutdown().await;

    // A preview that fits on no node waits, with the comment it gets on one host, until it is
    // closed: here each container may use 64 GB, and no node has that much unreserved.
    let big = E2e::start(
        "swarm-big",
        &[
            ("--engine", "swarm".into()),
            ("--swarm-registry", registry.clone()),
            ("--swarm-push-registry", push_registry.clone()),
            ("--preview-memory-limit", "64g".into()),
        ],
    )
    .await;
    let sha = big.commit(1, &app("too big"), "first").await;
    big.send("opened", 1, &sha).await;
    big.wait_comment(1, &["waiting for memory", "needs"], Duration::from_secs(60))
        .await;
    let none = big.id(1);
    assert_eq!(
        left_on_node(None, none.as_str()).await,
        Vec::<String>::new(),
        "nothing of it runs while it waits"
    );
    close_leaving_nothing(&big, 1, &sha, &[]).await;
    big.shutdown().await;
}
