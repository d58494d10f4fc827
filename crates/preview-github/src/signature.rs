use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Checks `X-Hub-Signature-256` against the raw body, in constant time.
#[derive(Clone)]
pub struct WebhookVerifier {
    // Keyed once; each check clones the keyed state instead of hashing the key again.
    keyed: HmacSha256,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookVerifier { secret: <redacted> }")
    }
}

impl WebhookVerifier {
    /// A verifier for the webhook secret `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Verifies `signature` (the header's raw value, `None` when absent) over `body`.
    pub fn verify(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<()> {
        let header = signature.ok_or(Error::MissingSignature)?;
        let hex_digest = header
            .strip_prefix(b"sha256=")
            .ok_or(Error::MalformedSignature("expected sha256=<64 hex digits>"))?;
        let mut tag = [0u8; 32];
        hex::decode_to_slice(hex_digest.trim_ascii_end(), &mut tag)
            .map_err(|_| Error::MalformedSignature("expected sha256=<64 hex digits>"))?;
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac.verify_slice(&tag).map_err(|_| Error::SignatureMismatch)
    }

    /// The header value GitHub would send for `body`: `sha256=<hex>`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The `X-Hub-Signature-256` value for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    WebhookVerifier::new(secret).sign(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_shapes_are_malformed() {
        let v = WebhookVerifier::new(b"s");
        for bad in [&b"sha1=00"[..], b"sha256=", b"sha256=zz", b"sha256=00"] {
            assert!(matches!(
                v.verify(Some(bad), b"x"),
                Err(Error::MalformedSignature(_))
            ));
        }
        assert!(format!("{v:?}").contains("redacted"));
    }
}
