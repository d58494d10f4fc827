//! The storm: 1,000 signed webhooks for 50 PRs, concurrently and out of order, against slow-ish
//! jobs, while a reader keeps parsing the store file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use preview_orchestrator::DeploymentStatus;
use rand::seq::SliceRandom;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::harness::{TestServer, delivery, pr_event, sha};

const PRS: u64 = 50;
const PER_PR: u64 = 20;

/// Reads the store file until told to stop; every read must parse, and no two live previews may
/// share a port. Returns the number of reads.
fn spawn_reader(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut reads = 0;
        while !stop.load(Ordering::Relaxed) {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                        panic!("store file is not valid JSON during the storm: {e}")
                    });
                    assert_eq!(v["schemaVersion"], 1);
                    let mut ports = BTreeSet::new();
                    for alloc in v["portAllocations"].as_object().unwrap().values() {
                        for key in ["app", "db"] {
                            if let Some(p) = alloc[key].as_u64() {
                                assert!(ports.insert(p), "port {p} allocated twice");
                            }
                        }
                    }
                    reads += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading the store: {e}"),
            }
        }
        reads
    })
}

fn check_final(s: &TestServer, last: &BTreeMap<u64, String>) {
    let recs = s.orch().store().list();
    assert_eq!(recs.len(), PRS as usize, "exactly one deployment per PR");
    let mut ports = BTreeSet::new();
    for rec in &recs {
        let want = &last[&(rec.pr_number.get() as u64)];
        assert_eq!(
            rec.status,
            DeploymentStatus::Running,
            "{}: {:?}",
            rec.id,
            rec.status
        );
        assert_eq!(rec.head_sha.as_str(), want, "{}", rec.id);
        assert_eq!(
            rec.deployed_sha.as_ref().map(|s| s.as_str()),
            Some(want.as_str()),
            "{}",
            rec.id
        );
        let alloc = s
            .orch()
            .store()
            .ports(&rec.id)
            .expect("a live preview holds ports");
        for p in alloc.ports() {
            assert!(ports.insert(p), "port {p} shared by two live previews");
        }
        // The last successful deploy the runner ran for this PR was at the last sha.
        let last_ok = s
            .runner
            .calls()
            .into_iter()
            .rfind(|c| c.id == rec.id.as_str() && c.kind == "deploy" && c.outcome == "ok")
            .expect("a successful deploy");
        assert_eq!(last_ok.sha.as_deref(), Some(want.as_str()));
    }
    assert_eq!(
        s.runner.lane_overlap.load(Ordering::SeqCst),
        0,
        "two jobs of one lane overlapped"
    );
    assert!(s.runner.max_parallel_deploys.load(Ordering::SeqCst) <= 2);
    // And the file on disk says the same, after a restart-grade strict load.
    let loaded = preview_orchestrator::store::load(&s.store_path()).unwrap();
    assert_eq!(loaded.deployments.len(), PRS as usize);
    for rec in loaded.deployments.values() {
        assert_eq!(rec.head_sha.as_str(), last[&(rec.pr_number.get() as u64)]);
    }
}

/// Fully random arrival order; each PR's order is carried by `pull_request.updated_at`, so the
/// last sha of a PR is the one with the newest timestamp, wherever it lands in the storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_in_random_order() {
    let s = TestServer::start(Duration::from_millis(6), &[]).await;
    let mut events = Vec::new();
    let mut last = BTreeMap::new();
    for pr in 1..=PRS {
        for k in 0..PER_PR {
            let action = if k == 0 { "opened" } else { "synchronize" };
            let at = format!("2024-05-01T10:{:02}:{:02}Z", k / 60, k % 60);
            events.push(pr_event(action, pr, &sha(pr, k), Some(&at)));
        }
        last.insert(pr, sha(pr, PER_PR - 1));
    }
    events.shuffle(&mut rand::rng());

    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(s.store_path(), stop.clone());
    let sem = Arc::new(Semaphore::new(32));
    let queued = Arc::new(AtomicUsize::new(0));
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for body in events {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let s = s.clone();
        let queued = queued.clone();
        tasks.push(tokio::spawn(async move {
            let (status, json) = s.deliver("pull_request", &body, &delivery()).await;
            assert_eq!(status, 202, "{json}");
            if json["status"] == "queued" {
                queued.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    s.idle().await;
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    check_final(&s, &last);
    let q = queued.load(Ordering::Relaxed);
    assert!(
        q >= PRS as usize && q < 1000,
        "queued {q}: stale ones are ignored"
    );
    eprintln!(
        "random storm: {q} of 1000 queued, {reads} store reads, {} jobs run",
        s.runner.calls().len()
    );
}

/// Every PR's events are sent in order (no timestamps), the PRs interleaved at random, so the
/// last sha is the latest sent; builds overlap with newer synchronize events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_overlapping_synchronize() {
    let s = Arc::new(TestServer::start(Duration::from_millis(6), &[]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(s.store_path(), stop.clone());
    let mut last = BTreeMap::new();
    let mut tasks = Vec::new();
    for pr in 1..=PRS {
        last.insert(pr, sha(pr + 100, PER_PR - 1));
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..PER_PR {
                let action = if k == 0 { "opened" } else { "synchronize" };
                let body = pr_event(action, pr, &sha(pr + 100, k), None);
                let (status, json) = s.deliver("pull_request", &body, &delivery()).await;
                assert_eq!(status, 202, "{json}");
                assert_eq!(json["status"], "queued", "{json}");
                let jitter = rand::random_range(0..4u64);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    s.idle().await;
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    check_final(&s, &last);
    let cancelled = s
        .runner
        .calls()
        .iter()
        .filter(|c| c.outcome == "cancelled")
        .count();
    eprintln!(
        "ordered storm: {} jobs run, {cancelled} cancelled mid-build, {reads} store reads",
        s.runner.calls().len()
    );
}
