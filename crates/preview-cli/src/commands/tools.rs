//! The external programs the infrastructure commands need, found on PATH before any of them runs
//! so a missing one is reported with what to install rather than half-way through a setup.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// An external program and how to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// HashiCorp Terraform.
    Terraform,
    /// Ansible's playbook runner.
    AnsiblePlaybook,
    /// The OpenSSH client.
    Ssh,
    /// rsync, for uploading the orchestrator binary.
    Rsync,
    /// Cargo, for building the orchestrator binary.
    Cargo,
}

impl Tool {
    /// Program name on PATH.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Terraform => "terraform",
            Tool::AnsiblePlaybook => "ansible-playbook",
            Tool::Ssh => "ssh",
            Tool::Rsync => "rsync",
            Tool::Cargo => "cargo",
        }
    }

    /// What to install.
    pub fn install_hint(self) -> &'static str {
        match self {
            Tool::Terraform => {
                "install Terraform 1.5 or newer (HashiCorp's apt repository or release zip; \
                 OpenTofu users can link `tofu` as `terraform`)"
            }
            Tool::AnsiblePlaybook => {
                "install Ansible: `pipx install ansible` (or `pip install ansible`, or \
                 `apt install ansible`)"
            }
            Tool::Ssh => "install the OpenSSH client: `apt install openssh-client`",
            Tool::Rsync => {
                "install rsync: `apt install rsync` (it is needed here and on the server)"
            }
            Tool::Cargo => "install the Rust toolchain with rustup, or pass --binary PATH",
        }
    }
}

/// Fails naming the first missing tool and what to install.
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find_on_path(t.program()).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|t| format!("  `{}` is not on PATH: {}", t.program(), t.install_hint()))
        .collect();
    bail!("missing tools:\n{}", lines.join("\n"))
}

/// The first executable file named `program` in PATH.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_tool_passes() {
        assert!(find_on_path("sh").is_some());
    }

    #[test]
    fn hints_name_what_to_install() {
        for tool in [
            Tool::Terraform,
            Tool::AnsiblePlaybook,
            Tool::Ssh,
            Tool::Rsync,
        ] {
            assert!(tool.install_hint().contains("install"), "{tool:?}");
        }
    }
}
