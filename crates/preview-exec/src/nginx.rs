//! nginx control: install a location conf safely (test before reload, roll back on failure) and
//! remove one. The test and reload commands are settings, so a private nginx works in tests and a
//! privileged helper can do it in production.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::{Cmd, Error, Result};

/// How to test and reload an nginx.
#[derive(Debug, Clone)]
pub struct NginxControl {
    /// `None` when the reload command checks the config itself and fails on a bad one.
    test: Option<Vec<OsString>>,
    reload: Vec<OsString>,
}

impl NginxControl {
    /// From argv vectors, e.g. `["nginx", "-t"]` and `["nginx", "-s", "reload"]`; an empty test
    /// command means the reload command checks the config itself.
    pub fn new(test: Vec<OsString>, reload: Vec<OsString>) -> Result<Self> {
        if reload.is_empty() {
            return Err(Error::InvalidArgument {
                what: "nginx reload command",
                reason: "it is empty".into(),
            });
        }
        let test = (!test.is_empty()).then_some(test);
        Ok(Self { test, reload })
    }

    /// From space-separated command lines, as settings give them.
    pub fn from_command_lines(test: &str, reload: &str) -> Result<Self> {
        let words = |line: &str| line.split_whitespace().map(OsString::from).collect();
        Self::new(words(test), words(reload))
    }

    /// `nginx -t` (or the configured test command; nothing when there is none).
    pub async fn test(&self) -> Result<()> {
        match &self.test {
            Some(argv) => command(argv, "check the nginx configuration")
                .run()
                .await
                .map(drop),
            None => Ok(()),
        }
    }

    /// Reloads nginx (or runs the configured reload command).
    pub async fn reload(&self) -> Result<()> {
        command(&self.reload, "reload nginx").run().await.map(drop)
    }

    /// Puts `contents` at `path` only if nginx accepts the result, then reloads.
    ///
    /// The previous file is kept aside under a name nginx does not include, the new one is
    /// written atomically, and `nginx -t` (or a checking reload command) judges the whole config.
    /// On failure the previous file comes back (or the new one goes, if there was none) and the
    /// error carries nginx's message.
    pub async fn install(&self, path: &Path, contents: &str) -> Result<()> {
        let io = |source| Error::Io {
            description: format!("write nginx conf {}", path.display()),
            program: "nginx".into(),
            source,
        };
        let backup = path.with_extension("conf.previous");
        let had_previous = path.exists();
        if had_previous {
            std::fs::copy(path, &backup).map_err(io)?;
        }
        let staged = path.with_extension("conf.staged");
        std::fs::write(&staged, contents).map_err(io)?;
        std::fs::rename(&staged, path).map_err(io)?;
        let outcome = match self.test().await {
            Ok(()) => self.reload().await,
            Err(err) => Err(err),
        };
        if let Err(err) = outcome {
            let restored = if had_previous {
                std::fs::rename(&backup, path)
            } else {
                std::fs::remove_file(path)
            };
            restored.map_err(io)?;
            if self.test.is_none() {
                // The checking reload refused the new file; make sure the old one serves.
                let _ = self.reload().await;
            }
            return Err(err);
        }
        if had_previous {
            std::fs::remove_file(&backup).map_err(io)?;
        }
        Ok(())
    }

    /// Removes the conf at `path`, if any, and reloads.
    pub async fn remove(&self, path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => self.reload().await,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                description: format!("remove nginx conf {}", path.display()),
                program: "nginx".into(),
                source,
            }),
        }
    }
}

fn command(argv: &[OsString], description: &str) -> Cmd {
    Cmd::new(&argv[0], description)
        .args(&argv[1..])
        .timeout(Duration::from_secs(30))
}
