//! `preview sync`: ships a new orchestrator binary. It is uploaded next to the live one under a
//! temporary name, swapped in with a rename (atomic on one filesystem) while the old one is kept
//! as `.previous`, and the unit is restarted. If `/health` does not report the new version in
//! time, the previous binary is put back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use preview_exec::Cmd;

use super::config::Config;
use super::home::{Home, HomeArgs};
use super::infra;
use super::progress::Phase;
use super::remote::{ORCHESTRATOR_BINARY, ORCHESTRATOR_UNIT, Remote, shell_quote};
use super::state::SetupState;
use super::tools::{self, Tool};

/// Arguments of `preview sync`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  preview sync
  preview sync --binary target/x86_64-unknown-linux-musl/release/preview-orchestrator")]
pub struct SyncArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Orchestrator binary to ship, instead of `cargo build --release -p preview-orchestrator`
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Seconds to wait for /health to report the new version before rolling back
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub health_timeout: u64,
}

/// Runs `preview sync`.
pub async fn run(args: SyncArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let config = Config::load(&home)?;
    let state = SetupState::load(&home)?;
    let server = state.require_server()?;
    tools::require(&[Tool::Ssh, Tool::Rsync])?;
    let log = home.new_log("sync")?;
    let remote = Remote::new(server, &config, &home).with_log(log.clone());
    let fail =
        |err: anyhow::Error| err.context(format!("sync failed; full log: {}", log.display()));

    let phase = Phase::start("build");
    let built = async {
        let binary = infra::orchestrator_binary(args.binary.as_deref(), &log).await?;
        let version = infra::binary_version(&binary).await?;
        Ok::<_, anyhow::Error>((binary, version))
    }
    .await;
    let (binary, version) = match built {
        Ok(v) => v,
        Err(err) => {
            phase.failed("failed");
            return Err(fail(err));
        }
    };
    phase.done(&format!("{} ({version})", binary.display()));

    let paths = BinaryPaths::new(ORCHESTRATOR_BINARY);
    let phase = Phase::start("upload");
    let mut rsh = vec!["ssh".to_owned()];
    rsh.extend(
        remote
            .ssh_options()
            .iter()
            .map(|a| shell_quote(&a.to_string_lossy())),
    );
    let upload = Cmd::new("rsync", "upload the orchestrator binary")
        .arg("-e")
        .arg(rsh.join(" "))
        .args(["--checksum", "--times", "--chmod=F755"])
        .arg(&binary)
        .arg(remote.rsync_target(&paths.incoming))
        .pass_env("HOME")
        .pass_env("SSH_AUTH_SOCK")
        .log_to(&log)
        .timeout(Duration::from_secs(600))
        .run()
        .await;
    if let Err(err) = upload {
        phase.failed("failed");
        return Err(fail(err.into()));
    }
    phase.done(&format!(
        "{} → {}",
        binary.display(),
        remote.rsync_target(&paths.incoming)
    ));

    let phase = Phase::start("swap");
    let swapped = remote
        .run(
            "swap in the new binary and restart the orchestrator",
            &sudo(remote.user(), &["sh", "-c", &paths.swap_script()]),
            None,
            Duration::from_secs(120),
        )
        .await;
    if let Err(err) = swapped {
        phase.failed("failed");
        return Err(fail(err));
    }
    phase.done(&format!(
        "{ORCHESTRATOR_UNIT} restarted; old binary kept as {}",
        paths.previous
    ));

    let phase = Phase::start("health");
    let healthy = remote
        .wait_for_health(
            Some(&version),
            Duration::from_secs(args.health_timeout),
            Duration::from_secs(1),
        )
        .await;
    match healthy {
        Ok(_) => {
            phase.done(&format!("/health reports {version}"));
            println!("Orchestrator {version} is live on {}.", remote.host());
            Ok(())
        }
        Err(err) => {
            phase.failed(&format!("{version} did not become healthy"));
            let phase = Phase::start("rollback");
            let rolled = remote
                .run(
                    "put the previous orchestrator binary back",
                    &sudo(remote.user(), &["sh", "-c", &paths.rollback_script()]),
                    None,
                    Duration::from_secs(120),
                )
                .await;
            match rolled {
                Ok(_) => {
                    phase.done("previous binary restored and restarted");
                    Err(fail(err.context(format!(
                        "the new orchestrator ({version}) was not healthy, so the previous binary was restored"
                    ))))
                }
                Err(rollback_err) => {
                    phase.failed("failed");
                    Err(fail(anyhow!(
                        "{err:#}\nand the rollback failed too: {rollback_err:#}"
                    )))
                }
            }
        }
    }
}

/// `sudo -n` in front of a remote command when the login is not root.
fn sudo<'a>(user: &str, argv: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    if user != "root" {
        out.extend(["sudo", "-n"]);
    }
    out.extend_from_slice(argv);
    out
}

/// The live binary, the upload's temporary name and the kept previous one.
struct BinaryPaths {
    live: String,
    incoming: String,
    previous: String,
}

impl BinaryPaths {
    fn new(live: &str) -> Self {
        let (dir, name) = live.rsplit_once('/').unwrap_or((".", live));
        Self {
            live: live.to_owned(),
            incoming: format!("{dir}/.{name}.incoming"),
            previous: format!("{live}.previous"),
        }
    }

    /// Keeps the live binary as `.previous` (a hard link), renames the upload over it, restarts.
    fn swap_script(&self) -> String {
        let (live, incoming, previous) = (
            shell_quote(&self.live),
            shell_quote(&self.incoming),
            shell_quote(&self.previous),
        );
        format!(
            "set -e; test -s {incoming}; if [ -e {live} ]; then ln -f {live} {previous}; fi; \
             mv -f {incoming} {live}; systemctl restart {ORCHESTRATOR_UNIT}"
        )
    }

    /// Renames a copy of `.previous` over the live binary and restarts.
    fn rollback_script(&self) -> String {
        let (live, incoming, previous) = (
            shell_quote(&self.live),
            shell_quote(&self.incoming),
            shell_quote(&self.previous),
        );
        format!(
            "set -e; test -e {previous}; cp -p {previous} {incoming}; mv -f {incoming} {live}; \
             systemctl restart {ORCHESTRATOR_UNIT}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_and_rollback_scripts() {
        let paths = BinaryPaths::new("/opt/preview-deployer/bin/preview-orchestrator");
        insta::assert_snapshot!(paths.swap_script(), @"set -e; test -s /opt/preview-deployer/bin/.preview-orchestrator.incoming; if [ -e /opt/preview-deployer/bin/preview-orchestrator ]; then ln -f /opt/preview-deployer/bin/preview-orchestrator /opt/preview-deployer/bin/preview-orchestrator.previous; fi; mv -f /opt/preview-deployer/bin/.preview-orchestrator.incoming /opt/preview-deployer/bin/preview-orchestrator; systemctl restart preview-orchestrator");
        insta::assert_snapshot!(paths.rollback_script(), @"set -e; test -e /opt/preview-deployer/bin/preview-orchestrator.previous; cp -p /opt/preview-deployer/bin/preview-orchestrator.previous /opt/preview-deployer/bin/.preview-orchestrator.incoming; mv -f /opt/preview-deployer/bin/.preview-orchestrator.incoming /opt/preview-deployer/bin/preview-orchestrator; systemctl restart preview-orchestrator");
    }

    #[test]
    fn sudo_only_for_other_users() {
        assert_eq!(sudo("root", &["true"]), ["true"]);
        assert_eq!(sudo("deploy", &["true"]), ["sudo", "-n", "true"]);
    }
}
