//! Fetching a pull request's code with the git CLI: one commit at depth 1, checked out detached
//! at the exact sha and verified, into a fresh directory that then replaces the old checkout.
//!
//! A token for private repositories reaches git only as an `http.extraHeader` in the environment
//! of the fetch command: never in argv, the URL, the logs or the checkout's `.git/config`.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Cmd, Error, Result};

/// What to fetch, and where to.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The base repository: `https://…/owner/name.git` (or `file://` in tests).
    pub url: String,
    /// The PR number; `refs/pull/{pr}/head` is the fallback when the sha cannot be fetched alone.
    pub pr: u64,
    /// The commit to check out (40 hex digits).
    pub sha: String,
    /// The checkout directory; replaced atomically.
    pub dest: PathBuf,
    /// Token for private repositories.
    pub token: Option<String>,
    /// Time allowed for each git command.
    pub timeout: Duration,
}

/// Fetches `req.sha` into a new checkout that replaces `req.dest`.
pub async fn fetch_pull_request(req: &FetchRequest) -> Result<()> {
    validate(req)?;
    let parent = req.dest.parent().ok_or_else(|| Error::InvalidArgument {
        what: "checkout directory",
        reason: format!("{} has no parent", req.dest.display()),
    })?;
    std::fs::create_dir_all(parent).map_err(|source| io("create the work dir", source))?;
    let staging = tempfile_dir(parent, ".checkout-")?;
    let result = fetch_into(req, &staging).await;
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    replace_dir(&staging, &req.dest)
}

/// `git fetch --depth 1` of one `what` (a sha or a ref) from the PR's repository, without tags or
/// submodules; the token, if any, goes in the environment only.
async fn shallow_fetch(
    req: &FetchRequest,
    dir: &Path,
    description: &str,
    what: &str,
) -> Result<()> {
    with_token(git(req, dir, description), req.token.as_deref())
        .args([
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--no-recurse-submodules",
            "--",
            &req.url,
            what,
        ])
        .run()
        .await
        .map(drop)
}

async fn fetch_into(req: &FetchRequest, dir: &Path) -> Result<()> {
    git(req, dir, "create an empty repository for the checkout")
        .args(["init", "--quiet"])
        .run()
        .await?;
    let by_sha = shallow_fetch(req, dir, "fetch the pull request's commit", &req.sha).await;
    if let Err(e @ Error::Timeout { .. }) = by_sha {
        // A server that does not answer in time will not answer the fallback either; trying it
        // would double the time the deploy waits.
        return Err(e);
    }
    if by_sha.is_err() {
        // Servers that refuse a bare sha still serve the PR's ref.
        let refspec = format!("refs/pull/{}/head", req.pr);
        shallow_fetch(req, dir, "fetch the pull request's head", &refspec).await?;
    }
    git(req, dir, "check out the pull request's commit")
        .args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            "FETCH_HEAD",
        ])
        .run()
        .await?;
    let head = git(req, dir, "read the checked-out commit")
        .args(["rev-parse", "HEAD"])
        .run()
        .await?
        .stdout_text();
    if head.trim() != req.sha {
        return Err(Error::InvalidArgument {
            what: "pull request head",
            reason: format!(
                "refs/pull/{}/head is at {} now, not {}; a newer push supersedes this one",
                req.pr,
                head.trim(),
                req.sha
            ),
        });
    }
    Ok(())
}

/// A git command in `dir` with no user or system config, no prompts and no hooks.
fn git(req: &FetchRequest, dir: &Path, description: &str) -> Cmd {
    Cmd::new("git", description)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "submodule.recurse=false",
            "-C",
        ])
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .timeout(req.timeout)
}

/// The token as an Authorization header, in the environment of this one command.
fn with_token(cmd: Cmd, token: Option<&str>) -> Cmd {
    match token {
        Some(token) => cmd
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!(
                    "Authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("x-access-token:{token}").as_bytes())
                ),
            ),
        None => cmd,
    }
}

fn validate(req: &FetchRequest) -> Result<()> {
    let bad = |what, reason: String| Err(Error::InvalidArgument { what, reason });
    if req.sha.len() != 40
        || !req
            .sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return bad(
            "commit sha",
            format!("{:?} is not 40 lowercase hex digits", req.sha),
        );
    }
    if req.pr == 0 || req.pr > 1 << 31 {
        return bad("pull request number", req.pr.to_string());
    }
    let scheme_ok = ["https://", "http://", "file://"]
        .iter()
        .any(|s| req.url.starts_with(s));
    if !scheme_ok || req.url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad(
            "repository URL",
            format!("{:?} must be an https:// (or file://) URL", req.url),
        );
    }
    if req.url.contains('@') {
        return bad(
            "repository URL",
            "credentials do not belong in the URL; use the token setting".into(),
        );
    }
    Ok(())
}

fn tempfile_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    for n in 0..1000u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = parent.join(format!("{prefix}{}-{nanos:x}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create a staging directory", e)),
        }
    }
    Err(io(
        "create a staging directory",
        std::io::Error::other("too many attempts"),
    ))
}

/// Puts the `staging` checkout at `dest`. An existing checkout is swapped out in one atomic step,
/// so a reader of `dest` sees the old tree or the new one, never neither; then it is removed.
fn replace_dir(staging: &Path, dest: &Path) -> Result<()> {
    if !dest.exists() {
        return std::fs::rename(staging, dest).map_err(|e| io("put the new checkout in place", e));
    }
    crate::fs::exchange(staging, dest).map_err(|e| io("swap the new checkout into place", e))?;
    // `staging` now holds the old checkout.
    let _ = std::fs::remove_dir_all(staging);
    Ok(())
}

fn io(description: &str, source: std::io::Error) -> Error {
    Error::Io {
        description: description.to_owned(),
        program: "git".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sh(dir: &Path, args: &[&str]) -> String {
        Cmd::new("git", "test git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .run()
            .await
            .unwrap()
            .stdout_text()
            .trim()
            .to_owned()
    }

    /// A "GitHub" repo with a PR ref whose head is the second commit.
    async fn origin() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        sh(repo, &["init", "--quiet", "-b", "main"]).await;
        std::fs::write(repo.join("app.txt"), "v1").unwrap();
        sh(repo, &["add", "."]).await;
        sh(repo, &["commit", "--quiet", "-m", "one"]).await;
        let first = sh(repo, &["rev-parse", "HEAD"]).await;
        std::fs::write(repo.join("app.txt"), "v2").unwrap();
        sh(repo, &["commit", "--quiet", "-am", "two"]).await;
        let second = sh(repo, &["rev-parse", "HEAD"]).await;
        sh(repo, &["update-ref", "refs/pull/7/head", &second]).await;
        sh(repo, &["reset", "--quiet", "--hard", &first]).await;
        (dir, first, second)
    }

    fn request(url: String, sha: &str, dest: PathBuf, token: Option<&str>) -> FetchRequest {
        FetchRequest {
            url,
            pr: 7,
            sha: sha.to_owned(),
            dest,
            token: token.map(str::to_owned),
            timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn fetches_the_exact_sha_and_replaces_the_old_checkout() {
        let (origin, first, second) = origin().await;
        let url = format!("file://{}", origin.path().display());
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("checkout");
        fetch_pull_request(&request(url.clone(), &first, dest.clone(), None))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("app.txt")).unwrap(), "v1");
        fetch_pull_request(&request(url, &second, dest.clone(), Some("ghs_SECRET123")))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("app.txt")).unwrap(), "v2");
        assert_eq!(sh(&dest, &["rev-parse", "HEAD"]).await, second);
        let shallow = sh(&dest, &["rev-parse", "--is-shallow-repository"]).await;
        assert_eq!(shallow, "true");
        let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
        assert!(
            !config.contains("SECRET") && !config.contains("Authorization"),
            "{config}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["checkout"], "staging and old dirs are gone");
    }

    #[tokio::test]
    async fn a_sha_that_is_not_the_head_fails_and_keeps_the_old_checkout() {
        let (origin, first, _second) = origin().await;
        let url = format!("file://{}", origin.path().display());
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("checkout");
        fetch_pull_request(&request(url.clone(), &first, dest.clone(), None))
            .await
            .unwrap();
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let err = fetch_pull_request(&request(url, missing, dest.clone(), Some("ghs_SECRET123")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("newer push"), "{err}");
        let report = format!("{err} {err:?} {}", err.stderr_tail());
        assert!(!report.contains("SECRET"), "the token leaked: {report}");
        assert_eq!(std::fs::read_to_string(dest.join("app.txt")).unwrap(), "v1");
    }

    #[test]
    fn token_goes_to_the_environment_only() {
        let req = request(
            "https://github.com/o/r.git".into(),
            &"a".repeat(40),
            "/tmp/x/c".into(),
            Some("ghs_SECRET"),
        );
        let cmd = with_token(
            git(&req, Path::new("/tmp/x"), "fetch"),
            req.token.as_deref(),
        )
        .args(["fetch", "--", &req.url, &req.sha]);
        assert!(cmd.argv().all(|a| !a.to_string_lossy().contains("SECRET")));
        assert!(!cmd.display().contains("SECRET"));
        let header = cmd
            .envs()
            .get(std::ffi::OsStr::new("GIT_CONFIG_VALUE_0"))
            .unwrap();
        assert_eq!(
            header,
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hzX1NFQ1JFVA=="
        );
    }

    #[test]
    fn hostile_requests_are_refused_before_git_runs() {
        let dest = PathBuf::from("/tmp/x/c");
        for (url, sha) in [
            ("https://github.com/o/r.git", "HEAD"),
            (
                "https://github.com/o/r.git",
                "--upload-pack=evil0000000000000000000000000000000",
            ),
            ("ext::sh -c evil", &"a".repeat(40)),
            ("https://user:pw@github.com/o/r.git", &"a".repeat(40)),
            ("-uhttps://x", &"a".repeat(40)),
        ] {
            assert!(
                validate(&request(url.into(), sha, dest.clone(), None)).is_err(),
                "{url} {sha}"
            );
        }
    }
}
