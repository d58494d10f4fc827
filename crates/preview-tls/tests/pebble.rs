//! A real wildcard certificate from pebble (Debian's `pebble` package: the ACME test server and
//! its mock DNS, pebble-challtestsrv), issued over DNS-01, installed in a private nginx and
//! fetched over HTTPS with curl against pebble's root; then renewed by issuing again.
//! Everything listens on 127.0.0.1 and is stopped at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use preview_core::render::{HostRoute, HostTls, RenderInput, ServiceRoute, render_nginx};
use preview_exec::Cmd;
use preview_testkit::{PrivateNginx, free_port};
use preview_tls::{AcmeSettings, CertificateInfo, CertificateIssuer, ChallTestSrv};

const DOMAIN: &str = "preview.test";
const HOST: &str = "x-pr-1.preview.test";
/// The host of the preview's second web service (`preview.hostname: admin`), one DNS label
/// deep too, so the same wildcard certificate covers it.
const ADMIN_HOST: &str = "x-pr-1-admin.preview.test";

/// A test server process, killed (and reaped) on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &'static str, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program}: {e}; run scripts/testbed.sh (it installs Debian's pebble package)")
        });
    Running(child)
}

async fn run(cmd: Cmd) -> String {
    let what = cmd.display();
    cmd.timeout(Duration::from_secs(30))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .stdout_text()
}

/// A throwaway CA and a 127.0.0.1 certificate for pebble's own listeners (the package ships none).
async fn listener_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Cmd::new("openssl", "make the listener CA")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", &p("ca.key"), "-out", &p("ca.pem"), "-days", "2"])
        .args(["-subj", "/CN=pebble listener test CA"]))
    .await;
    run(Cmd::new("openssl", "make the listener key and CSR")
        .arg("req")
        .args(ec)
        .args(["-keyout", &p("listener.key"), "-out", &p("listener.csr")])
        .args(["-subj", "/CN=localhost"]))
    .await;
    run(Cmd::new("openssl", "sign the listener certificate").args([
        "x509",
        "-req",
        "-in",
        &p("listener.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("leaf.ext"),
        "-out",
        &p("listener.pem"),
    ]))
    .await;
    (
        dir.join("ca.pem"),
        dir.join("listener.pem"),
        dir.join("listener.key"),
    )
}

/// Whether 127.0.0.1:`port` accepts a connection within `within`.
async fn listens(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tiny backend standing in for a preview's app.
async fn backend(body: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// curl over HTTPS to the preview's hostname, verifying against `root`; (body, served leaf).
async fn fetch_https(tls_port: u16, root: &Path) -> (String, CertificateInfo) {
    fetch_https_at(HOST, tls_port, root).await
}

/// curl over HTTPS to `host`, verifying against `root`; (body, served leaf).
async fn fetch_https_at(host: &str, tls_port: u16, root: &Path) -> (String, CertificateInfo) {
    let resolve = format!("{host}:{tls_port}:127.0.0.1");
    let url = format!("https://{host}:{tls_port}/");
    let out = run(Cmd::new("curl", "fetch the preview over HTTPS").args([
        "--silent",
        "--show-error",
        "--fail",
        "--resolve",
        &resolve,
        "--cacert",
        &root.display().to_string(),
        "--write-out",
        "\n@@certs@@\n%{certs}",
        &url,
    ]))
    .await;
    let (body, certs) = out.split_once("\n@@certs@@\n").unwrap();
    let leaf = CertificateInfo::from_pem(certs.as_bytes())
        .unwrap_or_else(|e| panic!("curl's %{{certs}} has no certificate ({e}): {certs}"));
    (body.to_owned(), leaf)
}

/// pebble and pebble-challtestsrv on free loopback ports, stopped on drop.
struct Pebble {
    _challtestsrv: Running,
    _pebble: Running,
    acme_port: u16,
    mgmt_port: u16,
    challtestsrv_port: u16,
    listener_ca: PathBuf,
}

impl Pebble {
    /// `envs` go to pebble on top of `PEBBLE_VA_NOSLEEP=1` (e.g. its nonce rejection rate).
    /// A port taken between picking and binding (tests run in parallel) means a fresh try.
    async fn start(dir: &Path, envs: &[(&str, &str)]) -> Self {
        let (listener_ca, listener_cert, listener_key) = listener_certificate(dir).await;
        for _ in 0..3 {
            let pebble = Self::start_once(dir, envs, &listener_ca, &listener_cert, &listener_key);
            let within = Duration::from_secs(10);
            if listens(pebble.challtestsrv_port, within).await
                && listens(pebble.acme_port, within).await
                && listens(pebble.mgmt_port, within).await
            {
                return pebble;
            }
        }
        let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        panic!(
            "pebble or pebble-challtestsrv did not start; challtestsrv.log:\n{}\npebble.log:\n{}",
            log("challtestsrv.log"),
            log("pebble.log")
        );
    }

    fn start_once(
        dir: &Path,
        envs: &[(&str, &str)],
        listener_ca: &Path,
        listener_cert: &Path,
        listener_key: &Path,
    ) -> Self {
        let (dns_port, challtestsrv_port) = (free_port(), free_port());
        let (acme_port, mgmt_port) = (free_port(), free_port());
        let dns_addr = format!("127.0.0.1:{dns_port}");
        let challtestsrv = spawn(
            "pebble-challtestsrv",
            &[
                "-dns01",
                &dns_addr,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{challtestsrv_port}"),
            ],
            &[],
            &dir.join("challtestsrv.log"),
        );
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": listener_cert, "privateKey": listener_key,
            "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let mut all_envs = vec![("PEBBLE_VA_NOSLEEP", "1")];
        all_envs.extend_from_slice(envs);
        let pebble = spawn(
            "pebble",
            &[
                "-config",
                &dir.join("pebble.json").display().to_string(),
                "-dnsserver",
                &dns_addr,
            ],
            &all_envs,
            &dir.join("pebble.log"),
        );
        Self {
            _challtestsrv: challtestsrv,
            _pebble: pebble,
            acme_port,
            mgmt_port,
            challtestsrv_port,
            listener_ca: listener_ca.to_owned(),
        }
    }

    /// An issuer for `*.preview.test` + `preview.test` writing under `dir`.
    fn issuer(&self, dir: &Path) -> CertificateIssuer<ChallTestSrv> {
        let settings = AcmeSettings {
            directory_url: format!("https://127.0.0.1:{}/dir", self.acme_port),
            domain: DOMAIN.into(),
            contact_email: Some("ops@preview.test".into()),
            account_file: dir.join("state/acme-account.json"),
            acme_root: Some(self.listener_ca.clone()),
            cert_dir: dir.join("tls"),
            propagation_wait: Duration::ZERO,
        };
        CertificateIssuer::new(
            settings,
            ChallTestSrv::new(&format!("http://127.0.0.1:{}", self.challtestsrv_port)),
        )
    }
}

#[tokio::test]
async fn pebble_issues_a_wildcard_certificate_that_nginx_serves_and_renews() {
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path();
    // pebble's default 5% badNonce rejection stays on: the issuer must cope with it.
    let pebble = Pebble::start(root_dir, &[]).await;
    let (listener_ca, pebble_mgmt_port) = (pebble.listener_ca.clone(), pebble.mgmt_port);
    let issuer = pebble.issuer(root_dir);
    let started = Instant::now();
    let first = issuer
        .ensure()
        .await
        .unwrap()
        .expect("no certificate yet, so it issues");
    eprintln!("issued {} in {:?}", first.serial, started.elapsed());
    let mut names = first.names.clone();
    names.sort();
    assert_eq!(names, ["*.preview.test", "preview.test"]);
    let files = issuer.files();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(files.private_key())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    assert_eq!(
        issuer.ensure().await.unwrap(),
        None,
        "a fresh certificate is not renewed"
    );

    // Pebble's root changes with every start; it is served on the management port.
    let root_pem = run(Cmd::new("curl", "fetch pebble's root").args([
        "--silent",
        "--show-error",
        "--fail",
        "--cacert",
        &listener_ca.display().to_string(),
        &format!("https://127.0.0.1:{pebble_mgmt_port}/roots/0"),
    ]))
    .await;
    let pebble_root = root_dir.join("pebble-root.pem");
    std::fs::write(&pebble_root, root_pem).unwrap();

    // The preview's real server block, as the orchestrator renders it with the certificate.
    let (app_port, _app) = backend("hello from pr-1 over nginx").await;
    let (admin_port, _admin) = backend("hello from the admin of pr-1").await;
    let nginx = PrivateNginx::start_with_hostnames().await;
    let tls_port = free_port();
    let mut input = RenderInput::new(
        "x-pr-1",
        "octo/x",
        1,
        "0123456789abcdef0123456789abcdef01234567",
        "x",
        app_port,
        root_dir,
        root_dir.join("Dockerfile"),
        "0123456789abcdefXYZ",
    );
    input.host = Some(HostRoute {
        hostname: HOST.into(),
        listen: vec![format!("127.0.0.1:{}", nginx.port())],
        tls: Some(HostTls {
            listen: vec![format!("127.0.0.1:{tls_port}")],
            certificate: files.fullchain().display().to_string(),
            key: files.private_key().display().to_string(),
        }),
    });
    let admin_route = HostRoute {
        hostname: ADMIN_HOST.into(),
        ..input.host.clone().unwrap()
    };
    input.service_route = Some(ServiceRoute {
        host_port: admin_port,
        route: admin_route,
    });
    let conf = render_nginx(&input).unwrap();
    std::fs::write(nginx.conf_dir().join("x-pr-1.conf"), conf).unwrap();
    nginx.test_config().await.unwrap();
    nginx.reload().await;
    wait_for_port(tls_port, "nginx's TLS listener").await;

    let (body, served) = fetch_https(tls_port, &pebble_root).await;
    assert_eq!(body, "hello from pr-1 over nginx");
    assert_eq!(
        served.serial, first.serial,
        "nginx serves the issued certificate"
    );
    // The second web service's host, from the same conf, with the same wildcard certificate.
    let (body, served) = fetch_https_at(ADMIN_HOST, tls_port, &pebble_root).await;
    assert_eq!(body, "hello from the admin of pr-1");
    assert_eq!(served.serial, first.serial, "the one wildcard certificate");

    // Plain HTTP now only redirects (polled: old workers answer for a moment after a reload).
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = preview_testkit::http_get_host(nginx.port(), HOST, "/a?b=1")
            .await
            .unwrap();
        if answer.status == 308 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.status, 308, "{answer:?}");
    assert!(
        answer
            .headers
            .contains(&format!("Location: https://{HOST}/a?b=1")),
        "{}",
        answer.headers
    );

    // Renewal is issuing again; nginx picks the new files up on reload.
    let second = issuer.issue().await.unwrap();
    assert_ne!(second.serial, first.serial);
    nginx.reload().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (body, served) = fetch_https(tls_port, &pebble_root).await;
        assert_eq!(body, "hello from pr-1 over nginx");
        if served.serial == second.serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx still serves {}",
            served.serial
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A quarter of nonces refused: instant-acme resends with the fresh nonce of the refusal, and the
/// issuer restarts an order that still fails, so issuance goes through.
#[tokio::test]
async fn issuance_survives_frequent_bad_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(dir.path(), &[("PEBBLE_WFE_NONCEREJECT", "25")]).await;
    let issuer = pebble.issuer(dir.path());
    for _ in 0..2 {
        let cert = issuer.issue().await.unwrap();
        assert!(cert.names.iter().any(|n| n == "*.preview.test"), "{cert:?}");
    }
    let log = std::fs::read_to_string(dir.path().join("pebble.log")).unwrap();
    // pebble does not log each refusal; two orders make some 25 signed requests, so at 25% the
    // chance that none was refused is below 0.1%.
    assert!(
        log.contains("Configured to reject 25% of good nonces"),
        "pebble did not take the rejection rate:\n{log}"
    );
}
