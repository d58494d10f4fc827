//! The seam between the orchestrator's jobs and what runs previews.
//!
//! The deploy and teardown jobs (in the orchestrator) decide *what* happens to a preview: fetch,
//! plan, render, build, start, readiness, route, retire, tear down. An [`Engine`] carries out
//! each step on some container platform: [`ComposeEngine`](crate::ComposeEngine) on the local
//! Docker engine, or [`SwarmEngine`](crate::SwarmEngine) on a Docker Swarm (`docker stack deploy`
//! of a stack file derived from the same rendered file, placed by reservations, routed to the
//! node's address). A Kubernetes engine would implement the same trait; nothing above it names
//! Compose or Swarm.
//!
//! A preview is a [`ComposeProject`]: its name (the preview id, prefixing everything the engine
//! creates), its directory with the rendered files, and the file to run. `env` is the app's
//! environment (its trusted commit's secrets), handed to every operation that may create the
//! app's containers and never written to a file.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use preview_core::model::ReadyWhen;
use preview_exec::compose::AppEnv;

use crate::build_objects::RemovedLeftovers;
use crate::{ComposeProject, ContainerState, HealthPolicy, Result, SlotContainer};

/// A boxed future, so that [`Engine`] can be used as `dyn Engine`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a preview's containers use right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use by its running containers, in bytes.
    pub memory_bytes: u64,
    /// How many of its containers run.
    pub running: usize,
}

/// One machine that runs previews: the host itself for the compose engine, each node of the
/// swarm for the swarm engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The engine's id for it (`local` on one host, Swarm's node id).
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down`, ...
    pub state: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// The address nginx reaches its previews at.
    pub address: String,
    /// Its memory, in bytes.
    pub memory_bytes: u64,
    /// Memory a new preview can still have there, in bytes: what the kernel reports available
    /// on one host; on a swarm its memory less what the tasks on it reserve.
    pub free_memory_bytes: u64,
    /// The previews with a container (on a swarm: a running task) on it.
    pub previews: BTreeSet<String>,
    /// Its Docker endpoint for cleaning up (`ssh://root@10.10.0.3`); `None` for the local engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
}

/// Runs previews. Every operation is safe to retry; errors carry the failing command's output.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name, for logs and `/health`: `compose` or `swarm`.
    fn name(&self) -> &'static str;

    /// A first deploy: builds the images and starts every service, removing orphans. Output
    /// goes to `log`.
    fn up<'a>(
        &'a self,
        project: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>>;

    /// Builds the images and starts nothing (an update builds while the serving app goes on).
    fn build<'a>(&'a self, project: &'a ComposeProject, log: &'a Path)
    -> BoxFuture<'a, Result<()>>;

    /// Starts the new commit's app beside the serving one, from built images: every service of
    /// the (next) file is brought to it as Compose does (what is missing created, what changed
    /// recreated, tasks meant to end such as migrations run again, `depends_on` waited on), and
    /// nothing is removed, so the serving app slot goes on until [`Engine::converge`].
    fn start_beside<'a>(
        &'a self,
        project: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>>;

    /// Brings the project to its file from built images: starts what is stopped, recreates what
    /// changed and removes the containers of services the file no longer has (an update's old
    /// app slot). Also wakes a preview that sleeps. A task that ended as it should (a
    /// migration) is not run again.
    fn converge<'a>(
        &'a self,
        project: &'a ComposeProject,
        env: &'a AppEnv,
    ) -> BoxFuture<'a, Result<()>>;

    /// After an update's switch: removes what the file no longer has (the previous app slot,
    /// services the commit dropped), leaving `app_service` and every other service as they
    /// are; a task that ended (a migration) does not run again.
    fn retire<'a>(
        &'a self,
        project: &'a ComposeProject,
        env: &'a AppEnv,
        app_service: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// Stops the project's containers, keeping its volumes, images and ports (sleep).
    fn stop<'a>(&'a self, project: &'a ComposeProject) -> BoxFuture<'a, Result<()>>;

    /// Waits until the app answers at `port` and `path` as `ready_when` asks, failing fast when
    /// a container of `service` (or of any service, when `None`) stops. Returns the time taken.
    fn wait_ready<'a>(
        &'a self,
        project: &'a ComposeProject,
        service: Option<&'a str>,
        port: u16,
        path: &'a str,
        ready_when: ReadyWhen,
        policy: HealthPolicy,
    ) -> BoxFuture<'a, Result<Duration>>;

    /// The host address nginx reaches the app published at `port` of project `name` at:
    /// `127.0.0.1` on one host, the address of the node that runs it on a swarm; `None` while
    /// nothing runs it.
    fn app_host<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, Result<Option<String>>>;

    /// The last `lines` lines of every service's log, for failure reports; empty if unreadable.
    fn logs_tail<'a>(&'a self, project: &'a ComposeProject, lines: usize) -> BoxFuture<'a, String>;

    /// Removes the project: containers, networks, volumes and the images built for it.
    fn tear_down<'a>(&'a self, project: &'a ComposeProject) -> BoxFuture<'a, Result<()>>;

    /// [`Engine::tear_down`] by name alone, for a project whose files are gone.
    fn tear_down_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The projects carrying label `key`, with the directory each was run from.
    fn list_ours<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<BTreeMap<String, PathBuf>>>;

    /// The containers of project `name`, running or not.
    fn containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<ContainerState>>>;

    /// The containers of project `name` with their app slot and published ports.
    fn slot_containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SlotContainer>>>;

    /// Removes containers by id.
    fn remove_containers<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<()>>;

    /// Removes the image built for `service` of project `name`, unless a container uses it.
    fn remove_service_image<'a>(
        &'a self,
        name: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// The host ports any container publishes (the port pools skip them).
    fn published_ports(&self) -> BoxFuture<'_, Result<BTreeSet<u16>>>;

    /// The machines previews run on, with their memory and previews.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>>;

    /// What project `name` uses now.
    fn usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Usage>>;

    /// Removes what builds of `project` left that no image or container needs: stopped build
    /// containers and untagged stage images (see [`crate::build_objects`]), those the build log
    /// `only` names, or those of every build of the project when `None`; never the images in
    /// `keep` (the cache of other previews' builds).
    fn remove_build_leftovers<'a>(
        &'a self,
        project: &'a ComposeProject,
        only: Option<&'a Path>,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<RemovedLeftovers>>;

    /// What project `name` takes on disk: its built images and its volumes.
    fn disk_usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<DiskUsage>>;
}

/// What a preview takes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Its built images, in bytes (the layers only it uses; shared base layers are not counted).
    pub images_bytes: u64,
    /// Its volumes, in bytes.
    pub volumes_bytes: u64,
}
