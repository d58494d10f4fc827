//! The lane rules: supersede, close during a deploy, the build limit, stale writes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use preview_orchestrator::{DeploymentStatus, DesiredState};

use crate::harness::{TestServer, sha};

async fn wait_until(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition reached");
}

#[tokio::test]
async fn a_newer_commit_supersedes_the_running_build() {
    let s = TestServer::start(Duration::from_secs(20), &[]).await;
    let a = sha(1, 1);
    let b = sha(1, 2);
    assert_eq!(s.pull_request("opened", 1, &a).await.0, 202);
    wait_until(|| s.runner.started.load(Ordering::SeqCst) == 1).await;
    *s.runner.delay.lock().unwrap() = Duration::from_millis(5);
    let (status, json) = s.pull_request("synchronize", 1, &b).await;
    assert_eq!(status, 202, "{json}");
    s.idle().await;
    let calls = s.runner.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0].sha.as_deref(), calls[0].outcome),
        (Some(a.as_str()), "cancelled")
    );
    assert_eq!(
        (calls[1].sha.as_deref(), calls[1].outcome),
        (Some(b.as_str()), "ok")
    );
    let rec = &s.orch().store().list()[0];
    assert_eq!(rec.status, DeploymentStatus::Running);
    assert_eq!(rec.deployed_sha.as_ref().unwrap().as_str(), b);
    assert!(
        rec.history
            .iter()
            .any(|h| h.status == DeploymentStatus::Superseded && h.sha.as_str() == a),
        "{:?}",
        rec.history
    );
    assert_eq!(s.runner.lane_overlap.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn closing_during_a_deploy_cancels_it_then_tears_down() {
    let s = TestServer::start(Duration::from_secs(20), &[]).await;
    assert_eq!(s.pull_request("opened", 3, &sha(3, 1)).await.0, 202);
    wait_until(|| s.runner.started.load(Ordering::SeqCst) == 1).await;
    *s.runner.delay.lock().unwrap() = Duration::ZERO;
    let (status, json) = s.pull_request("closed", 3, &sha(3, 1)).await;
    assert_eq!(
        (status, json["job"].as_str()),
        (202, Some("teardown")),
        "{json}"
    );
    s.idle().await;
    let kinds: Vec<_> = s
        .runner
        .calls()
        .iter()
        .map(|c| (c.kind, c.outcome))
        .collect();
    assert_eq!(kinds, vec![("deploy", "cancelled"), ("teardown", "ok")]);
    let rec = &s.orch().store().list()[0];
    assert_eq!(rec.status, DeploymentStatus::Stopped);
    assert_eq!(rec.desired, DesiredState::Stopped);
}

#[tokio::test]
async fn at_most_two_builds_run_at_once_by_default() {
    let s = TestServer::start(Duration::from_millis(40), &[]).await;
    let mut handles = Vec::new();
    for pr in 1..=6u64 {
        handles.push(s.pull_request("opened", pr, &sha(pr, 1)).await.0);
    }
    assert!(handles.iter().all(|s| *s == 202));
    s.idle().await;
    assert_eq!(s.runner.max_parallel_deploys.load(Ordering::SeqCst), 2);
    assert_eq!(s.orch().store().read(|st| st.live_count()), 6);
}

#[tokio::test]
async fn a_superseded_job_cannot_overwrite_the_newer_state() {
    let s = TestServer::start(Duration::from_millis(300), &[]).await;
    s.runner.stubborn.store(true, Ordering::SeqCst);
    *s.runner.fail_sha.lock().unwrap() = Some(sha(4, 1));
    assert_eq!(s.pull_request("opened", 4, &sha(4, 1)).await.0, 202);
    wait_until(|| s.runner.started.load(Ordering::SeqCst) == 1).await;
    // The first job ignores cancellation and fails late; its failure must not land on the record.
    assert_eq!(s.pull_request("synchronize", 4, &sha(4, 2)).await.0, 202);
    s.idle().await;
    let rec = &s.orch().store().list()[0];
    assert_eq!(rec.status, DeploymentStatus::Running, "{rec:?}");
    assert_eq!(rec.deployed_sha.as_ref().unwrap().as_str(), sha(4, 2));
    assert_eq!(s.runner.calls()[0].outcome, "failed");
}

#[tokio::test]
async fn failures_are_recorded_with_their_phase() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    *s.runner.fail_sha.lock().unwrap() = Some(sha(6, 1));
    assert_eq!(s.pull_request("opened", 6, &sha(6, 1)).await.0, 202);
    s.idle().await;
    let rec = &s.orch().store().list()[0];
    assert_eq!(
        rec.status,
        DeploymentStatus::Failed {
            reason: "build: exit status 1".into()
        }
    );
    // A redelivery of the same commit retries a failed preview.
    *s.runner.fail_sha.lock().unwrap() = None;
    let (status, json) = s.pull_request("synchronize", 6, &sha(6, 1)).await;
    assert_eq!(
        (status, json["job"].as_str()),
        (202, Some("deploy")),
        "{json}"
    );
    s.idle().await;
    assert_eq!(s.orch().store().list()[0].status, DeploymentStatus::Running);
}

#[tokio::test]
async fn a_panicking_job_fails_itself_not_its_lane() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    *s.runner.panic_sha.lock().unwrap() = Some(sha(7, 1));
    assert_eq!(s.pull_request("opened", 7, &sha(7, 1)).await.0, 202);
    s.idle().await;
    let rec = &s.orch().store().list()[0];
    assert_eq!(
        rec.status,
        DeploymentStatus::Failed {
            reason: format!("runtime: the job panicked: a runner bug at {}", sha(7, 1))
        }
    );
    // The lane and the build slot survive: the next commit deploys.
    assert_eq!(s.pull_request("synchronize", 7, &sha(7, 2)).await.0, 202);
    s.idle().await;
    let rec = &s.orch().store().list()[0];
    assert_eq!(rec.status, DeploymentStatus::Running, "{rec:?}");
    assert_eq!(rec.deployed_sha.as_ref().unwrap().as_str(), sha(7, 2));
    assert_eq!(s.orch().scheduler().active_jobs(), 0);
}

#[tokio::test]
async fn unfinished_work_resumes_after_a_restart() {
    let s = TestServer::start(Duration::from_secs(30), &[]).await;
    assert_eq!(s.pull_request("opened", 8, &sha(8, 1)).await.0, 202);
    assert_eq!(s.pull_request("opened", 9, &sha(9, 1)).await.0, 202);
    wait_until(|| s.runner.started.load(Ordering::SeqCst) == 2).await;
    // Shutdown cancels both builds at a safe point; they stay unfinished in the store.
    let (dir, runner) = s.stop().await;
    assert!(runner.calls().iter().all(|c| c.outcome == "cancelled"));
    *runner.delay.lock().unwrap() = Duration::ZERO;
    let s = TestServer::start_in(dir, runner, &[]).await;
    s.idle().await;
    let recs = s.orch().store().list();
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter().all(|r| r.status == DeploymentStatus::Running),
        "{recs:?}"
    );
}
