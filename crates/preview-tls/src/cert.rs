//! The certificate on disk: where it lives, what it covers and when it must be renewed.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

/// Renew when fewer than this many days are left (Let's Encrypt's certificates last 90).
pub const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The two files nginx reads: `fullchain.pem` and `privkey.pem` (0600) in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    dir: PathBuf,
}

/// What the stored certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// The end of its validity.
    pub not_after: Timestamp,
    /// Its DNS names (subjectAltName).
    pub names: Vec<String>,
}

impl CertificateFiles {
    /// Files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The leaf certificate followed by its intermediates, for `ssl_certificate`.
    pub fn fullchain(&self) -> PathBuf {
        self.dir.join("fullchain.pem")
    }

    /// The private key, for `ssl_certificate_key`.
    pub fn private_key(&self) -> PathBuf {
        self.dir.join("privkey.pem")
    }

    /// Whether both files are there (nginx may then listen with TLS).
    pub fn exist(&self) -> bool {
        self.fullchain().is_file() && self.private_key().is_file()
    }

    /// Replaces both files, each atomically. The key goes first: a reader that sees the new chain
    /// also sees its key. The key is 0600 from the start.
    pub fn write(&self, fullchain_pem: &str, key_pem: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_atomic(&self.private_key(), key_pem, 0o600)?;
        write_atomic(&self.fullchain(), fullchain_pem, 0o644)
    }

    /// The stored certificate, or None when there is none yet.
    pub fn info(&self) -> Result<Option<CertificateInfo>> {
        let path = self.fullchain();
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        CertificateInfo::from_pem(&pem)
            .map(Some)
            .map_err(|message| Error::BadCertificate { path, message })
    }
}

/// Writes a secret file atomically, 0600 from the start.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text, 0o600)
}

fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(io)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.commit().map_err(io)
}

impl CertificateInfo {
    /// Reads the first certificate of a PEM chain.
    pub fn from_pem(pem: &[u8]) -> std::result::Result<Self, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
        let cert = pem.parse_x509().map_err(|e| e.to_string())?;
        let not_after = Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|e| e.to_string())?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| e.to_string())?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after,
            names,
        })
    }
}

/// Whether to issue now: no certificate, one that does not cover `*.{domain}` and `{domain}`,
/// or one with less than [`RENEW_BEFORE`] left.
pub fn needs_renewal(current: Option<&CertificateInfo>, domain: &str, now: Timestamp) -> bool {
    let Some(cert) = current else { return true };
    let wildcard = format!("*.{domain}");
    let covers = [wildcard.as_str(), domain]
        .iter()
        .all(|want| cert.names.iter().any(|n| n == want));
    !covers || cert.not_after.duration_since(now) < RENEW_BEFORE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], days_left: i64, now: Timestamp) -> CertificateInfo {
        CertificateInfo {
            serial: "01".into(),
            not_after: now + SignedDuration::from_hours(days_left * 24),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn renews_when_missing_short_or_not_covering() {
        let now: Timestamp = "2026-12-06T00:00:00Z".parse().unwrap();
        let both = ["*.preview.test", "preview.test"];
        assert!(needs_renewal(None, "preview.test", now));
        assert!(!needs_renewal(
            Some(&cert(&both, 60, now)),
            "preview.test",
            now
        ));
        assert!(!needs_renewal(
            Some(&cert(&both, 31, now)),
            "preview.test",
            now
        ));
        assert!(needs_renewal(
            Some(&cert(&both, 29, now)),
            "preview.test",
            now
        ));
        assert!(needs_renewal(
            Some(&cert(&both, -1, now)),
            "preview.test",
            now
        ));
        assert!(needs_renewal(
            Some(&cert(&["preview.test"], 60, now)),
            "preview.test",
            now
        ));
        assert!(needs_renewal(
            Some(&cert(&both, 60, now)),
            "other.test",
            now
        ));
    }

    #[test]
    fn writes_key_0600_and_replaces_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = CertificateFiles::new(dir.path().join("tls"));
        assert!(!files.exist());
        assert_eq!(files.info().unwrap(), None);
        files.write("chain 1", "key 1").unwrap();
        files.write("chain 2", "key 2").unwrap();
        assert!(files.exist());
        assert_eq!(
            std::fs::read_to_string(files.fullchain()).unwrap(),
            "chain 2"
        );
        let mode = std::fs::metadata(files.private_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(files.info().is_err(), "garbage is not a certificate");
    }
}
