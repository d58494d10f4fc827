//! Per-repository preview secrets on the server: one JSON file per repository under
//! `SECRETS_DIR` (by default a `secrets` dir beside the deployments db, outside every work dir),
//! the dir 0700 and each file 0600, owned by the orchestrator's user (root), replaced atomically.
//! The rules for names and values are [`preview_core::repo_secrets`]'s.
//!
//! A trusted preview's app gets them as environment variables at start, through Compose's own
//! environment ([`RepoSecrets::app_env`]); nothing here ever logs, prints or returns a value, and
//! any text that goes to a PR comment or the API passes through [`RepoSecrets::redact`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use preview_core::id::RepoFullName;
use preview_core::repo_secrets::{SecretName, validate_value};
use preview_exec::compose::AppEnv;

use crate::{Error, Result};

/// The secrets directory: one file per repository.
#[derive(Debug)]
pub struct RepoSecretStore {
    dir: PathBuf,
    /// One change at a time (each is read, modify, replace).
    write: Mutex<()>,
}

impl RepoSecretStore {
    /// The store in `dir` (created, 0700, at the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            write: Mutex::new(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `repo`: `{dir}/{owner}/{name}.json`, lowercased as GitHub compares names.
    pub fn file(&self, repo: &RepoFullName) -> PathBuf {
        let key = repo.key();
        let (owner, name) = key.split_once('/').unwrap_or((key, ""));
        self.dir.join(owner).join(format!("{name}.json"))
    }

    /// `repo`'s secrets (none when it has no file).
    pub fn load(&self, repo: &RepoFullName) -> Result<RepoSecrets> {
        let path = self.file(repo);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RepoSecrets::default());
            }
            Err(source) => {
                return Err(Error::SecretsIo {
                    path,
                    action: "read",
                    source,
                });
            }
        };
        // serde_json's message names a line and column, never the text at fault.
        let values: BTreeMap<String, String> =
            serde_json::from_slice(&bytes).map_err(|e| Error::SecretsCorrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(RepoSecrets(values))
    }

    /// The names of `repo`'s secrets, sorted.
    pub fn names(&self, repo: &RepoFullName) -> Result<Vec<String>> {
        Ok(self.load(repo)?.0.into_keys().collect())
    }

    /// Sets `repo`'s secret `name` to `value` (checked first). Returns whether it existed.
    pub fn set(&self, repo: &RepoFullName, name: &SecretName, value: &[u8]) -> Result<bool> {
        validate_value(value).map_err(|e| Error::SecretInvalid(e.to_string()))?;
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| Error::SecretInvalid("the secret value is not UTF-8 text".into()))?;
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut secrets = self.load(repo)?;
        let existed = secrets.0.insert(name.as_str().to_owned(), value).is_some();
        self.write_file(repo, &secrets)?;
        Ok(existed)
    }

    /// Removes `repo`'s secret `name`. Returns whether it existed.
    pub fn unset(&self, repo: &RepoFullName, name: &SecretName) -> Result<bool> {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut secrets = self.load(repo)?;
        if secrets.0.remove(name.as_str()).is_none() {
            return Ok(false);
        }
        if secrets.0.is_empty() {
            let path = self.file(repo);
            std::fs::remove_file(&path).map_err(|source| Error::SecretsIo {
                path,
                action: "remove",
                source,
            })?;
        } else {
            self.write_file(repo, &secrets)?;
        }
        Ok(true)
    }

    /// Replaces `repo`'s file atomically, 0600 from its first byte, in dirs that are 0700.
    fn write_file(&self, repo: &RepoFullName, secrets: &RepoSecrets) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = self.file(repo);
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::SecretsIo {
                path,
                action,
                source,
            }
        };
        let owner_dir = path.parent().unwrap_or(&self.dir);
        for dir in [self.dir.as_path(), owner_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create", dir))?;
            // A dir made by hand (or by an older version) may be wider.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("restrict", dir))?;
        }
        let json = serde_json::to_vec_pretty(&secrets.0).map_err(|e| Error::SecretsIo {
            path: path.clone(),
            action: "serialise",
            source: std::io::Error::other(e),
        })?;
        let mut file = {
            use atomic_write_file::unix::OpenOptionsExt as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut options = atomic_write_file::AtomicWriteFile::options();
            options.mode(0o600);
            options.preserve_mode(false);
            options.try_preserve_owner(false);
            options.open(&path).map_err(io("open", &path))?
        };
        file.write_all(&json)
            .and_then(|()| file.commit())
            .map_err(io("write", &path))
    }
}

/// One repository's secrets, by name. Its Debug form names them only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RepoSecrets(BTreeMap<String, String>);

impl std::fmt::Debug for RepoSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RepoSecrets")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RepoSecrets {
    /// Secrets from `values` (tests and tools; the store checks what it writes).
    pub fn from_values(values: BTreeMap<String, String>) -> Self {
        Self(values)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, for the compose file. A name that is no longer valid (the rules changed since
    /// it was stored) is left out, with its value.
    pub fn names(&self) -> BTreeSet<SecretName> {
        self.0
            .keys()
            .filter_map(|name| SecretName::parse(name).ok())
            .collect()
    }

    /// The values for Compose's environment, for exactly the names of [`RepoSecrets::names`].
    pub fn app_env(&self) -> AppEnv {
        let names = self.names();
        AppEnv::new(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n.as_str() == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// `text` with every secret value replaced by `[redacted NAME]`: the one function every text
    /// bound for a PR comment or the API goes through (a failure's reason and its build or
    /// container log tail: an app that prints its environment must not publish it). Each value
    /// is also replaced as JSON escapes it, percent-encoded and in base64, and a value of several
    /// lines line by line, since log tails are cut by lines and prefixed per line.
    pub fn redact(&self, text: &str) -> String {
        let mut forms: Vec<(String, &str)> = Vec::new();
        for (name, value) in &self.0 {
            if value.is_empty() {
                continue;
            }
            let json = serde_json::to_string(value).unwrap_or_default();
            let json = json
                .strip_prefix('"')
                .and_then(|j| j.strip_suffix('"'))
                .unwrap_or_default();
            for form in [
                value.clone(),
                json.to_owned(),
                percent_encoded(value),
                preview_core::render::compose::base64(value.as_bytes()),
            ] {
                forms.push((form, name));
            }
            if value.contains('\n') {
                for line in value.lines().map(str::trim) {
                    // Lines as short as a PEM's dashes say nothing; they are left.
                    if line.len() >= 8 {
                        forms.push((line.to_owned(), name));
                    }
                }
            }
        }
        // Longest first, so a value inside another secret's value cannot leave a piece of it.
        forms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        forms.dedup_by(|a, b| a.0 == b.0);
        let mut out = text.to_owned();
        for (form, name) in forms {
            if !form.is_empty() && out.contains(form.as_str()) {
                out = out.replace(form.as_str(), &format!("[redacted {name}]"));
            }
        }
        out
    }
}

/// `value` percent-encoded as in a URL (unreserved characters kept).
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn repo() -> RepoFullName {
        RepoFullName::parse("Octo-Org/Hello.API").unwrap()
    }

    fn name(n: &str) -> SecretName {
        SecretName::parse(n).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_0600_in_0700_dirs_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RepoSecretStore::new(tmp.path().join("secrets"));
        assert_eq!(store.names(&repo()).unwrap(), Vec::<String>::new());
        assert!(!store.set(&repo(), &name("STRIPE_KEY"), b"sk_1").unwrap());
        assert!(store.set(&repo(), &name("STRIPE_KEY"), b"sk_2").unwrap());
        store
            .set(&repo(), &name("SENTRY_DSN"), b"https://x@y/1")
            .unwrap();
        let file = store.file(&repo());
        assert_eq!(file, tmp.path().join("secrets/octo-org/hello.api.json"));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&tmp.path().join("secrets")), 0o700);
        assert_eq!(mode(&tmp.path().join("secrets/octo-org")), 0o700);
        // No temporary file is left beside it.
        let entries: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["hello.api.json"]);
        // The same repository however GitHub's payload spells it.
        let other_case = RepoFullName::parse("octo-org/hello.api").unwrap();
        assert_eq!(
            store.names(&other_case).unwrap(),
            ["SENTRY_DSN", "STRIPE_KEY"]
        );
        let loaded = store.load(&repo()).unwrap();
        assert_eq!(
            format!("{loaded:?}"),
            r#"RepoSecrets(["SENTRY_DSN", "STRIPE_KEY"])"#
        );
        assert_eq!(
            loaded.app_env().names().collect::<Vec<_>>(),
            ["SENTRY_DSN", "STRIPE_KEY"]
        );
        // A file made wider by hand is 0600 again after the next change.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.set(&repo(), &name("STRIPE_KEY"), b"sk_3").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(store.unset(&repo(), &name("STRIPE_KEY")).unwrap());
        assert!(!store.unset(&repo(), &name("STRIPE_KEY")).unwrap());
        assert_eq!(store.names(&repo()).unwrap(), ["SENTRY_DSN"]);
        assert!(store.unset(&repo(), &name("SENTRY_DSN")).unwrap());
        assert!(!file.exists(), "the last unset removes the file");
    }

    #[test]
    fn bad_values_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RepoSecretStore::new(tmp.path().join("secrets"));
        let big = vec![b'x'; 64 * 1024 + 1];
        let err = store.set(&repo(), &name("BIG"), &big).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid secret value: it is 65537 bytes; at most 65536 bytes (64 KiB)"
        );
        assert!(matches!(err, Error::SecretInvalid(_)));
        assert!(store.set(&repo(), &name("EMPTY"), b"").is_err());
        assert!(store.set(&repo(), &name("NUL"), b"a\0b").is_err());
        assert!(!tmp.path().join("secrets").exists());
    }

    #[test]
    fn a_corrupt_file_is_reported_without_its_text() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RepoSecretStore::new(tmp.path());
        let file = store.file(&repo());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{\"A\": \"sk_live_half").unwrap();
        let err = store.load(&repo()).unwrap_err().to_string();
        assert!(err.contains("hello.api.json"), "{err}");
        assert!(!err.contains("sk_live_half"), "{err}");
    }

    #[test]
    fn redaction_covers_every_form_of_every_value() {
        let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8Qu\n-----END KEY-----";
        let secrets = RepoSecrets::from_values(BTreeMap::from([
            ("STRIPE_KEY".to_owned(), "sk_live_a+b/c=\"d\"".to_owned()),
            ("SHORT".to_owned(), "sk".to_owned()),
            ("PEM".to_owned(), pem.to_owned()),
        ]));
        let value = "sk_live_a+b/c=\"d\"";
        let text = format!(
            "STRIPE_KEY={value}\njson: {{\"k\":{}}}\nurl: https://x/?k={}\nb64: {}\napp-1  | MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\napp-1  | 9Cnzj4p4WGeKLs1Pt8Qu\n",
            serde_json::to_string(value).unwrap(),
            percent_encoded(value),
            preview_core::render::compose::base64(value.as_bytes()),
        );
        let redacted = secrets.redact(&text);
        for form in [
            value.to_owned(),
            serde_json::to_string(value).unwrap(),
            percent_encoded(value),
            preview_core::render::compose::base64(value.as_bytes()),
            "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf".to_owned(),
            "9Cnzj4p4WGeKLs1Pt8Qu".to_owned(),
        ] {
            assert!(!redacted.contains(&form), "{form} in {redacted}");
        }
        assert!(
            redacted.starts_with("STRIPE_KEY=[redacted STRIPE_KEY]\n"),
            "{redacted}"
        );
        assert!(redacted.contains("app-1  | [redacted PEM]"), "{redacted}");
        assert!(!redacted.contains("sk"), "even a short value: {redacted}");
        assert_eq!(RepoSecrets::default().redact(&text), text);
    }
}
