use std::time::{Duration, Instant};

use preview_core::model::ReadyWhen;

use crate::{Error, Result, project_containers};

/// How to wait for a preview to answer its health path.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Delay before the first poll; later polls back off from it.
    pub first_poll: Duration,
    /// The interval the back-off stops at (the seed's 5 s).
    pub max_interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// A strict path that keeps answering the same 4xx this long, from a server that is plainly
    /// up, fails at once: waiting out the timeout would not change the answer.
    pub settled_4xx: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            first_poll: Duration::from_millis(20),
            max_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            settled_4xx: Duration::from_secs(3),
        }
    }
}

impl HealthPolicy {
    /// The wait before poll number `n` (0-based): quick at first, growing 30% a poll to the cap,
    /// so a fast app is seen within a few tens of ms and a slow one costs few requests.
    pub fn interval(&self, n: u32) -> Duration {
        let grown = self.first_poll.as_secs_f64() * 1.3f64.powi(n.min(64) as i32);
        Duration::from_secs_f64(grown.min(self.max_interval.as_secs_f64()))
    }
}

/// How often [`wait_healthy`] looks for a stopped container between polls.
const CONTAINER_CHECK_EVERY: Duration = Duration::from_millis(300);

/// Polls `url` until its answer is one `ready_when` accepts, failing fast when a container of
/// `project` stops or when a strict path settles on a 4xx. A 5xx keeps polling until the
/// timeout: apps warm up. Returns how long it took.
pub async fn wait_healthy(
    url: &str,
    project: &str,
    ready_when: ReadyWhen,
    policy: HealthPolicy,
) -> Result<Duration> {
    wait_healthy_service(url, project, None, ready_when, policy).await
}

/// [`wait_healthy`], failing fast only when a container of `service` (every service when
/// `None`) stops: an update waits for its new app while the serving containers go on as they
/// are.
pub async fn wait_healthy_service(
    url: &str,
    project: &str,
    service: Option<&str>,
    ready_when: ReadyWhen,
    policy: HealthPolicy,
) -> Result<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| Error::Parse(format!("building the health client: {e}")))?;
    let mut last = String::from("no answer yet");
    // The 4xx a strict path keeps answering, and since when.
    let mut same_4xx: Option<(u16, Instant)> = None;
    let mut checked = started;
    for n in 0.. {
        tokio::time::sleep(policy.interval(n)).await;
        match client.get(url).send().await {
            Ok(answer) if ready_when.accepts(answer.status().as_u16()) => {
                return Ok(started.elapsed());
            }
            Ok(answer) => {
                let status = answer.status().as_u16();
                last = format!("HTTP {}", answer.status());
                if (400..500).contains(&status) {
                    let since = match same_4xx {
                        Some((s, since)) if s == status => since,
                        _ => Instant::now(),
                    };
                    same_4xx = Some((status, since));
                    if since.elapsed() >= policy.settled_4xx {
                        return Err(Error::WrongStatus {
                            url: url.to_owned(),
                            status,
                            for_secs: since.elapsed().as_secs_f64(),
                        });
                    }
                } else {
                    same_4xx = None;
                }
            }
            Err(err) => {
                last = describe(&err);
                same_4xx = None;
            }
        }
        // `docker ps` costs tens of ms: look for a stopped container every so often, not after
        // every poll, so quick polls stay quick.
        if checked.elapsed() < CONTAINER_CHECK_EVERY && started.elapsed() < policy.timeout {
            continue;
        }
        checked = Instant::now();
        if let Some(stopped) = project_containers(project)
            .await?
            .into_iter()
            .find(|c| c.has_stopped() && service.is_none_or(|s| c.service == s))
        {
            return Err(Error::ContainerExited {
                container: stopped.name,
                state: stopped.state,
                exit_code: stopped.exit_code,
            });
        }
        if started.elapsed() >= policy.timeout {
            break;
        }
    }
    Err(Error::Unhealthy {
        url: url.to_owned(),
        accepted: ready_when.describe(),
        timeout: policy.timeout,
        last,
    })
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "connection refused".into()
    } else if err.is_timeout() {
        "request timed out".into()
    } else {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_start_quick_and_cap_at_the_maximum() {
        let policy = HealthPolicy::default();
        assert_eq!(policy.interval(0), Duration::from_millis(20));
        assert!(policy.interval(1) > policy.interval(0));
        assert_eq!(policy.interval(40), Duration::from_secs(5));
        assert_eq!(policy.interval(u32::MAX), Duration::from_secs(5));
        let first_second: u32 = (0..)
            .scan(Duration::ZERO, |t, n| {
                *t += policy.interval(n);
                (*t < Duration::from_secs(1)).then_some(1)
            })
            .sum();
        assert!(
            first_second >= 6,
            "{first_second} polls in the first second"
        );
    }
}
