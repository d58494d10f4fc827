use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use preview_core::model::ReadyWhen;
use preview_core::render::AppSlot;
use preview_exec::Cmd;
use preview_exec::compose::{Compose, with_docker_env};

use crate::{HealthPolicy, Result, wait_healthy, wait_healthy_service};

/// A rendered compose project on disk: its name (the deployment id), directory and file.
#[derive(Debug, Clone)]
pub struct ComposeProject {
    /// The Compose project name; it prefixes every container, network, volume and built image.
    pub name: String,
    /// The directory holding the compose file; build contexts are relative to it.
    pub dir: PathBuf,
    /// The compose file's name inside `dir`.
    pub file: String,
}

impl ComposeProject {
    /// `up -d --build --remove-orphans`, its output appended to `log`.
    pub async fn up(&self, compose: &Compose, log: &Path) -> Result<()> {
        compose
            .up(&self.name, &self.dir, &self.file)?
            .log_to(log)
            .run()
            .await?;
        Ok(())
    }

    /// Polls `http://127.0.0.1:{port}{path}` until `ready_when` accepts its answer, failing fast
    /// if a container stops.
    pub async fn wait_healthy(
        &self,
        port: u16,
        path: &str,
        ready_when: ReadyWhen,
        policy: HealthPolicy,
    ) -> Result<Duration> {
        wait_healthy(
            &format!("http://127.0.0.1:{port}{path}"),
            &self.name,
            ready_when,
            policy,
        )
        .await
    }

    /// [`ComposeProject::wait_healthy`], failing fast only when a container of `service` stops.
    pub async fn wait_service_healthy(
        &self,
        service: &str,
        port: u16,
        path: &str,
        ready_when: ReadyWhen,
        policy: HealthPolicy,
    ) -> Result<Duration> {
        wait_healthy_service(
            &format!("http://127.0.0.1:{port}{path}"),
            &self.name,
            Some(service),
            ready_when,
            policy,
        )
        .await
    }

    /// The last `lines` lines of every service's log, for failure reports; empty if unreadable.
    pub async fn logs_tail(&self, compose: &Compose, lines: usize) -> String {
        match compose.logs(&self.name, &self.dir, &self.file, lines) {
            Ok(cmd) => match cmd.output().await {
                Ok(out) => format!("{}{}", out.stdout_text(), out.stderr_text()),
                Err(err) => err.to_string(),
            },
            Err(err) => err.to_string(),
        }
    }

    /// `down --volumes --remove-orphans`, then removes the images Compose built for it.
    pub async fn down(&self, compose: &Compose) -> Result<()> {
        compose
            .down(&self.name, &self.dir, &self.file)?
            .run()
            .await?;
        remove_built_images(&self.name).await
    }
}

/// The images Compose built for `project`, as `repository:tag` (repositories are named
/// `{project}-{service}`).
pub async fn built_images(project: &str) -> Result<Vec<String>> {
    preview_exec::compose::validate_project_name(project)?;
    let out = docker("list the preview's built images")
        .args([
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
        ])
        .arg(format!("reference={project}-*"))
        .run()
        .await?;
    Ok(out
        .stdout_text()
        .lines()
        .map(str::trim)
        .filter(|image| image.starts_with(&format!("{project}-")))
        .map(str::to_owned)
        .collect())
}

/// Removes the images Compose built for `project`: Compose v5 leaves them behind on this
/// engine's API even with `--rmi local`.
pub async fn remove_built_images(project: &str) -> Result<()> {
    let images = built_images(project).await?;
    if !images.is_empty() {
        let _removing = crate::image_lock::for_removal().await;
        docker("remove the preview's built images")
            .args(["image", "rm", "--force"])
            .args(&images)
            .run()
            .await?;
    }
    Ok(())
}

/// One container of a compose project, with its app slot and the host ports it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotContainer {
    /// The container id.
    pub id: String,
    /// Its compose service.
    pub service: String,
    /// Its app slot (the `dev.preview-deployer.slot` label); `None` for a data service, or an
    /// app started before slots existed.
    pub slot: Option<AppSlot>,
    /// The host ports it publishes (none when it is not running).
    pub published: BTreeSet<u16>,
}

/// The containers of compose project `project`, running or not, with their slots and ports.
pub async fn slot_containers(project: &str) -> Result<Vec<SlotContainer>> {
    preview_exec::compose::validate_project_name(project)?;
    let out = docker("list the preview's containers and their slots")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}}\t{{.Label \"com.docker.compose.service\"}}\t{{.Label \"dev.preview-deployer.slot\"}}\t{{.Ports}}",
            "--filter",
        ])
        .arg(format!("label=com.docker.compose.project={project}"))
        .run()
        .await?;
    Ok(parse_slot_containers(&out.stdout_text()))
}

fn parse_slot_containers(text: &str) -> Vec<SlotContainer> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, '\t');
            let id = fields.next()?.trim();
            if id.is_empty() {
                return None;
            }
            Some(SlotContainer {
                id: id.to_owned(),
                service: fields.next().unwrap_or_default().trim().to_owned(),
                slot: AppSlot::parse(fields.next().unwrap_or_default().trim()),
                published: parse_published_ports(fields.next().unwrap_or_default()),
            })
        })
        .collect()
}

/// Stops and removes containers by id, with their anonymous volumes.
pub async fn remove_containers(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    docker("remove the preview's containers")
        .args(["rm", "--force", "--volumes"])
        .args(ids)
        .run()
        .await?;
    Ok(())
}

/// Host ports published by running containers, so the port pool never hands them out.
pub async fn published_ports() -> Result<BTreeSet<u16>> {
    let out = docker("list the host ports containers publish")
        .args(["ps", "--format", "{{.Ports}}"])
        .run()
        .await?;
    Ok(parse_published_ports(&out.stdout_text()))
}

/// Names of the compose projects whose containers carry the label `key` (any value).
pub async fn projects_with_label(key: &str) -> Result<BTreeSet<String>> {
    let out = docker("list the compose projects of previews")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
            "--filter",
        ])
        .arg(format!("label={key}"))
        .run()
        .await?;
    Ok(out
        .stdout_text()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The compose projects whose containers carry the label `key` (any value), each with the
/// directory Compose ran it from (its `com.docker.compose.project.working_dir` label; empty when
/// absent), so a caller can tell its own projects from those of another orchestrator.
pub async fn project_dirs_with_label(key: &str) -> Result<BTreeMap<String, PathBuf>> {
    let out = docker("list the compose projects of previews and their directories")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}\t{{.Label \"com.docker.compose.project.working_dir\"}}",
            "--filter",
        ])
        .arg(format!("label={key}"))
        .run()
        .await?;
    Ok(parse_project_dirs(&out.stdout_text()))
}

fn parse_project_dirs(text: &str) -> BTreeMap<String, PathBuf> {
    text.lines()
        .filter_map(|line| {
            let (project, dir) = line.split_once('\t').unwrap_or((line, ""));
            let project = project.trim();
            (!project.is_empty()).then(|| (project.to_owned(), PathBuf::from(dir.trim())))
        })
        .collect()
}

/// A `docker` command with the daemon's environment and a short timeout.
pub fn docker(description: &str) -> Cmd {
    with_docker_env(Cmd::new("docker", description)).timeout(Duration::from_secs(60))
}

/// Parses `docker ps --format {{.Ports}}` lines such as
/// `127.0.0.1:8000->8080/tcp, :::9000->5432/tcp`.
fn parse_published_ports(text: &str) -> BTreeSet<u16> {
    text.split([',', '\n'])
        .filter_map(|mapping| {
            let (host, _container) = mapping.trim().split_once("->")?;
            let port = host.rsplit(':').next()?;
            // A range such as 8000-8002 publishes each port in it.
            Some(match port.split_once('-') {
                Some((a, b)) => (a.parse().ok()?..=b.parse().ok()?).collect::<Vec<u16>>(),
                None => vec![port.parse().ok()?],
            })
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_project_dirs() {
        let text = "a-pr-1\t/opt/preview-deployer/deployments/a-pr-1\nb-pr-2\t\n\nc-pr-3\n";
        let dirs = parse_project_dirs(text);
        assert_eq!(dirs.len(), 3);
        assert_eq!(
            dirs["a-pr-1"],
            PathBuf::from("/opt/preview-deployer/deployments/a-pr-1")
        );
        assert_eq!(dirs["b-pr-2"], PathBuf::new());
        assert_eq!(dirs["c-pr-3"], PathBuf::new());
    }

    #[test]
    fn parses_slot_containers() {
        let text = "abc\tapp-green\tgreen\t127.0.0.1:8001->8080/tcp\ndef\tdb\t\t5432/tcp\nghi\tapp\t\t127.0.0.1:8000->8080/tcp\njkl\tapp\tblue\t\n\n";
        let got = parse_slot_containers(text);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].slot, Some(AppSlot::Green));
        assert_eq!(got[0].published, BTreeSet::from([8001]));
        assert_eq!((got[1].service.as_str(), got[1].slot), ("db", None));
        assert!(got[1].published.is_empty());
        assert_eq!(got[2].slot, None);
        assert_eq!(got[3].slot, Some(AppSlot::Blue));
        assert!(got[3].published.is_empty());
    }

    #[test]
    fn parses_published_ports() {
        let text = "127.0.0.1:8000->8080/tcp\n0.0.0.0:9000->5432/tcp, :::9000->5432/tcp\n5432/tcp\n\n127.0.0.1:8100-8102->80-82/tcp";
        let ports: Vec<u16> = parse_published_ports(text).into_iter().collect();
        assert_eq!(ports, [8000, 8100, 8101, 8102, 9000]);
    }
}
