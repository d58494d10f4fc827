//! Draining the old ports after nginx switched away from them (the app's, and a routed second
//! web service's), before their containers go.
//!
//! A reload returns before nginx serves the new config, and old workers finish (and for a moment
//! still accept) requests for the old port. So the drain first waits a settle time, then until no
//! TCP connection to the old port is open on this host (nginx's upstream connections, as the
//! kernel lists them in `/proc/net/tcp*`), up to a limit: a WebSocket may stay open for hours.

use std::time::{Duration, Instant};

/// How long to drain an app port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// Always waited: nginx takes this long at most to serve a reloaded config.
    pub settle: Duration,
    /// Open connections are waited for this long at most, then cut.
    pub max: Duration,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// How often the open connections are counted.
const POLL: Duration = Duration::from_millis(50);

/// Waits until every one of `ports` is drained under `policy` (one settle time for all).
/// Returns the connections still open at the end (0 when they drained).
pub async fn drain(ports: &[u16], policy: DrainPolicy) -> usize {
    let started = Instant::now();
    tokio::time::sleep(policy.settle).await;
    loop {
        let open = ports.iter().map(|p| open_connections(*p)).sum();
        if open == 0 || started.elapsed() >= policy.max {
            return open;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Established TCP connections on this host from or to `port` (0 when the kernel's tables cannot
/// be read).
pub fn open_connections(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|text| established_on(&text, port))
        .sum()
}

/// Counts the rows of a `/proc/net/tcp` table in state ESTABLISHED (`01`) whose local or remote
/// address has `port`.
fn established_on(table: &str, port: u16) -> usize {
    let port_of = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.len() > 3
                && fields[3] == "01"
                && (port_of(fields[1]) == Some(port) || port_of(fields[2]) == Some(port))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F41 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F41 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F41 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   4: 0100007F:C352 0100007F:1F42 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_established_connections_of_the_port_only() {
        // 0x1F41 = 8001: the listener (0A) and the TIME_WAIT (06) do not count.
        assert_eq!(established_on(TABLE, 8001), 2);
        assert_eq!(established_on(TABLE, 8002), 1);
        assert_eq!(established_on(TABLE, 8003), 0);
        assert_eq!(established_on("", 8001), 0);
    }

    #[test]
    fn sees_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(open_connections(port), 0);
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(open_connections(port), 2, "both ends");
        drop((client, server));
    }
}
