//! Terraform, Ansible and the orchestrator's release build, each through `preview_exec::Cmd`.
//!
//! Secrets reach terraform as `TF_VAR_do_token` in its environment and Ansible through a 0600
//! vars file passed as `-e @file`; neither ever appears in an argument vector.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use preview_exec::Cmd;
use serde_json::json;

use super::config::Config;
use super::home::{Home, ensure_private_dir, remove_if_exists, write_private};
use super::remote::Remote;
use super::state::{ServerInfo, WorkerInfo};

/// The tfvars file the CLI writes into terraform's working directory (no secrets in it).
const TFVARS: &str = "preview.tfvars.json";
/// The saved plan between `plan` and `apply`.
const TFPLAN: &str = "preview.tfplan";

/// Terraform in the working copy under the preview-deployer directory.
#[derive(Debug, Clone)]
pub struct Terraform {
    dir: PathBuf,
    do_token: String,
    log: PathBuf,
}

/// What `terraform plan` said it would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSummary {
    /// The summary line, e.g. "Plan: 6 to add, 0 to change, 0 to destroy."
    pub line: String,
    /// Whether anything would change.
    pub has_changes: bool,
}

impl Terraform {
    /// Prepares the working directory: copies `terraform/*.tf` (and the lock file) from the infra
    /// checkout, then writes the non-secret variables.
    pub fn prepare(config: &Config, home: &Home, do_token: String, log: PathBuf) -> Result<Self> {
        let dir = home.terraform_dir();
        ensure_private_dir(&dir)?;
        let source = config.terraform_source();
        let copied = copy_terraform_sources(&source, &dir)?;
        if copied == 0 && !has_tf_files(&dir)? {
            bail!(
                "infra_dir: no terraform files in {}; point infra_dir in {} at a preview-deployer checkout",
                source.display(),
                home.config_path().display()
            );
        }
        let tfvars = dir.join(TFVARS);
        let public_key = match config.ssh.public_key() {
            Ok(key) => key,
            // `destroy` must still work when the key pair is gone: the last tfvars have it.
            Err(_) if tfvars.is_file() => return Ok(Self { dir, do_token, log }),
            Err(err) => return Err(err),
        };
        let mut vars = json!({
            "name": config.project,
            "region": config.digitalocean.region,
            "droplet_size": config.digitalocean.droplet_size,
            "ssh_public_key": public_key,
            "admin_cidrs": config.digitalocean.admin_cidrs,
            "worker_count": config.digitalocean.worker_count,
        });
        if let Some(tls) = &config.tls {
            vars["alert_email"] = json!(tls.email);
            vars["preview_domain"] = json!(tls.domain);
            if let Some(zone) = &config.digitalocean.dns_zone {
                vars["dns_zone"] = json!(zone);
            }
        }
        let text = serde_json::to_vec_pretty(&vars).context("serialising tfvars")?;
        write_private(&tfvars, &text)?;
        Ok(Self { dir, do_token, log })
    }

    fn cmd(&self, description: &str, timeout: Duration) -> Cmd {
        Cmd::new("terraform", description)
            .current_dir(&self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_VAR_do_token", &self.do_token)
            .pass_env("HOME")
            .pass_env("TF_PLUGIN_CACHE_DIR")
            .pass_env("TF_CLI_CONFIG_FILE")
            .log_to(&self.log)
            .timeout(timeout)
    }

    /// `terraform init`.
    pub async fn init(&self) -> Result<()> {
        self.cmd("terraform init", Duration::from_secs(600))
            .args(["init", "-input=false", "-no-color"])
            .run()
            .await?;
        Ok(())
    }

    /// `terraform plan -out`, returning its summary line.
    ///
    /// A saved plan holds every input variable, the DigitalOcean token included, and terraform
    /// writes it with the umask's mode; it is made 0600 at once, and [`Self::discard_plan`]
    /// removes it as soon as it has been applied or declined.
    pub async fn plan(&self) -> Result<PlanSummary> {
        let var_file = format!("-var-file={TFVARS}");
        let out = format!("-out={TFPLAN}");
        let result = self
            .cmd("terraform plan", Duration::from_secs(600))
            .args(["plan", "-input=false", "-no-color", &var_file, &out])
            .run()
            .await;
        let plan = self.dir.join(TFPLAN);
        if plan.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&plan, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", plan.display()))?;
        }
        Ok(plan_summary(&result?.stdout_text()))
    }

    /// `terraform apply` of the saved plan; the plan is removed whatever the outcome.
    pub async fn apply(&self) -> Result<()> {
        let result = self
            .cmd("terraform apply", Duration::from_secs(1800))
            .args(["apply", "-input=false", "-no-color", TFPLAN])
            .run()
            .await;
        self.discard_plan()?;
        result?;
        Ok(())
    }

    /// Removes the saved plan (it holds the DigitalOcean token); absent is fine.
    pub fn discard_plan(&self) -> Result<()> {
        remove_if_exists(&self.dir.join(TFPLAN)).map(drop)
    }

    /// `terraform output -json`, parsed into the server's address and login.
    pub async fn outputs(&self) -> Result<ServerInfo> {
        let output = self
            .cmd("terraform output", Duration::from_secs(120))
            .args(["output", "-json", "-no-color"])
            .run()
            .await?;
        let parsed = preview_infra::ServerOutputs::from_json(&output.stdout)?;
        Ok(ServerInfo {
            ip: parsed.server_ip.to_string(),
            ssh_user: parsed.ssh_user,
            droplet_id: parsed.droplet_id,
            private_ip: Some(parsed.server_private_ip.to_string()),
            workers: parsed
                .workers
                .iter()
                .map(|w| WorkerInfo {
                    ip: w.public_ip.to_string(),
                    private_ip: w.private_ip.to_string(),
                })
                .collect(),
        })
    }

    /// `terraform destroy`, already confirmed by the operator.
    pub async fn destroy(&self) -> Result<()> {
        let var_file = format!("-var-file={TFVARS}");
        self.cmd("terraform destroy", Duration::from_secs(1800))
            .args([
                "destroy",
                "-input=false",
                "-no-color",
                "-auto-approve",
                &var_file,
            ])
            .run()
            .await?;
        Ok(())
    }
}

/// Copies `*.tf` and `.terraform.lock.hcl` from `source` to `dest`; returns how many.
fn copy_terraform_sources(source: &Path, dest: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(source) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("reading {}", source.display())),
    };
    let mut copied = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", source.display()))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if (name_str.ends_with(".tf") || name_str == ".terraform.lock.hcl")
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            std::fs::copy(entry.path(), dest.join(&name)).with_context(|| {
                format!("copying {} to {}", entry.path().display(), dest.display())
            })?;
            copied += 1;
        }
    }
    Ok(copied)
}

fn has_tf_files(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".tf")))
}

/// Finds the summary line of `terraform plan` output.
pub fn plan_summary(stdout: &str) -> PlanSummary {
    for line in stdout.lines().map(str::trim) {
        if line.starts_with("Plan:") {
            return PlanSummary {
                line: line.to_owned(),
                has_changes: true,
            };
        }
        if line.starts_with("No changes.") {
            return PlanSummary {
                line: line.to_owned(),
                has_changes: false,
            };
        }
    }
    PlanSummary {
        line: "terraform plan printed no summary".to_owned(),
        has_changes: true,
    }
}

/// The values the playbook receives. Secrets go in the 0600 vars file only.
pub struct PlaybookInputs<'a> {
    /// The config.
    pub config: &'a Config,
    /// The server.
    pub remote: &'a Remote,
    /// What terraform created: the server's VPC address and the Swarm workers.
    pub server: &'a ServerInfo,
    /// The orchestrator binary to install.
    pub binary: &'a Path,
    /// GitHub token for comments and deployments.
    pub github_token: &'a str,
    /// Webhook HMAC secret.
    pub webhook_secret: &'a str,
    /// Bearer token of the internal API.
    pub api_token: &'a str,
}

/// Writes the inventory and the vars file, runs `ansible-playbook`, then removes the vars file.
pub async fn run_playbook(inputs: &PlaybookInputs<'_>, home: &Home, log: &Path) -> Result<()> {
    let config = inputs.config;
    let playbook = config.ansible_source().join("playbook.yml");
    if !playbook.is_file() {
        bail!(
            "infra_dir: {} does not exist; point infra_dir in {} at a preview-deployer checkout",
            playbook.display(),
            home.config_path().display()
        );
    }
    let dir = home.ansible_dir();
    ensure_private_dir(&dir)?;
    let inventory = dir.join("inventory.yml");
    let vars = dir.join("vars.yml");
    let secrets = dir.join("secrets.yml");
    let ssh_args = inputs
        .remote
        .ssh_options()
        .iter()
        .skip(2) // the key goes in ansible_ssh_private_key_file
        .map(|a| super::remote::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    // The group names are the playbook's `hosts:`; vpc_address is what the swarm role advertises.
    let host = |address: &str, vpc_address: Option<&str>| {
        let mut vars = json!({
            "ansible_host": address,
            "ansible_user": inputs.remote.user(),
            "ansible_ssh_private_key_file": inputs.remote.key(),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
        });
        if let Some(vpc_address) = vpc_address {
            vars["vpc_address"] = json!(vpc_address);
        }
        vars
    };
    let mut inventory_doc = json!({
        "preview_servers": {
            "hosts": {
                "preview": host(inputs.remote.host(), inputs.server.private_ip.as_deref()),
            }
        }
    });
    if !inputs.server.workers.is_empty() {
        let workers: serde_json::Map<String, serde_json::Value> = inputs
            .server
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    format!("preview-worker-{}", i + 1),
                    host(&w.ip, Some(&w.private_ip)),
                )
            })
            .collect();
        inventory_doc["preview_workers"] = json!({ "hosts": workers });
    }
    let inventory_text =
        serde_saphyr::to_string(&inventory_doc).context("serialising inventory")?;
    write_private(&inventory, inventory_text.as_bytes())?;

    // Names as in ansible/group_vars/all.yml; an empty base URL lets the role derive it.
    let vars_doc = json!({
        "orchestrator_allowed_repos": config.github.repositories,
        "orchestrator_cleanup_ttl_days": config.previews.ttl_days,
        "orchestrator_max_concurrent_previews": config.previews.max_previews,
        "orchestrator_deploy_policy": config.previews.deploy_policy.as_str(),
        "orchestrator_binary_src": inputs.binary,
        "nginx_domain": config.tls.as_ref().map(|t| t.domain.clone()).unwrap_or_default(),
        // The same domain puts each preview at its own hostname under it.
        "preview_domain": config.tls.as_ref().map(|t| t.domain.clone()).unwrap_or_default(),
        "nginx_letsencrypt_email": config.tls.as_ref().map(|t| t.email.clone()).unwrap_or_default(),
    });
    let vars_text = serde_saphyr::to_string(&vars_doc).context("serialising ansible vars")?;
    write_private(&vars, vars_text.as_bytes())?;
    // As in ansible/secrets.example.yml.
    let secrets_doc = json!({
        "orchestrator_github_token": inputs.github_token,
        "orchestrator_webhook_secret": inputs.webhook_secret,
        "orchestrator_api_token": inputs.api_token,
    });
    let secrets_text =
        serde_saphyr::to_string(&secrets_doc).context("serialising ansible secrets")?;
    write_private(&secrets, secrets_text.as_bytes())?;

    let at = |path: &Path| {
        let mut arg = std::ffi::OsString::from("@");
        arg.push(path);
        arg
    };
    let result = Cmd::new("ansible-playbook", "configure the server with Ansible")
        .arg("-i")
        .arg(&inventory)
        .arg("-e")
        .arg(at(&vars))
        .arg("-e")
        .arg(at(&secrets))
        .arg(&playbook)
        .current_dir(config.ansible_source())
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .pass_env("HOME")
        .pass_env("SSH_AUTH_SOCK")
        .pass_env("ANSIBLE_CONFIG")
        .log_to(log)
        .timeout(Duration::from_secs(3600))
        .run()
        .await;
    // The secrets stay on disk only for the playbook's run.
    let removed = remove_if_exists(&secrets);
    result?;
    removed?;
    Ok(())
}

/// The orchestrator binary to ship: `--binary`, else a fresh `cargo build --release`.
pub async fn orchestrator_binary(binary: Option<&Path>, log: &Path) -> Result<PathBuf> {
    if let Some(path) = binary {
        if !path.is_file() {
            bail!("--binary: {} is not a file", path.display());
        }
        return path
            .canonicalize()
            .with_context(|| format!("--binary: resolving {}", path.display()));
    }
    super::tools::require(&[super::tools::Tool::Cargo])?;
    let workspace = workspace_root()?;
    Cmd::new("cargo", "build the orchestrator's release binary")
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "preview-orchestrator",
        ])
        .current_dir(&workspace)
        .pass_env("HOME")
        .pass_env("CARGO_HOME")
        .pass_env("RUSTUP_HOME")
        .pass_env("CARGO_TARGET_DIR")
        .log_to(log)
        .timeout(Duration::from_secs(3600))
        .run()
        .await?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let built = target.join("release").join("preview-orchestrator");
    if !built.is_file() {
        bail!("cargo finished but {} is missing", built.display());
    }
    Ok(built)
}

/// The version a binary reports with `--version` ("preview-orchestrator 0.1.0" → "0.1.0").
pub async fn binary_version(binary: &Path) -> Result<String> {
    let output = Cmd::new(binary, "ask the orchestrator binary for its version")
        .arg("--version")
        .timeout(Duration::from_secs(20))
        .run()
        .await
        .with_context(|| format!("{} --version", binary.display()))?;
    let text = output.stdout_text();
    text.split_whitespace()
        .last()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} --version printed nothing", binary.display()))
}

/// The checkout this CLI was built from, for `cargo build`; `PREVIEW_WORKSPACE` overrides it.
fn workspace_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PREVIEW_WORKSPACE") {
        return Ok(PathBuf::from(dir));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built_from
        .join("crates/preview-orchestrator/Cargo.toml")
        .is_file()
    {
        return built_from
            .canonicalize()
            .context("resolving the workspace directory");
    }
    bail!(
        "cannot find the preview-deployer sources to build the orchestrator; pass --binary PATH or set PREVIEW_WORKSPACE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_plan_summary() {
        let out = "\nTerraform will perform the following actions:\n...\nPlan: 6 to add, 0 to change, 0 to destroy.\n";
        assert_eq!(
            plan_summary(out),
            PlanSummary {
                line: "Plan: 6 to add, 0 to change, 0 to destroy.".into(),
                has_changes: true
            }
        );
        let none = plan_summary("No changes. Your infrastructure matches the configuration.\n");
        assert!(!none.has_changes);
    }
}
