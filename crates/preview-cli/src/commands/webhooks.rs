//! The GitHub webhooks of the previewed repositories, through the REST API at a configurable base
//! (`GITHUB_API_URL`), so tests point it at a local fake.
//!
//! Hooks are found by their URL, which makes `setup` idempotent: a second run updates the hook it
//! made instead of adding another.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// Path of the webhook endpoint behind nginx on the server.
pub const WEBHOOK_PATH: &str = "/webhook/github";

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookChange {
    /// A new hook.
    Created,
    /// An existing hook with our URL, brought up to date.
    Updated,
}

/// A hook as GitHub lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Hook {
    /// Hook id.
    pub id: u64,
    /// Its configuration; `url` is what we match on.
    #[serde(default)]
    pub config: HookConfig,
}

/// The part of a hook's config we read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HookConfig {
    /// Delivery URL.
    #[serde(default)]
    pub url: Option<String>,
}

/// A GitHub REST client for repository hooks.
#[derive(Debug, Clone)]
pub struct GitHubHooks {
    base: reqwest::Url,
    token: String,
    http: reqwest::Client,
}

impl GitHubHooks {
    /// A client for the API at `base` (e.g. `https://api.github.com`).
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let mut base = reqwest::Url::parse(base)
            .map_err(|e| anyhow!("the GitHub API URL {base:?} is invalid: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("preview-deployer-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow!("building the HTTP client: {e}"))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
        })
    }

    fn host(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => self.base.to_string(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| anyhow!("bad GitHub API path {path}: {e}"))?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the GitHub API at {} ({method} /{}): {}",
                self.host(),
                path.trim_start_matches('/'),
                error_chain(&e)
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    fn api_error(&self, what: &str, status: StatusCode, body: &Value) -> anyhow::Error {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let hint = match status.as_u16() {
            401 => " (is the GitHub token valid?)",
            403 | 404 => {
                " (the token needs admin:repo_hook or the fine-grained Webhooks permission on the repository)"
            }
            _ => "",
        };
        anyhow!(
            "{what}: GitHub API at {} answered {status}: {message}{hint}",
            self.host()
        )
    }

    /// Every hook of `repo` (one page of 100 is plenty: GitHub allows 20 per event).
    pub async fn list(&self, repo: &str) -> Result<Vec<Hook>> {
        let path = format!("repos/{repo}/hooks?per_page=100");
        let (status, body) = self.call(Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(self.api_error(&format!("listing the webhooks of {repo}"), status, &body));
        }
        serde_json::from_value(body)
            .map_err(|e| anyhow!("GitHub API at {} sent a bad hook list: {e}", self.host()))
    }

    fn hook_body(url: &str, secret: &str) -> Value {
        json!({
            "name": "web",
            "active": true,
            "events": ["pull_request"],
            "config": {
                "url": url,
                "content_type": "json",
                "secret": secret,
                "insecure_ssl": "0",
            },
        })
    }

    /// Creates the hook, or updates the one that already delivers to `url`.
    pub async fn ensure(&self, repo: &str, url: &str, secret: &str) -> Result<(u64, HookChange)> {
        let existing = self
            .list(repo)
            .await?
            .into_iter()
            .find(|h| h.config.url.as_deref() == Some(url));
        let body = Self::hook_body(url, secret);
        match existing {
            Some(hook) => {
                let path = format!("repos/{repo}/hooks/{}", hook.id);
                let (status, body) = self.call(Method::PATCH, &path, Some(body)).await?;
                if !status.is_success() {
                    return Err(self.api_error(
                        &format!("updating the webhook of {repo}"),
                        status,
                        &body,
                    ));
                }
                Ok((hook.id, HookChange::Updated))
            }
            None => {
                let path = format!("repos/{repo}/hooks");
                let (status, body) = self.call(Method::POST, &path, Some(body)).await?;
                if !status.is_success() {
                    return Err(self.api_error(
                        &format!("creating the webhook of {repo}"),
                        status,
                        &body,
                    ));
                }
                let id = body.get("id").and_then(Value::as_u64).ok_or_else(|| {
                    anyhow!("GitHub API at {} created a hook without an id", self.host())
                })?;
                Ok((id, HookChange::Created))
            }
        }
    }

    /// Asks GitHub to send a `ping` event to the hook.
    pub async fn ping(&self, repo: &str, id: u64) -> Result<()> {
        let path = format!("repos/{repo}/hooks/{id}/pings");
        let (status, body) = self.call(Method::POST, &path, None).await?;
        if !status.is_success() {
            return Err(self.api_error(&format!("pinging the webhook of {repo}"), status, &body));
        }
        Ok(())
    }

    /// Deletes the hook; one that is already gone counts as deleted.
    pub async fn delete(&self, repo: &str, id: u64) -> Result<()> {
        let path = format!("repos/{repo}/hooks/{id}");
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.api_error(&format!("deleting the webhook of {repo}"), status, &body))
    }
}

/// The URL GitHub delivers to: https on the domain when TLS is configured, else http on the IP.
pub fn webhook_url(domain: Option<&str>, server_ip: &str) -> Result<String> {
    match domain {
        Some(domain) => Ok(format!("https://{domain}{WEBHOOK_PATH}")),
        None => {
            let ip: std::net::IpAddr = server_ip
                .parse()
                .map_err(|_| anyhow!("server address {server_ip:?} is not an IP address"))?;
            if ip.is_ipv6() {
                bail!("the server address {ip} is IPv6; GitHub needs the IPv4 reserved IP");
            }
            Ok(format!("http://{ip}{WEBHOOK_PATH}"))
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_partial_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn ensure_creates_then_updates_by_url() {
        let server = MockServer::start().await;
        let url = "http://203.0.113.10/webhook/github";
        Mock::given(method("GET"))
            .and(path("/repos/acme/api/hooks"))
            .and(header("authorization", "Bearer ghp_test"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([
                {"id": 7, "config": {"url": "https://elsewhere.example/hook"}},
                {"id": 9, "config": {"url": url}}
            ])))
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path("/repos/acme/api/hooks/9"))
            .and(body_partial_json(json!({"events": ["pull_request"], "config": {"content_type": "json", "secret": "s3"}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 9})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/repos/acme/web/hooks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/repos/acme/web/hooks"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 11})))
            .expect(1)
            .mount(&server)
            .await;
        let hooks = GitHubHooks::new(&server.uri(), "ghp_test").unwrap();
        assert_eq!(
            hooks.ensure("acme/api", url, "s3").await.unwrap(),
            (9, HookChange::Updated)
        );
        assert_eq!(
            hooks.ensure("acme/web", url, "s3").await.unwrap(),
            (11, HookChange::Created)
        );
    }

    #[tokio::test]
    async fn errors_name_the_host_and_the_permission() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
            .mount(&server)
            .await;
        let hooks = GitHubHooks::new(&server.uri(), "t").unwrap();
        let err = hooks.list("acme/api").await.unwrap_err().to_string();
        let host = server.uri().trim_start_matches("http://").to_owned();
        assert!(
            err.contains(&host) && err.contains("admin:repo_hook"),
            "{err}"
        );

        let port = preview_free_port();
        let hooks = GitHubHooks::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let err = hooks.list("acme/api").await.unwrap_err().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    fn preview_free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn urls() {
        assert_eq!(
            webhook_url(None, "203.0.113.10").unwrap(),
            "http://203.0.113.10/webhook/github"
        );
        assert_eq!(
            webhook_url(Some("p.example.com"), "203.0.113.10").unwrap(),
            "https://p.example.com/webhook/github"
        );
    }
}
