//! One wildcard certificate for the previews' hostnames: `*.{domain}` plus `{domain}`, issued and
//! renewed over ACME DNS-01 by [`CertificateIssuer`], with the challenge published through a
//! [`DnsProvider`] (DigitalOcean in production, pebble-challtestsrv in tests).

mod cert;
mod dns;
mod issuer;

pub use cert::{CertificateFiles, CertificateInfo, RENEW_BEFORE, needs_renewal};
pub use dns::{ChallTestSrv, DigitalOcean, DnsProvider};
pub use issuer::{AcmeSettings, CertificateIssuer};

/// What went wrong while publishing a challenge or getting a certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DNS provider's API refused or could not be reached.
    #[error("DNS provider {provider}: {message}")]
    Dns {
        /// `digitalocean` or `challtestsrv`.
        provider: &'static str,
        /// What it answered.
        message: String,
    },
    /// The ACME server refused or the order failed.
    #[error("ACME: {0}")]
    Acme(String),
    /// Reading or writing the certificate, key or account file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The stored certificate cannot be parsed.
    #[error("certificate {path}: {message}")]
    BadCertificate {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
}

impl From<instant_acme::Error> for Error {
    fn from(err: instant_acme::Error) -> Self {
        Error::Acme(err.to_string())
    }
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, Error>;
