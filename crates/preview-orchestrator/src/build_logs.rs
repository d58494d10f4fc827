//! Every deploy's build log, kept under `{LOGS_DIR}/builds/{preview id}/` with the retention of
//! the orchestrator's own logs (`LOG_RETENTION_DAYS`), so that a failed build can be read whole
//! in the browser after the next deploy has replaced the work dir's `logs/build.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use preview_core::id::{CommitSha, PreviewId};

/// The most of one log a page shows (its end, where failures are).
pub const MAX_SHOWN_BYTES: u64 = 4 * 1024 * 1024;
/// The name under which the work dir's current `build.log` is shown when no copy exists yet.
pub const CURRENT: &str = "current";

/// Where and how long deploys' build logs are kept: the deploy job's handle on [`archive`]. The
/// job keeps a copy once each build has ended, before looking at its outcome; the dashboard
/// lists and shows them.
#[derive(Debug, Clone)]
pub struct BuildLogArchive {
    logs_dir: PathBuf,
    retention_days: usize,
}

impl BuildLogArchive {
    /// Under `LOGS_DIR`, for `LOG_RETENTION_DAYS`.
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            logs_dir: config.logs_dir.clone(),
            retention_days: config.log_retention_days,
        }
    }

    /// Keeps a copy of `build_log`. A failure is logged and never fails the deploy.
    pub fn keep(&self, id: &PreviewId, sha: &CommitSha, build_log: &Path) {
        if let Err(e) = archive(&self.logs_dir, id, sha, build_log, self.retention_days) {
            tracing::warn!(preview = %id, error = %e, "keeping a copy of the build log failed");
        }
    }
}

/// Where the copies of `id`'s build logs are kept.
pub fn archive_dir(logs_dir: &Path, id: &PreviewId) -> PathBuf {
    logs_dir.join("builds").join(id.as_str())
}

/// Keeps a copy of a deploy's build log and drops copies older than `retention_days`.
pub fn archive(
    logs_dir: &Path,
    id: &PreviewId,
    sha: &CommitSha,
    build_log: &Path,
    retention_days: usize,
) -> std::io::Result<PathBuf> {
    let dir = archive_dir(logs_dir, id);
    std::fs::create_dir_all(&dir)?;
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    let target = dir.join(format!("{stamp}-{}.log", sha.short()));
    std::fs::copy(build_log, &target)?;
    prune(&dir, retention_days);
    Ok(target)
}

/// Removes copies older than `retention_days` days.
fn prune(dir: &Path, retention_days: usize) {
    let max_age = Duration::from_secs(86_400 * retention_days.max(1) as u64);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if old && valid_name(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` is an archived log's name: `20261206T064419Z-0123abc.log`. Anything else is
/// refused before it reaches the file system.
pub fn valid_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".log") else {
        return false;
    };
    let Some((stamp, sha)) = stem.split_once('-') else {
        return false;
    };
    stamp.len() == 16
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
        && (7..=40).contains(&sha.len())
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One kept build log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildLogEntry {
    /// File name (or [`CURRENT`]), used in its URL.
    pub name: String,
    /// The deployed commit, short.
    pub sha: String,
    /// When it was written, RFC 3339.
    pub at: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// The kept build logs of `id`, newest first; the work dir's current log when none is kept.
pub fn list(logs_dir: &Path, deployments_dir: &Path, id: &PreviewId) -> Vec<BuildLogEntry> {
    let mut entries: Vec<BuildLogEntry> = std::fs::read_dir(archive_dir(logs_dir, id))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) {
                return None;
            }
            let meta = e.metadata().ok()?;
            let (stamp, sha) = name.strip_suffix(".log")?.split_once('-')?;
            // valid_name checked the shape: 8 digits, T, 6 digits, Z.
            let at = format!(
                "{}-{}-{} {}:{}:{} UTC",
                &stamp[0..4],
                &stamp[4..6],
                &stamp[6..8],
                &stamp[9..11],
                &stamp[11..13],
                &stamp[13..15]
            );
            Some(BuildLogEntry {
                sha: sha.to_owned(),
                at,
                bytes: meta.len(),
                name,
            })
        })
        .collect();
    entries.sort_by(|a, b| b.name.cmp(&a.name));
    if entries.is_empty() {
        let current = current_path(deployments_dir, id);
        if let Ok(meta) = std::fs::metadata(&current) {
            entries.push(BuildLogEntry {
                name: CURRENT.to_owned(),
                sha: String::new(),
                at: meta
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                bytes: meta.len(),
            });
        }
    }
    entries
}

/// The work dir's log of the latest build, as the runtime writes it.
pub fn current_path(deployments_dir: &Path, id: &PreviewId) -> PathBuf {
    deployments_dir
        .join(id.as_str())
        .join("logs")
        .join("build.log")
}

/// A build log's text, colour codes stripped; only its last [`MAX_SHOWN_BYTES`] when longer
/// (the flag says so). `None` when `name` is not a kept log of `id`.
pub fn read(
    logs_dir: &Path,
    deployments_dir: &Path,
    id: &PreviewId,
    name: &str,
) -> Option<(String, bool)> {
    let path = if name == CURRENT {
        current_path(deployments_dir, id)
    } else if valid_name(name) {
        archive_dir(logs_dir, id).join(name)
    } else {
        return None;
    };
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let truncated = len > MAX_SHOWN_BYTES;
    if truncated {
        file.seek(SeekFrom::Start(len - MAX_SHOWN_BYTES)).ok()?;
    }
    let mut bytes = Vec::new();
    file.take(MAX_SHOWN_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some((preview_engine::build_log::strip_ansi(&text), truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_the_file_system() {
        assert!(valid_name("20261206T064419Z-0123abc.log"));
        assert!(!valid_name("../../etc/passwd"));
        assert!(!valid_name("20261206T064419Z-0123abc.log/.."));
        assert!(!valid_name("20261206X064419Z-0123abc.log"));
        assert!(!valid_name("20261206T064419Z-xyz1234.log"));
    }

    #[test]
    fn the_runtimes_handle_keeps_copies_under_the_logs_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::load(
            [
                "preview-orchestrator",
                "--github-token=t",
                "--github-webhook-secret=s",
                "--allowed-repos=acme/*",
                "--preview-base-url=https://previews.example",
                "--api-token=0123456789abcdef0123",
                &format!("--logs-dir={}", dir.path().join("logs").display()),
            ]
            .map(std::ffi::OsString::from)
            .to_vec(),
        )
        .unwrap();
        let id = PreviewId::parse("acme-api-pr-2").unwrap();
        let sha = CommitSha::parse(&"cd".repeat(20)).unwrap();
        let log = dir.path().join("build.log");
        std::fs::write(&log, "built\n").unwrap();
        let keeper = BuildLogArchive::new(&config);
        keeper.keep(&id, &sha, &log);
        // A missing log is only a warning.
        keeper.keep(&id, &sha, &dir.path().join("missing.log"));
        let kept = list(&dir.path().join("logs"), dir.path(), &id);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].sha, "cdcdcdc");
    }

    #[test]
    fn archive_keeps_a_copy_and_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let id = PreviewId::parse("acme-api-pr-1").unwrap();
        let sha = CommitSha::parse(&"ab".repeat(20)).unwrap();
        let log = dir.path().join("build.log");
        std::fs::write(&log, "\u{1b}[31mStep 1/2\u{1b}[0m\nboom\n").unwrap();
        let logs = dir.path().join("logs");
        let kept = archive(&logs, &id, &sha, &log, 14).unwrap();
        let name = kept.file_name().unwrap().to_string_lossy().into_owned();
        let listed = list(&logs, dir.path(), &id);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name);
        assert_eq!(listed[0].sha, "abababa");
        let (text, truncated) = read(&logs, dir.path(), &id, &name).unwrap();
        assert_eq!((text.as_str(), truncated), ("Step 1/2\nboom\n", false));
        assert!(read(&logs, dir.path(), &id, "../build.log").is_none());
    }
}
