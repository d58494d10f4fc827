//! A test bed for the `preview` binary: a temporary HOME, an infra checkout, fake `terraform`,
//! `ansible-playbook`, `ssh` and `rsync` programs first on PATH that record their argv, stdin and
//! environment, and a wiremock fake of GitHub's API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The DigitalOcean token the tests feed to `init`.
pub const DO_TOKEN: &str = "dop_v1_test_token_0123456789abcdef";
/// The GitHub token the tests feed to `init`.
pub const GH_TOKEN: &str = "ghp_test_token_0123456789abcdef";
/// The server address the fake terraform reports.
pub const SERVER_IP: &str = "203.0.113.10";
/// The repositories configured by `init`.
pub const REPOS: [&str; 2] = ["acme/api", "acme/web"];

/// Records every argv as one line: the program, then each argument after a tab; the env and
/// stdin of the call go to numbered files.
const RECORD: &str = r#"
R=@REC@
n=$(ls "$R"/calls | wc -l)
n=$(printf '%04d' "$n")
{ printf '%s' "$PROG"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } > "$R/calls/$n"
env | sort > "$R/env/$n-$PROG"
"#;

const TERRAFORM: &str = r#"#!/bin/sh
PROG=terraform
@RECORD@
case "$1" in
  init) echo "Terraform has been successfully initialized!" ;;
  plan)
    stat -c '%a' preview.tfvars.json > "$R/tfvars.mode"
    cp preview.tfvars.json "$R/tfvars.json"
    : > preview.tfplan
    echo "Plan: 6 to add, 0 to change, 0 to destroy." ;;
  apply)
    stat -c '%a' preview.tfplan > "$R/tfplan.mode"
    echo "Apply complete! Resources: 6 added, 0 changed, 0 destroyed." ;;
  output) cat <<'JSON'
{
  "droplet_id": {"sensitive": false, "type": "string", "value": "412345678"},
  "droplet_ipv4": {"sensitive": false, "type": "string", "value": "198.51.100.20"},
  "reserved_ip": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
  "server_ip": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
  "ssh_user": {"sensitive": false, "type": "string", "value": "root"},
  "server_private_ipv4": {"sensitive": false, "type": "string", "value": "10.10.0.2"},
  "worker_ipv4": {"sensitive": false, "type": ["tuple", ["string"]], "value": ["198.51.100.31"]},
  "worker_private_ipv4": {"sensitive": false, "type": ["tuple", ["string"]], "value": ["10.10.0.3"]}
}
JSON
  ;;
  destroy) echo "Destroy complete! Resources: 6 destroyed." ;;
esac
"#;

const ANSIBLE: &str = r#"#!/bin/sh
PROG=ansible-playbook
@RECORD@
for a in "$@"; do
  case "$a" in
    @*) f="${a#@}"; echo "$(stat -c '%a' "$f") $(basename "$f")" >> "$R/ansible-files"; cp "$f" "$R/ansible-$(basename "$f")" ;;
  esac
done
if [ -e "$R/ansible-fail-next" ]; then
  rm "$R/ansible-fail-next"
  echo "TASK [docker : Install Docker] ***" 
  echo "fatal: [preview]: FAILED! => simulated failure" >&2
  exit 2
fi
echo "PLAY RECAP preview : ok=42 changed=17 failed=0"
"#;

const SSH: &str = r#"#!/bin/sh
PROG=ssh
@RECORD@
cat > "$R/stdin/$n"
for last in "$@"; do :; done
case "$last" in
  *curl*/health*)
    printf '{"status":"ok","version":"%s","uptimeSeconds":12,"queueDepth":1,"activeJobs":0,"livePreviews":2,"docker":true}\n200' "$(cat "$R/server-version")" ;;
  *curl*/api/repos/*/access*)
    if grep -q "Bearer $(cat "$R/expected-api-token" 2>/dev/null)" "$R/stdin/$n"; then
      printf '%s\n%s' "$(cat "$R/access-answer")" "$(cat "$R/access-status" 2>/dev/null || echo 200)"
    else
      printf '{"error":"missing or wrong bearer token"}\n401'
    fi ;;
  *curl*/api/repos/*/secrets*)
    if ! grep -q "Bearer $(cat "$R/expected-api-token" 2>/dev/null)" "$R/stdin/$n"; then
      printf '{"error":"missing or wrong bearer token"}\n401'
    elif echo "$last" | grep -q stranger; then
      printf '{"error":"unknown repository stranger/repo: it is not in ALLOWED_REPOS"}\n404'
    elif echo "$last" | grep -q PUT; then
      printf '{"repo":"acme/api","secret":"STRIPE_KEY","status":"created"}\n201'
    elif echo "$last" | grep -q DELETE; then
      printf '{"repo":"acme/api","secret":"STRIPE_KEY","status":"removed"}\n200'
    else
      printf '{"repo":"acme/api","secrets":["SENTRY_DSN","STRIPE_KEY"]}\n200'
    fi ;;
  *curl*/api/nodes*)
    printf '{"engine":"compose","nodes":[{"id":"local","role":"manager","state":"ready","availability":"active","address":"127.0.0.1","memory_bytes":4102029312,"free_memory_bytes":2952790016,"previews":[]}]}\n200' ;;
  *curl*DELETE*/api/previews/*)
    echo '{"previews":[]}' > "$R/previews.json"
    printf '{"status":"queued"}\n202' ;;
  *curl*/api/previews/acme-api-pr-7/services*)
    if grep -q "Authorization: Bearer $(cat "$R/expected-api-token" 2>/dev/null)" "$R/stdin/$n"; then
      printf '{"id":"acme-api-pr-7","services":%s}\n200' "$(cat "$R/services.json")"
    else
      printf '{"error":"missing or wrong bearer token"}\n401'
    fi ;;
  *curl*/api/previews/*/services*)
    printf '{"error":"no preview"}\n404' ;;
  *curl*/api/previews*)
    if grep -q "Authorization: Bearer $(cat "$R/expected-api-token" 2>/dev/null)" "$R/stdin/$n"; then
      printf '%s\n200' "$(cat "$R/previews.json")"
    else
      printf '{"error":"missing or wrong bearer token"}\n401'
    fi ;;
  *.incoming*systemctl\ restart*)
    if echo "$last" | grep -q 'cp -p'; then
      cp "$R/previous-version" "$R/server-version"
    else
      cp "$R/server-version" "$R/previous-version"
      [ -e "$R/break-new-binary" ] || cp "$R/uploaded-version" "$R/server-version"
    fi ;;
  true) ;;
  *) echo "fake ssh: unexpected remote command: $last" >&2; exit 1 ;;
esac
"#;

const RSYNC: &str = r#"#!/bin/sh
PROG=rsync
@RECORD@
src=""; prev=""
for a in "$@"; do prev="$src"; src="$a"; done
sed -n 's/^echo "preview-orchestrator \(.*\)"$/\1/p' "$prev" > "$R/uploaded-version"
"#;

const ORCHESTRATOR: &str = r#"#!/bin/sh
PROG=preview-orchestrator
@RECORD@
echo "preview-orchestrator 0.2.0"
"#;

/// The services the fake orchestrator lists for `acme-api-pr-7`, in the orchestrator's own type:
/// its app, its database and a migration that ended.
pub fn services() -> Vec<preview_engine::ContainerState> {
    let container = |service: &str, state: &str, status: &str, exit_code, one_shot| {
        preview_engine::ContainerState {
            name: format!("acme-api-pr-7-{service}-1"),
            service: service.to_owned(),
            state: state.to_owned(),
            status: status.to_owned(),
            exit_code,
            one_shot,
        }
    };
    vec![
        container("app", "running", "Up 3 minutes (healthy)", None, false),
        container("db", "running", "Up 4 minutes", None, false),
        container(
            "migrate",
            "exited",
            "Exited (0) 3 minutes ago",
            Some(0),
            true,
        ),
    ]
}

/// The previews the fake orchestrator lists.
pub const PREVIEWS: &str = r#"{"previews":[{"id":"acme-api-pr-7","repo":"acme/api","slug":"acme-api","prNumber":7,"status":"running","url":"http://203.0.113.10/acme-api/pr-7/","createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T01:00:00Z","headSha":"0123456789abcdef0123456789abcdef01234567","ports":{"app":8001,"db":9001}},{"id":"acme-web-pr-3","repo":"acme/web","slug":"acme-web","prNumber":3,"status":"building","url":"http://203.0.113.10/acme-web/pr-3/","createdAt":"2025-01-02T00:00:00Z","updatedAt":"2025-01-02T00:00:00Z","headSha":"89abcdef0123456789abcdef0123456789abcdef","ports":{"app":8002}}]}"#;

/// One test bed.
pub struct Bed {
    pub dir: TempDir,
    pub github: MockServer,
    /// More environment for every `preview` command (e.g. a D-Bus session's address).
    pub env: Vec<(String, String)>,
}

impl Bed {
    /// Creates the directories, fake programs, SSH key, infra checkout and GitHub fake.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bed = Self {
            dir,
            github: MockServer::start().await,
            env: Vec::new(),
        };
        for sub in [
            "home/.ssh",
            "bin",
            "rec/calls",
            "rec/env",
            "rec/stdin",
            "infra/terraform",
            "infra/ansible",
        ] {
            std::fs::create_dir_all(bed.path(sub)).unwrap();
        }
        std::fs::write(bed.path("home/.ssh/id_ed25519"), "not a real private key\n").unwrap();
        std::fs::write(
            bed.path("home/.ssh/id_ed25519.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@bed\n",
        )
        .unwrap();
        std::fs::write(bed.path("infra/terraform/main.tf"), "# stand-in\n").unwrap();
        std::fs::write(bed.path("infra/terraform/variables.tf"), "# stand-in\n").unwrap();
        std::fs::write(bed.path("infra/ansible/playbook.yml"), "---\n").unwrap();
        std::fs::write(bed.path("rec/server-version"), "0.1.0").unwrap();
        std::fs::write(bed.path("rec/previews.json"), PREVIEWS).unwrap();
        std::fs::write(
            bed.path("rec/services.json"),
            serde_json::to_string(&services()).unwrap(),
        )
        .unwrap();
        let record = RECORD.replace("@REC@", &bed.path("rec").display().to_string());
        for (name, script) in [
            ("bin/terraform", TERRAFORM),
            ("bin/ansible-playbook", ANSIBLE),
            ("bin/ssh", SSH),
            ("bin/rsync", RSYNC),
            ("preview-orchestrator", ORCHESTRATOR),
        ] {
            let path = bed.path(name);
            std::fs::write(&path, script.replace("@RECORD@", &record)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        bed.mount_github().await;
        bed
    }

    async fn mount_github(&self) {
        for (i, repo) in REPOS.iter().enumerate() {
            let id = 101 + i as u64;
            Mock::given(method("GET"))
                .and(path(format!("/repos/{repo}/hooks")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                    {"id": 55, "config": {"url": "https://ci.example.com/hook"}}
                ])))
                .mount(&self.github)
                .await;
            Mock::given(method("POST"))
                .and(path(format!("/repos/{repo}/hooks")))
                .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": id})))
                .mount(&self.github)
                .await;
            Mock::given(method("POST"))
                .and(path(format!("/repos/{repo}/hooks/{id}/pings")))
                .respond_with(ResponseTemplate::new(204))
                .mount(&self.github)
                .await;
            Mock::given(method("DELETE"))
                .and(path(format!("/repos/{repo}/hooks/{id}")))
                .respond_with(ResponseTemplate::new(204))
                .mount(&self.github)
                .await;
        }
        Mock::given(path_regex(".*"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
            .with_priority(10)
            .mount(&self.github)
            .await;
    }

    /// A path inside the bed.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The preview-deployer directory under the bed's HOME.
    pub fn pd(&self, rel: &str) -> PathBuf {
        self.path("home/.preview-deployer").join(rel)
    }

    /// The `preview` command with a clean environment: HOME, PATH (fakes first), the GitHub
    /// fake and the file secret store.
    pub fn preview(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("preview"));
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.args(args)
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", path)
            .env("GITHUB_API_URL", self.github.uri())
            .env("PREVIEW_SECRET_STORE", "file")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs a command off the async runtime (the GitHub fake lives on it).
    pub async fn run(&self, mut cmd: std::process::Command) -> Run {
        let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `preview init --non-interactive` with the test tokens in the environment.
    pub async fn init(&self) -> Run {
        let key = self.path("home/.ssh/id_ed25519");
        let infra = self.path("infra");
        let mut cmd = self.preview(&[
            "init",
            "--non-interactive",
            "--repo",
            REPOS[0],
            "--repo",
            REPOS[1],
            "--region",
            "fra1",
            "--ssh-key",
            key.to_str().unwrap(),
            "--infra-dir",
            infra.to_str().unwrap(),
            // One Swarm worker, as the fake terraform reports.
            "--workers",
            "1",
        ]);
        cmd.env("DIGITALOCEAN_TOKEN", DO_TOKEN)
            .env("GITHUB_TOKEN", GH_TOKEN);
        let run = self.run(cmd).await;
        if run.code == Some(0) {
            std::fs::write(
                self.path("rec/expected-api-token"),
                self.secret("api_token"),
            )
            .unwrap();
        }
        run
    }

    /// `preview setup --yes` with the fake orchestrator binary.
    pub async fn setup(&self) -> Run {
        let binary = self.path("preview-orchestrator");
        self.run(self.preview(&[
            "setup",
            "--yes",
            "--binary",
            binary.to_str().unwrap(),
            "--health-timeout",
            "5",
        ]))
        .await
    }

    /// A value of the file secret store.
    pub fn secret(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.pd("secrets.yml")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} missing from secrets.yml:\n{text}"))
            .trim_matches('"')
            .to_owned()
    }

    /// Every secret the CLI knows.
    pub fn all_secrets(&self) -> Vec<String> {
        vec![
            DO_TOKEN.to_owned(),
            GH_TOKEN.to_owned(),
            self.secret("webhook_secret"),
            self.secret("api_token"),
        ]
    }

    /// The recorded calls so far, with the bed's directory written as `$BED`.
    pub fn calls(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.path("rec/calls"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| self.normalise(std::fs::read_to_string(p).unwrap().trim_end()))
            .collect()
    }

    /// Number of recorded calls.
    pub fn call_count(&self) -> usize {
        std::fs::read_dir(self.path("rec/calls")).unwrap().count()
    }

    /// Recorded stdin of call `n`.
    pub fn stdin_of(&self, n: usize) -> String {
        std::fs::read_to_string(self.path(&format!("rec/stdin/{n:04}"))).unwrap_or_default()
    }

    /// The environment `terraform plan` ran with (the first plan recorded).
    pub fn terraform_plan_env(&self) -> String {
        let plan = self
            .calls()
            .iter()
            .position(|c| c.starts_with("terraform ⇥ plan"))
            .expect("terraform plan ran");
        self.env_of(plan, "terraform")
    }

    /// Recorded environment of call `n`.
    pub fn env_of(&self, n: usize, program: &str) -> String {
        std::fs::read_to_string(self.path(&format!("rec/env/{n:04}-{program}"))).unwrap()
    }

    /// Everything recorded, raw: argv, env and stdin files.
    pub fn recorded_argv(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.path("rec/calls")).unwrap() {
            all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        all
    }

    /// `METHOD /path` of every request GitHub's fake received.
    pub async fn github_requests(&self) -> Vec<String> {
        self.github
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect()
    }

    /// Replaces the bed's directory with `$BED`.
    pub fn normalise(&self, text: &str) -> String {
        text.replace(&self.dir.path().display().to_string(), "$BED")
            .replace('\t', " ⇥ ")
    }
}

/// Mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the run succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success:\n{self:#?}");
        self
    }

    /// Panics with the output unless the run failed.
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_eq!(self.code, Some(1), "expected failure:\n{self:#?}");
        self
    }
}
