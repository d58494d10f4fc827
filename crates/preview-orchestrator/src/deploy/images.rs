//! The images phase: before any build starts, every image the preview needs
//! ([`preview_core::images::needed`]) is on this host, where Compose builds and (on one host)
//! runs it. When they all are, that costs one `docker image inspect` of all of them. A missing
//! one is pulled, transient failures retried; those that still cannot be had fail the deploy,
//! each named in the comment with who wants it and why, in one line, rather than somewhere in
//! the middle of a build's log.

use std::time::Duration;

use preview_core::images::NeededImages;
use preview_engine::docker;

use super::{DockerRunner, PhaseError, Stop, exec_tail, fail, short_reason, transient_docker};
use crate::feedback::MissingImage;
use crate::jobs::JobContext;

/// How long one pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

impl DockerRunner {
    /// Makes every image of `needed` present, pulling what is missing; fails the `images` phase
    /// naming each image that cannot be had.
    pub(super) async fn ensure_images(
        &self,
        needed: &NeededImages,
        ctx: &JobContext,
    ) -> Result<(), Stop> {
        for note in &needed.unchecked {
            tracing::info!(note = %note, "an image is not checked before the build");
        }
        let references: Vec<&str> = needed.images.iter().map(|i| i.reference.as_str()).collect();
        if references.is_empty() {
            return Ok(());
        }
        let present = self
            .settings
            .retry
            .run(
                "docker image inspect",
                || inspect(&references),
                transient_docker,
                || !ctx.is_cancelled(),
            )
            .await;
        match present {
            Ok(()) => return Ok(()),
            Err(preview_engine::Error::Exec(preview_exec::Error::Failed { .. })) => {}
            Err(e) => return Err(fail("images", short_reason(&e), exec_tail(&e))),
        }
        let mut missing = Vec::new();
        for image in &needed.images {
            ctx.checkpoint()?;
            if inspect(&[image.reference.as_str()]).await.is_ok() {
                continue;
            }
            let pulled = self
                .settings
                .retry
                .run(
                    "docker pull",
                    || pull(&image.reference),
                    transient_docker,
                    || !ctx.is_cancelled(),
                )
                .await;
            match pulled {
                Ok(()) => {
                    tracing::info!(image = %image.reference, "pulled an image the preview needs")
                }
                Err(e) => missing.push(MissingImage {
                    image: image.reference.clone(),
                    wanted_by: image.wanted_by_text(),
                    error: pull_error_gist(&e),
                }),
            }
        }
        ctx.checkpoint()?;
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(|m| format!("`{}`", m.image)).collect();
        let reason = format!(
            "{} cannot be had: {}",
            match missing.len() {
                1 => "1 image".to_owned(),
                n => format!("{n} images"),
            },
            names.join(", ")
        );
        Err(Stop::Failed(PhaseError {
            missing_images: missing,
            ..PhaseError::new("images", reason, "")
        }))
    }
}

/// Succeeds when every image of `references` is on this host.
async fn inspect(references: &[&str]) -> preview_engine::Result<()> {
    docker("check that the preview's images are here")
        .args(["image", "inspect", "--format", "{{.Id}}", "--"])
        .args(references)
        .run()
        .await?;
    Ok(())
}

async fn pull(reference: &str) -> preview_engine::Result<()> {
    docker("pull an image the preview needs")
        .args(["pull", "--quiet", "--", reference])
        .timeout(PULL_TIMEOUT)
        .run()
        .await?;
    Ok(())
}

/// Why a pull failed, in one line for the comment: Docker's last line of error, without its
/// prefix, said plainly when it is a common case.
fn pull_error_gist(error: &preview_engine::Error) -> String {
    let preview_engine::Error::Exec(exec) = error else {
        return short_reason(error);
    };
    if let preview_exec::Error::Timeout { timeout, .. } = exec {
        return format!("the pull did not finish within {} s", timeout.as_secs());
    }
    let stderr = exec.stderr_tail();
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    let message = line
        .trim_start_matches("Error response from daemon:")
        .trim_start_matches("Error:")
        .trim();
    let lower = message.to_ascii_lowercase();
    let gist = if lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("repository does not exist")
        || lower.contains("pull access denied")
    {
        "not found in the registry, or it needs a login".to_owned()
    } else if let Some(host) = unreachable_registry(message) {
        let cause = message.rsplit(": ").next().unwrap_or(message);
        format!("the registry {host} cannot be reached: {cause}")
    } else if message.is_empty() {
        short_reason(error)
    } else {
        message.to_owned()
    };
    gist.chars().take(300).collect()
}

/// The registry host of a failed connection in Docker's message, e.g. `registry-1.docker.io`
/// in `Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io ...`.
fn unreachable_registry(message: &str) -> Option<&str> {
    let lower = message.to_ascii_lowercase();
    let network = [
        "dial tcp",
        "no such host",
        "connection refused",
        "i/o timeout",
        "tls handshake timeout",
        "network is unreachable",
    ];
    if !network.iter().any(|n| lower.contains(n)) {
        return None;
    }
    let url = message.split("://").nth(1)?;
    let host = url.split(['/', '"']).next()?;
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> preview_engine::Error {
        preview_engine::Error::Exec(preview_exec::Error::Failed {
            description: "pull an image the preview needs".into(),
            command: "docker pull --quiet -- x".into(),
            status: "exited with code 1".into(),
            code: Some(1),
            stdout_tail: String::new(),
            stderr_tail: stderr.into(),
        })
    }

    #[test]
    fn a_pull_error_is_told_in_one_plain_line() {
        for (stderr, gist) in [
            (
                "Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host\n",
                "the registry registry-1.docker.io cannot be reached: no such host",
            ),
            (
                "Error response from daemon: Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
                "the registry 127.0.0.1:5999 cannot be reached: connection refused",
            ),
            (
                "Error response from daemon: manifest for postgres:99 not found: manifest unknown: manifest unknown",
                "not found in the registry, or it needs a login",
            ),
            (
                "Error response from daemon: pull access denied for acme/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                "not found in the registry, or it needs a login",
            ),
            (
                "some\n\nError: something else entirely  \n",
                "something else entirely",
            ),
        ] {
            assert_eq!(pull_error_gist(&failed(stderr)), gist, "{stderr}");
        }
        assert!(pull_error_gist(&failed("")).starts_with("pull an image the preview needs"));
        assert_eq!(pull_error_gist(&failed(&"x".repeat(1000))).len(), 300);
        let timeout = preview_engine::Error::Exec(preview_exec::Error::Timeout {
            description: "pull".into(),
            command: "docker pull".into(),
            timeout: PULL_TIMEOUT,
            stderr_tail: String::new(),
        });
        assert_eq!(
            pull_error_gist(&timeout),
            "the pull did not finish within 600 s"
        );
    }
}
