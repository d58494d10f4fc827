//! One lock per host between builds and the removal of images.
//!
//! The classic builder builds each step on the image of the step before, found in its cache
//! (` ---> Using cache`), and that image is untagged. Removing an image (a preview's teardown, its
//! build's leftovers, a retired slot's image, the disk guard's prune) also removes the untagged
//! images under it that nothing else builds on; a build that has just taken one of them from
//! the cache then fails with `failed to set parent sha256:...: unknown parent image ID`. Two
//! previews of one repository share their first steps, so closing one while the other builds
//! was enough (seen in a full test run: two tests of their own repositories shared `WORKDIR
//! /app` on the Python image).
//!
//! So builds hold this lock shared, and removals of images hold it alone: a removal waits for
//! the builds under way, and builds that start meanwhile wait for the removal (a second or two)
//! rather than pass it, through a turnstile lock everyone passes alone. These are advisory
//! `flock`s on two files of the temp dir, so that every process of the host that
//! builds or removes (several orchestrators in one test run) takes the same lock. When the file
//! cannot be opened, the work goes on unlocked, with a warning.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name in the temp dir.
const LOCK_FILE: &str = "preview-deployer-images.lock";

/// Holds the lock until dropped.
#[must_use = "the lock is released when this is dropped"]
#[derive(Debug)]
pub struct ImageLock {
    _file: Option<File>,
}

/// Shared with other builds, for as long as a build runs. A wait of [`TOLD_WAIT`] or more is
/// told in the build's `log`, so that a slow build shows why.
pub async fn for_build(log: &Path) -> ImageLock {
    shared_telling_the_wait(lock_path(), log).await
}

async fn shared_telling_the_wait(path: PathBuf, log: &Path) -> ImageLock {
    let asked = Instant::now();
    let lock = take(path, Mode::Shared).await;
    let waited = asked.elapsed();
    if waited >= TOLD_WAIT {
        let line = format!("{WAITED} {:.1} s {WAITED_FOR}\n", waited.as_secs_f64());
        let told = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = told {
            tracing::warn!(log = %log.display(), error = %e, "writing the wait for the image lock to the build log failed");
        }
    }
    lock
}

/// The shortest wait for the lock that a build's log tells.
pub const TOLD_WAIT: Duration = Duration::from_secs(1);

/// How the build log's line on the wait for the lock begins, before the seconds.
pub const WAITED: &str = "preview-deployer: waited";

/// How it goes on after the seconds.
const WAITED_FOR: &str = "for image removals on this host to finish before building";

/// Alone, for as long as images are removed.
pub async fn for_removal() -> ImageLock {
    take(lock_path(), Mode::Alone).await
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Shared,
    Alone,
}

fn lock_path() -> PathBuf {
    std::env::temp_dir().join(LOCK_FILE)
}

async fn take(path: PathBuf, mode: Mode) -> ImageLock {
    let shown = path.display().to_string();
    // flock blocks the thread: it waits on the blocking pool. When the waiting task is dropped
    // (a cancelled job), the file comes back to nobody and is closed, which unlocks it.
    let taken = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                // Made by another user: reading is enough to lock.
                .or_else(|_| File::open(path))
        };
        // Everyone passes the turnstile alone: a removal waits in it for the builds under way,
        // so builds that come after it wait too, and a steady flow of builds cannot starve it.
        let turnstile = open(&path.with_extension("turnstile"))?;
        preview_exec::fs::lock(&turnstile, false)?;
        let file = open(&path)?;
        preview_exec::fs::lock(&file, matches!(mode, Mode::Shared))?;
        drop(turnstile);
        Ok(file)
    })
    .await;
    match taken {
        Ok(Ok(file)) => ImageLock { _file: Some(file) },
        Ok(Err(e)) => {
            tracing::warn!(path = %shown, error = %e, "the lock between builds and image removals cannot be taken; going on without it");
            ImageLock { _file: None }
        }
        Err(e) => {
            tracing::warn!(error = %e, "taking the lock between builds and image removals failed; going on without it");
            ImageLock { _file: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_removal_waits_for_the_builds_and_builds_share() {
        // A lock file of its own: the host's may be held by a test run beside.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let log = dir.path().join("build.log");
        let for_build = || {
            let (path, log) = (path.clone(), log.clone());
            async move { shared_telling_the_wait(path, &log).await }
        };
        let for_removal = || take(path.clone(), Mode::Alone);
        let first = for_build().await;
        assert!(first._file.is_some());
        // Another build goes at once.
        let second = tokio::time::timeout(Duration::from_secs(5), for_build())
            .await
            .expect("builds share the lock");
        let removal = tokio::spawn(for_removal());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!removal.is_finished(), "the removal waits for the builds");
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!removal.is_finished(), "and for the last of them");
        drop(second);
        let alone = tokio::time::timeout(Duration::from_secs(5), removal)
            .await
            .expect("the removal goes once the builds end")
            .unwrap();
        assert!(!log.exists(), "builds that did not wait tell nothing");
        let build = tokio::spawn(for_build());
        tokio::time::sleep(TOLD_WAIT + Duration::from_millis(100)).await;
        assert!(!build.is_finished(), "a build waits for the removal");
        drop(alone);
        let build = tokio::time::timeout(Duration::from_secs(5), build)
            .await
            .expect("the build goes once the removal ends")
            .unwrap();
        let told = std::fs::read_to_string(&log).unwrap();
        assert!(
            told.starts_with(&format!("{WAITED} 1.")) && told.ends_with(&format!("{WAITED_FOR}\n")),
            "the build's log tells its wait: {told:?}"
        );

        // A build that comes while a removal waits goes after the removal, not before.
        let removal = tokio::spawn(for_removal());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = tokio::spawn(for_build());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!removal.is_finished() && !later.is_finished());
        drop(build);
        let alone = tokio::time::timeout(Duration::from_secs(5), removal)
            .await
            .expect("the removal goes first")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !later.is_finished(),
            "the later build waits behind the removal"
        );
        drop(alone);
        let _later = tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("then the later build goes")
            .unwrap();
    }
}
