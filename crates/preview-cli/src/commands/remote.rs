//! The server, reached over SSH. The orchestrator's internal API listens on 127.0.0.1 only, so the
//! CLI runs `curl` on the server through `ssh`; the bearer token travels on curl's stdin
//! (`-H @-`), never on a command line where `ps` would show it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use preview_engine::ContainerState;
use preview_exec::{Cmd, Output};
use serde::{Deserialize, Serialize};

use super::config::Config;
use super::home::Home;
use super::state::ServerInfo;

/// Where the orchestrator listens on the server (`ORCHESTRATOR_PORT`, default 3000).
pub const ORCHESTRATOR_URL: &str = "http://127.0.0.1:3000";
/// The orchestrator's systemd unit.
pub const ORCHESTRATOR_UNIT: &str = preview_infra::ORCHESTRATOR_UNIT;
/// The orchestrator binary on the server, as the playbook installs it
/// (`{{ orchestrator_home }}/bin/preview-orchestrator`).
pub const ORCHESTRATOR_BINARY: &str = "/opt/preview-deployer/bin/preview-orchestrator";

/// `GET /health`. The orchestrator writes camelCase keys; snake_case is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when healthy.
    pub status: String,
    /// Orchestrator version.
    #[serde(default)]
    pub version: Option<String>,
    /// Seconds since the orchestrator started.
    #[serde(default, alias = "uptimeSeconds")]
    pub uptime_seconds: Option<u64>,
    /// Jobs waiting.
    #[serde(default, alias = "queueDepth")]
    pub queue_depth: Option<u64>,
    /// Jobs running.
    #[serde(default, alias = "activeJobs", skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<u64>,
    /// Whether Docker answers.
    #[serde(default)]
    pub docker: Option<bool>,
    /// HTTPS of hostname routing: `off`, `pending` (plain HTTP until the wildcard certificate
    /// exists) or `active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsHealth>,
}

/// `/health`'s `tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsHealth {
    /// `off`, `pending` or `active`.
    pub state: String,
    /// When the certificate expires, when active.
    #[serde(default, alias = "notAfter", skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

impl TlsHealth {
    /// One line for `preview status`, or None when TLS is off (path routing).
    pub fn summary(&self) -> Option<String> {
        match self.state.as_str() {
            "off" => None,
            "active" => Some(format!(
                "HTTPS active, wildcard certificate valid until {}",
                self.not_after.as_deref().unwrap_or("?")
            )),
            "pending" => Some(
                "HTTPS pending: previews are served over plain HTTP until the wildcard certificate is issued"
                    .to_owned(),
            ),
            other => Some(format!("HTTPS {other}")),
        }
    }
}

/// `GET /api/nodes`: what runs previews, and the machines it runs them on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    /// `compose` (one host) or `swarm`.
    pub engine: String,
    /// The host, or each node of the swarm.
    pub nodes: Vec<Node>,
}

/// One machine that runs previews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The engine's id for it.
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `ready`, `down`, ...
    pub state: String,
    /// Where nginx reaches its previews.
    pub address: String,
    /// Its memory, in bytes.
    pub memory_bytes: u64,
    /// Memory a new preview can still have there, in bytes.
    pub free_memory_bytes: u64,
    /// The previews on it.
    #[serde(default)]
    pub previews: Vec<String>,
}

/// One preview in `GET /api/previews`, in the CLI's own (snake_case) shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PreviewWire")]
pub struct Preview {
    /// Preview id, used in `DELETE /api/previews/{id}`.
    pub id: String,
    /// `owner/name`.
    pub repo: String,
    /// Pull request number.
    pub pr: u64,
    /// running, building, failed, ...
    pub status: String,
    /// Public URL.
    pub url: Option<String>,
    /// Host port of the app.
    pub app_port: Option<u16>,
    /// Host port of the database, if any.
    pub db_port: Option<u16>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// Deployed commit.
    pub sha: Option<String>,
}

/// What the orchestrator sends: its deployment record (camelCase, `prNumber`, `ports: {app, db}`)
/// or the flat snake_case shape; unknown keys are ignored so a newer server still reads.
#[derive(Debug, Deserialize)]
struct PreviewWire {
    id: String,
    repo: String,
    #[serde(alias = "prNumber", alias = "pr_number")]
    pr: u64,
    status: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default, alias = "appPort")]
    app_port: Option<u16>,
    #[serde(default, alias = "dbPort")]
    db_port: Option<u16>,
    #[serde(default)]
    ports: Option<WirePorts>,
    #[serde(default, alias = "createdAt")]
    created_at: Option<String>,
    #[serde(default, alias = "updatedAt")]
    updated_at: Option<String>,
    #[serde(default, alias = "deployedSha")]
    sha: Option<String>,
    #[serde(default, alias = "headSha")]
    head_sha: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WirePorts {
    app: Option<u16>,
    #[serde(default)]
    db: Option<u16>,
}

impl From<PreviewWire> for Preview {
    fn from(w: PreviewWire) -> Self {
        let ports = w.ports.unwrap_or(WirePorts {
            app: None,
            db: None,
        });
        Self {
            id: w.id,
            repo: w.repo,
            pr: w.pr,
            status: w.status,
            url: w.url,
            app_port: w.app_port.or(ports.app),
            db_port: w.db_port.or(ports.db),
            created_at: w.created_at,
            updated_at: w.updated_at,
            sha: w.sha.or(w.head_sha),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PreviewList {
    previews: Vec<Preview>,
}

/// SSH could not reach the server (ssh exited 255).
#[derive(Debug)]
pub struct Unreachable {
    host: String,
    user: String,
    detail: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach {} over SSH as {}{}",
            self.host, self.user, self.detail
        )
    }
}

impl std::error::Error for Unreachable {}

/// An HTTP answer of the internal API.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// SSH access to the server.
#[derive(Debug, Clone)]
pub struct Remote {
    host: String,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
    log: Option<PathBuf>,
}

impl Remote {
    /// The server of the setup state, with the configured key.
    pub fn new(server: &ServerInfo, config: &Config, home: &Home) -> Self {
        Self {
            host: server.ip.clone(),
            user: server.ssh_user.clone(),
            key: config.ssh.private_key.clone(),
            known_hosts: home.known_hosts_path(),
            log: None,
        }
    }

    /// Appends the output of every command to `log`.
    pub fn with_log(mut self, log: PathBuf) -> Self {
        self.log = Some(log);
        self
    }

    /// The server's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The SSH login.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key.
    pub fn key(&self) -> &std::path::Path {
        &self.key
    }

    /// Options shared by ssh, rsync's ssh and ansible: the key, batch mode, and host keys
    /// accepted on first contact into our own known_hosts.
    pub fn ssh_options(&self) -> Vec<OsString> {
        let mut known = OsString::from("UserKnownHostsFile=");
        known.push(&self.known_hosts);
        vec![
            "-i".into(),
            self.key.clone().into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            known,
        ]
    }

    /// `user@host`.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// `user@host:path` for rsync (IPv6 addresses bracketed).
    pub fn rsync_target(&self, path: &str) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{path}", self.user, self.host)
        } else {
            format!("{}:{path}", self.destination())
        }
    }

    /// The command that runs `remote_argv` on the server. ssh hands the server's shell one
    /// string, so each word is quoted; callers pass constants and validated values only.
    pub fn command(&self, description: &str, remote_argv: &[&str]) -> Cmd {
        let line = remote_argv
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Cmd::new("ssh", description)
            .args(self.ssh_options())
            .arg(self.destination())
            .arg(line)
            .pass_env("HOME")
            .pass_env("SSH_AUTH_SOCK")
            .timeout(Duration::from_secs(120));
        if let Some(log) = &self.log {
            cmd = cmd.log_to(log);
        }
        cmd
    }

    /// Runs `remote_argv` on the server and fails unless it exits 0; an SSH failure names the host.
    pub async fn run(
        &self,
        description: &str,
        remote_argv: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
        let mut cmd = self.command(description, remote_argv).timeout(timeout);
        if let Some(bytes) = stdin {
            cmd = cmd.stdin_bytes(bytes);
        }
        let output = cmd.output().await?;
        match output.status.code() {
            Some(0) => Ok(output),
            Some(255) => Err(self.unreachable(&output)),
            _ => bail!(
                "{description} on {}: `{}` {}{}",
                self.host,
                remote_argv.join(" "),
                status_text(&output),
                tail(&output)
            ),
        }
    }

    fn unreachable(&self, output: &Output) -> anyhow::Error {
        anyhow::Error::new(Unreachable {
            host: self.host.clone(),
            user: self.user.clone(),
            detail: tail(output),
        })
    }

    /// Polls until `ssh true` succeeds, up to `timeout`.
    pub async fn wait_for_ssh(&self, timeout: Duration, interval: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = self
                .run(
                    "check that the server answers SSH",
                    &["true"],
                    None,
                    Duration::from_secs(30),
                )
                .await;
            match attempt {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() + interval >= deadline => {
                    return Err(err.context(format!(
                        "{} did not answer SSH within {}s",
                        self.host,
                        timeout.as_secs()
                    )));
                }
                Err(_) => tokio::time::sleep(interval).await,
            }
        }
    }

    /// One request to the internal API through curl on the server.
    pub async fn api(&self, method: &str, path: &str, token: Option<&str>) -> Result<ApiResponse> {
        let url = format!("{ORCHESTRATOR_URL}{path}");
        let stdin = token.map(|t| format!("Authorization: Bearer {t}\n").into_bytes());
        let header_on_stdin: &[&str] = if stdin.is_some() { &["-H", "@-"] } else { &[] };
        let argv = curl_argv(method, header_on_stdin, &url);
        self.curl(method, path, &argv, stdin).await
    }

    /// One request to the internal API with `body`: the token and the body travel in a curl
    /// config on curl's stdin ([`curl_with_body`]), never on a command line on either machine.
    /// The body goes in base64, and `encoding=base64` is added to the query to say so.
    pub async fn api_with_body(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> Result<ApiResponse> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{ORCHESTRATOR_URL}{path}{separator}encoding=base64");
        let (argv, stdin) = curl_with_body(method, &url, token, body);
        self.curl(method, path, &argv, Some(stdin)).await
    }

    /// Runs curl's `argv` on the server with `stdin`; the answer's body and HTTP status.
    async fn curl(
        &self,
        method: &str,
        path: &str,
        argv: &[String],
        stdin: Option<Vec<u8>>,
    ) -> Result<ApiResponse> {
        let description = format!("{method} {path} on the orchestrator");
        let output = self
            .command(
                &description,
                &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .timeout(Duration::from_secs(60));
        let output = match stdin {
            Some(bytes) => output.stdin_bytes(bytes),
            None => output,
        }
        .output()
        .await?;
        self.api_answer(&description, output)
    }

    /// One request to the internal API with a JSON body. The token and the body travel together
    /// in a curl config read from stdin (`-K -`), so neither is on a command line.
    pub async fn api_json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse> {
        let url = format!("{ORCHESTRATOR_URL}{path}");
        let argv = curl_argv(method, &["-K", "-"], &url);
        let stdin = curl_config(token, &body.to_string()).into_bytes();
        self.curl(method, path, &argv, Some(stdin)).await
    }

    /// The status and body of curl's answer (`-w '\n%{http_code}'`), or why there is none.
    fn api_answer(&self, description: &str, output: Output) -> Result<ApiResponse> {
        match output.status.code() {
            Some(0) => {}
            Some(255) => return Err(self.unreachable(&output)),
            Some(7) => bail!(
                "the orchestrator on {} is not listening on {ORCHESTRATOR_URL}{} (is the {ORCHESTRATOR_UNIT} unit running?)",
                self.host,
                tail(&output)
            ),
            _ => bail!(
                "{description} on {}: curl {}{}",
                self.host,
                status_text(&output),
                tail(&output)
            ),
        }
        let text = output.stdout_text();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status: u16 = code.trim().parse().map_err(|_| {
            anyhow!(
                "{description} on {}: unexpected answer {:?}",
                self.host,
                code
            )
        })?;
        Ok(ApiResponse {
            status,
            body: body.to_owned(),
        })
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health> {
        let response = self.api("GET", "/health", None).await?;
        if response.status != 200 {
            bail!(
                "the orchestrator on {} answered /health with HTTP {}: {}",
                self.host,
                response.status,
                response.body.trim()
            );
        }
        serde_json::from_str(&response.body)
            .with_context(|| format!("the orchestrator on {} sent a bad /health", self.host))
    }

    /// Polls `/health` until it is ok (and reports `version`, when given), up to `timeout`.
    pub async fn wait_for_health(
        &self,
        version: Option<&str>,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Health> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.health().await {
                Ok(h)
                    if h.status == "ok"
                        && version.is_none_or(|v| h.version.as_deref() == Some(v)) =>
                {
                    return Ok(h);
                }
                Ok(h) => anyhow!(
                    "/health says status {:?}, version {}",
                    h.status,
                    h.version.as_deref().unwrap_or("unknown")
                ),
                Err(err) => err,
            };
            if Instant::now() + interval >= deadline {
                let wanted = version
                    .map(|v| format!(" with version {v}"))
                    .unwrap_or_default();
                return Err(last.context(format!(
                    "the orchestrator on {} was not healthy{wanted} within {}s",
                    self.host,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `GET /api/previews`.
    pub async fn previews(&self, token: &str) -> Result<Vec<Preview>> {
        let response = self.api("GET", "/api/previews", Some(token)).await?;
        if response.status != 200 {
            bail!(
                "listing previews on {}: HTTP {}: {}",
                self.host,
                response.status,
                response.body.trim()
            );
        }
        let list: PreviewList = serde_json::from_str(&response.body).with_context(|| {
            format!("the orchestrator on {} sent a bad preview list", self.host)
        })?;
        Ok(list.previews)
    }

    /// `GET /api/nodes` with the API token.
    pub async fn nodes(&self, token: &str) -> Result<Nodes> {
        let response = self.api("GET", "/api/nodes", Some(token)).await?;
        if response.status != 200 {
            bail!(
                "listing the nodes on {}: HTTP {}: {}",
                self.host,
                response.status,
                response.body.trim()
            );
        }
        serde_json::from_str(&response.body)
            .with_context(|| format!("the orchestrator on {} sent a bad node list", self.host))
    }

    /// `GET /api/previews/{id}/services` with the API token: the preview's containers (on a
    /// swarm, its tasks) and their state.
    pub async fn preview_services(&self, token: &str, id: &str) -> Result<Vec<ContainerState>> {
        let path = format!("/api/previews/{}/services", plain_id(id)?);
        let response = self.api("GET", &path, Some(token)).await?;
        if response.status != 200 {
            bail!(
                "listing the services of {id} on {}: HTTP {}: {}",
                self.host,
                response.status,
                response.body.trim()
            );
        }
        #[derive(Deserialize)]
        struct Services {
            services: Vec<ContainerState>,
        }
        let list: Services = serde_json::from_str(&response.body).with_context(|| {
            format!("the orchestrator on {} sent a bad service list", self.host)
        })?;
        Ok(list.services)
    }

    /// `DELETE /api/previews/{id}`; 202, 204 and 404 (already gone) are success.
    pub async fn delete_preview(&self, token: &str, id: &str) -> Result<()> {
        let path = format!("/api/previews/{}", plain_id(id)?);
        let response = self.api("DELETE", &path, Some(token)).await?;
        match response.status {
            200 | 202 | 204 | 404 => Ok(()),
            status => bail!(
                "deleting preview {id} on {}: HTTP {status}: {}",
                self.host,
                response.body.trim()
            ),
        }
    }
}

/// `id`, a preview id the server sent, when it is a plain one that goes into a URL path as it is.
fn plain_id(id: &str) -> Result<&str> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("refusing the preview id {id:?} from the server: not a plain id");
    }
    Ok(id)
}

/// curl's command line for one internal API request: `method`, the answer's HTTP status on a
/// last line of its own, `extra` options (how the token and body come from stdin), then `url`.
fn curl_argv(method: &str, extra: &[&str], url: &str) -> Vec<String> {
    let mut argv: Vec<String> = ["curl", "-sS", "--max-time", "20", "-X", method, "-w"]
        .map(str::to_owned)
        .to_vec();
    argv.push("\\n%{http_code}".to_owned());
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv.push(url.to_owned());
    argv
}

/// A curl config (`curl -K -`) with the bearer token and a JSON body. Values are double-quoted,
/// with `\\` and `"` escaped as curl's config syntax wants.
pub fn curl_config(token: &str, json_body: &str) -> String {
    format!(
        "header = {}\nheader = \"Content-Type: application/json\"\ndata-binary = {}\n",
        curl_config_quote(&format!("Authorization: Bearer {token}")),
        curl_config_quote(json_body)
    )
}

/// curl's command line and stdin for one request with a body: `-K -` reads a config from stdin
/// holding the bearer token and the body, so nothing secret is on a command line. The body goes
/// in base64 (`data-raw`, so no `@` is read as a file name): curl's config lines hold 100 KiB at
/// most, which 64 KiB of quotes and backslashes, escaped, would not fit, and base64 needs no
/// escaping. The URL must ask the server to decode it (`?encoding=base64`).
pub fn curl_with_body(method: &str, url: &str, token: &str, body: &str) -> (Vec<String>, Vec<u8>) {
    use base64::Engine as _;
    let argv = curl_argv(method, &["-K", "-"], url);
    let config = format!(
        "header = {}\nheader = \"Content-Type: application/octet-stream\"\nheader = \"Expect:\"\ndata-raw = {}\n",
        curl_config_quote(&format!("Authorization: Bearer {token}")),
        curl_config_quote(&base64::engine::general_purpose::STANDARD.encode(body))
    );
    (argv, config.into_bytes())
}

/// A double-quoted value of curl's config format: `\\`, `\"`, `\n`, `\r`, `\t` and `\v` are its
/// escapes; every other character stands for itself.
fn curl_config_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Single-quotes a word for a POSIX shell unless it is plainly safe.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn status_text(output: &Output) -> String {
    match output.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

fn tail(output: &Output) -> String {
    let text = output.stderr_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let kept = &lines[lines.len().saturating_sub(5)..];
    if kept.is_empty() {
        String::new()
    } else {
        format!(": {}", kept.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("curl"), "curl");
        assert_eq!(shell_quote("\\n%{http_code}"), "'\\n%{http_code}'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    /// The config read by the real curl sends exactly the token and the body, quotes,
    /// backslashes and `$` included.
    #[tokio::test]
    async fn curl_reads_the_token_and_body_from_its_config() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await
                            .unwrap();
                        return text;
                    }
                }
                if n == 0 {
                    return text;
                }
            }
        });
        let body =
            serde_json::json!({"basicAuth": {"user": "a\"b\\c", "passwordHash": "$6$salt$x"}});
        let token = "tok\"en\\";
        Cmd::new("curl", "send a request configured on stdin")
            .args(["-sS", "-X", "PATCH", "-K", "-"])
            .arg(format!("http://127.0.0.1:{port}/api"))
            .stdin_bytes(curl_config(token, &body.to_string()).into_bytes())
            .run()
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("PATCH /api HTTP/1.1"), "{request}");
        assert!(
            request.contains("Authorization: Bearer tok\"en\\\r\n"),
            "{request}"
        );
        assert!(
            request.contains("Content-Type: application/json\r\n"),
            "{request}"
        );
        let sent = request.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(sent).unwrap(),
            body
        );
    }

    /// Accepts one HTTP request on a loopback port; returns its port and, later, the request's
    /// head and body.
    fn one_request() -> (u16, std::thread::JoinHandle<(String, Vec<u8>)>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream
                .write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                )
                .unwrap();
            (head, body)
        });
        (port, handle)
    }

    /// The real curl, with exactly the command line and stdin the server's curl gets, delivers
    /// every byte of the value (quotes, backslashes, newlines, a leading `@`, 64 KiB of the
    /// characters that escaping doubles) as the body, with the token as a header; neither is on
    /// the command line.
    #[tokio::test]
    async fn curl_sends_the_body_and_token_from_stdin_only() {
        let token = "tok_\"quoted\\token_0123456789";
        let nasty = "@/etc/passwd \"q\" back\\slash\ttab\r\nline two\u{b} ünï $HOME `x` 'y'";
        let big = "\\\"\n\t".repeat(64 * 1024 / 4);
        for value in [nasty, big.as_str()] {
            let (port, server) = one_request();
            let url = format!(
                "http://127.0.0.1:{port}/api/repos/acme/api/secrets/STRIPE_KEY?encoding=base64"
            );
            let (argv, stdin) = curl_with_body("PUT", &url, token, value);
            for word in &argv {
                assert!(!word.contains("tok_") && !word.contains("back"), "{word}");
            }
            let out = Cmd::new(&argv[0], "send a request with curl")
                .args(&argv[1..])
                .stdin_bytes(stdin)
                .run()
                .await
                .unwrap();
            assert_eq!(out.stdout_text(), "ok\n201");
            let (head, body) = server.join().unwrap();
            assert!(
                head.starts_with("PUT /api/repos/acme/api/secrets/STRIPE_KEY?encoding=base64 "),
                "{head}"
            );
            assert!(
                head.contains(&format!("Authorization: Bearer {token}\r\n")),
                "{head}"
            );
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&body)
                .unwrap();
            assert_eq!(decoded, value.as_bytes(), "the value arrives byte for byte");
        }
    }

    #[test]
    fn rsync_targets_bracket_ipv6() {
        let remote = Remote {
            host: "2001:db8::1".into(),
            user: "root".into(),
            key: "/k".into(),
            known_hosts: "/kh".into(),
            log: None,
        };
        assert_eq!(remote.rsync_target("/x"), "root@[2001:db8::1]:/x");
    }

    #[test]
    fn parses_the_api_shapes() {
        let health: Health = serde_json::from_str(
            r#"{"status":"ok","version":"0.1.0","uptime_seconds":5,"queue_depth":0,"docker":true}"#,
        )
        .unwrap();
        assert_eq!(health.version.as_deref(), Some("0.1.0"));
        let list: PreviewList = serde_json::from_str(
            r#"{"previews":[{"id":"acme-api-pr-1","repo":"acme/api","pr":1,"status":"running",
            "url":"http://x/acme-api/pr-1/","app_port":8000,"db_port":null,
            "created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z","sha":"abc"}]}"#,
        )
        .unwrap();
        assert_eq!(list.previews[0].pr, 1);
        assert_eq!(list.previews[0].db_port, None);
    }

    #[test]
    fn parses_the_orchestrators_camel_case_records() {
        let health: Health = serde_json::from_str(
            r#"{"status":"ok","version":"0.1.0","uptimeSeconds":5,"queueDepth":2,"activeJobs":1,"livePreviews":3,"docker":true,"tls":{"state":"pending","renewal":"automatic"}}"#,
        )
        .unwrap();
        assert_eq!(
            (health.uptime_seconds, health.queue_depth),
            (Some(5), Some(2))
        );
        let tls = health.tls.unwrap();
        assert!(tls.summary().unwrap().contains("pending"), "{tls:?}");
        let active: TlsHealth =
            serde_json::from_str(r#"{"state":"active","notAfter":"2027-03-01T00:00:00Z"}"#)
                .unwrap();
        assert!(active.summary().unwrap().contains("until 2027-03-01"));
        let off: TlsHealth = serde_json::from_str(r#"{"state":"off"}"#).unwrap();
        assert_eq!(off.summary(), None);
        let list: PreviewList = serde_json::from_str(
            r#"{"previews":[{"id":"acme-api-pr-7","repo":"acme/api","slug":"acme-api","prNumber":7,
            "status":"running","url":"http://x/acme-api/pr-7/","createdAt":"2025-01-01T00:00:00Z",
            "updatedAt":"2025-01-01T01:00:00Z","headSha":"abc","deployedSha":"abc","generation":3,
            "ports":{"app":8001,"db":9001}}]}"#,
        )
        .unwrap();
        let p = &list.previews[0];
        assert_eq!((p.pr, p.app_port, p.db_port), (7, Some(8001), Some(9001)));
        assert_eq!(p.created_at.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(p.sha.as_deref(), Some("abc"));
    }
}
