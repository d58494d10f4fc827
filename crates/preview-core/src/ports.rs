//! Host port pools for previews: app ports (default 8000-8999) and database ports (default
//! 9000-9999). The pools are disjoint. A port is handed out only if it is not allocated to another
//! preview, not published by a running container (the caller supplies that set, from Docker) and
//! not bound on the host (checked by binding it for a moment).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// `start..=end`; both non-zero and `start <= end`.
    pub fn new(start: u16, end: u16) -> Result<Self> {
        if start == 0 || start > end {
            return Err(Error::Invalid {
                field: "port range".into(),
                reason: format!("{start}-{end} must be non-empty and start above 0"),
            });
        }
        Ok(Self { start, end })
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The ports, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for PortRange {
    type Err = Error;

    /// Parses `START-END`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Invalid {
            field: "port range".into(),
            reason: format!("{s:?} is not START-END, e.g. 8000-8999"),
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        Self::new(
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        )
    }
}

/// Which pool a port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// The app's HTTP port, proxied by nginx.
    App,
    /// A database port (never published to the outside).
    Db,
}

/// The two pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPools {
    app: PortRange,
    db: PortRange,
}

impl Default for PortPools {
    fn default() -> Self {
        Self {
            app: PortRange {
                start: 8000,
                end: 8999,
            },
            db: PortRange {
                start: 9000,
                end: 9999,
            },
        }
    }
}

/// The ports held by one preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortAllocation {
    /// The app port.
    pub app: u16,
    /// The database port, when the preview has a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u16>,
    /// During an update, the app port of the new commit's containers, which start beside the
    /// serving ones; it becomes `app` when nginx switches to them.
    #[serde(default, rename = "nextApp", skip_serializing_if = "Option::is_none")]
    pub next_app: Option<u16>,
    /// The port of the repo compose file's second web service, routed at its own hostname
    /// ([`crate::sanitize::HostnameService`]); from the app pool, as it is proxied by nginx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<u16>,
    /// During an update, the port of the new commit's second web service, which starts beside
    /// the serving one as the app does; it becomes `service` when nginx switches to them.
    #[serde(
        default,
        rename = "nextService",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_service: Option<u16>,
}

impl PortAllocation {
    /// The ports, app first.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        std::iter::once(self.app)
            .chain(self.db)
            .chain(self.next_app)
            .chain(self.service)
            .chain(self.next_service)
    }
}

impl PortPools {
    /// Two disjoint pools.
    pub fn new(app: PortRange, db: PortRange) -> Result<Self> {
        if app.overlaps(&db) {
            return Err(Error::Invalid {
                field: "port pools".into(),
                reason: format!("app ports {app} and db ports {db} overlap"),
            });
        }
        Ok(Self { app, db })
    }

    /// The app pool.
    pub fn app(&self) -> PortRange {
        self.app
    }

    /// The database pool.
    pub fn db(&self) -> PortRange {
        self.db
    }

    /// The pool of `kind`.
    pub fn range(&self, kind: PortKind) -> PortRange {
        match kind {
            PortKind::App => self.app,
            PortKind::Db => self.db,
        }
    }

    /// The first port of `kind` for which `usable` says yes.
    pub fn pick(&self, kind: PortKind, mut usable: impl FnMut(u16) -> bool) -> Result<u16> {
        let range = self.range(kind);
        range
            .iter()
            .find(|p| usable(*p))
            .ok_or_else(|| Error::PortsExhausted {
                pool: match kind {
                    PortKind::App => "app",
                    PortKind::Db => "db",
                },
                range: range.to_string(),
            })
    }

    /// Allocates an app port, and a db port when `need_db`, skipping ports in `allocated` (held by
    /// other previews) and `published` (published by running containers), and ports for which
    /// `bindable` says no (use [`port_is_free_on_host`]).
    pub fn allocate(
        &self,
        need_db: bool,
        allocated: &BTreeSet<u16>,
        published: &BTreeSet<u16>,
        mut bindable: impl FnMut(u16) -> bool,
    ) -> Result<PortAllocation> {
        let mut usable = |p: u16| !allocated.contains(&p) && !published.contains(&p) && bindable(p);
        let app = self.pick(PortKind::App, &mut usable)?;
        let db = if need_db {
            Some(self.pick(PortKind::Db, &mut usable)?)
        } else {
            None
        };
        Ok(PortAllocation {
            app,
            db,
            next_app: None,
            service: None,
            next_service: None,
        })
    }
}

/// Whether `port` can be bound right now on all IPv4 interfaces and on loopback, i.e. nothing on
/// the host listens on it.
pub fn port_is_free_on_host(port: u16) -> bool {
    [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST]
        .into_iter()
        .all(|ip| TcpListener::bind((ip, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let p = PortPools::default();
        assert_eq!(p.app().to_string(), "8000-8999");
        assert_eq!(p.db().to_string(), "9000-9999");
        assert!(!p.app().overlaps(&p.db()));
    }

    #[test]
    fn ranges_parse_and_must_be_disjoint() {
        let a: PortRange = "20000-20009".parse().unwrap();
        let b: PortRange = " 20010 - 20019 ".parse().unwrap();
        assert!(PortPools::new(a, b).is_ok());
        assert!(PortPools::new(a, "20005-20100".parse().unwrap()).is_err());
        for bad in ["", "8000", "0-10", "10-5", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_allocated_published_and_bound() {
        let pools = PortPools::new(
            "30000-30003".parse().unwrap(),
            "30010-30011".parse().unwrap(),
        )
        .unwrap();
        let allocated = BTreeSet::from([30000]);
        let published = BTreeSet::from([30001, 30010]);
        let got = pools
            .allocate(true, &allocated, &published, |p| p != 30002)
            .unwrap();
        assert_eq!(
            got,
            PortAllocation {
                app: 30003,
                db: Some(30011),
                next_app: None,
                service: None,
                next_service: None,
            }
        );
        let err = pools
            .allocate(false, &BTreeSet::from([30000, 30003]), &published, |p| {
                p != 30002
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::PortsExhausted { pool: "app", .. }),
            "{err}"
        );
    }

    #[test]
    fn try_bind_sees_a_listener() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_is_free_on_host(port));
        drop(l);
        assert!(port_is_free_on_host(port));
    }
}
