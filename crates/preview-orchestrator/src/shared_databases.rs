//! One database server per engine (`DATABASE_MODE=shared`): a Postgres and a MySQL server in a
//! compose project of their own, started on demand, each preview with its own database and
//! role there.
//!
//! **Servers.** The project's file is rendered from `shared-databases-compose.yml.j2` into
//! SHARED_DATABASE_DIR, beside one 0600 file per server holding its superuser password (random
//! hex), which Compose passes to the container from its own environment. A server is started
//! the first time a preview needs it (`up -d --no-recreate SERVICE`, so a running server is never
//! recreated) and is ready once it answers over TCP. It publishes nothing and its own network is
//! internal.
//!
//! **A preview's database.** Each preview gets a network of its own, `{id}-shared-db`
//! (internal, labelled with the preview's id), on which the server is known as
//! `shared-postgres` or `shared-mysql`; its app joins it, so previews never share a network. The
//! database and the role are both named [`database_name`] of the preview id (validated, so no
//! quoting is ever needed, and quoted anyway); the role's password is random hex. On Postgres the
//! role owns its database, which no one else may connect to (`REVOKE ALL ... FROM PUBLIC`); on
//! MySQL it has every privilege on its database and none elsewhere. Teardown drops both and the
//! network.
//!
//! **SQL** from us runs as the superuser through `docker exec -i` with the statements on stdin
//! (never `sh -c`, never a password in an argument); it holds only validated names and hex
//! passwords. Errors are redacted of every password before they go anywhere.
//!
//! **Seeds.** A repo's `database.seed` is the repo's SQL, so it never runs as a superuser or
//! inside the server's container: a throwaway client container on the preview's network loads
//! it as an unprivileged role, with exactly the power the app itself has. On Postgres the first
//! preview of a seed (keyed by the SHA-256 of its content) loads it into a template database
//! `tpl_{hash}` owned by a role of that name; the template is then handed to the superuser and
//! closed to connections, and each preview's database is cloned from it (`CREATE DATABASE ...
//! TEMPLATE`), its objects reassigned to the preview's role. Each database carries the seed's
//! hash as its comment: when the last database cloned from a template is dropped, the template
//! and its role go too. On MySQL (no templates) each new database loads the seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preview_core::id::PreviewId;
use preview_core::model::Database;
use preview_core::render::labels;
use preview_core::render::shared_databases::{
    SharedServer, SharedServers, render_shared_databases, superuser_password_variable,
};
use preview_core::render::{SharedDatabase, is_database_identifier, is_hex_password};
use preview_core::seed::Seed;
use preview_exec::compose::{AppEnv, Compose};

use crate::{Error, Result};

/// The compose file's name in SHARED_DATABASE_DIR.
const COMPOSE_FILE: &str = "docker-compose.yml";
/// How long a server may take to answer after its start (initdb included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a seed may take to load.
const SEED_TIMEOUT: Duration = Duration::from_secs(600);
/// Connections one preview's role may hold, so that no preview takes all of a server's.
const CONNECTION_LIMIT: u32 = 20;
/// Memory of the throwaway container that loads a seed.
const SEED_CLIENT_MEMORY: &str = "256m";

/// What happened to the seed of a newly made database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeding {
    /// No seed: the database starts empty.
    None,
    /// The database existed already (an update): nothing was loaded.
    Kept,
    /// Cloned from the seed's template database; `built` when this preview built the template.
    Cloned { built: bool },
    /// The seed was loaded into the new database (MySQL, which has no templates).
    Loaded,
}

/// A preview's database, ready for its app.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// What the app's environment names.
    pub database: SharedDatabase,
    /// What was done about the seed.
    pub seeding: Seeding,
    /// Time from the request to a database the app can use, server start included.
    pub took: Duration,
}

impl Provisioned {
    /// One line for the PR comment: where the database is, and how it was made.
    pub fn describe(&self, seed_path: Option<&str>) -> String {
        let engine = self.database.engine.as_str();
        let seed = seed_path.unwrap_or("the seed");
        let how = match &self.seeding {
            Seeding::None => "empty".to_owned(),
            Seeding::Kept => "kept from the previous deploy".to_owned(),
            Seeding::Cloned { built: true } => {
                format!("seeded from `{seed}`, which built the seed's template database")
            }
            Seeding::Cloned { built: false } => {
                format!("cloned from the template database of `{seed}`")
            }
            Seeding::Loaded => format!("seeded from `{seed}`"),
        };
        format!(
            "{engine} on the shared server, {how} ({:.1} s)",
            self.took.as_secs_f64()
        )
    }
}

/// The shared database servers of this engine.
pub struct SharedDatabases {
    servers: SharedServers,
    dir: PathBuf,
    compose: Compose,
    /// One start of a server at a time.
    start_lock: tokio::sync::Mutex<()>,
    /// One build of a seed's template at a time, by seed hash.
    template_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The database and role name of preview `id`: `pv_`, the id with `_` for `-` cut to 20
/// characters, `_`, and 8 hex digits of its hash (so cut ids stay apart); at most 32 of
/// `[a-z0-9_]`.
pub fn database_name(id: &PreviewId) -> String {
    use sha2::Digest;
    let readable: String = id
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(20)
        .collect();
    let hash = sha2::Sha256::digest(id.as_str().as_bytes());
    let name = format!(
        "pv_{readable}_{:02x}{:02x}{:02x}{:02x}",
        hash[0], hash[1], hash[2], hash[3]
    );
    debug_assert!(is_database_identifier(&name), "{name}");
    name
}

/// The name of the network that reaches the shared servers from preview `id`.
pub fn network_name(id: &PreviewId) -> String {
    format!("{}-shared-db", id.as_str())
}

/// The template database (and its role) of a seed.
fn template_name(seed: &Seed) -> String {
    format!("tpl_{}", seed.short_hash())
}

/// Random lowercase hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the hex password in `path`, or makes one there (0600, created exclusively).
pub fn password_file(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) if is_hex_password(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let password = random_hex(16);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(password.as_bytes())?;
    Ok(password)
}

/// A `'...'` SQL literal of text we made (names and hex), checked to hold nothing to escape.
fn literal(text: &str) -> String {
    assert!(
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "only names and hex reach SQL literals"
    );
    format!("'{text}'")
}

/// A quoted Postgres identifier of a validated name.
fn pg_ident(name: &str) -> String {
    assert!(is_database_identifier(name), "validated names only");
    format!("\"{name}\"")
}

/// A quoted MySQL identifier of a validated name.
fn my_ident(name: &str) -> String {
    assert!(is_database_identifier(name), "validated names only");
    format!("`{name}`")
}

impl SharedDatabases {
    /// The servers of `servers`, with their files in `dir`; `compose` runs their project.
    pub fn new(servers: SharedServers, dir: PathBuf, compose: Compose) -> Self {
        Self {
            servers,
            dir,
            compose,
            start_lock: tokio::sync::Mutex::new(()),
            template_locks: std::sync::Mutex::default(),
        }
    }

    /// The server of `engine`; `None` for an engine that is never shared.
    pub fn server(&self, engine: Database) -> Option<SharedServer> {
        self.servers.server(engine)
    }

    /// The compose project's name.
    pub fn project(&self) -> &str {
        &self.servers.project
    }

    fn error(engine: Database, message: impl std::fmt::Display, log_tail: &str) -> Error {
        Error::SharedDatabase {
            engine: engine.as_str(),
            message: message.to_string(),
            log_tail: log_tail.to_owned(),
        }
    }

    /// The superuser password of `engine`'s server, made on first use.
    fn superuser_password(&self, engine: Database) -> Result<String> {
        let path = self
            .dir
            .join(format!("{}-superuser-password", engine.as_str()));
        password_file(&path).map_err(|e| {
            Self::error(
                engine,
                format!("superuser password {}: {e}", path.display()),
                "",
            )
        })
    }

    /// Writes the compose file (the dir 0700) when it differs.
    fn write_compose_file(&self, engine: Database) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let text =
            render_shared_databases(&self.servers).map_err(|e| Self::error(engine, e, ""))?;
        let io =
            |e: std::io::Error| Self::error(engine, format!("{}: {e}", self.dir.display()), "");
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = self.dir.join(COMPOSE_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).map_err(io)?;
        }
        Ok(())
    }

    /// Whether `container` exists, and whether it runs.
    async fn container_state(container: &str) -> Option<bool> {
        let out = preview_engine::docker("look up a shared database server")
            .args([
                "container",
                "inspect",
                "--format",
                "{{.State.Running}}",
                container,
            ])
            .timeout(Duration::from_secs(30))
            .run()
            .await
            .ok()?;
        Some(out.stdout_text().trim() == "true")
    }

    /// Starts `engine`'s server unless it runs, and waits until it answers over TCP.
    pub async fn ensure_server(&self, engine: Database) -> Result<SharedServer> {
        let server = self
            .server(engine)
            .ok_or_else(|| Self::error(engine, "is never shared", ""))?;
        let _start = self.start_lock.lock().await;
        if Self::container_state(&server.container).await == Some(true)
            && self.answers(&server).await
        {
            return Ok(server);
        }
        self.write_compose_file(engine)?;
        let password = self.superuser_password(engine)?;
        let variable = superuser_password_variable(engine).unwrap_or_default();
        let env = AppEnv::new([(variable.to_owned(), password)].into_iter().collect());
        tracing::info!(server = %server.container, "starting the shared database server");
        self.compose
            .with_app_env(env)
            .start_services(
                &self.servers.project,
                &self.dir,
                COMPOSE_FILE,
                &[server.service().to_owned()],
            )
            .map_err(|e| Self::error(engine, e, ""))?
            .run()
            .await
            .map_err(|e| Self::error(engine, first_line(&e), e.stderr_tail()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.answers(&server).await {
            if Instant::now() > deadline {
                return Err(Self::error(
                    engine,
                    format!(
                        "{} did not answer within {}s",
                        server.container,
                        READY_TIMEOUT.as_secs()
                    ),
                    "",
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if engine == Database::Postgres {
            // Previews' roles get their own database and nothing else: not even the maintenance
            // databases every role may connect to by default.
            self.superuser_sql(
                &server,
                None,
                "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;\n\
                 REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;\n",
            )
            .await?;
        }
        Ok(server)
    }

    /// Whether the server answers over TCP (during its first start it listens on its socket
    /// only, so TCP means the real server is up) and takes the superuser's statements.
    async fn answers(&self, server: &SharedServer) -> bool {
        let tcp = match server.engine {
            Database::Postgres => preview_engine::docker("ask the shared Postgres if it is ready")
                .args([
                    "exec",
                    &server.container,
                    "pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                ]),
            _ => preview_engine::docker("ask the shared MySQL if it is ready").args([
                "exec",
                &server.container,
                "mysqladmin",
                "ping",
                "-h",
                "127.0.0.1",
                "--silent",
            ]),
        };
        if tcp.timeout(Duration::from_secs(10)).run().await.is_err() {
            return false;
        }
        self.superuser_sql(server, None, "SELECT 1;").await.is_ok()
    }

    /// Runs `sql` as the superuser on `server` (in database `database`, on Postgres): the
    /// statements on stdin of `docker exec -i`. Returns stdout (tab-separated, unaligned rows).
    /// Errors carry the client's stderr with `secrets` taken out.
    async fn superuser_sql_redacted(
        &self,
        server: &SharedServer,
        database: Option<&str>,
        sql: &str,
        secrets: &[&str],
    ) -> Result<String> {
        let cmd = match server.engine {
            Database::Postgres => preview_engine::docker("run SQL on the shared Postgres").args([
                "exec",
                "-i",
                "--user",
                "postgres",
                &server.container,
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                database.unwrap_or("postgres"),
            ]),
            _ => preview_engine::docker("run SQL on the shared MySQL")
                .env(
                    "MYSQL_PWD",
                    self.superuser_password(server.engine)?.as_str(),
                )
                .args([
                    "exec",
                    "-i",
                    "-e",
                    "MYSQL_PWD",
                    &server.container,
                    "mysql",
                    "-uroot",
                    "--batch",
                    "--skip-column-names",
                ]),
        };
        let out = cmd
            .stdin_bytes(sql.as_bytes().to_vec())
            .timeout(Duration::from_secs(120))
            .run()
            .await;
        match out {
            Ok(out) => Ok(out.stdout_text()),
            Err(e) => {
                let redact = |text: &str| {
                    secrets
                        .iter()
                        .fold(text.to_owned(), |t, s| t.replace(s, "[redacted]"))
                };
                Err(Self::error(
                    server.engine,
                    redact(&first_line(&e)),
                    &redact(e.stderr_tail()),
                ))
            }
        }
    }

    async fn superuser_sql(
        &self,
        server: &SharedServer,
        database: Option<&str>,
        sql: &str,
    ) -> Result<String> {
        self.superuser_sql_redacted(server, database, sql, &[])
            .await
    }

    /// Creates preview `id`'s database network, internal, on a /28 of SHARED_DATABASE_SUBNET:
    /// the one its id hashes to, or the next free one (Docker refuses overlapping subnets).
    async fn create_network(
        &self,
        id: &PreviewId,
        network: &str,
        engine: Database,
    ) -> Result<String> {
        use sha2::Digest;
        const PROBES: u32 = 256;
        let range = self.servers.subnets;
        let hash = sha2::Sha256::digest(id.as_str().as_bytes());
        let start = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
        let usable = range.len() - 1;
        let mut last = None;
        for probe in 0..PROBES.min(usable) {
            // Subnet 0 is the servers' own network.
            let subnet = range.subnet(1 + (start.wrapping_add(probe)) % usable);
            let created = preview_engine::docker("make a preview's database network")
                .args([
                    "network",
                    "create",
                    "--internal",
                    "--subnet",
                    &subnet,
                    "--label",
                ])
                .arg(format!("{}={}", labels::DEPLOYMENT, id.as_str()))
                .args(["--label"])
                .arg(format!(
                    "{}=true",
                    preview_core::render::shared_databases::SHARED_DATABASE_LABEL
                ))
                .arg(network)
                .timeout(Duration::from_secs(30))
                .run()
                .await;
            match created {
                Ok(_) => return Ok(subnet),
                Err(e) if e.stderr_tail().contains("overlap") => last = Some(e),
                Err(e) => return Err(Self::error(engine, first_line(&e), e.stderr_tail())),
            }
        }
        let tail = last
            .as_ref()
            .map(|e| e.stderr_tail().to_owned())
            .unwrap_or_default();
        Err(Self::error(
            engine,
            format!("no free /28 in SHARED_DATABASE_SUBNET {range} after {PROBES} tries"),
            &tail,
        ))
    }

    /// The subnet of `network` and its members with their addresses; `None` if it does not
    /// exist.
    async fn inspect_network(network: &str) -> Option<(String, Vec<(String, String)>)> {
        let out = preview_engine::docker("look up a preview's database network")
            .args([
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}};{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
                network,
            ])
            .timeout(Duration::from_secs(30))
            .run()
            .await
            .ok()?;
        let text = out.stdout_text();
        let (subnet, members) = text.trim().split_once(';')?;
        let members = members
            .split_whitespace()
            .filter_map(|m| m.split_once('='))
            .map(|(name, address)| {
                let ip = address.split('/').next().unwrap_or_default();
                (name.to_owned(), ip.to_owned())
            })
            .collect();
        Some((subnet.to_owned(), members))
    }

    /// Makes sure preview `id`'s network exists and reaches `server`; returns the network and
    /// the server's address on it. The app is given that address rather than the server's
    /// alias: the address holds as long as the connection does, without Docker's embedded DNS
    /// (which was seen to lose a connected container's alias while the engine entered or left
    /// swarm mode).
    async fn ensure_network(
        &self,
        id: &PreviewId,
        server: &SharedServer,
    ) -> Result<(String, String)> {
        let network = network_name(id);
        let engine = server.engine;
        let (subnet, members) = match Self::inspect_network(&network).await {
            Some(found) => found,
            None => (self.create_network(id, &network, engine).await?, Vec::new()),
        };
        if let Some((_, ip)) = members.iter().find(|(name, _)| *name == server.container)
            && !ip.is_empty()
        {
            return Ok((network, ip.clone()));
        }
        // The first address after the gateway, when it is free: the same one at every deploy.
        let preferred = subnet
            .split('/')
            .next()
            .and_then(|base| base.parse::<std::net::Ipv4Addr>().ok())
            .map(|base| std::net::Ipv4Addr::from(u32::from(base) + 2).to_string());
        let connect = |ip: Option<&str>| {
            let mut cmd =
                preview_engine::docker("connect the shared database server to a preview's network")
                    .args(["network", "connect", "--alias"])
                    .arg(server.alias());
            if let Some(ip) = ip {
                cmd = cmd.args(["--ip", ip]);
            }
            let cmd = cmd
                .arg(&network)
                .arg(&server.container)
                .timeout(Duration::from_secs(30));
            async move { cmd.run().await }
        };
        let taken = members.iter().any(|(_, ip)| Some(ip) == preferred.as_ref());
        let connected = match preferred.as_deref().filter(|_| !taken) {
            Some(ip) => match connect(Some(ip)).await {
                Ok(_) => Ok(()),
                Err(_) => connect(None).await.map(|_| ()),
            },
            None => connect(None).await.map(|_| ()),
        };
        connected.map_err(|e| Self::error(engine, first_line(&e), e.stderr_tail()))?;
        let ip = Self::inspect_network(&network)
            .await
            .and_then(|(_, members)| {
                members
                    .into_iter()
                    .find(|(name, _)| *name == server.container)
                    .map(|(_, ip)| ip)
            })
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
            .ok_or_else(|| {
                Self::error(
                    engine,
                    format!("{} has no address on {network}", server.container),
                    "",
                )
            })?;
        Ok((network, ip))
    }

    /// Makes preview `id`'s database and role on `engine`'s server (starting it if needed), or
    /// finds them from an earlier deploy, and sets the role's password to `password`. A new
    /// database gets `seed`.
    pub async fn provision(
        &self,
        id: &PreviewId,
        engine: Database,
        password: &str,
        seed: Option<&Seed>,
    ) -> Result<Provisioned> {
        let started = Instant::now();
        if !is_hex_password(password) {
            return Err(Self::error(engine, "the role's password must be hex", ""));
        }
        let server = self.ensure_server(engine).await?;
        let (network, address) = self.ensure_network(id, &server).await?;
        let name = database_name(id);
        let seeding = match engine {
            Database::Postgres => {
                self.provision_postgres(&server, &network, &address, &name, password, seed)
                    .await?
            }
            _ => {
                self.provision_mysql(&server, &network, &address, &name, password, seed)
                    .await?
            }
        };
        let took = started.elapsed();
        tracing::info!(
            preview = %id,
            engine = engine.as_str(),
            database = %name,
            seeding = ?seeding,
            took_ms = took.as_millis() as u64,
            "the preview's database is ready on the shared server"
        );
        Ok(Provisioned {
            database: SharedDatabase {
                engine,
                host: address,
                port: server.port(),
                name,
                password: password.to_owned(),
                network,
            },
            seeding,
            took,
        })
    }

    async fn provision_postgres(
        &self,
        server: &SharedServer,
        network: &str,
        address: &str,
        name: &str,
        password: &str,
        seed: Option<&Seed>,
    ) -> Result<Seeding> {
        let role = pg_ident(name);
        let sql = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN \
             CREATE ROLE {role}; END IF; END $$;\n\
             ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT} PASSWORD {pw};\n\
             SELECT count(*) FROM pg_database WHERE datname = {lit};\n",
            lit = literal(name),
            pw = literal(password),
        );
        let exists = self
            .superuser_sql_redacted(server, None, &sql, &[password])
            .await?;
        if exists.trim() != "0" {
            return Ok(Seeding::Kept);
        }
        let Some(seed) = seed else {
            self.create_postgres_database(server, name, None, None)
                .await?;
            return Ok(Seeding::None);
        };
        let template = template_name(seed);
        let lock = self.template_lock(&template);
        let _template = lock.lock().await;
        let built = self
            .ensure_template(server, network, address, &template, seed)
            .await?;
        self.create_postgres_database(server, name, Some(&template), Some(seed))
            .await?;
        Ok(Seeding::Cloned { built })
    }

    fn template_lock(&self, template: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.template_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(template.to_owned())
            .or_default()
            .clone()
    }

    /// Creates database `name` owned by its role (cloned from `template`, whose objects then
    /// pass to the role), closed to every other role, its comment naming the seed.
    async fn create_postgres_database(
        &self,
        server: &SharedServer,
        name: &str,
        template: Option<&str>,
        seed: Option<&Seed>,
    ) -> Result<()> {
        let ident = pg_ident(name);
        let from = template
            .map(|t| format!(" TEMPLATE {}", pg_ident(t)))
            .unwrap_or_default();
        let comment = seed
            .map(|s| literal(&format!("seed:{}", s.short_hash())))
            .unwrap_or_else(|| "NULL".to_owned());
        let sql = format!(
            "CREATE DATABASE {ident} OWNER {ident}{from};\n\
             REVOKE ALL ON DATABASE {ident} FROM PUBLIC;\n\
             COMMENT ON DATABASE {ident} IS {comment};\n"
        );
        self.superuser_sql(server, None, &sql).await?;
        if let Some(template) = template {
            let sql = format!("REASSIGN OWNED BY {} TO {ident};\n", pg_ident(template));
            if let Err(e) = self.superuser_sql(server, Some(name), &sql).await {
                // A half-made database would be found as "kept" by the next deploy.
                let _ = self
                    .superuser_sql(
                        server,
                        None,
                        &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE);\n"),
                    )
                    .await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Builds the template database of `seed` unless it exists; returns whether it built it.
    async fn ensure_template(
        &self,
        server: &SharedServer,
        network: &str,
        address: &str,
        template: &str,
        seed: &Seed,
    ) -> Result<bool> {
        let ident = pg_ident(template);
        let state = self
            .superuser_sql(
                server,
                None,
                &format!(
                    "SELECT datistemplate FROM pg_database WHERE datname = {};\n",
                    literal(template)
                ),
            )
            .await?;
        match state.trim() {
            "t" => return Ok(false),
            // Left half-built by a deploy that was killed: built again from the start.
            "f" => {
                self.superuser_sql(
                    server,
                    None,
                    &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE);\n"),
                )
                .await?;
            }
            _ => {}
        }
        // The seed runs as the template's own role, which owns the template while it loads.
        let password = random_hex(16);
        let sql = format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN \
             CREATE ROLE {ident}; END IF; END $$;\n\
             ALTER ROLE {ident} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS PASSWORD {pw};\n\
             CREATE DATABASE {ident} OWNER {ident};\n\
             REVOKE ALL ON DATABASE {ident} FROM PUBLIC;\n",
            lit = literal(template),
            pw = literal(&password),
        );
        self.superuser_sql_redacted(server, None, &sql, &[&password])
            .await?;
        let loaded = self
            .load_seed(server, network, address, template, &password, seed)
            .await;
        let sql = match &loaded {
            Ok(()) => format!(
                "ALTER ROLE {ident} WITH NOLOGIN PASSWORD NULL;\n\
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {lit};\n\
                 ALTER DATABASE {ident} OWNER TO postgres;\n\
                 ALTER DATABASE {ident} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;\n",
                lit = literal(template),
            ),
            Err(_) => format!(
                "DROP DATABASE IF EXISTS {ident} WITH (FORCE);\nDROP ROLE IF EXISTS {ident};\n"
            ),
        };
        self.superuser_sql(server, None, &sql).await?;
        loaded.map(|()| true)
    }

    /// Loads `seed` into database `name` as role `name` with `password`, from a throwaway
    /// client container on `network`: the repo's SQL never runs as a superuser, nor inside the
    /// server's container.
    async fn load_seed(
        &self,
        server: &SharedServer,
        network: &str,
        address: &str,
        name: &str,
        password: &str,
        seed: &Seed,
    ) -> Result<()> {
        let image = preview_core::images::image_for(server.engine.as_str());
        let host = address;
        let (variable, client): (&str, Vec<&str>) = match server.engine {
            Database::Postgres => (
                "PGPASSWORD",
                vec![
                    "psql",
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    host,
                    "-U",
                    name,
                    "-d",
                    name,
                ],
            ),
            _ => (
                "MYSQL_PWD",
                vec!["mysql", "--batch", "-h", host, "-u", name, name],
            ),
        };
        let (program, args) = client.split_first().expect("a client program");
        let started = Instant::now();
        let loaded = preview_engine::docker("load the repository's database seed")
            .env(variable, password)
            .args(["run", "--rm", "-i", "--network", network, "-e", variable])
            .args([
                "--memory",
                SEED_CLIENT_MEMORY,
                "--cpus",
                "0.5",
                "--pids-limit",
                "64",
            ])
            .args([
                "--security-opt",
                "no-new-privileges:true",
                "--cap-drop",
                "ALL",
            ])
            .args(["--user", "65534:65534", "--entrypoint", program])
            .args(["--label"])
            .arg(format!(
                "{}=true",
                preview_core::render::shared_databases::SHARED_DATABASE_LABEL
            ))
            .arg(image)
            .args(args)
            .stdin_bytes(seed.sql.as_bytes().to_vec())
            .timeout(SEED_TIMEOUT)
            .run()
            .await;
        match loaded {
            Ok(_) => {
                tracing::info!(
                    database = name,
                    seed = %seed.path,
                    bytes = seed.sql.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "loaded the seed"
                );
                Ok(())
            }
            Err(e) => Err(Self::error(
                server.engine,
                format!("loading the seed {} failed", seed.path),
                &e.stderr_tail().replace(password, "[redacted]"),
            )),
        }
    }

    async fn provision_mysql(
        &self,
        server: &SharedServer,
        network: &str,
        address: &str,
        name: &str,
        password: &str,
        seed: Option<&Seed>,
    ) -> Result<Seeding> {
        let ident = my_ident(name);
        // In a GRANT, `_` in a database name is a wildcard: escaped, it names this one alone.
        let grant_ident = format!("`{}`", name.replace('_', "\\_"));
        let user = format!("{}@'%'", literal(name));
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {lit};\n\
             CREATE DATABASE IF NOT EXISTS {ident};\n\
             CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {pw};\n\
             ALTER USER {user} IDENTIFIED BY {pw} WITH MAX_USER_CONNECTIONS {CONNECTION_LIMIT};\n\
             GRANT ALL PRIVILEGES ON {grant_ident}.* TO {user};\n",
            lit = literal(name),
            pw = literal(password),
        );
        let existed = self
            .superuser_sql_redacted(server, None, &sql, &[password])
            .await?;
        if existed.trim() != "0" {
            return Ok(Seeding::Kept);
        }
        let Some(seed) = seed else {
            return Ok(Seeding::None);
        };
        if let Err(e) = self
            .load_seed(server, network, address, name, password, seed)
            .await
        {
            // Without its seed the database would be found as "kept" by the next deploy.
            let _ = self
                .superuser_sql(server, None, &format!("DROP DATABASE IF EXISTS {ident};\n"))
                .await;
            return Err(e);
        }
        Ok(Seeding::Loaded)
    }

    /// Drops preview `id`'s databases and roles on every shared server that runs (and on one
    /// that is stopped when `start_stopped`: in shared mode), and removes its network. Best
    /// effort: each failure is logged.
    pub async fn drop_preview(&self, id: &PreviewId, start_stopped: bool) {
        let name = database_name(id);
        let network = network_name(id);
        for engine in preview_core::render::shared_databases::SHARED_ENGINES {
            let Some(server) = self.server(engine) else {
                continue;
            };
            match Self::container_state(&server.container).await {
                None => continue,
                Some(false) if !start_stopped => continue,
                Some(false) => {
                    if let Err(e) = self.ensure_server(engine).await {
                        tracing::warn!(preview = %id, error = %e, "the shared database server did not start; the preview's database stays");
                        continue;
                    }
                }
                Some(true) => {}
            }
            let dropped = match engine {
                Database::Postgres => self.drop_postgres(&server, &name).await,
                _ => {
                    let sql = format!(
                        "DROP DATABASE IF EXISTS {};\nDROP USER IF EXISTS {}@'%';\n",
                        my_ident(&name),
                        literal(&name)
                    );
                    self.superuser_sql(&server, None, &sql).await.map(|_| ())
                }
            };
            match dropped {
                Ok(()) => {
                    tracing::info!(preview = %id, engine = engine.as_str(), database = %name, "dropped the preview's database and role")
                }
                Err(e) => {
                    tracing::warn!(preview = %id, error = %e, "dropping the preview's database failed")
                }
            }
            let _ = preview_engine::docker("disconnect the shared database server")
                .args([
                    "network",
                    "disconnect",
                    "--force",
                    &network,
                    &server.container,
                ])
                .timeout(Duration::from_secs(30))
                .run()
                .await;
        }
        let removed = preview_engine::docker("remove a preview's database network")
            .args(["network", "rm", &network])
            .timeout(Duration::from_secs(30))
            .run()
            .await;
        if let Err(e) = removed
            && !e.stderr_tail().contains("not found")
        {
            tracing::warn!(preview = %id, error = %e, "removing the preview's database network failed");
        }
    }

    /// Drops a Postgres database and role, then the seed's template when no database cloned
    /// from it is left.
    async fn drop_postgres(&self, server: &SharedServer, name: &str) -> Result<()> {
        let ident = pg_ident(name);
        let lit = literal(name);
        let seed = self
            .superuser_sql(
                server,
                None,
                &format!(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = {lit};\n"
                ),
            )
            .await?;
        self.superuser_sql(
            server,
            None,
            &format!(
                "DROP DATABASE IF EXISTS {ident} WITH (FORCE);\nDROP ROLE IF EXISTS {ident};\n"
            ),
        )
        .await?;
        let Some(hash) = seed.trim().strip_prefix("seed:") else {
            return Ok(());
        };
        let template = format!("tpl_{hash}");
        if !is_database_identifier(&template) {
            return Ok(());
        }
        let lock = self.template_lock(&template);
        let _template = lock.lock().await;
        let users = self
            .superuser_sql(
                server,
                None,
                &format!(
                    "SELECT count(*) FROM pg_database WHERE shobj_description(oid, 'pg_database') = {};\n",
                    literal(&format!("seed:{hash}"))
                ),
            )
            .await?;
        if users.trim() == "0" {
            let ident = pg_ident(&template);
            self.superuser_sql(
                server,
                None,
                &format!(
                    "ALTER DATABASE {ident} WITH IS_TEMPLATE false;\n\
                     DROP DATABASE IF EXISTS {ident};\nDROP ROLE IF EXISTS {ident};\n"
                ),
            )
            .await?;
            tracing::info!(template = %template, "dropped a seed's template database: no preview uses it");
        }
        Ok(())
    }

    /// Removes the servers with their volumes and files (`compose down --volumes`): for tests
    /// and for an operator leaving shared mode.
    pub async fn remove_servers(&self) -> Result<()> {
        let down = self
            .compose
            .down_project(&self.servers.project)
            .map_err(|e| Self::error(Database::Postgres, e, ""))?
            .run()
            .await;
        down.map_err(|e| Self::error(Database::Postgres, first_line(&e), e.stderr_tail()))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// The first line of an error (the rest, stderr, goes to the log tail).
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_short_valid_and_apart() {
        let id = |s: &str| PreviewId::parse(s).unwrap();
        let a = database_name(&id("octo-org-hello-api-pr-7"));
        assert!(is_database_identifier(&a), "{a}");
        assert!(a.starts_with("pv_octo_org_hello_api_"), "{a}");
        let long_a = database_name(&id(&format!("{}-pr-1", "a".repeat(50))));
        let long_b = database_name(&id(&format!("{}-pr-2", "a".repeat(50))));
        assert!(
            long_a.len() <= 32 && is_database_identifier(&long_a),
            "{long_a}"
        );
        assert_ne!(long_a, long_b);
        assert_eq!(network_name(&id("x-pr-1")), "x-pr-1-shared-db");
    }

    #[test]
    fn passwords_are_hex_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let first = password_file(&path).unwrap();
        assert!(is_hex_password(&first) && first.len() == 32, "{first}");
        assert_eq!(password_file(&path).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not hex!").unwrap();
        let replaced = password_file(&path).unwrap();
        assert!(is_hex_password(&replaced) && replaced != first);
    }

    #[test]
    #[should_panic(expected = "only names and hex reach SQL literals")]
    fn a_literal_refuses_a_quote() {
        literal("x'; DROP DATABASE y; --");
    }

    #[test]
    fn the_comment_line_says_how_the_database_was_made() {
        let provisioned = |seeding| Provisioned {
            database: SharedDatabase {
                engine: Database::Postgres,
                host: "shared-postgres".into(),
                port: 5432,
                name: "pv_x".into(),
                password: "00".repeat(16),
                network: "x-shared-db".into(),
            },
            seeding,
            took: Duration::from_millis(420),
        };
        assert_eq!(
            provisioned(Seeding::Cloned { built: false }).describe(Some("db/seed.sql")),
            "postgres on the shared server, cloned from the template database of `db/seed.sql` (0.4 s)"
        );
        assert_eq!(
            provisioned(Seeding::None).describe(None),
            "postgres on the shared server, empty (0.4 s)"
        );
        assert!(!format!("{:?}", provisioned(Seeding::Kept)).contains(&"00".repeat(16)));
    }
}
