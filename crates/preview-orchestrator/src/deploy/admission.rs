//! Room before a deploy builds and starts: the disk guard and admission by memory.
//!
//! **Disk.** Below `MIN_FREE_DISK_GB` free on Docker's filesystem, the deploy first prunes
//! what no preview uses: stopped containers Compose did not make (a failed build step's), the
//! untagged images no preview's build ledger names, and BuildKit's cache. Still below, it waits.
//!
//! **Memory.** The containers the deploy starts get the memory limit each; that plus
//! `MEMORY_RESERVE_MB` must fit in `MemAvailable`. When it does not, the least recently used
//! awake previews that can sleep (their nginx config has the wake route) and were not used in
//! the last [`RECENTLY_USED`] are put to sleep, oldest visit first, until what they used frees
//! enough; none is put to sleep when all of them together would not. Still short, it waits.
//!
//! A wake makes room the same way before it starts a sleeping preview's containers, but never
//! waits: a visitor is waiting for it.
//!
//! A waiting deploy is `queued`, its comment says for what, and it gives its build slot up
//! (others build meanwhile, and take it again before it builds). It looks again when a preview
//! sleeps or is torn down, or after `ROOM_RETRY_SECS`. It stops waiting when it is cancelled (a
//! newer push, the PR closed, shutdown). The count cap (`MAX_CONCURRENT_PREVIEWS`) still applies
//! first, in the queue.

use std::collections::BTreeSet;
use std::time::Duration;

use preview_core::id::PreviewId;

use super::{DockerRunner, Stop};
use crate::capacity::{self, gb, mb};
use crate::feedback::CommentState;
use crate::jobs::{DeployJob, JobContext};
use crate::record::DeploymentStatus;

/// An awake preview visited more recently than this is in use, and is not put to sleep to make
/// room for another.
pub const RECENTLY_USED: Duration = Duration::from_secs(10);

impl DockerRunner {
    /// Waits until there is room to build and start `containers` containers of `job`'s preview;
    /// while it waits the record is `queued` and the comment says why. Then the record is
    /// `building` again, and the comment `building` (as it was).
    pub(super) async fn wait_for_room(
        &self,
        job: &DeployJob,
        ctx: &JobContext,
        containers: usize,
        building: &CommentState,
    ) -> Result<(), Stop> {
        let mut pruned = false;
        let mut told: Option<std::mem::Discriminant<CommentState>> = None;
        loop {
            ctx.checkpoint()?;
            // Made before looking, so that a sleep or teardown meanwhile is not missed.
            let freed = self.room_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let short = match self.disk_short(&mut pruned).await {
                Some(state) => Some(state),
                None => self.memory_short(&job.id, containers).await,
            };
            let Some(state) = short else {
                if !ctx.build_slot().is_held() {
                    // Other builds went on meanwhile: look again once the slot is ours.
                    tokio::select! {
                        _ = ctx.build_slot().acquire() => {}
                        _ = ctx.cancel_token().cancelled() => {}
                    }
                    continue;
                }
                if told.is_some() {
                    tracing::info!(preview = %job.id, "there is room now: the deploy goes on");
                    let _ = ctx.set_status(DeploymentStatus::Building).await;
                    self.send(job, building.clone());
                }
                return Ok(());
            };
            // Others may build while this one waits.
            ctx.build_slot().release();
            let kind = std::mem::discriminant(&state);
            if told != Some(kind) {
                tracing::info!(preview = %job.id, waiting = ?state, "the deploy waits for room");
                let _ = ctx.set_status(DeploymentStatus::Queued).await;
                self.send(job, state);
                told = Some(kind);
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(self.settings.room_retry) => {}
                _ = ctx.cancel_token().cancelled() => {}
            }
        }
    }

    /// The comment of a deploy that waits for disk, or `None` when there is enough free (after
    /// pruning, the first time it is short).
    async fn disk_short(&self, pruned: &mut bool) -> Option<CommentState> {
        let guard = self.settings.disk_guard.as_ref()?;
        let free = || match capacity::free_disk_bytes(&guard.path) {
            Ok(free) => Some(free),
            Err(e) => {
                tracing::warn!(path = %guard.path.display(), error = %e, "the disk guard cannot read the free space; it lets the build go");
                None
            }
        };
        let mut left = free()?;
        if left >= guard.min_free_bytes {
            return None;
        }
        if !*pruned {
            *pruned = true;
            self.prune_unused().await;
            left = free()?;
            if left >= guard.min_free_bytes {
                return None;
            }
        }
        Some(CommentState::WaitingForDisk {
            free_gb: gb(left),
            min_gb: gb(guard.min_free_bytes),
        })
    }

    /// Removes what no preview uses: stopped containers Compose did not make (failed build
    /// steps'; a stopped Swarm task's too, which is only history), untagged images no preview's
    /// build ledger names, and BuildKit's unused cache. Best effort; each failure is logged.
    pub(super) async fn prune_unused(&self) {
        // A build's step container is not running before its step starts: builds wait.
        let removing = preview_engine::image_lock::for_removal().await;
        let containers = preview_engine::docker("remove stopped build containers")
            .args([
                "container",
                "prune",
                "--force",
                // One `label!=` only: how the daemon combines several is not documented, and
                // the wrong reading would prune previews' stopped (sleeping) containers.
                "--filter",
                "label!=com.docker.compose.project",
            ])
            .run()
            .await;
        drop(removing);
        if let Err(e) = containers {
            tracing::warn!(error = %e, "pruning stopped build containers failed");
        }
        let used: BTreeSet<String> = self.build_cache_of_others("");
        let unused = match preview_engine::build_objects::dangling_images().await {
            Ok(dangling) => preview_engine::build_objects::BuildObjects {
                containers: BTreeSet::new(),
                images: dangling.difference(&used).cloned().collect(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "listing untagged images failed");
                Default::default()
            }
        };
        match preview_engine::build_objects::remove_leftovers(&unused, &used).await {
            Ok(removed) => tracing::info!(
                images = removed.images,
                "the disk is short: removed untagged images no preview's build uses"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning untagged images failed"),
        }
        let removing = preview_engine::image_lock::for_removal().await;
        let cache = preview_engine::docker("prune BuildKit's build cache")
            .args(["builder", "prune", "--force"])
            .run()
            .await;
        drop(removing);
        if let Err(e) = cache {
            tracing::info!(error = %e, "pruning BuildKit's cache failed");
        }
    }

    /// Before a wake of `id` starts its stopped containers: when they do not fit in memory, puts
    /// least recently used idle previews to sleep as for a deploy. A visitor is waiting, so the
    /// wake goes on whether or not that made room.
    pub(super) async fn make_room_for_wake(&self, id: &PreviewId) {
        let stopped = match self.settings.engine.containers(id.as_str()).await {
            Ok(containers) => containers.iter().filter(|c| c.state != "running").count(),
            Err(_) => return,
        };
        if stopped == 0 {
            return;
        }
        if let Some(short) = self.memory_short(id, stopped).await {
            tracing::warn!(preview = %id, memory = ?short, "waking although memory is short");
        }
    }

    /// The comment of a deploy of `id` that waits for memory to start `containers` containers,
    /// or `None` when they fit (after putting idle previews to sleep, if that makes them fit).
    async fn memory_short(&self, id: &PreviewId, containers: usize) -> Option<CommentState> {
        let admission = self.settings.memory.as_ref()?;
        let need = admission
            .container_limit_bytes
            .saturating_mul(containers as u64)
            .saturating_add(admission.reserve_bytes);
        let read = || async {
            let info = match &admission.source {
                capacity::MemorySource::Meminfo(path) => {
                    capacity::read_meminfo(path).map_err(|e| e.to_string())
                }
                capacity::MemorySource::Nodes => self.roomiest_node().await,
            };
            info.map_err(|e| {
                tracing::warn!(error = %e, "admission cannot read the available memory; it lets the deploy go");
            })
            .ok()
        };
        let before = read().await?;
        if before.available_bytes >= need {
            return None;
        }
        let freed = self
            .sleep_for_memory(id, need - before.available_bytes)
            .await;
        let mut after = read().await?;
        // MemAvailable may lag what the stopped containers gave back.
        after.available_bytes = after
            .available_bytes
            .max(before.available_bytes.saturating_add(freed));
        if after.available_bytes >= need {
            return None;
        }
        let awake = self.store.get().map_or(0, |store| {
            store.read(|s| {
                s.deployments
                    .values()
                    .filter(|r| r.status == DeploymentStatus::Running && r.id != *id)
                    .count()
            })
        });
        Some(CommentState::WaitingForMemory {
            in_use_gb: gb(after.in_use_bytes()),
            total_gb: gb(after.total_bytes),
            previews: awake,
            need_mb: mb(need),
        })
    }

    /// The memory of the node a new preview fits best on (the most not reserved by tasks),
    /// among those that take new tasks.
    async fn roomiest_node(&self) -> Result<capacity::MemInfo, String> {
        let nodes = self
            .settings
            .engine
            .nodes()
            .await
            .map_err(|e| e.to_string())?;
        nodes
            .iter()
            .filter(|n| n.state == "ready" && n.availability == "active")
            .max_by_key(|n| n.free_memory_bytes)
            .map(|n| capacity::MemInfo {
                total_bytes: n.memory_bytes,
                available_bytes: n.free_memory_bytes,
            })
            .ok_or_else(|| "no node of the swarm is ready and active".to_owned())
    }

    /// Puts the least recently used idle previews (not `id`) to sleep until what they used adds
    /// up to `deficit` bytes; none when all of them together would not. Returns what the ones
    /// put to sleep used.
    async fn sleep_for_memory(&self, id: &PreviewId, deficit: u64) -> u64 {
        let Some(store) = self.store.get() else {
            return 0;
        };
        let awake: Vec<_> = store
            .serving()
            .into_iter()
            .filter(|r| r.id != *id)
            .collect();
        let mut idle: Vec<(Duration, PreviewId)> = awake
            .iter()
            .filter(|r| self.wakes_through_nginx(r.id.as_str()))
            .map(|r| (self.idle_for(r), r.id.clone()))
            .filter(|(idle, _)| *idle >= RECENTLY_USED)
            .collect();
        // Longest idle first.
        idle.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        // `docker stats` takes a second or two per call: eight at a time, in this order.
        use futures_util::StreamExt;
        let engine = &self.settings.engine;
        let measured: Vec<(PreviewId, preview_engine::Result<preview_engine::Usage>)> =
            futures_util::stream::iter(idle.into_iter().map(|(_, candidate)| async move {
                let usage = engine.usage(candidate.as_str()).await;
                (candidate, usage)
            }))
            .buffered(8)
            .collect()
            .await;
        let mut candidates = Vec::new();
        let mut could_free = 0u64;
        for (candidate, usage) in measured {
            let used = match usage {
                Ok(usage) => usage.memory_bytes,
                Err(e) => {
                    tracing::warn!(preview = %candidate, error = %e, "reading a preview's memory use failed");
                    continue;
                }
            };
            could_free = could_free.saturating_add(used);
            candidates.push((candidate, used));
        }
        if could_free < deficit {
            return 0;
        }
        let mut freed = 0u64;
        for (candidate, used) in candidates {
            if freed >= deficit {
                break;
            }
            if self.put_to_sleep(&candidate, store, RECENTLY_USED).await {
                tracing::info!(preview = %candidate, for_preview = %id, used_mb = mb(used), "put to sleep to make room in memory");
                freed = freed.saturating_add(used);
            }
        }
        freed
    }
}
