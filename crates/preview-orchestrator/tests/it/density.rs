//! Density on the real engine: builds leave no leftovers (untagged stage images, stopped build
//! containers), a disk guard makes new builds wait while the disk is nearly full, admission by
//! memory puts idle previews to sleep or makes a deploy wait, and the PR comment shows the
//! preview's footprint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use preview_engine::build_objects::{BuildObjects, objects_in_log};
use preview_orchestrator::DeploymentStatus;
use preview_testkit::docker;

use crate::e2e_support::{E2e, Tree, built_image_ids};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// A repo Dockerfile of two stages, unique to `token` (so nothing comes from the cache); its
/// last step fails when `fail`.
fn two_stage(token: &str, fail: bool) -> Tree {
    let last = if fail {
        "RUN exit 3"
    } else {
        "CMD [\"python3\", \"main.py\"]"
    };
    Tree::fixture("repo-dockerfile").with(
        "Dockerfile",
        format!(
            "FROM python:3.12-slim-bookworm AS build\nRUN echo {token} > /built\nRUN echo {token}-2 >> /built\n\nFROM python:3.12-slim-bookworm\nWORKDIR /srv\nCOPY --from=build /built /built\nCOPY main.py .\nENV PORT=9000\nUSER 10001\nEXPOSE 9000\n{last}\n"
        ),
    )
}

/// The copies of preview `id`'s build logs under the orchestrator's logs dir.
fn archived_build_logs(logs_dir: &Path, id: &str) -> Vec<PathBuf> {
    let dir = logs_dir.join("builds").join(id);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    logs.sort();
    logs
}

/// Which of `objects` exist on the engine now, as `container ID` / `image ID` lines.
async fn still_there(objects: &BuildObjects) -> Vec<String> {
    let containers = docker(["ps", "-a", "--format", "{{.ID}}"]).await.unwrap();
    let images = docker(["image", "ls", "-a", "-q"]).await.unwrap();
    let containers: BTreeSet<&str> = containers.lines().collect();
    let images: BTreeSet<&str> = images.lines().collect();
    let base = docker([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "python:3.12-slim-bookworm",
    ])
    .await
    .unwrap();
    let mut left: Vec<String> = objects
        .containers
        .iter()
        .filter(|c| containers.contains(c.as_str()))
        .map(|c| format!("container {c}"))
        .collect();
    left.extend(
        objects
            .images
            .iter()
            // The base image is named by the FROM steps, and stays.
            .filter(|i| images.contains(i.as_str()) && !base.contains(i.as_str()))
            .map(|i| format!("image {i}")),
    );
    left
}

/// The control: the same failing build run by hand leaves a stopped container and untagged
/// images (what the orchestrator must remove). Removes them afterwards.
async fn by_hand_leaves_leftovers(dir: &Path) -> usize {
    let token = format!("by-hand-{}", std::process::id());
    let tree = two_stage(&token, true);
    for (path, bytes) in &tree.0 {
        std::fs::write(dir.join(path), bytes).unwrap();
    }
    std::fs::write(
        dir.join("docker-compose.yml"),
        "services:\n  app:\n    build: .\n",
    )
    .unwrap();
    let project = format!("density-control-{}", std::process::id());
    // As the orchestrator does, so that other tests' builds and removals do not meet this one's.
    let building = preview_engine::image_lock::for_build(&dir.join("build.log")).await;
    let out = preview_exec::Cmd::new("docker", "a failing build by hand")
        .args(["compose", "-p", &project, "build"])
        .current_dir(dir)
        .pass_env("HOME")
        .timeout(Duration::from_secs(300))
        .output()
        .await
        .unwrap();
    drop(building);
    let log = format!("{}{}", out.stdout_text(), out.stderr_text());
    let objects = objects_in_log(&log);
    let left = still_there(&objects).await;
    // Clean up what the control left.
    let _removing = preview_engine::image_lock::for_removal().await;
    for line in &left {
        let (kind, id) = line.split_once(' ').unwrap();
        let _ = match kind {
            "container" => docker(["rm", "-f", id]).await,
            _ => docker(["image", "rm", id]).await,
        };
    }
    left.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_builds_and_teardowns_leave_no_build_leftovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let control = tempfile::tempdir().unwrap();
    let by_hand = by_hand_leaves_leftovers(control.path()).await;
    assert!(
        by_hand >= 3,
        "the classic builder leaves a failed step's container and the stage images: {by_hand}"
    );

    let e2e = E2e::start("leftovers", &[]).await;
    let logs_dir = e2e.dir.path().join("logs");
    let token = format!("leftovers-{}", std::process::id());

    // A failed first deploy.
    let pr = 1;
    let id = e2e.id(pr);
    let sha = e2e
        .commit(pr, &two_stage(&format!("{token}-failed"), true), "fails")
        .await;
    e2e.send("opened", pr, &sha).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(reason.starts_with("build:"), "{reason}");
    e2e.idle(Duration::from_secs(120)).await;
    let logs = archived_build_logs(&logs_dir, id.as_str());
    let [log] = logs.as_slice() else {
        panic!("one build log: {logs:?}")
    };
    let named = objects_in_log(&std::fs::read_to_string(log).unwrap());
    assert!(
        !named.containers.is_empty() && named.images.len() >= 3,
        "the build log names the failed step's container and the stage images: {named:?}"
    );
    let left = still_there(&named).await;
    eprintln!(
        "a failed two-stage build: by hand {by_hand} leftovers stay; through the orchestrator \
         its log named {} containers and {} images, and {} of them are left",
        named.containers.len(),
        named.images.len(),
        left.len()
    );
    assert_eq!(left, Vec::<String>::new());
    e2e.assert_nothing_left(pr).await;

    // A two-stage build that serves, then a push (an update), then the teardown.
    let pr = 2;
    let id = e2e.id(pr);
    let first = e2e
        .commit(pr, &two_stage(&format!("{token}-one"), false), "one")
        .await;
    e2e.send("opened", pr, &first).await;
    e2e.wait_status(pr, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    let second = e2e
        .commit(pr, &two_stage(&format!("{token}-two"), false), "two")
        .await;
    e2e.send("synchronize", pr, &second).await;
    crate::e2e_support::eventually("the update to serve", DEPLOY_TIMEOUT, || {
        e2e.record(pr).filter(|r| {
            r.status == DeploymentStatus::Running
                && r.deployed_sha.as_ref().map(|s| s.as_str()) == Some(second.as_str())
        })
    })
    .await;
    e2e.idle(Duration::from_secs(120)).await;
    let logs = archived_build_logs(&logs_dir, id.as_str());
    assert_eq!(logs.len(), 2, "{logs:?}");
    let first_build = objects_in_log(&std::fs::read_to_string(&logs[0]).unwrap());
    let second_build = objects_in_log(&std::fs::read_to_string(&logs[1]).unwrap());
    // The first commit's stage image went with its retirement; the second's serves.
    let first_only = BuildObjects {
        containers: BTreeSet::new(),
        images: first_build
            .images
            .difference(&second_build.images)
            .cloned()
            .collect(),
    };
    assert!(!first_only.images.is_empty());
    assert_eq!(still_there(&first_only).await, Vec::<String>::new());
    assert!(
        !still_there(&second_build).await.is_empty(),
        "the serving commit's images stay"
    );
    // A build under way (here, held by the test) holds back the removal of images, which may
    // be its cache, and only that: the containers go at once, the images once it ends.
    let building = preview_engine::image_lock::for_build(&e2e.dir.path().join("held.log")).await;
    e2e.send("closed", pr, &second).await;
    let label = format!("label=com.docker.compose.project={id}");
    let deadline = std::time::Instant::now() + DEPLOY_TIMEOUT;
    while !docker(["ps", "-aq", "--filter", &label])
        .await
        .unwrap()
        .trim()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the containers go");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let images = built_image_ids(id.as_str()).await;
    assert!(
        !images.trim().is_empty(),
        "the preview's images stay while a build runs"
    );
    drop(building);
    e2e.wait_status(pr, DeploymentStatus::Stopped, DEPLOY_TIMEOUT)
        .await;
    e2e.assert_nothing_left(pr).await;
    assert_eq!(still_there(&second_build).await, Vec::<String>::new());
    e2e.shutdown().await;
}

/// The disk guard prunes what no preview uses, which would remove the control's leftovers
/// (and a prune could race the leftovers test's counts): these tests run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tmpfs of `size_mb` MB mounted on a temp dir, unmounted on drop: a real filesystem whose
/// free space the test controls.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size_mb: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount (the test bed runs as root)");
        assert!(status.success(), "mounting a tmpfs failed");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_waits_while_the_disk_is_short_and_goes_on_when_space_frees() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fs = SmallFs::mount(64);
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 40 << 20]).unwrap();
    let e2e = E2e::start(
        "diskguard",
        &[
            ("--disk-guard-path", fs.path().display().to_string()),
            // 0.04 GB is about 43 MB; 24 MB are free.
            ("--min-free-disk-gb", "0.04".into()),
            ("--room-retry-secs", "1".into()),
        ],
    )
    .await;
    let pr = 1;
    let id = e2e.id(pr);
    let sha = e2e
        .commit(pr, &Tree::fixture("python-plain"), "first")
        .await;
    e2e.send("opened", pr, &sha).await;
    let comment = e2e
        .wait_comment(
            pr,
            &[
                "Preview waiting for disk space",
                "0.04 GB",
                "MIN_FREE_DISK_GB",
                &sha[..7],
            ],
            Duration::from_secs(60),
        )
        .await;
    assert!(comment.body.contains("GB free"), "{}", comment.body);
    let waiting = e2e.record(pr).unwrap();
    assert_eq!(waiting.status, DeploymentStatus::Queued);
    let built = built_image_ids(id.as_str()).await;
    assert_eq!(built, "", "nothing is built while the disk is short");

    // Space frees: the build goes on by itself.
    std::fs::remove_file(&filler).unwrap();
    e2e.wait_status(pr, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    // The live comment shows the footprint, read from the engine.
    let live = e2e
        .wait_comment(
            pr,
            &[
                "Preview live",
                "| State | awake |",
                "| Build |",
                "| Start |",
            ],
            Duration::from_secs(30),
        )
        .await;
    let memory = row_bytes(&live.body, "Memory");
    let disk = row_bytes(&live.body, "Disk");
    assert!(memory > 0, "the app uses some memory: {}", live.body);
    assert!(disk > 0, "its image takes some disk: {}", live.body);
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}

/// The size in bytes the comment's table row `name` starts with (`| Memory | 41 MB in use |`),
/// give or take its rounding.
fn row_bytes(body: &str, name: &str) -> u64 {
    let prefix = format!("| {name} | ");
    let line = body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} row in {body}"));
    let mut words = line.split(' ');
    let number: f64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(-1.0);
    let unit = match words.next() {
        Some("B") => 1.0,
        Some("kB") => 1024.0,
        Some("MB") => 1024.0 * 1024.0,
        Some("GB") => 1024.0 * 1024.0 * 1024.0,
        _ => -1.0,
    };
    assert!(
        number >= 0.0 && unit > 0.0,
        "the {name} row is not a size: {line}"
    );
    (number * unit) as u64
}

/// Writes a meminfo file saying `total_mb` and `available_mb`.
fn write_meminfo(path: &Path, total_mb: u64, available_mb: u64) {
    std::fs::write(
        path,
        format!(
            "MemTotal:       {} kB\nMemFree:        {} kB\nMemAvailable:   {} kB\n",
            total_mb * 1024,
            available_mb * 1024,
            available_mb * 1024
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_by_memory_puts_idle_previews_to_sleep_then_waits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let meminfo_dir = tempfile::tempdir().unwrap();
    let meminfo = meminfo_dir.path().join("meminfo");
    write_meminfo(&meminfo, 4096, 3072);
    let e2e = E2e::start(
        "admission",
        &[
            ("--idle-sleep-secs", "3600".into()),
            ("--preview-memory-limit", "64m".into()),
            ("--memory-reserve-mb", "0".into()),
            ("--meminfo-path", meminfo.display().to_string()),
            ("--min-free-disk-gb", "0".into()),
            // Only a sleep or a teardown makes a waiting deploy look again.
            ("--room-retry-secs", "600".into()),
        ],
    )
    .await;
    let port = e2e.nginx.port();
    let app = |body: &str| Tree::fixture("python-plain").replace("python-plain ok", body);

    // PR 1 serves, then has no visit for longer than RECENTLY_USED.
    let one = e2e.commit(1, &app("one ok"), "one").await;
    e2e.send("opened", 1, &one).await;
    e2e.wait_status(1, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    preview_testkit::wait_for_http(port, &e2e.path(1), Duration::from_secs(30), |a| {
        a.status == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;

    // PR 2's 64 MB do not fit in 63 MB: PR 1 sleeps to make room, and PR 2 starts.
    write_meminfo(&meminfo, 4096, 63);
    let two = e2e.commit(2, &app("two ok"), "two").await;
    e2e.send("opened", 2, &two).await;
    e2e.wait_status(2, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    assert_eq!(e2e.record(1).unwrap().status, DeploymentStatus::Sleeping);
    e2e.wait_comment(
        1,
        &["Asleep, wakes on the next visit"],
        Duration::from_secs(30),
    )
    .await;

    // PR 3 does not fit, and PR 2 was just used: it waits, and says for what.
    write_meminfo(&meminfo, 4096, 10);
    let three = e2e.commit(3, &app("three ok"), "three").await;
    e2e.send("opened", 3, &three).await;
    e2e.wait_comment(
        3,
        &[
            "waiting for memory: 4.0 GB of 4.0 GB in use by 1 preview.",
            "needs 64 MB",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(e2e.record(3).unwrap().status, DeploymentStatus::Queued);
    assert_eq!(e2e.record(2).unwrap().status, DeploymentStatus::Running);

    // Memory frees and PR 1 is closed: the teardown lets PR 3 look again, and it starts.
    write_meminfo(&meminfo, 4096, 3072);
    e2e.close_and_assert_nothing_left(1, &one).await;
    e2e.wait_status(3, DeploymentStatus::Running, Duration::from_secs(120))
        .await;
    let page = preview_testkit::wait_for_http(port, &e2e.path(3), Duration::from_secs(30), |a| {
        a.status == 200
    })
    .await;
    assert_eq!(page.body, "three ok\n");

    // A wake makes room the same way: PR 3 sleeps, PR 2 goes unvisited, and a visit to PR 3
    // when its 64 MB do not fit puts PR 2 to sleep first.
    let url = format!("{}/api/previews/{}/sleep", e2e.api, e2e.id(3));
    let slept = reqwest::Client::new()
        .post(url)
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .unwrap();
    assert!(slept.status().is_success(), "{}", slept.status());
    e2e.wait_status(3, DeploymentStatus::Sleeping, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    write_meminfo(&meminfo, 4096, 63);
    let woke = preview_testkit::wait_for_http(port, &e2e.path(3), Duration::from_secs(60), |a| {
        a.status == 200
    })
    .await;
    assert_eq!(woke.body, "three ok\n");
    e2e.wait_status(2, DeploymentStatus::Sleeping, Duration::from_secs(30))
        .await;
    e2e.close_and_assert_nothing_left(2, &two).await;
    e2e.close_and_assert_nothing_left(3, &three).await;
    e2e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_waiting_for_memory_lets_others_build() {
    let _one = ONE_AT_A_TIME.lock().await;
    let meminfo_dir = tempfile::tempdir().unwrap();
    let meminfo = meminfo_dir.path().join("meminfo");
    // 100 MB: one container of 64 MB fits, two do not.
    write_meminfo(&meminfo, 4096, 100);
    let e2e = E2e::start(
        "admission-slot",
        &[
            ("--max-concurrent-builds", "1".into()),
            ("--preview-memory-limit", "64m".into()),
            ("--memory-reserve-mb", "0".into()),
            ("--meminfo-path", meminfo.display().to_string()),
            ("--min-free-disk-gb", "0".into()),
            ("--room-retry-secs", "600".into()),
        ],
    )
    .await;
    // PR 1 has a database too: its two containers do not fit, and it waits.
    let with_db = Tree::fixture("python-plain").with("preview-config.yml", "database: postgres\n");
    let one = e2e.commit(1, &with_db, "with a database").await;
    e2e.send("opened", 1, &one).await;
    e2e.wait_comment(
        1,
        &["Preview waiting for memory", "needs 128 MB"],
        Duration::from_secs(60),
    )
    .await;
    // The only build slot is free meanwhile: PR 2, whose one container fits, deploys.
    let two = e2e.commit(2, &Tree::fixture("python-plain"), "small").await;
    e2e.send("opened", 2, &two).await;
    e2e.wait_status(2, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    assert_eq!(e2e.record(1).unwrap().status, DeploymentStatus::Queued);
    // Memory frees and PR 2 is closed: PR 1 takes the slot again and deploys.
    write_meminfo(&meminfo, 4096, 3072);
    e2e.close_and_assert_nothing_left(2, &two).await;
    e2e.wait_status(1, DeploymentStatus::Running, DEPLOY_TIMEOUT)
        .await;
    e2e.wait_comment(1, &["Preview live"], Duration::from_secs(30))
        .await;
    e2e.close_and_assert_nothing_left(1, &one).await;
    e2e.shutdown().await;
}
