//! The wildcard certificate of hostname routing: issued and renewed in the background (at start,
//! then daily), and reported by `/health`.

use std::time::Duration;

use preview_tls::{AcmeSettings, CertificateFiles, CertificateIssuer, DigitalOcean};
use serde_json::{Value, json};

use crate::Config;

/// How often the certificate's expiry is checked after the check at start.
const CHECK_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// After a failed issuance (DNS or CA trouble), try again sooner than the daily check.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60 * 60);
/// DigitalOcean's nameservers serve a new record within about this long.
const PROPAGATION_WAIT: Duration = Duration::from_secs(60);

/// Starts the renewal task when PREVIEW_DOMAIN and DIGITALOCEAN_TOKEN are set. After the first
/// certificate, it redeploys the running previews so that their server blocks and URLs turn to
/// HTTPS; later renewals only reload nginx.
pub fn spawn_upkeep(
    config: &Config,
    scheduler: crate::queue::Scheduler,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let (Some(domain), Some(token)) = (&config.preview_domain, &config.digitalocean_token) else {
        return Ok(None);
    };
    let zone = config.digitalocean_dns_zone.as_deref().unwrap_or(domain);
    let dns = DigitalOcean::new(&config.digitalocean_api_url, zone, token)
        .context("invalid setting DIGITALOCEAN_API_URL")?;
    let settings = AcmeSettings {
        directory_url: config.acme_directory_url.clone(),
        domain: domain.clone(),
        contact_email: config.acme_email.clone(),
        account_file: config.tls_dir.join("acme-account.json"),
        acme_root: None,
        cert_dir: config.tls_dir.clone(),
        propagation_wait: PROPAGATION_WAIT,
    };
    let nginx = preview_exec::nginx::NginxControl::from_command_lines(
        &config.nginx_test_command,
        &config.nginx_reload_command,
    )
    .context("invalid setting NGINX_RELOAD_COMMAND")?;
    let issuer = CertificateIssuer::new(settings, dns);
    Ok(Some(tokio::spawn(async move {
        loop {
            let mut wait = CHECK_EVERY;
            let had_certificate = issuer.files().exist();
            match issuer.ensure().await {
                Ok(Some(cert)) if !had_certificate => {
                    tracing::info!(serial = %cert.serial, not_after = %cert.not_after, "first wildcard certificate issued; moving running previews to HTTPS");
                    if let Err(err) = nginx.reload().await {
                        tracing::error!(error = %err, "nginx reload after the first certificate failed");
                    }
                    redeploy_running(&scheduler).await;
                }
                Ok(Some(cert)) => {
                    tracing::info!(serial = %cert.serial, not_after = %cert.not_after, "wildcard certificate issued");
                    // Same paths, new files: a reload makes nginx read them.
                    if let Err(err) = nginx.reload().await {
                        tracing::error!(error = %err, "nginx reload after the certificate renewal failed");
                    }
                }
                Ok(None) => tracing::debug!("wildcard certificate is fresh"),
                Err(err) => {
                    tracing::error!(error = %err, "wildcard certificate issuance failed; retrying in an hour");
                    wait = RETRY_AFTER_FAILURE;
                }
            }
            tokio::time::sleep(wait).await;
        }
    })))
}

/// Redeploys every running preview (its nginx block was rendered for plain HTTP).
async fn redeploy_running(scheduler: &crate::queue::Scheduler) {
    let running: Vec<preview_core::id::PreviewId> = scheduler.store().read(|st| {
        st.deployments
            .values()
            .filter(|r| r.status == crate::record::DeploymentStatus::Running)
            .map(|r| r.id.clone())
            .collect()
    });
    for id in running {
        if let Err(err) = scheduler.redeploy(&id, crate::jobs::JobTrigger::Api).await {
            tracing::warn!(preview = %id, error = %err, "could not redeploy for HTTPS");
        }
    }
}

/// `/health`'s `tls`: `off` (path routing), `pending` (hostnames on plain HTTP until the
/// certificate exists) or `active` with its expiry.
pub fn status(config: &Config) -> Value {
    if config.preview_domain.is_none() {
        return json!({ "state": "off" });
    }
    match CertificateFiles::new(&config.tls_dir).info() {
        Ok(Some(cert)) => json!({
            "state": "active",
            "notAfter": cert.not_after.to_string(),
            "renewal": if config.digitalocean_token.is_some() { "automatic" } else { "manual" },
        }),
        Ok(None) => json!({
            "state": "pending",
            "renewal": if config.digitalocean_token.is_some() { "automatic" } else { "manual" },
        }),
        Err(err) => json!({ "state": "pending", "error": err.to_string() }),
    }
}
