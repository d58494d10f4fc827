//! `preview up` serves the Python sample app on the real local engine, and Ctrl-C removes it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use preview_exec::Cmd;
use preview_testkit::{docker_objects_with_label, repo_root, require_docker, wait_for_http};

#[tokio::test(flavor = "multi_thread")]
async fn up_serves_the_python_sample_until_interrupted() {
    require_docker().await;
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin!("preview"))
        .arg("up")
        .arg(repo_root().join("fixtures/apps/python-plain"))
        .arg("--work-dir")
        .arg(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .next()
            .expect("a URL line")
            .unwrap()
    })
    .await
    .unwrap();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("not a local URL: {url}"));
    let answer = wait_for_http(port, "/health", Duration::from_secs(30), |a| {
        a.status == 200
    })
    .await;
    assert_eq!(answer.body, "python-plain ok\n");
    let label = "dev.preview-deployer.deployment=local-python-plain-pr-1";
    let running = docker_objects_with_label(label).await;
    assert!(
        running.iter().any(|o| o.starts_with("container ")),
        "{running:?}"
    );

    Cmd::new("kill", "interrupt preview up")
        .args(["-INT", &child.id().to_string()])
        .run()
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "preview up exits cleanly on Ctrl-C: {status}"
    );
    assert_eq!(docker_objects_with_label(label).await, Vec::<String>::new());
}
