//! The compose project of the engine's shared database servers (`DATABASE_MODE=shared`): one
//! Postgres and one MySQL server, each with its own volume, limits and a healthcheck, on an
//! internal network, publishing nothing. The orchestrator starts the one a preview needs on
//! demand and connects each preview's own database network to it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Limits, render_template};
use crate::images;
use crate::model::Database;
use crate::{Error, Result};

/// The label on every object of the shared servers' project. Not the previews' managed label:
/// the reconcile sweep must never take the servers for an orphaned preview.
pub const SHARED_DATABASE_LABEL: &str = "dev.preview-deployer.shared-database";

/// The variable that carries a server's superuser password, named in the compose file without
/// a value: Compose takes it from its own environment.
pub fn superuser_password_variable(engine: Database) -> Option<&'static str> {
    match engine {
        Database::Postgres => Some("POSTGRES_PASSWORD"),
        Database::Mysql => Some("MYSQL_ROOT_PASSWORD"),
        Database::Mongodb => None,
    }
}

/// The engines a shared server exists for.
pub const SHARED_ENGINES: [Database; 2] = [Database::Postgres, Database::Mysql];

/// One server of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedServer {
    /// Postgres or MySQL.
    pub engine: Database,
    /// Its container's name (fixed, so `docker exec` finds it).
    pub container: String,
}

impl SharedServer {
    /// The compose service: `postgres` or `mysql`.
    pub fn service(&self) -> &'static str {
        self.engine.as_str()
    }

    /// The name previews reach it by on their database networks.
    pub fn alias(&self) -> String {
        format!("shared-{}", self.engine.as_str())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        match self.engine {
            Database::Postgres => 5432,
            _ => 3306,
        }
    }
}

/// What the shared servers' compose file is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedServers {
    /// The compose project's name, e.g. `preview-shared-db`; it prefixes the containers.
    pub project: String,
    /// Limits of each server's container.
    pub limits: Limits,
    /// The IPv4 range the servers' network and each preview's database network take their
    /// subnets from (explicit subnets: Docker's default address pools hold about 30 networks).
    pub subnets: SubnetRange,
}

/// An IPv4 range cut into /28 subnets: the first for the servers' own network, one for each
/// preview's database network (its app's two slots and the server need 3 of its 14 addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetRange {
    base: u32,
    prefix: u8,
}

impl SubnetRange {
    /// The prefix length of each subnet.
    pub const SUBNET_PREFIX: u8 = 28;

    /// How many /28 subnets the range holds.
    pub fn len(&self) -> u32 {
        1 << (Self::SUBNET_PREFIX - self.prefix)
    }

    /// Whether it holds none (never: a range is at least a /24).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `index`th /28 subnet (modulo the range), e.g. `10.213.0.16/28`.
    pub fn subnet(&self, index: u32) -> String {
        let start = self.base + (index % self.len()) * 16;
        format!(
            "{}/{}",
            std::net::Ipv4Addr::from(start),
            Self::SUBNET_PREFIX
        )
    }
}

impl std::str::FromStr for SubnetRange {
    type Err = String;

    /// An IPv4 CIDR of prefix length 8 to 24, e.g. `10.213.0.0/16`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 range such as 10.213.0.0/16"))?;
        let ip: std::net::Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=24).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix length must be 8 to 24"))?;
        let base = u32::from(ip);
        if base & (u32::MAX >> prefix) != 0 {
            return Err(format!("{s:?}: the address has bits set beyond /{prefix}"));
        }
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for SubnetRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", std::net::Ipv4Addr::from(self.base), self.prefix)
    }
}

impl SharedServers {
    /// The server of `engine`, if one is shared.
    pub fn server(&self, engine: Database) -> Option<SharedServer> {
        SHARED_ENGINES.contains(&engine).then(|| SharedServer {
            engine,
            container: format!("{}-{}", self.project, engine.as_str()),
        })
    }

    fn validate(&self) -> Result<()> {
        let p = &self.project;
        if p.is_empty()
            || p.len() > 40
            || !p.starts_with(|c: char| c.is_ascii_lowercase())
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::Invalid {
                field: "shared database project".to_owned(),
                reason: "1-40 of [a-z0-9-], starting with a letter".to_owned(),
            });
        }
        if self.limits.memory.is_empty()
            || !self
                .limits
                .memory
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            return Err(Error::Invalid {
                field: "shared database memory limit".to_owned(),
                reason: "e.g. 512m".to_owned(),
            });
        }
        if self.limits.cpus.parse::<f64>().map_or(true, |c| c <= 0.0) {
            return Err(Error::Invalid {
                field: "shared database cpu limit".to_owned(),
                reason: "a positive number".to_owned(),
            });
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ServerView {
    service: &'static str,
    image: String,
    container: String,
    environment: Vec<(String, Option<String>)>,
    volume: String,
    data_dir: &'static str,
    healthcheck: Vec<&'static str>,
}

#[derive(Serialize)]
struct Context {
    header: &'static str,
    subnet: String,
    project: String,
    servers: Vec<ServerView>,
    labels: BTreeMap<String, String>,
    limits: Limits,
}

/// Renders the shared servers' compose file.
pub fn render_shared_databases(servers: &SharedServers) -> Result<String> {
    servers.validate()?;
    let views = SHARED_ENGINES
        .iter()
        .filter_map(|engine| servers.server(*engine))
        .map(|server| {
            let password = superuser_password_variable(server.engine)
                .map(|v| (v.to_owned(), None))
                .into_iter();
            let (environment, data_dir, healthcheck): (Vec<_>, _, _) = match server.engine {
                Database::Postgres => (
                    std::iter::once(("POSTGRES_USER".to_owned(), Some("postgres".to_owned())))
                        .chain(password)
                        .collect(),
                    "/var/lib/postgresql/data",
                    vec!["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
                ),
                _ => (
                    password.collect(),
                    "/var/lib/mysql",
                    vec!["CMD", "mysqladmin", "ping", "-h", "127.0.0.1", "--silent"],
                ),
            };
            ServerView {
                service: server.service(),
                image: images::image_for(server.engine.as_str()).to_owned(),
                volume: format!("{}-data", server.service()),
                container: server.container,
                environment,
                data_dir,
                healthcheck,
            }
        })
        .collect();
    render_template(
        "shared-databases-compose.yml.j2",
        Context {
            header: "Generated by preview-deployer; do not edit.",
            subnet: servers.subnets.subnet(0),
            project: servers.project.clone(),
            servers: views,
            labels: BTreeMap::from([(SHARED_DATABASE_LABEL.to_owned(), "true".to_owned())]),
            limits: servers.limits.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> SharedServers {
        SharedServers {
            project: "preview-shared-db".to_owned(),
            limits: Limits {
                memory: "1g".to_owned(),
                cpus: "1".to_owned(),
                pids: 512,
            },
            subnets: "10.213.0.0/16".parse().unwrap(),
        }
    }

    #[test]
    fn a_range_is_cut_into_subnets_of_16_addresses() {
        let range: SubnetRange = "10.213.0.0/16".parse().unwrap();
        assert_eq!(range.len(), 4096);
        assert_eq!(range.subnet(0), "10.213.0.0/28");
        assert_eq!(range.subnet(1), "10.213.0.16/28");
        assert_eq!(range.subnet(4095), "10.213.255.240/28");
        assert_eq!(range.subnet(4096), "10.213.0.0/28");
        assert_eq!(range.to_string(), "10.213.0.0/16");
        for bad in [
            "10.213.0.0",
            "10.213.0.1/16",
            "10.213.0.0/28",
            "x/16",
            "10.0.0.0/7",
        ] {
            assert!(bad.parse::<SubnetRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shared_servers_compose_file() {
        let text = render_shared_databases(&servers()).unwrap();
        insta::assert_snapshot!(text);
        // It is YAML that Compose can read, and no value of a password is in it.
        let tree: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert!(tree["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].is_null());
        assert!(tree["services"]["mysql"]["environment"]["MYSQL_ROOT_PASSWORD"].is_null());
        assert!(tree["services"]["postgres"].get("ports").is_none());
        assert_eq!(tree["networks"]["default"]["internal"], true);
    }

    #[test]
    fn the_servers_are_named_after_the_project() {
        let postgres = servers().server(Database::Postgres).unwrap();
        assert_eq!(postgres.container, "preview-shared-db-postgres");
        assert_eq!(postgres.alias(), "shared-postgres");
        assert_eq!(postgres.port(), 5432);
        assert_eq!(servers().server(Database::Mysql).unwrap().port(), 3306);
        assert_eq!(servers().server(Database::Mongodb), None);
    }

    #[test]
    fn a_bad_project_name_is_refused() {
        for project in ["", "Preview", "a b", "-x", &"x".repeat(41)] {
            let servers = SharedServers {
                project: project.to_owned(),
                ..servers()
            };
            assert!(
                render_shared_databases(&servers)
                    .unwrap_err()
                    .to_string()
                    .starts_with("invalid shared database project"),
                "{project:?}"
            );
        }
    }
}
