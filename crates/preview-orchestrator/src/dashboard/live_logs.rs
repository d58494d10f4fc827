//! A preview's live logs as Server-Sent Events: `docker logs -f` of each of its running
//! containers, through the project's one subprocess wrapper, with colour codes stripped and the
//! repository's secret values redacted before a line leaves the server.
//!
//! The wrapper captures output rather than streaming it, so each `docker logs -f` appends to a
//! private temporary file (`Cmd::log_to`) that this module follows. Dropping the stream (the
//! browser left) drops the command's future, which kills its process group.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use preview_core::id::PreviewId;
use tokio::sync::mpsc;

use crate::repo_secrets::RepoSecrets;

/// Lines of history each container's stream starts with.
pub const TAIL_LINES: usize = 200;
/// At most this many containers are followed.
const MAX_CONTAINERS: usize = 8;
/// How often the followed files are read.
const POLL: Duration = Duration::from_millis(200);
/// A stream ends after this long; the browser's EventSource reconnects on its own.
const MAX_STREAM: Duration = Duration::from_secs(30 * 60);
/// The longest line sent; longer ones are cut.
const MAX_LINE: usize = 8 * 1024;

/// What to follow.
pub struct LiveLogs {
    /// The docker binary.
    pub docker: PathBuf,
    /// The preview (its Compose project).
    pub id: PreviewId,
    /// Values to redact.
    pub secrets: RepoSecrets,
    /// Where the temporary files go.
    pub scratch: PathBuf,
    /// The stream's place among the few allowed at once; freed when the stream ends.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

/// The running containers of a Compose project: id and service name.
pub async fn containers(
    docker: &Path,
    project: &PreviewId,
) -> preview_exec::Result<Vec<(String, String)>> {
    let out = preview_exec::compose::with_docker_env(preview_exec::Cmd::new(
        docker,
        "list a preview's running containers",
    ))
    .args([
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.as_str()),
        "--format",
        "{{.ID}}\t{{.Label \"com.docker.compose.service\"}}",
    ])
    .timeout(Duration::from_secs(10))
    .run()
    .await?
    .stdout_text();
    let mut list: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(id, service)| (id.to_owned(), service.to_owned()))
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list.truncate(MAX_CONTAINERS);
    Ok(list)
}

/// Cleans one line for the page: no colour codes, no secret values, no control characters, at
/// most [`MAX_LINE`] bytes.
pub fn clean_line(line: &str, secrets: &RepoSecrets) -> String {
    let stripped = preview_engine::build_log::strip_ansi(line);
    let redacted = if secrets.is_empty() {
        stripped
    } else {
        secrets.redact(&stripped)
    };
    let mut clean: String = redacted
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect();
    if clean.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
        clean.push_str(" …");
    }
    clean
}

impl LiveLogs {
    /// The event stream: one `data:` event per line, `event: info` for notes (no containers,
    /// a container's log ended), and `event: end` when every followed log has ended.
    pub fn stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        let (tx, rx) = mpsc::channel::<Event>(256);
        tokio::spawn(async move {
            let LiveLogs {
                docker,
                id,
                secrets,
                scratch,
                permit,
            } = self;
            let _permit = permit;
            let follow = Follow {
                docker,
                id,
                secrets,
                scratch,
            };
            tokio::select! {
                () = follow.run(tx.clone()) => {}
                () = tx.closed() => {}
                () = tokio::time::sleep(MAX_STREAM) => {}
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (Ok(event), rx))
        })
    }
}

/// What one stream follows, once it holds its permit.
struct Follow {
    docker: PathBuf,
    id: PreviewId,
    secrets: RepoSecrets,
    scratch: PathBuf,
}

impl Follow {
    async fn run(self, tx: mpsc::Sender<Event>) {
        let info = |text: &str| Event::default().event("info").data(text);
        let containers = match containers(&self.docker, &self.id).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(preview = %self.id, error = %e, "listing a preview's containers for its live logs failed");
                let _ = tx.send(info("Docker did not answer; no live logs")).await;
                let _ = tx.send(Event::default().event("end").data("")).await;
                return;
            }
        };
        if containers.is_empty() {
            let _ = tx
                .send(info("no running containers: the preview is not running"))
                .await;
            let _ = tx.send(Event::default().event("end").data("")).await;
            return;
        }
        if private_dir(&self.scratch).is_err() {
            let _ = tx
                .send(info("cannot create a scratch dir for the logs"))
                .await;
            return;
        }
        let prefix_services = containers.len() > 1;
        let mut followers = Vec::new();
        for (container, service) in containers {
            let file = self.scratch.join(format!(
                "live-{}-{}.log",
                container,
                super::auth::random_hex(6)
            ));
            let cmd = preview_exec::compose::with_docker_env(preview_exec::Cmd::new(
                &self.docker,
                format!("follow the logs of {} ({service})", self.id),
            ))
            .args([
                "logs",
                "--follow",
                "--tail",
                &TAIL_LINES.to_string(),
                &container,
            ])
            .log_to(&file)
            // Everything goes to the file; the wrapper's own buffer is only for errors.
            .output_cap(16 * 1024)
            .timeout(MAX_STREAM);
            let prefix = prefix_services.then(|| format!("{service} | "));
            followers.push(follow_one(cmd, file, prefix, &self.secrets, tx.clone()));
        }
        futures_util::future::join_all(followers).await;
        let _ = tx.send(Event::default().event("end").data("")).await;
    }
}

/// Runs one `docker logs -f` and sends the lines it appends to `file`; removes the file at the
/// end (also when the stream is dropped: the guard runs then).
async fn follow_one(
    cmd: preview_exec::Cmd,
    file: PathBuf,
    prefix: Option<String>,
    secrets: &RepoSecrets,
    tx: mpsc::Sender<Event>,
) {
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _guard = RemoveOnDrop(file.clone());
    let run = cmd.output();
    tokio::pin!(run);
    let mut offset = 0u64;
    let mut partial = String::new();
    let mut ended = false;
    loop {
        tokio::select! {
            result = &mut run, if !ended => {
                ended = true;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "following a container's logs ended");
                }
            }
            () = tokio::time::sleep(POLL) => {}
        }
        let (lines, new_offset) = read_new_lines(&file, offset, &mut partial);
        offset = new_offset;
        for line in lines {
            let text = clean_line(&line, secrets);
            let data = match &prefix {
                Some(p) => format!("{p}{text}"),
                None => text,
            };
            if tx.send(Event::default().data(data)).await.is_err() {
                return;
            }
        }
        if ended {
            if !partial.is_empty() {
                let text = clean_line(&std::mem::take(&mut partial), secrets);
                let _ = tx.send(Event::default().data(text)).await;
            }
            return;
        }
    }
}

/// Creates `dir` (and its parents) and makes it readable by its owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The complete lines appended to `file` since `offset`; an unfinished last line waits in
/// `partial` for the next read.
fn read_new_lines(file: &Path, offset: u64, partial: &mut String) -> (Vec<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return (Vec::new(), offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (Vec::new(), offset);
    }
    let mut bytes = Vec::new();
    let Ok(n) = f.take(1024 * 1024).read_to_end(&mut bytes) else {
        return (Vec::new(), offset);
    };
    partial.push_str(&String::from_utf8_lossy(&bytes));
    let mut lines = Vec::new();
    while let Some(pos) = partial.find('\n') {
        let line: String = partial.drain(..=pos).collect();
        lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    (lines, offset + n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_colours_secrets_and_control_characters() {
        let secrets = RepoSecrets::from_values(
            [("STRIPE_KEY".to_owned(), "sk_live_planted".to_owned())].into(),
        );
        let line = "\u{1b}[32mGET /\u{1b}[0m key=sk_live_planted\u{7}";
        assert_eq!(
            clean_line(line, &secrets),
            "GET / key=[redacted STRIPE_KEY]"
        );
    }

    #[test]
    fn the_scratch_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("logs/.live-logs");
        private_dir(&scratch).unwrap();
        let mode = std::fs::metadata(&scratch).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn new_lines_are_read_and_a_partial_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.log");
        std::fs::write(&file, "one\ntw").unwrap();
        let mut partial = String::new();
        let (lines, offset) = read_new_lines(&file, 0, &mut partial);
        assert_eq!(lines, ["one"]);
        std::fs::write(&file, "one\ntwo\n").unwrap();
        let (lines, _) = read_new_lines(&file, offset, &mut partial);
        assert_eq!(lines, ["two"]);
    }
}
