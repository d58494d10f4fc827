//! The Grafana board (`monitoring/grafana/preview-deployer.json`) cannot drift from the code:
//! every metric, label and label value its queries use exists in a real `/metrics` scrape of an
//! orchestrator that received webhooks, deployed, failed a deploy, tore one down and wrote its
//! store. The Prometheus scrape config beside it points at the orchestrator's default address.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::{ID2, TestServer, sha};

/// Every series of a Prometheus text scrape: metric name and its labels.
fn series(scrape: &str) -> Vec<(String, BTreeMap<String, String>)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_owned();
            let labels = if line[name_end..].starts_with('{') {
                let end = line.find('}').unwrap();
                label_pairs(&line[name_end + 1..end])
            } else {
                BTreeMap::new()
            };
            (name, labels)
        })
        .collect()
}

fn label_pairs(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// The metrics a PromQL expression names, each with the label matchers written after it.
fn metrics_in(expr: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("preview_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let matchers = if tail[end..].starts_with('{') {
            let close = tail[end..].find('}').unwrap() + end;
            label_pairs(&tail[end + 1..close])
        } else {
            BTreeMap::new()
        };
        found.push((name, matchers));
        rest = &tail[end..];
    }
    found
}

/// The labels of every `by (...)` clause.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let close = tail.find(')').unwrap();
        labels.extend(tail[..close].split(',').map(|l| l.trim().to_owned()));
        rest = &tail[close..];
    }
    labels
}

fn board() -> Value {
    let path = preview_testkit::repo_root().join("monitoring/grafana/preview-deployer.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn every_metric_the_grafana_board_queries_exists_in_a_real_scrape() {
    let s = TestServer::start(Duration::ZERO, &[]).await;
    *s.runner.fail_sha.lock().unwrap() = Some(sha(3, 1));
    assert_eq!(s.pull_request("opened", 2, &sha(2, 1)).await.0, 202);
    assert_eq!(s.pull_request("opened", 3, &sha(3, 1)).await.0, 202);
    s.idle().await;
    assert_eq!(
        s.api(Method::DELETE, &format!("/api/previews/{ID2}"))
            .await
            .0,
        202
    );
    s.idle().await;
    let scrape = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = series(&scrape);

    let board = board();
    let panels = board["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "the board has its panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries something");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let metrics = metrics_in(expr);
            assert!(!metrics.is_empty(), "{title}: {expr} names no metric");
            let grouping = grouping_labels(expr);
            for (name, matchers) in metrics {
                queried.insert(name.clone());
                let of_metric: Vec<_> = scraped.iter().filter(|(n, _)| *n == name).collect();
                assert!(
                    !of_metric.is_empty(),
                    "{title}: {name} is not in the scrape:\n{scrape}"
                );
                for (key, value) in &matchers {
                    assert!(
                        of_metric
                            .iter()
                            .any(|(_, labels)| labels.get(key) == Some(value)),
                        "{title}: no {name} series has {key}=\"{value}\":\n{scrape}"
                    );
                }
                for label in &grouping {
                    assert!(
                        of_metric
                            .iter()
                            .all(|(_, labels)| labels.contains_key(label)),
                        "{title}: {name} has no label {label} to group by:\n{scrape}"
                    );
                }
            }
        }
    }
    // What the issue asks the board to show.
    for name in [
        "preview_webhooks_total",
        "preview_jobs_total",
        "preview_job_duration_seconds_bucket",
        "preview_live_previews",
        "preview_queue_depth",
        "preview_store_writes_total",
    ] {
        assert!(queried.contains(name), "the board shows {name}");
    }
}

#[test]
fn the_prometheus_config_scrapes_the_orchestrators_default_address() {
    let root = preview_testkit::repo_root();
    let config = std::fs::read_to_string(root.join("monitoring/prometheus.yml")).unwrap();
    assert!(config.contains("metrics_path: /metrics"));
    assert!(config.contains(r#"targets: ["127.0.0.1:3000"]"#));
    let compose = std::fs::read_to_string(root.join("monitoring/docker-compose.yml")).unwrap();
    // Loopback only: /metrics refuses proxied and remote clients, and Grafana stays private.
    assert!(compose.contains("network_mode: host"));
    assert!(compose.contains("--web.listen-address=127.0.0.1:9090"));
    assert!(compose.contains("GF_SERVER_HTTP_ADDR: 127.0.0.1"));
}
