//! Who may see a repository's previews (`preview access`): the settings, kept in `access.json`
//! beside the deployment store (0600), and the nginx files that enforce them.
//!
//! Each preview's nginx block includes `{NGINX_CONFIG_DIR}/access/{owner}.{name}.con[f]`, a glob
//! that matches nothing while the repository is public. Setting access writes that file (and the
//! htpasswd file it names), checks nginx's config, and reloads; nginx refusing puts the previous
//! files back. So a change reaches every live preview at once, without a redeploy. At start the
//! files are written again from `access.json` when they are missing or differ.
//!
//! nginx's master (root) reads the conf; its workers read the htpasswd file at each request, so
//! that file is 0640 and belongs to `NGINX_WORKER_GROUP` (`www-data` on Debian). The access
//! directory is setgid to that group (2750), so files created in it take the group even when the
//! orchestrator is not root and not in the group.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use preview_core::access::{
    AccessFiles, AccessPolicy, BasicAuth, ClientCidr, PasswordHash, render_access, validate_user,
};
use preview_core::id::RepoFullName;
use preview_exec::nginx::NginxControl;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{Config, RepoPattern};
use crate::store::Store;
use crate::{Error, Result};

/// The directory under `NGINX_CONFIG_DIR` holding the access files. The base config includes
/// `{NGINX_CONFIG_DIR}/*.conf` only, so nothing in it is included but by a preview.
pub const ACCESS_DIR_NAME: &str = "access";
/// The version of `access.json` this build writes.
const SCHEMA_VERSION: u32 = 1;

/// The access directory of an nginx config dir.
pub fn access_dir(nginx_config_dir: &Path) -> PathBuf {
    nginx_config_dir.join(ACCESS_DIR_NAME)
}

/// The `include` glob of `repo`'s access file, for its previews' nginx blocks.
pub fn include_pattern(nginx_config_dir: &Path, repo: &RepoFullName) -> Result<String> {
    AccessFiles::new(&access_dir(nginx_config_dir), repo)
        .map(|f| f.include_pattern)
        .map_err(|e| Error::Config {
            setting: "NGINX_CONFIG_DIR",
            reason: e.to_string(),
        })
}

/// A change of a repository's access settings: a field left out stays as it is; `null` removes
/// that kind of control. Values arrive as text and are checked by [`AccessChange::apply_to`], so
/// that a bad one is reported with its field.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessChange {
    /// Basic auth: the user and the password's SHA-512-crypt hash, or `null`.
    #[serde(default, deserialize_with = "present")]
    pub basic_auth: Option<Option<BasicAuthChange>>,
    /// The client networks allowed (replacing the list), or `null`.
    #[serde(default, deserialize_with = "present")]
    pub allow: Option<Option<Vec<String>>>,
}

/// Basic auth as the API takes it: the hash, never the password.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthChange {
    /// The user name.
    pub user: String,
    /// `$6$...`, e.g. from `openssl passwd -6`.
    pub password_hash: String,
}

/// A field that is present, even as `null`, becomes `Some`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl AccessChange {
    /// Removes every kind of control.
    pub fn everything_off() -> Self {
        Self {
            basic_auth: Some(None),
            allow: Some(None),
        }
    }

    /// `current` with this change applied, validated.
    pub fn apply_to(self, current: &AccessPolicy) -> Result<AccessPolicy> {
        let mut next = current.clone();
        if let Some(auth) = self.basic_auth {
            next.basic_auth = match auth {
                Some(auth) => {
                    validate_user(&auth.user).map_err(invalid)?;
                    Some(BasicAuth {
                        user: auth.user,
                        password_hash: PasswordHash::parse(&auth.password_hash).map_err(invalid)?,
                    })
                }
                None => None,
            };
        }
        if let Some(allow) = self.allow {
            next.allow = match allow {
                Some(list) if list.is_empty() => {
                    return Err(Error::Invalid {
                        field: "allow".into(),
                        reason: "an empty allowlist would let no one in; send null to remove it"
                            .into(),
                    });
                }
                Some(list) => list
                    .iter()
                    .map(|c| c.parse::<ClientCidr>().map_err(invalid))
                    .collect::<Result<_>>()?,
                None => Vec::new(),
            };
        }
        next.validate().map_err(invalid)?;
        Ok(next)
    }
}

fn invalid(e: preview_core::Error) -> Error {
    match e {
        preview_core::Error::Invalid { field, reason } => Error::Invalid { field, reason },
        other => Error::Invalid {
            field: "access".into(),
            reason: other.to_string(),
        },
    }
}

/// What the API shows of a repository's access: never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessView {
    /// `owner/name`.
    pub repo: String,
    /// True when anyone may see the previews.
    pub public: bool,
    /// The basic-auth user, when basic auth is on.
    pub basic_auth: Option<BasicAuthView>,
    /// The client networks allowed; empty means any.
    pub allow: Vec<ClientCidr>,
    /// Live previews of the repository whose nginx conf predates access control and so does not
    /// include the access file: they need a redeploy to be covered.
    pub uncovered: Vec<String>,
}

/// The user of basic auth, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BasicAuthView {
    /// The user name.
    pub user: String,
}

/// `access.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccessDb {
    schema_version: u32,
    /// By lowercased `owner/name`.
    repos: BTreeMap<String, RepoAccess>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RepoAccess {
    /// As the operator spelled it.
    repo: RepoFullName,
    policy: AccessPolicy,
    updated_at: jiff::Timestamp,
}

/// The access settings of every repository and the files that enforce them.
pub struct AccessControl {
    db_path: PathBuf,
    nginx_config_dir: PathBuf,
    nginx: NginxControl,
    worker_group: String,
    allowed: Vec<RepoPattern>,
    db: tokio::sync::Mutex<AccessDb>,
}

impl AccessControl {
    /// Loads `access.json` (none yet is an empty one); a corrupt file is an error, left as is.
    pub fn open(config: &Config) -> Result<Self> {
        let db_path = config.access_db_path();
        let db = match std::fs::read(&db_path) {
            Ok(bytes) => {
                let db: AccessDb =
                    serde_json::from_slice(&bytes).map_err(|e| Error::StoreCorrupt {
                        path: db_path.clone(),
                        reason: e.to_string(),
                    })?;
                if db.schema_version != SCHEMA_VERSION {
                    return Err(Error::StoreVersion {
                        path: db_path,
                        found: db.schema_version.to_string(),
                        supported: SCHEMA_VERSION,
                    });
                }
                db
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AccessDb {
                schema_version: SCHEMA_VERSION,
                repos: BTreeMap::new(),
            },
            Err(source) => {
                return Err(Error::StoreIo {
                    path: db_path,
                    action: "read",
                    source,
                });
            }
        };
        let nginx = NginxControl::from_command_lines(
            &config.nginx_test_command,
            &config.nginx_reload_command,
        )
        .map_err(|e| Error::Config {
            setting: "NGINX_RELOAD_COMMAND",
            reason: e.to_string(),
        })?;
        Ok(Self {
            db_path,
            nginx_config_dir: config.nginx_config_dir.clone(),
            nginx,
            worker_group: config.nginx_worker_group.clone(),
            allowed: config.allowed_repos.clone(),
            db: tokio::sync::Mutex::new(db),
        })
    }

    /// `repo` if ALLOWED_REPOS has it; access settings exist only for repositories that deploy.
    pub fn check_allowed(&self, repo: &RepoFullName) -> Result<()> {
        if self.allowed.iter().any(|p| p.matches(repo)) {
            Ok(())
        } else {
            Err(Error::RepoNotAllowed(repo.full_name()))
        }
    }

    /// The settings of `repo`, with the live previews `store` knows that they do not reach.
    pub async fn view(&self, repo: &RepoFullName, store: &Store) -> Result<AccessView> {
        self.check_allowed(repo)?;
        let policy = self.policy_of(&*self.db.lock().await, repo);
        self.view_of(repo, &policy, store)
    }

    fn policy_of(&self, db: &AccessDb, repo: &RepoFullName) -> AccessPolicy {
        db.repos
            .get(repo.key())
            .map(|r| r.policy.clone())
            .unwrap_or_default()
    }

    fn view_of(
        &self,
        repo: &RepoFullName,
        policy: &AccessPolicy,
        store: &Store,
    ) -> Result<AccessView> {
        let pattern = include_pattern(&self.nginx_config_dir, repo)?;
        let ids: Vec<String> = store.read(|s| {
            s.deployments
                .values()
                .filter(|r| r.repo == *repo)
                .map(|r| r.id.as_str().to_owned())
                .collect()
        });
        let uncovered = ids
            .into_iter()
            .filter(|id| {
                let conf = self.nginx_config_dir.join(format!("{id}.conf"));
                std::fs::read_to_string(conf).is_ok_and(|text| !text.contains(&pattern))
            })
            .collect();
        Ok(AccessView {
            repo: repo.full_name(),
            public: policy.is_public(),
            basic_auth: policy.basic_auth.as_ref().map(|a| BasicAuthView {
                user: a.user.clone(),
            }),
            allow: policy.allow.clone(),
            uncovered,
        })
    }

    /// Applies `change` to `repo`'s settings: writes its access files, has nginx check and
    /// reload them (putting the previous files back if it refuses), then records the settings.
    pub async fn change(
        &self,
        repo: &RepoFullName,
        change: AccessChange,
        store: &Store,
    ) -> Result<AccessView> {
        self.check_allowed(repo)?;
        let mut db = self.db.lock().await;
        let current = self.policy_of(&db, repo);
        let next = change.apply_to(&current)?;
        {
            let _nginx = crate::nginx::NGINX_LOCK.lock().await;
            self.install(repo, &next).await?;
            let previous = db.repos.get(repo.key()).cloned();
            if next.is_public() {
                db.repos.remove(repo.key());
            } else {
                db.repos.insert(
                    repo.key().to_owned(),
                    RepoAccess {
                        repo: repo.clone(),
                        policy: next.clone(),
                        updated_at: jiff::Timestamp::now(),
                    },
                );
            }
            if let Err(e) = self.save(&db) {
                // What nginx enforces must match what is recorded: go back to the settings before.
                match previous {
                    Some(p) => db.repos.insert(repo.key().to_owned(), p),
                    None => db.repos.remove(repo.key()),
                };
                if let Err(undo) = self.install(repo, &current).await {
                    tracing::error!(repo = %repo, error = %undo, "could not put the previous access files back");
                }
                return Err(e);
            }
        }
        tracing::info!(
            repo = %repo,
            basic_auth_user = next.basic_auth.as_ref().map_or("", |a| a.user.as_str()),
            allowed_networks = next.allow.len(),
            "preview access changed"
        );
        self.view_of(repo, &next, store)
    }

    /// Writes the access files of every repository with settings where they are missing or
    /// differ, then checks and reloads nginx once. Returns how many repositories needed it.
    pub async fn restore(&self) -> Result<usize> {
        let db = self.db.lock().await;
        let _nginx = crate::nginx::NGINX_LOCK.lock().await;
        let mut rewritten = 0;
        for access in db.repos.values() {
            let files = self.files(&access.repo)?;
            let rendered = render_access(&access.repo, &files, &access.policy).map_err(invalid)?;
            let mut changed = false;
            if let Some(htpasswd) = &rendered.htpasswd
                && read_optional(&files.htpasswd)?.as_deref() != Some(htpasswd.as_str())
            {
                self.write_file(&files.htpasswd, htpasswd)?;
                changed = true;
            }
            if let Some(conf) = &rendered.conf
                && read_optional(&files.conf)?.as_deref() != Some(conf.as_str())
            {
                self.write_file(&files.conf, conf)?;
                changed = true;
            }
            if changed {
                tracing::warn!(repo = %access.repo, "the access files were missing or changed; written again from the settings");
                rewritten += 1;
            }
        }
        if rewritten > 0 {
            let applied = match self.nginx.test().await {
                Ok(()) => self.nginx.reload().await,
                Err(e) => Err(e),
            };
            applied.map_err(|e| Error::NginxRefused(nginx_message(&e)))?;
        }
        Ok(rewritten)
    }

    fn files(&self, repo: &RepoFullName) -> Result<AccessFiles> {
        AccessFiles::new(&access_dir(&self.nginx_config_dir), repo).map_err(|e| Error::Config {
            setting: "NGINX_CONFIG_DIR",
            reason: e.to_string(),
        })
    }

    /// Puts `policy`'s files for `repo` in place and has nginx take them; on a refusal the files
    /// before come back. The caller holds the nginx lock.
    async fn install(&self, repo: &RepoFullName, policy: &AccessPolicy) -> Result<()> {
        let files = self.files(repo)?;
        let rendered = render_access(repo, &files, policy).map_err(invalid)?;
        let old_conf = read_optional(&files.conf)?;
        let old_htpasswd = read_optional(&files.htpasswd)?;
        if old_conf == rendered.conf && old_htpasswd == rendered.htpasswd {
            return Ok(());
        }
        // The htpasswd file first: the conf that names it may be loaded at any reload.
        if let Some(htpasswd) = &rendered.htpasswd {
            self.write_file(&files.htpasswd, htpasswd)?;
        }
        let wrote_conf = match &rendered.conf {
            Some(conf) => self.write_file(&files.conf, conf),
            None => remove_optional(&files.conf),
        };
        let outcome = match wrote_conf {
            Ok(()) => match self.nginx.test().await {
                Ok(()) => self
                    .nginx
                    .reload()
                    .await
                    .map_err(|e| Error::NginxRefused(nginx_message(&e))),
                Err(e) => Err(Error::NginxRefused(nginx_message(&e))),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                if rendered.htpasswd.is_none() {
                    remove_optional(&files.htpasswd)?;
                }
                Ok(())
            }
            Err(e) => {
                let restored = self
                    .restore_file(&files.conf, old_conf.as_deref())
                    .and(self.restore_file(&files.htpasswd, old_htpasswd.as_deref()));
                if let Err(undo) = restored {
                    tracing::error!(repo = %repo, error = %undo, "could not put the previous access files back");
                }
                // A reload command that checks the config itself refused: make sure the files
                // before serve.
                let _ = self.nginx.reload().await;
                Err(e)
            }
        }
    }

    fn restore_file(&self, path: &Path, contents: Option<&str>) -> Result<()> {
        match contents {
            Some(text) => self.write_file(path, text),
            None => remove_optional(path),
        }
    }

    /// Creates the access directory, setgid to the workers' group, if it is not there.
    fn ensure_dir(&self, gid: u32) -> Result<PathBuf> {
        let dir = access_dir(&self.nginx_config_dir);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create", e))?;
            std::os::unix::fs::chown(&dir, None, Some(gid))
                .map_err(|e| self.group_error(&dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750))
                .map_err(|e| io_error(&dir, "set the mode of", e))?;
        }
        Ok(dir)
    }

    fn group_error(&self, path: &Path, e: std::io::Error) -> Error {
        Error::Config {
            setting: "NGINX_WORKER_GROUP",
            reason: format!(
                "cannot give {} to group {} (nginx's workers read the htpasswd files): {e}; run \
                 the orchestrator as root, or create {} owned by its user with group {} and mode \
                 2750 (the Ansible role does)",
                path.display(),
                self.worker_group,
                access_dir(&self.nginx_config_dir).display(),
                self.worker_group
            ),
        }
    }

    /// Writes `contents` to `path` atomically: 0640 and the workers' group (the htpasswd file
    /// must be readable by them; the conf needs no more than the master's root).
    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        let gid = group_id(&self.worker_group)?;
        let dir = self.ensure_dir(gid)?;
        let staged = dir.join(format!(
            ".{}.staged",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&staged);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&staged)?;
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })();
        written.map_err(|e| io_error(&staged, "write", e))?;
        // The setgid directory gave it the group already, unless it was made another way.
        if let Err(e) = std::os::unix::fs::chown(&staged, None, Some(gid)) {
            let _ = std::fs::remove_file(&staged);
            return Err(self.group_error(&staged, e));
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| io_error(&staged, "set the mode of", e))?;
        std::fs::rename(&staged, path).map_err(|e| io_error(path, "write", e))?;
        Ok(())
    }

    /// Writes `access.json` atomically, 0600: it holds password hashes.
    fn save(&self, db: &AccessDb) -> Result<()> {
        let path = &self.db_path;
        let mut bytes =
            serde_json::to_vec_pretty(db).map_err(|e| Error::StoreWrite(e.to_string()))?;
        bytes.push(b'\n');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", e))?;
        }
        let staged = path.with_extension("json.staged");
        let _ = std::fs::remove_file(&staged);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&staged, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        written.map_err(|e| io_error(path, "write", e))
    }
}

/// nginx's own words: the first line of the error and its stderr tail.
fn nginx_message(e: &preview_exec::Error) -> String {
    let tail = e.stderr_tail().trim();
    let first = e.to_string();
    let first = first.lines().next().unwrap_or_default();
    if tail.is_empty() || first.contains(tail) {
        first.to_owned()
    } else {
        format!("{first}: {tail}")
    }
}

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> Error {
    Error::StoreIo {
        path: path.to_owned(),
        action,
        source,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, "read", e)),
    }
}

fn remove_optional(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "remove", e)),
    }
}

/// The id of group `name` from `/etc/group`, or `name` itself when it is a number.
fn group_id(name: &str) -> Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    gid_in(&groups, name).ok_or_else(|| Error::Config {
        setting: "NGINX_WORKER_GROUP",
        reason: format!(
            "group {name:?} does not exist on this host; set it to the group nginx's workers run as (see `user` in nginx.conf)"
        ),
    })
}

/// The gid of `name` in the text of an `/etc/group` file.
fn gid_in(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_come_from_the_group_file() {
        let groups = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n# comment\n";
        assert_eq!(gid_in(groups, "www-data"), Some(33));
        assert_eq!(gid_in(groups, "nogroup"), Some(65534));
        assert_eq!(gid_in(groups, "www"), None);
        assert_eq!(group_id("33").unwrap(), 33);
        let err = group_id("no-such-group-here").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let hash = "$6$saltsalt$laiNRSZtsdnm7n7dwsTYnpu4SvuD5SZtnVSj6eFc4qH1lzBFTuli6I..xfpEMpXvdxfTWQCFAkBAngasbGT430";
        let set_auth: AccessChange = serde_json::from_str(&format!(
            r#"{{"basicAuth":{{"user":"alice","passwordHash":"{hash}"}}}}"#
        ))
        .unwrap();
        let with_auth = set_auth.apply_to(&AccessPolicy::default()).unwrap();
        let set_allow: AccessChange =
            serde_json::from_str(r#"{"allow":["203.0.113.0/24"]}"#).unwrap();
        let both = set_allow.apply_to(&with_auth).unwrap();
        assert_eq!(both.basic_auth, with_auth.basic_auth, "basic auth kept");
        assert_eq!(both.allow.len(), 1);
        let drop_auth: AccessChange = serde_json::from_str(r#"{"basicAuth":null}"#).unwrap();
        let only_allow = drop_auth.apply_to(&both).unwrap();
        assert_eq!(
            (only_allow.basic_auth.is_none(), only_allow.allow.len()),
            (true, 1)
        );
        assert!(
            AccessChange::everything_off()
                .apply_to(&both)
                .unwrap()
                .is_public()
        );
    }

    #[test]
    fn bad_changes_say_what_is_wrong() {
        let hash = "$6$saltsalt$laiNRSZtsdnm7n7dwsTYnpu4SvuD5SZtnVSj6eFc4qH1lzBFTuli6I..xfpEMpXvdxfTWQCFAkBAngasbGT430";
        for (body, says) in [
            (
                r#"{"allow":[]}"#.to_owned(),
                "invalid allow: an empty allowlist would let no one in; send null",
            ),
            (
                r#"{"allow":["10.0.0.1/8"]}"#.to_owned(),
                "invalid CIDR: \"10.0.0.1/8\" has bits set after the first 8; the network is 10.0.0.0/8",
            ),
            (
                r#"{"allow":["nonsense"]}"#.to_owned(),
                "invalid CIDR: \"nonsense\": \"nonsense\" is not an IPv4 or IPv6 address",
            ),
            (
                r#"{"basicAuth":{"user":"alice","passwordHash":"$6$s$h"}}"#.to_owned(),
                "invalid password hash: must be a SHA-512-crypt hash",
            ),
            (
                format!(r#"{{"basicAuth":{{"user":"a:b","passwordHash":"{hash}"}}}}"#),
                "invalid basic-auth user: character ':' is not allowed",
            ),
            (
                r#"{"basicAuth":{"user":"alice","password":"hunter22"}}"#.to_owned(),
                "unknown field `password`",
            ),
            (
                r#"{"deny":["10.0.0.0/8"]}"#.to_owned(),
                "unknown field `deny`",
            ),
            (
                r#"{"allow":"10.0.0.0/8"}"#.to_owned(),
                "invalid type: string",
            ),
        ] {
            let err = serde_json::from_str::<AccessChange>(&body)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.apply_to(&AccessPolicy::default())
                        .map_err(|e| e.to_string())
                })
                .unwrap_err();
            assert!(err.starts_with(says), "{body}: {err}");
        }
    }
}
