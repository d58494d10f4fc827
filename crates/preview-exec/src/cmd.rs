use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{CappedBuffer, Error, Result};

/// Lines of stderr (and stdout) kept in error messages.
const TAIL_LINES: usize = 50;
/// The PATH a child gets when the parent has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One external command: program, argument vector, description, timeout, environment and limits.
///
/// The child starts with an empty environment plus `PATH`, `LC_ALL=C` and whatever the caller
/// passes explicitly ([`Cmd::env`]) or lets through by name ([`Cmd::pass_env`]). It runs in its own
/// process group; on timeout the group gets SIGTERM, then SIGKILL after a grace period, and
/// dropping a running command's future kills the group too.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    description: String,
    timeout: Duration,
    kill_grace: Duration,
    env: BTreeMap<OsString, OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    output_cap: usize,
    log_file: Option<PathBuf>,
    daemonizes: bool,
}

/// Names the environment's variables and counts stdin's bytes, never showing a value: both carry
/// secrets (git's token, the API token, a preview's secrets).
impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmd")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("description", &self.description)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("log_file", &self.log_file)
            .finish_non_exhaustive()
    }
}

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub elapsed: Duration,
}

impl Output {
    /// Stdout as text, lossily decoded.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text, lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Cmd {
    /// A command running `program`, described for logs and errors as `description`.
    pub fn new(program: impl AsRef<OsStr>, description: impl Into<String>) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into());
        let mut env = BTreeMap::new();
        env.insert(OsString::from("PATH"), path);
        env.insert(OsString::from("LC_ALL"), OsString::from("C"));
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            description: description.into(),
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            env,
            cwd: None,
            stdin: None,
            output_cap: 1024 * 1024,
            log_file: None,
            daemonizes: false,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .insert(key.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    /// Lets one variable of this process's environment through to the child, if it is set.
    pub fn pass_env(mut self, key: &str) -> Self {
        if let Some(value) = std::env::var_os(key) {
            self.env.insert(key.into(), value);
        }
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Kills the child's process group after `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL on timeout (default 2 s).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Bytes kept of each of stdout and stderr (default 1 MiB); the middle is dropped beyond that.
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Feeds `bytes` to the child's stdin; this is how secrets reach a child, never argv.
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Appends everything the child prints, uncapped, to `path`.
    pub fn log_to(mut self, path: impl AsRef<Path>) -> Self {
        self.log_file = Some(path.as_ref().to_owned());
        self
    }

    /// The program starts a daemon that leaves the process group on its own (as `nginx` does):
    /// stragglers left in the group after a successful exit are not killed then, since the
    /// daemon may not have left yet. Timeouts and drops still kill the group.
    pub fn daemonizes(mut self) -> Self {
        self.daemonizes = true;
        self
    }

    /// What the command is for.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The program and its arguments.
    pub fn argv(&self) -> impl Iterator<Item = &OsStr> {
        std::iter::once(self.program.as_os_str()).chain(self.args.iter().map(OsString::as_os_str))
    }

    /// The child's environment.
    pub fn envs(&self) -> &BTreeMap<OsString, OsString> {
        &self.env
    }

    /// The command line for logs; arguments never hold secrets, so it is safe to print.
    pub fn display(&self) -> String {
        self.argv()
            .map(|a| {
                let a = a.to_string_lossy();
                if !a.is_empty()
                    && a.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
                {
                    a.into_owned()
                } else {
                    format!("'{}'", a.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command and fails unless it exits 0.
    pub async fn run(&self) -> Result<Output> {
        let output = self.output().await?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(Error::Failed {
                description: self.description.clone(),
                command: self.display(),
                status: describe_status(output.status),
                code: output.status.code(),
                stdout_tail: tail_lines(&output.stdout, TAIL_LINES),
                stderr_tail: tail_lines(&output.stderr, TAIL_LINES),
            })
        }
    }

    /// Runs the command and returns its output whatever its exit status.
    pub async fn output(&self) -> Result<Output> {
        let started = Instant::now();
        tracing::debug!(description = %self.description, command = %self.display(), "running");
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|source| self.spawn_error(source))?;
        let mut group = ProcessGroup(child.id());

        let log = match &self.log_file {
            Some(path) => Some(Arc::new(Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| self.io_error(source))?,
            ))),
            None => None,
        };
        let stdout = tokio::spawn(read_capped(
            child.stdout.take(),
            self.output_cap,
            log.clone(),
        ));
        let stderr = tokio::spawn(read_capped(child.stderr.take(), self.output_cap, log));
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), self.stdin.clone()) {
            // A child that exits without reading its stdin is not an error of ours.
            tokio::spawn(async move {
                let _ = pipe.write_all(&bytes).await;
            });
        }

        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => status.map_err(|source| self.io_error(source))?,
            Err(_elapsed) => {
                group.signal(libc::SIGTERM);
                if tokio::time::timeout(self.kill_grace, child.wait())
                    .await
                    .is_err()
                {
                    group.signal(libc::SIGKILL);
                    let _ = child.wait().await;
                }
                group.signal(libc::SIGKILL);
                let stderr = collect(stderr).await;
                return Err(Error::Timeout {
                    description: self.description.clone(),
                    command: self.display(),
                    timeout: self.timeout,
                    stderr_tail: tail_lines(&stderr.into_bytes(), TAIL_LINES),
                });
            }
        };
        // Stragglers the child left behind in its group must not outlive it, nor hold our pipes.
        if self.daemonizes {
            group.0 = None;
        } else {
            group.signal(libc::SIGKILL);
        }
        let stdout = collect(stdout).await;
        let stderr = collect(stderr).await;
        let output = Output {
            status,
            stdout_truncated: stdout.truncated(),
            stderr_truncated: stderr.truncated(),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
            elapsed: started.elapsed(),
        };
        tracing::debug!(description = %self.description, status = %describe_status(status), elapsed_ms = output.elapsed.as_millis() as u64, "finished");
        Ok(output)
    }

    fn spawn_error(&self, source: std::io::Error) -> Error {
        let program = self.program.to_string_lossy().into_owned();
        let description = self.description.clone();
        match (&self.cwd, source.kind()) {
            (Some(dir), std::io::ErrorKind::NotFound) if !dir.is_dir() => Error::Spawn {
                description,
                program,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("working directory {} does not exist", dir.display()),
                ),
            },
            (_, std::io::ErrorKind::NotFound) => Error::NotFound {
                description,
                program,
            },
            _ => Error::Spawn {
                description,
                program,
                source,
            },
        }
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            description: self.description.clone(),
            program: self.program.to_string_lossy().into_owned(),
            source,
        }
    }
}

/// A child's process group, killed when dropped unless it is already gone.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) takes plain integers and has no memory effects; a negative pid
            // addresses the process group the child leads (it was spawned with process_group(0)).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    log: Option<Arc<Mutex<File>>>,
) -> CappedBuffer {
    let mut buffer = CappedBuffer::new(cap);
    let Some(mut pipe) = pipe else { return buffer };
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buffer.push(&chunk[..n]);
        if let Some(mut file) = log.as_ref().and_then(|log| log.lock().ok()) {
            let _ = file.write_all(&chunk[..n]);
        }
    }
    buffer
}

/// Waits briefly for a reader; a grandchild that escaped the group may hold the pipe open.
async fn collect(reader: tokio::task::JoinHandle<CappedBuffer>) -> CappedBuffer {
    match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(Ok(buffer)) => buffer,
        _ => CappedBuffer::new(0),
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended with an unknown status".to_owned(),
    }
}

/// The last `n` lines of `bytes`, lossily decoded.
pub(crate) fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh", "test shell").args(["-c", script])
    }

    /// A failing command's error, its Debug form and its log line name the variables it got
    /// but never their values, nor what it read on stdin.
    #[tokio::test]
    async fn values_of_the_environment_and_stdin_never_show() {
        let cmd = sh("cat >/dev/null; echo \"$STRIPE_KEY\" | wc -c; exit 3")
            .env("STRIPE_KEY", "sk_live_env_value_0123")
            .stdin_bytes(b"Authorization: Bearer stdin_value_4567\n".to_vec());
        let debug = format!("{cmd:?}");
        assert!(debug.contains("STRIPE_KEY"), "{debug}");
        assert!(debug.contains("<39 bytes>"), "{debug}");
        let err = cmd.run().await.unwrap_err();
        for text in [debug, err.to_string(), format!("{err:?}"), cmd.display()] {
            for value in ["sk_live_env_value_0123", "stdin_value_4567"] {
                assert!(!text.contains(value), "{value} shows in {text}");
            }
        }
        assert!(err.to_string().contains("exited with code 3"), "{err}");
    }

    #[tokio::test]
    async fn captures_stdout_and_stderr() {
        let out = sh("echo out; echo err >&2").run().await.unwrap();
        assert_eq!(out.stdout_text(), "out\n");
        assert_eq!(out.stderr_text(), "err\n");
    }

    #[tokio::test]
    async fn environment_is_clean_except_the_allow_list() {
        let leaked = std::env::var_os("HOME").is_some();
        assert!(leaked, "the test expects HOME in the parent environment");
        let out = Cmd::new("env", "print the environment")
            .env("EXPLICIT", "1")
            .run()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .stdout_text()
            .lines()
            .map(|l| l.split('=').next().unwrap().to_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["EXPLICIT", "LC_ALL", "PATH"]);

        let out = Cmd::new("env", "print the environment")
            .pass_env("HOME")
            .run()
            .await
            .unwrap();
        assert!(out.stdout_text().lines().any(|l| l.starts_with("HOME=")));
    }

    #[tokio::test]
    async fn output_cap_holds() {
        let out = sh("head -c 5000000 /dev/zero | tr '\\0' x; head -c 3000000 /dev/zero >&2")
            .output_cap(4096)
            .run()
            .await
            .unwrap();
        assert!(out.stdout_truncated && out.stderr_truncated);
        assert!(out.stdout.len() < 4096 + 64, "{}", out.stdout.len());
        assert!(out.stderr.len() < 4096 + 64, "{}", out.stderr.len());
    }

    #[tokio::test]
    async fn timeout_kills_a_group_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!(
            "trap '' TERM; sleep 300 & echo $! > {}; wait",
            pidfile.display()
        );
        let started = Instant::now();
        let err = sh(&script)
            .timeout(Duration::from_millis(500))
            .kill_grace(Duration::from_millis(300))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("timed out after 0.5s"), "{err}");
        // Bounded by the timeout and grace, far from the sleep's 300 s.
        assert!(started.elapsed() < Duration::from_secs(30));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn dropping_a_running_command_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let cmd = sh(&script);
        let _ = tokio::time::timeout(Duration::from_millis(500), cmd.run()).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "child {pid} survived the drop");
    }

    /// Polls until `pid` is gone or a zombie; true if so within 10 s.
    async fn gone(pid: i32) -> bool {
        for _ in 0..200 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap()
                        .trim_start()
                        .starts_with('Z') =>
                {
                    return true;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let err = Cmd::new("definitely-not-installed-xyz", "check the frobnicator")
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            "check the frobnicator: `definitely-not-installed-xyz` was not found on PATH; install it or fix PATH"
        );
    }

    #[tokio::test]
    async fn failure_carries_description_status_and_stderr_tail() {
        let script = "for i in $(seq 1 100); do echo line$i >&2; done; exit 3";
        let err = sh(script).run().await.unwrap_err();
        let Error::Failed {
            code,
            stderr_tail,
            description,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*code, Some(3));
        assert_eq!(description, "test shell");
        assert_eq!(stderr_tail.lines().count(), TAIL_LINES);
        assert!(stderr_tail.ends_with("line100"));
        assert!(err.to_string().contains("exited with code 3"));
    }

    #[tokio::test]
    async fn stdin_and_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let out = Cmd::new("cat", "echo stdin")
            .stdin_bytes("secret-from-stdin")
            .log_to(&log)
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "secret-from-stdin");
        assert_eq!(std::fs::read_to_string(log).unwrap(), "secret-from-stdin");
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let cmd = Cmd::new("git", "d").args(["fetch", "--depth=1", "it's here", ""]);
        assert_eq!(cmd.display(), r"git fetch --depth=1 'it'\''s here' ''");
    }
}
