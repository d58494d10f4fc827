//! Settings: command-line flags, environment variables (the TypeScript predecessor's names), and
//! an optional TOML file (`--config`). A flag beats the environment, which beats the file, which
//! beats the built-in default. TOML keys are the long flag names with `_` for `-`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use preview_core::id::{RepoFullName, validate_owner};
use preview_core::ports::{PortPools, PortRange};
use preview_core::routing::Routing;

use crate::telemetry::LogFormat;
use crate::{Error, Result};

/// One `ALLOWED_REPOS` entry: `owner/name` or `owner/*`, case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPattern {
    /// One repository.
    Exact(RepoFullName),
    /// Every repository of an owner (lowercased).
    Owner(String),
}

impl RepoPattern {
    /// Whether `repo` matches.
    pub fn matches(&self, repo: &RepoFullName) -> bool {
        match self {
            RepoPattern::Exact(r) => r == repo,
            RepoPattern::Owner(o) => repo.owner().eq_ignore_ascii_case(o),
        }
    }
}

impl FromStr for RepoPattern {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        match s.split_once('/') {
            Some((owner, "*")) => validate_owner(owner)
                .map(|()| RepoPattern::Owner(owner.to_ascii_lowercase()))
                .map_err(|e| format!("{s:?}: {e}")),
            _ => RepoFullName::parse(s)
                .map(RepoPattern::Exact)
                .map_err(|e| format!("{s:?}: {e} (expected owner/name or owner/*)")),
        }
    }
}

impl std::fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoPattern::Exact(r) => write!(f, "{r}"),
            RepoPattern::Owner(o) => write!(f, "{o}/*"),
        }
    }
}

/// What a new PR does when every preview slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CapPolicy {
    /// Wait for a slot; PRs deploy in arrival order as previews are torn down.
    Queue,
    /// Tear down the least recently updated live preview, then deploy.
    EvictOldest,
}

/// What runs previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Docker Compose on this host (one droplet).
    Compose,
    /// Docker Swarm: previews spread over the swarm's nodes.
    Swarm,
}

/// Which pull requests deploy without a maintainer's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeployPolicy {
    /// PRs whose author is the repository's owner, a member of its organisation or a
    /// collaborator; anyone else's PR waits for approval.
    Collaborators,
    /// Every PR, as before (outside PRs still get no secrets unless approved).
    Everyone,
}

/// Where previews' databases live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatabaseMode {
    /// A database server per preview, in its compose project (as before).
    Dedicated,
    /// One Postgres and one MySQL server per engine, started on demand; each preview gets its
    /// own database and role there.
    Shared,
}

/// The orchestrator's settings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "preview-orchestrator",
    version,
    about = "Receives GitHub webhooks and deploys a preview per pull request.",
    after_help = "Every setting can also be given in a TOML file (--config); its keys are the long \
                  option names with '_' for '-'. Precedence: flag, environment, file, default."
)]
pub struct Config {
    /// TOML file with settings.
    #[arg(long, env = "ORCHESTRATOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// GitHub token for comments, deployments and statuses.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: String,

    /// Secret that signs webhook deliveries (X-Hub-Signature-256).
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: String,

    /// GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// Repositories to deploy, comma-separated: owner/name or owner/* (case-insensitive).
    #[arg(long, env = "ALLOWED_REPOS", value_delimiter = ',', required = true, num_args = 1..)]
    pub allowed_repos: Vec<RepoPattern>,

    /// Public base URL of previews; a preview lives at {base}/{slug}/pr-{N}/ (without
    /// PREVIEW_DOMAIN), and the webhook at {base}/webhook.
    #[arg(long, env = "PREVIEW_BASE_URL")]
    pub preview_base_url: String,

    /// Serve each preview at the root of its own hostname, {slug}-pr-{N}.{domain}, instead of
    /// under a path (needs a wildcard DNS record *.{domain}); over HTTPS once the wildcard
    /// certificate is in TLS_DIR (issued by the orchestrator when DIGITALOCEAN_TOKEN is set).
    #[arg(long, env = "PREVIEW_DOMAIN")]
    pub preview_domain: Option<String>,

    /// nginx listen addresses of each preview's server block with PREVIEW_DOMAIN, comma-separated.
    #[arg(
        long,
        env = "NGINX_LISTEN",
        value_delimiter = ',',
        default_value = "80"
    )]
    pub nginx_listen: Vec<String>,

    /// nginx listen addresses for HTTPS with PREVIEW_DOMAIN, comma-separated (`ssl` is added).
    #[arg(
        long,
        env = "NGINX_TLS_LISTEN",
        value_delimiter = ',',
        default_value = "443,[::]:443"
    )]
    pub nginx_tls_listen: Vec<String>,

    /// Directory of the wildcard certificate: fullchain.pem and privkey.pem (0600).
    #[arg(long, env = "TLS_DIR", default_value = "/opt/preview-deployer/tls")]
    pub tls_dir: PathBuf,

    /// DigitalOcean API token (domain records write): with PREVIEW_DOMAIN, the orchestrator
    /// issues and renews the wildcard certificate over ACME DNS-01.
    #[arg(long, env = "DIGITALOCEAN_TOKEN", hide_env_values = true)]
    pub digitalocean_token: Option<String>,

    /// The domain as added at DigitalOcean (e.g. example.com) [default: PREVIEW_DOMAIN].
    #[arg(long, env = "DIGITALOCEAN_DNS_ZONE")]
    pub digitalocean_dns_zone: Option<String>,

    /// DigitalOcean's API base URL (a fake in tests).
    #[arg(
        long,
        env = "DIGITALOCEAN_API_URL",
        default_value = "https://api.digitalocean.com"
    )]
    pub digitalocean_api_url: String,

    /// ACME directory of the certificate authority.
    #[arg(
        long,
        env = "ACME_DIRECTORY_URL",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory_url: String,

    /// Contact address for the ACME account (expiry notices).
    #[arg(long, env = "ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// Bearer token for the internal API (/api/...), at least 16 characters.
    #[arg(long, env = "ORCHESTRATOR_API_TOKEN", hide_env_values = true)]
    pub api_token: String,

    /// Serve the dashboard at the root of this hostname too (e.g. dashboard.{PREVIEW_DOMAIN}):
    /// the orchestrator keeps its nginx server block in NGINX_CONFIG_DIR, over HTTPS once the
    /// wildcard certificate exists. It is always at /dashboard on the listener.
    #[arg(long, env = "DASHBOARD_HOST", value_name = "HOSTNAME")]
    pub dashboard_host: Option<String>,

    /// Address to listen on [default: 127.0.0.1:3000, or 127.0.0.1:$ORCHESTRATOR_PORT].
    #[arg(long, env = "ORCHESTRATOR_BIND")]
    pub bind: Option<SocketAddr>,

    /// Port on 127.0.0.1 to listen on, when --bind is not given (the predecessor's setting).
    #[arg(long, env = "ORCHESTRATOR_PORT")]
    pub port: Option<u16>,

    /// Directory holding one work dir per preview.
    #[arg(
        long,
        env = "DEPLOYMENTS_DIR",
        default_value = "/opt/preview-deployments"
    )]
    pub deployments_dir: PathBuf,

    /// Directory for the previews' nginx location files.
    #[arg(
        long,
        env = "NGINX_CONFIG_DIR",
        default_value = "/etc/nginx/preview-configs"
    )]
    pub nginx_config_dir: PathBuf,

    /// The deployment store (JSON).
    #[arg(
        long,
        env = "DEPLOYMENTS_DB",
        default_value = "/opt/preview-deployer/deployments.json"
    )]
    pub deployments_db: PathBuf,

    /// Directory of the per-repository preview secrets (`preview secrets set`): one 0600 file
    /// per repository, the dir 0700; outside DEPLOYMENTS_DIR [default: `secrets` beside
    /// DEPLOYMENTS_DB].
    #[arg(long, env = "SECRETS_DIR", value_name = "PATH")]
    pub secrets_dir: Option<PathBuf>,

    /// Directory for log files (rotated daily).
    #[arg(long, env = "LOGS_DIR", default_value = "/opt/preview-deployer/logs")]
    pub logs_dir: PathBuf,

    /// Log filter: error, warn, info, debug, trace, or env-filter directives.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Daily log files to keep.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = 14)]
    pub log_retention_days: usize,

    /// Days after its last update that a preview is torn down.
    #[arg(long, env = "CLEANUP_TTL_DAYS", default_value_t = 7)]
    pub cleanup_ttl_days: u32,

    /// Minutes without a request after which a preview sleeps: its containers stop (volumes,
    /// images and port kept) until the next request through nginx wakes it. 0 turns sleeping
    /// off.
    #[arg(long, env = "IDLE_SLEEP_MINUTES", default_value_t = 30)]
    pub idle_sleep_minutes: u64,

    /// The same in seconds, taking precedence over IDLE_SLEEP_MINUTES when given (tests,
    /// demos); 0 turns sleeping off.
    #[arg(long, env = "IDLE_SLEEP_SECS")]
    pub idle_sleep_secs: Option<u64>,

    /// Most previews live at once (deploying, serving, asleep or being torn down); at least 1.
    /// What happens to a new PR beyond it is --cap-policy. Memory is the tighter bound while
    /// most previews sleep (MEMORY_RESERVE_MB).
    #[arg(long, env = "MAX_CONCURRENT_PREVIEWS", default_value_t = 50)]
    pub max_concurrent_previews: usize,

    /// When MAX_CONCURRENT_PREVIEWS previews are live, a new PR waits in a queue (its comment
    /// gives its place and the oldest previews to close) or evicts the least recently updated
    /// preview.
    #[arg(long, env = "CAP_POLICY", value_enum, default_value = "queue")]
    pub cap_policy: CapPolicy,

    /// Most builds running at once.
    #[arg(long, env = "MAX_CONCURRENT_BUILDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_concurrent_builds: u32,

    /// Which PRs deploy on their own. `collaborators`: those whose author is the repository's
    /// owner, an organisation member or a collaborator (`author_association`); any other PR, such
    /// as one from a stranger's fork, waits until someone with write permission comments
    /// `/preview` on it or adds the `preview` label, and each new commit waits again.
    /// `everyone`: every PR deploys at once.
    #[arg(
        long,
        env = "DEPLOY_POLICY",
        value_enum,
        default_value = "collaborators"
    )]
    pub deploy_policy: DeployPolicy,

    /// Skip draft PRs until they are marked ready for review.
    #[arg(long, env = "SKIP_DRAFTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub skip_drafts: bool,

    /// Host ports for apps, START-END.
    #[arg(long, env = "APP_PORT_RANGE", default_value = "8000-8999")]
    pub app_port_range: PortRange,

    /// Host ports for databases, START-END; disjoint from the app ports.
    #[arg(long, env = "DB_PORT_RANGE", default_value = "9000-9999")]
    pub db_port_range: PortRange,

    /// Where a preview's Postgres or MySQL database lives. `dedicated`: a server per preview, in
    /// its compose project. `shared`: one server per engine (compose project
    /// SHARED_DATABASE_PROJECT), started on demand; each preview gets its own database and role
    /// with a random password, reached over a network of its own, and its teardown drops both.
    /// A repo's `database.seed` is cloned from a template database on Postgres. MongoDB, and
    /// apps with their own docker-compose.preview.yml, keep a dedicated server.
    #[arg(long, env = "DATABASE_MODE", value_enum, default_value = "dedicated")]
    pub database_mode: DatabaseMode,

    /// Compose project name of the shared database servers (DATABASE_MODE=shared); their
    /// containers are `{project}-postgres` and `{project}-mysql`.
    #[arg(
        long,
        env = "SHARED_DATABASE_PROJECT",
        default_value = "preview-shared-db"
    )]
    pub shared_database_project: String,

    /// Directory of the shared servers' compose file and superuser passwords (0700; the
    /// passwords 0600) [default: `shared-databases` beside DEPLOYMENTS_DB].
    #[arg(long, env = "SHARED_DATABASE_DIR", value_name = "PATH")]
    pub shared_database_dir: Option<PathBuf>,

    /// Memory limit of each shared database server (compose mem_limit).
    #[arg(long, env = "SHARED_DATABASE_MEMORY_LIMIT", default_value = "1g")]
    pub shared_database_memory_limit: String,

    /// IPv4 range (a /8 to a /24) the shared database servers' network and each preview's
    /// database network take a /28 from, so that they never use Docker's default address pools.
    #[arg(long, env = "SHARED_DATABASE_SUBNET", default_value = "10.213.0.0/16")]
    pub shared_database_subnet: preview_core::render::shared_databases::SubnetRange,

    /// Seconds running jobs get to reach a safe point on SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Delivery ids remembered for deduplication.
    #[arg(long, env = "WEBHOOK_DEDUP_CAPACITY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_dedup_capacity: u32,

    /// Command that checks nginx's config, as words split on spaces; empty when the reload
    /// command checks it itself (as the Ansible-installed preview-nginx-reload does).
    #[arg(long, env = "NGINX_TEST_COMMAND", default_value = "nginx -t")]
    pub nginx_test_command: String,

    /// Command that reloads nginx, as words split on spaces.
    #[arg(long, env = "NGINX_RELOAD_COMMAND", default_value = "nginx -s reload")]
    pub nginx_reload_command: String,

    /// The group nginx's worker processes run as (`user` in nginx.conf): the htpasswd files of
    /// `preview access` are made readable to it (0640), in a setgid directory of that group.
    #[arg(long, env = "NGINX_WORKER_GROUP", default_value = "www-data")]
    pub nginx_worker_group: String,

    /// Who may see each repository's previews, as set by `preview access` (JSON, 0600)
    /// [default: access.json beside DEPLOYMENTS_DB].
    #[arg(long, env = "ACCESS_DB", value_name = "PATH")]
    pub access_db: Option<PathBuf>,

    /// Seconds a preview gets to answer its health path.
    #[arg(long, env = "HEALTH_TIMEOUT_SECS", default_value_t = 60)]
    pub health_timeout_secs: u64,

    /// Longest interval between health polls, in seconds (the first polls come much sooner).
    #[arg(long, env = "HEALTH_INTERVAL_SECS", default_value_t = 5)]
    pub health_interval_secs: u64,

    /// Seconds one git command (init, fetch, checkout) may take before it is killed and the
    /// deploy fails in the fetch phase.
    #[arg(long, env = "GIT_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub git_timeout_secs: u64,

    /// Seconds `docker compose up --build` (the image build and the containers' start) may take
    /// before it is killed and the deploy fails in the build phase.
    #[arg(long, env = "BUILD_TIMEOUT_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub build_timeout_secs: u64,

    /// Where repositories are cloned from: {GIT_BASE_URL}/{owner}/{name}.git.
    #[arg(long, env = "GIT_BASE_URL", default_value = "https://github.com")]
    pub git_base_url: String,

    /// Memory limit of every preview container (compose mem_limit).
    #[arg(long, env = "PREVIEW_MEMORY_LIMIT", default_value = "512m")]
    pub preview_memory_limit: String,

    /// Memory kept free, in MB: before a deploy starts a preview, its containers' memory limits
    /// plus this must fit in MemAvailable. If they do not, the least recently used idle previews
    /// are put to sleep; if it still does not fit, the deploy waits (its comment says for what)
    /// until a preview sleeps or is closed.
    #[arg(long, env = "MEMORY_RESERVE_MB", default_value_t = 256)]
    pub memory_reserve_mb: u64,

    /// Where MemTotal and MemAvailable are read.
    #[arg(long, env = "MEMINFO_PATH", default_value = "/proc/meminfo")]
    pub meminfo_path: PathBuf,

    /// Free disk, in GB, below which a new build first prunes what no preview uses (untagged
    /// images of no preview's build, stopped build containers, BuildKit's cache) and then waits,
    /// saying so on the PR, until space frees. 0 turns the guard off.
    #[arg(long, env = "MIN_FREE_DISK_GB", default_value_t = 5.0)]
    pub min_free_disk_gb: f64,

    /// The filesystem the disk guard watches, by a path on it [default: Docker's root dir, as
    /// `docker info` gives it; DEPLOYMENTS_DIR when Docker does not say].
    #[arg(long, env = "DISK_GUARD_PATH", value_name = "PATH")]
    pub disk_guard_path: Option<PathBuf>,

    /// Seconds between checks of a deploy that waits for disk or memory (a teardown or a sleep
    /// also wakes it at once).
    #[arg(long, env = "ROOM_RETRY_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub room_retry_secs: u64,

    /// CPU limit of every preview container (compose cpus).
    #[arg(long, env = "PREVIEW_CPU_LIMIT", default_value = "0.5")]
    pub preview_cpu_limit: String,

    /// Post and edit the sticky PR comment.
    #[arg(long, env = "GITHUB_COMMENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub github_comments: bool,

    /// Create GitHub deployments with statuses.
    #[arg(long, env = "GITHUB_DEPLOYMENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub github_deployments: bool,

    /// Set a commit status on the PR's head.
    #[arg(long, env = "GITHUB_COMMIT_STATUSES", default_value_t = true, action = clap::ArgAction::Set)]
    pub github_commit_statuses: bool,

    /// The docker binary (for the health check and the runtime).
    #[arg(long, env = "DOCKER_BIN", default_value = "docker")]
    pub docker_bin: PathBuf,

    /// What runs previews: `compose` on this host, or `swarm` across the nodes of the Docker
    /// Swarm this host manages (images go through SWARM_REGISTRY).
    #[arg(long, env = "ENGINE", value_enum, default_value = "compose")]
    pub engine: EngineKind,

    /// With ENGINE=swarm: the private registry every node pulls preview images from, as
    /// host:port (the manager's VPC address, e.g. 10.10.0.2:5000).
    #[arg(long, env = "SWARM_REGISTRY")]
    pub swarm_registry: Option<String>,

    /// With ENGINE=swarm: the same registry as this host pushes to, when it reaches it by
    /// another address (e.g. 127.0.0.1:5000); SWARM_REGISTRY when unset.
    #[arg(long, env = "SWARM_PUSH_REGISTRY")]
    pub swarm_push_registry: Option<String>,

    /// Async worker threads. One is plenty: requests are short, builds run in child processes
    /// and the store has its own writer thread; more threads mostly add hand-offs.
    #[arg(long, env = "ORCHESTRATOR_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,

    /// BENCHMARK MODE: run jobs that touch nothing but the store (no Docker, git, nginx or
    /// GitHub). Never use in production.
    #[arg(long, env = "PREVIEW_BENCH_DRY_RUN_JOBS", hide = true, default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run_jobs: bool,
}

impl Config {
    /// The address to listen on.
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, self.port.unwrap_or(3000))))
    }

    /// Where the per-repository preview secrets live: SECRETS_DIR, or `secrets` beside the
    /// deployments db.
    pub fn secrets_dir(&self) -> PathBuf {
        self.secrets_dir.clone().unwrap_or_else(|| {
            self.deployments_db
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("secrets")
        })
    }

    /// Where the shared database servers' files live: SHARED_DATABASE_DIR, or
    /// `shared-databases` beside the deployments db.
    pub fn shared_database_dir(&self) -> PathBuf {
        self.shared_database_dir.clone().unwrap_or_else(|| {
            self.deployments_db
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("shared-databases")
        })
    }

    /// The shared database servers' project, as rendered.
    pub fn shared_servers(&self) -> preview_core::render::shared_databases::SharedServers {
        preview_core::render::shared_databases::SharedServers {
            project: self.shared_database_project.clone(),
            limits: preview_core::render::Limits {
                memory: self.shared_database_memory_limit.clone(),
                cpus: "1".to_owned(),
                pids: 512,
            },
            subnets: self.shared_database_subnet,
        }
    }

    /// The port pools.
    pub fn port_pools(&self) -> Result<PortPools> {
        PortPools::new(self.app_port_range, self.db_port_range).map_err(|e| Error::Config {
            setting: "APP_PORT_RANGE/DB_PORT_RANGE",
            reason: e.to_string(),
        })
    }

    /// Where the access settings are kept: ACCESS_DB, or `access.json` beside DEPLOYMENTS_DB.
    pub fn access_db_path(&self) -> PathBuf {
        self.access_db.clone().unwrap_or_else(|| {
            self.deployments_db
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("access.json")
        })
    }

    /// How long a preview may go without a request before it sleeps; `None` when sleeping is
    /// off.
    pub fn idle_sleep(&self) -> Option<Duration> {
        let secs = self
            .idle_sleep_secs
            .unwrap_or(self.idle_sleep_minutes.saturating_mul(60));
        (secs > 0).then(|| Duration::from_secs(secs))
    }

    /// Free bytes below which new builds wait; `None` when the guard is off.
    pub fn min_free_disk_bytes(&self) -> Option<u64> {
        (self.min_free_disk_gb > 0.0)
            .then_some((self.min_free_disk_gb * (1u64 << 30) as f64) as u64)
    }

    /// How long jobs get on SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Whether `repo` is allowed.
    pub fn is_allowed(&self, repo: &RepoFullName) -> bool {
        self.allowed_repos.iter().any(|p| p.matches(repo))
    }

    /// Checks what clap cannot: URLs, token strength, pools.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, reason: &str| {
            Err(Error::Config {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.github_webhook_secret.is_empty() {
            return bad("GITHUB_WEBHOOK_SECRET", "must not be empty");
        }
        if let Some(host) = &self.dashboard_host
            && !valid_host(host)
        {
            return bad(
                "DASHBOARD_HOST",
                "must be a hostname: labels of letters, digits and '-', joined by '.'",
            );
        }
        if self.github_token.trim().is_empty() {
            return bad("GITHUB_TOKEN", "must not be empty");
        }
        if self.api_token.len() < 16 {
            return bad("ORCHESTRATOR_API_TOKEN", "must be at least 16 characters");
        }
        if self.allowed_repos.is_empty() {
            return bad(
                "ALLOWED_REPOS",
                "must name at least one owner/name or owner/*",
            );
        }
        if self.engine == EngineKind::Swarm {
            for (setting, registry) in [
                ("SWARM_REGISTRY", self.swarm_registry.as_deref()),
                ("SWARM_PUSH_REGISTRY", self.swarm_push_registry.as_deref()),
            ] {
                match registry {
                    Some(r) if !valid_registry(r) => {
                        return bad(setting, "must be host:port, e.g. 10.10.0.2:5000");
                    }
                    None if setting == "SWARM_REGISTRY" => {
                        return bad(setting, "is required with ENGINE=swarm");
                    }
                    _ => {}
                }
            }
            if self.database_mode == DatabaseMode::Shared {
                return bad(
                    "DATABASE_MODE",
                    "shared is not available with ENGINE=swarm (the shared servers' networks are on this host only); use dedicated",
                );
            }
        }
        if self.max_concurrent_previews == 0 {
            return bad("MAX_CONCURRENT_PREVIEWS", "must be at least 1");
        }
        if crate::capacity::parse_memory_limit(&self.preview_memory_limit).is_none() {
            return bad(
                "PREVIEW_MEMORY_LIMIT",
                "must be a size such as 512m or 1g (a number with b, k, m or g)",
            );
        }
        if !(self.min_free_disk_gb.is_finite() && self.min_free_disk_gb >= 0.0) {
            return bad("MIN_FREE_DISK_GB", "must be a number of GB, 0 or more");
        }
        if self.nginx_reload_command.trim().is_empty() {
            return bad("NGINX_RELOAD_COMMAND", "must not be empty");
        }
        if self
            .git_base_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
            || !["https://", "http://", "file://"]
                .iter()
                .any(|p| self.git_base_url.starts_with(p))
        {
            return bad("GIT_BASE_URL", "must be an http(s):// or file:// URL");
        }
        for (setting, url) in [
            ("PREVIEW_BASE_URL", &self.preview_base_url),
            ("GITHUB_API_URL", &self.github_api_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return bad(setting, "must be an http(s) URL");
            }
        }
        if let Some(domain) = &self.preview_domain
            && !preview_core::render::is_hostname(domain)
        {
            return bad(
                "PREVIEW_DOMAIN",
                "must be a lowercase DNS name such as preview.example.com",
            );
        }
        if self.nginx_listen.is_empty()
            || !self
                .nginx_listen
                .iter()
                .all(|l| preview_core::render::is_listen_address(l))
        {
            return bad(
                "NGINX_LISTEN",
                "must be listen addresses such as 80 or [::]:80, comma-separated",
            );
        }
        if !self
            .nginx_tls_listen
            .iter()
            .all(|l| preview_core::render::is_listen_address(l))
        {
            return bad(
                "NGINX_TLS_LISTEN",
                "must be listen addresses such as 443 or [::]:443, comma-separated",
            );
        }
        if self.nginx_config_dir.to_str().is_none_or(|d| {
            !d.starts_with('/')
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        }) {
            return bad(
                "NGINX_CONFIG_DIR",
                "must be an absolute path of [A-Za-z0-9._/-] (it is written into nginx includes)",
            );
        }
        if self.nginx_worker_group.is_empty()
            || !self
                .nginx_worker_group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return bad(
                "NGINX_WORKER_GROUP",
                "must be a group name such as www-data",
            );
        }
        if self.secrets_dir().starts_with(&self.deployments_dir) {
            return bad(
                "SECRETS_DIR",
                "must be outside DEPLOYMENTS_DIR: a preview's work dir must never hold a secret",
            );
        }
        if let Err(e) =
            preview_core::render::shared_databases::render_shared_databases(&self.shared_servers())
        {
            return bad(
                "SHARED_DATABASE_PROJECT/SHARED_DATABASE_MEMORY_LIMIT",
                &e.to_string(),
            );
        }
        if self
            .shared_database_dir()
            .starts_with(&self.deployments_dir)
        {
            return bad(
                "SHARED_DATABASE_DIR",
                "must be outside DEPLOYMENTS_DIR: it holds the servers' superuser passwords",
            );
        }
        self.port_pools()?;
        Ok(())
    }

    /// How previews are reached: by path under PREVIEW_BASE_URL, or by hostname under
    /// PREVIEW_DOMAIN.
    pub fn routing(&self) -> Routing {
        match &self.preview_domain {
            None => Routing::Path {
                base_url: self.preview_base_url.trim_end_matches('/').to_owned(),
            },
            // Plain HTTP until the wildcard certificate exists in TLS_DIR; Routing checks that
            // at each use.
            Some(domain) => Routing::Hostname {
                domain: domain.clone(),
                listen: self.nginx_listen.clone(),
                tls: Some(preview_core::render::HostTls {
                    listen: self.nginx_tls_listen.clone(),
                    certificate: self.tls_dir.join("fullchain.pem").display().to_string(),
                    key: self.tls_dir.join("privkey.pem").display().to_string(),
                }),
            },
        }
    }

    /// Parses `args` (program name first) with the process environment and the TOML file they
    /// or `ORCHESTRATOR_CONFIG` name. Errors are one line naming the setting.
    pub fn load(args: Vec<OsString>) -> std::result::Result<Config, ConfigError> {
        let mut cmd = Config::command();
        if let Some(path) = config_path(&args) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "invalid setting --config: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError::Invalid(format!(
                    "invalid setting --config: {}: {}",
                    path.display(),
                    e.message()
                ))
            })?;
            for (key, value) in table {
                let id = key.replace('-', "_");
                if id == "config" || !cmd.get_arguments().any(|a| a.get_id() == id.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "invalid setting --config: {}: unknown key `{key}`",
                        path.display()
                    )));
                }
                let text = toml_to_arg(&value).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "invalid setting --config: {}: key `{key}` must be a string, number, \
                         boolean or array of strings",
                        path.display()
                    ))
                })?;
                // The file's values become the defaults; flags and the environment still win.
                let text: &'static str = Box::leak(text.into_boxed_str());
                cmd = cmd.mut_arg(id, |a| a.default_value(text).required(false));
            }
        }
        let matches = cmd
            .try_get_matches_from(args)
            .map_err(ConfigError::from_clap)?;
        let config = Config::from_arg_matches(&matches).map_err(ConfigError::from_clap)?;
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }
}

fn toml_to_arg(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    })
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("ORCHESTRATOR_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Why settings could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version`: print this and exit 0.
    Display(String),
    /// A one-line message naming the setting.
    Invalid(String),
}

impl ConfigError {
    fn from_clap(e: clap::Error) -> Self {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                return ConfigError::Display(e.render().to_string());
            }
            ErrorKind::MissingRequiredArgument => {
                let names: Vec<String> = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::Strings(v)) => v.clone(),
                    Some(ContextValue::String(s)) => vec![s.clone()],
                    _ => Vec::new(),
                };
                let names: Vec<String> = names.iter().map(|n| with_env(n)).collect();
                return ConfigError::Invalid(format!("missing setting: {}", names.join(", ")));
            }
            _ => {}
        }
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => Some(with_env(s)),
            _ => None,
        };
        let first = e
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid settings")
            .trim_start_matches("error: ")
            .to_owned();
        ConfigError::Invalid(match arg {
            Some(arg) if !first.contains(&arg) => format!("invalid setting {arg}: {first}"),
            _ => first,
        })
    }
}

/// `--github-token <GITHUB_TOKEN>` → `--github-token (env GITHUB_TOKEN)`.
fn with_env(rendered: &str) -> String {
    let flag = rendered.split_whitespace().next().unwrap_or(rendered);
    let long = flag.trim_start_matches('-');
    let env = Config::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    match env {
        Some(env) => format!("{flag} (env {env})"),
        None => flag.to_owned(),
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Display(s) | ConfigError::Invalid(s) => f.write_str(s),
        }
    }
}

/// Valid hostnames only reach nginx's config: letters, digits, `-` and `.`.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A registry address as image references name it: `host:port`, the host a hostname or IPv4
/// address, the port 1 to 65535.
pub fn valid_registry(registry: &str) -> bool {
    registry
        .rsplit_once(':')
        .is_some_and(|(host, port)| valid_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0))
}
