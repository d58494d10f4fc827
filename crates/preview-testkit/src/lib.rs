//! Shared harness for tests that run on the real test bed (scripts/testbed.sh): a Docker check
//! that fails loudly instead of skipping, a private nginx, free ports, HTTP polling and leftover
//! checks for Docker objects.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use preview_exec::Cmd;

/// Fails the test, naming what is missing, unless the Docker engine and Compose v2+ answer.
pub async fn require_docker() {
    let engine = Cmd::new("docker", "check that the Docker engine answers")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .pass_env("HOME")
        .timeout(Duration::from_secs(20))
        .run()
        .await;
    if let Err(err) = engine {
        panic!(
            "the Docker engine is not reachable; run scripts/testbed.sh first (it starts dockerd): {err}"
        );
    }
    let compose = docker(["compose", "version", "--short"]).await;
    let version = compose.unwrap_or_else(|err| {
        panic!(
            "docker compose v2+ is missing; run scripts/testbed.sh (it installs the plugin): {err}"
        )
    });
    assert!(
        !version.starts_with('1'),
        "docker compose {version} is too old; the tests need v2+"
    );
}

/// Runs `docker ARGS` and returns its trimmed stdout.
pub async fn docker<I, S>(args: I) -> preview_exec::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Cmd::new("docker", "docker command in a test")
        .args(args)
        .pass_env("HOME")
        .timeout(Duration::from_secs(300))
        .run()
        .await?;
    Ok(out.stdout_text().trim().to_owned())
}

/// Containers, networks and volumes that carry `label` (`key=value`), as `kind name` lines.
pub async fn docker_objects_with_label(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "--format", "{{.Names}}"]),
        ("network", vec!["network", "ls", "--format", "{{.Name}}"]),
        ("volume", vec!["volume", "ls", "--format", "{{.Name}}"]),
    ] {
        let mut args = args;
        args.extend(["--filter", &filter]);
        let out = docker(&args).await.expect("listing docker objects");
        found.extend(out.lines().map(|name| format!("{kind} {name}")));
    }
    found
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A unique lowercase suffix for names of Docker objects a test creates.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}{:x}", std::process::id(), nanos)
}

/// The answer to a plain HTTP/1.1 GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// A blocking-free GET of `http://127.0.0.1:{port}{path}`, with `Connection: close`.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<HttpAnswer> {
    http_get_host(port, "localhost", path).await
}

/// [`http_get`] with the `Host` header `host`, as a browser sends for a preview's hostname.
pub async fn http_get_host(port: u16, host: &str, path: &str) -> std::io::Result<HttpAnswer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reading the answer"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpAnswer {
        status,
        headers: head.to_owned(),
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Polls GET until `accept` holds for the answer, or panics after `timeout` with the last answer.
pub async fn wait_for_http(
    port: u16,
    path: &str,
    timeout: Duration,
    accept: impl Fn(&HttpAnswer) -> bool,
) -> HttpAnswer {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match http_get(port, path).await {
            Ok(answer) if accept(&answer) => return answer,
            Ok(answer) => last = format!("{answer:?}"),
            Err(err) => last = err.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "GET 127.0.0.1:{port}{path} not as expected within {timeout:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private nginx on a free 127.0.0.1 port, including every `*.conf` of [`PrivateNginx::conf_dir`]
/// inside its one server block, as the production base config does. Stopped on drop.
pub struct PrivateNginx {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateNginx {
    /// Writes the config and starts nginx (it daemonizes, so it outlives the starting command).
    /// Preview configs in [`Self::conf_dir`] are `location` blocks of its one server.
    pub async fn start() -> Self {
        Self::start_in_mode(false).await
    }

    /// Like [`Self::start`], for previews at their own hostnames: the configs in
    /// [`Self::conf_dir`] are `server` blocks, included at the http level, and a default server
    /// answers 404 to any other Host (`/nginx-health` aside), as the production config does.
    pub async fn start_with_hostnames() -> Self {
        Self::start_in_mode(true).await
    }

    async fn start_in_mode(hostnames: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for nginx");
        let port = free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let conf = format!(
            r#"worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/tmp-body;
    proxy_temp_path {root}/tmp-proxy;
    fastcgi_temp_path {root}/tmp-fastcgi;
    uwsgi_temp_path {root}/tmp-uwsgi;
    scgi_temp_path {root}/tmp-scgi;
    # Preview hostnames are up to 63 characters before the domain.
    server_names_hash_bucket_size 256;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name _;
        location = /nginx-health {{ return 200 "ok"; }}
        {inside}
    }}
    {outside}
}}
"#,
            root = root.display(),
            inside = if hostnames {
                "location / { return 404; }".to_owned()
            } else {
                format!("include {}/conf.d/*.conf;", root.display())
            },
            outside = if hostnames {
                format!("include {}/conf.d/*.conf;", root.display())
            } else {
                String::new()
            },
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let nginx = Self { dir, port };
        let prefix = nginx.prefix().display().to_string();
        let conf = nginx.conf_file().display().to_string();
        Cmd::new(nginx_binary(), "start the private test nginx")
            .args([
                "-p",
                &prefix,
                "-c",
                &conf,
                "-e",
                &format!("{prefix}/logs/error.log"),
            ])
            .daemonizes()
            .timeout(Duration::from_secs(20))
            .run()
            .await
            .unwrap_or_else(|e| panic!("starting the private nginx: {e}"));
        wait_for_http(port, "/nginx-health", Duration::from_secs(10), |a| {
            a.status == 200
        })
        .await;
        nginx
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory whose `*.conf` files are included in the server block.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf.d")
    }

    /// The main config file, for `nginx -t -c`.
    pub fn conf_file(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// The prefix directory, for `nginx -p`.
    pub fn prefix(&self) -> &Path {
        self.dir.path()
    }

    /// `nginx -t` on the current config; Err holds nginx's message.
    pub async fn test_config(&self) -> Result<(), String> {
        self.nginx(&["-t"]).await
    }

    /// Reloads; the caller polls for the new answer (old workers serve for a moment).
    pub async fn reload(&self) {
        self.control(&["-s", "reload"]).await;
    }

    async fn control(&self, extra: &[&str]) {
        if let Err(err) = self.nginx(extra).await {
            panic!("private nginx {extra:?} failed: {err}");
        }
    }

    async fn nginx(&self, extra: &[&str]) -> Result<(), String> {
        let prefix = self.dir.path().display().to_string();
        let conf = self.conf_file().display().to_string();
        Cmd::new(nginx_binary(), "control the private test nginx")
            .args([
                "-p",
                &prefix,
                "-c",
                &conf,
                "-e",
                &format!("{prefix}/logs/error.log"),
            ])
            .args(extra)
            .timeout(Duration::from_secs(20))
            .run()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Drop for PrivateNginx {
    fn drop(&mut self) {
        let pidfile = self.dir.path().join("nginx.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // Drop cannot await a command, so signal the daemon directly: SIGQUIT is a graceful stop.
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGQUIT);
            }
        }
    }
}

/// The nginx binary: /usr/sbin/nginx (not on PATH for non-login shells) or `nginx`.
pub fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// The repository root, for fixtures.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/<name> lies two levels below the root")
        .to_owned()
}

/// Parses `docker inspect` JSON for one object.
pub async fn docker_inspect(name: &str) -> serde_json::Value {
    let out = docker(["inspect", name]).await.expect("docker inspect");
    let mut all: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    all[0].take()
}
