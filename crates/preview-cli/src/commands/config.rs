//! `config.yml`: everything `preview init` asked for except the secrets, which live in the secret
//! store. Parsing is strict: an unknown or ill-typed key is an error that names it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::home::{Home, write_private};
use super::secrets::StoreKind;

/// Version of the file format; bumped when a key changes meaning.
pub const CONFIG_VERSION: u32 = 1;
/// The seed's default time-to-live of a preview.
pub const DEFAULT_TTL_DAYS: u32 = 7;
/// The seed's default cap on live previews.
pub const DEFAULT_MAX_PREVIEWS: u32 = 50;
/// Default DigitalOcean region (terraform/variables.tf).
pub const DEFAULT_REGION: &str = "fra1";
/// Default droplet size (terraform/variables.tf).
pub const DEFAULT_DROPLET_SIZE: &str = "s-2vcpu-4gb";
/// Default project name: terraform's `name`, and what `destroy` asks the operator to type.
pub const DEFAULT_PROJECT: &str = "preview-deployer";
/// GitHub's public API.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";

/// Regions that offer droplets and reserved IPs; the same list as terraform/variables.tf.
pub const REGIONS: [&str; 13] = [
    "ams3", "atl1", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3", "sfo2", "sfo3", "sgp1", "syd1",
    "tor1",
];

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File format version.
    pub version: u32,
    /// Project name: prefix of every cloud resource; typed to confirm `destroy`.
    pub project: String,
    /// Checkout holding `terraform/` and `ansible/`.
    pub infra_dir: PathBuf,
    /// Where the secrets are kept.
    pub secret_store: StoreKind,
    /// The droplet.
    pub digitalocean: DigitalOcean,
    /// Repositories that get previews.
    pub github: GitHub,
    /// Preview lifetime and cap.
    pub previews: Previews,
    /// Optional domain and e-mail for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// The key used to reach the server.
    pub ssh: Ssh,
}

/// The droplet's region and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigitalOcean {
    /// Region slug, e.g. `fra1`.
    pub region: String,
    /// Size slug, e.g. `s-2vcpu-4gb`.
    pub droplet_size: String,
    /// Source addresses allowed to reach SSH.
    #[serde(default = "everywhere", skip_serializing_if = "is_everywhere")]
    pub admin_cidrs: Vec<String>,
    /// A DNS zone hosted at DigitalOcean that holds the TLS domain (e.g. `example.com`): Terraform
    /// then creates the domain's A records, `{domain}` and `*.{domain}`. Unset: create them
    /// yourself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<String>,
    /// Docker Swarm workers beside the server (0 to [`MAX_WORKERS`]): with any, previews spread
    /// over every node; with none, they run on the server alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub worker_count: u32,
}

/// The most Swarm workers terraform's `worker_count` accepts.
pub const MAX_WORKERS: u32 = 20;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// GitHub side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHub {
    /// `owner/name` of each repository that gets previews.
    pub repositories: Vec<String>,
    /// API base URL; GitHub Enterprise or a test fake. `GITHUB_API_URL` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Preview lifetime and cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previews {
    /// Days a preview lives without a new push.
    pub ttl_days: u32,
    /// Live previews at most; the oldest goes first.
    pub max_previews: u32,
    /// Which PRs deploy on their own: `collaborators` (authors who belong to the repository;
    /// anyone else's PR waits for a writer's `/preview`) or `everyone`.
    #[serde(default)]
    pub deploy_policy: DeployPolicy,
}

/// `previews.deploy_policy`, the orchestrator's `DEPLOY_POLICY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeployPolicy {
    /// Authors who are the repository's owner, organisation members or collaborators.
    #[default]
    Collaborators,
    /// Every pull request, including strangers' forks.
    Everyone,
}

impl DeployPolicy {
    /// The value as the orchestrator and the Ansible role spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collaborators => "collaborators",
            Self::Everyone => "everyone",
        }
    }
}

/// TLS through a domain pointing at the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Domain whose A record points at the server's reserved IP.
    pub domain: String,
    /// Contact for the certificate authority.
    pub email: String,
}

/// SSH key pair used by terraform (public half), ansible and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// Private key file.
    pub private_key: PathBuf,
}

fn everywhere() -> Vec<String> {
    vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()]
}

fn is_everywhere(cidrs: &Vec<String>) -> bool {
    *cidrs == everywhere()
}

impl Ssh {
    /// The public key file beside the private key.
    pub fn public_key_path(&self) -> PathBuf {
        let mut name = self.private_key.as_os_str().to_owned();
        name.push(".pub");
        PathBuf::from(name)
    }

    /// The one-line OpenSSH public key.
    pub fn public_key(&self) -> Result<String> {
        let path = self.public_key_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the SSH public key {}", path.display()))?;
        let line = text.trim().to_owned();
        validate_public_key(&line)
            .map_err(|reason| anyhow!("ssh.private_key: {}: {reason}", path.display()))?;
        Ok(line)
    }
}

impl Config {
    /// Reads and validates `config.yml`; a missing file says to run `preview init`.
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "no config at {}; run `preview init` first (or pass --home)",
                    path.display()
                )
            }
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = serde_saphyr::from_str(text).map_err(|err| anyhow!("{err}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes `config.yml` (mode 0600, atomically).
    pub fn save(&self, home: &Home) -> Result<()> {
        let text = self.to_yaml()?;
        write_private(&home.config_path(), text.as_bytes())
    }

    /// The YAML text of the file.
    pub fn to_yaml(&self) -> Result<String> {
        let body = serde_saphyr::to_string(self).context("serialising the config")?;
        Ok(format!(
            "# preview-deployer configuration, written by `preview init`.\n\
             # Secrets are not here: they are in the store named by secret_store.\n{body}"
        ))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        if self.version != CONFIG_VERSION {
            bail!(
                "version: {} is not supported (this preview understands {CONFIG_VERSION})",
                self.version
            );
        }
        validate_project(&self.project).map_err(|r| anyhow!("project: {r}"))?;
        validate_region(&self.digitalocean.region)
            .map_err(|r| anyhow!("digitalocean.region: {r}"))?;
        validate_droplet_size(&self.digitalocean.droplet_size)
            .map_err(|r| anyhow!("digitalocean.droplet_size: {r}"))?;
        if self.digitalocean.admin_cidrs.is_empty() {
            bail!("digitalocean.admin_cidrs: must list at least one CIDR block");
        }
        for cidr in &self.digitalocean.admin_cidrs {
            validate_cidr(cidr).map_err(|r| anyhow!("digitalocean.admin_cidrs: {r}"))?;
        }
        if self.github.repositories.is_empty() {
            bail!("github.repositories: list at least one repository as owner/name");
        }
        for repo in &self.github.repositories {
            validate_repo(repo).map_err(|r| anyhow!("github.repositories: {r}"))?;
        }
        if let Some(url) = &self.github.api_url {
            validate_api_url(url).map_err(|r| anyhow!("github.api_url: {r}"))?;
        }
        validate_ttl(self.previews.ttl_days).map_err(|r| anyhow!("previews.ttl_days: {r}"))?;
        validate_max_previews(self.previews.max_previews)
            .map_err(|r| anyhow!("previews.max_previews: {r}"))?;
        if let Some(tls) = &self.tls {
            validate_domain(&tls.domain).map_err(|r| anyhow!("tls.domain: {r}"))?;
            validate_email(&tls.email).map_err(|r| anyhow!("tls.email: {r}"))?;
        }
        if let Some(zone) = &self.digitalocean.dns_zone {
            validate_domain(zone).map_err(|r| anyhow!("digitalocean.dns_zone: {r}"))?;
            let Some(tls) = &self.tls else {
                bail!(
                    "digitalocean.dns_zone: set tls.domain (--domain) too: the zone holds its records"
                );
            };
            if tls.domain != *zone && !tls.domain.ends_with(&format!(".{zone}")) {
                bail!(
                    "digitalocean.dns_zone: {zone} does not hold tls.domain {}; name the zone the domain is in",
                    tls.domain
                );
            }
        }
        if self.digitalocean.worker_count > MAX_WORKERS {
            bail!(
                "digitalocean.worker_count: {} is more than {MAX_WORKERS} workers",
                self.digitalocean.worker_count
            );
        }
        if !self.ssh.private_key.is_absolute() {
            bail!(
                "ssh.private_key: {} must be an absolute path",
                self.ssh.private_key.display()
            );
        }
        if !self.infra_dir.is_absolute() {
            bail!(
                "infra_dir: {} must be an absolute path",
                self.infra_dir.display()
            );
        }
        Ok(())
    }

    /// GitHub's API base: `GITHUB_API_URL`, else the config's, else api.github.com.
    pub fn github_api_url(&self) -> String {
        std::env::var("GITHUB_API_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.github.api_url.clone())
            .unwrap_or_else(|| DEFAULT_GITHUB_API.to_owned())
    }

    /// `terraform/` of the infra checkout.
    pub fn terraform_source(&self) -> PathBuf {
        self.infra_dir.join("terraform")
    }

    /// `ansible/` of the infra checkout.
    pub fn ansible_source(&self) -> PathBuf {
        self.infra_dir.join("ansible")
    }
}

/// Reasons are plain strings; callers prefix the key.
type Check = std::result::Result<(), String>;

/// A lowercase hostname label of 2 to 64 characters (terraform's `name`).
pub fn validate_project(name: &str) -> Check {
    let ok = (2..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 2-64 lowercase letters, digits and '-', starting with a letter"
        ))
    }
}

/// One of [`REGIONS`].
pub fn validate_region(region: &str) -> Check {
    if REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not a region with droplets and reserved IPs; choose one of {}",
            REGIONS.join(", ")
        ))
    }
}

/// A size slug such as `s-2vcpu-4gb`, with at least 2 GB.
pub fn validate_droplet_size(size: &str) -> Check {
    let shape = size.starts_with(|c: char| c.is_ascii_lowercase())
        && size.contains('-')
        && size
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !shape {
        return Err(format!(
            "{size:?} is not a droplet size slug such as s-2vcpu-4gb"
        ));
    }
    if size.starts_with("s-1vcpu-512mb") || size.starts_with("s-1vcpu-1gb") {
        return Err(format!(
            "{size:?} has less than 2 GB of memory; previews need s-2vcpu-4gb or larger"
        ));
    }
    Ok(())
}

/// An IPv4 or IPv6 CIDR block.
pub fn validate_cidr(cidr: &str) -> Check {
    let bad = || format!("{cidr:?} is not a CIDR block such as 203.0.113.7/32");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

/// `owner/name` with GitHub's allowed characters.
pub fn validate_repo(repo: &str) -> Check {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) && !owner.contains('.') => Ok(()),
        _ => Err(format!(
            "{repo:?} is not a repository written as owner/name"
        )),
    }
}

/// An http(s) URL without a query.
pub fn validate_api_url(url: &str) -> Check {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(())
        }
        _ => Err(format!("{url:?} is not an http(s) URL")),
    }
}

/// 1 to 365 days.
pub fn validate_ttl(days: u32) -> Check {
    if (1..=365).contains(&days) {
        Ok(())
    } else {
        Err(format!("{days} must be between 1 and 365 days"))
    }
}

/// 1 to 100 previews.
pub fn validate_max_previews(n: u32) -> Check {
    if (1..=100).contains(&n) {
        Ok(())
    } else {
        Err(format!("{n} must be between 1 and 100"))
    }
}

/// A DNS name with at least two labels.
pub fn validate_domain(domain: &str) -> Check {
    let labels: Vec<&str> = domain.split('.').collect();
    let ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{domain:?} is not a domain name such as previews.example.com"
        ))
    }
}

/// One plain e-mail address.
pub fn validate_email(email: &str) -> Check {
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !email.chars().any(|c| c.is_whitespace() || c == ',')
                && !domain.contains('@')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{email:?} is not an e-mail address"))
    }
}

/// One OpenSSH public key line.
pub fn validate_public_key(line: &str) -> Check {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    if line.lines().count() == 1
        && TYPES.contains(&kind)
        && !blob.is_empty()
        && blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    {
        Ok(())
    } else {
        Err("is not one OpenSSH public key line (ssh-ed25519 AAAA... comment)".to_owned())
    }
}

/// A private key whose `.pub` sits beside it.
pub fn validate_ssh_key(path: &Path) -> Check {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let ssh = Ssh {
        private_key: path.to_owned(),
    };
    let public = ssh.public_key_path();
    let text = std::fs::read_to_string(&public)
        .map_err(|e| format!("cannot read the public key {}: {e}", public.display()))?;
    validate_public_key(text.trim()).map_err(|r| format!("{}: {r}", public.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            version: CONFIG_VERSION,
            project: "preview-deployer".into(),
            infra_dir: "/srv/preview-deployer".into(),
            secret_store: StoreKind::File,
            digitalocean: DigitalOcean {
                region: "fra1".into(),
                droplet_size: "s-2vcpu-4gb".into(),
                admin_cidrs: everywhere(),
                dns_zone: None,
                worker_count: 0,
            },
            github: GitHub {
                repositories: vec!["acme/api".into(), "acme/web".into()],
                api_url: None,
            },
            previews: Previews {
                ttl_days: 7,
                max_previews: 10,
                deploy_policy: DeployPolicy::Collaborators,
            },
            tls: Some(Tls {
                domain: "previews.example.com".into(),
                email: "ops@example.com".into(),
            }),
            ssh: Ssh {
                private_key: "/home/me/.ssh/id_ed25519".into(),
            },
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = sample();
        let text = config.to_yaml().unwrap();
        insta::assert_snapshot!(text);
        assert_eq!(Config::parse(&text).unwrap(), config);
    }

    #[test]
    fn a_dns_zone_must_hold_the_tls_domain() {
        let with_zone = |zone: &str, tls: bool| {
            let mut config = sample();
            config.digitalocean.dns_zone = Some(zone.into());
            if !tls {
                config.tls = None;
            }
            Config::parse(&config.to_yaml().unwrap()).map_err(|e| format!("{e:#}"))
        };
        let ok = with_zone("example.com", true).unwrap();
        assert_eq!(ok.digitalocean.dns_zone.as_deref(), Some("example.com"));
        with_zone("previews.example.com", true).unwrap();
        let err = with_zone("example.org", true).unwrap_err();
        assert!(
            err.contains("does not hold tls.domain previews.example.com"),
            "{err}"
        );
        let err = with_zone("ample.com", true).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
        let err = with_zone("example.com", false).unwrap_err();
        assert!(err.contains("set tls.domain"), "{err}");
        let err = with_zone("not a zone", true).unwrap_err();
        assert!(err.contains("digitalocean.dns_zone"), "{err}");
    }

    #[test]
    fn workers_are_written_only_when_there_are_some_and_at_most_twenty() {
        let mut config = sample();
        assert!(!config.to_yaml().unwrap().contains("worker_count"));
        config.digitalocean.worker_count = 3;
        let text = config.to_yaml().unwrap();
        assert!(text.contains("worker_count: 3"), "{text}");
        assert_eq!(Config::parse(&text).unwrap().digitalocean.worker_count, 3);
        config.digitalocean.worker_count = MAX_WORKERS + 1;
        let err = format!(
            "{:#}",
            Config::parse(&config.to_yaml().unwrap()).unwrap_err()
        );
        assert!(err.contains("digitalocean.worker_count: 21"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = sample()
            .to_yaml()
            .unwrap()
            .replace("ttl_days:", "ttl_dayz:");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("ttl_dayz"), "{err}");
    }

    #[test]
    fn an_ill_typed_key_is_named() {
        let text = sample()
            .to_yaml()
            .unwrap()
            .replace("max_previews: 10", "max_previews: many");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("max_previews"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let text = sample().to_yaml().unwrap().replace("fra1", "mars1");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.starts_with("digitalocean.region: \"mars1\""), "{err}");
        let text = sample()
            .to_yaml()
            .unwrap()
            .replace("acme/web", "not a repo");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.starts_with("github.repositories:"), "{err}");
    }

    #[test]
    fn validators() {
        assert!(validate_repo("acme/api").is_ok());
        assert!(validate_repo("acme/api.rs").is_ok());
        for bad in [
            "acme",
            "acme/",
            "/api",
            "a/b/c",
            "ac me/api",
            "acme/..",
            "-x;y/z",
        ] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
        assert!(validate_droplet_size("s-2vcpu-4gb").is_ok());
        assert!(validate_droplet_size("s-1vcpu-1gb").is_err());
        assert!(validate_droplet_size("--help").is_err());
        assert!(validate_cidr("203.0.113.7/32").is_ok());
        assert!(validate_cidr("::/0").is_ok());
        assert!(validate_cidr("203.0.113.7/33").is_err());
        assert!(validate_domain("previews.example.com").is_ok());
        assert!(validate_domain("localhost").is_err());
        assert!(validate_email("ops@example.com").is_ok());
        assert!(validate_email("ops").is_err());
        assert!(validate_project("preview-deployer").is_ok());
        assert!(validate_project("Preview").is_err());
        assert!(validate_ttl(0).is_err());
        assert!(validate_max_previews(10).is_ok());
        assert!(validate_public_key("ssh-ed25519 AAAAC3Nz me@host").is_ok());
        assert!(validate_public_key("-----BEGIN OPENSSH PRIVATE KEY-----").is_err());
    }
}
