//! Metrics (Prometheus text at `/metrics`) and logs (stdout and daily files).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Webhook deliveries, by `event` and `outcome`.
pub const WEBHOOKS: &str = "preview_webhooks_total";
/// Jobs queued or waiting for a build slot.
pub const QUEUE_DEPTH: &str = "preview_queue_depth";
/// Finished jobs, by `kind` and `outcome`.
pub const JOBS: &str = "preview_jobs_total";
/// Job and phase durations, by `phase` (`deploy`, `teardown`, or a runtime phase).
pub const JOB_DURATION: &str = "preview_job_duration_seconds";
/// Previews running.
pub const LIVE_PREVIEWS: &str = "preview_live_previews";
/// Store writes (each one atomic: temp file, fsync, rename, fsync of the directory).
pub const STORE_WRITES: &str = "preview_store_writes_total";
/// Store write durations.
pub const STORE_WRITE_DURATION: &str = "preview_store_write_seconds";
/// Size of the last store write.
pub const STORE_BYTES: &str = "preview_store_bytes";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide metrics recorder (once) and returns the handle that renders it.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(JOB_DURATION.into()),
                    &[
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    ],
                )
                .expect("non-empty buckets")
                .set_buckets_for_metric(
                    Matcher::Full(STORE_WRITE_DURATION.into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ],
                )
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a test harness); ours then only renders.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_counter!(WEBHOOKS, "Webhook deliveries by event and outcome");
            metrics::describe_gauge!(QUEUE_DEPTH, "Jobs queued or waiting for a build slot");
            metrics::describe_counter!(JOBS, "Finished jobs by kind and outcome");
            metrics::describe_histogram!(JOB_DURATION, "Job and phase durations in seconds");
            metrics::describe_gauge!(LIVE_PREVIEWS, "Previews running");
            metrics::describe_counter!(STORE_WRITES, "Atomic writes of the deployment store");
            metrics::describe_histogram!(STORE_WRITE_DURATION, "Store write durations in seconds");
            metrics::describe_gauge!(STORE_BYTES, "Size of the deployment store file in bytes");
            metrics::gauge!(QUEUE_DEPTH).set(0.0);
            handle
        })
        .clone()
}

/// Drains histogram samples now and then, so memory stays flat when nobody scrapes.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Counts a webhook delivery. `event` is mapped onto a fixed set so labels stay bounded.
pub fn webhook(event: &str, outcome: &'static str) {
    let event: &'static str = match event {
        "ping" => "ping",
        "pull_request" => "pull_request",
        "" => "none",
        _ => "other",
    };
    metrics::counter!(WEBHOOKS, "event" => event, "outcome" => outcome).increment(1);
}

pub(crate) fn set_queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn set_live_previews(n: usize) {
    metrics::gauge!(LIVE_PREVIEWS).set(n as f64);
}

pub(crate) fn job_finished(kind: &'static str, outcome: &'static str, took: Option<Duration>) {
    metrics::counter!(JOBS, "kind" => kind, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        metrics::histogram!(JOB_DURATION, "phase" => kind).record(took.as_secs_f64());
    }
}

pub(crate) fn store_write(took: Duration, bytes: usize) {
    metrics::counter!(STORE_WRITES).increment(1);
    metrics::histogram!(STORE_WRITE_DURATION).record(took.as_secs_f64());
    metrics::gauge!(STORE_BYTES).set(bytes as f64);
}

pub(crate) fn record_phase(phase: &'static str, took: Duration) {
    metrics::histogram!(JOB_DURATION, "phase" => phase).record(took.as_secs_f64());
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flushes the log and stops its writer when dropped: hold it until exit.
pub struct LogGuards(LogSink);

impl Drop for LogGuards {
    fn drop(&mut self) {
        let shared = &self.0.shared;
        shared.stop.store(true, Ordering::Release);
        shared.wake.notify_one();
        if let Some(writer) = shared
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = writer.join();
        }
    }
}

/// Where log lines go: a shared buffer that a writer thread empties into stdout and the daily
/// file every [`LogSink::EVERY`], or at once when it holds [`LogSink::BATCH`] bytes. A busy
/// orchestrator pays a copy per line and no thread wake-up; each line is formatted once.
#[derive(Clone)]
struct LogSink {
    shared: std::sync::Arc<SinkShared>,
}

struct SinkShared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    stop: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogSink {
    const EVERY: Duration = Duration::from_millis(50);
    const BATCH: usize = 64 * 1024;

    fn start(mut file: tracing_appender::rolling::RollingFileAppender) -> std::io::Result<Self> {
        let shared = std::sync::Arc::new(SinkShared {
            pending: Mutex::new(Vec::with_capacity(Self::BATCH)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let shared = writer_shared;
                let mut batch = Vec::with_capacity(Self::BATCH);
                loop {
                    let stop = {
                        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                        if pending.len() < Self::BATCH && !shared.stop.load(Ordering::Acquire) {
                            pending = shared
                                .wake
                                .wait_timeout(pending, Self::EVERY)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        std::mem::swap(&mut *pending, &mut batch);
                        shared.stop.load(Ordering::Acquire)
                    };
                    if !batch.is_empty() {
                        // A failing stdout (closed pipe) must not cost the file its lines.
                        let _ = file.write_all(&batch).and_then(|()| file.flush());
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout.write_all(&batch).and_then(|()| stdout.flush());
                        batch.clear();
                    }
                    if stop {
                        return;
                    }
                }
            })?;
        *shared.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        Ok(Self { shared })
    }
}

impl std::io::Write for LogSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(line);
        if pending.len() >= Self::BATCH {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Sets up logging to stdout and to `{dir}/orchestrator.YYYY-MM-DD.log`, rotated daily, keeping
/// `retention` files. `level` is an env-filter directive (`info`, `debug`, `preview=debug`...).
pub fn init_logging(
    level: &str,
    format: LogFormat,
    dir: &Path,
    retention: usize,
) -> anyhow::Result<LogGuards> {
    use anyhow::Context;
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("invalid setting LOG_LEVEL: {level:?}"))?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("invalid setting LOGS_DIR: cannot create {}", dir.display()))?;
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("orchestrator")
        .filename_suffix("log")
        .max_log_files(retention.max(1))
        .build(dir)
        .with_context(|| {
            format!(
                "invalid setting LOGS_DIR: cannot write in {}",
                dir.display()
            )
        })?;
    let writer = LogSink::start(file).context("starting the log writer")?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer.clone()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer.clone()),
            )
            .try_init(),
    }
    .context("a logger is already installed")?;
    Ok(LogGuards(writer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_sink_writes_every_line_in_order_by_exit() {
        let dir = tempfile::tempdir().unwrap();
        let file = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::NEVER)
            .filename_prefix("sink")
            .build(dir.path())
            .unwrap();
        let sink = LogSink::start(file).unwrap();
        let mut writer = sink.clone();
        let lines: Vec<String> = (0..5000).map(|n| format!("line {n}\n")).collect();
        for line in &lines {
            writer.write_all(line.as_bytes()).unwrap();
        }
        drop(LogGuards(sink));
        let written = std::fs::read_to_string(dir.path().join("sink")).unwrap();
        assert_eq!(written, lines.concat());
    }
}
