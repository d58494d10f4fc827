//! Crash: `kill -9` of the real `preview-orchestrator` binary (started as systemd starts it, from
//! an env file) in the middle of a deploy on the real engine (a private nginx, a fake GitHub, a
//! git host over smart HTTP), then a restart on the same store and dirs. The resumed deploy must
//! leave the preview running at the last sha, answering through nginx and on its own port, with
//! one app container and one nginx conf; never nothing, never the previous commit. The only
//! exception is a build that fails by itself, which the build log shows.
//!
//! The kill lands at each phase that takes time: during the `git fetch` (the git host holds the
//! request), the image build (a slow build step), readiness (an app slow to listen) and the nginx
//! switch (the nginx test command waits on a gate file). Both for a first deploy and for an update
//! of a running preview, whose previous commit was live before the crash.
//!
//! The kill hits only the orchestrator's own process (as `kill -9 PID` does): the `docker
//! compose` or `git` it started may outlive it, and the test waits for every process it left in
//! the work dir to end before it judges the result.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use preview_testkit::{free_port, http_get, nginx_binary, unique_suffix, wait_for_http};
use serde_json::Value;

use crate::e2e_support::{Daemon, DaemonWorld, GitHttpServer, Tree, processes_under, services_of};

/// Where in a deploy the orchestrator is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    Fetch,
    Build,
    Readiness,
    NginxSwitch,
}

const ALL_POINTS: [KillPoint; 4] = [
    KillPoint::Fetch,
    KillPoint::Build,
    KillPoint::Readiness,
    KillPoint::NginxSwitch,
];

/// The Python stdlib sample answering `body`, slowed down where `point` needs time to kill in:
/// a build step that sleeps (and names `body`, so the test knows whose build the log shows), or
/// an app that sleeps before it listens.
fn app(body: &str, point: Option<KillPoint>) -> Tree {
    let tree = Tree::fixture("python-plain").replace("python-plain ok", body);
    match point {
        Some(KillPoint::Build) => tree.with(
            "preview-config.yml",
            format!("build_commands:\n  - \"echo building {body} && sleep 6\"\n"),
        ),
        Some(KillPoint::Readiness) => tree.replace(
            "if __name__ == \"__main__\":\n",
            "if __name__ == \"__main__\":\n    import time\n    time.sleep(5)\n",
        ),
        _ => tree,
    }
}

/// The nginx test command's wrapper: while the gate file exists it records that the switch was
/// reached and waits, so the orchestrator can be killed between writing the conf and reloading.
const GATED_COMMAND: &str = "#!/bin/sh\n\
    gate=\"$1\"; reached=\"$2\"; shift 2\n\
    while [ -e \"$gate\" ]; do touch \"$reached\"; sleep 0.05; done\n\
    exec \"$@\"\n";

/// A [`DaemonWorld`] whose git host can hold a fetch and whose nginx switch can be held.
struct CrashWorld {
    world: DaemonWorld,
    git: GitHttpServer,
    gate: PathBuf,
    reached: PathBuf,
}

impl CrashWorld {
    async fn new(name: &str) -> Self {
        let world = DaemonWorld::new(name, &[]).await;
        let port = free_port();
        let git = GitHttpServer::start(port, world.dir.path().join("git"), 0).await;
        let script = world.dir.path().join("gated-nginx-test");
        std::fs::write(&script, GATED_COMMAND).unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        let gate = world.dir.path().join("nginx-gate");
        let reached = world.dir.path().join("nginx-gate-reached");
        let test_command = format!(
            "{} {} {} {} -p {} -c {} -t",
            script.display(),
            gate.display(),
            reached.display(),
            nginx_binary(),
            world.nginx.prefix().display(),
            world.nginx.conf_file().display()
        );
        world.set(&[
            ("--git-base-url", format!("http://127.0.0.1:{port}")),
            ("--nginx-test-command", test_command),
        ]);
        Self {
            world,
            git,
            gate,
            reached,
        }
    }

    /// Arms what holds the deploy at `point` (the git host, the nginx gate).
    fn arm(&self, point: KillPoint) {
        match point {
            KillPoint::Fetch => self.git.stall(),
            KillPoint::NginxSwitch => {
                let _ = std::fs::remove_file(&self.reached);
                std::fs::write(&self.gate, "").unwrap();
            }
            KillPoint::Build | KillPoint::Readiness => {}
        }
    }

    /// Lets held work go on (after the kill, so the survivors can end).
    fn disarm(&self) {
        self.git.release();
        let _ = std::fs::remove_file(&self.gate);
    }

    /// Waits until PR `pr`'s deploy of `body` is at `point`; panics with the record and the
    /// comments if it fails or finishes first.
    async fn wait_at(&self, daemon: &Daemon, pr: u64, sha: &str, body: &str, point: KillPoint) {
        let build_log = self.world.work(pr).join("logs/build.log");
        let needle = format!("building {body}");
        let held_before = self.git.held();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let rec = daemon.preview(&self.world.id(pr)).await;
            let state = rec
                .as_ref()
                .and_then(|r| r["status"]["state"].as_str())
                .unwrap_or("none")
                .to_owned();
            let reached = match point {
                KillPoint::Fetch => self.git.held() > held_before,
                KillPoint::Build => std::fs::read_to_string(&build_log)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains(&needle) && !l.contains("RUN")),
                KillPoint::Readiness => state == "starting",
                KillPoint::NginxSwitch => self.reached.exists(),
            };
            if reached {
                return;
            }
            let done = rec.as_ref().is_some_and(|r| r["deployedSha"] == sha);
            assert!(
                state != "failed" && !done,
                "PR {pr} ended {state} before the kill at {point:?}: {rec:?}\ncomments: {:#?}",
                self.world.github.comments()
            );
            assert!(
                Instant::now() < deadline,
                "PR {pr} did not reach {point:?}: {rec:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivers `action` for PR `pr` at a new commit serving `body`, kills the daemon at `point`,
    /// restarts it and requires the preview running at that commit. Returns the new daemon.
    async fn crash_at(
        &self,
        daemon: Daemon,
        pr: u64,
        action: &str,
        point: KillPoint,
    ) -> (Daemon, String) {
        let body = format!("pr {pr} {point:?} {}", unique_suffix());
        let sha = self
            .world
            .origin
            .commit(pr, &app(&body, Some(point)), "crash")
            .await;
        self.arm(point);
        self.world.send(&daemon, action, pr, &sha).await;
        self.wait_at(&daemon, pr, &sha, &body, point).await;
        let killed = Instant::now();
        daemon.kill9();
        self.disarm();
        eprintln!(
            "PR {pr} {action}, killed at {point:?}; survivors: {:?}",
            processes_under(&self.world.work(pr))
        );
        let daemon = self.world.start();
        self.assert_running_at(&daemon, pr, &sha, &body).await;
        eprintln!(
            "PR {pr} {action}, killed at {point:?}: running at the last sha {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        (daemon, sha)
    }

    /// The required outcome: PR `pr` running at `sha`, answering `body` through nginx and on its
    /// own port, with one app container and one nginx conf (no staged or backup copy). No
    /// failure is excused: these apps' build steps cannot fail by themselves, and a step killed
    /// by the crash prints what a failing step prints (`exit code: 137`).
    async fn assert_running_at(&self, daemon: &Daemon, pr: u64, sha: &str, body: &str) {
        let id = self.world.id(pr);
        daemon.settled(&id).await;
        // A compose or git process of the killed orchestrator may still be at work.
        self.world.wait_survivors_gone(pr).await;
        let rec = daemon.settled(&id).await;
        let state = rec["status"]["state"].as_str().unwrap_or("none");
        assert_eq!(
            state,
            "running",
            "PR {pr} after the restart: {rec}\ncomments: {:#?}",
            self.world.github.comments()
        );
        assert_eq!(rec["deployedSha"], sha, "{rec}");
        assert_eq!(rec["headSha"], sha, "{rec}");
        let path = self.world.path(pr);
        wait_for_http(
            self.world.nginx.port(),
            &path,
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
        let objects = self.world.leftovers(pr).await;
        let count = |kind: &str| objects.iter().filter(|o| o.starts_with(kind)).count();
        assert_eq!(count("container "), 1, "{objects:?}");
        assert_eq!(count("nginx conf "), 1, "{objects:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_first_deploy_then_restart_runs_the_commit() {
    let crash = CrashWorld::new("crash-open").await;
    let mut daemon = crash.world.start();
    let mut closing = Vec::new();
    for (pr, point) in (11..).zip(ALL_POINTS) {
        let (next, sha) = crash.crash_at(daemon, pr, "opened", point).await;
        daemon = next;
        closing.push((pr, sha));
    }
    for (pr, sha) in closing {
        crash.world.close_and_check(&daemon, pr, &sha).await;
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_update_then_restart_runs_the_last_commit() {
    let crash = CrashWorld::new("crash-sync").await;
    let pr = 3;
    let first = format!("crash sync first {}", unique_suffix());
    let sha = crash
        .world
        .origin
        .commit(pr, &app(&first, None), "first")
        .await;
    let mut daemon = crash.world.start();
    crash.world.send(&daemon, "opened", pr, &sha).await;
    let rec: Value = daemon.settled(&crash.world.id(pr)).await;
    assert_eq!(
        rec["status"]["state"],
        "running",
        "{rec}\ncomments: {:#?}",
        crash.world.github.comments()
    );
    let mut last = sha;
    for point in ALL_POINTS {
        let (next, sha) = crash.crash_at(daemon, pr, "synchronize", point).await;
        daemon = next;
        last = sha;
    }
    crash.world.close_and_check(&daemon, pr, &last).await;
    daemon.stop().await;
}

/// A kill between an update's nginx switch and the retirement of the old slot, for a preview
/// with a second web service at its own hostname (the compose-two-web fixture): nginx already
/// routes both hosts to the new slot's ports. The restart records the switch for both ports
/// (the service's follows the app's) and the resumed job ends with the preview running at the
/// last commit on both hosts, one container per service, each publishing the port the
/// allocation holds for it, no next port held, and nothing of the old slot left.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_switch_and_retire_moves_the_second_service_port_too() {
    use preview_testkit::http_get_host;

    let world = DaemonWorld::new_with_hostnames("crash-second", &[]).await;
    let pr = 5;
    let id = world.id(pr);
    let preview = preview_core::id::PreviewId::parse(&id).unwrap();
    let hosts = [
        format!(
            "{}.{}",
            preview.host_label(),
            crate::e2e_support::PREVIEW_DOMAIN
        ),
        format!(
            "{}.{}",
            preview.service_host_label("admin"),
            crate::e2e_support::PREVIEW_DOMAIN
        ),
    ];
    let tree = Tree::fixture("compose-two-web");
    let sha = world.origin.commit(pr, &tree, "first").await;
    let daemon = world.start();
    world.send(&daemon, "opened", pr, &sha).await;
    let rec = daemon.settled(&id).await;
    assert_eq!(rec["status"]["state"], "running", "{rec}");
    let before = rec["ports"].clone();

    let v2 = tree
        .replace("admin: compose-two-web", "admin v2: compose-two-web")
        .replace("web: compose-two-web at", "web v2: compose-two-web at");
    let sha2 = world.origin.commit(pr, &v2, "v2 of both").await;
    // A connection held open to the old admin port holds the drain after the switch (up to its
    // 30 s), so that the kill lands before the retirement however loaded the machine is.
    let old_service_port = before["service"].as_u64().expect("a service port") as u16;
    let held = std::net::TcpStream::connect(("127.0.0.1", old_service_port)).unwrap();
    world.send(&daemon, "synchronize", pr, &sha2).await;
    // The switch is done once the conf routes elsewhere and its backup is gone; the drain of
    // the old ports follows, then the retirement.
    let conf = world.nginx.conf_dir().join(format!("{id}.conf"));
    let old_app = format!("127.0.0.1:{};", before["app"]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&conf).unwrap_or_default();
        if !text.is_empty()
            && !text.contains(&old_app)
            && !conf.with_extension("conf.previous").exists()
        {
            break;
        }
        let rec = daemon.preview(&id).await;
        assert!(
            rec.as_ref()
                .is_some_and(|r| r["status"]["state"] != "failed" && r["deployedSha"] != sha2),
            "the update ended before the kill: {rec:?}"
        );
        assert!(Instant::now() < deadline, "the update never switched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    drop(held);
    let at_kill = services_of(&id).await;
    eprintln!("killed between the switch and the retirement; containers: {at_kill:?}");
    assert_eq!(at_kill.len(), 4, "both slots run at the kill: {at_kill:?}");
    world.wait_survivors_gone(pr).await;

    let daemon = world.start();
    let rec = daemon.settled(&id).await;
    assert_eq!(rec["status"]["state"], "running", "{rec}");
    assert_eq!(rec["deployedSha"], sha2, "{rec}");
    let ports = &rec["ports"];
    assert!(
        ports["nextApp"].is_null() && ports["nextService"].is_null(),
        "{rec}"
    );
    let port = world.nginx.port();
    for (host, body) in hosts.iter().zip([
        "web v2: compose-two-web at /\n",
        "admin v2: compose-two-web at /\n",
    ]) {
        wait_for_http_host(port, host, body).await;
    }
    // One container per service, each publishing the port the allocation holds for it.
    let after = services_of(&id).await;
    assert_eq!(after.len(), 2, "{after:?}");
    let published = preview_testkit::docker([
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--format",
        "{{.Ports}}",
    ])
    .await
    .unwrap();
    let mut published: Vec<&str> = published.lines().collect();
    published.sort_unstable();
    let mut expected = vec![
        format!("127.0.0.1:{}->8000/tcp", ports["app"]),
        format!("127.0.0.1:{}->3000/tcp", ports["service"]),
    ];
    expected.sort();
    assert_eq!(published, expected, "{rec}");
    let direct = http_get_host(
        u16::try_from(ports["service"].as_u64().unwrap()).unwrap(),
        "localhost",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(direct.body, "admin v2: compose-two-web at /\n");
    let objects = world.leftovers(pr).await;
    assert_eq!(
        objects
            .iter()
            .filter(|o| o.starts_with("nginx conf "))
            .count(),
        1,
        "{objects:?}"
    );

    world.close_and_check(&daemon, pr, &sha2).await;
    daemon.stop().await;
}

/// Waits until nginx answers `/` of `host` with `body` (30 s at most).
async fn wait_for_http_host(port: u16, host: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = preview_testkit::http_get_host(port, host, "/").await;
        if answer
            .as_ref()
            .is_ok_and(|a| a.status == 200 && a.body == body)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{host}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
