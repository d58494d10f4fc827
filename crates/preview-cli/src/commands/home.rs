//! The operator's preview-deployer directory: `~/.preview-deployer` by default, holding the config,
//! the file secret store (when no keychain is available), the setup state, logs and the working
//! copies of the terraform and ansible inputs.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Name of the directory under `$HOME` (the seed's path).
const DIR_NAME: &str = ".preview-deployer";
/// Name of the directory under `$XDG_CONFIG_HOME`, used when it already exists.
const XDG_DIR_NAME: &str = "preview-deployer";

/// The option every infrastructure command takes to choose the directory.
#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// Directory holding config.yml, secrets and setup state [default: ~/.preview-deployer, or
    /// $XDG_CONFIG_HOME/preview-deployer when that exists]
    #[arg(long = "home", env = "PREVIEW_HOME", value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,
}

/// Paths inside the operator's preview-deployer directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Picks the directory: `--home`/`PREVIEW_HOME`, else an existing
    /// `$XDG_CONFIG_HOME/preview-deployer`, else `$HOME/.preview-deployer`.
    pub fn resolve(args: &HomeArgs) -> Result<Self> {
        if let Some(root) = &args.home {
            return Ok(Self { root: root.clone() });
        }
        if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            let candidate = PathBuf::from(xdg).join(XDG_DIR_NAME);
            if candidate.is_dir() {
                return Ok(Self { root: candidate });
            }
        }
        let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) else {
            bail!("HOME is not set; pass --home DIR or set PREVIEW_HOME");
        };
        Ok(Self {
            root: PathBuf::from(home).join(DIR_NAME),
        })
    }

    /// A home at an explicit path (tests).
    #[cfg(test)]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (mode 0700) if needed.
    pub fn ensure(&self) -> Result<()> {
        ensure_private_dir(&self.root)
    }

    /// `config.yml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.yml")
    }

    /// The file secret store, used only when no keychain is available.
    pub fn secrets_path(&self) -> PathBuf {
        self.root.join("secrets.yml")
    }

    /// The setup state: completed phases, server address, webhook ids.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// SSH host keys of the server, kept apart from the user's own known_hosts because a
    /// rebuilt droplet may reuse an address with a new key.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.root.join("known_hosts")
    }

    /// Directory of the tool logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Terraform's working directory: a copy of `terraform/*.tf` plus the local state.
    pub fn terraform_dir(&self) -> PathBuf {
        self.root.join("terraform")
    }

    /// Ansible inventory and vars files.
    pub fn ansible_dir(&self) -> PathBuf {
        self.root.join("ansible")
    }

    /// A fresh log file for one run of `command`, e.g. `logs/setup-20250101-120000.log (UTC)`.
    pub fn new_log(&self, command: &str) -> Result<PathBuf> {
        let dir = self.logs_dir();
        ensure_private_dir(&dir)?;
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let mut path = dir.join(format!("{command}-{stamp}.log"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = dir.join(format!("{command}-{stamp}-{n}.log"));
        }
        write_private(&path, b"")?;
        Ok(path)
    }
}

/// Creates `dir` with mode 0700 when missing.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

/// Writes `bytes` to `path` atomically with mode 0600: the file never exists with wider
/// permissions, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        ensure_private_dir(parent)?;
    }
    let mut file = {
        use atomic_write_file::unix::OpenOptionsExt as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut options = atomic_write_file::AtomicWriteFile::options();
        options.mode(0o600);
        // An older file may carry wider permissions; the new one must not inherit them.
        options.preserve_mode(false);
        options.try_preserve_owner(false);
        options
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?
    };
    // The umask can only narrow 0600, so nothing else needs fixing afterwards.
    file.write_all(bytes)
        .and_then(|()| file.commit())
        .with_context(|| format!("writing {}", path.display()))
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.yml");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn explicit_home_wins() {
        let args = HomeArgs {
            home: Some("/tmp/x".into()),
        };
        assert_eq!(Home::resolve(&args).unwrap().root(), Path::new("/tmp/x"));
    }
}
