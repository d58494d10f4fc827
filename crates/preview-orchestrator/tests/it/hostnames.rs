//! Previews at their own hostnames (PREVIEW_DOMAIN) on the real engine and a real nginx: the app
//! is served at `/` of `{slug}-pr-{N}.{domain}`, so its root-relative links load; a Host that
//! names no preview reaches none; the PR comment, the record and the app's PREVIEW_URL carry the
//! full URL. A repository's second web service (`preview.hostname`) is served at its own host
//! beside the app's, and stays private without hostnames.

use std::time::Duration;

use preview_testkit::{http_get_host, wait_for_http};

use crate::e2e_support::{E2e, PREVIEW_DOMAIN, Tree, services_of};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// A page whose stylesheet, script and link are root-relative, as most apps write them.
const APP: &str = r#"import http.server, os
PAGE = b'<html><head><link rel="stylesheet" href="/static/site.css"><script src="/static/app.js"></script></head><body><a href="/about">about</a> hostname-app</body></html>'
FILES = {"/": PAGE, "/about": b"about hostname-app", "/static/site.css": b"body { color: teal; }", "/static/app.js": b"console.log(1);"}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/env":
            body = os.environ.get("PREVIEW_URL", "") + "|" + os.environ.get("PREVIEW_BASE_PATH", "unset")
            body = body.encode()
        else:
            body = FILES.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"not here")
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Root-relative `href`/`src` targets in `html`.
fn root_relative_links(html: &str) -> Vec<String> {
    html.split(['"', '\''])
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].ends_with("href=") || w[0].ends_with("src="))
        .map(|w| w[1].to_owned())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_preview_is_served_at_the_root_of_its_own_hostname() {
    let e2e = E2e::start_with_hostnames("hosts", &[]).await;
    let pr = 21;
    let tree = Tree::fixture("python-plain").with("main.py", APP);
    let sha = e2e
        .commit(pr, &tree, "a page with root-relative links")
        .await;
    e2e.send("opened", pr, &sha).await;

    let host = format!("{}.{PREVIEW_DOMAIN}", e2e.id(pr).host_label());
    let url = format!("http://{host}/");
    let comment = e2e
        .wait_comment(pr, &["Preview live", &url], DEPLOY_TIMEOUT)
        .await;
    assert!(
        !comment.body.contains("/pr-21/"),
        "no path-routing URL: {}",
        comment.body
    );
    assert_eq!(
        e2e.record(pr).unwrap().url,
        url,
        "the record carries the URL"
    );

    // The page and every asset it links, through nginx, by Host alone.
    let port = e2e.nginx.port();
    let page = get_until_ok(port, &host, "/").await;
    assert!(page.body.contains("hostname-app"), "{}", page.body);
    let links = root_relative_links(&page.body);
    assert_eq!(links, ["/static/site.css", "/static/app.js", "/about"]);
    for link in &links {
        get_until_ok(port, &host, link).await;
    }
    // The app knows its public URL, and that nothing prefixes its paths.
    let env = http_get_host(port, &host, "/env").await.unwrap();
    assert_eq!(env.body, format!("{url}|"));

    // A Host that names no preview reaches none: not another label, not the bare IP.
    for other in [
        format!("{}-pr-999.{PREVIEW_DOMAIN}", e2e.id(pr).slug().as_str()),
        PREVIEW_DOMAIN.to_owned(),
        "127.0.0.1".to_owned(),
        format!("{host}.evil.example"),
    ] {
        let answer = http_get_host(port, &other, "/").await.unwrap();
        assert_eq!(answer.status, 404, "Host {other}: {answer:?}");
        assert!(!answer.body.contains("hostname-app"), "Host {other}");
    }

    // Closing removes the server block: its Host reaches nothing any more.
    e2e.send("closed", pr, &sha).await;
    wait_for_http(port, "/nginx-health", Duration::from_secs(5), |a| {
        a.status == 200
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = http_get_host(port, &host, "/").await.unwrap();
        if answer.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still served after close: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(pr).await;
    e2e.shutdown().await;
}

/// Upstream starters as their generators write them, by hostname: Express's page links its
/// stylesheet at `/stylesheets/style.css` and FastAPI's `/docs` loads `/openapi.json`, both
/// root-relative, which path routing breaks. Each must load through nginx by Host alone.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_starters_load_their_root_relative_assets_by_hostname() {
    let root = crate::upstream_e2e::upstream_dir();
    let e2e = E2e::start_with_hostnames("hosts-upstream", &[]).await;
    let port = e2e.nginx.port();
    for (pr, name, page, assets) in [
        (31, "express", "/", &["/stylesheets/style.css"][..]),
        (32, "fastapi", "/docs", &["/openapi.json"][..]),
    ] {
        let (tree, _source) = crate::upstream_e2e::load(&root, name);
        let sha = e2e.commit(pr, &tree, "upstream starter").await;
        e2e.send("opened", pr, &sha).await;
        let host = format!("{}.{PREVIEW_DOMAIN}", e2e.id(pr).host_label());
        e2e.wait_comment(
            pr,
            &["Preview live", &format!("http://{host}/")],
            DEPLOY_TIMEOUT,
        )
        .await;
        let body = get_until_ok(port, &host, page).await.body;
        for asset in assets {
            assert!(
                body.contains(asset),
                "{name}: {page} no longer refers to {asset}:\n{body}"
            );
            let answer = get_until_ok(port, &host, asset).await;
            assert!(!answer.body.is_empty(), "{name}: {asset} is empty");
        }
        e2e.send("closed", pr, &sha).await;
    }
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(31).await;
    e2e.assert_nothing_left(32).await;
    e2e.shutdown().await;
}

/// A repository's compose file with a second web service (`preview.hostname: admin`, the
/// compose-two-web fixture): each host answers through nginx with its own service's body, the
/// second one published on 127.0.0.1 only at the port the preview holds for it; the PR comment
/// lists both URLs; an update starts both services beside the serving ones and switches both
/// hosts at once, failing no request on either host (the old slot's containers and ports go);
/// closing leaves nothing (conf, ports, containers, images).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_web_service_is_served_at_its_own_hostname() {
    // Previews sleep only when asked (through the internal API).
    let e2e =
        E2e::start_with_hostnames("hosts-second", &[("--idle-sleep-minutes", "600".into())]).await;
    let pr = 41;
    let tree = Tree::fixture("compose-two-web");
    let sha = e2e.commit(pr, &tree, "web and admin").await;
    e2e.send("opened", pr, &sha).await;

    let id = e2e.id(pr);
    let host = format!("{}.{PREVIEW_DOMAIN}", id.host_label());
    let admin_host = format!("{}.{PREVIEW_DOMAIN}", id.service_host_label("admin"));
    assert_eq!(
        admin_host,
        format!("{}-admin.{PREVIEW_DOMAIN}", id.as_str())
    );
    let comment = e2e
        .wait_comment(
            pr,
            &[
                "Preview live",
                &format!("**http://{host}/**"),
                &format!("**http://{admin_host}/** (service `admin`)"),
            ],
            DEPLOY_TIMEOUT,
        )
        .await;
    assert!(!comment.body.contains("stays private"), "{}", comment.body);
    assert_eq!(
        e2e.record(pr).unwrap().service_urls,
        [preview_orchestrator::record::ServiceUrl {
            service: "admin".into(),
            url: format!("http://{admin_host}/"),
        }],
        "the record keeps it for the comments after a sleep"
    );

    let port = e2e.nginx.port();
    let web = get_until_ok(port, &host, "/").await;
    assert_eq!(web.body, "web: compose-two-web at /\n");
    // The second service is not health-checked: it may still be starting.
    let admin = get_within(port, &admin_host, "/page", Duration::from_secs(60)).await;
    assert_eq!(admin.body, "admin: compose-two-web at /page\n");
    // It reaches the web service on the preview's private network, by name.
    let via = get_until_ok(port, &admin_host, "/web").await;
    assert_eq!(via.body, "admin asked web: web: compose-two-web at /\n");

    // Published on 127.0.0.1 only, at the port the preview holds for it.
    let held = e2e.orch.store().ports(&id).unwrap();
    let service_port = held
        .service
        .expect("the allocation holds the service's port");
    assert_ne!(service_port, held.app);
    let published = admin_ports(id.as_str()).await;
    assert_eq!(published, format!("127.0.0.1:{service_port}->3000/tcp"));

    // An update starts both web services beside the serving ones (in the green slot, at
    // second ports) and nginx switches both hosts at once: while a client hammers both hosts
    // through nginx, every answer is the old commit's page or the new one's, none a failure.
    let tree = tree
        .replace("admin: compose-two-web", "admin v2: compose-two-web")
        .replace("web: compose-two-web at", "web v2: compose-two-web at");
    let sha2 = e2e.commit(pr, &tree, "v2 of both").await;
    let pages = |v: &str| -> [String; 2] {
        [
            format!("web{v}: compose-two-web at /\n"),
            format!("admin{v}: compose-two-web at /\n"),
        ]
    };
    let (old_pages, new_pages) = (pages(""), pages(" v2"));
    let hosts = [host.clone(), admin_host.clone()];
    wait_stable(port, &hosts, &old_pages).await;
    let hammer = BothHosts::start(port, hosts.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = std::time::Instant::now();
    e2e.send("synchronize", pr, &sha2).await;
    e2e.wait_running_at(pr, &sha2, DEPLOY_TIMEOUT).await;
    let to_done = sent.elapsed();
    wait_stable(port, &hosts, &new_pages).await;
    let samples = hammer.finish().await;
    let failures: Vec<_> = samples
        .iter()
        .filter(|s| {
            !matches!(&s.answer, Ok((200, body)) if *body == old_pages[s.host] || *body == new_pages[s.host])
        })
        .collect();
    let per_host = |h: usize| samples.iter().filter(|s| s.host == h).count();
    let first_new = |h: usize| {
        samples
            .iter()
            .find(|s| s.host == h && matches!(&s.answer, Ok((200, b)) if *b == new_pages[h]))
            .map(|s| s.at.saturating_duration_since(sent).as_secs_f64())
    };
    eprintln!(
        "update of two web services under load: {} requests ({} to the app's host, {} to the second service's), {} failed; new pages served {:.2} s / {:.2} s after the webhook, job done after {:.2} s",
        samples.len(),
        per_host(0),
        per_host(1),
        failures.len(),
        first_new(0).unwrap_or_default(),
        first_new(1).unwrap_or_default(),
        to_done.as_secs_f64()
    );
    assert!(per_host(0) > 0 && per_host(1) > 0, "both hosts were asked");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the update: {failures:#?}",
        failures.len(),
        samples.len()
    );
    assert!(
        first_new(0).is_some() && first_new(1).is_some(),
        "both switched under load"
    );

    // Both ports switched together, the old ones given back; the old slot's containers are gone.
    let after = e2e.orch.store().ports(&id).unwrap();
    let new_service_port = after.service.expect("the service's port");
    assert_ne!(
        new_service_port, service_port,
        "the service moved to its second port"
    );
    assert_ne!(after.app, held.app, "the app moved to its second port");
    assert_eq!((after.next_app, after.next_service), (None, None));
    let allocated = e2e.orch.store().read(|s| s.allocated_ports());
    for old in [held.app, service_port] {
        assert!(
            !allocated.contains(&old),
            "port {old} is given back: {allocated:?}"
        );
    }
    e2e.idle(Duration::from_secs(120)).await;
    assert_eq!(
        admin_ports(id.as_str()).await,
        format!("127.0.0.1:{new_service_port}->3000/tcp"),
        "one admin container, at its new port"
    );
    assert_eq!(
        services_of(id.as_str()).await,
        ["admin-green green", "web-green green"],
        "only the new slot's containers are left"
    );
    let work = e2e.dir.path().join("deployments").join(id.as_str());
    assert!(!work.join("docker-compose.next.yml").exists());

    // Asleep, a visit to the second host wakes the preview (the same sleep hooks as the app's).
    let asleep = reqwest::Client::new()
        .post(format!("{}/api/previews/{id}/sleep", e2e.api))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(asleep.status().as_u16(), 200);
    assert_eq!(
        e2e.record(pr).unwrap().status,
        preview_orchestrator::DeploymentStatus::Sleeping
    );
    assert_eq!(admin_ports(id.as_str()).await, "", "stopped");
    let woke = get_within(port, &admin_host, "/after-sleep", Duration::from_secs(60)).await;
    assert_eq!(woke.body, "admin v2: compose-two-web at /after-sleep\n");
    assert_eq!(
        services_of(id.as_str()).await,
        ["admin-green green", "web-green green"],
        "the same slot wakes"
    );
    assert_eq!(
        e2e.record(pr).unwrap().status,
        preview_orchestrator::DeploymentStatus::Running
    );

    // Closing removes both hosts, the port and every container.
    e2e.send("closed", pr, &sha2).await;
    for h in [&host, &admin_host] {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let answer = http_get_host(port, h, "/").await.unwrap();
            if answer.status == 404 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{h} still served after close: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(pr).await;
    e2e.shutdown().await;
}

/// Without hostnames (path routing), the same repository deploys with its second web service
/// private: the PR comment's warnings say why, no port is held or published for it, and it is
/// still reachable by the web service's neighbours on the private network.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_web_service_stays_private_without_hostnames() {
    let e2e = E2e::start("second-private", &[]).await;
    let pr = 42;
    let sha = e2e
        .commit(pr, &Tree::fixture("compose-two-web"), "web and admin")
        .await;
    e2e.send("opened", pr, &sha).await;
    let comment = e2e
        .wait_comment(
            pr,
            &[
                "Preview live",
                "service `admin` of compose.yaml has the label `preview.hostname: admin` but stays private: hostnames are off",
            ],
            DEPLOY_TIMEOUT,
        )
        .await;
    assert!(
        !comment.body.contains("(service `admin`)"),
        "{}",
        comment.body
    );
    let id = e2e.id(pr);
    assert_eq!(e2e.orch.store().ports(&id).unwrap().service, None);
    assert!(e2e.record(pr).unwrap().service_urls.is_empty());
    assert_eq!(admin_ports(id.as_str()).await, "", "no port published");
    let state = preview_testkit::docker([
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--filter",
        "label=com.docker.compose.service=admin",
        "--format",
        "{{.State}}",
    ])
    .await
    .unwrap();
    assert_eq!(state.trim(), "running", "it runs, privately");
    let web = preview_testkit::http_get(e2e.nginx.port(), &e2e.path(pr))
        .await
        .unwrap();
    assert_eq!(web.body, "web: compose-two-web at /\n");
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}

/// A second web service that never serves fails the deploy in the health phase, naming it,
/// and the failed first deploy leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_web_service_that_never_serves_fails_the_deploy() {
    let e2e =
        E2e::start_with_hostnames("second-down", &[("--health-timeout-secs", "20".into())]).await;
    let pr = 43;
    let tree = Tree::fixture("compose-two-web").with(
        "admin/main.py",
        "raise SystemExit('the admin cannot start')\n",
    );
    let sha = e2e.commit(pr, &tree, "a broken admin").await;
    e2e.send("opened", pr, &sha).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(
        reason.starts_with("health: service `admin` (its own hostname): "),
        "{reason}"
    );
    e2e.wait_comment(pr, &["Preview failed", "service `admin`"], DEPLOY_TIMEOUT)
        .await;
    e2e.idle(Duration::from_secs(120)).await;
    e2e.assert_nothing_left(pr).await;
    e2e.shutdown().await;
}

/// An update whose new second web service never answers (it exits at start) fails in the
/// health phase naming it, while the serving commit answers on both hosts throughout; the
/// serving containers are untouched (same ids), the ports are as before, and nothing of the new
/// slot is left (containers, next ports, next compose file, images).
#[tokio::test(flavor = "multi_thread")]
async fn an_update_whose_second_web_service_never_serves_leaves_the_serving_commit() {
    let e2e = E2e::start_with_hostnames(
        "second-update-down",
        &[("--health-timeout-secs", "20".into())],
    )
    .await;
    let pr = 44;
    let tree = Tree::fixture("compose-two-web");
    let sha = e2e.commit(pr, &tree, "web and admin").await;
    e2e.send("opened", pr, &sha).await;
    e2e.wait_status(
        pr,
        preview_orchestrator::DeploymentStatus::Running,
        DEPLOY_TIMEOUT,
    )
    .await;
    let id = e2e.id(pr);
    let port = e2e.nginx.port();
    let hosts = [
        format!("{}.{PREVIEW_DOMAIN}", id.host_label()),
        format!("{}.{PREVIEW_DOMAIN}", id.service_host_label("admin")),
    ];
    let serving = [
        "web: compose-two-web at /\n".to_owned(),
        "admin: compose-two-web at /\n".to_owned(),
    ];
    wait_stable(port, &hosts, &serving).await;
    e2e.idle(Duration::from_secs(120)).await;
    let ports_before = e2e.orch.store().ports(&id);
    let containers_before = container_ids(id.as_str()).await;
    let mut left_before = e2e.leftovers(pr).await;
    left_before.sort();

    let hammer = BothHosts::start(port, hosts.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broken = tree
        .replace("web: compose-two-web at", "web v2: compose-two-web at")
        .with(
            "admin/main.py",
            "raise SystemExit('the new admin cannot start')\n",
        );
    let sha2 = e2e.commit(pr, &broken, "a broken admin").await;
    e2e.send("synchronize", pr, &sha2).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(
        reason.starts_with("health: service `admin` (its own hostname): "),
        "{reason}"
    );
    e2e.idle(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = hammer.finish().await;
    let wrong: Vec<_> = samples
        .iter()
        .filter(|s| !matches!(&s.answer, Ok((200, b)) if *b == serving[s.host]))
        .collect();
    eprintln!(
        "failed update of the second web service under load: {} requests to both hosts, {} not answered by the serving commit",
        samples.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        e2e.orch.store().ports(&id),
        ports_before,
        "the ports are as before"
    );
    assert_eq!(
        container_ids(id.as_str()).await,
        containers_before,
        "the serving containers are untouched, the new slot's gone"
    );
    assert_eq!(
        services_of(id.as_str()).await,
        ["admin-blue blue", "web blue"]
    );
    let work = e2e.dir.path().join("deployments").join(id.as_str());
    assert!(!work.join("docker-compose.next.yml").exists());
    let mut left_after = e2e.leftovers(pr).await;
    left_after.sort();
    assert_eq!(left_after, left_before, "nothing of the new slot is left");

    e2e.close_and_assert_nothing_left(pr, &sha2).await;
    e2e.shutdown().await;
}

/// A commit that routes a service the serving commit runs privately (the label added while
/// the preview serves from the green slot, as after an odd number of updates; or a preview from
/// before routed services had slots) starts it beside that one under its slot's own name. So
/// when the new service never answers, the failed update removes only what it started: the
/// serving commit's `admin` runs on, the same container. Then the other way: a commit that stops
/// routing it keeps the serving admin's port until the switch.
#[tokio::test(flavor = "multi_thread")]
async fn routing_a_service_the_serving_commit_runs_privately_leaves_that_one_alone() {
    let e2e = E2e::start_with_hostnames(
        "second-label-added",
        &[("--health-timeout-secs", "20".into())],
    )
    .await;
    let pr = 45;
    let private = Tree::fixture("compose-two-web").replace("      preview.hostname: admin\n", "");
    let sha = e2e.commit(pr, &private, "admin private").await;
    e2e.send("opened", pr, &sha).await;
    e2e.wait_status(
        pr,
        preview_orchestrator::DeploymentStatus::Running,
        DEPLOY_TIMEOUT,
    )
    .await;
    // An update moves the app to the green slot; the private admin stays as it is.
    let sha2 = e2e
        .commit(
            pr,
            &private
                .clone()
                .replace("web: compose-two-web at", "web v2: compose-two-web at"),
            "web v2",
        )
        .await;
    e2e.send("synchronize", pr, &sha2).await;
    e2e.wait_running_at(pr, &sha2, DEPLOY_TIMEOUT).await;
    e2e.idle(Duration::from_secs(120)).await;
    let id = e2e.id(pr);
    assert_eq!(services_of(id.as_str()).await, ["admin", "web-green green"]);
    let containers_before = container_ids(id.as_str()).await;

    // The next commit routes admin, and its admin cannot start.
    let routed_broken = Tree::fixture("compose-two-web")
        .replace("web: compose-two-web at", "web v3: compose-two-web at")
        .with(
            "admin/main.py",
            "raise SystemExit('the new admin cannot start')\n",
        );
    let sha3 = e2e.commit(pr, &routed_broken, "admin routed, broken").await;
    e2e.send("synchronize", pr, &sha3).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(
        reason.starts_with("health: service `admin-blue` (its own hostname): ")
            || reason.starts_with("health: service `admin` (its own hostname): "),
        "{reason}"
    );
    e2e.idle(Duration::from_secs(120)).await;
    assert_eq!(
        container_ids(id.as_str()).await,
        containers_before,
        "the serving commit's containers are untouched, the new slot's gone"
    );
    assert_eq!(services_of(id.as_str()).await, ["admin", "web-green green"]);
    let web = http_get_host(
        e2e.nginx.port(),
        &format!("{}.{PREVIEW_DOMAIN}", id.host_label()),
        "/",
    )
    .await
    .unwrap();
    assert_eq!(web.body, "web v2: compose-two-web at /\n");

    // A commit that routes it and works: it serves at its own host, under its slot's name.
    let sha4 = e2e
        .commit(pr, &Tree::fixture("compose-two-web"), "admin routed")
        .await;
    e2e.send("synchronize", pr, &sha4).await;
    e2e.wait_running_at(pr, &sha4, DEPLOY_TIMEOUT).await;
    e2e.idle(Duration::from_secs(120)).await;
    assert_eq!(
        services_of(id.as_str()).await,
        ["admin-blue blue", "web blue"]
    );
    let service_port = e2e.orch.store().ports(&id).and_then(|a| a.service);
    assert!(service_port.is_some());
    let admin_host = format!("{}.{PREVIEW_DOMAIN}", id.service_host_label("admin"));
    let admin = || async {
        http_get_host(e2e.nginx.port(), &admin_host, "/")
            .await
            .unwrap()
    };
    assert_eq!(admin().await.body, "admin: compose-two-web at /\n");

    // A commit that stops routing it and fails: the serving commit's admin keeps its port and
    // serves on (the port used to be given back when the update began, and the serving admin
    // was then a leftover to remove).
    let unrouted_broken = private
        .clone()
        .with("main.py", "raise SystemExit('the new web cannot start')\n");
    let sha5 = e2e
        .commit(pr, &unrouted_broken, "admin private, web broken")
        .await;
    e2e.send("synchronize", pr, &sha5).await;
    let reason = e2e.wait_failed(pr, DEPLOY_TIMEOUT).await;
    assert!(reason.starts_with("health: "), "{reason}");
    e2e.idle(Duration::from_secs(120)).await;
    assert_eq!(
        e2e.orch.store().ports(&id).and_then(|a| a.service),
        service_port,
        "the serving admin keeps its port"
    );
    // The failed commit's private admin stays beside it until the next deploy, as a service a
    // failed update adds does (only the new slot is removed).
    assert_eq!(
        services_of(id.as_str()).await,
        ["admin", "admin-blue blue", "web blue"]
    );
    assert_eq!(admin().await.body, "admin: compose-two-web at /\n");

    // The same commit, working: at the switch the port is given back, and admin runs privately.
    let sha6 = e2e.commit(pr, &private, "admin private").await;
    e2e.send("synchronize", pr, &sha6).await;
    e2e.wait_running_at(pr, &sha6, DEPLOY_TIMEOUT).await;
    e2e.idle(Duration::from_secs(120)).await;
    assert_eq!(e2e.orch.store().ports(&id).and_then(|a| a.service), None);
    assert_eq!(services_of(id.as_str()).await, ["admin", "web-green green"]);
    e2e.close_and_assert_nothing_left(pr, &sha6).await;
    e2e.shutdown().await;
}

/// The ids of preview `id`'s containers, running or not, sorted.
async fn container_ids(id: &str) -> Vec<String> {
    let out = preview_testkit::docker([
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
    ])
    .await
    .expect("docker ps");
    let mut ids: Vec<String> = out.lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

/// The `docker ps` ports of preview `id`'s running admin containers (labelled
/// `preview.hostname`, in either slot), one line each.
async fn admin_ports(id: &str) -> String {
    preview_testkit::docker([
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={id}"),
        "--filter",
        "label=preview.hostname=admin",
        "--format",
        "{{.Ports}}",
    ])
    .await
    .expect("docker ps")
    .trim()
    .to_owned()
}

/// GET by Host until it answers 200, for up to `within`; panics with the last answer.
async fn get_within(
    port: u16,
    host: &str,
    path: &str,
    within: Duration,
) -> preview_testkit::HttpAnswer {
    let deadline = std::time::Instant::now() + within;
    loop {
        let answer = http_get_host(port, host, path).await.unwrap();
        if answer.status == 200 || std::time::Instant::now() > deadline {
            assert_eq!(answer.status, 200, "{host}{path} through nginx: {answer:?}");
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET by Host until it answers 200 (nginx's old workers may answer 404 right after a reload);
/// panics with the last answer after 5 s.
async fn get_until_ok(port: u16, host: &str, path: &str) -> preview_testkit::HttpAnswer {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http_get_host(port, host, path).await.unwrap();
        if answer.status == 200 || std::time::Instant::now() > deadline {
            assert_eq!(answer.status, 200, "{host}{path} through nginx: {answer:?}");
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each of `hosts` answers its page in `pages` ten times in a row through nginx:
/// after a reload, old workers may answer with the previous config for a moment.
async fn wait_stable(port: u16, hosts: &[String; 2], pages: &[String; 2]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let mut good = true;
        for (host, page) in hosts.iter().zip(pages) {
            good &= http_get_host(port, host, "/")
                .await
                .is_ok_and(|a| a.status == 200 && a.body == *page);
        }
        in_a_row = if good { in_a_row + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "{hosts:?} never answered {pages:?} steadily"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One answer of [`BothHosts`]: which host (0 or 1), when, and its status and body or error.
#[derive(Debug)]
struct HostSample {
    host: usize,
    at: std::time::Instant,
    answer: Result<(u16, String), String>,
}

/// A client that GETs `/` of two hosts through nginx in turn, every 25 ms, until stopped.
struct BothHosts {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<HostSample>>,
}

impl BothHosts {
    fn start(port: u16, hosts: [String; 2]) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                for (host, name) in hosts.iter().enumerate() {
                    let at = std::time::Instant::now();
                    let answer = match http_get_host(port, name, "/").await {
                        Ok(a) => Ok((a.status, a.body)),
                        Err(e) => Err(e.to_string()),
                    };
                    samples.push(HostSample { host, at, answer });
                }
            }
            samples
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<HostSample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the client")
    }
}
