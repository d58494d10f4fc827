//! A repository's database seed (`database.seed` in preview-config.yml): an SQL file inside the
//! checkout that fills a new preview's database. It is read through [`Checkout`], so a symlink
//! leading outside, a path escaping the repository or a file beyond [`SEED_LIMIT`] is refused
//! with an error naming it. Its content hash keys the shared Postgres server's template
//! database, so previews of the same seed clone it instead of loading it again.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checkout::Checkout;
use crate::{Error, Result};

/// The largest seed file read from a checkout, in bytes.
pub const SEED_LIMIT: u64 = 16 * 1024 * 1024;

/// A seed read from a checkout.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed {
    /// Its repo-relative path, as preview-config.yml gives it.
    pub path: String,
    /// The SQL.
    pub sql: String,
    /// SHA-256 of the SQL, lowercase hex.
    pub sha256: String,
}

/// The SQL can be large; Debug shows its size and hash only.
impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("path", &self.path)
            .field("bytes", &self.sql.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Seed {
    /// The first 16 hex digits of the hash: enough to tell seeds apart, short enough for a
    /// database name.
    pub fn short_hash(&self) -> &str {
        &self.sha256[..16]
    }
}

/// Reads the seed at `rel` (repo-relative) from `checkout`.
pub fn read_seed(checkout: &Checkout, rel: &str) -> Result<Seed> {
    let invalid = |reason: String| Error::Invalid {
        field: format!("database seed {rel}"),
        reason,
    };
    let sql = match checkout.read_text(Path::new(rel), SEED_LIMIT) {
        Ok(Some(sql)) => sql,
        Ok(None) => return Err(invalid("not a file in the repository".to_owned())),
        Err(Error::TooLarge { limit, .. }) => {
            return Err(invalid(format!(
                "larger than the {limit}-byte limit for seeds"
            )));
        }
        Err(Error::UnsafePath { reason, .. }) => {
            return Err(invalid(format!("refused: {reason}")));
        }
        Err(e) => return Err(e),
    };
    if sql.contains('\0') {
        return Err(invalid("holds a NUL byte; a seed is SQL text".to_owned()));
    }
    let sha256 = hex_lower(&Sha256::digest(sql.as_bytes()));
    Ok(Seed {
        path: rel.to_owned(),
        sql,
        sha256,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkout(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Checkout) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, contents) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let checkout = Checkout::open(dir.path()).unwrap();
        (dir, checkout)
    }

    #[test]
    fn a_seed_is_read_with_its_hash() {
        let (_dir, checkout) = checkout(&[("db/seed.sql", b"CREATE TABLE t (x int);\n")]);
        let seed = read_seed(&checkout, "db/seed.sql").unwrap();
        assert_eq!(seed.sql, "CREATE TABLE t (x int);\n");
        assert_eq!(seed.sha256.len(), 64);
        assert_eq!(seed.short_hash(), &seed.sha256[..16]);
        assert!(!format!("{seed:?}").contains("CREATE"), "{seed:?}");
    }

    #[test]
    fn bad_seeds_are_refused_by_name() {
        let big = vec![b'-'; SEED_LIMIT as usize + 1];
        let (dir, checkout) = checkout(&[("big.sql", &big), ("nul.sql", b"SELECT 1;\0")]);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.sql")).unwrap();
        let error = |rel: &str| read_seed(&checkout, rel).unwrap_err().to_string();
        assert_eq!(
            error("missing.sql"),
            "invalid database seed missing.sql: not a file in the repository"
        );
        assert_eq!(
            error("big.sql"),
            "invalid database seed big.sql: larger than the 16777216-byte limit for seeds"
        );
        assert!(error("link.sql").starts_with("invalid database seed link.sql: refused: "));
        assert_eq!(
            error("nul.sql"),
            "invalid database seed nul.sql: holds a NUL byte; a seed is SQL text"
        );
    }
}
