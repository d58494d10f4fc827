//! [`Engine`] on Docker Swarm: previews spread over the swarm's nodes.
//!
//! The manager (where the orchestrator and nginx run) builds each preview's images with Compose,
//! as the compose engine does, pushes them to the swarm's private registry, derives the stack
//! file ([`crate::stack_file`]) and runs `docker stack deploy`. Swarm places each service on a
//! node with room for its reservations. The app publishes its port in `host` mode on its node;
//! [`Engine::app_host`] says which node's address nginx routes to.
//!
//! Everything a preview leaves on a worker (pulled images, volumes) is removed through that
//! worker's Docker endpoint, read from its node label `dev.preview-deployer.docker-host`
//! (`ssh://root@10.10.0.3` in production, set by Ansible's swarm role). A worker without the
//! label keeps those until it is pruned by hand; the teardown logs that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use preview_core::model::ReadyWhen;
use preview_core::render::AppSlot;
use preview_exec::Cmd;
use preview_exec::compose::{AppEnv, Compose, validate_project_name};
use serde_json::Value;

use crate::build_objects::{self, RemovedLeftovers};
use crate::compose_engine::{local_disk_usage, remove_local_build_leftovers};
use crate::engine::{BoxFuture, DiskUsage, Engine, Node, Usage};
use crate::stack_file::{
    StackInputs, WORK_DIR_LABEL, service_images, services_with_volumes, stack_file,
};
use crate::{
    ComposeProject, ContainerState, Error, HealthPolicy, Result, SlotContainer, docker,
    memory_in_use, published_ports, remove_built_images, wait_healthy_service,
};

/// The node label naming a worker's Docker endpoint, for cleaning up on it.
pub const DOCKER_HOST_LABEL: &str = "dev.preview-deployer.docker-host";

/// The service label of the app slot (as on compose containers).
const SLOT_LABEL: &str = "dev.preview-deployer.slot";

/// Previews as Swarm stacks, placed by Swarm, routed to the node that runs each app.
#[derive(Debug, Clone)]
pub struct SwarmEngine {
    compose: Compose,
    /// Where nodes pull images from, e.g. `10.10.0.2:5000`.
    registry: String,
    /// Where the manager pushes them: the same registry, possibly by another address
    /// (`127.0.0.1:5000`, which Docker trusts without TLS).
    push_registry: String,
}

impl SwarmEngine {
    /// An engine building with `compose`, pulling from `registry` and pushing to
    /// `push_registry` (the same registry seen from the manager).
    pub fn new(compose: Compose, registry: String, push_registry: String) -> Self {
        Self {
            compose,
            registry,
            push_registry,
        }
    }

    /// The stack file written beside compose file `file`.
    fn stack_path(p: &ComposeProject) -> PathBuf {
        p.dir.join(format!("stack.{}", p.file))
    }

    /// Tags and pushes the image of every service of `p`'s compose file to the registry, and
    /// writes its stack file. The tag is the local image's id, so a new build is a new tag (a
    /// stack deploy with an unchanged reference would not restart the service).
    async fn publish(&self, p: &ComposeProject, log: Option<&Path>) -> Result<()> {
        let compose_yaml = std::fs::read_to_string(p.dir.join(&p.file))
            .map_err(|e| Error::Parse(format!("reading {}: {e}", p.file)))?;
        let mut inputs = StackInputs {
            work_dir: p.dir.display().to_string(),
            ..StackInputs::default()
        };
        for (service, image) in service_images(&compose_yaml)? {
            let local = match image {
                Some(image) => {
                    // Compose builds the app; a database's image may not be here yet.
                    if image_id(&image).await.is_err() {
                        let mut pull = docker("pull a service's image")
                            .args(["pull", "--quiet", "--", &image])
                            .timeout(Duration::from_secs(600));
                        if let Some(log) = log {
                            pull = pull.log_to(log);
                        }
                        pull.run().await?;
                    }
                    image
                }
                None => format!("{}-{service}", p.name),
            };
            let id = image_id(&local).await?;
            // `{stack}/{service}`: no other preview's repository starts with `{stack}/`.
            let tag = format!("{}/{service}:{}", p.name, &id[..12]);
            let pushed = format!("{}/{tag}", self.push_registry);
            let pulled = format!("{}/{tag}", self.registry);
            for name in [&pushed, &pulled] {
                docker("tag an image for the swarm's registry")
                    .args(["tag", "--", &local, name])
                    .run()
                    .await?;
            }
            let mut push = docker("push an image to the swarm's registry")
                .args(["push", "--quiet", "--", &pushed])
                .timeout(Duration::from_secs(600));
            if let Some(log) = log {
                push = push.log_to(log);
            }
            push.run().await?;
            inputs.images.insert(service, pulled);
        }
        // A volume's data is on the node its service was pinned to, or runs on now: it stays
        // there (a sleeping preview runs nothing, and keeps its pin).
        let tasks = running_tasks(&p.name).await?;
        let services = stack_services(&p.name).await?;
        for service in services_with_volumes(&compose_yaml)? {
            let full = format!("{}_{service}", p.name);
            let pinned = services
                .iter()
                .find(|s| s.service == service)
                .and_then(|s| s.pinned_node.clone());
            let running = tasks
                .iter()
                .find(|t| t.service == full && !t.node.is_empty())
                .map(|t| t.node.clone());
            if let Some(node) = pinned.or(running) {
                inputs.pinned.insert(service, node);
            }
        }
        let stack = stack_file(&compose_yaml, &inputs)?;
        std::fs::write(Self::stack_path(p), stack)
            .map_err(|e| Error::Parse(format!("writing the stack file: {e}")))?;
        Ok(())
    }

    /// Pins the services of a new stack that hold a volume to the node Swarm placed them on,
    /// so that their data stays theirs (a volume is local to its node). Done once, during the
    /// first deploy (the database restarts once, empty), so that no update changes their spec.
    async fn pin_volumes(&self, p: &ComposeProject, env: &AppEnv, log: &Path) -> Result<()> {
        let compose_yaml = std::fs::read_to_string(p.dir.join(&p.file))
            .map_err(|e| Error::Parse(format!("reading {}: {e}", p.file)))?;
        let with_volumes: Vec<String> = services_with_volumes(&compose_yaml)?
            .into_iter()
            .map(|s| format!("{}_{s}", p.name))
            .collect();
        if with_volumes.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tasks = running_tasks(&p.name).await?;
            let placed = with_volumes
                .iter()
                .all(|s| tasks.iter().any(|t| t.service == *s && !t.node.is_empty()));
            if placed {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Parse(format!(
                    "Swarm placed no task of {} within 60 s",
                    with_volumes.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.publish(p, Some(log)).await?;
        self.deploy(p, env, true, Some(log)).await
    }

    /// `docker stack deploy` of `p`'s stack file, with the app's environment; `prune` removes
    /// the services the file no longer has.
    async fn deploy(
        &self,
        p: &ComposeProject,
        env: &AppEnv,
        prune: bool,
        log: Option<&Path>,
    ) -> Result<()> {
        validate_project_name(&p.name)?;
        let stack = Self::stack_path(p);
        let mut cmd = env
            .apply_to(docker("deploy the preview's stack"))
            .args([
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "--compose-file",
            ])
            .arg(&stack)
            .timeout(Duration::from_secs(300));
        if prune {
            cmd = cmd.arg("--prune");
        }
        cmd = cmd.arg(&p.name).current_dir(&p.dir);
        if let Some(log) = log {
            cmd = cmd.log_to(log);
        }
        cmd.run().await?;
        Ok(())
    }

    /// Removes stack `name` and waits until its tasks are gone, then removes its images and
    /// volumes on every node.
    async fn remove_stack(&self, name: &str) -> Result<()> {
        validate_project_name(name)?;
        let stack_rm = docker("remove the preview's stack").args(["stack", "rm", name]);
        // It removes the services, then the networks, which fail while a container still uses
        // them: then it runs again once the containers are gone.
        let first = stack_rm.run().await;
        // `stack rm` returns before the containers are gone; volumes in use cannot be removed.
        let deadline = Instant::now() + Duration::from_secs(60);
        let nodes = node_list().await?;
        loop {
            let mut left = 0;
            for node in nodes.iter().filter(|n| n.state == "ready") {
                if let Some(endpoint) = endpoint_of(node) {
                    left += stack_containers(endpoint, name).await.unwrap_or(0);
                }
            }
            if left == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Err(e) = first {
            tracing::info!(preview = name, error = %e, "removing the stack again, its containers gone");
            stack_rm.run().await?;
        }
        let mut failed = None;
        for node in &nodes {
            match endpoint_of(node) {
                // A node that is down keeps what it had until it comes back and is pruned.
                Some(_) if node.state != "ready" => tracing::warn!(
                    node = %node.id,
                    state = %node.state,
                    preview = name,
                    "this node is not ready: its images and volumes of the preview stay until pruned"
                ),
                Some(endpoint) => {
                    // One node that cannot be reached must not keep the others dirty.
                    if let Err(e) = self.clean_node(endpoint, name).await {
                        tracing::warn!(node = %node.id, preview = name, error = %e, "cleaning up on this node failed");
                        failed.get_or_insert(e);
                    }
                }
                None => tracing::warn!(
                    node = %node.id,
                    preview = name,
                    "this worker has no {DOCKER_HOST_LABEL} label: its images and volumes of the preview stay until pruned"
                ),
            }
        }
        self.forget_in_registry(name).await;
        remove_built_images(name).await?;
        failed.map_or(Ok(()), Err)
    }

    /// Deletes the manifests of stack `name`'s images from the registry (they are tagged
    /// `{name}/{service}:{image id}`), so that the registry's garbage collection frees their
    /// layers. Best effort: a failure is logged, and the teardown goes on.
    async fn forget_in_registry(&self, name: &str) {
        match self.delete_manifests(name).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                preview = name,
                manifests = n,
                "deleted the preview's images from the registry"
            ),
            Err(e) => {
                tracing::warn!(preview = name, error = %e, "could not delete the preview's images from the registry")
            }
        }
    }

    async fn delete_manifests(&self, name: &str) -> std::result::Result<usize, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let base = format!("http://{}/v2", self.push_registry);
        let get = |url: String| {
            let client = client.clone();
            async move {
                let answer = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if answer.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Value::Null);
                }
                answer
                    .error_for_status()
                    .map_err(|e| format!("{url}: {e}"))?
                    .json::<Value>()
                    .await
                    .map_err(|e| format!("{url}: {e}"))
            }
        };
        let catalog = get(format!("{base}/_catalog?n=1000")).await?;
        let prefix = format!("{name}/");
        let mut deleted = 0;
        for repo in catalog["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|r| r.starts_with(&prefix))
        {
            let tags = get(format!("{base}/{repo}/tags/list")).await?;
            for tag in tags["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let url = format!("{base}/{repo}/manifests/{tag}");
                let head = client
                    .head(&url)
                    .header(
                        reqwest::header::ACCEPT,
                        "application/vnd.docker.distribution.manifest.v2+json",
                    )
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let Some(digest) = head
                    .headers()
                    .get("Docker-Content-Digest")
                    .and_then(|d| d.to_str().ok())
                    .filter(|d| d.starts_with("sha256:"))
                else {
                    continue;
                };
                let url = format!("{base}/{repo}/manifests/{digest}");
                let answer = client
                    .delete(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                if answer.status().is_success() {
                    deleted += 1;
                } else if answer.status() != reqwest::StatusCode::NOT_FOUND {
                    return Err(format!("{url}: HTTP {}", answer.status()));
                }
            }
        }
        Ok(deleted)
    }

    /// Removes the images and volumes of stack `name` from one node.
    async fn clean_node(&self, endpoint: Endpoint<'_>, name: &str) -> Result<()> {
        let prefixes = [
            format!("{}/{name}/", self.registry),
            format!("{}/{name}/", self.push_registry),
        ];
        let removing = crate::image_lock::for_removal().await;
        with_listed(
            on_node(endpoint, "list the images on a node").args([
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]),
            |image| prefixes.iter().any(|p| image.starts_with(p.as_str())),
            on_node(endpoint, "remove the preview's images from a node")
                .args(["image", "rm", "--force"]),
        )
        .await?;
        drop(removing);
        with_listed(
            on_node(endpoint, "list the preview's volumes on a node")
                .args(["volume", "ls", "-q", "--filter"])
                .arg(format!("label=com.docker.stack.namespace={name}")),
            |_| true,
            on_node(endpoint, "remove the preview's volumes from a node")
                .args(["volume", "rm", "--force"]),
        )
        .await?;
        Ok(())
    }

    /// The swarm's nodes, with what runs on them.
    async fn swarm_nodes(&self) -> Result<Vec<Node>> {
        let mut nodes = node_list().await?;
        for task in all_running_tasks().await? {
            if let Some(node) = nodes.iter_mut().find(|n| n.id == task.node) {
                node.free_memory_bytes = node.free_memory_bytes.saturating_sub(task.reserved_bytes);
                if let Some(stack) = task.stack {
                    node.previews.insert(stack);
                }
            }
        }
        Ok(nodes)
    }

    /// The address of the node running the task of service `service` of stack `name`, once
    /// one runs.
    async fn task_address(&self, name: &str, service: &str) -> Result<Option<String>> {
        let full = format!("{name}_{service}");
        let Some(task) = running_tasks(name)
            .await?
            .into_iter()
            .find(|t| t.service == full && t.state == "running")
        else {
            return Ok(None);
        };
        Ok(node_list()
            .await?
            .into_iter()
            .find(|n| n.id == task.node)
            .map(|n| n.address))
    }

    /// Why the app of stack `name` published at `port` has no running task, as Swarm says.
    async fn why_not_running(&self, name: &str, port: u16) -> Option<String> {
        let service = self.service_publishing(name, port).await.ok()??;
        let full = format!("{name}_{service}");
        running_tasks(name)
            .await
            .ok()?
            .into_iter()
            .find(|t| t.service == full)
            .map(|t| t.error.unwrap_or(t.state))
    }

    /// The service of stack `name` that publishes `port`.
    async fn service_publishing(&self, name: &str, port: u16) -> Result<Option<String>> {
        Ok(stack_services(name)
            .await?
            .into_iter()
            .find(|s| s.published.contains(&port))
            .map(|s| s.service))
    }
}

/// The swarm's nodes, without what runs on them.
async fn node_list() -> Result<Vec<Node>> {
    let json = with_listed(
        docker("list the swarm's nodes").args(["node", "ls", "-q"]),
        |_| true,
        docker("inspect the swarm's nodes").args(["node", "inspect"]),
    )
    .await?;
    json.map_or(Ok(Vec::new()), |json| parse_nodes(&json))
}

/// Runs `list`, which prints one id or name per line, then `then` with those that `keep`
/// accepts; `then`'s output, or `None` when none are left.
async fn with_listed(list: Cmd, keep: impl Fn(&str) -> bool, then: Cmd) -> Result<Option<String>> {
    let listed = list.run().await?.stdout_text();
    let items: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && keep(l))
        .collect();
    if items.is_empty() {
        return Ok(None);
    }
    Ok(Some(then.args(&items).run().await?.stdout_text()))
}

/// A Docker endpoint: the local engine, or a worker's `-H` address.
#[derive(Debug, Clone, Copy)]
enum Endpoint<'a> {
    Local,
    Remote(&'a str),
}

/// The endpoint to clean `node` through: the local engine for the manager the orchestrator
/// runs on, the labelled endpoint for a worker, `None` for a worker without one.
fn endpoint_of(node: &Node) -> Option<Endpoint<'_>> {
    match (&node.docker_host, node.role.as_str()) {
        (Some(host), _) => Some(Endpoint::Remote(host)),
        (None, "manager") => Some(Endpoint::Local),
        (None, _) => None,
    }
}

/// A `docker` command against `endpoint`.
fn on_node(endpoint: Endpoint<'_>, description: &str) -> Cmd {
    match endpoint {
        Endpoint::Local => docker(description),
        Endpoint::Remote(host) => docker(description).args(["-H", host]),
    }
}

/// How many containers of stack `name` exist on `endpoint`.
async fn stack_containers(endpoint: Endpoint<'_>, name: &str) -> Result<usize> {
    let out = on_node(endpoint, "list the preview's containers on a node")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=com.docker.stack.namespace={name}"))
        .run()
        .await?;
    Ok(out
        .stdout_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// The id of local image `image`, without its `sha256:` prefix.
async fn image_id(image: &str) -> Result<String> {
    let out = docker("read an image's id")
        .args(["image", "inspect", "--format", "{{.Id}}", "--", image])
        .run()
        .await?;
    let id = out
        .stdout_text()
        .trim()
        .trim_start_matches("sha256:")
        .to_owned();
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Parse(format!("image id of {image}: {id:?}")));
    }
    Ok(id)
}

fn parse_nodes(json: &str) -> Result<Vec<Node>> {
    let nodes: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| Error::Parse(format!("docker node inspect: {e}")))?;
    Ok(nodes
        .iter()
        .map(|n| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let mut address = text(&n["Status"]["Addr"]);
            // A manager may report 0.0.0.0 here; its manager address is the real one.
            if address.is_empty() || address == "0.0.0.0" {
                let manager = text(&n["ManagerStatus"]["Addr"]);
                address = manager
                    .rsplit_once(':')
                    .map_or(manager.clone(), |(host, _)| host.to_owned());
            }
            let memory_bytes = n["Description"]["Resources"]["MemoryBytes"]
                .as_u64()
                .unwrap_or(0);
            Node {
                id: text(&n["ID"]),
                role: text(&n["Spec"]["Role"]),
                state: text(&n["Status"]["State"]),
                availability: text(&n["Spec"]["Availability"]),
                address,
                memory_bytes,
                free_memory_bytes: memory_bytes,
                previews: BTreeSet::new(),
                docker_host: n["Spec"]["Labels"][DOCKER_HOST_LABEL]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned),
            }
        })
        .collect())
}

/// A task Swarm wants running.
#[derive(Debug, Clone)]
struct Task {
    /// The full service name, `{stack}_{service}`.
    service: String,
    stack: Option<String>,
    node: String,
    /// `running`, `pending`, `failed`, ...
    state: String,
    /// Why it is not running, as Swarm says (`no suitable node (insufficient resources on 2
    /// nodes)`).
    error: Option<String>,
    exit_code: Option<i32>,
    reserved_bytes: u64,
}

/// The tasks of stack `name` that Swarm wants running.
async fn running_tasks(name: &str) -> Result<Vec<Task>> {
    validate_project_name(name)?;
    tasks_filtered(&format!("label=com.docker.stack.namespace={name}")).await
}

/// The tasks of every stack that Swarm wants running.
async fn all_running_tasks() -> Result<Vec<Task>> {
    tasks_filtered("label=com.docker.stack.namespace").await
}

async fn tasks_filtered(service_filter: &str) -> Result<Vec<Task>> {
    let services = docker("list the stacks' services")
        .args([
            "service",
            "ls",
            "--format",
            "{{.ID}}\t{{.Name}}",
            "--filter",
            service_filter,
        ])
        .run()
        .await?
        .stdout_text();
    // `service ls` shortens ids; a task names its service by the full id.
    let services: Vec<(&str, &str)> = services
        .lines()
        .filter_map(|l| l.trim().split_once('\t'))
        .collect();
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let json = with_listed(
        docker("list the stacks' tasks")
            .args([
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "desired-state=running",
            ])
            .args(services.iter().map(|(id, _)| id)),
        |_| true,
        docker("inspect the stacks' tasks").args(["inspect", "--type", "task"]),
    )
    .await?;
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let mut tasks = parse_tasks(&json)?;
    for task in &mut tasks {
        if let Some((_, name)) = services.iter().find(|(id, _)| task.service.starts_with(id)) {
            task.service = (*name).to_owned();
        }
    }
    Ok(tasks)
}

fn parse_tasks(json: &str) -> Result<Vec<Task>> {
    let tasks: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| Error::Parse(format!("docker inspect task: {e}")))?;
    Ok(tasks
        .iter()
        .map(|t| Task {
            // The service's id here; its name once the caller maps it.
            service: t["ServiceID"].as_str().unwrap_or_default().to_owned(),
            stack: t["Spec"]["ContainerSpec"]["Labels"]["com.docker.stack.namespace"]
                .as_str()
                .map(str::to_owned),
            node: t["NodeID"].as_str().unwrap_or_default().to_owned(),
            state: t["Status"]["State"].as_str().unwrap_or_default().to_owned(),
            error: t["Status"]["Err"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            exit_code: t["Status"]["ContainerStatus"]["ExitCode"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok()),
            reserved_bytes: t["Spec"]["Resources"]["Reservations"]["MemoryBytes"]
                .as_u64()
                .unwrap_or(0),
        })
        .collect())
}

/// One service of a stack, as the slot view needs it.
#[derive(Debug, Clone)]
struct StackService {
    id: String,
    /// The name inside the stack (`app`, `app-green`, `db`).
    service: String,
    slot: Option<AppSlot>,
    published: BTreeSet<u16>,
    work_dir: Option<String>,
    stack: String,
    /// The node its placement constraint pins it to (`node.id == X`), if any.
    pinned_node: Option<String>,
}

/// The services of stack `name`.
async fn stack_services(name: &str) -> Result<Vec<StackService>> {
    validate_project_name(name)?;
    services_filtered(&format!("label=com.docker.stack.namespace={name}")).await
}

async fn services_filtered(filter: &str) -> Result<Vec<StackService>> {
    let json = with_listed(
        docker("list the stacks' services").args(["service", "ls", "-q", "--filter", filter]),
        |_| true,
        docker("inspect the stacks' services").args(["service", "inspect"]),
    )
    .await?;
    json.map_or(Ok(Vec::new()), |json| parse_services(&json))
}

fn parse_services(json: &str) -> Result<Vec<StackService>> {
    let services: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| Error::Parse(format!("docker service inspect: {e}")))?;
    Ok(services
        .iter()
        .map(|s| {
            let labels = &s["Spec"]["Labels"];
            let stack = labels["com.docker.stack.namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let full = s["Spec"]["Name"].as_str().unwrap_or_default();
            let service = full
                .strip_prefix(&format!("{stack}_"))
                .unwrap_or(full)
                .to_owned();
            let published = s["Endpoint"]["Spec"]["Ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| p["PublishedPort"].as_u64())
                        .filter_map(|p| u16::try_from(p).ok())
                        .collect()
                })
                .unwrap_or_default();
            StackService {
                id: s["ID"].as_str().unwrap_or_default().to_owned(),
                service,
                slot: labels[SLOT_LABEL].as_str().and_then(AppSlot::parse),
                published,
                work_dir: labels[WORK_DIR_LABEL].as_str().map(str::to_owned),
                stack,
                pinned_node: s["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .find_map(|c| c.strip_prefix("node.id == "))
                    .map(|node| node.trim().to_owned()),
            }
        })
        .collect())
}

impl Engine for SwarmEngine {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn up<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.build(p, log).await?;
            self.deploy(p, env, true, Some(log)).await?;
            self.pin_volumes(p, env, log).await
        })
    }

    fn build<'a>(&'a self, p: &'a ComposeProject, log: &'a Path) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let building = crate::image_lock::for_build(log).await;
            let built = self
                .compose
                .build(&p.name, &p.dir, &p.file)?
                .log_to(log)
                .run()
                .await;
            drop(building);
            // Whatever the outcome, what the build left is known by its log (as on compose).
            if let Err(e) = build_objects::record_build(&p.dir, log)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(project = %p.name, error = %e, "recording what the build made failed");
            }
            built?;
            self.publish(p, Some(log)).await
        })
    }

    fn start_beside<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<()>> {
        // Without --prune: the serving slot's service goes on until `converge` retires it.
        Box::pin(self.deploy(p, env, false, Some(log)))
    }

    fn converge<'a>(&'a self, p: &'a ComposeProject, env: &'a AppEnv) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // The file may have been renamed since it was built (an update's next file becomes
            // the current one): its stack file is derived again from the images already pushed.
            self.publish(p, None).await?;
            self.deploy(p, env, true, None).await
        })
    }

    fn retire<'a>(
        &'a self,
        p: &'a ComposeProject,
        env: &'a AppEnv,
        _app_service: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        // A deploy with --prune: Swarm removes the services the stack no longer has, and a
        // task that completed stays completed while its spec is unchanged.
        self.converge(p, env)
    }

    fn stop<'a>(&'a self, p: &'a ComposeProject) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // A task that completed (a migration) holds no memory, and stays completed through
            // the wake's deploy while its scale and spec are unchanged: it is not run again.
            let done: BTreeSet<String> = self
                .containers(&p.name)
                .await?
                .into_iter()
                .filter(ContainerState::is_done)
                .map(|c| c.service)
                .collect();
            let scales: Vec<String> = stack_services(&p.name)
                .await?
                .into_iter()
                .filter(|s| !done.contains(&s.service))
                .map(|s| format!("{}_{}=0", s.stack, s.service))
                .collect();
            if !scales.is_empty() {
                // Not detached: it returns once the tasks have stopped and freed their memory.
                docker("scale the preview's services to zero")
                    .args(["service", "scale"])
                    .args(&scales)
                    .run()
                    .await?;
            }
            Ok(())
        })
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
            // Swarm may move the app while we wait (its node failed, or it was placed before
            // the node was known down): the address is asked again every few seconds.
            const ASK_AGAIN: Duration = Duration::from_secs(5);
            let started = Instant::now();
            let mut last = "no node runs the app yet".to_owned();
            let mut url = format!("port {port} of stack {}", p.name);
            let mut n = 0;
            while started.elapsed() < policy.timeout {
                let Some(host) = self.app_host(&p.name, port).await? else {
                    if let Some(why) = self.why_not_running(&p.name, port).await {
                        last = format!("Swarm runs no task of the app: {why}");
                    }
                    // Swarm starts a task within a second or two: look often.
                    tokio::time::sleep(policy.interval(n).min(Duration::from_millis(250))).await;
                    n += 1;
                    continue;
                };
                url = format!("http://{host}:{port}{path}");
                let chunk = HealthPolicy {
                    timeout: ASK_AGAIN.min(policy.timeout.saturating_sub(started.elapsed())),
                    ..policy
                };
                match wait_healthy_service(&url, &p.name, service, ready_when, chunk).await {
                    Ok(_) => return Ok(started.elapsed()),
                    Err(Error::Unhealthy { last: l, .. }) => last = l,
                    Err(e) => return Err(e),
                }
            }
            Err(Error::Unhealthy {
                url,
                accepted: ready_when.describe(),
                timeout: policy.timeout,
                last,
            })
        })
    }

    fn app_host<'a>(&'a self, name: &'a str, port: u16) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            match self.service_publishing(name, port).await? {
                Some(service) => self.task_address(name, &service).await,
                None => Ok(None),
            }
        })
    }

    fn logs_tail<'a>(&'a self, p: &'a ComposeProject, lines: usize) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Ok(services) = stack_services(&p.name).await else {
                return String::new();
            };
            let mut text = String::new();
            for s in services {
                let out = docker("read the preview's logs")
                    .args(["service", "logs", "--no-task-ids", "--tail"])
                    .arg(lines.to_string())
                    .arg(format!("{}_{}", s.stack, s.service))
                    .timeout(Duration::from_secs(20))
                    .run()
                    .await;
                if let Ok(out) = out {
                    text.push_str(&out.stdout_text());
                    text.push_str(&out.stderr_text());
                }
            }
            text
        })
    }

    fn tear_down<'a>(&'a self, p: &'a ComposeProject) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_stack(&p.name))
    }

    fn tear_down_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_stack(name))
    }

    fn list_ours<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<BTreeMap<String, PathBuf>>> {
        Box::pin(async move {
            Ok(services_filtered(&format!("label={key}"))
                .await?
                .into_iter()
                .filter(|s| !s.stack.is_empty())
                .map(|s| (s.stack, PathBuf::from(s.work_dir.unwrap_or_default())))
                .collect())
        })
    }

    fn containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<ContainerState>>> {
        Box::pin(async move {
            let tasks = running_tasks(name).await?;
            Ok(tasks
                .into_iter()
                .map(|t| {
                    let service = t
                        .service
                        .strip_prefix(&format!("{name}_"))
                        .unwrap_or(&t.service)
                        .to_owned();
                    let state = match t.state.as_str() {
                        "running" => "running",
                        "failed" | "rejected" | "shutdown" | "complete" | "orphaned" => "exited",
                        _ => "created",
                    };
                    // Swarm says `complete` only of a task that ended with 0 under a
                    // restart policy that lets it end: a migration that is done.
                    let one_shot = t.state == "complete";
                    let node = t.node.get(..12).unwrap_or(&t.node);
                    let status = match &t.error {
                        Some(error) => format!("{} on node {node}: {error}", t.state),
                        None => format!("{} on node {node}", t.state),
                    };
                    ContainerState {
                        name: t.service.clone(),
                        service,
                        state: state.to_owned(),
                        status,
                        exit_code: if one_shot { Some(0) } else { t.exit_code },
                        one_shot,
                    }
                })
                .collect())
        })
    }

    fn slot_containers<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SlotContainer>>> {
        Box::pin(async move {
            Ok(stack_services(name)
                .await?
                .into_iter()
                .map(|s| SlotContainer {
                    id: s.id,
                    service: s.service,
                    slot: s.slot,
                    published: s.published,
                })
                .collect())
        })
    }

    fn remove_containers<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<()>> {
        // The ids of `slot_containers` here are service ids.
        Box::pin(async move {
            if !ids.is_empty() {
                docker("remove the preview's services")
                    .args(["service", "rm"])
                    .args(ids)
                    .run()
                    .await?;
            }
            Ok(())
        })
    }

    fn remove_service_image<'a>(
        &'a self,
        name: &'a str,
        service: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let image = format!("{name}-{service}");
            let images = docker("list a service's images")
                .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
                .run()
                .await?
                .stdout_text();
            let ours: Vec<&str> = images
                .lines()
                .map(str::trim)
                .filter(|i| {
                    i.strip_suffix(":latest") == Some(image.as_str())
                        || [&self.registry, &self.push_registry]
                            .iter()
                            .any(|r| i.starts_with(&format!("{r}/{name}/{service}:")))
                })
                .collect();
            if !ours.is_empty() {
                let _removing = crate::image_lock::for_removal().await;
                // Without --force: an image a container still runs stays.
                let _ = docker("remove an image the preview no longer runs")
                    .args(["image", "rm"])
                    .args(&ours)
                    .run()
                    .await;
            }
            Ok(())
        })
    }

    fn published_ports(&self) -> BoxFuture<'_, Result<BTreeSet<u16>>> {
        Box::pin(async move {
            let mut ports = published_ports().await?;
            for s in services_filtered("label=com.docker.stack.namespace").await? {
                ports.extend(s.published);
            }
            Ok(ports)
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>>> {
        Box::pin(self.swarm_nodes())
    }

    fn usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Usage>> {
        Box::pin(async move {
            let mut usage = Usage::default();
            for node in node_list().await?.iter().filter(|n| n.state == "ready") {
                let Some(endpoint) = endpoint_of(node) else {
                    continue;
                };
                let stats = with_listed(
                    on_node(endpoint, "list the preview's containers on a node")
                        .args(["ps", "-q", "--filter"])
                        .arg(format!("label=com.docker.stack.namespace={name}")),
                    |_| true,
                    on_node(endpoint, "read the preview's memory use on a node").args([
                        "stats",
                        "--no-stream",
                        "--format",
                        "{{.MemUsage}}",
                    ]),
                )
                .await?;
                if let Some(stats) = stats {
                    let (memory_bytes, running) = memory_in_use(&stats)?;
                    usage.memory_bytes += memory_bytes;
                    usage.running += running;
                }
            }
            Ok(usage)
        })
    }

    fn remove_build_leftovers<'a>(
        &'a self,
        p: &'a ComposeProject,
        only: Option<&'a Path>,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<RemovedLeftovers>> {
        // Images are built on this host, then pushed: their leftovers are here.
        Box::pin(remove_local_build_leftovers(p, only, keep))
    }

    fn disk_usage<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<DiskUsage>> {
        // The images built here; volumes on other nodes are not counted.
        Box::pin(local_disk_usage(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_from_docker_node_inspect() {
        let json = r#"[
          {"ID":"m1","Spec":{"Role":"manager","Availability":"active","Labels":{}},
           "Description":{"Resources":{"MemoryBytes":4096}},
           "Status":{"State":"ready","Addr":"0.0.0.0"},"ManagerStatus":{"Addr":"10.0.0.1:2377"}},
          {"ID":"w1","Spec":{"Role":"worker","Availability":"active",
             "Labels":{"dev.preview-deployer.docker-host":"ssh://root@10.0.0.3"}},
           "Description":{"Resources":{"MemoryBytes":2048}},"Status":{"State":"down","Addr":"10.0.0.3"}}
        ]"#;
        let nodes = parse_nodes(json).unwrap();
        assert_eq!(nodes[0].address, "10.0.0.1");
        assert_eq!(nodes[0].docker_host, None);
        assert!(matches!(endpoint_of(&nodes[0]), Some(Endpoint::Local)));
        assert_eq!(nodes[1].address, "10.0.0.3");
        assert_eq!(nodes[1].state, "down");
        assert_eq!(nodes[1].memory_bytes, 2048);
        assert!(matches!(
            endpoint_of(&nodes[1]),
            Some(Endpoint::Remote("ssh://root@10.0.0.3"))
        ));
        assert!(parse_nodes("not json").is_err());
    }

    #[test]
    fn services_with_their_slots_and_ports() {
        let json = r#"[{"ID":"s1","Spec":{"Name":"acme-api-pr-7_app-green","Labels":{
            "com.docker.stack.namespace":"acme-api-pr-7","dev.preview-deployer.slot":"green",
            "dev.preview-deployer.work-dir":"/srv/previews/acme-api-pr-7"}},
            "Endpoint":{"Spec":{"Ports":[{"PublishedPort":8007,"TargetPort":3000}]}}}]"#;
        let services = parse_services(json).unwrap();
        assert_eq!(services[0].service, "app-green");
        assert_eq!(services[0].slot, Some(AppSlot::Green));
        assert_eq!(services[0].published, BTreeSet::from([8007]));
        assert_eq!(
            services[0].work_dir.as_deref(),
            Some("/srv/previews/acme-api-pr-7")
        );
        assert_eq!(services[0].pinned_node, None);
        // A database pinned to its volume's node.
        let json = r#"[{"ID":"s2","Spec":{"Name":"acme-api-pr-7_db","Labels":{
            "com.docker.stack.namespace":"acme-api-pr-7"},
            "TaskTemplate":{"Placement":{"Constraints":["node.role != manager","node.id == w1abc"]}}}}]"#;
        let services = parse_services(json).unwrap();
        assert_eq!(services[0].pinned_node.as_deref(), Some("w1abc"));
    }
}
