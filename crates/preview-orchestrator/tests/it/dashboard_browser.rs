//! The dashboard in a real browser: headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol, logs in, sees a running and a failed preview, opens the failed one's build
//! log, presses redeploy and sees its state change; also at a phone's width. Screenshots are kept
//! under `{CARGO_TARGET_TMPDIR}/dashboard-screenshots/`.
//!
//! The DevTools protocol speaks WebSocket; the few frames it needs (masked text frames out,
//! unmasked text frames in) are written here rather than adding a WebSocket crate for a test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use preview_core::id::{CommitSha, PreviewId};
use preview_orchestrator::build_logs;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{ID2, TOKEN, TestServer, sha};

/// The Chromium binary: Debian's `chromium`, installed by scripts/testbed.sh.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed; missing: Debian's chromium package (scripts/testbed.sh installs it)")
}

/// One page of a headless Chromium, over the DevTools protocol.
struct Browser {
    ws: TcpStream,
    next_id: u64,
    _process: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = preview_testkit::free_port();
        let cmd = preview_exec::Cmd::new(chromium(), "headless Chromium for the dashboard test")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1280,900",
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .pass_env("HOME")
            .timeout(Duration::from_secs(300));
        // Dropping the task's future (abort) kills the browser's process group.
        let process = tokio::spawn(async move {
            let _ = cmd.output().await;
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_ws = loop {
            let answer = reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await;
            if let Ok(answer) = answer
                && let Ok(list) = answer.json::<Value>().await
                && let Some(url) = list
                    .as_array()
                    .and_then(|l| l.iter().find(|t| t["type"] == "page"))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools did not answer on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let path = page_ws
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap();
        let mut ws = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        ws.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // The handshake's answer ends with an empty line; no frame comes before we send one.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(ws.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut browser = Self {
            ws,
            next_id: 1,
            _process: process,
            _profile: profile,
        };
        browser.call("Page.enable", json!({})).await;
        browser
    }

    async fn send_frame(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.ws.write_all(&frame).await.unwrap();
    }

    async fn read_message(&mut self) -> Value {
        let mut message = Vec::new();
        loop {
            let b0 = self.ws.read_u8().await.unwrap();
            let b1 = self.ws.read_u8().await.unwrap();
            let len = match b1 & 0x7f {
                126 => u64::from(self.ws.read_u16().await.unwrap()),
                127 => self.ws.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.ws.read_exact(&mut payload).await.unwrap();
            message.extend_from_slice(&payload);
            if b0 & 0x80 != 0 {
                return serde_json::from_slice(&message).unwrap();
            }
        }
    }

    /// Calls a DevTools method and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Browser::call`], returning DevTools' error instead of failing on it.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_frame(&json!({ "id": id, "method": method, "params": params }).to_string())
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let message = tokio::time::timeout_at(deadline.into(), self.read_message())
                .await
                .unwrap_or_else(|_| panic!("{method} got no answer"));
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until the page at a path ending in `path_end` has loaded.
    async fn wait_for_page(&mut self, path_end: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The page may be navigating away as it is asked ("Inspected target navigated or
            // closed"): that is not loaded yet, so ask again.
            let state = match self
                .try_call(
                    "Runtime.evaluate",
                    json!({
                        "expression": "document.readyState + ' ' + location.pathname + location.search",
                        "returnByValue": true
                    }),
                )
                .await
            {
                Ok(result) => result["result"]["value"].as_str().unwrap_or_default().to_owned(),
                Err(error) if error["message"].as_str().is_some_and(|m| m.contains("navigated")) => {
                    String::new()
                }
                Err(error) => panic!("Runtime.evaluate: {error}"),
            };
            if let Some(path) = state.strip_prefix("complete ")
                && path.ends_with(path_end)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {path_end}, at {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

#[tokio::test]
async fn a_person_logs_in_reads_a_failed_build_log_and_redeploys_in_chromium() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    *s.runner.fail_sha.lock().unwrap() = Some(sha(3, 1));
    assert_eq!(s.pull_request("opened", 2, &sha(2, 1)).await.0, 202);
    assert_eq!(s.pull_request("opened", 3, &sha(3, 1)).await.0, 202);
    s.idle().await;
    let failed = "codertocat-hello-world-pr-3";
    let log = s.dir.path().join("build.log");
    std::fs::write(&log, "Step 4/6 : RUN pip install -r requirements.txt\nERROR: No matching distribution found for flask==99\n").unwrap();
    build_logs::archive(
        &s.dir.path().join("logs"),
        &PreviewId::parse(failed).unwrap(),
        &CommitSha::parse(&sha(3, 1)).unwrap(),
        &log,
        14,
    )
    .unwrap();

    let mut browser = Browser::launch().await;
    // Not logged in: the dashboard sends the browser to its login form.
    browser
        .call(
            "Page.navigate",
            json!({ "url": format!("{}/dashboard", s.base) }),
        )
        .await;
    browser.wait_for_page("/dashboard/login").await;
    browser
        .eval(&format!(
            "document.getElementById('token').value = '{TOKEN}'; document.getElementById('login').submit(); true"
        ))
        .await;
    browser.wait_for_page("/dashboard/").await;
    let list = browser.text().await;
    for expected in [
        "Codertocat/Hello-World #2",
        "Codertocat/Hello-World #3",
        "running",
        "failed",
        "build: exit status 1",
        "MEMORY", // the card titles are uppercased by CSS, and innerText shows what is seen
        "QUEUE",
    ] {
        assert!(
            list.contains(expected),
            "the list shows {expected:?}:\n{list}"
        );
    }
    browser.screenshot("list").await;

    // At a phone's width nothing runs off the side.
    browser
        .call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser.call("Page.reload", json!({})).await;
    browser.wait_for_page("/dashboard/").await;
    let fits = browser
        .eval("document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(fits, true, "the list fits a 390 px wide screen");
    browser.screenshot("list-phone").await;
    browser
        .call("Emulation.clearDeviceMetricsOverride", json!({}))
        .await;

    // The failed preview's page, then its build log.
    browser
        .eval(&format!("document.querySelector('#preview-{failed} a[href$=\"/previews/{failed}\"]').click(); true"))
        .await;
    browser.wait_for_page(&format!("/previews/{failed}")).await;
    assert_eq!(
        browser
            .eval("document.getElementById('state').innerText")
            .await,
        "failed"
    );
    browser
        .eval("document.querySelector('#builds a').click(); true")
        .await;
    browser.wait_for_page(".log").await;
    let log_text = browser
        .eval("document.getElementById('build-log').innerText")
        .await;
    assert!(
        log_text
            .as_str()
            .unwrap()
            .contains("ERROR: No matching distribution found for flask==99"),
        "{log_text}"
    );
    browser.screenshot("build-log").await;
    browser
        .call(
            "Page.navigate",
            json!({ "url": format!("{}/dashboard/previews/{failed}", s.base) }),
        )
        .await;
    browser.wait_for_page(&format!("/previews/{failed}")).await;

    // Redeploy, confirmed; the fixed commit now builds, and the page shows it running.
    *s.runner.fail_sha.lock().unwrap() = None;
    browser
        .eval("document.querySelector('#actions a[href$=\"/actions/redeploy\"]').click(); true")
        .await;
    browser.wait_for_page("/actions/redeploy").await;
    browser.screenshot("confirm-redeploy").await;
    browser
        .eval("document.querySelector('#confirm button[type=submit]').click(); true")
        .await;
    browser.wait_for_page("?notice=redeploy").await;
    assert!(browser.text().await.contains("Redeploy queued."));
    s.idle().await;
    browser.call("Page.reload", json!({})).await;
    browser
        .wait_for_page(&format!("/previews/{failed}?notice=redeploy"))
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('state').innerText")
            .await,
        "running"
    );
    browser.screenshot("after-redeploy").await;
    let redeploys = s
        .runner
        .calls()
        .iter()
        .filter(|c| c.kind == "deploy" && c.id == failed)
        .count();
    assert_eq!(redeploys, 2);
    // The running one was left alone.
    assert_eq!(s.runner.calls().iter().filter(|c| c.id == ID2).count(), 1);
}
