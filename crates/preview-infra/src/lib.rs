//! Typed views of the infrastructure code in `terraform/` and `ansible/`.
//!
//! The CLI reads `terraform output -json` after `terraform apply` to learn where the server is;
//! [`ServerOutputs`] is that contract in one place, so a renamed output breaks a test here
//! rather than a user's `preview setup`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

/// The outputs `terraform/outputs.tf` must declare; the CLI relies on each of them.
pub const REQUIRED_OUTPUTS: [&str; 7] = [
    "server_ip",
    "droplet_id",
    "ssh_user",
    "reserved_ip",
    "server_private_ipv4",
    "worker_ipv4",
    "worker_private_ipv4",
];

/// Path of the orchestrator's environment file on the server (mode 0600).
pub const ORCHESTRATOR_ENV_FILE: &str = "/opt/preview-deployer/orchestrator.env";

/// Name of the orchestrator's systemd unit on the server.
pub const ORCHESTRATOR_UNIT: &str = "preview-orchestrator";

/// Command the orchestrator runs to have nginx test and reload its configuration, as root,
/// through the `preview-nginx-reload.path` unit (no sudo, no setuid).
pub const NGINX_RELOAD_COMMAND: &str = "/usr/local/bin/preview-nginx-reload";

/// Errors from reading the infrastructure's outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not the JSON object `terraform output -json` prints.
    #[error("`terraform output -json` did not print a JSON object of outputs: {0}")]
    Json(#[from] serde_json::Error),
    /// An output the CLI needs is not in the state; usually `terraform apply` has not run yet.
    #[error("terraform output `{0}` is missing; has `terraform apply` completed?")]
    MissingOutput(&'static str),
    /// An output is there but its value is not what `outputs.tf` promises.
    #[error("terraform output `{name}` is invalid: {reason}")]
    InvalidOutput {
        /// Name of the output.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One entry of `terraform output -json`: `{"sensitive": false, "type": "string", "value": ...}`.
#[derive(Debug, Deserialize)]
struct RawOutput {
    value: serde_json::Value,
}

/// Where the provisioned server is, from `terraform output -json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOutputs {
    /// Address for SSH, DNS and webhooks (the reserved IP).
    pub server_ip: IpAddr,
    /// The reserved IP itself.
    pub reserved_ip: IpAddr,
    /// DigitalOcean's numeric droplet id, kept as text as the provider reports it.
    pub droplet_id: String,
    /// User to log in as over SSH.
    pub ssh_user: String,
    /// The server's address in the VPC: the Swarm manager's and the private registry's.
    pub server_private_ip: IpAddr,
    /// The Swarm workers, in terraform's order; empty with `worker_count = 0`.
    pub workers: Vec<WorkerAddresses>,
}

/// Where one Swarm worker droplet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAddresses {
    /// Its public address, for Ansible over SSH.
    pub public_ip: IpAddr,
    /// Its VPC address, where the Swarm and nginx reach it.
    pub private_ip: IpAddr,
}

impl ServerOutputs {
    /// Parses the bytes `terraform output -json` printed.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let outputs: BTreeMap<String, RawOutput> = serde_json::from_slice(bytes)?;
        let text = |name: &'static str| -> Result<String> {
            let raw = outputs.get(name).ok_or(Error::MissingOutput(name))?;
            match &raw.value {
                serde_json::Value::String(s) => Ok(s.clone()),
                // The provider has reported numeric ids as numbers in some versions.
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(Error::InvalidOutput {
                    name,
                    reason: format!("expected a string, found {other}"),
                }),
            }
        };
        let parse_ip = |name: &'static str, value: &str| -> Result<IpAddr> {
            value.parse().map_err(|_| Error::InvalidOutput {
                name,
                reason: format!("{value:?} is not an IP address"),
            })
        };
        let ip = |name: &'static str| -> Result<IpAddr> { parse_ip(name, &text(name)?) };
        let ips = |name: &'static str| -> Result<Vec<IpAddr>> {
            let raw = outputs.get(name).ok_or(Error::MissingOutput(name))?;
            let serde_json::Value::Array(items) = &raw.value else {
                return Err(Error::InvalidOutput {
                    name,
                    reason: format!("expected a list of addresses, found {}", raw.value),
                });
            };
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => parse_ip(name, s),
                    other => Err(Error::InvalidOutput {
                        name,
                        reason: format!("expected an address, found {other}"),
                    }),
                })
                .collect()
        };

        let droplet_id = text("droplet_id")?;
        if droplet_id.is_empty() || !droplet_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidOutput {
                name: "droplet_id",
                reason: format!("{droplet_id:?} is not a numeric droplet id"),
            });
        }
        let ssh_user = text("ssh_user")?;
        if !is_login_name(&ssh_user) {
            return Err(Error::InvalidOutput {
                name: "ssh_user",
                reason: format!("{ssh_user:?} is not a plain login name"),
            });
        }
        let public = ips("worker_ipv4")?;
        let private = ips("worker_private_ipv4")?;
        if public.len() != private.len() {
            return Err(Error::InvalidOutput {
                name: "worker_private_ipv4",
                reason: format!(
                    "{} addresses for {} workers (worker_ipv4)",
                    private.len(),
                    public.len()
                ),
            });
        }
        let workers = public
            .into_iter()
            .zip(private)
            .map(|(public_ip, private_ip)| WorkerAddresses {
                public_ip,
                private_ip,
            })
            .collect();
        Ok(Self {
            server_ip: ip("server_ip")?,
            reserved_ip: ip("reserved_ip")?,
            droplet_id,
            ssh_user,
            server_private_ip: ip("server_private_ipv4")?,
            workers,
        })
    }
}

/// A POSIX-ish login name; it reaches `ssh user@host`, so nothing that reads as an option.
fn is_login_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "droplet_id": {"sensitive": false, "type": "string", "value": "412345678"},
      "droplet_ipv4": {"sensitive": false, "type": "string", "value": "198.51.100.20"},
      "reserved_ip": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
      "server_ip": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
      "ssh_user": {"sensitive": false, "type": "string", "value": "root"},
      "server_private_ipv4": {"sensitive": false, "type": "string", "value": "10.10.0.2"},
      "worker_ipv4": {"sensitive": false, "type": ["tuple", ["string", "string"]], "value": ["198.51.100.31", "198.51.100.32"]},
      "worker_private_ipv4": {"sensitive": false, "type": ["tuple", ["string", "string"]], "value": ["10.10.0.3", "10.10.0.4"]}
    }"#;

    #[test]
    fn parses_the_outputs_the_cli_needs() {
        let outputs = ServerOutputs::from_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(outputs.server_ip, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(outputs.reserved_ip, outputs.server_ip);
        assert_eq!(outputs.droplet_id, "412345678");
        assert_eq!(outputs.ssh_user, "root");
        assert_eq!(outputs.server_private_ip.to_string(), "10.10.0.2");
        let workers: Vec<(String, String)> = outputs
            .workers
            .iter()
            .map(|w| (w.public_ip.to_string(), w.private_ip.to_string()))
            .collect();
        assert_eq!(
            workers,
            [
                ("198.51.100.31".to_owned(), "10.10.0.3".to_owned()),
                ("198.51.100.32".to_owned(), "10.10.0.4".to_owned())
            ]
        );
    }

    #[test]
    fn workers_must_pair_up_and_be_addresses() {
        let one_short = SAMPLE.replace("[\"10.10.0.3\", \"10.10.0.4\"]", "[\"10.10.0.3\"]");
        let err = ServerOutputs::from_json(one_short.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOutput {
                    name: "worker_private_ipv4",
                    ..
                }
            ),
            "{err}"
        );
        let not_a_list = SAMPLE.replace(
            "[\"198.51.100.31\", \"198.51.100.32\"]",
            "\"198.51.100.31\"",
        );
        let err = ServerOutputs::from_json(not_a_list.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOutput {
                    name: "worker_ipv4",
                    ..
                }
            ),
            "{err}"
        );
        let not_an_ip = SAMPLE.replace("\"10.10.0.4\"", "\"10.10.0.x\"");
        let err = ServerOutputs::from_json(not_an_ip.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("10.10.0.x"), "{err}");
        let none = SAMPLE
            .replace("[\"198.51.100.31\", \"198.51.100.32\"]", "[]")
            .replace("[\"10.10.0.3\", \"10.10.0.4\"]", "[]");
        assert!(
            ServerOutputs::from_json(none.as_bytes())
                .unwrap()
                .workers
                .is_empty()
        );
    }

    #[test]
    fn names_a_missing_output() {
        let err =
            ServerOutputs::from_json(br#"{"server_ip": {"value": "203.0.113.10"}}"#).unwrap_err();
        assert!(matches!(err, Error::MissingOutput("droplet_id")), "{err}");
        assert!(ServerOutputs::from_json(b"{}").is_err());
    }

    #[test]
    fn rejects_values_that_break_the_contract() {
        let with = |name: &str, value: &str| SAMPLE.replace(name, value);
        let bad_ip = with("\"203.0.113.10\"}", "\"not-an-ip\"}");
        assert!(matches!(
            ServerOutputs::from_json(bad_ip.as_bytes()),
            Err(Error::InvalidOutput {
                name: "reserved_ip" | "server_ip",
                ..
            })
        ));
        let bad_user = with("\"root\"", "\"-oProxyCommand=x\"");
        assert!(matches!(
            ServerOutputs::from_json(bad_user.as_bytes()),
            Err(Error::InvalidOutput {
                name: "ssh_user",
                ..
            })
        ));
        let bad_id = with("\"412345678\"", "\"abc\"");
        assert!(matches!(
            ServerOutputs::from_json(bad_id.as_bytes()),
            Err(Error::InvalidOutput {
                name: "droplet_id",
                ..
            })
        ));
        assert!(matches!(
            ServerOutputs::from_json(b"[1, 2]"),
            Err(Error::Json(_))
        ));
    }

    #[test]
    fn accepts_a_numeric_droplet_id() {
        let numeric = SAMPLE.replace("\"412345678\"", "412345678");
        let outputs = ServerOutputs::from_json(numeric.as_bytes()).unwrap();
        assert_eq!(outputs.droplet_id, "412345678");
    }
}
