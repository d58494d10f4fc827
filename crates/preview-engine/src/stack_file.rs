//! The Swarm stack file of a preview, derived from its rendered compose file.
//!
//! The orchestrator renders one compose file per preview, whatever the engine. `docker stack
//! deploy` reads the same format with other rules, so [`stack_file`] rewrites what Swarm does
//! differently and keeps the rest as rendered:
//! - every image comes from the swarm's registry (`build:` is gone: the manager built and pushed);
//! - limits move to `deploy.resources`, and the same figures are reserved, so that Swarm places a
//!   preview only on a node with room for it;
//! - the app's port is published in `host` mode on the node that runs it (the routing mesh needs
//!   IPVS), where nginx on the manager reaches it;
//! - networks are overlays, so a preview's services talk across nodes;
//! - a service with a named volume stays on the node that holds the volume;
//! - a service still in a profile is left out (Compose would not start it);
//! - `restart` becomes a restart policy; `depends_on` goes (Swarm has no start order: the app
//!   restarts until its database answers); `security_opt` and `pids_limit` go, as services
//!   cannot set them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// The label that records the directory a stack was deployed from (the preview's work dir).
pub const WORK_DIR_LABEL: &str = "dev.preview-deployer.work-dir";

/// What the stack file needs beyond the compose file.
#[derive(Debug, Clone, Default)]
pub struct StackInputs {
    /// The image each service runs, by service name (registry references).
    pub images: BTreeMap<String, String>,
    /// The node each volume-holding service must stay on, by service name (Swarm node ids).
    pub pinned: BTreeMap<String, String>,
    /// The preview's work directory, recorded as a service label.
    pub work_dir: String,
}

/// Keys of a compose service that a stack cannot use, removed from it.
const NOT_FOR_SWARM: &[&str] = &[
    "build",
    "restart",
    "mem_limit",
    "cpus",
    "pids_limit",
    "security_opt",
    "depends_on",
    "container_name",
];

/// The stack file for the rendered compose file `compose_yaml`.
pub fn stack_file(compose_yaml: &str, inputs: &StackInputs) -> Result<String> {
    let parse = |what: &str| Error::Parse(format!("the rendered compose file: {what}"));
    let root: Value =
        serde_saphyr::from_str(compose_yaml).map_err(|e| parse(&format!("not YAML: {e}")))?;
    let Value::Object(mut root) = root else {
        return Err(parse("not a mapping"));
    };
    root.remove("name");
    let services = root
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| parse("no services"))?;
    // `docker stack deploy` knows no profiles: a service left in one is not deployed, as
    // Compose would not start it.
    services.retain(|_, service| service.get("profiles").is_none());
    for (name, service) in services.iter_mut() {
        let service = service
            .as_object_mut()
            .ok_or_else(|| parse(&format!("service {name} is not a mapping")))?;
        let image = inputs
            .images
            .get(name)
            .ok_or_else(|| parse(&format!("no image for service {name}")))?;
        let deploy = deploy_section(service, inputs, name)?;
        for key in NOT_FOR_SWARM {
            service.remove(*key);
        }
        service.insert("image".into(), Value::String(image.clone()));
        if let Some(Value::Array(ports)) = service.get_mut("ports") {
            for port in ports.iter_mut() {
                host_mode(port).ok_or_else(|| parse(&format!("a port of {name}")))?;
            }
        }
        service.insert("deploy".into(), deploy);
    }
    if let Some(Value::Object(networks)) = root.get_mut("networks") {
        for (_, network) in networks.iter_mut() {
            if let Value::Object(network) = network {
                network.insert("driver".into(), json!("overlay"));
            }
        }
    }
    let mut out = Map::new();
    out.insert("version".into(), json!("3.9"));
    out.extend(root);
    let yaml = serde_saphyr::to_string(&Value::Object(out))
        .map_err(|e| Error::Parse(format!("writing the stack file: {e}")))?;
    Ok(format!(
        "# The Swarm stack of this preview, derived by preview-deployer from its compose file; do not edit.\n{yaml}"
    ))
}

/// `deploy:` for one service: resources (limits, and the same reserved), restart policy,
/// service labels (with the work dir) and the placement that keeps a volume's node.
fn deploy_section(service: &Map<String, Value>, inputs: &StackInputs, name: &str) -> Result<Value> {
    let mut resources = Map::new();
    let mut figures = Map::new();
    if let Some(memory) = service.get("mem_limit") {
        figures.insert("memory".into(), memory.clone());
    }
    if let Some(cpus) = service.get("cpus") {
        // The stack schema wants cpus as a string.
        let cpus = match cpus {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(Error::Parse(format!("cpus of {name} is not a number"))),
        };
        figures.insert("cpus".into(), Value::String(cpus));
    }
    if !figures.is_empty() {
        resources.insert("limits".into(), Value::Object(figures.clone()));
        resources.insert("reservations".into(), Value::Object(figures));
    }
    let mut labels = match service.get("labels") {
        Some(Value::Object(labels)) => labels.clone(),
        _ => Map::new(),
    };
    labels.insert(WORK_DIR_LABEL.into(), json!(inputs.work_dir));
    let mut deploy = Map::new();
    deploy.insert("replicas".into(), json!(1));
    deploy.insert("labels".into(), Value::Object(labels));
    deploy.insert("resources".into(), Value::Object(resources));
    deploy.insert("restart_policy".into(), restart_policy(service));
    if let Some(node) = inputs.pinned.get(name) {
        deploy.insert(
            "placement".into(),
            json!({ "constraints": [format!("node.id == {node}")] }),
        );
    }
    Ok(Value::Object(deploy))
}

/// Swarm's restart policy for a service's compose `restart`: `no` and `on-failure[:N]` (a task
/// meant to end, such as a migration) keep their meaning, anything else restarts always.
fn restart_policy(service: &Map<String, Value>) -> Value {
    let restart = service.get("restart").and_then(Value::as_str).unwrap_or("");
    match restart.split_once(':').unwrap_or((restart, "")) {
        ("no", _) => json!({ "condition": "none" }),
        ("on-failure", "") => json!({ "condition": "on-failure", "delay": "2s" }),
        ("on-failure", attempts) => match attempts.parse::<u64>() {
            Ok(n) => json!({ "condition": "on-failure", "delay": "2s", "max_attempts": n }),
            Err(_) => json!({ "condition": "on-failure", "delay": "2s" }),
        },
        _ => json!({ "condition": "any", "delay": "2s" }),
    }
}

/// Rewrites one long-syntax port for Swarm: published on the node itself, as a number.
fn host_mode(port: &mut Value) -> Option<()> {
    let port = port.as_object_mut()?;
    port.remove("host_ip");
    let published = match port.get("published")? {
        Value::String(s) => s.parse::<u64>().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    port.insert("published".into(), json!(published));
    port.insert("mode".into(), json!("host"));
    Some(())
}

/// The services of a rendered compose file that keep data in a named volume.
pub fn services_with_volumes(compose_yaml: &str) -> Result<Vec<String>> {
    let root: Value = serde_saphyr::from_str(compose_yaml)
        .map_err(|e| Error::Parse(format!("the rendered compose file: not YAML: {e}")))?;
    let Some(Value::Object(services)) = root.get("services") else {
        return Ok(Vec::new());
    };
    Ok(services
        .iter()
        .filter(|(_, s)| {
            s.get("volumes").and_then(Value::as_array).is_some_and(|v| {
                v.iter()
                    .any(|v| v.get("type").and_then(Value::as_str) == Some("volume"))
            })
        })
        .map(|(name, _)| name.clone())
        .collect())
}

/// The services of a rendered compose file, with the image each names (`None` when built).
pub fn service_images(compose_yaml: &str) -> Result<BTreeMap<String, Option<String>>> {
    let root: Value = serde_saphyr::from_str(compose_yaml)
        .map_err(|e| Error::Parse(format!("the rendered compose file: not YAML: {e}")))?;
    let Some(Value::Object(services)) = root.get("services") else {
        return Err(Error::Parse(
            "the rendered compose file: no services".into(),
        ));
    };
    Ok(services
        .iter()
        .filter(|(_, s)| s.get("profiles").is_none())
        .map(|(name, s)| {
            let image = if s.get("build").is_some() {
                None
            } else {
                s.get("image").and_then(Value::as_str).map(str::to_owned)
            };
            (name.clone(), image)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = include_str!("../tests/fixtures/rendered-compose.yml");

    fn inputs() -> StackInputs {
        StackInputs {
            images: BTreeMap::from([
                (
                    "app".into(),
                    "10.0.0.2:5000/acme-api-pr-7-app:0123456789ab".into(),
                ),
                (
                    "db".into(),
                    "10.0.0.2:5000/acme-api-pr-7-db:ba9876543210".into(),
                ),
            ]),
            pinned: BTreeMap::from([("db".into(), "node0id".into())]),
            work_dir: "/srv/previews/acme-api-pr-7".into(),
        }
    }

    #[test]
    fn the_stack_file_of_a_rendered_compose_file() {
        let stack = stack_file(COMPOSE, &inputs()).unwrap();
        insta::assert_snapshot!(stack);
        // What the stack deploy would refuse or ignore is gone.
        for key in [
            "host_ip",
            "mem_limit",
            "depends_on",
            "security_opt",
            "build:",
            "\nname:",
        ] {
            assert!(
                !stack.contains(key),
                "{key} left in the stack file:\n{stack}"
            );
        }
    }

    #[test]
    fn a_task_meant_to_end_keeps_its_restart_policy() {
        let policy = |restart: &str| {
            let service = json!({ "restart": restart });
            restart_policy(service.as_object().unwrap())["condition"].clone()
        };
        assert_eq!(policy("no"), "none");
        assert_eq!(policy("on-failure"), "on-failure");
        let service = json!({ "restart": "on-failure:3" });
        assert_eq!(
            restart_policy(service.as_object().unwrap())["max_attempts"],
            3
        );
        assert_eq!(policy("unless-stopped"), "any");
    }

    #[test]
    fn a_service_without_an_image_is_an_error() {
        let mut inputs = inputs();
        inputs.images.remove("db");
        let err = stack_file(COMPOSE, &inputs).unwrap_err().to_string();
        assert!(err.contains("no image for service db"), "{err}");
    }

    #[test]
    fn services_their_images_and_volumes() {
        let images = service_images(COMPOSE).unwrap();
        assert_eq!(images["app"], None);
        assert_eq!(images["db"].as_deref(), Some("postgres:16-bookworm"));
        assert_eq!(services_with_volumes(COMPOSE).unwrap(), ["db"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "- a\n- b", "services: 3", "services:\n  app: 3", "{{{"] {
            assert!(stack_file(text, &inputs()).is_err(), "{text:?}");
        }
    }
}
