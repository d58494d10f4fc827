//! The deployment store: the seed's JSON file (`deployments`, `portAllocations`) plus a schema
//! version and the slug registry.
//!
//! * One writer: a dedicated thread writes the newest state whenever it changed. Mutations that
//!   arrive while a write is in progress are written together by the next one (group commit), so
//!   a burst of webhooks costs a few writes, not one each.
//! * Every write is atomic: temp file, fsync, rename, fsync of the directory ([`StoreFile`]).
//!   A reader sees the old file or the new one, never a mix.
//! * A mutation is acknowledged only once a write containing it has finished ([`Ticket::wait`]).
//! * A lock file next to the store (`{file}.lock`, `flock`) keeps a second orchestrator out.
//! * Loading is strict: a file that is not valid JSON of this schema, or carries another schema
//!   version, stops startup and is left untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use jiff::Timestamp;
use preview_core::id::{PreviewId, RepoSlug, SlugRegistry};
use preview_core::ports::{PortAllocation, PortPools, port_is_free_on_host};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::watch;

use crate::record::{DeploymentRecord, DeploymentStatus};
use crate::{Error, Result};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The deployment records by id. Reads go through `Deref` to the map; every write goes through
/// a method that notes the record as changed, so the writer re-serializes only changed records.
#[derive(Debug, Default, Clone)]
pub struct Records {
    map: BTreeMap<PreviewId, DeploymentRecord>,
    changed: BTreeSet<PreviewId>,
    /// Each record's JSON as last written.
    cache: BTreeMap<PreviewId, Vec<u8>>,
}

impl std::ops::Deref for Records {
    type Target = BTreeMap<PreviewId, DeploymentRecord>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Records {
    /// A record, for changing.
    pub fn get_mut(&mut self, id: &PreviewId) -> Option<&mut DeploymentRecord> {
        let rec = self.map.get_mut(id)?;
        self.changed.insert(id.clone());
        Some(rec)
    }

    /// Every record, for changing.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut DeploymentRecord> {
        self.changed.extend(self.map.keys().cloned());
        self.map.values_mut()
    }

    /// Adds or replaces a record; returns it for further changes.
    pub fn insert(&mut self, rec: DeploymentRecord) -> &mut DeploymentRecord {
        let id = rec.id.clone();
        self.changed.insert(id.clone());
        self.map.insert(id.clone(), rec);
        self.map.get_mut(&id).expect("just inserted")
    }

    /// Removes a record.
    pub fn remove(&mut self, id: &PreviewId) -> Option<DeploymentRecord> {
        self.changed.insert(id.clone());
        self.map.remove(id)
    }

    /// Writes `{"id":record,...}`, serializing only the records changed since the last call.
    fn write_json(&mut self, out: &mut Vec<u8>) {
        for id in std::mem::take(&mut self.changed) {
            match self.map.get(&id) {
                Some(rec) => {
                    // Into the previous JSON's buffer: it has the room already.
                    let json = self.cache.entry(id).or_default();
                    json.clear();
                    serde_json::to_writer(&mut *json, rec).expect("records serialize");
                }
                None => {
                    self.cache.remove(&id);
                }
            }
        }
        out.push(b'{');
        for (i, (id, json)) in self.cache.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, id.as_str()).expect("ids serialize");
            out.push(b':');
            out.extend_from_slice(json);
        }
        out.push(b'}');
    }
}

/// The in-memory state the file mirrors.
#[derive(Debug, Default, Clone)]
pub struct StoreState {
    /// Records by id.
    pub deployments: Records,
    /// Ports held, by id.
    pub port_allocations: BTreeMap<PreviewId, PortAllocation>,
    /// Slugs handed out, by repository.
    pub slugs: SlugRegistry,
}

impl StoreState {
    /// Every port held by any preview.
    pub fn allocated_ports(&self) -> BTreeSet<u16> {
        self.port_allocations
            .values()
            .flat_map(PortAllocation::ports)
            .collect()
    }

    /// How many previews are running.
    pub fn live_count(&self) -> usize {
        self.deployments
            .values()
            .filter(|r| r.status == crate::record::DeploymentStatus::Running)
            .count()
    }
}

struct SlugsView<'a>(&'a SlugRegistry);

impl Serialize for SlugsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (repo, slug) in self.0.entries() {
            map.serialize_entry(repo, slug)?;
        }
        map.end()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileData {
    #[allow(dead_code)]
    schema_version: u32,
    deployments: BTreeMap<PreviewId, DeploymentRecord>,
    port_allocations: BTreeMap<PreviewId, PortAllocation>,
    #[serde(default)]
    repo_slugs: BTreeMap<String, RepoSlug>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionProbe {
    schema_version: Option<serde_json::Value>,
}

/// What the writer has done, for waiters.
#[derive(Debug, Clone, Default)]
struct WriteProgress {
    /// The newest state version on disk.
    persisted: u64,
    /// The newest version whose write failed, and why.
    failed: Option<(u64, String)>,
}

/// What the writer thread shares with the handles.
struct Shared {
    path: PathBuf,
    state: Mutex<Versioned>,
    wake: Mutex<WriterFlags>,
    wake_cv: Condvar,
    progress: watch::Sender<WriteProgress>,
}

struct Inner {
    shared: Arc<Shared>,
    pools: PortPools,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    // Held for the store's lifetime; dropped (unlocked) after the writer's last write.
    _lock: File,
}

struct Versioned {
    state: StoreState,
    version: u64,
}

#[derive(Default)]
struct WriterFlags {
    dirty: bool,
    stop: bool,
    /// The writer waits on `wake_cv`: only then does a change need to notify it (a notify is a
    /// system call, and changes arrive thousands of times a second).
    asleep: bool,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.path)
            .finish_non_exhaustive()
    }
}

/// A pending write: [`Ticket::wait`] returns once the change is on disk.
#[must_use = "a change is only durable once its ticket was waited for"]
pub struct Ticket {
    version: u64,
    progress: watch::Receiver<WriteProgress>,
}

impl Ticket {
    /// Waits until a write containing the change finished; errors if that write failed.
    pub async fn wait(mut self) -> Result<()> {
        let v = self.version;
        let p = self
            .progress
            .wait_for(|p| p.persisted >= v || p.failed.as_ref().is_some_and(|(f, _)| *f >= v))
            .await
            .map_err(|_| Error::StoreClosed)?
            .clone();
        if p.persisted >= v {
            Ok(())
        } else {
            Err(Error::StoreWrite(
                p.failed.map(|(_, e)| e).unwrap_or_default(),
            ))
        }
    }

    /// A ticket that is already satisfied (nothing changed).
    fn done(progress: watch::Receiver<WriteProgress>) -> Self {
        Self {
            version: 0,
            progress,
        }
    }
}

impl Store {
    /// Locks and loads the store at `path` (an absent file is an empty store), and starts its
    /// writer thread.
    pub fn open(path: &Path, pools: PortPools) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::StoreIo {
                path: dir.to_owned(),
                action: "create the store's directory",
                source: e,
            })?;
        }
        let lock_path = lock_path(path);
        let lock = lock_file(&lock_path)?;
        let state = load(path)?;
        let (progress, _) = watch::channel(WriteProgress::default());
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            state: Mutex::new(Versioned { state, version: 0 }),
            wake: Mutex::new(WriterFlags::default()),
            wake_cv: Condvar::new(),
            progress,
        });
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            pools,
            writer: Mutex::new(None),
            _lock: lock,
        });
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&shared))
            .map_err(|e| Error::StoreIo {
                path: path.to_owned(),
                action: "start the store writer thread",
                source: e,
            })?;
        *inner.writer.lock().unwrap() = Some(handle);
        Ok(Store { inner })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// The port pools.
    pub fn pools(&self) -> PortPools {
        self.inner.pools
    }

    fn lock_state(&self) -> MutexGuard<'_, Versioned> {
        self.inner
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        f(&self.lock_state().state)
    }

    /// A copy of one record.
    pub fn get(&self, id: &PreviewId) -> Option<DeploymentRecord> {
        self.read(|s| s.deployments.get(id).cloned())
    }

    /// The ports of one preview.
    pub fn ports(&self, id: &PreviewId) -> Option<PortAllocation> {
        self.read(|s| s.port_allocations.get(id).copied())
    }

    /// Copies of every record, by id.
    pub fn list(&self) -> Vec<DeploymentRecord> {
        self.read(|s| s.deployments.values().cloned().collect())
    }

    /// Copies of the records of the previews that serve now and are meant to (not asleep,
    /// deploying or being torn down).
    pub fn serving(&self) -> Vec<DeploymentRecord> {
        self.read(|s| {
            s.deployments
                .values()
                .filter(|r| {
                    r.status == crate::record::DeploymentStatus::Running
                        && r.desired == crate::record::DesiredState::Running
                })
                .cloned()
                .collect()
        })
    }

    /// Moves preview `id` from status `from` to `to` (sleep and wake), leaving `updated_at`, the
    /// TTL's clock, as it was. Returns whether it was in `from`, and the write's ticket.
    pub fn switch_status(
        &self,
        id: &PreviewId,
        from: &DeploymentStatus,
        to: DeploymentStatus,
        now: jiff::Timestamp,
    ) -> (bool, Ticket) {
        self.mutate(|s| match s.deployments.get_mut(id) {
            Some(r) if r.status == *from => {
                let updated = r.updated_at;
                r.set_status(to, now);
                r.updated_at = updated;
                (true, true)
            }
            _ => (false, false),
        })
    }

    /// Changes the state in memory. `f` returns its result and whether it changed anything; a
    /// change is written by the writer thread, and the returned ticket says when.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut StoreState) -> (R, bool)) -> (R, Ticket) {
        let mut guard = self.lock_state();
        let (r, changed) = f(&mut guard.state);
        let progress = self.inner.shared.progress.subscribe();
        if !changed {
            return (r, Ticket::done(progress));
        }
        guard.version += 1;
        let version = guard.version;
        drop(guard);
        let mut flags = self
            .inner
            .shared
            .wake
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        flags.dirty = true;
        let asleep = std::mem::take(&mut flags.asleep);
        drop(flags);
        if asleep {
            self.inner.shared.wake_cv.notify_one();
        }
        (r, Ticket { version, progress })
    }

    /// Changes one record and waits until the change is on disk. `None` if there is no such
    /// record.
    pub async fn update<R>(
        &self,
        id: &PreviewId,
        f: impl FnOnce(&mut DeploymentRecord) -> R,
    ) -> Result<Option<R>> {
        let (r, ticket) = self.mutate(|s| match s.deployments.get_mut(id) {
            Some(rec) => {
                let r = f(rec);
                rec.updated_at = Timestamp::now();
                (Some(r), true)
            }
            None => (None, false),
        });
        ticket.wait().await?;
        Ok(r)
    }

    /// The ports of preview `id`: the ones it holds, or new ones from the pools that no other
    /// preview holds, no container in `published` publishes and nothing on the host listens on.
    /// A db port is added when `need_db` and the preview has none yet.
    pub async fn allocate_ports(
        &self,
        id: &PreviewId,
        need_db: bool,
        published: &BTreeSet<u16>,
    ) -> Result<PortAllocation> {
        let pools = self.inner.pools;
        let (r, ticket) = self.mutate(|s| {
            let existing = s.port_allocations.get(id).copied();
            if let Some(a) = existing
                && (a.db.is_some() || !need_db)
            {
                return (Ok(a), false);
            }
            let mut taken = s.allocated_ports();
            if let Some(a) = existing {
                taken.remove(&a.app);
            }
            let result = match existing {
                Some(a) => pools
                    .allocate(true, &taken, published, |p| {
                        p == a.app || port_is_free_on_host(p)
                    })
                    .map(|n| PortAllocation { db: n.db, ..a }),
                None => pools.allocate(need_db, &taken, published, port_is_free_on_host),
            };
            match result {
                Ok(a) => {
                    s.port_allocations.insert(id.clone(), a);
                    (Ok(a), true)
                }
                Err(e) => (Err(Error::Ports(e.to_string())), false),
            }
        });
        ticket.wait().await?;
        r
    }

    /// A second app port for preview `id`, for an update's new containers to start on beside
    /// the serving ones: the one it holds already (an update that did not finish), or a new one
    /// that no preview holds, no container in `published` publishes and nothing on the host
    /// listens on. The preview must hold ports already.
    pub async fn allocate_next_app_port(
        &self,
        id: &PreviewId,
        published: &BTreeSet<u16>,
    ) -> Result<u16> {
        self.allocate_extra_port(
            id,
            published,
            |a| a.next_app,
            |a, port| a.next_app = Some(port),
        )
        .await
    }

    /// The port of preview `id`'s second web service (routed at its own hostname), chosen as
    /// [`Store::allocate_next_app_port`] chooses, on a first deploy. An update starts the new
    /// commit's at [`Store::allocate_next_service_port`], which becomes this one at the switch.
    pub async fn allocate_service_port(
        &self,
        id: &PreviewId,
        published: &BTreeSet<u16>,
    ) -> Result<u16> {
        self.allocate_extra_port(
            id,
            published,
            |a| a.service,
            |a, port| a.service = Some(port),
        )
        .await
    }

    /// A port of preview `id` besides its app port, read with `held` and recorded with `hold`:
    /// the one it holds, or a new one from the app pool.
    async fn allocate_extra_port(
        &self,
        id: &PreviewId,
        published: &BTreeSet<u16>,
        held: fn(&PortAllocation) -> Option<u16>,
        hold: fn(&mut PortAllocation, u16),
    ) -> Result<u16> {
        let pools = self.inner.pools;
        let (r, ticket) = self.mutate(|s| {
            let Some(mut existing) = s.port_allocations.get(id).copied() else {
                return (Err(Error::Ports(format!("{id} holds no ports"))), false);
            };
            if let Some(port) = held(&existing) {
                return (Ok(port), false);
            }
            let taken = s.allocated_ports();
            match pools.pick(preview_core::ports::PortKind::App, |p| {
                !taken.contains(&p) && !published.contains(&p) && port_is_free_on_host(p)
            }) {
                Ok(port) => {
                    hold(&mut existing, port);
                    s.port_allocations.insert(id.clone(), existing);
                    (Ok(port), true)
                }
                Err(e) => (Err(Error::Ports(e.to_string())), false),
            }
        });
        ticket.wait().await?;
        r
    }

    /// A second port for preview `id`'s second web service during an update, for the new
    /// commit's to start on beside the serving one, chosen as
    /// [`Store::allocate_next_app_port`] chooses.
    pub async fn allocate_next_service_port(
        &self,
        id: &PreviewId,
        published: &BTreeSet<u16>,
    ) -> Result<u16> {
        self.allocate_extra_port(
            id,
            published,
            |a| a.next_service,
            |a, port| a.next_service = Some(port),
        )
        .await
    }

    /// Once nginx routes to an update's new commit: makes `next_app` the app port of preview
    /// `id` and `next_service` (if held) its second web service's port, in one change, giving
    /// the old ones back. Nothing changes unless `next_app` is `app_port`.
    pub async fn switch_to_next_ports(&self, id: &PreviewId, app_port: u16) -> Result<()> {
        let ((), ticket) = self.mutate(|s| match s.port_allocations.get_mut(id) {
            Some(a) if a.next_app == Some(app_port) => {
                a.app = app_port;
                a.next_app = None;
                if let Some(service) = a.next_service.take() {
                    a.service = Some(service);
                }
                ((), true)
            }
            _ => ((), false),
        });
        ticket.wait().await
    }

    /// Gives back the second app port of preview `id` and its second web service's next port
    /// (an update that failed or was abandoned).
    pub async fn release_next_ports(&self, id: &PreviewId) -> Result<()> {
        let ((), ticket) = self.mutate(|s| match s.port_allocations.get_mut(id) {
            Some(a) if a.next_app.is_some() || a.next_service.is_some() => {
                a.next_app = None;
                a.next_service = None;
                ((), true)
            }
            _ => ((), false),
        });
        ticket.wait().await
    }

    /// Gives back the port of preview `id`'s second web service (its commit has none any more).
    pub async fn release_service_port(&self, id: &PreviewId) -> Result<()> {
        let ((), ticket) = self.mutate(|s| match s.port_allocations.get_mut(id) {
            Some(a) if a.service.is_some() => {
                a.service = None;
                ((), true)
            }
            _ => ((), false),
        });
        ticket.wait().await
    }

    /// Gives back the ports of preview `id`.
    pub async fn release_ports(&self, id: &PreviewId) -> Result<()> {
        let ((), ticket) = self.mutate(|s| ((), s.port_allocations.remove(id).is_some()));
        ticket.wait().await
    }

    /// Waits until everything changed so far is on disk.
    pub async fn flush(&self) -> Result<()> {
        let version = self.lock_state().version;
        Ticket {
            version,
            progress: self.inner.shared.progress.subscribe(),
        }
        .wait()
        .await
    }

    /// Stops the writer after a last write. Later changes are not written.
    pub fn close(&self) {
        self.inner.stop_writer();
    }
}

/// A write that ends less than this before the next change means changes are streaming in.
const BUSY: std::time::Duration = std::time::Duration::from_millis(2);
/// How long the writer gathers changes before writing, while they stream in.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);

fn writer_loop(shared: &Shared) {
    let mut buf = Vec::new();
    let mut file = StoreFile::new(&shared.path);
    let mut last_write: Option<std::time::Instant> = None;
    loop {
        {
            let mut flags = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            while !flags.dirty && !flags.stop {
                flags.asleep = true;
                flags = shared
                    .wake_cv
                    .wait(flags)
                    .unwrap_or_else(|p| p.into_inner());
            }
            flags.asleep = false;
            if !flags.dirty {
                return;
            }
            // Group commit: while changes stream in, gather them a moment longer so that one
            // write (two fsyncs) acknowledges more of them. A change after a quiet spell is
            // written at once.
            if !flags.stop && last_write.is_some_and(|t| t.elapsed() < BUSY) {
                drop(flags);
                std::thread::sleep(GATHER);
                flags = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            }
            flags.dirty = false;
        }
        buf.clear();
        let version = {
            let mut guard = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let guard = &mut *guard;
            let st = &mut guard.state;
            buf.extend_from_slice(
                format!("{{\"schemaVersion\":{SCHEMA_VERSION},\"deployments\":").as_bytes(),
            );
            st.deployments.write_json(&mut buf);
            buf.extend_from_slice(b",\"portAllocations\":");
            serde_json::to_writer(&mut buf, &st.port_allocations).expect("ports serialize");
            buf.extend_from_slice(b",\"repoSlugs\":");
            serde_json::to_writer(&mut buf, &SlugsView(&st.slugs)).expect("slugs serialize");
            buf.extend_from_slice(b"}\n");
            guard.version
        };
        let started = std::time::Instant::now();
        let result = file.write(&buf);
        crate::telemetry::store_write(started.elapsed(), buf.len());
        shared.progress.send_modify(|p| match &result {
            Ok(_) => p.persisted = p.persisted.max(version),
            Err(e) => {
                tracing::error!(path = %shared.path.display(), error = %e, "writing the store failed");
                p.failed = Some((version, e.to_string()));
            }
        });
        last_write = Some(std::time::Instant::now());
    }
}

/// Writes the versions of the store file: each goes to a temp file, is fsynced, renamed over the
/// store file and made durable by an fsync of the directory.
///
/// The temp file is `.{store}.next`, and the rename is renameat2(`RENAME_EXCHANGE`): it swaps the
/// two names, so the temp file then holds the previous version, and the next write overwrites
/// that file instead of creating one. A file is reused only under a write lease, which the kernel
/// grants only when no other process has it open: a reader still holding an old version keeps
/// it, and the name gets a new file. Where leases or the exchange are missing, every version is
/// a new file renamed over the store.
///
/// Why: a new file per write costs an inode allocation and, later, a free. On ext4 without a
/// journal (this project's test machine), each allocation also steps over every inode freed in
/// the last 12 hours; at hundreds of writes a second that search cost more than the write did.
///
/// A file that must grow reserves a quarter more room, in one piece (fallocate), so that the two
/// files do not interleave their blocks as the store grows: each fsync is then one request to the
/// disk instead of one per fragment (about 15 requests per write fell to 6 in the benchmark).
pub struct StoreFile {
    path: PathBuf,
    temp: PathBuf,
    dir: PathBuf,
    /// The directory, open for its fsyncs once the first write opened it.
    dir_handle: Option<File>,
    /// Whether leases and the exchange work here (until one is refused).
    reuse: bool,
    /// Whether this file system can reserve room (until fallocate says it cannot).
    reserve: bool,
}

/// The disk space a store file reserves: its size plus a quarter, in steps of this.
const RESERVE_STEP: u64 = 64 * 1024;

impl StoreFile {
    /// The writer of the store file at `path`.
    pub fn new(path: &Path) -> Self {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        Self {
            path: path.to_owned(),
            temp: path.with_file_name(format!(".{name}.next")),
            dir,
            dir_handle: None,
            reuse: true,
            reserve: true,
        }
    }

    /// Writes `bytes` as the new version; returns once it is durable.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let live = std::fs::metadata(&self.path).ok();
        let file = self.open_temp()?;
        let temp = file.metadata()?;
        if let Some(live) = &live
            && temp.permissions() != live.permissions()
        {
            file.set_permissions(live.permissions())?;
        }
        // Growing a block at a time, the two files' blocks would interleave on disk, and each
        // fsync would write one request per fragment: reserve room in one piece instead. Best
        // effort: where fallocate is missing (or the disk is full), files grow as written.
        let len = bytes.len() as u64;
        if self.reserve && temp.blocks() * 512 < len {
            let room = (len + len / 4).next_multiple_of(RESERVE_STEP);
            if let Err(e) = preview_exec::fs::reserve(&file, room) {
                self.reserve = e.kind() != std::io::ErrorKind::Unsupported;
            }
        }
        file.write_all_at(bytes, 0)?;
        // Only a shorter version needs the truncate: even one to the same size costs the fsync
        // another disk request.
        if temp.len() > len {
            file.set_len(len)?;
        }
        file.sync_all()?;
        // Closing releases the lease: readers may open the file once it is the store.
        drop(file);
        match (&live, self.reuse) {
            (Some(_), true) => {
                // A refused exchange changed nothing (EINVAL on a file system without it, ENOSYS
                // on an old kernel): rename instead, from now on.
                if preview_exec::fs::exchange(&self.temp, &self.path).is_err() {
                    self.reuse = false;
                    std::fs::rename(&self.temp, &self.path)?;
                }
            }
            _ => std::fs::rename(&self.temp, &self.path)?,
        }
        let dir = match &self.dir_handle {
            Some(dir) => dir,
            None => self.dir_handle.insert(File::open(&self.dir)?),
        };
        dir.sync_all()
    }

    /// The temp file, open for writing: the previous version's file when nobody else has it
    /// open, else a new one.
    fn open_temp(&mut self) -> std::io::Result<File> {
        use std::io::ErrorKind;
        if self.reuse {
            match std::fs::OpenOptions::new().write(true).open(&self.temp) {
                Ok(file) => match preview_exec::fs::take_write_lease(&file) {
                    Ok(()) => return Ok(file),
                    // A reader holds the old version: leave that file to it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => self.reuse = false,
                },
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match std::fs::remove_file(&self.temp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.temp)
    }
}

/// `{store}.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

// `File::try_lock` is std since 1.89; the workspace's rust-version still says 1.88.
#[allow(clippy::incompatible_msrv)]
fn lock_file(lock_path: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| Error::StoreIo {
            path: lock_path.to_owned(),
            action: "open the lock file",
            source: e,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::StoreLocked(lock_path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::StoreIo {
            path: lock_path.to_owned(),
            action: "lock",
            source: e,
        }),
    }
}

/// Reads and checks the store file; an absent file is an empty store.
pub fn load(path: &Path) -> Result<StoreState> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreState::default()),
        Err(e) => {
            return Err(Error::StoreIo {
                path: path.to_owned(),
                action: "read",
                source: e,
            });
        }
    };
    let corrupt = |reason: String| Error::StoreCorrupt {
        path: path.to_owned(),
        reason,
    };
    let probe: VersionProbe =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    match probe.schema_version {
        None => {
            return Err(corrupt(
                "it has no schemaVersion (written by the TypeScript orchestrator?); move it \
                 aside to start with an empty store"
                    .into(),
            ));
        }
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(v) => {
            return Err(Error::StoreVersion {
                path: path.to_owned(),
                found: v.to_string(),
                supported: SCHEMA_VERSION,
            });
        }
    }
    let data: FileData =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("schema: {e}")))?;
    let mut state = StoreState::default();
    for (repo, slug) in data.repo_slugs {
        state
            .slugs
            .restore(&repo, slug)
            .map_err(|e| corrupt(format!("repoSlugs: {e}")))?;
    }
    for (key, rec) in &data.deployments {
        if key != &rec.id {
            return Err(corrupt(format!(
                "deployments.{key} holds record {}",
                rec.id
            )));
        }
        match state.slugs.get(&rec.repo) {
            Some(slug) if slug == &rec.slug && rec.id.slug() == rec.slug => {}
            _ => {
                return Err(corrupt(format!(
                    "deployments.{key}: slug {} does not match repoSlugs for {}",
                    rec.slug, rec.repo
                )));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (key, alloc) in &data.port_allocations {
        if !data.deployments.contains_key(key) {
            return Err(corrupt(format!("portAllocations.{key} has no deployment")));
        }
        for p in alloc.ports() {
            if !seen.insert(p) {
                return Err(corrupt(format!("port {p} is allocated twice")));
            }
        }
    }
    for rec in data.deployments.into_values() {
        state.deployments.insert(rec);
    }
    state.port_allocations = data.port_allocations;
    Ok(state)
}

impl Inner {
    fn stop_writer(&self) {
        {
            let mut flags = self.shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            flags.stop = true;
        }
        self.shared.wake_cv.notify_one();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_writer();
    }
}
