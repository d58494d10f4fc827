//! [`Engine`] on the local Docker engine, through Docker Compose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use preview_core::model::ReadyWhen;
use preview_exec::compose::{AppEnv, Compose};

use crate::build_objects::{self, RemovedLeftovers};
use crate::engine::{BoxFuture, DiskUsage, Engine, Node, Usage};
use crate::{
    ComposeProject, ContainerState, Error, HealthPolicy, Result, SlotContainer, built_images,
    docker, project_containers, project_dirs_with_label, published_ports, remove_built_images,
    remove_containers, slot_containers, wait_healthy_service,
};

/// Previews as Compose projects on this host: ports published on 127.0.0.1, where nginx routes.
#[derive(Debug, Clone)]
pub struct ComposeEngine {
    compose: Compose,
}

impl ComposeEngine {
    /// An engine running `compose`.
    pub fn new(compose: Compose) -> Self {
        Self { compose }
    }

    /// Runs the command `make` builds for `project`, with the app's environment `env`, its
    /// output appended to `log` when given.
    async fn run(
        &self,
        env: Option<&AppEnv>,
        log: Option<&Path>,
        make: impl FnOnce(&Compose) -> preview_exec::Result<preview_exec::Cmd>,
    ) -> Result<()> {
        let compose = match env {
            Some(env) => self.compose.with_app_env(env.clone()),
            None => self.compose.clone(),
        };
        let mut cmd = make(&compose)?;
        if let Some(log) = log {
            cmd = cmd.log_to(log);
        }
        cmd.run().await?;
        Ok(())
    }

    /// [`ComposeEngine::run`] for a command that builds: whatever its outcome, the objects its
    /// log names go into the project's ledger, for [`Engine::remove_build_leftovers`].
    async fn run_build(
        &self,
        project: &ComposeProject,
        env: Option<&AppEnv>,
        log: &Path,
        make: impl FnOnce(&Compose) -> preview_exec::Result<preview_exec::Cmd>,
    ) -> Result<()> {
        let building = crate::image_lock::for_build(log).await;
        let result = self.run(env, Some(log), make).await;
        drop(building);
        if let Err(e) = build_objects::record_build(&project.dir, log)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(project = %project.name, error = %e, "recording what the build made failed");
        }
        result
    }
}

impl Engine for ComposeEngine {
    fn name(&self) -> &'static str {
        "compose"
    }

    fn up<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run_build(p, Some(env), log, |c| c.up(&p.name, &p.dir, &p.file)))
    }

    fn build<'a>(&'a self, p: &'a ComposeProject, log: &'a Path) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run_build(p, None, log, |c| c.build(&p.name, &p.dir, &p.file)))
    }

    fn start_beside<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Some(env), Some(log), |c| {
            c.start_beside(&p.name, &p.dir, &p.file)
        }))
    }

    fn converge<'a>(&'a self, p: &'a ComposeProject, env: &'a AppEnv) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // A task that ended as it should (a migration) is not run again: when there is one,
            // the file's other services start, by name.
            let done: BTreeSet<String> = project_containers(&p.name)
                .await?
                .into_iter()
                .filter(ContainerState::is_done)
                .map(|c| c.service)
                .collect();
            let listed = if done.is_empty() {
                String::new()
            } else {
                self.compose
                    .services(&p.name, &p.dir, &p.file)?
                    .run()
                    .await?
                    .stdout_text()
            };
            let others: Vec<&str> = listed
                .lines()
                .map(str::trim)
                .filter(|s| !s.is_empty() && !done.contains(*s))
                .collect();
            if others.is_empty() {
                return self
                    .run(Some(env), None, |c| c.start(&p.name, &p.dir, &p.file))
                    .await;
            }
            self.run(Some(env), None, |c| {
                c.start_only(
                    &p.name,
                    &p.dir,
                    &p.file,
                    &others,
                    "start the preview's services from their built images, but the tasks that ended",
                )
            })
            .await
        })
    }

    fn retire<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        app_service: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Some(env), None, |c| {
            c.retire(&p.name, &p.dir, &p.file, app_service)
        }))
    }

    fn stop<'a>(&'a self, p: &'a ComposeProject) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(None, None, |c| c.stop(&p.name, &p.dir, &p.file)))
    }

    fn wait_ready<'a>(
        &'a self,
        p: &'a ComposeProject,
        service: Option<&'a str>,
        port: u16,
        path: &'a str,
        ready_when: ReadyWhen,
        policy: HealthPolicy,
    ) -> BoxFuture<'a, Result<Duration>> {
        Box::pin(async move {
            let url = format!("http://127.0.0.1:{port}{path}");
            wait_healthy_service(&url, &p.name, service, ready_when, policy).await
        })
    }

    fn app_host<'a>(&'a self, _name: &'a str, _port: u16) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(Some("127.0.0.1".to_owned())) })
    }

    fn logs_tail<'a>(&'a self, p: &'a ComposeProject, lines: usize) -> BoxFuture<'a, String> {
        Box::pin(p.logs_tail(&self.compose, lines))
    }

    fn tear_down<'a>(&'a self, p: &'a ComposeProject) -> BoxFuture<'a, Result<()>> {
        Box::pin(p.down(&self.compose))
    }

    fn tear_down_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.compose.down_project(name)?.run().await?;
            remove_built_images(name).await
        })
    }

    fn list_ours<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<BTreeMap<String, PathBuf>>> {
        Box::pin(project_dirs_with_label(key))
    }

    fn containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<ContainerState>>> {
        Box::pin(project_containers(name))
    }

    fn slot_containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SlotContainer>>> {
        Box::pin(slot_containers(name))
    }

    fn remove_containers<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<()>> {
        Box::pin(remove_containers(ids))
    }

    fn remove_service_image<'a>(
        &'a self,
        name: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let image = format!("{name}-{service}");
            let built = built_images(name).await?;
            if built.iter().any(|i| *i == format!("{image}:latest")) {
                let _removing = crate::image_lock::for_removal().await;
                docker("remove an image the preview no longer runs")
                    .args(["image", "rm", &image])
                    .run()
                    .await?;
            }
            Ok(())
        })
    }

    fn published_ports(&self) -> BoxFuture<'_, Result<BTreeSet<u16>>> {
        Box::pin(published_ports())
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>> {
        Box::pin(async {
            let meminfo = std::fs::read_to_string("/proc/meminfo")
                .map_err(|e| Error::Parse(format!("reading /proc/meminfo: {e}")))?;
            let bytes = |key: &str| meminfo_bytes(&meminfo, key).unwrap_or(0);
            Ok(vec![Node {
                id: "local".to_owned(),
                role: "manager".to_owned(),
                state: "ready".to_owned(),
                availability: "active".to_owned(),
                address: "127.0.0.1".to_owned(),
                memory_bytes: bytes("MemTotal"),
                free_memory_bytes: bytes("MemAvailable"),
                previews: crate::projects_with_label(preview_core::render::labels::MANAGED).await?,
                docker_host: None,
            }])
        })
    }

    fn usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Usage>> {
        Box::pin(async move {
            let running: Vec<String> = project_containers(name)
                .await?
                .into_iter()
                .filter(|c| c.state == "running")
                .map(|c| c.name)
                .collect();
            if running.is_empty() {
                return Ok(Usage::default());
            }
            let out = docker("read the preview's memory use")
                .args(["stats", "--no-stream", "--format", "{{.MemUsage}}"])
                .args(&running)
                .run()
                .await?;
            let (memory_bytes, _) = memory_in_use(&out.stdout_text())?;
            Ok(Usage {
                memory_bytes,
                running: running.len(),
            })
        })
    }

    fn remove_build_leftovers<'a>(
        &'a self,
        p: &'a ComposeProject,
        only: Option<&'a Path>,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<RemovedLeftovers>> {
        Box::pin(remove_local_build_leftovers(p, only, keep))
    }

    fn disk_usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<DiskUsage>> {
        Box::pin(local_disk_usage(name))
    }
}

/// What project `name` takes on this host's engine: its built images' own layers and its
/// volumes.
pub(crate) async fn local_disk_usage(name: &str) -> Result<DiskUsage> {
    preview_exec::compose::validate_project_name(name)?;
    parse_disk_usage(&system_df().await?, name)
}

/// What the daemon answers while another `docker system df` runs: it runs one at a time.
const DF_BUSY: &str = "a disk usage operation is already running";

/// How long a `docker system df` waits for other processes' to end.
const DF_BUSY_WAIT: Duration = Duration::from_secs(60);

/// The output of `docker system df -v --format '{{json .}}'`. The daemon refuses a second one
/// while one runs, so callers in this process take turns, and one reuses an answer begun after
/// it asked (it covers every preview); another process's is waited out, up to [`DF_BUSY_WAIT`].
async fn system_df() -> Result<String> {
    static LAST: tokio::sync::Mutex<Option<(Instant, String)>> =
        tokio::sync::Mutex::const_new(None);
    let asked = Instant::now();
    let mut last = LAST.lock().await;
    if let Some((began, out)) = last.as_ref()
        && *began >= asked
    {
        return Ok(out.clone());
    }
    let began = Instant::now();
    // Another process's read is waited out from 50 ms up to 1 s apart, so that many waiting
    // processes do not crowd the daemon they wait for.
    let mut pause = Duration::from_millis(50);
    let out = loop {
        match docker("read what the preview takes on disk")
            .args(["system", "df", "-v", "--format", "{{json .}}"])
            .run()
            .await
        {
            Ok(out) => break out.stdout_text(),
            Err(e) if e.stderr_tail().contains(DF_BUSY) && began.elapsed() < DF_BUSY_WAIT => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    };
    *last = Some((began, out.clone()));
    Ok(out)
}

/// [`Engine::remove_build_leftovers`] for builds that ran on this host's engine.
pub(crate) async fn remove_local_build_leftovers(
    p: &ComposeProject,
    only: Option<&Path>,
    keep: &BTreeSet<String>,
) -> Result<RemovedLeftovers> {
    let objects = match only {
        Some(log) => build_objects::objects_in_log(&String::from_utf8_lossy(
            &std::fs::read(log).unwrap_or_default(),
        )),
        None => build_objects::read_ledger(&p.dir),
    };
    build_objects::remove_leftovers(&objects, keep).await
}

/// The disk use of project `name` in `docker system df -v --format '{{json .}}'`: the unique
/// size of the images built for it (named `{name}-{service}`) and the size of its volumes.
fn parse_disk_usage(json: &str, name: &str) -> Result<DiskUsage> {
    let df: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| Error::Parse(format!("docker system df: {e}")))?;
    let size = |v: &serde_json::Value, key: &str| {
        let text = v[key].as_str().unwrap_or("0B");
        parse_size(text).ok_or_else(|| Error::Parse(format!("docker system df {key} {text:?}")))
    };
    let prefix = format!("{name}-");
    let mut usage = DiskUsage::default();
    for image in df["Images"].as_array().into_iter().flatten() {
        if image["Repository"]
            .as_str()
            .is_some_and(|r| r.starts_with(&prefix))
        {
            usage.images_bytes += size(image, "UniqueSize")?;
        }
    }
    let label = format!("com.docker.compose.project={name}");
    for volume in df["Volumes"].as_array().into_iter().flatten() {
        if volume["Labels"]
            .as_str()
            .is_some_and(|l| l.split(',').any(|kv| kv == label))
        {
            usage.volumes_bytes += size(volume, "Size")?;
        }
    }
    Ok(usage)
}

/// The memory in use and the count of containers in `docker stats --format {{.MemUsage}}`
/// output (`12.5MiB / 512MiB` per line).
pub(crate) fn memory_in_use(stats: &str) -> Result<(u64, usize)> {
    let mut total = 0;
    let mut count = 0;
    for line in stats.lines().filter(|l| !l.trim().is_empty()) {
        let used = line.split('/').next().unwrap_or("").trim();
        total += parse_size(used)
            .ok_or_else(|| Error::Parse(format!("docker stats memory {line:?}: not a size")))?;
        count += 1;
    }
    Ok((total, count))
}

/// The value of `key` in /proc/meminfo's text (`MemAvailable:  3891204 kB`), in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// A size as Docker's CLI prints it (`docker stats`, `docker ps --size`): `12.5MiB`, `980KiB`,
/// `1.2GiB`, `0B`, `3kB`, `4MB`; a bare number is bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim() {
        "B" | "" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((number * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_of_one_project() {
        let json = r#"{"Images":[{"Repository":"p-pr-1-app","UniqueSize":"28.47kB","Size":"239MB"},{"Repository":"p-pr-1-app-green","UniqueSize":"1MB"},{"Repository":"p-pr-10-app","UniqueSize":"5MB"},{"Repository":"<none>","UniqueSize":"9MB"}],"Volumes":[{"Labels":"com.docker.compose.project=p-pr-1,x=y","Size":"47.25MB"},{"Labels":"com.docker.compose.project=p-pr-10","Size":"1GB"}],"Containers":[],"BuildCache":[]}"#;
        let usage = parse_disk_usage(json, "p-pr-1").unwrap();
        assert_eq!(usage.images_bytes, 28_470 + 1_000_000);
        assert_eq!(usage.volumes_bytes, 47_250_000);
        assert!(parse_disk_usage("not json", "p-pr-1").is_err());
        assert!(
            parse_disk_usage(
                r#"{"Images":[{"Repository":"p-pr-1-app","UniqueSize":"lots"}]}"#,
                "p-pr-1"
            )
            .is_err()
        );
    }

    #[test]
    fn meminfo_values() {
        let text = "MemTotal:        4014276 kB\nMemFree:  1000 kB\nMemAvailable:    2917128 kB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(4_014_276 * 1024));
        assert_eq!(meminfo_bytes(text, "MemAvailable"), Some(2_917_128 * 1024));
        assert_eq!(meminfo_bytes(text, "Mem"), None);
        assert_eq!(meminfo_bytes(text, "SwapTotal"), None);
    }

    #[test]
    fn docker_stats_sizes() {
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("980KiB"), Some(980 * 1024));
        assert_eq!(parse_size("12.5MiB"), Some(13_107_200));
        assert_eq!(parse_size("1.5GiB"), Some(1_610_612_736));
        assert_eq!(parse_size("3kB"), Some(3000));
        assert_eq!(parse_size("4MB"), Some(4_000_000));
        assert_eq!(parse_size("--"), None);
        assert_eq!(parse_size("12XB"), None);
        assert_eq!(parse_size(""), None);
    }
}
