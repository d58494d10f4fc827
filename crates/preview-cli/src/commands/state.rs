//! What `setup` has done: the phases completed in the current run (so a re-run after a failure
//! resumes), the server terraform created, and the webhooks setup created or adopted (so
//! `destroy` removes exactly those).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use super::home::{Home, remove_if_exists, write_private};

/// The phases of `preview setup`, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetupPhase {
    /// terraform init, plan, apply.
    Terraform,
    /// Wait until the server answers SSH.
    Ssh,
    /// Run the Ansible playbook.
    Ansible,
    /// Create or update the GitHub webhooks.
    Webhooks,
    /// Ping the webhooks and watch /health.
    Verify,
}

impl SetupPhase {
    /// Every phase, in order.
    pub const ALL: [SetupPhase; 5] = [
        SetupPhase::Terraform,
        SetupPhase::Ssh,
        SetupPhase::Ansible,
        SetupPhase::Webhooks,
        SetupPhase::Verify,
    ];
}

impl fmt::Display for SetupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetupPhase::Terraform => "terraform",
            SetupPhase::Ssh => "ssh",
            SetupPhase::Ansible => "ansible",
            SetupPhase::Webhooks => "webhooks",
            SetupPhase::Verify => "verify",
        })
    }
}

/// The server terraform created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Address for SSH, DNS and webhooks (the reserved IP).
    pub ip: String,
    /// SSH login.
    pub ssh_user: String,
    /// DigitalOcean droplet id.
    pub droplet_id: String,
    /// Its address in the VPC: the Swarm manager's and the private registry's (absent in the
    /// state of a setup from before the Swarm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// The Swarm workers, in terraform's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerInfo>,
}

/// A Swarm worker droplet terraform created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Public address, for Ansible over SSH.
    pub ip: String,
    /// Address in the VPC.
    pub private_ip: String,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupState {
    /// Phases completed by the current (unfinished) run.
    #[serde(default)]
    pub completed: Vec<SetupPhase>,
    /// The server, once terraform has applied.
    #[serde(default)]
    pub server: Option<ServerInfo>,
    /// Webhook id per repository, for `destroy`.
    #[serde(default)]
    pub webhooks: BTreeMap<String, u64>,
    /// When the last complete run ended (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
}

impl SetupState {
    /// Reads the state; absent means nothing was done.
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading setup state {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state atomically (0600).
    pub fn save(&self, home: &Home) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("serialising setup state")?;
        write_private(&home.state_path(), &json)
    }

    /// Removes the state file.
    pub fn remove(home: &Home) -> Result<()> {
        remove_if_exists(&home.state_path()).map(drop)
    }

    /// Whether the current run already completed `phase`.
    pub fn is_done(&self, phase: SetupPhase) -> bool {
        self.completed.contains(&phase)
    }

    /// Records `phase` as done.
    pub fn mark_done(&mut self, phase: SetupPhase) {
        if !self.completed.contains(&phase) {
            self.completed.push(phase);
            self.completed.sort();
        }
    }

    /// The server, or an error saying setup has not created it yet.
    pub fn require_server(&self) -> Result<&ServerInfo> {
        self.server
            .as_ref()
            .ok_or_else(|| anyhow!("no server yet: run `preview setup` first"))
    }
}
