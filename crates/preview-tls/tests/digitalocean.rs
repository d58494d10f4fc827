//! The DigitalOcean provider against a fake of its domain-records API (shapes from
//! https://docs.digitalocean.com/reference/api/digitalocean/#tag/Domain-Records).

use std::sync::{Arc, Mutex};

use preview_tls::{DigitalOcean, DnsProvider};
use serde_json::{Value, json};
use wiremock::matchers::{header, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "dop_v1_test";

/// The records of one zone, `example.com`, as DigitalOcean keeps them: names relative to it.
#[derive(Clone, Default)]
struct FakeRecords {
    records: Arc<Mutex<Vec<Value>>>,
    next_id: Arc<Mutex<u64>>,
}

impl Respond for FakeRecords {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let path = req.url.path();
        let base = "/v2/domains/example.com/records";
        let mut records = self.records.lock().unwrap();
        match req.method.as_str() {
            "GET" if path == base => {
                let query: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
                let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
                // The API's name filter takes the fully qualified name.
                let name = get("name").map(|n| {
                    n.strip_suffix(".example.com")
                        .map(str::to_owned)
                        .unwrap_or_else(|| if n == "example.com" { "@".into() } else { n })
                });
                let found: Vec<Value> = records
                    .iter()
                    .filter(|r| get("type").is_none_or(|t| r["type"] == t.as_str()))
                    .filter(|r| name.as_ref().is_none_or(|n| r["name"] == n.as_str()))
                    .cloned()
                    .collect();
                let total = found.len();
                ResponseTemplate::new(200).set_body_json(
                    json!({ "domain_records": found, "links": {}, "meta": { "total": total } }),
                )
            }
            "POST" if path == base => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let mut id = self.next_id.lock().unwrap();
                *id += 1;
                let record = json!({
                    "id": 28448400 + *id, "type": body["type"], "name": body["name"],
                    "data": body["data"], "priority": null, "port": null, "ttl": body["ttl"],
                    "weight": null, "flags": null, "tag": null
                });
                records.push(record.clone());
                ResponseTemplate::new(201).set_body_json(json!({ "domain_record": record }))
            }
            "DELETE" => {
                let id: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
                let before = records.len();
                records.retain(|r| r["id"] != id);
                if records.len() == before {
                    ResponseTemplate::new(404).set_body_json(json!({
                        "id": "not_found", "message": "The resource you were accessing could not be found."
                    }))
                } else {
                    ResponseTemplate::new(204)
                }
            }
            _ => ResponseTemplate::new(405),
        }
    }
}

async fn fake() -> (MockServer, FakeRecords) {
    let server = MockServer::start().await;
    let records = FakeRecords::default();
    Mock::given(path_regex("^/v2/domains/example.com/records"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(records.clone())
        .mount(&server)
        .await;
    Mock::given(path_regex("^/v2/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({ "id": "Unauthorized", "message": "Unable to authenticate you" }),
        ))
        .mount(&server)
        .await;
    (server, records)
}

#[tokio::test]
async fn digitalocean_sets_and_clears_challenge_records() {
    let (server, records) = fake().await;
    let dns = DigitalOcean::new(&server.uri(), "example.com", TOKEN).unwrap();
    let fqdn = "_acme-challenge.preview.example.com";

    // The wildcard and the bare domain put two values on one name.
    dns.set_txt(fqdn, "value-wildcard").await.unwrap();
    dns.set_txt(fqdn, "value-bare").await.unwrap();
    dns.set_txt(fqdn, "value-bare").await.unwrap(); // idempotent
    {
        let stored = records.records.lock().unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        for r in stored.iter() {
            assert_eq!(r["type"], "TXT");
            assert_eq!(r["name"], "_acme-challenge.preview");
            assert_eq!(r["ttl"], 30);
        }
    }
    // An unrelated record on the same name stays.
    records.records.lock().unwrap().push(json!({
        "id": 1, "type": "TXT", "name": "_acme-challenge.preview", "data": "someone-else", "ttl": 1800
    }));

    dns.clear_txt(fqdn, "value-wildcard").await.unwrap();
    dns.clear_txt(fqdn, "value-wildcard").await.unwrap(); // already gone
    let left: Vec<Value> = records.records.lock().unwrap().clone();
    let data: Vec<&str> = left.iter().map(|r| r["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["value-bare", "someone-else"]);
}

#[tokio::test]
async fn digitalocean_reports_refusals_and_foreign_names() {
    let (server, _records) = fake().await;
    let wrong = DigitalOcean::new(&server.uri(), "example.com", "wrong-token").unwrap();
    let err = wrong
        .set_txt("_acme-challenge.example.com", "v")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("Unable to authenticate"),
        "{err}"
    );
    assert!(
        !format!("{wrong:?}").contains("wrong-token"),
        "the token stays out of Debug"
    );

    let dns = DigitalOcean::new(&server.uri(), "example.com", TOKEN).unwrap();
    let err = dns
        .set_txt("_acme-challenge.example.org", "v")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not inside the zone"), "{err}");
    // The apex is `@`.
    dns.set_txt("example.com", "apex").await.unwrap();
}
