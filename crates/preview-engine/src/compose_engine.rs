//! [`Engine`] on the local Docker engine, through Docker Compose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use preview_core::model::ReadyWhen;
use preview_exec::compose::{AppEnv, Compose};

use crate::engine::{BoxFuture, Engine, Node, Usage};
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
        Box::pin(self.run(Some(env), Some(log), |c| c.up(&p.name, &p.dir, &p.file)))
    }

    fn build<'a>(&'a self, p: &'a ComposeProject, log: &'a Path) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(None, Some(log), |c| c.build(&p.name, &p.dir, &p.file)))
    }

    fn create_missing<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        services: &'a [String],
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Some(env), Some(log), |c| {
            c.create_missing(&p.name, &p.dir, &p.file, services)
        }))
    }

    fn start_service<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        service: &'a str,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Some(env), Some(log), |c| {
            c.start_service(&p.name, &p.dir, &p.file, service)
        }))
    }

    fn converge<'a>(&'a self, p: &'a ComposeProject, env: &'a AppEnv) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run(Some(env), None, |c| c.start(&p.name, &p.dir, &p.file)))
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
            let kib = |key: &str| meminfo_kib(&meminfo, key).unwrap_or(0) * 1024;
            Ok(vec![Node {
                id: "local".to_owned(),
                role: "manager".to_owned(),
                state: "ready".to_owned(),
                availability: "active".to_owned(),
                address: "127.0.0.1".to_owned(),
                memory_bytes: kib("MemTotal"),
                free_memory_bytes: kib("MemAvailable"),
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
            let memory_bytes = out
                .stdout_text()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let used = l.split('/').next().unwrap_or("").trim();
                    parse_size(used).ok_or_else(|| {
                        Error::Parse(format!("docker stats memory {l:?}: not a size"))
                    })
                })
                .sum::<Result<u64>>()?;
            Ok(Usage {
                memory_bytes,
                running: running.len(),
            })
        })
    }
}

/// The value of `key` in /proc/meminfo's text, in KiB.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
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
    fn meminfo_values() {
        let text = "MemTotal:        4014276 kB\nMemFree:  1000 kB\nMemAvailable:    2917128 kB\n";
        assert_eq!(meminfo_kib(text, "MemTotal"), Some(4_014_276));
        assert_eq!(meminfo_kib(text, "MemAvailable"), Some(2_917_128));
        assert_eq!(meminfo_kib(text, "Mem"), None);
        assert_eq!(meminfo_kib(text, "SwapTotal"), None);
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
