//! DATABASE_MODE=shared on the real engine, with a private nginx and a fake GitHub: previews of
//! a PHP app whose every page queries `DATABASE_URL` go live through nginx on the engine's shared
//! Postgres (and MySQL, with Debian's MariaDB standing in), each with its own database and role;
//! one preview's role cannot connect to another's database (tried for real, with the database
//! clients, over the preview's own network); closing a preview drops its database, role and
//! network; a seed builds the Postgres template once and the next preview clones it.
//!
//! The timings (a database on the running shared server against a dedicated server's start, a
//! seed's clone against its load) are printed by `shared_database_timings`, never asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use preview_core::id::PreviewId;
use preview_core::model::Database;
use preview_exec::Cmd;
use preview_orchestrator::DeploymentStatus;
use preview_orchestrator::shared_databases::{
    SharedDatabases, database_name, network_name, random_hex,
};
use preview_testkit::{docker, require_docker, unique_suffix, wait_for_http};

use crate::e2e_support::{E2e, Tree};

/// Cold builds share 2 cores with other tests.
const LIVE_TIMEOUT: Duration = Duration::from_secs(300);
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain PHP app (PDO's pgsql and mysql drivers, no dependencies) that answers every page
/// from its database: `/health` with `SELECT 40 + 2`, `/greetings` with the seed's row count,
/// `/visit` by writing a row and counting them. A 503 while the database is unreachable.
const APP: &str = r#"<?php
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
$url = parse_url(getenv('DATABASE_URL') ?: '');
header('Content-Type: text/plain');
try {
    $driver = ($url['scheme'] ?? '') === 'mysql' ? 'mysql' : 'pgsql';
    $dsn = sprintf('%s:host=%s;port=%d;dbname=%s', $driver, $url['host'], $url['port'], ltrim($url['path'], '/'));
    $pdo = new PDO($dsn, urldecode($url['user']), urldecode($url['pass']), [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    if ($path === '/' || $path === '/health') {
        echo 'db ok ' . $pdo->query('SELECT 40 + 2')->fetchColumn() . "\n";
    } elseif ($path === '/greetings') {
        echo 'greetings ' . $pdo->query('SELECT count(*) FROM greetings')->fetchColumn() . "\n";
    } elseif ($path === '/visit') {
        $pdo->exec('CREATE TABLE IF NOT EXISTS visits (at VARCHAR(40))');
        $pdo->exec("INSERT INTO visits VALUES ('now')");
        echo 'visits ' . $pdo->query('SELECT count(*) FROM visits')->fetchColumn() . "\n";
    } else {
        http_response_code(404);
        echo "not found\n";
    }
} catch (Throwable $e) {
    http_response_code(503);
    echo 'database unreachable: ' . $e->getMessage() . "\n";
}
"#;

/// Three greetings, in SQL both Postgres and MySQL read.
const SEED: &str = "CREATE TABLE greetings (id INT PRIMARY KEY, text VARCHAR(40));\n\
INSERT INTO greetings VALUES (1, 'hello'), (2, 'hej'), (3, 'bonjour');\n";

/// The app with `config` as its preview-config.yml, and the seed at db/seed.sql.
fn app(config: &str) -> Tree {
    Tree::fixture("php-plain")
        .with("public/index.php", APP)
        .with("preview-config.yml", config)
        .with("db/seed.sql", SEED)
}

/// The shared servers' project of one test: its own, so tests never share a server.
fn project() -> String {
    format!("sdb-test-{}", unique_suffix())
}

/// Removes a test's shared servers (with their volumes) when the test ends, passed or not.
struct ServersGuard(String);

impl Drop for ServersGuard {
    fn drop(&mut self) {
        // A plain blocking command: this runs outside the runtime, during a panic too.
        let _ = std::process::Command::new("docker")
            .args([
                "compose",
                "-p",
                &self.0,
                "down",
                "--volumes",
                "--timeout",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A /24 of 10.213.0.0/16 for one test's database networks (16 subnets of 16 addresses), so
/// that tests running at once do not overlap: each test of this process its own, in turn.
fn test_subnets() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("10.213.{}.0/24", (std::process::id() + n) % 256)
}

/// Starts an orchestrator in shared mode with the servers' project `project`. Its ports come
/// from above the kernel's ephemeral range (61000+), apart from the other tests' pools, which a
/// process of another build may share; each test of this process its own 100 (a random
/// choice gave two tests run at once the same pool one time in 40).
async fn start(name: &str, project: &str) -> E2e {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = 61_000 + (std::process::id() + n) % 40 * 100;
    E2e::start(
        name,
        &[
            ("--database-mode", "shared".to_owned()),
            ("--shared-database-project", project.to_owned()),
            ("--shared-database-memory-limit", "512m".to_owned()),
            ("--app-port-range", format!("{}-{}", base, base + 49)),
            ("--db-port-range", format!("{}-{}", base + 50, base + 99)),
            ("--shared-database-subnet", test_subnets()),
        ],
    )
    .await
}

/// The answer of `page` of PR `pr` through nginx once it is 200.
async fn page(e2e: &E2e, pr: u64, page: &str) -> String {
    let path = format!("{}{page}", e2e.path(pr));
    wait_for_http(e2e.nginx.port(), &path, LIVE_TIMEOUT, |a| a.status == 200)
        .await
        .body
}

/// Opens PR `pr` with `tree` and waits until it serves through nginx, its database answering.
async fn open(e2e: &E2e, pr: u64, tree: &Tree) -> String {
    let sha = e2e.commit(pr, tree, "with a shared database").await;
    e2e.send("opened", pr, &sha).await;
    // A failed deploy says why at once, with its comment, rather than after the timeout.
    let status =
        crate::e2e_support::eventually(&format!("PR {pr} to deploy"), LIVE_TIMEOUT, || {
            e2e.record(pr).map(|r| r.status).filter(|s| {
                matches!(
                    s,
                    DeploymentStatus::Running | DeploymentStatus::Failed { .. }
                )
            })
        })
        .await;
    if status != DeploymentStatus::Running {
        let network = docker([
            "network",
            "inspect",
            "--format",
            "{{json .Containers}} {{json .IPAM}}",
            &network_name(&e2e.id(pr)),
        ])
        .await;
        let server = docker([
            "ps",
            "--filter",
            "label=dev.preview-deployer.shared-database",
            "--format",
            "{{.Names}} {{.Status}} {{.Networks}}",
        ])
        .await;
        let app = docker([
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &format!("{}-app-1", e2e.id(pr).as_str()),
        ])
        .await;
        panic!(
            "PR {pr} did not deploy: {status:?}\nnetwork: {network:?}\nservers: {server:?}\napp: {app:?}\n{:#?}",
            e2e.github.comments().last().map(|c| c.body.clone())
        );
    }
    assert_eq!(page(e2e, pr, "health").await, "db ok 42\n");
    e2e.wait_comment(pr, &["Preview live", &sha], FEEDBACK_TIMEOUT)
        .await;
    sha
}

/// The work dir of PR `pr`.
fn work(e2e: &E2e, pr: u64) -> PathBuf {
    e2e.dir.path().join("deployments").join(e2e.id(pr).as_str())
}

/// The role password of PR `pr`'s database, as its work dir keeps it.
fn password(e2e: &E2e, pr: u64) -> String {
    std::fs::read_to_string(work(e2e, pr).join("database-password")).unwrap()
}

/// Runs `sql` as the superuser on the shared Postgres of `project`; trimmed stdout.
async fn postgres_sql(project: &str, sql: &str) -> String {
    docker([
        "exec",
        "--user",
        "postgres",
        &format!("{project}-postgres"),
        "psql",
        "-X",
        "-A",
        "-t",
        "-U",
        "postgres",
        "-c",
        sql,
    ])
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
    .trim()
    .to_owned()
}

/// Runs `sql` as root on the shared MySQL of `project`, whose root password is in `dir`.
async fn mysql_sql(project: &str, dir: &Path, sql: &str) -> String {
    let root = std::fs::read_to_string(dir.join("mysql-superuser-password")).unwrap();
    Cmd::new("docker", "query the shared MySQL in a test")
        .pass_env("HOME")
        .env("MYSQL_PWD", root.trim())
        .args(["exec", "-e", "MYSQL_PWD", &format!("{project}-mysql")])
        .args([
            "mysql",
            "-uroot",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ])
        .run()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .stdout_text()
        .trim()
        .to_owned()
}

/// Connects to database `database` as role `role` with `password`, from a client container on
/// `network` (where the server is `host`), and runs `SELECT 1`: the output, or the error.
async fn connect_as(
    engine: Database,
    network: &str,
    role: &str,
    password: &str,
    database: &str,
) -> Result<String, String> {
    let image = preview_core::images::image_for(engine.as_str());
    // The server's address on that network, as the app's DATABASE_URL names it.
    let members = docker([
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
        network,
    ])
    .await
    .unwrap();
    let host = members
        .split_whitespace()
        .filter_map(|m| m.split_once('='))
        .find(|(name, _)| name.ends_with(&format!("-{}", engine.as_str())))
        .and_then(|(_, address)| address.split('/').next())
        .unwrap_or_else(|| panic!("no {engine} server on {network}: {members}"))
        .to_owned();
    let (variable, client): (&str, Vec<&str>) = match engine {
        Database::Postgres => (
            "PGPASSWORD",
            vec![
                "psql", "-X", "-A", "-t", "-h", &host, "-U", role, "-d", database, "-c", "SELECT 1",
            ],
        ),
        _ => (
            "MYSQL_PWD",
            vec![
                "mysql",
                "--batch",
                "--skip-column-names",
                "-h",
                &host,
                "-u",
                role,
                database,
                "-e",
                "SELECT 1",
            ],
        ),
    };
    let (program, args) = client.split_first().unwrap();
    Cmd::new("docker", "connect to a shared database in a test")
        .pass_env("HOME")
        .env(variable, password)
        .args(["run", "--rm", "--network", network, "-e", variable])
        .args(["--entrypoint", program, image])
        .args(args)
        .run()
        .await
        .map(|out| out.stdout_text().trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Checks that PR `pr`'s compose file has no database service and that its app is on its own
/// database network, with the server and nothing else.
async fn assert_on_own_network(e2e: &E2e, pr: u64, project: &str, engine: Database) {
    let compose = std::fs::read_to_string(work(e2e, pr).join("docker-compose.yml")).unwrap();
    assert!(!compose.contains("\n  db:\n"), "{compose}");
    let members = docker([
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}} {{end}}",
        &network_name(&e2e.id(pr)),
    ])
    .await
    .unwrap();
    let mut members: Vec<&str> = members.split_whitespace().collect();
    members.sort();
    let server = format!("{project}-{}", engine.as_str());
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&server.as_str()), "{members:?}");
    assert!(
        members
            .iter()
            .any(|m| m.starts_with(&format!("{}-app", e2e.id(pr).as_str()))),
        "{members:?}"
    );
}

/// Two Postgres previews of one seed: the first builds the template, the second clones it
/// (its data is there), each role reaches its own database only, and closing them drops the
/// databases, roles, networks and, with the last one, the template.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_previews_share_one_server_isolated_seeded_and_dropped() {
    let project = project();
    let _servers = ServersGuard(project.clone());
    let e2e = start("shared-postgres", &project).await;
    let config = "database:\n  engine: postgres\n  seed: db/seed.sql\n";

    // Live through nginx, the seed's template built by the first preview.
    let first = open(&e2e, 1, &app(config)).await;
    let comment = e2e
        .wait_comment(1, &["Preview live", &first], FEEDBACK_TIMEOUT)
        .await;
    assert!(
        comment
            .body
            .contains("postgres on the shared server, seeded from `db/seed.sql`, which built the seed's template database"),
        "{}",
        comment.body
    );
    assert_eq!(page(&e2e, 1, "greetings").await, "greetings 3\n");
    assert_eq!(page(&e2e, 1, "visit").await, "visits 1\n");
    assert_eq!(page(&e2e, 1, "visit").await, "visits 2\n");
    assert_on_own_network(&e2e, 1, &project, Database::Postgres).await;

    // The second preview of the same seed clones the template: the seed's rows, none of the
    // first preview's visits, and still one template.
    let second = open(&e2e, 2, &app(config)).await;
    let comment = e2e
        .wait_comment(2, &["Preview live", &second], FEEDBACK_TIMEOUT)
        .await;
    assert!(
        comment.body.contains(
            "postgres on the shared server, cloned from the template database of `db/seed.sql`"
        ),
        "{}",
        comment.body
    );
    assert!(
        !comment.body.contains(&password(&e2e, 2)),
        "{}",
        comment.body
    );
    assert_eq!(page(&e2e, 2, "greetings").await, "greetings 3\n");
    assert_eq!(page(&e2e, 2, "visit").await, "visits 1\n");
    assert_eq!(
        postgres_sql(
            &project,
            "SELECT datname || ' ' || datistemplate || ' ' || datallowconn FROM pg_database WHERE datname LIKE 'tpl_%'"
        )
        .await
        .lines()
        .count(),
        1,
        "one template for one seed"
    );
    assert_on_own_network(&e2e, 2, &project, Database::Postgres).await;

    // A seed that fails fails the deploy in the database phase with the client's error, and
    // leaves nothing: no preview, no half-built template.
    let broken = app(config).with("db/seed.sql", "CREATE TABLE broken (;\n");
    let sha = e2e.commit(3, &broken, "a broken seed").await;
    e2e.send("opened", 3, &sha).await;
    let reason = e2e.wait_failed(3, LIVE_TIMEOUT).await;
    assert!(
        reason.starts_with("database: shared postgres server: loading the seed db/seed.sql failed"),
        "{reason}"
    );
    let comment = e2e
        .wait_comment(
            3,
            &["failed in the **database** phase", "syntax error"],
            FEEDBACK_TIMEOUT,
        )
        .await;
    assert!(!comment.body.contains("PASSWORD"), "{}", comment.body);
    e2e.assert_nothing_left(3).await;
    assert_eq!(
        postgres_sql(
            &project,
            "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'tpl_%') + (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tpl_%')"
        )
        .await,
        "2",
        "only the good seed's template and its role"
    );

    // Isolation, for real: each role reaches its own database and not the other's, from its
    // own network; the seed's template is closed to both.
    let (a, b) = (database_name(&e2e.id(1)), database_name(&e2e.id(2)));
    let (net_a, net_b) = (network_name(&e2e.id(1)), network_name(&e2e.id(2)));
    let (pw_a, pw_b) = (password(&e2e, 1), password(&e2e, 2));
    assert_eq!(
        connect_as(Database::Postgres, &net_a, &a, &pw_a, &a).await,
        Ok("1".to_owned())
    );
    assert_eq!(
        connect_as(Database::Postgres, &net_b, &b, &pw_b, &b).await,
        Ok("1".to_owned())
    );
    for (net, role, pw, other) in [(&net_a, &a, &pw_a, &b), (&net_b, &b, &pw_b, &a)] {
        let refused = connect_as(Database::Postgres, net, role, pw, other)
            .await
            .expect_err("a preview's role reaches another preview's database");
        assert!(
            refused.contains("permission denied for database"),
            "{refused}"
        );
        for maintenance in ["postgres", "template1"] {
            let refused = connect_as(Database::Postgres, net, role, pw, maintenance)
                .await
                .expect_err("a preview's role reaches a maintenance database");
            assert!(
                refused.contains("permission denied for database"),
                "{refused}"
            );
        }
        let template = postgres_sql(
            &project,
            "SELECT datname FROM pg_database WHERE datname LIKE 'tpl_%'",
        )
        .await;
        let refused = connect_as(Database::Postgres, net, role, pw, &template)
            .await
            .expect_err("a preview's role reaches the template");
        assert!(
            refused.contains("not currently accepting connections")
                || refused.contains("permission denied"),
            "{refused}"
        );
    }
    // The roles are plain: no superuser, no CREATEDB, no CREATEROLE, 20 connections at most.
    assert_eq!(
        postgres_sql(
            &project,
            &format!(
                "SELECT rolsuper || ' ' || rolcreatedb || ' ' || rolcreaterole || ' ' || rolconnlimit FROM pg_roles WHERE rolname = '{a}'"
            )
        )
        .await,
        "false false false 20"
    );

    // An update of the second starts the new commit beside the serving one (the green slot,
    // on the same database network) and keeps its database: the visits go on counting.
    let update = app(config).replace("'db ok '", "'db v2 ok '");
    let second = e2e.commit(2, &update, "an update").await;
    e2e.send("synchronize", 2, &second).await;
    wait_for_http(
        e2e.nginx.port(),
        &format!("{}health", e2e.path(2)),
        LIVE_TIMEOUT,
        |a| a.body == "db v2 ok 42\n",
    )
    .await;
    let comment = e2e
        .wait_comment(2, &["Preview live", &second], FEEDBACK_TIMEOUT)
        .await;
    assert!(
        comment.body.contains("kept from the previous deploy"),
        "{}",
        comment.body
    );
    assert_eq!(page(&e2e, 2, "visit").await, "visits 2\n");

    // Asleep, the preview keeps its database on the running server: a visit wakes the app
    // alone (no database server to start). The time to the visitor's 200 is printed.
    e2e.idle(Duration::from_secs(60)).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/previews/{}/sleep", e2e.api, e2e.id(2)))
        .bearer_auth(crate::harness::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(e2e.record(2).unwrap().status, DeploymentStatus::Sleeping);
    let woken = Instant::now();
    let path = format!("{}visit", e2e.path(2));
    loop {
        let answer = preview_testkit::http_get(e2e.nginx.port(), &path).await;
        if let Ok(answer) = &answer
            && answer.status == 200
        {
            assert_eq!(answer.body, "visits 3\n");
            break;
        }
        if woken.elapsed() > Duration::from_secs(60) {
            let members = docker([
                "network",
                "inspect",
                "--format",
                "{{range .Containers}}{{.Name}} {{end}}",
                &network_name(&e2e.id(2)),
            ])
            .await;
            let containers = docker([
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", e2e.id(2).as_str()),
                "--format",
                "{{.Names}} {{.Status}} {{.Networks}}",
            ])
            .await;
            panic!(
                "the woken preview does not answer: {answer:?}\nits database network: {members:?}\nits containers: {containers:?}\nrecord: {:?}",
                e2e.record(2)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "wake with a shared database: {:.2} s from the first request through nginx to its 200",
        woken.elapsed().as_secs_f64()
    );

    // Closing the first drops its database, role and network; the template stays for the
    // second. Closing the second takes the template too.
    e2e.close_and_assert_nothing_left(1, &first).await;
    let gone = |name: &str| {
        format!(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = '{name}') + (SELECT count(*) FROM pg_roles WHERE rolname = '{name}')"
        )
    };
    assert_eq!(postgres_sql(&project, &gone(&a)).await, "0");
    assert_eq!(
        postgres_sql(
            &project,
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tpl_%'"
        )
        .await,
        "1"
    );
    assert_eq!(page(&e2e, 2, "greetings").await, "greetings 3\n");
    e2e.close_and_assert_nothing_left(2, &second).await;
    assert_eq!(postgres_sql(&project, &gone(&b)).await, "0");
    assert_eq!(
        postgres_sql(
            &project,
            "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'tpl_%') + (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tpl_%')"
        )
        .await,
        "0",
        "the last preview of a seed takes its template along"
    );
    e2e.shutdown().await;
}

/// Two MySQL previews (MariaDB on the test bed) on one shared server: live through nginx, the
/// first seeded by loading the file, each user reaching its own database only, and closing
/// them drops the databases, users and networks.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_previews_share_one_server_isolated_and_dropped() {
    let project = project();
    let _servers = ServersGuard(project.clone());
    let e2e = start("shared-mysql", &project).await;
    let shared_dir = e2e.dir.path().join("shared-databases");

    let first = open(
        &e2e,
        1,
        &app("database:\n  engine: mysql\n  seed: db/seed.sql\n"),
    )
    .await;
    let comment = e2e
        .wait_comment(1, &["Preview live", &first], FEEDBACK_TIMEOUT)
        .await;
    assert!(
        comment
            .body
            .contains("mysql on the shared server, seeded from `db/seed.sql`"),
        "{}",
        comment.body
    );
    assert_eq!(page(&e2e, 1, "greetings").await, "greetings 3\n");
    assert_eq!(page(&e2e, 1, "visit").await, "visits 1\n");
    let second = open(&e2e, 2, &app("database: mysql\n")).await;
    assert_eq!(page(&e2e, 2, "visit").await, "visits 1\n");
    assert_eq!(page(&e2e, 1, "visit").await, "visits 2\n");
    assert_on_own_network(&e2e, 1, &project, Database::Mysql).await;
    assert_on_own_network(&e2e, 2, &project, Database::Mysql).await;

    let (a, b) = (database_name(&e2e.id(1)), database_name(&e2e.id(2)));
    let (net_a, net_b) = (network_name(&e2e.id(1)), network_name(&e2e.id(2)));
    let (pw_a, pw_b) = (password(&e2e, 1), password(&e2e, 2));
    assert_eq!(
        connect_as(Database::Mysql, &net_a, &a, &pw_a, &a).await,
        Ok("1".to_owned())
    );
    assert_eq!(
        connect_as(Database::Mysql, &net_b, &b, &pw_b, &b).await,
        Ok("1".to_owned())
    );
    for (net, user, pw, other) in [(&net_a, &a, &pw_a, &b), (&net_b, &b, &pw_b, &a)] {
        let refused = connect_as(Database::Mysql, net, user, pw, other)
            .await
            .expect_err("a preview's user reaches another preview's database");
        assert!(refused.contains("Access denied"), "{refused}");
        let refused = connect_as(Database::Mysql, net, user, pw, "mysql")
            .await
            .expect_err("a preview's user reaches the server's own database");
        assert!(refused.contains("Access denied"), "{refused}");
    }
    assert_eq!(
        mysql_sql(&project, &shared_dir, &format!("SHOW GRANTS FOR '{a}'@'%'"))
            .await
            .lines()
            .filter(|l| !l.starts_with("GRANT USAGE"))
            .collect::<Vec<_>>(),
        // `_` escaped in the grant (a wildcard otherwise); the client's batch output doubles
        // the backslash.
        [format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO `{a}`@`%`",
            a.replace('_', "\\\\_")
        )],
    );

    for (pr, sha, name) in [(1, &first, &a), (2, &second, &b)] {
        e2e.close_and_assert_nothing_left(pr, sha).await;
        let left = mysql_sql(
            &project,
            &shared_dir,
            &format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}') + (SELECT COUNT(*) FROM mysql.user WHERE user = '{name}')"
            ),
        )
        .await;
        assert_eq!(left, "0", "PR {pr}'s database and user are dropped");
    }
    e2e.shutdown().await;
}

/// How long a preview waits for its database: a new database and role on the running shared
/// server against a dedicated server's start (the same image, to its first answer over TCP),
/// and a seed's clone from its template against loading the seed. Printed, never asserted.
#[tokio::test(flavor = "multi_thread")]
async fn shared_database_timings() {
    require_docker().await;
    let project = project();
    let _servers = ServersGuard(project.clone());
    let dir = tempfile::tempdir().unwrap();
    let compose = preview_exec::compose::Compose::detect().await.unwrap();
    let servers = preview_core::render::shared_databases::SharedServers {
        project: project.clone(),
        limits: preview_core::render::Limits {
            memory: "512m".to_owned(),
            cpus: "1".to_owned(),
            pids: 512,
        },
        subnets: test_subnets().parse().unwrap(),
    };
    let shared = SharedDatabases::new(servers, dir.path().join("shared"), compose);
    let seed = {
        let mut sql = SEED.to_owned();
        // A seed of some size: 20,000 rows.
        sql.push_str("CREATE TABLE numbers (n INT);\n");
        for chunk in 0..20 {
            let values: Vec<String> = (0..1000)
                .map(|i| format!("({})", chunk * 1000 + i))
                .collect();
            sql.push_str(&format!(
                "INSERT INTO numbers VALUES {};\n",
                values.join(",")
            ));
        }
        let root = dir.path().join("checkout");
        std::fs::create_dir_all(root.join("db")).unwrap();
        std::fs::write(root.join("db/seed.sql"), sql).unwrap();
        let checkout = preview_core::checkout::Checkout::open(&root).unwrap();
        preview_core::seed::read_seed(&checkout, "db/seed.sql").unwrap()
    };
    let suffix = unique_suffix();
    let id = |n: u32| PreviewId::parse(&format!("timing-{suffix}-pr-{n}")).unwrap();

    let started = Instant::now();
    shared.ensure_server(Database::Postgres).await.unwrap();
    let server_start = started.elapsed();
    let plain = shared
        .provision(&id(1), Database::Postgres, &random_hex(16), None)
        .await
        .unwrap();
    let built = shared
        .provision(&id(2), Database::Postgres, &random_hex(16), Some(&seed))
        .await
        .unwrap();
    let cloned = shared
        .provision(&id(3), Database::Postgres, &random_hex(16), Some(&seed))
        .await
        .unwrap();
    assert_eq!(
        cloned.seeding,
        preview_orchestrator::shared_databases::Seeding::Cloned { built: false }
    );

    // A dedicated server: the same image, from `docker run` to its first answer over TCP.
    let dedicated = format!("{project}-dedicated");
    let started = Instant::now();
    docker([
        "run",
        "-d",
        "--name",
        &dedicated,
        "-e",
        "POSTGRES_PASSWORD=timing0123456789",
        preview_core::images::image_for("postgres"),
    ])
    .await
    .unwrap();
    while docker(["exec", &dedicated, "pg_isready", "-q", "-h", "127.0.0.1"])
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the dedicated server never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dedicated_start = started.elapsed();
    let _ = docker(["rm", "-f", "-v", &dedicated]).await;

    println!(
        "shared database timings: shared server start {:.2} s (once per engine); new database on the running server {:.2} s; dedicated server start {:.2} s",
        server_start.as_secs_f64(),
        plain.took.as_secs_f64(),
        dedicated_start.as_secs_f64()
    );
    println!(
        "seed of {} bytes: first preview loads it into the template and clones {:.2} s; later previews clone {:.2} s",
        seed.sql.len(),
        built.took.as_secs_f64(),
        cloned.took.as_secs_f64()
    );

    // MySQL: no templates, the seed loads each time.
    let started = Instant::now();
    shared.ensure_server(Database::Mysql).await.unwrap();
    let mysql_start = started.elapsed();
    let mysql_plain = shared
        .provision(&id(4), Database::Mysql, &random_hex(16), None)
        .await
        .unwrap();
    let mysql_seeded = shared
        .provision(&id(5), Database::Mysql, &random_hex(16), Some(&seed))
        .await
        .unwrap();
    println!(
        "shared mysql (MariaDB): server start {:.2} s; new database {:.2} s; new database with the seed loaded {:.2} s",
        mysql_start.as_secs_f64(),
        mysql_plain.took.as_secs_f64(),
        mysql_seeded.took.as_secs_f64()
    );

    for n in 1..=5 {
        shared.drop_preview(&id(n), true).await;
    }
    assert_eq!(
        postgres_sql(
            &project,
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'pv_timing%' OR datname LIKE 'tpl_%'"
        )
        .await,
        "0"
    );
    shared.remove_servers().await.unwrap();
}
