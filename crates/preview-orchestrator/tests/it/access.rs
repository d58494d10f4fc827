//! Who may see a preview (`preview access`), through a real nginx: an in-process orchestrator
//! whose access API writes the per-repository access files that previews' nginx blocks include,
//! and a private nginx serving a preview block rendered by the real template in front of a small
//! local app. Basic auth answers 401 without credentials and 200 with them; an allowlist answers
//! 403 to a client outside it (the client binds 127.0.0.2: loopback has all of 127/8) and 200
//! inside; the webhook stays reachable; a change reaches a preview already served, nginx refusing
//! a change undoes it, and a restart writes missing files again. One test deploys a real preview
//! on the engine with access set before its first deploy: its readiness check goes around nginx.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_core::access::PasswordHash;
use preview_core::id::RepoFullName;
use preview_core::render::{HostRoute, RenderInput, render_nginx};
use preview_orchestrator::{Config, DryRunRunner, Orchestrator};
use preview_testkit::{PrivateNginx, nginx_binary, wait_for_http};
use serde_json::{Value, json};

use crate::e2e_support::{E2e, Tree, deliver_to, eventually, settings};
use crate::harness::{SECRET, TOKEN, delivery, sha};

const REPO: &str = "octo-org/site";
const PASSWORD: &str = "correct horse battery staple";
const INSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The group the private nginx's workers run as: `nogroup` when the tests run as root (nginx
/// then runs them as nobody), else the tests' own group.
fn worker_group() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ids = |key: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    if ids("Uid:") == "0" {
        "nogroup".to_owned()
    } else {
        ids("Gid:")
    }
}

/// Settings that point an orchestrator in `dir` at `nginx`.
fn access_settings(dir: &Path, nginx: &PrivateNginx) -> Vec<std::ffi::OsString> {
    let nginx_cmd = |extra: &str| {
        format!(
            "{} -p {} -c {} {extra}",
            nginx_binary(),
            nginx.prefix().display(),
            nginx.conf_file().display()
        )
    };
    settings(
        dir,
        &[
            ("--nginx-config-dir", nginx.conf_dir().display().to_string()),
            ("--nginx-test-command", nginx_cmd("-t")),
            ("--nginx-reload-command", nginx_cmd("-s reload")),
            ("--nginx-worker-group", worker_group()),
        ],
    )
}

/// A tiny HTTP app on a free loopback port that answers every request with 200 `preview-app`.
async fn start_app() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\npreview-app")
                    .await;
            });
        }
    });
    (port, task)
}

/// Installs the nginx block of PR `pr` of [`REPO`], rendered by the real template, routing to
/// `app_port`; `with_access` false renders it as a preview deployed before access control.
async fn install_preview(
    nginx: &PrivateNginx,
    pr: u64,
    app_port: u16,
    host: Option<&str>,
    with_access: bool,
) -> String {
    let repo = RepoFullName::parse(REPO).unwrap();
    let id = format!("octo-org-site-pr-{pr}");
    let mut input = RenderInput::new(
        &id,
        REPO,
        pr,
        "a".repeat(40),
        "octo-org-site",
        app_port,
        "/checkout",
        "/work/Dockerfile",
        "0123456789abcdef",
    );
    input.host = host.map(|h| HostRoute {
        hostname: h.to_owned(),
        listen: vec![format!("127.0.0.1:{}", nginx.port())],
        tls: None,
    });
    if with_access {
        input.access_include =
            Some(preview_orchestrator::access::include_pattern(&nginx.conf_dir(), &repo).unwrap());
    }
    let conf = render_nginx(&input).unwrap();
    std::fs::write(nginx.conf_dir().join(format!("{id}.conf")), conf).unwrap();
    id
}

/// A client of nginx that connects from `from`, with basic auth `auth` if given.
async fn get(
    port: u16,
    host: Option<&str>,
    path: &str,
    from: IpAddr,
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .build()
        .unwrap();
    let mut request = client.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Polls until a GET answers `status` (a reload returns before the new config serves, and old
/// workers answer for a moment); panics with the last answer after 5 s.
async fn expect(
    port: u16,
    host: Option<&str>,
    path: &str,
    from: IpAddr,
    auth: Option<(&str, &str)>,
    status: u16,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (got, body) = get(port, host, path, from, auth).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} from {from} (auth: {}) answered {got}, not {status}: {body}",
            auth.is_some()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call of the access API; returns the status and the JSON answer.
async fn access_api(api: &str, method: &str, repo: &str, body: Option<String>) -> (u16, Value) {
    let url = format!("{api}/api/repos/{repo}/access");
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A `PATCH` setting basic auth for `user` with [`PASSWORD`], hashed as the CLI does.
fn basic_auth_body(user: &str) -> String {
    let hash = PasswordHash::new(PASSWORD, "Jb2vQ9xW4kLm7ZpR").unwrap();
    json!({ "basicAuth": { "user": user, "passwordHash": hash.as_str() } }).to_string()
}

/// A signed ping delivered through nginx's `/webhook/` location.
async fn webhook_through_nginx(port: u16, from: IpAddr) -> u16 {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let client = reqwest::Client::builder()
        .local_address(from)
        .no_proxy()
        .build()
        .unwrap();
    client
        .post(format!("http://127.0.0.1:{port}/webhook/github"))
        .header("x-github-event", "ping")
        .header("x-github-delivery", delivery())
        .header(
            "x-hub-signature-256",
            preview_github::sign(SECRET.as_bytes(), &body),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The id of group `name` (a number is its own id).
fn gid_of(name: &str) -> u32 {
    name.parse().unwrap_or_else(|_| {
        std::fs::read_to_string("/etc/group")
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| f[2].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no group {name}"))
    })
}

fn mode_and_gid(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.gid())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_and_cidrs_apply_to_live_previews_through_real_nginx() {
    let nginx = PrivateNginx::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(access_settings(dir.path(), &nginx)).unwrap();
    let orch = Orchestrator::start(config.clone(), Arc::new(DryRunRunner))
        .await
        .unwrap();
    let api = format!("http://{}", orch.addr());
    let (app_port, _app) = start_app().await;
    let port = nginx.port();
    // A preview served before any access setting, one deployed before access control existed,
    // and GitHub's webhook route as the production base config has it.
    install_preview(&nginx, 1, app_port, None, true).await;
    let old = install_preview(&nginx, 2, app_port, None, false).await;
    std::fs::write(
        nginx.conf_dir().join("webhook.conf"),
        format!(
            "location /webhook/ {{ proxy_pass http://{}; }}\n",
            orch.addr()
        ),
    )
    .unwrap();
    nginx.reload().await;
    let path = "/octo-org-site/pr-1/";
    let body = expect(port, None, path, OUTSIDE, None, 200).await;
    assert_eq!(body, "preview-app");

    // Both are live previews of the store (the dry-run runner deploys nothing).
    for pr in [1, 2] {
        let (status, answer) = deliver_to(
            &api,
            REPO,
            "opened",
            pr,
            &sha(7, pr),
            "2026-01-01T00:00:00Z",
        )
        .await;
        assert_eq!(status, 202, "{answer}");
    }
    eventually("both records", Duration::from_secs(10), || {
        (orch.store().read(|s| s.deployments.len()) == 2).then_some(())
    })
    .await;
    let (status, view) = access_api(&api, "GET", REPO, None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["public"], true);
    assert_eq!(
        view["uncovered"],
        json!([old]),
        "the old preview is named: {view}"
    );

    // Basic auth: the preview already served asks for it at once, without a redeploy.
    let (status, view) = access_api(&api, "PATCH", REPO, Some(basic_auth_body("reviewer"))).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["basicAuth"], json!({ "user": "reviewer" }));
    assert!(
        !view.to_string().contains("$6$"),
        "the hash is never shown: {view}"
    );
    expect(port, None, path, INSIDE, None, 401).await;
    expect(
        port,
        None,
        path,
        INSIDE,
        Some(("reviewer", "wrong password")),
        401,
    )
    .await;
    expect(port, None, path, INSIDE, Some(("someone", PASSWORD)), 401).await;
    let body = expect(port, None, path, INSIDE, Some(("reviewer", PASSWORD)), 200).await;
    assert_eq!(body, "preview-app");
    assert_eq!(
        webhook_through_nginx(port, OUTSIDE).await,
        200,
        "the webhook needs no password"
    );

    // Files: the htpasswd is readable by nginx's workers only through their group; the settings
    // are the orchestrator's alone. The password itself is written nowhere.
    let access_dir = nginx.conf_dir().join("access");
    let gid = gid_of(&worker_group());
    assert_eq!(mode_and_gid(&access_dir), (0o2750, gid));
    assert_eq!(
        mode_and_gid(&access_dir.join("octo-org.site.htpasswd")),
        (0o640, gid)
    );
    assert_eq!(
        mode_and_gid(&access_dir.join("octo-org.site.conf")).0,
        0o640
    );
    assert_eq!(mode_and_gid(&dir.path().join("access.json")).0, 0o600);
    for file in files_under(dir.path())
        .into_iter()
        .chain(files_under(nginx.prefix()))
    {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in {}",
            file.display()
        );
    }

    // An allowlist instead: 127.0.0.1 may, 127.0.0.2 may not; the webhook answers both.
    let change = json!({ "basicAuth": null, "allow": ["127.0.0.1/32", "2001:db8::/32"] });
    let (status, view) = access_api(&api, "PATCH", REPO, Some(change.to_string())).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["basicAuth"], Value::Null);
    assert_eq!(view["allow"], json!(["127.0.0.1/32", "2001:db8::/32"]));
    expect(port, None, path, OUTSIDE, None, 403).await;
    expect(port, None, path, INSIDE, None, 200).await;
    assert_eq!(
        webhook_through_nginx(port, OUTSIDE).await,
        200,
        "the webhook is not restricted"
    );
    assert!(
        !access_dir.join("octo-org.site.htpasswd").exists(),
        "the htpasswd file goes with basic auth"
    );

    // Bad input: a clear 400 naming the field, 404 for a repository we do not deploy, 401
    // without the token; nothing changes.
    for (body, field, says) in [
        (
            r#"{"allow":["10.0.0.1/8"]}"#,
            "CIDR",
            "the network is 10.0.0.0/8",
        ),
        (r#"{"allow":["10.0.0.0/33"]}"#, "CIDR", "more than 32"),
        (
            r#"{"allow":["garbage"]}"#,
            "CIDR",
            "not an IPv4 or IPv6 address",
        ),
        (r#"{"allow":[]}"#, "allow", "send null"),
        (
            r#"{"basicAuth":{"user":"alice","passwordHash":"x"}}"#,
            "password hash",
            "SHA-512-crypt",
        ),
        (
            r#"{"basicAuth":{"user":"alice","password":"hunter2hunter2"}}"#,
            "body",
            "unknown field",
        ),
        ("not json", "body", "expected"),
    ] {
        let (status, answer) = access_api(&api, "PATCH", REPO, Some(body.to_owned())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: {answer}");
        assert!(
            !error.contains("hunter2hunter2"),
            "the body is never echoed: {answer}"
        );
    }
    let bad_user = json!({ "basicAuth": { "user": "a:b", "passwordHash": PasswordHash::new(PASSWORD, "abc").unwrap().as_str() } });
    let (status, answer) = access_api(&api, "PATCH", REPO, Some(bad_user.to_string())).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("basic-auth user")),
        "{answer}"
    );
    let (status, answer) = access_api(&api, "GET", "someone/else", None).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not in ALLOWED_REPOS"),
        "{answer}"
    );
    let (status, answer) = access_api(&api, "PATCH", "bad!owner/x", Some("{}".into())).await;
    assert_eq!(status, 400, "{answer}");
    let anonymous = reqwest::Client::new()
        .delete(format!("{api}/api/repos/{REPO}/access"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    expect(port, None, path, OUTSIDE, None, 403).await;

    // nginx refusing the config (here another file breaks it) undoes the change.
    let conf_before = std::fs::read_to_string(access_dir.join("octo-org.site.conf")).unwrap();
    let broken = nginx.conf_dir().join("broken.conf");
    std::fs::write(&broken, "this is not nginx;\n").unwrap();
    let (status, answer) = access_api(&api, "PATCH", REPO, Some(basic_auth_body("reviewer"))).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("nginx refused"),
        "{answer}"
    );
    std::fs::remove_file(&broken).unwrap();
    assert_eq!(
        std::fs::read_to_string(access_dir.join("octo-org.site.conf")).unwrap(),
        conf_before
    );
    assert!(!access_dir.join("octo-org.site.htpasswd").exists());
    let (_, view) = access_api(&api, "GET", REPO, None).await;
    assert_eq!(
        view["basicAuth"],
        Value::Null,
        "the settings did not change: {view}"
    );

    // A restart writes missing access files again from the settings.
    orch.shutdown().await;
    std::fs::remove_file(access_dir.join("octo-org.site.conf")).unwrap();
    nginx.reload().await;
    expect(port, None, path, OUTSIDE, None, 200).await;
    let orch = Orchestrator::start(config, Arc::new(DryRunRunner))
        .await
        .unwrap();
    let api = format!("http://{}", orch.addr());
    expect(port, None, path, OUTSIDE, None, 403).await;
    assert_eq!(
        std::fs::read_to_string(access_dir.join("octo-org.site.conf")).unwrap(),
        conf_before
    );

    // Unset: public again, files gone.
    let (status, view) = access_api(&api, "DELETE", REPO, None).await;
    assert_eq!((status, &view["public"]), (200, &json!(true)), "{view}");
    expect(port, None, path, OUTSIDE, None, 200).await;
    assert!(
        files_under(&access_dir).is_empty(),
        "{:?}",
        files_under(&access_dir)
    );
    orch.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_applies_to_previews_at_their_own_hostnames() {
    let nginx = PrivateNginx::start_with_hostnames().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(access_settings(dir.path(), &nginx)).unwrap();
    let orch = Orchestrator::start(config, Arc::new(DryRunRunner))
        .await
        .unwrap();
    let api = format!("http://{}", orch.addr());
    let (app_port, _app) = start_app().await;
    let host = "octo-org-site-pr-3.preview.test";
    install_preview(&nginx, 3, app_port, Some(host), true).await;
    nginx.reload().await;
    let port = nginx.port();
    expect(port, Some(host), "/", INSIDE, None, 200).await;
    let (status, view) = access_api(&api, "PATCH", REPO, Some(basic_auth_body("reviewer"))).await;
    assert_eq!(status, 200, "{view}");
    expect(port, Some(host), "/", INSIDE, None, 401).await;
    expect(
        port,
        Some(host),
        "/",
        INSIDE,
        Some(("reviewer", PASSWORD)),
        200,
    )
    .await;
    let change = json!({ "allow": ["127.0.0.1"] });
    let (status, view) = access_api(&api, "PATCH", REPO, Some(change.to_string())).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["allow"], json!(["127.0.0.1/32"]));
    // Both set: both apply.
    expect(
        port,
        Some(host),
        "/",
        OUTSIDE,
        Some(("reviewer", PASSWORD)),
        403,
    )
    .await;
    expect(port, Some(host), "/", INSIDE, None, 401).await;
    expect(
        port,
        Some(host),
        "/",
        INSIDE,
        Some(("reviewer", PASSWORD)),
        200,
    )
    .await;
    wait_for_http(port, "/nginx-health", Duration::from_secs(5), |a| {
        a.status == 200
    })
    .await;
    orch.shutdown().await;
}

/// A real preview on the engine, of a repository whose access was set before its first deploy:
/// the readiness check polls the app's host port, around nginx, so the deploy succeeds; the
/// preview then asks for the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployed_preview_asks_for_the_password_and_its_health_check_goes_around_it() {
    let e2e = E2e::start("access", &[("--nginx-worker-group", worker_group())]).await;
    let (status, view) = access_api(
        &e2e.api,
        "PATCH",
        &e2e.repo,
        Some(basic_auth_body("reviewer")),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let pr = 5;
    let sha = e2e
        .commit(pr, &Tree::fixture("python-plain"), "a protected preview")
        .await;
    e2e.send("opened", pr, &sha).await;
    e2e.wait_comment(pr, &["Preview live"], Duration::from_secs(300))
        .await;
    let conf =
        std::fs::read_to_string(e2e.nginx.conf_dir().join(format!("{}.conf", e2e.id(pr)))).unwrap();
    assert!(conf.contains("/access/octo-org.access-"), "{conf}");
    let port = e2e.nginx.port();
    let path = e2e.path(pr);
    expect(port, None, &path, INSIDE, None, 401).await;
    expect(port, None, &path, INSIDE, Some(("reviewer", PASSWORD)), 200).await;
    let (status, view) = access_api(&e2e.api, "GET", &e2e.repo, None).await;
    assert_eq!(
        (status, view["uncovered"].clone()),
        (200, json!([])),
        "{view}"
    );
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}
