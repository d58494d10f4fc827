//! Retries of transient failures: a git host or network that hiccups, a Docker daemon that
//! restarts. Up to 3 retries with exponential backoff and jitter. What the app's own code causes
//! (a failing build step, a missing repository, a refused credential) is never retried: it
//! would fail the same way, only later.
//!
//! GitHub API calls retry in preview-github's client; this covers the git and Docker CLIs.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The wait before the first retry, before jitter.
    pub base: Duration,
    /// The longest wait, before jitter.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries (for tests that want a failure at once).
    pub fn none() -> Self {
        Self {
            retries: 0,
            ..Self::default()
        }
    }

    /// The waits: `base · 2ⁿ` capped at `max`, each plus a random jitter of up to itself, so
    /// retries of several previews spread out.
    fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_max_times(self.retries as usize)
            .with_jitter()
    }

    /// Runs `op` until it succeeds, fails for good, or has been retried `retries` times.
    /// `transient` says which errors are worth another attempt; `go_on` is asked before each
    /// wait and stops the retries with the last error when it says no (a cancelled job).
    pub async fn run<T, E, Fut>(
        &self,
        what: &str,
        op: impl FnMut() -> Fut,
        transient: impl Fn(&E) -> bool,
        mut go_on: impl FnMut() -> bool,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        use backon::Retryable;
        op.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|err| transient(err) && go_on())
            .notify(|err, wait| {
                let message = err.to_string();
                tracing::warn!(
                    what,
                    wait_ms = wait.as_millis() as u64,
                    error = message.lines().next().unwrap_or_default(),
                    "transient failure; retrying"
                );
            })
            .await
    }
}

/// Whether git's message (the error with its stderr) is a network or server hiccup: DNS,
/// refused or reset connections, timeouts, a hung-up or 5xx server. Missing repositories,
/// refused credentials and unknown commits are not.
pub fn is_transient_git(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    const PERMANENT: &[&str] = &[
        "authentication failed",
        "repository not found",
        "does not appear to be a git repository",
        "not our ref",
        "couldn't find remote ref",
        "the requested url returned error: 4",
    ];
    const TRANSIENT: &[&str] = &[
        "could not resolve host",
        "could not resolve proxy",
        "temporary failure in name resolution",
        "connection timed out",
        "operation timed out",
        "connection refused",
        "connection reset",
        "failed to connect to",
        "early eof",
        "rpc failed",
        "the remote end hung up unexpectedly",
        "unexpected disconnect while reading sideband packet",
        "empty reply from server",
        "transfer closed with outstanding read data remaining",
        "gnutls_handshake() failed",
        "ssl_error_syscall",
        "http/2 stream",
        "the requested url returned error: 5",
    ];
    !PERMANENT.iter().any(|p| m.contains(p)) && TRANSIENT.iter().any(|t| m.contains(t))
}

/// Whether a Docker or Compose message is the daemon or its connection hiccuping (unreachable,
/// reset, timed out), not the build or the app failing. A build step that exits non-zero is
/// the app's own failure, even if its output mentions the network.
pub fn is_transient_docker(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    const PERMANENT: &[&str] = &[
        "did not complete successfully",
        "exit code:",
        "executor failed running",
        "returned a non-zero code",
    ];
    const TRANSIENT: &[&str] = &[
        "cannot connect to the docker daemon",
        "is the docker daemon running",
        "error during connect",
        "connection reset",
        "connection refused",
        "broken pipe",
        "tls handshake timeout",
        "i/o timeout",
        "context deadline exceeded",
        "unexpected eof",
        "503 service unavailable",
    ];
    !PERMANENT.iter().any(|p| m.contains(p)) && TRANSIENT.iter().any(|t| m.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn git_network_errors_are_transient() {
        for message in [
            "fetch the pull request's head: `git fetch` exited with code 128\nfatal: unable to access 'https://github.com/a/b.git/': Could not resolve host: github.com",
            "fatal: unable to access 'https://github.com/a/b.git/': Failed to connect to github.com port 443 after 130000 ms: Connection timed out",
            "error: RPC failed; curl 56 GnuTLS recv error (-54): Error in the pull function.\nfatal: early EOF",
            "fatal: the remote end hung up unexpectedly",
            "fatal: unable to access 'http://127.0.0.1:9/a/b.git/': The requested URL returned error: 503",
            "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
            "fatal: unable to access 'https://h/a.git/': Recv failure: Connection reset by peer",
        ] {
            assert!(is_transient_git(message), "{message}");
        }
    }

    #[test]
    fn git_errors_of_the_repository_or_credentials_are_not_transient() {
        for message in [
            "fatal: repository 'https://github.com/a/b.git/' not found",
            "remote: Repository not found.\nfatal: repository 'https://github.com/a/b.git/' not found",
            "fatal: Authentication failed for 'https://github.com/a/b.git/'",
            "fatal: '/tmp/x/a/b.git' does not appear to be a git repository",
            "fatal: couldn't find remote ref refs/pull/2/head",
            "error: Server does not allow request for unadvertised object 0123",
            "fatal: unable to access 'https://h/a.git/': The requested URL returned error: 403",
            "invalid pull request head: refs/pull/2/head is at 1 now, not 2; a newer push supersedes this one",
            // Our own timeout: retrying a 5-minute fetch three times is worse than failing.
            "fetch the pull request's commit: `git fetch` timed out after 300s and was killed",
        ] {
            assert!(!is_transient_git(message), "{message}");
        }
    }

    #[test]
    fn docker_daemon_hiccups_are_transient() {
        for message in [
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            "error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.41/containers/json\": EOF",
            "read unix @->/var/run/docker.sock: read: connection reset by peer",
            "failed to resolve source metadata for docker.io/library/x: net/http: TLS handshake timeout",
            "dial tcp 10.0.0.1:443: i/o timeout",
        ] {
            assert!(is_transient_docker(message), "{message}");
        }
    }

    #[test]
    fn build_failures_are_not_transient_even_when_they_mention_the_network() {
        for message in [
            "failed to solve: process \"/bin/sh -c npm ci\" did not complete successfully: exit code: 1",
            "target app: failed to solve: process \"/bin/sh -c pip install -r requirements.txt\" did not complete successfully: exit code: 1\nERROR: connection reset by peer",
            "SyntaxError: invalid syntax",
            "service \"app\" refers to undefined volume data: invalid compose project",
            "",
        ] {
            assert!(!is_transient_docker(message), "{message}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_of_up_to_the_wait() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let waits: Vec<Duration> = p.backoff().build().collect();
            assert_eq!(waits.len(), 3, "three retries");
            for (wait, base_ms) in waits.iter().zip([500u64, 1000, 2000]) {
                let base = Duration::from_millis(base_ms);
                assert!(*wait >= base && *wait < base * 2, "{waits:?}");
            }
        }
        let long = RetryPolicy {
            retries: 8,
            ..RetryPolicy::default()
        };
        let last = long.backoff().build().last().unwrap();
        assert!(last >= Duration::from_secs(5) && last < Duration::from_secs(10));
    }

    /// The default schedule, a thousand times faster.
    fn quick() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            base: Duration::from_micros(500),
            max: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_three_times_then_gives_up() {
        let p = quick();
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r: Result<(), String> = p
            .run(
                "test",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("connection reset".to_owned())
                },
                |e: &String| e.contains("reset"),
                || true,
            )
            .await;
        assert_eq!(r, Err("connection reset".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 4, "one attempt and 3 retries");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_micros(3500), "{waited:?}");
    }

    #[tokio::test]
    async fn stops_at_success_at_a_permanent_error_and_when_told_to() {
        let p = quick();
        let calls = AtomicU32::new(0);
        let r: Result<u32, String> = p
            .run(
                "test",
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 2 {
                        Err("reset".to_owned())
                    } else {
                        Ok(n)
                    }
                },
                |_| true,
                || true,
            )
            .await;
        assert_eq!(r, Ok(2));

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), String> = p
            .run(
                "test",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("exit code: 1".to_owned())
                },
                |e: &String| !e.contains("exit code"),
                || true,
            )
            .await;
        assert_eq!(r, Err("exit code: 1".into()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a permanent error is not retried"
        );

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), String> = p
            .run(
                "test",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("reset".to_owned())
                },
                |_| true,
                || false,
            )
            .await;
        assert_eq!(r, Err("reset".into()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a cancelled job stops retrying"
        );
    }
}
