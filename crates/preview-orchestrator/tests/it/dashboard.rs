//! The dashboard through the real HTTP server: access, pages, actions with CSRF, 404s, secrets
//! never shown, and live logs of a real container over Server-Sent Events.

use std::time::Duration;

use preview_core::id::{CommitSha, PreviewId};
use preview_orchestrator::build_logs;
use reqwest::header;

use crate::harness::{ID2, REPO, TOKEN, TestServer, sha};

const PLANTED: &str = "sk_live_planted_0xDEADBEEF_value";

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The page as a browser reads its text: minijinja escapes `/` and quotes in text and attributes.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// GETs a page: its status and its unescaped text.
async fn get(s: &TestServer, path: &str, auth: Auth<'_>) -> (u16, String) {
    let (status, raw) = get_raw(s, path, auth).await;
    (status, unescape(&raw))
}

async fn get_raw(s: &TestServer, path: &str, auth: Auth<'_>) -> (u16, String) {
    let mut req = client().get(format!("{}{path}", s.base));
    req = auth.apply(req);
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn post(
    s: &TestServer,
    path: &str,
    auth: Auth<'_>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    auth.apply(client().post(format!("{}{path}", s.base)))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer,
    Cookie(&'a str),
}

impl Auth<'_> {
    fn apply(self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Bearer => req.bearer_auth(TOKEN),
            Auth::Cookie(c) => req.header(header::COOKIE, format!("preview_dashboard_session={c}")),
        }
    }
}

/// Logs in through the form; returns the session id of the cookie.
async fn login(s: &TestServer) -> String {
    let r = post(s, "/dashboard/login", Auth::None, &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 303);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("preview_dashboard_session=")
        .unwrap()
        .to_owned()
}

/// The CSRF token of a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("the page has a CSRF field")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// A server with PR 2 running and PR 3 failed.
async fn two_previews() -> TestServer {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    *s.runner.fail_sha.lock().unwrap() = Some(sha(3, 1));
    assert_eq!(s.pull_request("opened", 2, &sha(2, 1)).await.0, 202);
    assert_eq!(s.pull_request("opened", 3, &sha(3, 1)).await.0, 202);
    s.idle().await;
    s
}

#[tokio::test]
async fn without_a_token_or_session_browsers_go_to_the_login_and_others_get_401() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let r = client()
        .get(format!("{}/dashboard", s.base))
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/dashboard/login");
    assert_eq!(get(&s, "/dashboard", Auth::None).await.0, 401);
    assert_eq!(
        get(&s, &format!("/dashboard/previews/{ID2}"), Auth::None)
            .await
            .0,
        401
    );
    assert_eq!(
        get(
            &s,
            &format!("/dashboard/previews/{ID2}/logs/live"),
            Auth::None
        )
        .await
        .0,
        401
    );
    let (status, html) = get(&s, "/dashboard/login", Auth::None).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"<form method="post" action="/dashboard/login""#));

    let wrong = client()
        .get(format!("{}/dashboard", s.base))
        .bearer_auth("wrong-token-wrong-token-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let (status, html) = get(&s, "/dashboard", Auth::Bearer).await;
    assert_eq!(status, 200);
    assert!(html.contains("No previews yet"), "{html}");

    // Through the local nginx (forwarding headers) the dashboard answers, unlike the API, and
    // its links follow the prefix nginx names.
    let r = client()
        .get(format!("{}/dashboard/", s.base))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-dashboard-prefix", "/_dashboard")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(unescape(&r.text().await.unwrap()).contains(r#"href="/_dashboard/""#));
    let api = client()
        .get(format!("{}/api/previews", s.base))
        .bearer_auth(TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403, "the internal API stays loopback-only");
}

#[tokio::test]
async fn the_login_form_sets_a_strict_session_cookie_and_logout_ends_it() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let bad = post(
        &s,
        "/dashboard/login",
        Auth::None,
        &[("token", "not-the-token")],
    )
    .await;
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get(header::SET_COOKIE).is_none());
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("That is not the API token")
    );

    let r = post(&s, "/dashboard/login", Auth::None, &[("token", TOKEN)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/dashboard/");
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    for flag in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.split("; ").any(|p| p == flag), "{flag} in {cookie}");
    }
    let session = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("preview_dashboard_session=")
        .unwrap();
    assert_eq!(session.len(), 64);
    let (status, html) = get(&s, "/dashboard/", Auth::Cookie(session)).await;
    assert_eq!(status, 200);
    assert!(html.contains("session "), "the page names the viewer");
    assert_eq!(
        get(&s, "/dashboard/", Auth::Cookie("0000forged")).await.0,
        401
    );

    // Logging out needs the session's CSRF token, then the cookie is worthless.
    let forged = post(
        &s,
        "/dashboard/logout",
        Auth::Cookie(session),
        &[("csrf", "x")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    let csrf = csrf_of(&html);
    let out = post(
        &s,
        "/dashboard/logout",
        Auth::Cookie(session),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(get(&s, "/dashboard/", Auth::Cookie(session)).await.0, 401);
}

#[tokio::test]
async fn the_list_and_a_preview_page_show_the_records() {
    let s = two_previews().await;
    let id3 = "codertocat-hello-world-pr-3";
    let (status, html) = get(&s, "/dashboard", Auth::Bearer).await;
    assert_eq!(status, 200);
    for expected in [
        r#"<a href="https://github.com/Codertocat/Hello-World/pull/2">#2</a>"#,
        r#"<a href="https://github.com/Codertocat/Hello-World/pull/3">#3</a>"#,
        &format!(r#"<tr id="preview-{ID2}">"#),
        r#"<span class="state state-running">running</span>"#,
        r#"<span class="state state-failed">failed</span>"#,
        "build: exit status 1",
        &sha(2, 1)[..7],
        "https://previews.example/codertocat-hello-world/pr-2/",
        r#"<div class="card" id="queue"><h2>Queue</h2>0 queued · 0 running"#,
        "<h2>Memory</h2>",
    ] {
        assert!(
            html.contains(expected),
            "the list shows {expected:?}:\n{html}"
        );
    }

    // A deploy's kept build log is on the preview's page, whole and without colour codes.
    let config_logs = s.dir.path().join("logs");
    let log = s.dir.path().join("build.log");
    std::fs::write(
        &log,
        "Step 1/3 : FROM python\n\u{1b}[31mERROR: boom\u{1b}[0m\n",
    )
    .unwrap();
    let id = PreviewId::parse(id3).unwrap();
    build_logs::archive(
        &config_logs,
        &id,
        &CommitSha::parse(&sha(3, 1)).unwrap(),
        &log,
        14,
    )
    .unwrap();
    let (status, page) = get(&s, &format!("/dashboard/previews/{id3}"), Auth::Bearer).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(r#"<span class="state state-failed" id="state">failed</span>"#),
        "{page}"
    );
    assert!(
        page.contains("Step 1/3 : FROM python\nERROR: boom"),
        "{page}"
    );
    assert!(!page.contains('\u{1b}'));
    for state in ["queued", "building", "failed"] {
        assert!(
            page.contains(&format!(
                r#"<td><span class="state state-{state}">{state}</span></td>"#
            )),
            "history has {state}"
        );
    }
    let (_, running) = get(&s, &format!("/dashboard/previews/{ID2}"), Auth::Bearer).await;
    assert!(running.contains(r#"id="state">running</span>"#));
    assert!(running.contains("/actions/redeploy") && running.contains("/actions/destroy"));
    // The recording runner walks building → starting → running, so the times are known.
    assert!(!running.contains("build — · start —"), "{running}");
    // The kept log's own page.
    let name = build_logs::list(&config_logs, s.dir.path(), &id)[0]
        .name
        .clone();
    let (status, whole) = get(
        &s,
        &format!("/dashboard/previews/{id3}/builds/{name}"),
        Auth::Bearer,
    )
    .await;
    assert_eq!(status, 200);
    assert!(whole.contains("ERROR: boom"));
}

#[tokio::test]
async fn actions_need_the_csrf_token_and_a_confirmation_then_queue_jobs() {
    let s = two_previews().await;
    let session = login(&s).await;
    let action = |a: &str| format!("/dashboard/previews/{ID2}/actions/{a}");
    let deploys_before = s
        .runner
        .calls()
        .iter()
        .filter(|c| c.kind == "deploy")
        .count();

    // Missing, forged, or another session's token: 403, and nothing queued.
    let missing = post(
        &s,
        &action("redeploy"),
        Auth::Cookie(&session),
        &[("confirmed", "yes")],
    )
    .await;
    assert_eq!(missing.status(), 403);
    let forged = post(
        &s,
        &action("redeploy"),
        Auth::Cookie(&session),
        &[("csrf", "forged"), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    let other = login(&s).await;
    let (_, other_page) = get(&s, &action("redeploy"), Auth::Cookie(&other)).await;
    let other_csrf = csrf_of(&other_page);
    let cross = post(
        &s,
        &action("redeploy"),
        Auth::Cookie(&session),
        &[("csrf", &other_csrf), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(cross.status(), 403);

    // The confirmation page carries the session's token; without `confirmed` the post goes back.
    let (status, confirm) = get(&s, &action("redeploy"), Auth::Cookie(&session)).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Yes, redeploy"));
    let csrf = csrf_of(&confirm);
    let unconfirmed = post(
        &s,
        &action("redeploy"),
        Auth::Cookie(&session),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(unconfirmed.status(), 303);
    assert_eq!(unconfirmed.headers()[header::LOCATION], action("redeploy"));
    s.idle().await;
    assert_eq!(
        s.runner
            .calls()
            .iter()
            .filter(|c| c.kind == "deploy")
            .count(),
        deploys_before
    );

    let done = post(
        &s,
        &action("redeploy"),
        Auth::Cookie(&session),
        &[("csrf", &csrf), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()[header::LOCATION],
        format!("/dashboard/previews/{ID2}?notice=redeploy")
    );
    s.idle().await;
    let deploys: Vec<_> = s
        .runner
        .calls()
        .into_iter()
        .filter(|c| c.kind == "deploy" && c.id == ID2)
        .collect();
    assert_eq!(deploys.len(), 2, "the redeploy ran: {deploys:?}");
    let (_, page) = get(
        &s,
        &format!("/dashboard/previews/{ID2}?notice=redeploy"),
        Auth::Cookie(&session),
    )
    .await;
    assert!(page.contains("Redeploy queued."));

    let destroyed = post(
        &s,
        &action("destroy"),
        Auth::Cookie(&session),
        &[("csrf", &csrf), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(destroyed.status(), 303);
    s.idle().await;
    assert!(
        s.runner
            .calls()
            .iter()
            .any(|c| c.kind == "teardown" && c.id == ID2)
    );

    // A bearer client posts with the token holders' CSRF token, from any page's form.
    let (_, page) = get(&s, &action("redeploy"), Auth::Bearer).await;
    let bearer_csrf = csrf_of(&page);
    assert_ne!(bearer_csrf, csrf);
    let r = post(
        &s,
        "/dashboard/previews/codertocat-hello-world-pr-3/actions/redeploy",
        Auth::Bearer,
        &[("csrf", &bearer_csrf), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn unknown_previews_actions_and_logs_are_404_never_500() {
    let s = two_previews().await;
    let (_, page) = get(&s, "/dashboard", Auth::Bearer).await;
    let csrf = csrf_of(&page);
    for path in [
        "/dashboard/previews/nobody-nothing-pr-9",
        "/dashboard/previews/not%20an%20id",
        "/dashboard/previews/..%2F..%2Fetc",
        "/dashboard/previews/codertocat-hello-world-pr-0",
        &format!("/dashboard/previews/{ID2}/builds/..%2F..%2Fdeployments.json"),
        &format!("/dashboard/previews/{ID2}/builds/20261206T064419Z-0123abc.log"),
        &format!("/dashboard/previews/{ID2}/actions/sleep"),
        "/dashboard/previews/nobody-nothing-pr-9/actions/redeploy",
        "/dashboard/previews/nobody-nothing-pr-9/logs/live",
        "/dashboard/no/such/page",
    ] {
        let (status, html) = get(&s, path, Auth::Bearer).await;
        assert_eq!(status, 404, "{path}: {html}");
        assert!(html.contains("All previews"), "{path} answers a page");
    }
    for path in [
        "/dashboard/previews/nobody-nothing-pr-9/actions/redeploy",
        &format!("/dashboard/previews/{ID2}/actions/sleep"),
    ] {
        let r = post(
            &s,
            path,
            Auth::Bearer,
            &[("csrf", &csrf), ("confirmed", "yes")],
        )
        .await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // A body that is not a form at all is a refusal, not a crash.
    let r = client()
        .post(format!(
            "{}/dashboard/previews/{ID2}/actions/redeploy",
            s.base
        ))
        .bearer_auth(TOKEN)
        .body(vec![0xff, 0xfe, 0x00, b'%'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let huge = "a".repeat(64 * 1024);
    let r = post(
        &s,
        &format!("/dashboard/previews/{ID2}/actions/redeploy"),
        Auth::Bearer,
        &[("csrf", &huge)],
    )
    .await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn no_page_shows_a_planted_secret() {
    let s = two_previews().await;
    let r = s
        .http
        .put(format!("{}/api/repos/{REPO}/secrets/STRIPE_KEY", s.base))
        .bearer_auth(TOKEN)
        .body(PLANTED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // An app that printed its environment while building: the log is kept, and the work dir's.
    let id3 = "codertocat-hello-world-pr-3";
    let log = s.dir.path().join("build.log");
    std::fs::write(&log, format!("env:\nSTRIPE_KEY={PLANTED}\nError: boom\n")).unwrap();
    let id = PreviewId::parse(id3).unwrap();
    let logs_dir = s.dir.path().join("logs");
    build_logs::archive(
        &logs_dir,
        &id,
        &CommitSha::parse(&sha(3, 1)).unwrap(),
        &log,
        14,
    )
    .unwrap();
    let work_logs = s.dir.path().join("deployments").join(ID2).join("logs");
    std::fs::create_dir_all(&work_logs).unwrap();
    std::fs::copy(&log, work_logs.join("build.log")).unwrap();
    let name = build_logs::list(&logs_dir, s.dir.path(), &id)[0]
        .name
        .clone();

    let session = login(&s).await;
    let mut pages = vec![
        "/dashboard".to_owned(),
        "/dashboard/login".to_owned(),
        format!("/dashboard/previews/{id3}"),
        format!("/dashboard/previews/{ID2}"),
        format!("/dashboard/previews/{id3}/builds/{name}"),
        format!("/dashboard/previews/{ID2}/builds/current"),
    ];
    for id in [ID2, id3] {
        for action in ["redeploy", "destroy"] {
            pages.push(format!("/dashboard/previews/{id}/actions/{action}"));
        }
    }
    let mut redacted = 0;
    for page in &pages {
        for auth in [Auth::Bearer, Auth::Cookie(&session)] {
            let (status, raw) = get_raw(&s, page, auth).await;
            assert!(!raw.contains(PLANTED), "{page} shows the secret");
            let html = unescape(&raw);
            assert!(status == 200 || status == 303, "{page}: {status}");
            assert!(!html.contains(PLANTED), "{page} shows the secret");
            assert!(
                !html.contains("sk_live_planted"),
                "{page} shows part of the secret"
            );
            redacted += html.matches("[redacted STRIPE_KEY]").count();
        }
    }
    assert!(
        redacted >= 4,
        "the logs were shown, redacted ({redacted} times)"
    );
}

/// Lines of an SSE body until `want` lines of data came, or `deadline` passed.
async fn sse_lines(resp: reqwest::Response, want: usize, deadline: Duration) -> Vec<String> {
    let mut resp = resp;
    let mut buffer = String::new();
    let mut data = Vec::new();
    let _ = tokio::time::timeout(deadline, async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(d) = line
                        .strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                    {
                        data.push(d.to_owned());
                    }
                }
            }
            if data.len() >= want {
                break;
            }
        }
    })
    .await;
    data
}

#[tokio::test]
async fn live_logs_stream_a_real_containers_lines_without_colours_or_secrets() {
    preview_testkit::require_docker().await;
    let s = TestServer::start(Duration::ZERO, &[]).await;
    let pr = 17_000 + u64::from(std::process::id() % 1000);
    assert_eq!(s.pull_request("opened", pr, &sha(pr, 1)).await.0, 202);
    s.idle().await;
    let id = format!("codertocat-hello-world-pr-{pr}");
    let r = s
        .http
        .put(format!("{}/api/repos/{REPO}/secrets/STRIPE_KEY", s.base))
        .bearer_auth(TOKEN)
        .body(PLANTED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // No container yet: the stream says so and ends.
    let resp = client()
        .get(format!("{}/dashboard/previews/{id}/logs/live", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.contains("event: info\ndata: no running containers"),
        "{body}"
    );
    assert!(body.contains("event: end"));

    let name = format!("dashboard-live-{pr}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &self.0])
                .output();
        }
    }
    let _remove = Remove(name.clone());
    let script = format!(
        "echo \"key={PLANTED}\"; i=0; while true; do i=$((i+1)); printf '\\033[32mline %s\\033[0m\\n' $i; sleep 0.2; done"
    );
    let container = preview_testkit::docker([
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={id}"),
        "--label",
        "com.docker.compose.service=app",
        "debian:bookworm-slim",
        "sh",
        "-c",
        &script,
    ])
    .await
    .expect("a container starts from the local debian:bookworm-slim image");
    let short_id = container.trim()[..12].to_owned();

    let resp = client()
        .get(format!("{}/dashboard/previews/{id}/logs/live", s.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines = sse_lines(resp, 6, Duration::from_secs(30)).await;
    assert!(lines.len() >= 6, "lines came: {lines:?}");
    assert_eq!(lines[0], "key=[redacted STRIPE_KEY]");
    assert_eq!(lines[1], "line 1");
    assert!(
        lines
            .iter()
            .all(|l| !l.contains('\u{1b}') && !l.contains("[32m")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("sk_live")));
    // The stream is gone with its reader; its `docker logs -f` must not linger.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let lingering = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l.contains("logs --follow") && l.contains(&short_id));
        if !lingering {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "docker logs -f still runs after the reader left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Ansible role's dashboard `location`, for a private nginx in front of `orchestrator`.
fn dashboard_location(orchestrator: &str) -> String {
    let template = preview_testkit::repo_root()
        .join("ansible/roles/nginx/templates/dashboard-location.conf.j2");
    std::fs::read_to_string(&template)
        .unwrap()
        .replace("{{ nginx_orchestrator_upstream }}", orchestrator)
}

#[tokio::test]
async fn through_nginx_at_slash_dashboard_only_the_dashboard_is_exposed() {
    let s = two_previews().await;
    let nginx = preview_testkit::PrivateNginx::start().await;
    let upstream = s.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        nginx.conf_dir().join("dashboard.conf"),
        dashboard_location(&upstream),
    )
    .unwrap();
    nginx
        .test_config()
        .await
        .expect("nginx takes the role's dashboard location");
    nginx.reload().await;
    let front = format!("http://127.0.0.1:{}", nginx.port());
    // A reload is graceful: an old worker may still take a new connection for a moment, so the
    // new config counts as in force after 10 answers in a row from it, on both paths.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let mut from_new_config = true;
        for path in ["/_dashboard/", "/_dashboard"] {
            let r = client().get(format!("{front}{path}")).send().await.unwrap();
            from_new_config &= r.status() != 404;
        }
        in_a_row = if from_new_config { in_a_row + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "nginx serves /_dashboard/ after the reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = client()
        .get(format!("{front}/_dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()[header::LOCATION].to_str().unwrap(),
        format!("{front}/_dashboard/")
    );
    let r = client()
        .get(format!("{front}/_dashboard/"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/_dashboard/login");

    // The login through nginx: the cookie's path is the public prefix.
    let r = client()
        .post(format!("{front}/_dashboard/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/_dashboard/");
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Path=/_dashboard;"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = client()
        .get(format!("{front}/_dashboard/previews/{ID2}"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = unescape(&r.text().await.unwrap());
    assert!(
        page.contains(&format!(
            r#"href="/_dashboard/previews/{ID2}/actions/redeploy""#
        )),
        "{page}"
    );

    // Live logs pass through unbuffered: the first event arrives (no containers for this one).
    let r = client()
        .get(format!("{front}/_dashboard/previews/{ID2}/logs/live"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .unwrap()
        .unwrap();
    assert!(body.contains("no running containers"), "{body}");

    // Nothing else of the orchestrator is reachable, not even by walking up from the prefix.
    for path in [
        "/api/previews",
        "/health",
        "/metrics",
        "/dashboard/",
        "/_dashboard/%2e%2e/api/previews",
        "/_dashboard/..%2fapi/previews",
        "/_dashboard/%2e%2e/health",
    ] {
        let r = client()
            .get(format!("{front}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            status == 404 || status == 403 || status == 400,
            "{path} through nginx: {status} {body}"
        );
        assert!(
            !body.contains("\"previews\"") && !body.contains("uptimeSeconds"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn at_its_own_hostname_the_orchestrator_keeps_the_dashboards_server_block() {
    let nginx = preview_testkit::PrivateNginx::start_with_hostnames().await;
    let port = nginx.port();
    let nginx_cmd = |extra: &str| {
        format!(
            "{} -p {} -c {} {extra}",
            preview_testkit::nginx_binary(),
            nginx.prefix().display(),
            nginx.conf_file().display()
        )
    };
    let tls_dir = tempfile::tempdir().unwrap();
    let extra = [
        "--preview-domain".to_owned(),
        "previews.test".to_owned(),
        "--dashboard-host".to_owned(),
        "dashboard.previews.test".to_owned(),
        "--nginx-config-dir".to_owned(),
        nginx.conf_dir().display().to_string(),
        "--nginx-test-command".to_owned(),
        nginx_cmd("-t"),
        "--nginx-reload-command".to_owned(),
        nginx_cmd("-s reload"),
        "--nginx-listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--nginx-tls-listen".to_owned(),
        format!("127.0.0.1:{}", preview_testkit::free_port()),
        "--tls-dir".to_owned(),
        tls_dir.path().display().to_string(),
    ];
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let s = TestServer::start(Duration::ZERO, &extra_refs).await;
    assert_eq!(s.pull_request("opened", 2, &sha(2, 1)).await.0, 202);
    s.idle().await;

    let front = format!("http://127.0.0.1:{port}");
    let at_host = |path: &str| {
        client()
            .get(format!("{front}{path}"))
            .header(header::HOST, "dashboard.previews.test")
    };
    // In force after ten answers in a row from it (see the test above: reloads are graceful).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let r = at_host("/").send().await.unwrap();
        in_a_row = if r.status() == 401 { in_a_row + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard's server block serves: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let block = std::fs::read_to_string(nginx.conf_dir().join("_dashboard.conf")).unwrap();
    assert!(
        block.contains("server_name dashboard.previews.test;") && !block.contains(" ssl;"),
        "{block}"
    );

    // At the root of its hostname: links, redirects and the cookie's path start at `/`.
    let r = at_host("/")
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()[header::LOCATION].to_str().unwrap()
        ),
        (303, "/login")
    );
    let r = client()
        .post(format!("{front}/login"))
        .header(header::HOST, "dashboard.previews.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Path=/;")
    );
    let r = at_host("/").bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = unescape(&r.text().await.unwrap());
    assert!(
        page.contains(&format!(r#"href="/previews/{ID2}""#)),
        "{page}"
    );
    // Only the dashboard is behind it.
    let r = at_host("/api/previews")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("\"previews\""));
    // Other hostnames still fall to the default server.
    let r = client()
        .get(format!("{front}/_dashboard/"))
        .header(header::HOST, "elsewhere.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Once the wildcard certificate exists, the block moves to HTTPS (nginx accepts it).
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=*.previews.test",
        ])
        .arg("-keyout")
        .arg(tls_dir.path().join("privkey.pem"))
        .arg("-out")
        .arg(tls_dir.path().join("fullchain.pem"))
        .output()
        .unwrap();
    assert!(openssl.status.success(), "{openssl:?}");
    let config =
        preview_orchestrator::Config::load(crate::harness::args(s.dir.path(), &extra_refs))
            .unwrap();
    let written = preview_orchestrator::dashboard::nginx_site::sync(
        &config,
        "dashboard.previews.test",
        s.orch().addr(),
    )
    .await
    .expect("nginx accepts the HTTPS block");
    assert!(written);
    let block = std::fs::read_to_string(nginx.conf_dir().join("_dashboard.conf")).unwrap();
    assert!(
        block.contains(" ssl;") && block.contains("return 308 https://$host$request_uri;"),
        "{block}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = at_host("/").send().await.unwrap();
        if r.status() == 308 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "plain HTTP redirects: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A writer for a tracing subscriber that keeps what it is given.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_orchestrators_log_names_who_did_an_action() {
    // The test's runtime runs on this one thread, with the server's tasks, so a thread-local
    // subscriber sees the orchestrator's log.
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this process may have cached an event's interest while no subscriber of
    // theirs wanted it (a missed "dashboard login" line once): ask every subscriber again.
    tracing::callsite::rebuild_interest_cache();
    let s = two_previews().await;
    let session = login(&s).await;
    let (_, confirm) = get(
        &s,
        &format!("/dashboard/previews/{ID2}/actions/destroy"),
        Auth::Cookie(&session),
    )
    .await;
    let label = confirm
        .split("<span class=\"who\">session ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the page names the session")
        .to_owned();
    let r = post(
        &s,
        &format!("/dashboard/previews/{ID2}/actions/destroy"),
        Auth::Cookie(&session),
        &[("csrf", &csrf_of(&confirm)), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let forged = post(
        &s,
        &format!("/dashboard/previews/{ID2}/actions/redeploy"),
        Auth::Cookie(&session),
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    s.idle().await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("dashboard action") && l.contains("destroy"))
        .unwrap_or_else(|| panic!("no action line in:\n{text}"));
    assert!(line.contains(&format!("by=session {label}")), "{line}");
    assert!(
        line.contains(&format!("preview={ID2}")) && line.contains("outcome=\"queued\""),
        "{line}"
    );
    assert!(
        !text.contains(&session),
        "the session's secret id is never logged"
    );
    assert!(text.contains("dashboard action refused: missing or wrong CSRF token"));
    assert!(
        text.contains(&format!("dashboard login session={label}")),
        "{text}"
    );
}
