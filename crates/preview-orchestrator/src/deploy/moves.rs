//! Routes follow apps that move between nodes.
//!
//! On one host an app is always at 127.0.0.1. On a swarm it runs on some node, published in
//! `host` mode there, and Swarm moves it when its node fails. The route watch
//! ([`crate::jobs::spawn_route_watch`]) asks the engine every few seconds where each serving
//! preview's app runs; when that is no longer the address its nginx config names, it waits until
//! the app answers at the new one and then points the config there.

use std::net::IpAddr;

use preview_core::id::PreviewId;
use preview_core::model::ReadyWhen;

use super::{DockerRunner, upstream_in_conf};
use crate::record::{DeploymentStatus, DesiredState};

impl DockerRunner {
    /// The address nginx reaches preview `id`'s app at, published at `port`.
    pub(super) async fn app_upstream(&self, id: &str, port: u16) -> Result<IpAddr, String> {
        let host = self
            .settings
            .engine
            .app_host(id, port)
            .await
            .map_err(|e| format!("finding where the app runs: {e}"))?
            .ok_or("no node runs the app")?;
        host.parse()
            .map_err(|_| format!("the engine named {host:?}, not an IP address"))
    }

    /// Re-routes every serving preview whose app runs somewhere else than its nginx config
    /// says; returns those it re-routed.
    pub(super) async fn follow_moves(&self) -> Vec<PreviewId> {
        let Some(store) = self.store.get() else {
            return Vec::new();
        };
        let serving: Vec<PreviewId> = store.read(|s| {
            s.deployments
                .values()
                .filter(|r| {
                    r.status == DeploymentStatus::Running && r.desired == DesiredState::Running
                })
                .map(|r| r.id.clone())
                .collect()
        });
        let mut moved = Vec::new();
        for id in serving {
            match self.follow_move(&id).await {
                Ok(true) => moved.push(id),
                Ok(false) => {}
                Err(e) => tracing::warn!(preview = %id, error = %e, "could not follow the app"),
            }
        }
        moved
    }

    /// Re-routes preview `id` if its app moved; `Ok(false)` when it did not, or when a job or a
    /// wake holds the preview (a job routes it; a wake follows the move itself).
    async fn follow_move(&self, id: &PreviewId) -> Result<bool, String> {
        let lock = self.host_lock(id.as_str());
        let Ok(_held) = lock.try_lock() else {
            return Ok(false);
        };
        self.route_to_app(id).await
    }

    /// Points preview `id`'s nginx config at the node its app runs on, once it answers there;
    /// `Ok(false)` when the config already does. The caller holds the preview's host lock.
    pub(super) async fn route_to_app(&self, id: &PreviewId) -> Result<bool, String> {
        let conf_path = self.settings.nginx_conf(id.as_str());
        let Ok(conf) = std::fs::read_to_string(&conf_path) else {
            return Ok(false);
        };
        let Some((routed, port)) = upstream_in_conf(&conf) else {
            return Ok(false);
        };
        let Ok(now) = self.app_upstream(id.as_str(), port).await else {
            // Nothing runs it (asleep, or being rescheduled): the next round looks again.
            return Ok(false);
        };
        if now == routed {
            return Ok(false);
        }
        tracing::info!(preview = %id, from = %routed, to = %now, "the app moved; routing to its new node");
        let project = self.serving_project(id.as_str());
        self.settings
            .engine
            .wait_ready(
                &project,
                None,
                port,
                "/",
                ReadyWhen::AnyAnswer,
                self.settings.health,
            )
            .await
            .map_err(|e| format!("the moved app: {e}"))?;
        let from = format!("proxy_pass http://{}:{port}", upstream_text(routed));
        let to = format!("proxy_pass http://{}:{port}", upstream_text(now));
        let moved_conf = conf.replace(&from, &to);
        let _guard = self.nginx_lock.lock().await;
        self.settings
            .nginx
            .install(&conf_path, &moved_conf)
            .await
            .map_err(|e| format!("routing to the new node: {e}"))?;
        Ok(true)
    }
}

/// An address as an nginx `proxy_pass` URL names it.
fn upstream_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}
