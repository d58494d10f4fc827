//! Where the `_acme-challenge` TXT records go.

use std::future::Future;

use serde::Deserialize;
use serde_json::json;

use crate::{Error, Result};

/// Publishes and removes the TXT records of DNS-01 challenges. `fqdn` is absolute without the
/// trailing dot, e.g. `_acme-challenge.preview.example.com`. A name may carry several values at
/// once (the wildcard and the bare domain share one name), so both calls act on one value.
pub trait DnsProvider: Send + Sync {
    /// Adds the TXT record `fqdn` = `value`; a no-op when it is already there.
    fn set_txt(&self, fqdn: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes the TXT record `fqdn` = `value`; a no-op when it is absent.
    fn clear_txt(&self, fqdn: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
}

/// DigitalOcean's domain-records API (`/v2/domains/{zone}/records`), with a bearer token.
#[derive(Clone)]
pub struct DigitalOcean {
    http: reqwest::Client,
    base_url: String,
    zone: String,
    token: String,
}

impl std::fmt::Debug for DigitalOcean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("DigitalOcean")
            .field("base_url", &self.base_url)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct DoRecord {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    data: String,
}

#[derive(Deserialize)]
struct DoRecords {
    domain_records: Vec<DoRecord>,
}

impl DigitalOcean {
    /// The public API.
    pub const API: &'static str = "https://api.digitalocean.com";
    /// DigitalOcean's smallest TTL, so a renewal's new value is seen soon.
    const TTL: u32 = 30;

    /// Records in `zone` (the domain as added at DigitalOcean, e.g. `example.com`), through the
    /// API at `base_url` ([`Self::API`] in production).
    pub fn new(base_url: &str, zone: &str, token: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Self::err(e.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            zone: zone.trim_end_matches('.').to_owned(),
            token: token.to_owned(),
        })
    }

    fn err(message: String) -> Error {
        Error::Dns {
            provider: "digitalocean",
            message,
        }
    }

    /// The record name relative to the zone, as DigitalOcean stores it (`@` for the apex).
    fn relative_name<'a>(&self, fqdn: &'a str) -> Result<&'a str> {
        let fqdn = fqdn.trim_end_matches('.');
        if fqdn == self.zone {
            return Ok("@");
        }
        fqdn.strip_suffix(&self.zone)
            .and_then(|n| n.strip_suffix('.'))
            .ok_or_else(|| Self::err(format!("{fqdn} is not inside the zone {}", self.zone)))
    }

    fn records_url(&self) -> String {
        format!("{}/v2/domains/{}/records", self.base_url, self.zone)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Self::err(format!("{what}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Err(Self::err(format!("{what}: HTTP {status}: {body}")))
    }

    /// The TXT records at `fqdn` with their ids. The API's `name` filter takes the full name.
    async fn txt_records(&self, fqdn: &str) -> Result<Vec<DoRecord>> {
        let fqdn = fqdn.trim_end_matches('.');
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("type", "TXT")
            .append_pair("name", fqdn)
            .append_pair("per_page", "200")
            .finish();
        let request = self.http.get(format!("{}?{query}", self.records_url()));
        let records: DoRecords = self
            .send(request, "listing TXT records")
            .await?
            .json()
            .await
            .map_err(|e| Self::err(format!("listing TXT records: {e}")))?;
        Ok(records
            .domain_records
            .into_iter()
            .filter(|r| r.kind == "TXT")
            .collect())
    }
}

impl DnsProvider for DigitalOcean {
    async fn set_txt(&self, fqdn: &str, value: &str) -> Result<()> {
        let name = self.relative_name(fqdn)?;
        if self
            .txt_records(fqdn)
            .await?
            .iter()
            .any(|r| r.data == value)
        {
            return Ok(());
        }
        let body = json!({ "type": "TXT", "name": name, "data": value, "ttl": Self::TTL });
        let request = self.http.post(self.records_url()).json(&body);
        self.send(request, "creating a TXT record").await?;
        Ok(())
    }

    async fn clear_txt(&self, fqdn: &str, value: &str) -> Result<()> {
        self.relative_name(fqdn)?;
        for record in self.txt_records(fqdn).await? {
            if record.data == value {
                let url = format!("{}/{}", self.records_url(), record.id);
                self.send(self.http.delete(url), "deleting a TXT record")
                    .await?;
            }
        }
        Ok(())
    }
}

/// pebble-challtestsrv's management API, the mock DNS server of the ACME tests.
#[derive(Debug, Clone)]
pub struct ChallTestSrv {
    http: reqwest::Client,
    base_url: String,
}

impl ChallTestSrv {
    /// The management API at `base_url`, e.g. `http://127.0.0.1:8055`.
    pub fn new(base_url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let err = |message: String| Error::Dns {
            provider: "challtestsrv",
            message,
        };
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| err(format!("{path}: {e}")))?;
        if !response.status().is_success() {
            return Err(err(format!("{path}: HTTP {}", response.status())));
        }
        Ok(())
    }
}

impl DnsProvider for ChallTestSrv {
    async fn set_txt(&self, fqdn: &str, value: &str) -> Result<()> {
        // challtestsrv appends: the wildcard's and the bare domain's values coexist.
        let host = format!("{}.", fqdn.trim_end_matches('.'));
        self.post("/set-txt", json!({ "host": host, "value": value }))
            .await
    }

    async fn clear_txt(&self, fqdn: &str, _value: &str) -> Result<()> {
        // It can only clear every value of a name; the issuer clears after all are validated.
        let host = format!("{}.", fqdn.trim_end_matches('.'));
        self.post("/clear-txt", json!({ "host": host })).await
    }
}
