//! The plan: what will be built and run for one checkout, with the reason for every decision.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A language family we build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Node,
    Python,
    Go,
    Php,
    Rust,
}

impl Language {
    /// Every language, in the order used to break ties between equally good candidates.
    pub const ALL: [Language; 5] = [
        Language::Node,
        Language::Python,
        Language::Go,
        Language::Php,
        Language::Rust,
    ];

    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Node => "node",
            Language::Python => "python",
            Language::Go => "go",
            Language::Php => "php",
            Language::Rust => "rust",
        }
    }

    /// The role of its build image in base-images.tsv.
    pub fn image_role(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A framework we recognise; `None` in a plan means a plain app of its language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Nestjs,
    Express,
    Fastify,
    Nextjs,
    Nuxt,
    Sveltekit,
    Astro,
    Remix,
    #[serde(rename = "react-router")]
    ReactRouter,
    Angular,
    Vite,
    Cra,
    /// A site of static files (an `index.html`), served as is.
    Static,
    Django,
    Fastapi,
    Flask,
    Laravel,
}

impl Framework {
    /// Every framework.
    pub const ALL: [Framework; 17] = [
        Framework::Nestjs,
        Framework::Express,
        Framework::Fastify,
        Framework::Nextjs,
        Framework::Nuxt,
        Framework::Sveltekit,
        Framework::Astro,
        Framework::Remix,
        Framework::ReactRouter,
        Framework::Angular,
        Framework::Vite,
        Framework::Cra,
        Framework::Static,
        Framework::Django,
        Framework::Fastapi,
        Framework::Flask,
        Framework::Laravel,
    ];

    /// Lowercase name, as in JSON and preview-config.yml.
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Nestjs => "nestjs",
            Framework::Express => "express",
            Framework::Fastify => "fastify",
            Framework::Nextjs => "nextjs",
            Framework::Nuxt => "nuxt",
            Framework::Sveltekit => "sveltekit",
            Framework::Astro => "astro",
            Framework::Remix => "remix",
            Framework::ReactRouter => "react-router",
            Framework::Angular => "angular",
            Framework::Vite => "vite",
            Framework::Cra => "cra",
            Framework::Static => "static",
            Framework::Django => "django",
            Framework::Fastapi => "fastapi",
            Framework::Flask => "flask",
            Framework::Laravel => "laravel",
        }
    }

    /// The language it is written in.
    pub fn language(self) -> Language {
        match self {
            Framework::Nestjs
            | Framework::Express
            | Framework::Fastify
            | Framework::Nextjs
            | Framework::Nuxt
            | Framework::Sveltekit
            | Framework::Astro
            | Framework::Remix
            | Framework::ReactRouter
            | Framework::Angular
            | Framework::Vite
            | Framework::Cra
            | Framework::Static => Language::Node,
            Framework::Django | Framework::Fastapi | Framework::Flask => Language::Python,
            Framework::Laravel => Language::Php,
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A package manager (or build tool) that installs the app's dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
    Pip,
    Poetry,
    Uv,
    Pipenv,
    Go,
    Composer,
    Cargo,
}

impl PackageManager {
    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::Yarn => "yarn",
            PackageManager::Bun => "bun",
            PackageManager::Pip => "pip",
            PackageManager::Poetry => "poetry",
            PackageManager::Uv => "uv",
            PackageManager::Pipenv => "pipenv",
            PackageManager::Go => "go",
            PackageManager::Composer => "composer",
            PackageManager::Cargo => "cargo",
        }
    }
}

impl fmt::Display for PackageManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The database a preview gets, reached through `DATABASE_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    Postgres,
    Mysql,
    Mongodb,
}

impl Database {
    /// Lowercase name, as in JSON and preview-config.yml.
    pub fn as_str(self) -> &'static str {
        match self {
            Database::Postgres => "postgres",
            Database::Mysql => "mysql",
            Database::Mongodb => "mongodb",
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service from the catalogue that runs beside the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraService {
    Redis,
}

impl ExtraService {
    /// The whole catalogue.
    pub const CATALOGUE: [ExtraService; 1] = [ExtraService::Redis];

    /// Lowercase name, as in JSON and preview-config.yml.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraService::Redis => "redis",
        }
    }
}

impl fmt::Display for ExtraService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which answers mean a preview is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyWhen {
    /// Any HTTP answer below 500: a 404 proves the server is up. The default, at `/`, because
    /// most apps have no health route.
    AnyAnswer,
    /// A 2xx or 3xx: for a `health_check_path` the repo configured.
    Success,
}

impl ReadyWhen {
    /// What it accepts, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ReadyWhen::AnyAnswer => "any HTTP answer below 500",
            ReadyWhen::Success => "a 2xx or 3xx",
        }
    }

    /// True when `status` means ready.
    pub fn accepts(self, status: u16) -> bool {
        match self {
            ReadyWhen::AnyAnswer => status < 500,
            ReadyWhen::Success => (200..400).contains(&status),
        }
    }
}

/// Where the app's image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerfileSource {
    /// The repo's own Dockerfile (or the `dockerfile` key, or its compose file's build).
    Repo,
    /// One we render from a template.
    Generated,
}

/// How the generated Dockerfile builds and starts the app; one variant per language, with what
/// detection found. Serialised in the plan so its JSON shows everything the render uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Recipe {
    Node(NodeRecipe),
    Python(PythonRecipe),
    Go(GoRecipe),
    Php(PhpRecipe),
    Rust(RustRecipe),
}

/// Node: what to copy first for the dependency layer, and how to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecipe {
    /// Files copied before the sources (package.json and the lockfile, when present).
    pub manifests: Vec<String>,
    /// Installs all dependencies (dev included) for the build stage.
    pub install: String,
    /// Installs production dependencies only, when there is no build step.
    pub install_production: String,
    /// Removes dev dependencies after the build.
    pub prune: Option<String>,
    /// A command run before installing, e.g. to get pnpm.
    pub setup: Option<String>,
    /// Installs what the start command needs beside Node (Bun) into the final image, when the
    /// build stage's setup does not reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_setup: Option<String>,
    /// Dev dependencies stay in the image, because the start command runs one (tsx, ts-node,
    /// vite preview).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_dev_dependencies: bool,
    /// A static site: the directory, relative to the app, that the built-in static server
    /// serves. Only it goes into the final image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_root: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// Python: the requirement source and how to install it into `/opt/venv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonRecipe {
    /// Files copied before the sources.
    pub manifests: Vec<String>,
    /// Commands that install the dependencies into the virtualenv (PATH has /opt/venv/bin).
    pub install: Vec<String>,
    /// Commands run after the sources are copied (e.g. `pip install .` for a project).
    pub install_project: Vec<String>,
}

/// Go: the package to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoRecipe {
    /// The main package, e.g. `.` or `./cmd/api`.
    pub package: String,
    /// Whether go.sum exists (copied with go.mod for the dependency layer).
    pub has_go_sum: bool,
    /// Whether go.mod requires any module (then `go mod download` gets its own layer).
    pub has_requires: bool,
    /// Whether the app has a go.mod; without one the build creates a module for it.
    pub has_go_mod: bool,
}

/// PHP: document root, Composer, extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhpRecipe {
    /// Whether composer.json exists (then a vendor stage installs dependencies).
    pub composer: bool,
    /// Whether composer.lock exists.
    pub composer_lock: bool,
    /// PDO drivers the database needs, installed where the image supports it.
    pub extensions: Vec<String>,
    /// Directories the app writes to (Laravel's storage and cache).
    pub writable_dirs: Vec<String>,
}

/// Rust: package and binary to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RustRecipe {
    /// The package to build (`-p`), for workspaces.
    pub package: Option<String>,
    /// The binary to build and run.
    pub binary: String,
    /// Whether Cargo.lock exists (then the build is `--locked`).
    pub locked: bool,
    /// A single crate with `src/main.rs` only: dependencies get their own cached layer.
    pub cache_dependencies: bool,
}

/// What will be built and run for one checkout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The language; `None` only when the repo brings its own Dockerfile or compose build and
    /// no supported language was found.
    pub language: Option<Language>,
    /// The framework, `None` for a plain app.
    pub framework: Option<Framework>,
    /// The language version the repo asks for, as written (e.g. `>=18`, `1.22`, `^8.1`).
    pub language_version: Option<String>,
    /// The package manager that installs dependencies.
    pub package_manager: Option<PackageManager>,
    /// The app's directory, relative to the checkout root (`.` for the root).
    pub app_dir: String,
    /// The build context, relative to the checkout root: `app_dir`, or a workspace root above it.
    pub context_dir: String,
    /// The effective build step, shown as one line (`build_commands` joined by ` && `).
    pub build_command: Option<String>,
    /// The build steps, run in a build stage of the image, never on the host.
    pub build_commands: Vec<String>,
    /// The command that starts the app, as one line.
    pub start_command: Option<String>,
    /// The same command as an argument vector (for exec-form CMD).
    pub start_argv: Vec<String>,
    /// Commands run inside the app container before the app starts (migrations, seeds).
    pub startup_commands: Vec<String>,
    /// The port the app listens on inside its container.
    pub port: u16,
    /// The env variable that tells the app its port, when it has one.
    pub port_env: Option<String>,
    /// The path polled until the app is ready.
    pub health_path: String,
    /// Which answers at `health_path` mean ready.
    pub ready_when: ReadyWhen,
    /// The database it gets, if any.
    pub database: Option<Database>,
    /// The SQL file (repo-relative) that seeds a new preview's database, from
    /// preview-config.yml's `database.seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_seed: Option<String>,
    /// Services from the catalogue it gets.
    pub extra_services: Vec<ExtraService>,
    /// Whether the Dockerfile is the repo's or ours.
    pub dockerfile: DockerfileSource,
    /// The repo's Dockerfile, relative to the checkout root, when it is used.
    pub dockerfile_path: Option<String>,
    /// The repo's compose file (`docker-compose.preview.yml`, the project's `compose.yaml`, ...,
    /// or the one preview-config.yml names), relative to the checkout root, when one is used.
    pub compose_file: Option<String>,
    /// That file's services, its web service and why, and what the sanitiser changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeSummary>,
    /// Environment from `env` and `env_file` of preview-config.yml (values as given).
    pub env: BTreeMap<String, String>,
    /// The image the app is built from, from base-images.tsv.
    pub base_image: Option<String>,
    /// How the generated Dockerfile builds the app; `None` when the repo's is used.
    pub recipe: Option<Recipe>,
    /// Why each decision was made, e.g. "framework=nestjs because package.json depends on @nestjs/core".
    pub reasons: Vec<String>,
    /// Things that may go wrong, worth telling the PR author.
    pub warnings: Vec<String>,
}

/// What a plan says about the repo's compose file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeSummary {
    /// The service that is the web app, the only one routed.
    pub web_service: String,
    /// Why it is the web app.
    pub web_service_reason: String,
    /// Every service, in the file's order.
    pub services: Vec<ComposeServiceSummary>,
    /// What the sanitiser dropped or changed.
    pub changed: Vec<String>,
}

/// One service of the repo's compose file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeServiceSummary {
    pub name: String,
    /// `built from DIR` (with the Dockerfile when named), `image NAME`, or `no image`.
    pub source: String,
    /// Whether nginx routes to it (the web service) rather than it staying private.
    pub routed: bool,
    /// Its `preview.hostname` label: a second web service, routed at its own hostname when
    /// previews have hostnames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_label: Option<String>,
    /// The hostname nginx serves it at, once the plan knows previews have hostnames
    /// ([`crate::plan::Planned::route_hostname_service`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_at: Option<String>,
    /// Its restart policy when it lets it end (`no` or `on-failure[:N]`); `None` for a service
    /// that keeps running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Whether another service waits for it to complete (a migration).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runs_to_completion: bool,
    /// Its profiles: with any, it is not started (previews activate no profile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}
