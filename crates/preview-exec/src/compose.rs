//! Docker Compose, as the v2+ CLI plugin (`docker compose`) or the v1 `docker-compose` fallback.
//!
//! Each method returns the [`Cmd`] it would run, so arguments are tested without running anything.
//! Compose runs in a clean environment: nothing of the orchestrator's (its GitHub token, its webhook
//! secret) can be interpolated into a repo's compose file. The one addition is a trusted preview's
//! secrets ([`AppEnv`]), which the compose file names in the app's environment without a value.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::{Cmd, Error, Result};

/// Which Compose CLI runs projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeCli {
    /// `docker compose`, the v2+ plugin.
    Plugin,
    /// `docker-compose`, the legacy v1 binary.
    Standalone,
}

/// A preview's secrets, handed to Compose in its own environment: the rendered compose file
/// names each in the app's `environment` without a value, and Compose fills it in when it
/// creates the container. Its Debug form names the variables only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AppEnv(BTreeMap<String, String>);

impl AppEnv {
    /// No variables.
    pub fn none() -> Self {
        Self::default()
    }

    /// The variables `vars` (names already validated by the caller).
    pub fn new(vars: BTreeMap<String, String>) -> Self {
        Self(vars)
    }

    /// The variables' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `cmd` with these variables in its environment.
    pub fn apply_to(&self, cmd: Cmd) -> Cmd {
        self.0.iter().fold(cmd, |cmd, (k, v)| cmd.env(k, v))
    }
}

impl std::fmt::Debug for AppEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AppEnv")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A Compose CLI plus the timeouts it runs with.
#[derive(Debug, Clone)]
pub struct Compose {
    cli: ComposeCli,
    /// Time allowed for `up --build`, which includes the image build.
    pub up_timeout: Duration,
    /// Time allowed for `down` and the short queries.
    pub short_timeout: Duration,
    /// Given to every command that may create or recreate a container (`up`, `start`,
    /// `start_beside`, `retire`, `start_services`): Compose compares a container's configuration,
    /// environment included, with the file's, so one of them without these would recreate the
    /// app without its secrets. Commands that create nothing (`build`, `logs`, `down`, `config`)
    /// never get them.
    app_env: AppEnv,
}

impl Compose {
    /// A Compose using `cli`, with default timeouts (15 min for up, 2 min for the rest).
    pub fn new(cli: ComposeCli) -> Self {
        Self {
            cli,
            up_timeout: Duration::from_secs(15 * 60),
            short_timeout: Duration::from_secs(120),
            app_env: AppEnv::none(),
        }
    }

    /// This Compose, giving `env` to every command that may create a container (see
    /// [`AppEnv`]). One value per deploy, used for all of its commands.
    pub fn with_app_env(&self, env: AppEnv) -> Self {
        Self {
            app_env: env,
            ..self.clone()
        }
    }

    /// Finds a working Compose: the v2+ plugin first, then the v1 binary.
    pub async fn detect() -> Result<Self> {
        let plugin = Self::new(ComposeCli::Plugin);
        let plugin_err = match plugin.version().await {
            Ok(_) => return Ok(plugin),
            Err(err) => err,
        };
        let standalone = Self::new(ComposeCli::Standalone);
        match standalone.version().await {
            Ok(_) => Ok(standalone),
            Err(_) => Err(Error::NotFound {
                description: format!("find Docker Compose ({plugin_err})"),
                program: "docker compose (v2+) or docker-compose".into(),
            }),
        }
    }

    /// Which CLI this is.
    pub fn cli(&self) -> ComposeCli {
        self.cli
    }

    /// The Compose version string, e.g. `5.6.1` or `1.29.2`.
    pub async fn version(&self) -> Result<String> {
        let out = self
            .base("ask Docker Compose for its version")
            .args(["version", "--short"])
            .timeout(Duration::from_secs(20))
            .run()
            .await?;
        Ok(out.stdout_text().trim().trim_start_matches('v').to_owned())
    }

    /// `up -d --build --remove-orphans` for `project` from `file` in `dir`.
    pub fn up(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self.app_env.apply_to(
            self.project(project, dir, file, "build and start the preview")?
                .args(["up", "-d", "--build", "--remove-orphans"])
                .timeout(self.up_timeout),
        ))
    }

    /// `up -d --no-build --remove-orphans`: brings `project` to its file from images already
    /// built, removing the containers of services the file no longer has (after an update's
    /// switch, the previous app slot).
    pub fn start(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self.app_env.apply_to(
            self.project(
                project,
                dir,
                file,
                "start the preview from its built images",
            )?
            .args(["up", "-d", "--no-build", "--remove-orphans"])
            .timeout(self.up_timeout),
        ))
    }

    /// `up -d --no-build --no-deps --remove-orphans SERVICE...`: starts (or recreates) only
    /// `services`, in their order, each still waiting for the conditions of its dependencies
    /// among them, and brings up no other service: a task that ended (a migration) is not run
    /// again, as [`Compose::start`] would. Also removes the containers of services the file no
    /// longer has. `description` says what for.
    pub fn start_only(
        &self,
        project: &str,
        dir: &Path,
        file: &str,
        services: &[&str],
        description: &str,
    ) -> Result<Cmd> {
        if services.is_empty() {
            return Err(Error::InvalidArgument {
                what: "services to start",
                reason: "none given".into(),
            });
        }
        for service in services {
            validate_service_name(service)?;
        }
        Ok(self.app_env.apply_to(
            self.project(project, dir, file, description)?
                .args(["up", "-d", "--no-build", "--no-deps", "--remove-orphans"])
                .args(services)
                .timeout(self.up_timeout),
        ))
    }

    /// [`Compose::start_only`] the running app `service` after an update's switch: removes the
    /// containers of services the file no longer has (the previous app slot, services the
    /// commit dropped) and touches nothing else.
    pub fn retire(&self, project: &str, dir: &Path, file: &str, service: &str) -> Result<Cmd> {
        self.start_only(
            project,
            dir,
            file,
            &[service],
            "remove the previous commit's containers",
        )
    }

    /// `build`: builds every service of `project` that has a build section, and starts nothing
    /// (an update builds while the serving containers go on).
    pub fn build(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "build the preview's images")?
            .arg("build")
            .timeout(self.up_timeout))
    }

    /// `up -d --no-build`: brings every service of `file` to it from built images, as Compose
    /// does: creates what is missing, recreates what changed (a service built from the new
    /// commit), runs tasks meant to end (migrations) again and starts services in `depends_on`
    /// order, waiting on their conditions. It removes nothing: during an update the serving
    /// app's slot, which the next file no longer names, goes on beside the new one.
    pub fn start_beside(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self.app_env.apply_to(
            self.project(
                project,
                dir,
                file,
                "start the new commit beside the serving one",
            )?
            .args(["up", "-d", "--no-build"])
            .timeout(self.up_timeout),
        ))
    }

    /// `up -d --no-build --no-recreate SERVICES`: starts those of `services` that do not run,
    /// never recreating one that exists (the shared database servers, started on demand).
    pub fn start_services(
        &self,
        project: &str,
        dir: &Path,
        file: &str,
        services: &[String],
    ) -> Result<Cmd> {
        for service in services {
            validate_service_name(service)?;
        }
        Ok(self.app_env.apply_to(
            self.project(project, dir, file, "start the shared database servers")?
                .args(["up", "-d", "--no-build", "--no-recreate"])
                .args(services)
                .timeout(self.up_timeout),
        ))
    }

    /// `stop`: stops every container of `project`, keeping the containers, their volumes and
    /// networks (a preview that sleeps).
    pub fn stop(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "stop the preview's containers")?
            .args(["stop", "--timeout", "5"])
            .timeout(self.short_timeout))
    }

    /// `down --volumes --remove-orphans` for `project`: containers, networks and volumes go.
    pub fn down(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "stop and remove the preview")?
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .timeout(self.short_timeout))
    }

    /// `down` by project name alone (v2+ finds it by its labels), for projects whose files are gone.
    pub fn down_project(&self, project: &str) -> Result<Cmd> {
        validate_project_name(project)?;
        Ok(self
            .base("remove an orphaned preview")
            .args([
                "-p",
                project,
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "5",
            ])
            .timeout(self.short_timeout))
    }

    /// `config --quiet`: validates the file as Compose would read it.
    pub fn config(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "validate the compose file")?
            .args(["config", "--quiet"])
            .timeout(self.short_timeout))
    }

    /// `config --services`: the services `up` would start from `file`, one per line (those of
    /// a profile that is not active are not listed).
    pub fn services(&self, project: &str, dir: &Path, file: &str) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "list the preview's services")?
            .args(["config", "--services"])
            .timeout(self.short_timeout))
    }

    /// `logs --no-color --tail N`: the last lines of every service, for failure reports.
    pub fn logs(&self, project: &str, dir: &Path, file: &str, tail: usize) -> Result<Cmd> {
        Ok(self
            .project(project, dir, file, "read the preview's logs")?
            .args(["logs", "--no-color", "--tail"])
            .arg(tail.to_string())
            .timeout(self.short_timeout))
    }

    fn project(&self, project: &str, dir: &Path, file: &str, description: &str) -> Result<Cmd> {
        validate_project_name(project)?;
        Ok(self
            .base(description)
            .args(["-p", project, "-f", file])
            .current_dir(dir))
    }

    fn base(&self, description: &str) -> Cmd {
        let cmd = match self.cli {
            ComposeCli::Plugin => Cmd::new("docker", description).arg("compose"),
            ComposeCli::Standalone => Cmd::new("docker-compose", description),
        };
        with_docker_env(cmd)
    }
}

/// Lets through only what the Docker CLI needs to find its daemon and plugins.
pub fn with_docker_env(cmd: Cmd) -> Cmd {
    cmd.pass_env("HOME")
        .pass_env("DOCKER_HOST")
        .pass_env("DOCKER_CONFIG")
        .pass_env("DOCKER_CONTEXT")
}

/// Compose project names: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
pub fn validate_project_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "compose project name",
            reason: format!("{name:?} must be 1-63 of [a-z0-9_-], starting with a letter or digit"),
        })
    }
}

/// Compose service names: `[a-zA-Z0-9._-]`, starting with a letter or digit (so never a flag).
pub fn validate_service_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "compose service name",
            reason: format!("{name:?} must be [a-zA-Z0-9._-], starting with a letter or digit"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Cmd) -> Vec<String> {
        cmd.argv()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn plugin_and_standalone_arguments() {
        let dir = Path::new("/tmp/x");
        let up = Compose::new(ComposeCli::Plugin)
            .up("pd-a-b-1", dir, "compose.yml")
            .unwrap();
        assert_eq!(
            argv(&up),
            [
                "docker",
                "compose",
                "-p",
                "pd-a-b-1",
                "-f",
                "compose.yml",
                "up",
                "-d",
                "--build",
                "--remove-orphans"
            ]
        );
        let down = Compose::new(ComposeCli::Standalone)
            .down("p1", dir, "c.yml")
            .unwrap();
        assert_eq!(
            argv(&down),
            [
                "docker-compose",
                "-p",
                "p1",
                "-f",
                "c.yml",
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "5"
            ]
        );
    }

    #[test]
    fn environment_carries_no_secrets() {
        let up = Compose::new(ComposeCli::Plugin)
            .up("p", Path::new("/"), "c.yml")
            .unwrap();
        for key in up.envs().keys() {
            let key = key.to_string_lossy();
            assert!(
                [
                    "PATH",
                    "LC_ALL",
                    "HOME",
                    "DOCKER_HOST",
                    "DOCKER_CONFIG",
                    "DOCKER_CONTEXT"
                ]
                .contains(&key.as_ref()),
                "{key} leaks into compose"
            );
        }
    }

    /// Every command that may create or recreate the app gets the same secrets; the others,
    /// which create nothing, get none; and no form of the command shows a value.
    #[test]
    fn the_app_env_reaches_exactly_the_commands_that_create_containers() {
        let value = "sk_live_compose_0123456789";
        let env = AppEnv::new(BTreeMap::from([
            ("STRIPE_KEY".to_owned(), value.to_owned()),
            (
                "SENTRY_DSN".to_owned(),
                "https://k@sentry.example/1".to_owned(),
            ),
        ]));
        assert_eq!(
            format!("{env:?}"),
            r#"AppEnv(["SENTRY_DSN", "STRIPE_KEY"])"#
        );
        let compose = Compose::new(ComposeCli::Plugin).with_app_env(env);
        assert!(
            !format!("{compose:?}").contains(value),
            "{compose:?} shows a value"
        );
        let dir = Path::new("/tmp/x");
        let creating = [
            compose.up("p", dir, "c.yml").unwrap(),
            compose.start("p", dir, "c.yml").unwrap(),
            compose.start_beside("p", dir, "c.yml").unwrap(),
            compose.retire("p", dir, "c.yml", "app-green").unwrap(),
        ];
        for cmd in &creating {
            let got = cmd.envs().get(std::ffi::OsStr::new("STRIPE_KEY"));
            assert_eq!(
                got.and_then(|v| v.to_str()),
                Some(value),
                "{}",
                cmd.display()
            );
            assert!(cmd.envs().contains_key(std::ffi::OsStr::new("SENTRY_DSN")));
        }
        let others = [
            compose.build("p", dir, "c.yml").unwrap(),
            compose.logs("p", dir, "c.yml", 5).unwrap(),
            compose.down("p", dir, "c.yml").unwrap(),
            compose.config("p", dir, "c.yml").unwrap(),
            compose.down_project("p").unwrap(),
        ];
        for cmd in &others {
            assert!(
                !cmd.envs().contains_key(std::ffi::OsStr::new("STRIPE_KEY")),
                "{}",
                cmd.display()
            );
        }
        for cmd in creating.iter().chain(&others) {
            assert!(!cmd.display().contains(value));
            assert!(!format!("{cmd:?}").contains(value), "{cmd:?}");
        }
    }

    #[test]
    fn an_update_builds_then_starts_beside() {
        let compose = Compose::new(ComposeCli::Plugin);
        let dir = Path::new("/tmp/x");
        let build = compose.build("p", dir, "next.yml").unwrap();
        assert_eq!(argv(&build)[2..], ["-p", "p", "-f", "next.yml", "build"]);
        let start = compose.start_beside("p", dir, "next.yml").unwrap();
        // Without --remove-orphans (the serving slot goes on) and without --no-deps (a
        // migration the app waits on runs first).
        assert_eq!(argv(&start)[6..], ["up", "-d", "--no-build"]);
        let retire = compose.retire("p", dir, "next.yml", "app-green").unwrap();
        assert_eq!(
            argv(&retire)[6..],
            [
                "up",
                "-d",
                "--no-build",
                "--no-deps",
                "--remove-orphans",
                "app-green"
            ]
        );
        for bad in ["", "-d", "--remove-orphans", "a b", "a/b", "a;b"] {
            assert!(compose.retire("p", dir, "f", bad).is_err(), "{bad:?}");
            assert!(
                compose
                    .start_only("p", dir, "f", &["db", bad], "wake")
                    .is_err(),
                "{bad:?}"
            );
        }
        // A wake starts the services it names, and no task that ended.
        let wake = compose
            .start_only("p", dir, "c.yml", &["db", "web"], "wake")
            .unwrap();
        assert_eq!(
            argv(&wake)[6..],
            [
                "up",
                "-d",
                "--no-build",
                "--no-deps",
                "--remove-orphans",
                "db",
                "web"
            ]
        );
        assert!(compose.start_only("p", dir, "c.yml", &[], "wake").is_err());
    }

    #[test]
    fn project_names_are_validated() {
        for bad in ["", "-x", "UPPER", "a b", "a/b", "a;rm", &"x".repeat(64)] {
            assert!(validate_project_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "pd-owner-repo-12", "x_1"] {
            validate_project_name(good).unwrap();
        }
    }
}
