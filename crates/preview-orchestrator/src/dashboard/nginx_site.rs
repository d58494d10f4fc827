//! The dashboard at its own hostname (`DASHBOARD_HOST`, e.g. `dashboard.{PREVIEW_DOMAIN}`): a
//! server block the orchestrator keeps in `NGINX_CONFIG_DIR` beside the previews' own, over
//! HTTPS once the wildcard certificate is in `TLS_DIR` (checked every minute, as the certificate
//! may be issued after start), through the same checked install as preview routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use minijinja::{Environment, context};

use crate::config::Config;

/// The file's name: not a preview id, so the orphan sweep leaves it alone.
pub const SITE_FILE: &str = "_dashboard.conf";
/// How often the block is checked against the certificate's presence.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// The server block for `host`, proxying to the orchestrator at `upstream`, with TLS when the
/// certificate files exist.
pub fn server_block(config: &Config, host: &str, upstream: SocketAddr) -> String {
    let certificate = config.tls_dir.join("fullchain.pem");
    let key = config.tls_dir.join("privkey.pem");
    let tls = certificate.exists() && key.exists();
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(
        include_str!("templates/nginx-dashboard.conf.j2"),
        context! {
            hostname => host,
            listen => config.nginx_listen.clone(),
            tls_listen => config.nginx_tls_listen.clone(),
            certificate => tls.then(|| certificate.display().to_string()),
            certificate_key => tls.then(|| key.display().to_string()),
            upstream => upstream.to_string(),
        },
    )
    .unwrap_or_else(|e| panic!("the dashboard's nginx template: {e}"))
}

/// Where the block goes.
pub fn site_path(config: &Config) -> PathBuf {
    config.nginx_config_dir.join(SITE_FILE)
}

/// Writes the block when it differs from what is installed; nginx must accept it.
pub async fn sync(config: &Config, host: &str, upstream: SocketAddr) -> Result<bool, String> {
    let wanted = server_block(config, host, upstream);
    let path = site_path(config);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == wanted) {
        return Ok(false);
    }
    let nginx = preview_exec::nginx::NginxControl::from_command_lines(
        &config.nginx_test_command,
        &config.nginx_reload_command,
    )
    .map_err(|e| e.to_string())?;
    nginx
        .install(&path, &wanted)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Keeps the block in place while the orchestrator runs (`None` without `DASHBOARD_HOST`).
pub fn spawn_upkeep(
    config: Arc<Config>,
    upstream: SocketAddr,
) -> Option<tokio::task::JoinHandle<()>> {
    let host = config.dashboard_host.clone()?;
    Some(tokio::spawn(async move {
        loop {
            match sync(&config, &host, upstream).await {
                Ok(true) => {
                    tracing::info!(host = %host, "the dashboard's nginx server block was written")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(host = %host, error = %e, "nginx refused the dashboard's server block")
                }
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::valid_host;

    #[test]
    fn hostnames_are_checked() {
        assert!(valid_host("dashboard.previews.example.com"));
        assert!(!valid_host("dash board.example.com"));
        assert!(!valid_host("x;include /etc/passwd"));
        assert!(!valid_host("-bad.example.com"));
    }
}
