//! Reads what a real `terraform output -json` prints. The DigitalOcean provider cannot be
//! downloaded here, so a provider-less module declares the same outputs with fixed values and
//! is applied to local state; the JSON shape comes from terraform itself, not from a fixture.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use preview_exec::Cmd;
use preview_infra::{Error, REQUIRED_OUTPUTS, ServerOutputs};

const MODULE: &str = r#"
output "server_ip" {
  value = "203.0.113.10"
}
output "reserved_ip" {
  value = "203.0.113.10"
}
output "droplet_ipv4" {
  value = "198.51.100.20"
}
output "droplet_id" {
  value = "412345678"
}
output "ssh_user" {
  value = "root"
}
output "server_private_ipv4" {
  value = "10.10.0.2"
}
output "worker_ipv4" {
  value = ["198.51.100.31"]
}
output "worker_private_ipv4" {
  value = ["10.10.0.3"]
}
"#;

fn terraform(dir: &Path, description: &str, args: &[&str]) -> Cmd {
    Cmd::new("terraform", description)
        .args(args)
        .current_dir(dir)
        // HOME points at the temp dir, so no user CLI config or plugin cache leaks in.
        .env("HOME", dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .timeout(Duration::from_secs(120))
}

async fn apply_and_read(module: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("outputs.tf"), module).unwrap();
    let missing = |e: preview_exec::Error| {
        panic!(
            "{e}\n(terraform is needed by these tests and by scripts/check-infra.sh; install terraform >= 1.5 on PATH)"
        )
    };
    terraform(
        dir.path(),
        "terraform init (no providers)",
        &["init", "-input=false", "-no-color"],
    )
    .run()
    .await
    .unwrap_or_else(missing);
    terraform(
        dir.path(),
        "terraform apply of the outputs-only module",
        &["apply", "-auto-approve", "-input=false", "-no-color"],
    )
    .run()
    .await
    .unwrap_or_else(missing);
    terraform(dir.path(), "terraform output -json", &["output", "-json"])
        .run()
        .await
        .unwrap_or_else(missing)
        .stdout
}

#[tokio::test]
async fn reads_the_json_terraform_prints() {
    let json = apply_and_read(MODULE).await;
    let outputs = ServerOutputs::from_json(&json).unwrap();
    assert_eq!(outputs.server_ip, "203.0.113.10".parse::<IpAddr>().unwrap());
    assert_eq!(outputs.reserved_ip, outputs.server_ip);
    assert_eq!(outputs.droplet_id, "412345678");
    assert_eq!(outputs.ssh_user, "root");
    assert_eq!(outputs.server_private_ip.to_string(), "10.10.0.2");
    assert_eq!(outputs.workers.len(), 1);
    assert_eq!(outputs.workers[0].public_ip.to_string(), "198.51.100.31");
    assert_eq!(outputs.workers[0].private_ip.to_string(), "10.10.0.3");
}

#[tokio::test]
async fn an_unapplied_output_is_named() {
    let without_user = MODULE.replace("output \"ssh_user\"", "output \"login\"");
    let json = apply_and_read(&without_user).await;
    let err = ServerOutputs::from_json(&json).unwrap_err();
    assert!(matches!(err, Error::MissingOutput("ssh_user")), "{err}");
    assert!(REQUIRED_OUTPUTS.contains(&"ssh_user"));
}
