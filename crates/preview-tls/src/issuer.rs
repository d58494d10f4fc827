//! ACME DNS-01 issuance of `*.{domain}` + `{domain}` in one certificate, with instant-acme.

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use jiff::Timestamp;

use crate::cert::{CertificateFiles, CertificateInfo, needs_renewal};
use crate::dns::DnsProvider;
use crate::{Error, Result};

/// Where and how to get the certificate.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The ACME directory, e.g. Let's Encrypt's `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// The domain; the certificate covers `*.{domain}` and `{domain}`.
    pub domain: String,
    /// Optional contact address for the ACME account.
    pub contact_email: Option<String>,
    /// The account's credentials (JSON, 0600), created on first use.
    pub account_file: PathBuf,
    /// A PEM root to trust for the ACME server instead of the system's (pebble's test CA).
    pub acme_root: Option<PathBuf>,
    /// Where `fullchain.pem` and `privkey.pem` go.
    pub cert_dir: PathBuf,
    /// How long to wait after publishing the TXT records before asking for validation, so that
    /// the provider's nameservers serve them.
    pub propagation_wait: Duration,
}

/// Issues and renews the wildcard certificate; see [`CertificateIssuer::ensure`].
pub struct CertificateIssuer<P> {
    settings: AcmeSettings,
    dns: P,
}

/// Whole-order attempts. instant-acme already resends a request whose nonce was refused
/// (`badNonce`) up to twice; a third refusal in a row, or any other transient failure, restarts
/// the order, which is safe since an order only counts once it is finalized.
const ATTEMPTS: u32 = 4;

impl<P: DnsProvider> CertificateIssuer<P> {
    /// An issuer publishing its challenges through `dns`.
    pub fn new(settings: AcmeSettings, dns: P) -> Self {
        Self { settings, dns }
    }

    /// The certificate files it writes.
    pub fn files(&self) -> CertificateFiles {
        CertificateFiles::new(&self.settings.cert_dir)
    }

    /// Issues when [`needs_renewal`] says so; Some(new certificate) when it did.
    pub async fn ensure(&self) -> Result<Option<CertificateInfo>> {
        let current = self.files().info().ok().flatten();
        if needs_renewal(current.as_ref(), &self.settings.domain, Timestamp::now()) {
            self.issue().await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// Issues a new certificate now and writes it (a renewal is just this, again).
    pub async fn issue(&self) -> Result<CertificateInfo> {
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.issue_once().await {
                Ok(info) => return Ok(info),
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "certificate order failed");
                    last = Some(err);
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Acme("no attempt made".into())))
    }

    async fn issue_once(&self) -> Result<CertificateInfo> {
        let account = self.account().await?;
        let domain = self.settings.domain.as_str();
        let identifiers = [
            Identifier::Dns(format!("*.{domain}")),
            Identifier::Dns(domain.to_owned()),
        ];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;

        // First publish every value, then ask for validation: the wildcard and the bare domain
        // share one TXT name, and the provider needs a moment to serve new records.
        let mut published = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                if authz.status == AuthorizationStatus::Valid {
                    continue;
                }
                let challenge = authz
                    .challenge(ChallengeType::Dns01)
                    .ok_or_else(|| Error::Acme("the server offers no dns-01 challenge".into()))?;
                let Identifier::Dns(name) = challenge.identifier().identifier.clone() else {
                    return Err(Error::Acme("a non-DNS identifier".into()));
                };
                let fqdn = format!("_acme-challenge.{name}");
                let value = challenge.key_authorization().dns_value();
                self.dns.set_txt(&fqdn, &value).await?;
                published.push((fqdn, value));
            }
            if !self.settings.propagation_wait.is_zero() {
                tokio::time::sleep(self.settings.propagation_wait).await;
            }
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) {
                    challenge.set_ready().await?;
                }
            }
            let retries = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(Duration::from_secs(120));
            let status = order.poll_ready(&retries).await?;
            if status != OrderStatus::Ready {
                return Err(Error::Acme(format!(
                    "order is {status:?}, not ready: {:?}",
                    order.state().error
                )));
            }
            Ok(())
        }
        .await;
        for (fqdn, value) in &published {
            if let Err(err) = self.dns.clear_txt(fqdn, value).await {
                tracing::warn!(%fqdn, error = %err, "could not remove a challenge record");
            }
        }
        result?;

        let key_pem = order.finalize().await?;
        let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
        let chain_pem = order.poll_certificate(&retries).await?;
        let info = CertificateInfo::from_pem(chain_pem.as_bytes()).map_err(Error::Acme)?;
        self.files().write(&chain_pem, &key_pem)?;
        tracing::info!(serial = %info.serial, not_after = %info.not_after, "certificate issued");
        Ok(info)
    }

    /// The stored account, or a new one, saved 0600.
    async fn account(&self) -> Result<Account> {
        let builder = || match &self.settings.acme_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let path = &self.settings.account_file;
        if let Ok(text) = std::fs::read_to_string(path) {
            let credentials: AccountCredentials = serde_json::from_str(&text)
                .map_err(|e| Error::Acme(format!("{}: {e}", path.display())))?;
            return Ok(builder()?.from_credentials(credentials).await?);
        }
        let contact = self
            .settings
            .contact_email
            .as_ref()
            .map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| Error::Acme(format!("serialising the account: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        crate::cert::write_private(path, &json)?;
        Ok(account)
    }
}
