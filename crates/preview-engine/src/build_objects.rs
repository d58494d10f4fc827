//! What the classic builder leaves of a preview's builds, and removing it.
//!
//! The classic builder (the engine's own, which Compose uses when the buildx plugin is absent,
//! as with Debian's docker.io) keeps an image per Dockerfile step. The result of each stage but
//! the last stays as an untagged image (0.5–0.7 GB for a Node build stage), and a failing `RUN`
//! step leaves its stopped container. None of them carry the build's labels: the builder adds
//! `--label`s to the last stage's image only, after its last step. So they are known by what the
//! build log names, ` ---> Running in {container}` and ` ---> {image}` after each step.
//!
//! After each build the ids its log names are added to the project's ledger
//! ([`LEDGER`] in its directory). Removing leftovers removes the named containers that are not
//! running, then the named images that are dangling (untagged and without a child image);
//! `docker image rm` then also removes their untagged parents that no other image uses, so the
//! layers another build still uses (a dependency install shared through the cache) stay.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{Result, docker};

/// The ledger's file name in a project's directory.
pub const LEDGER: &str = "build-objects";

/// Containers and images named by builds, as the 12-digit short ids the builder prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildObjects {
    /// Containers of `RUN` steps.
    pub containers: BTreeSet<String>,
    /// Images of steps (a cached step's too).
    pub images: BTreeSet<String>,
}

impl BuildObjects {
    /// Whether nothing is named.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.images.is_empty()
    }

    /// Adds what `other` names.
    pub fn extend(&mut self, other: BuildObjects) {
        self.containers.extend(other.containers);
        self.images.extend(other.images);
    }
}

/// What [`remove_leftovers`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedLeftovers {
    /// Stopped build containers.
    pub containers: usize,
    /// Dangling images (their untagged parents that nothing else used went with them).
    pub images: usize,
}

/// The containers and images a classic builder's log names.
pub fn objects_in_log(log: &str) -> BuildObjects {
    let mut objects = BuildObjects::default();
    for line in log.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix(" ---> ") else {
            continue;
        };
        let (set, id) = match rest.strip_prefix("Running in ") {
            Some(id) => (&mut objects.containers, id.trim()),
            None => (&mut objects.images, rest.trim()),
        };
        if is_short_id(id) {
            set.insert(id.to_owned());
        }
    }
    objects
}

fn is_short_id(id: &str) -> bool {
    id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The objects recorded in `dir`'s ledger; empty when it has none.
pub fn read_ledger(dir: &Path) -> BuildObjects {
    let text = std::fs::read_to_string(dir.join(LEDGER)).unwrap_or_default();
    let mut objects = BuildObjects::default();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("container", id)) if is_short_id(id) => {
                objects.containers.insert(id.to_owned());
            }
            Some(("image", id)) if is_short_id(id) => {
                objects.images.insert(id.to_owned());
            }
            _ => {}
        }
    }
    objects
}

/// Adds what the build log at `log` names to `dir`'s ledger.
pub fn record_build(dir: &Path, log: &Path) -> std::io::Result<()> {
    let named = objects_in_log(&String::from_utf8_lossy(&std::fs::read(log)?));
    if named.is_empty() {
        return Ok(());
    }
    let mut all = read_ledger(dir);
    all.extend(named);
    let mut text = String::new();
    for id in &all.containers {
        text.push_str(&format!("container {id}\n"));
    }
    for id in &all.images {
        text.push_str(&format!("image {id}\n"));
    }
    std::fs::write(dir.join(LEDGER), text)
}

/// Removes the containers of `objects` that are not running, then its dangling images that
/// are not in `keep`. An image another one still builds on is not dangling and stays.
pub async fn remove_leftovers(
    objects: &BuildObjects,
    keep: &BTreeSet<String>,
) -> Result<RemovedLeftovers> {
    let mut removed = RemovedLeftovers::default();
    if !objects.containers.is_empty() {
        // A build step's container carries no label; a container of a preview or of the shared
        // servers does, and is never a build's leftover, whatever a build log printed.
        let out = docker("list containers and their states")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.ID}}\t{{.State}}\t{{.Label \"com.docker.compose.project\"}}{{.Label \"com.docker.stack.namespace\"}}",
            ])
            .run()
            .await?;
        let stopped: Vec<String> = out
            .stdout_text()
            .lines()
            .filter_map(|l| {
                let mut fields = l.splitn(3, '\t');
                Some((fields.next()?, fields.next()?, fields.next().unwrap_or("")))
            })
            .filter(|(id, state, owner)| {
                objects.containers.contains(*id) && *state != "running" && owner.trim().is_empty()
            })
            .map(|(id, _, _)| id.to_owned())
            .collect();
        if !stopped.is_empty() {
            docker("remove the stopped containers of the preview's builds")
                .args(["rm", "--volumes"])
                .args(&stopped)
                .run()
                .await?;
            removed.containers = stopped.len();
        }
    }
    if !objects.images.is_empty() {
        let _removing = crate::image_lock::for_removal().await;
        let dangling: Vec<String> = dangling_images()
            .await?
            .into_iter()
            .filter(|id| objects.images.contains(id) && !keep.contains(id))
            .collect();
        // One at a time: an image that became another's parent meanwhile refuses, alone.
        for id in &dangling {
            let gone = docker("remove an untagged image the preview's build left")
                .args(["image", "rm", id])
                .run()
                .await;
            match gone {
                Ok(_) => removed.images += 1,
                Err(e) => tracing::info!(image = %id, error = %e, "an untagged build image stays"),
            }
        }
    }
    Ok(removed)
}

/// The short ids of the dangling images: untagged, and no image builds on them.
pub async fn dangling_images() -> Result<BTreeSet<String>> {
    let out = docker("list the untagged images")
        .args(["image", "ls", "-q", "--filter", "dangling=true"])
        .run()
        .await?;
    Ok(out
        .stdout_text()
        .lines()
        .map(str::trim)
        .filter(|id| is_short_id(id))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the classic builder printed it on the test bed for a two-stage build whose last
    /// `RUN` failed.
    const FAILED: &str = "Sending build context to Docker daemon     501B\r\r\nStep 1/8 : FROM python:3.12-slim-bookworm AS build\n ---> aa3f730e1bb3\nStep 2/8 : RUN echo one > /one\n ---> Running in d1f48f690616\nRemoving intermediate container d1f48f690616\n ---> 6999f8fc94c3\nStep 3/8 : RUN echo two > /two\n ---> Using cache\n ---> a7377f134ac7\nStep 4/8 : FROM python:3.12-slim-bookworm\n ---> aa3f730e1bb3\nStep 5/8 : COPY --from=build /one /one\n ---> 257a5a93f278\nStep 6/8 : RUN exit 3\n ---> Running in 3b5fbc36988d\nThe command '/bin/sh -c exit 3' returned a non-zero code: 3\n";

    #[test]
    fn a_classic_build_log_names_its_containers_and_images() {
        let objects = objects_in_log(FAILED);
        assert_eq!(
            objects.containers,
            BTreeSet::from(["d1f48f690616".to_owned(), "3b5fbc36988d".to_owned()])
        );
        assert_eq!(
            objects.images,
            BTreeSet::from(
                [
                    "aa3f730e1bb3",
                    "6999f8fc94c3",
                    "a7377f134ac7",
                    "257a5a93f278"
                ]
                .map(str::to_owned)
            )
        );
        assert!(
            objects_in_log("Step 1/2 : FROM x\n ---> Using cache\n ---> not-an-id\n").is_empty()
        );
    }

    #[test]
    fn the_ledger_gathers_every_build() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_ledger(dir.path()).is_empty());
        let log = dir.path().join("build.log");
        std::fs::write(&log, FAILED).unwrap();
        record_build(dir.path(), &log).unwrap();
        std::fs::write(&log, " ---> Running in 0123456789ab\n ---> ba9876543210\n").unwrap();
        record_build(dir.path(), &log).unwrap();
        let all = read_ledger(dir.path());
        assert_eq!(all.containers.len(), 3);
        assert_eq!(all.images.len(), 5);
        assert!(all.images.contains("ba9876543210"));
        // A line of anything else is skipped.
        std::fs::write(
            dir.path().join(LEDGER),
            "image ../../etc\ncontainer 0123456789ab\n",
        )
        .unwrap();
        let odd = read_ledger(dir.path());
        assert!(odd.images.is_empty());
        assert_eq!(odd.containers.len(), 1);
    }
}
