//! What the tests share: the fixtures, a fixed render input, files written for external tools.

use std::path::{Path, PathBuf};

use preview_core::plan::Planned;
use preview_core::render::{RenderInput, Rendered, render};

/// Every fixture that plans successfully.
pub const PLANNABLE: &[&str] = &[
    "bun-api",
    "compose-missing-images",
    "compose-ok",
    "compose-project",
    "compose-stack",
    "compose-two-web",
    "compose-project-config",
    "compose-project-images-only",
    "compose-project-label",
    "compose-variables",
    "django",
    "express",
    "fastapi",
    "fastify",
    "flask",
    "go",
    "go-cmd",
    "laravel",
    "mixed-language",
    "monorepo",
    "monorepo-app-path",
    "nestjs",
    "nextjs",
    "node-plain",
    "node-postgres",
    "nuxt",
    "php-plain",
    "python-plain",
    "repo-dockerfile",
    "rust",
    "rust-workspace",
    "static-html",
    "sveltekit-node",
    "ts-tsx",
    "upstream-shape-angular",
    "upstream-shape-django-subdir",
    "upstream-shape-file-secret",
    "upstream-shape-flask-redis",
    "upstream-shape-fullstack-fastapi",
    "upstream-shape-java-maven",
    "upstream-shape-nginx-proxy",
    "upstream-shape-react-proxy-dev",
    "upstream-shape-voting-app",
    "upstream-shape-vue-cli",
    "vite-spa",
];

/// Every fixture whose plan is refused, with the text its error must contain.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "hostile-alias-bomb",
        "preview-config.yml:6: refused: the YAML exceeds the parser's limits",
    ),
    (
        "hostile-bad-keys",
        "preview-config.yml:2: key `app_prot`: unknown key",
    ),
    (
        "hostile-bad-values",
        "preview-config.yml:2: key `app_port`: port 99999 is out of range 1-65535",
    ),
    (
        "hostile-compose-alias-bomb",
        "docker-compose.preview.yml:6: refused: the YAML exceeds",
    ),
    (
        "hostile-compose-bind-outside",
        "service `app`: key `volumes`: the bind mount",
    ),
    (
        "hostile-compose-cap-add",
        "docker-compose.preview.yml:4: service `app`: key `cap_add`",
    ),
    (
        "hostile-compose-devices",
        "docker-compose.preview.yml:4: service `app`: key `devices`",
    ),
    (
        "hostile-compose-docker-socket",
        "service `app`: key `volumes`: the Docker socket",
    ),
    (
        "hostile-compose-host-network",
        "docker-compose.preview.yml:4: service `app`: key `network_mode`",
    ),
    (
        "hostile-compose-host-pid",
        "docker-compose.preview.yml:6: service `sidecar`: key `pid`",
    ),
    (
        "hostile-compose-host-ports",
        "docker-compose.preview.yml:4: service `app`: key `ports`",
    ),
    (
        "hostile-compose-interpolation-bare-secret",
        "docker-compose.preview.yml:9: service `worker`: key `environment`: `GITHUB_WEBHOOK_SECRET` is not a variable of this preview",
    ),
    (
        "hostile-compose-interpolation-home-in-default",
        "docker-compose.preview.yml:6: service `app`: key `environment`: `HOME` is not a variable of this preview",
    ),
    (
        "hostile-compose-interpolation-path",
        "docker-compose.preview.yml:6: service `app`: key `volumes`: variables are not substituted in `volumes`",
    ),
    (
        "hostile-compose-interpolation-token",
        "docker-compose.preview.yml:6: service `app`: key `environment`: `GITHUB_TOKEN` is not a variable of this preview",
    ),
    (
        "hostile-compose-privileged",
        "docker-compose.preview.yml:4: service `app`: key `privileged`",
    ),
    (
        "hostile-compose-project-docker-socket",
        "compose.yml:5: service `ci`: key `volumes`: the Docker socket",
    ),
    (
        "hostile-compose-project-env-file-outside",
        "docker-compose.yml:5: service `web`: key `env_file`",
    ),
    (
        "hostile-compose-project-host-network",
        "compose.yaml:4: service `web`: key `network_mode`",
    ),
    (
        "hostile-compose-project-interpolation",
        "docker-compose.yaml:6: service `web`: key `environment`: `GITHUB_TOKEN` is not a variable of this preview",
    ),
    (
        "hostile-compose-project-privileged",
        "compose.yaml:7: service `agent`: key `privileged`",
    ),
    (
        "hostile-config-compose-dotdot",
        "preview-config.yml:2: key `compose`: \"deploy/../../outside/compose.yml\" holds `..`",
    ),
    (
        "hostile-config-web-service-missing",
        "preview-config.yml:1: key `web_service`: compose.yaml has no service `frontend`",
    ),
    (
        "hostile-oversized-config",
        "preview-config.yml: the file is larger than the 65536-byte limit",
    ),
    (
        "hostile-symlink-config",
        "preview-config.yml: symlink preview-config.yml points to the absolute path /etc/passwd",
    ),
    (
        "hostile-symlink-envfile",
        "preview-config.yml:1: key `env_file`: an env_file outside the repo is refused",
    ),
    (
        "hostile-symlink-manifest",
        "package.json: symlink package.json points to",
    ),
    (
        "monorepo-ambiguous",
        "several deployable apps in the repository: services/api (node), services/worker (go)",
    ),
    (
        "compose-project-ambiguous",
        "compose.yaml:1: key `services`: cannot tell which service is the web app (`admin`, `api` could each be)",
    ),
    (
        "upstream-shape-env-file-absent",
        "docker-compose.yml:7: service `web`: key `env_file`: \"./.env.dev\" is not a file in the checkout",
    ),
    (
        "hostile-compose-project-privileged-hook",
        "compose.yaml:8: service `web`: key `post_start.privileged`: hooks may set only command",
    ),
    (
        "hostile-compose-project-reserved-label",
        "compose.yaml:7: service `db`: key `labels`: `dev.preview-deployer.slot`: labels under",
    ),
    (
        "hostile-compose-project-secret-host",
        "compose.yaml:8: key `secrets.token.environment`: only `file:` (a file of the checkout) is supported",
    ),
    (
        "hostile-compose-project-secret-outside",
        "compose.yaml:8: key `configs.shadow.file`: \"../../../../etc/shadow\" leads outside the checkout",
    ),
    ("ruby-unsupported", "unsupported: ruby (found Gemfile)"),
    (
        "upstream-shape-plex",
        "compose.yaml: 2 refusals:\n- compose.yaml:5: service `media`: key `network_mode`: network_mode \"host\" would leave the preview's own network",
    ),
    (
        "upstream-shape-wasm-runtime",
        "compose.yml:18: service `api`: key `runtime`: previews use the default runtime",
    ),
    (
        "upstream-shape-wordpress",
        "compose.yaml is not used, as none of its services is built from the repo: to preview it as it is, set `web_service: blog` in preview-config.yml",
    ),
];

/// The directory holding the sample apps.
pub fn fixtures_dir() -> PathBuf {
    preview_testkit::repo_root().join("fixtures/apps")
}

/// The absolute path of one fixture.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Plans one fixture, panicking with the error if it fails.
pub fn plan(name: &str) -> Planned {
    preview_core::plan(&fixture(name)).unwrap_or_else(|e| panic!("planning {name}: {e}"))
}

/// The render input used for snapshots: fixed ids, port and secret, so files are stable.
pub fn snapshot_input(name: &str) -> RenderInput {
    RenderInput::new(
        format!("acme-{name}-pr-7"),
        format!("acme/{name}"),
        7,
        "0123456789abcdef0123456789abcdef01234567",
        format!("acme-{name}"),
        8007,
        fixture(name),
        format!("/srv/previews/acme-{name}-pr-7/Dockerfile"),
        "SnapshotSecret0123456789",
    )
}

/// Renders `planned` with the Dockerfile path inside `out`, and writes every file there.
pub fn render_into(
    name: &str,
    planned: &Planned,
    out: &Path,
    id: &str,
    host_port: u16,
) -> Rendered {
    let mut input = snapshot_input(name);
    input.deployment_id = id.to_owned();
    input.host_port = host_port;
    input.dockerfile_path = out.join("Dockerfile");
    let rendered = render(planned, &input).unwrap_or_else(|e| panic!("rendering {name}: {e}"));
    for (file, text) in rendered.files() {
        std::fs::write(out.join(file), text).unwrap();
    }
    rendered
}
