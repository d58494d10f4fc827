//! What the machine and each preview use: the host's memory, disk and CPU from `/proc` and
//! `statvfs`, and each preview's memory and disk from `docker stats` / `docker ps --size`,
//! cached for a few seconds since a `docker stats` sample takes about a second.

use preview_engine::parse_size;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a reading of the containers' usage is reused.
const USAGE_TTL: Duration = Duration::from_secs(10);
/// How long the docker commands of one reading may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(8);

/// The host's resources, for the top of the list page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostUsage {
    /// Memory in use (total minus available), bytes.
    pub memory_used: Option<u64>,
    /// Total memory, bytes.
    pub memory_total: Option<u64>,
    /// Disk used on the file system holding the previews' work dirs, bytes.
    pub disk_used: Option<u64>,
    /// That file system's size, bytes.
    pub disk_total: Option<u64>,
    /// The 1-minute load average.
    pub load1: Option<f64>,
    /// CPU cores.
    pub cpus: usize,
    /// Share of CPU time busy since the previous reading, in percent.
    pub cpu_busy_percent: Option<f64>,
}

/// Reads the host's usage; remembers the last `/proc/stat` sample for the CPU share.
pub struct HostSampler {
    disk_path: PathBuf,
    last_cpu: std::sync::Mutex<Option<(u64, u64)>>,
}

impl HostSampler {
    /// Measures the disk that holds `disk_path` (or its nearest existing parent).
    pub fn new(disk_path: impl Into<PathBuf>) -> Self {
        Self {
            disk_path: disk_path.into(),
            last_cpu: std::sync::Mutex::new(read_cpu_times()),
        }
    }

    /// A reading now. Parts that cannot be read stay `None` (shown as "—").
    pub fn sample(&self) -> HostUsage {
        let mut usage = HostUsage {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            ..HostUsage::default()
        };
        if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
            let (total, available) = parse_meminfo(&meminfo);
            usage.memory_total = total;
            usage.memory_used = total.zip(available).map(|(t, a)| t.saturating_sub(a));
        }
        if let Some((total, free)) = disk_space(&self.disk_path) {
            usage.disk_total = Some(total);
            usage.disk_used = Some(total.saturating_sub(free));
        }
        usage.load1 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        if let Some((busy, total)) = read_cpu_times() {
            let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((last_busy, last_total)) = *last
                && total > last_total
            {
                let share = (busy.saturating_sub(last_busy)) as f64 / (total - last_total) as f64;
                usage.cpu_busy_percent = Some((share * 1000.0).round() / 10.0);
            }
            *last = Some((busy, total));
        }
        usage
    }
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
fn read_cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Size and space available to unprivileged users of the file system holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    crate::capacity::disk_space(path)
}

/// One preview's containers, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreviewUsage {
    /// Memory in use, bytes.
    pub memory: u64,
    /// Size of the containers' writable layers, bytes.
    pub disk: u64,
    /// Running containers.
    pub containers: usize,
}

/// Each Compose project's usage, by project name (the preview id).
pub type UsageByProject = Arc<HashMap<String, PreviewUsage>>;

/// Per-preview usage by Compose project name, cached for [`USAGE_TTL`].
pub struct ContainerUsage {
    docker: PathBuf,
    cached: tokio::sync::Mutex<Option<(Instant, UsageByProject)>>,
}

impl ContainerUsage {
    /// Asks `docker` (the `DOCKER_BIN` setting).
    pub fn new(docker: impl Into<PathBuf>) -> Self {
        Self {
            docker: docker.into(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The usage of every Compose project, at most [`USAGE_TTL`] old; empty when Docker does not
    /// answer (the page then shows "—").
    pub async fn by_project(&self) -> UsageByProject {
        let mut cached = self.cached.lock().await;
        if let Some((at, usage)) = cached.as_ref()
            && at.elapsed() < USAGE_TTL
        {
            return usage.clone();
        }
        let usage = Arc::new(self.read().await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "reading the previews' container usage failed");
            HashMap::new()
        }));
        *cached = Some((Instant::now(), usage.clone()));
        usage
    }

    async fn read(&self) -> preview_exec::Result<HashMap<String, PreviewUsage>> {
        let docker = |description: &str| {
            preview_exec::compose::with_docker_env(preview_exec::Cmd::new(
                &self.docker,
                description,
            ))
            .timeout(DOCKER_TIMEOUT)
            .output_cap(256 * 1024)
        };
        let ps = docker("list the previews' containers with their sizes")
            .args([
                "ps",
                "--size",
                "--no-trunc",
                "--filter",
                "label=com.docker.compose.project",
                "--format",
                "{{.ID}}\t{{.Label \"com.docker.compose.project\"}}\t{{.Size}}",
            ])
            .run()
            .await?
            .stdout_text();
        let containers = parse_ps(&ps);
        if containers.is_empty() {
            return Ok(HashMap::new());
        }
        let mut stats = docker("read the previews' memory use").args([
            "stats",
            "--no-stream",
            "--no-trunc",
            "--format",
            "{{.ID}}\t{{.MemUsage}}",
        ]);
        for (id, _, _) in &containers {
            stats = stats.arg(id);
        }
        let stats = stats.run().await?.stdout_text();
        Ok(sum_usage(&containers, &parse_stats(&stats)))
    }
}

/// `ID \t project \t size` lines of `docker ps --size`: the writable layer's size.
fn parse_ps(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let id = parts.next()?.trim();
            let project = parts.next()?.trim();
            // "2.1kB (virtual 239MB)"
            let size = parts.next()?.split('(').next()?.trim();
            Some((id.to_owned(), project.to_owned(), parse_size(size)?))
        })
        .filter(|(id, project, _)| !id.is_empty() && !project.is_empty())
        .collect()
}

/// `ID \t used / limit` lines of `docker stats`: the memory in use.
fn parse_stats(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (id, mem) = line.split_once('\t')?;
            let used = mem.split('/').next()?.trim();
            Some((id.trim().to_owned(), parse_size(used)?))
        })
        .collect()
}

fn sum_usage(
    containers: &[(String, String, u64)],
    memory: &HashMap<String, u64>,
) -> HashMap<String, PreviewUsage> {
    let mut by_project: HashMap<String, PreviewUsage> = HashMap::new();
    for (id, project, disk) in containers {
        let usage = by_project.entry(project.clone()).or_default();
        usage.disk += disk;
        usage.containers += 1;
        usage.memory += memory.get(id).copied().unwrap_or(0);
    }
    by_project
}

/// Bytes for people: `512 MiB`, `1.4 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_sizes_parse() {
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("2.1kB"), Some(2100));
        assert_eq!(parse_size("12.5MiB"), Some(13_107_200));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn usage_is_summed_per_project() {
        let ps = "aaa\tacme-api-pr-1\t2.1kB (virtual 239MB)\nbbb\tacme-api-pr-1\t1MB (virtual 1GB)\n\
                  ccc\tother-pr-2\t0B (virtual 10MB)\n";
        let stats = "aaa\t10MiB / 512MiB\nbbb\t1.5MiB / 512MiB\n";
        let usage = sum_usage(&parse_ps(ps), &parse_stats(stats));
        assert_eq!(
            usage["acme-api-pr-1"],
            PreviewUsage {
                memory: 10 * 1024 * 1024 + 1_572_864,
                disk: 1_002_100,
                containers: 2
            }
        );
        assert_eq!(usage["other-pr-2"].memory, 0);
    }

    #[test]
    fn meminfo_and_human_bytes() {
        let (total, available) =
            parse_meminfo("MemTotal:        2000 kB\nMemFree: 5 kB\nMemAvailable:    1000 kB\n");
        assert_eq!((total, available), (Some(2_048_000), Some(1_024_000)));
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }

    #[test]
    fn the_host_is_read_from_proc() {
        let usage = HostSampler::new("/").sample();
        assert!(usage.memory_total.is_some_and(|t| t > 0));
        assert!(usage.disk_total.is_some_and(|t| t > 0));
        assert!(usage.cpus >= 1);
    }
}
