//! `preview init`: asks for (or reads from flags and environment variables) everything setup
//! needs, stores the secrets in the OS keychain (or the fallback), generates the webhook secret
//! and the internal API token, and writes `config.yml`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use super::config::{self, Config, DeployPolicy, DigitalOcean, GitHub, Previews, Ssh, Tls};
use super::home::{Home, HomeArgs};
use super::secrets::{SecretName, SecretStore, StoreChoice, generate_secret};

/// Environment variables read for the DigitalOcean token, in order.
const DO_TOKEN_VARS: [&str; 2] = ["PREVIEW_DO_TOKEN", "DIGITALOCEAN_TOKEN"];
/// Environment variables read for the GitHub token, in order.
const GITHUB_TOKEN_VARS: [&str; 2] = ["PREVIEW_GITHUB_TOKEN", "GITHUB_TOKEN"];

/// Arguments of `preview init`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Secrets are never taken from flags (argv is visible to `ps`): the DigitalOcean token comes from
PREVIEW_DO_TOKEN or DIGITALOCEAN_TOKEN, the GitHub token from PREVIEW_GITHUB_TOKEN or GITHUB_TOKEN,
or from a hidden prompt.

Examples:
  preview init
  DIGITALOCEAN_TOKEN=... GITHUB_TOKEN=... preview init --non-interactive \\
      --repo acme/api --repo acme/web --region fra1 --ssh-key ~/.ssh/id_ed25519")]
pub struct InitArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Never prompt: take every value from flags, environment variables and defaults
    #[arg(long)]
    pub non_interactive: bool,
    /// Overwrite an existing config (generated secrets are kept)
    #[arg(long)]
    pub force: bool,
    /// Project name: prefix of the cloud resources, typed to confirm `destroy`
    #[arg(long, env = "PREVIEW_PROJECT")]
    pub project: Option<String>,
    /// DigitalOcean region
    #[arg(long, env = "PREVIEW_REGION")]
    pub region: Option<String>,
    /// Droplet size slug
    #[arg(long, env = "PREVIEW_DROPLET_SIZE")]
    pub droplet_size: Option<String>,
    /// Repository that gets previews, as owner/name (repeat, or comma-separate)
    #[arg(long = "repo", env = "PREVIEW_REPOS", value_delimiter = ',')]
    pub repos: Vec<String>,
    /// Days a preview lives without a new push
    #[arg(long, env = "PREVIEW_TTL_DAYS")]
    pub ttl_days: Option<u32>,
    /// Live previews at most
    #[arg(long, env = "PREVIEW_MAX_PREVIEWS")]
    pub max_previews: Option<u32>,
    /// Which PRs deploy on their own: `collaborators` (the default: authors who belong to the
    /// repository; a stranger's PR waits until someone with write permission comments `/preview`)
    /// or `everyone`
    #[arg(long, env = "PREVIEW_DEPLOY_POLICY", value_enum)]
    pub deploy_policy: Option<DeployPolicy>,
    /// Domain pointing at the server (optional): each preview is then served at
    /// {slug}-pr-{N}.{domain} (create DNS records for *.{domain} and {domain}), and the webhook
    /// over TLS at the bare domain
    #[arg(long, env = "PREVIEW_DOMAIN")]
    pub domain: Option<String>,
    /// DNS zone hosted at DigitalOcean that holds --domain (e.g. example.com): Terraform then
    /// creates the A records {domain} and *.{domain} pointing at the server
    #[arg(long, env = "PREVIEW_DNS_ZONE", requires = "domain")]
    pub dns_zone: Option<String>,
    /// Docker Swarm worker droplets beside the server (0 to 20; default 0): previews then spread
    /// over every node
    #[arg(long = "workers", env = "PREVIEW_WORKERS",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(config::MAX_WORKERS)))]
    pub workers: Option<u32>,
    /// Contact e-mail for the TLS certificate (with --domain)
    #[arg(long, env = "PREVIEW_TLS_EMAIL")]
    pub email: Option<String>,
    /// SSH private key used to reach the server; its .pub must sit beside it
    #[arg(long, env = "PREVIEW_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// CIDR block allowed to reach SSH (repeat; default: everywhere)
    #[arg(
        long = "admin-cidr",
        env = "PREVIEW_ADMIN_CIDRS",
        value_delimiter = ','
    )]
    pub admin_cidrs: Vec<String>,
    /// Checkout holding terraform/ and ansible/ [default: found from the current directory]
    #[arg(long, env = "PREVIEW_INFRA_DIR")]
    pub infra_dir: Option<PathBuf>,
    /// GitHub API base URL, for GitHub Enterprise
    #[arg(long)]
    pub github_api_url: Option<String>,
    /// Where secrets go: auto, secret-service, keyutils or file
    #[arg(long, env = "PREVIEW_SECRET_STORE", default_value = "auto")]
    pub secret_store: StoreChoice,
}

/// Runs `preview init`.
pub async fn run(args: InitArgs) -> Result<()> {
    let home = Home::resolve(&args.home)?;
    let interactive = !args.non_interactive && std::io::stdin().is_terminal();
    let existing = if home.config_path().exists() {
        Some(Config::load(&home))
    } else {
        None
    };

    if let (Some(existing), false) = (&existing, args.force) {
        let existing = existing.as_ref().map_err(|e| anyhow!("{e:#}"))?;
        if interactive {
            println!(
                "Already initialised: {} (pass --force to start over).",
                home.config_path().display()
            );
            return Ok(());
        }
        let wanted = gather(&args, Some(existing), false)?;
        if let Some(key) = first_difference(existing, &wanted) {
            bail!(
                "{} already exists and its {key} differs from what you asked for; pass --force to overwrite it",
                home.config_path().display()
            );
        }
        let store = SecretStore::open(existing.secret_store, &existing.project, &home)?;
        store_secrets(&store, interactive)?;
        println!(
            "Already initialised: {} (unchanged); secrets in {}.",
            home.config_path().display(),
            store.describe()
        );
        return Ok(());
    }

    let previous = existing.and_then(Result::ok);
    let mut config = gather(&args, previous.as_ref(), interactive)?;
    home.ensure()?;
    let (store, warnings) = SecretStore::choose(args.secret_store, &config.project, &home)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    store_secrets(&store, interactive)?;
    config.secret_store = store.kind();
    config.save(&home)?;
    println!("Wrote {}", home.config_path().display());
    println!("Secrets stored in {} ({}).", store.describe(), store.kind());
    println!("Next: `preview setup` creates the server, configures it and adds the webhooks.");
    Ok(())
}

/// Asks for or reads both tokens, and generates the webhook secret and API token once.
fn store_secrets(store: &SecretStore, interactive: bool) -> Result<()> {
    for (name, vars, hint) in [
        (
            SecretName::DoToken,
            DO_TOKEN_VARS,
            "DigitalOcean API token (read and write)",
        ),
        (
            SecretName::GithubToken,
            GITHUB_TOKEN_VARS,
            "GitHub token (repo hooks, pull requests, deployments)",
        ),
    ] {
        let from_env = vars
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
        let value = match from_env {
            Some(value) => value,
            None if store.get(name)?.is_some() => continue,
            None if interactive => dialoguer::Password::new()
                .with_prompt(hint)
                .validate_with(|s: &String| validate_token(s))
                .interact()
                .context("reading the token")?,
            None => bail!(
                "the {} is missing: set {} (secrets are never taken from flags)",
                name.human(),
                vars.join(" or ")
            ),
        };
        validate_token(&value).map_err(|r| anyhow!("{}: {r}", name.human()))?;
        store.set(name, value.trim())?;
    }
    for name in [SecretName::WebhookSecret, SecretName::ApiToken] {
        if store.get(name)?.is_none() {
            store.set(name, &generate_secret())?;
        }
    }
    Ok(())
}

fn validate_token(token: &str) -> std::result::Result<(), String> {
    let token = token.trim();
    if token.len() < 8 {
        return Err("is too short to be a token".to_owned());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace".to_owned());
    }
    Ok(())
}

/// Builds the config from flags, environment, the previous config and defaults, prompting for
/// what is missing when `interactive`.
fn gather(args: &InitArgs, previous: Option<&Config>, interactive: bool) -> Result<Config> {
    let prompt = Prompter { interactive };
    let project = prompt.text(
        "Project name",
        args.project.clone(),
        previous
            .map(|c| c.project.clone())
            .or(Some(config::DEFAULT_PROJECT.to_owned())),
        "--project",
        config::validate_project,
    )?;
    let region = prompt.text(
        "DigitalOcean region",
        args.region.clone(),
        previous
            .map(|c| c.digitalocean.region.clone())
            .or(Some(config::DEFAULT_REGION.to_owned())),
        "--region",
        config::validate_region,
    )?;
    let droplet_size = prompt.text(
        "Droplet size",
        args.droplet_size.clone(),
        previous
            .map(|c| c.digitalocean.droplet_size.clone())
            .or(Some(config::DEFAULT_DROPLET_SIZE.to_owned())),
        "--droplet-size",
        config::validate_droplet_size,
    )?;
    let repositories = prompt.repos(&args.repos, previous)?;
    let ttl_days = prompt.number(
        "Preview time-to-live in days",
        args.ttl_days,
        previous
            .map(|c| c.previews.ttl_days)
            .unwrap_or(config::DEFAULT_TTL_DAYS),
        "--ttl-days",
        config::validate_ttl,
    )?;
    let max_previews = prompt.number(
        "Live previews at most",
        args.max_previews,
        previous
            .map(|c| c.previews.max_previews)
            .unwrap_or(config::DEFAULT_MAX_PREVIEWS),
        "--max-previews",
        config::validate_max_previews,
    )?;
    let tls = prompt.tls(args, previous)?;
    let ssh_key = prompt.text(
        "SSH private key",
        args.ssh_key
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        previous
            .map(|c| c.ssh.private_key.to_string_lossy().into_owned())
            .or_else(default_ssh_key),
        "--ssh-key",
        |s: &str| config::validate_ssh_key(&absolute(s)),
    )?;
    let infra_dir = match &args.infra_dir {
        Some(dir) => absolute(&dir.to_string_lossy()),
        None => match previous
            .map(|c| c.infra_dir.clone())
            .or_else(find_infra_dir)
        {
            Some(dir) => dir,
            None => bail!(
                "cannot find a preview-deployer checkout (terraform/ and ansible/) from the current directory; pass --infra-dir"
            ),
        },
    };
    let admin_cidrs = if !args.admin_cidrs.is_empty() {
        args.admin_cidrs.clone()
    } else {
        previous
            .map(|c| c.digitalocean.admin_cidrs.clone())
            .unwrap_or_else(|| vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()])
    };
    let config = Config {
        version: config::CONFIG_VERSION,
        project,
        infra_dir,
        secret_store: previous
            .map(|c| c.secret_store)
            .unwrap_or(super::secrets::StoreKind::File),
        digitalocean: DigitalOcean {
            region,
            droplet_size,
            admin_cidrs,
            dns_zone: args
                .dns_zone
                .clone()
                .or_else(|| previous.and_then(|c| c.digitalocean.dns_zone.clone())),
            worker_count: args
                .workers
                .or_else(|| previous.map(|c| c.digitalocean.worker_count))
                .unwrap_or(0),
        },
        github: GitHub {
            repositories,
            api_url: args
                .github_api_url
                .clone()
                .or_else(|| previous.and_then(|c| c.github.api_url.clone())),
        },
        previews: Previews {
            ttl_days,
            max_previews,
            deploy_policy: args
                .deploy_policy
                .or_else(|| previous.map(|c| c.previews.deploy_policy))
                .unwrap_or_default(),
        },
        tls,
        ssh: Ssh {
            private_key: absolute(&ssh_key),
        },
    };
    config.validate()?;
    Ok(config)
}

/// Flag names for the keys of [`first_difference`].
fn first_difference(a: &Config, b: &Config) -> Option<&'static str> {
    let checks: [(&'static str, bool); 10] = [
        ("project", a.project == b.project),
        ("infra_dir", a.infra_dir == b.infra_dir),
        ("digitalocean", a.digitalocean == b.digitalocean),
        (
            "github.repositories",
            a.github.repositories == b.github.repositories,
        ),
        ("github.api_url", a.github.api_url == b.github.api_url),
        (
            "previews.ttl_days",
            a.previews.ttl_days == b.previews.ttl_days,
        ),
        (
            "previews.max_previews",
            a.previews.max_previews == b.previews.max_previews,
        ),
        (
            "previews.deploy_policy",
            a.previews.deploy_policy == b.previews.deploy_policy,
        ),
        ("tls", a.tls == b.tls),
        ("ssh.private_key", a.ssh == b.ssh),
    ];
    checks.into_iter().find(|(_, same)| !same).map(|(k, _)| k)
}

struct Prompter {
    interactive: bool,
}

impl Prompter {
    fn text(
        &self,
        label: &str,
        given: Option<String>,
        default: Option<String>,
        flag: &str,
        check: impl Fn(&str) -> std::result::Result<(), String>,
    ) -> Result<String> {
        if let Some(value) = given {
            let value = value.trim().to_owned();
            check(&value).map_err(|r| anyhow!("{flag}: {r}"))?;
            return Ok(value);
        }
        if !self.interactive {
            return match default {
                Some(value) => {
                    check(&value).map_err(|r| anyhow!("{flag} (default): {r}"))?;
                    Ok(value)
                }
                None => bail!("{flag} is required with --non-interactive"),
            };
        }
        let mut input = dialoguer::Input::<String>::new()
            .with_prompt(label)
            .validate_with(|s: &String| check(s.trim()));
        if let Some(default) = default {
            input = input.default(default);
        }
        Ok(input.interact_text()?.trim().to_owned())
    }

    fn number(
        &self,
        label: &str,
        given: Option<u32>,
        default: u32,
        flag: &str,
        check: fn(u32) -> std::result::Result<(), String>,
    ) -> Result<u32> {
        if let Some(value) = given {
            check(value).map_err(|r| anyhow!("{flag}: {r}"))?;
            return Ok(value);
        }
        if !self.interactive {
            return Ok(default);
        }
        Ok(dialoguer::Input::<u32>::new()
            .with_prompt(label)
            .default(default)
            .validate_with(|n: &u32| check(*n))
            .interact_text()?)
    }

    fn repos(&self, given: &[String], previous: Option<&Config>) -> Result<Vec<String>> {
        if !given.is_empty() {
            let repos: Vec<String> = given.iter().map(|r| r.trim().to_owned()).collect();
            for repo in &repos {
                config::validate_repo(repo).map_err(|r| anyhow!("--repo: {r}"))?;
            }
            return Ok(dedup(repos));
        }
        let previous = previous
            .map(|c| c.github.repositories.clone())
            .unwrap_or_default();
        if !self.interactive {
            if previous.is_empty() {
                bail!("--repo is required with --non-interactive (owner/name, repeatable)");
            }
            return Ok(previous);
        }
        let mut repos = Vec::new();
        if !previous.is_empty()
            && dialoguer::Confirm::new()
                .with_prompt(format!("Keep the repositories {}?", previous.join(", ")))
                .default(true)
                .interact()?
        {
            repos = previous;
        }
        loop {
            let prompt = if repos.is_empty() {
                "Repository (owner/name)"
            } else {
                "Another repository (empty to finish)"
            };
            let allow_empty = !repos.is_empty();
            let repo: String = dialoguer::Input::new()
                .with_prompt(prompt)
                .allow_empty(allow_empty)
                .validate_with(|s: &String| {
                    if s.trim().is_empty() && allow_empty {
                        Ok(())
                    } else {
                        config::validate_repo(s.trim())
                    }
                })
                .interact_text()?;
            let repo = repo.trim().to_owned();
            if repo.is_empty() {
                break;
            }
            repos.push(repo);
        }
        Ok(dedup(repos))
    }

    fn tls(&self, args: &InitArgs, previous: Option<&Config>) -> Result<Option<Tls>> {
        let previous = previous.and_then(|c| c.tls.clone());
        let domain = match (&args.domain, self.interactive) {
            (Some(d), _) => Some(d.trim().to_owned()).filter(|d| !d.is_empty()),
            (None, false) => previous.as_ref().map(|t| t.domain.clone()),
            (None, true) => {
                let mut input = dialoguer::Input::<String>::new()
                    .with_prompt("Domain for TLS (empty for plain HTTP on the IP)")
                    .allow_empty(true)
                    .validate_with(|s: &String| {
                        if s.trim().is_empty() {
                            Ok(())
                        } else {
                            config::validate_domain(s.trim())
                        }
                    });
                if let Some(t) = &previous {
                    input = input.default(t.domain.clone());
                }
                Some(input.interact_text()?.trim().to_owned()).filter(|d| !d.is_empty())
            }
        };
        let Some(domain) = domain else {
            if args.email.is_some() {
                bail!("--email needs --domain: the e-mail is for the TLS certificate");
            }
            return Ok(None);
        };
        config::validate_domain(&domain).map_err(|r| anyhow!("--domain: {r}"))?;
        let email = self.text(
            "E-mail for the TLS certificate",
            args.email.clone(),
            previous.map(|t| t.email),
            "--email",
            config::validate_email,
        )?;
        Ok(Some(Tls { domain, email }))
    }
}

fn dedup(repos: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    repos
        .into_iter()
        .filter(|r| seen.insert(r.to_ascii_lowercase()))
        .collect()
}

/// `~/x` and relative paths made absolute.
fn absolute(path: &str) -> PathBuf {
    let expanded = match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&expanded))
            .unwrap_or(expanded)
    }
}

fn default_ssh_key() -> Option<String> {
    let home = std::env::var_os("HOME")?;
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| PathBuf::from(&home).join(".ssh").join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// The nearest directory at or above the current one with `terraform/` and `ansible/`, else
/// the checkout this binary was built from.
fn find_infra_dir() -> Option<PathBuf> {
    let is_infra = |d: &Path| d.join("terraform").is_dir() && d.join("ansible").is_dir();
    if let Ok(cwd) = std::env::current_dir()
        && let Some(found) = cwd.ancestors().find(|d| is_infra(d))
    {
        return Some(found.to_owned());
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    built_from.canonicalize().ok().filter(|d| is_infra(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_without_echoing_them() {
        assert!(validate_token("dop_v1_abcdef").is_ok());
        assert!(validate_token("short").is_err());
        let err = validate_token("has space in it").unwrap_err();
        assert!(!err.contains("space in"), "{err}");
    }

    #[test]
    fn repos_are_deduplicated_case_insensitively() {
        assert_eq!(
            dedup(vec![
                "acme/api".into(),
                "Acme/API".into(),
                "acme/web".into()
            ]),
            ["acme/api", "acme/web"]
        );
    }
}
