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
    test: Vec<OsString>,
    reload: Vec<OsString>,
}

impl NginxControl {
    /// From argv vectors, e.g. `["nginx", "-t"]` and `["nginx", "-s", "reload"]`.
    pub fn new(test: Vec<OsString>, reload: Vec<OsString>) -> Result<Self> {
        for (what, argv) in [
            ("nginx test command", &test),
            ("nginx reload command", &reload),
        ] {
            if argv.is_empty() {
                return Err(Error::InvalidArgument {
                    what,
                    reason: "it is empty".into(),
                });
            }
        }
        Ok(Self { test, reload })
    }

    /// `nginx -t` (or the configured test command).
    pub async fn test(&self) -> Result<()> {
        command(&self.test, "check the nginx configuration")
            .run()
            .await
            .map(drop)
    }

    /// Reloads nginx (or runs the configured reload command).
    pub async fn reload(&self) -> Result<()> {
        command(&self.reload, "reload nginx").run().await.map(drop)
    }

    /// Puts `contents` at `path` only if nginx accepts the result, then reloads.
    ///
    /// The previous file is kept aside under a name nginx does not include, the new one is
    /// written atomically, and `nginx -t` judges the whole config. On failure the previous file
    /// comes back (or the new one goes, if there was none) and the error carries nginx's message.
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
        if let Err(err) = self.test().await {
            let restored = if had_previous {
                std::fs::rename(&backup, path)
            } else {
                std::fs::remove_file(path)
            };
            restored.map_err(io)?;
            return Err(err);
        }
        if had_previous {
            std::fs::remove_file(&backup).map_err(io)?;
        }
        self.reload().await
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
