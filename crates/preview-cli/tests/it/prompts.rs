//! The interactive prompts driven on a real pseudo-terminal, answered as a person would type:
//! `init`'s questions (validation, defaults, the repository loop, hidden tokens), `setup`'s
//! confirmation of the terraform plan and `destroy`'s typed project name.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Bed, DO_TOKEN, GH_TOKEN, SERVER_IP, mode};

/// How long one prompt may take to appear; generous for a loaded 2-core machine.
const PROMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process whose stdin, stdout and stderr are the slave side of a pseudo-terminal.
struct Terminal {
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
    /// Byte offset (in the ANSI-stripped text) up to which prompts have been consumed.
    seen: usize,
    child: std::process::Child,
}

impl Terminal {
    fn spawn(mut cmd: std::process::Command) -> Self {
        let size = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("openpty");
        let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        let child = cmd.spawn().expect("spawn preview");
        // Only the child holds the slave now, so the master reads EOF/EIO once it exits.
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            master,
            output,
            seen: 0,
            child,
        }
    }

    /// Everything the child wrote, with terminal escape sequences removed.
    fn screen(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.output.lock().unwrap()))
    }

    /// Waits until `needle` appears after what earlier calls consumed.
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + PROMPT_TIMEOUT;
        loop {
            let screen = self.screen();
            if let Some(at) = screen.get(self.seen..).and_then(|rest| rest.find(needle)) {
                self.seen += at + needle.len();
                return;
            }
            if Instant::now() > deadline {
                panic!("{needle:?} did not appear; the terminal shows:\n{screen}");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to drain, then judge once more.
                std::thread::sleep(Duration::from_millis(100));
                let screen = self.screen();
                if screen
                    .get(self.seen..)
                    .is_some_and(|rest| rest.contains(needle))
                {
                    continue;
                }
                panic!(
                    "preview exited ({status}) before {needle:?}; the terminal shows:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` and presses Enter.
    fn answer(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
        self.master.flush().unwrap();
    }

    /// Presses keys without Enter (a yes/no prompt takes one key).
    fn press(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits for the child to exit and returns its exit code and the whole screen.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PROMPT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "preview did not exit; the terminal shows:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.screen())
    }
}

/// Removes CSI (`ESC [ ... final`) and two-byte escape sequences, and carriage returns.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn init_prompts_validate_answers_take_defaults_and_write_the_config() {
    let bed = Bed::new().await;
    let infra = bed.path("infra");
    // No flags but --infra-dir, no tokens in the environment: everything is asked for.
    let cmd = bed.preview(&["init", "--infra-dir", infra.to_str().unwrap()]);
    let (code, screen) = tokio::task::spawn_blocking(move || {
        let mut term = Terminal::spawn(cmd);

        term.expect("Project name");
        term.answer("Not A Name");
        term.expect("must be 2-64 lowercase letters");
        term.expect("Project name");
        term.answer("demo-previews");

        term.expect("DigitalOcean region");
        term.answer("mars1");
        term.expect("is not a region with droplets");
        term.expect("DigitalOcean region");
        term.answer("ams3");

        // Enter takes the default size.
        term.expect("Droplet size");
        term.answer("");

        term.expect("Repository (owner/name)");
        term.answer("no-slash");
        term.expect("is not a repository written as owner/name");
        term.expect("Repository (owner/name)");
        term.answer("acme/api");
        term.expect("Another repository (empty to finish)");
        term.answer("acme/web");
        term.expect("Another repository (empty to finish)");
        term.answer("ACME/api");
        term.expect("Another repository (empty to finish)");
        term.answer("");

        term.expect("Preview time-to-live in days");
        term.answer("0");
        term.expect("must be between 1 and 365 days");
        term.expect("Preview time-to-live in days");
        term.answer("3");

        // Enter takes the default cap.
        term.expect("Live previews at most");
        term.answer("");

        term.expect("Domain for TLS");
        term.answer("previews.example.com");
        term.expect("E-mail for the TLS certificate");
        term.answer("ops-at-example");
        term.expect("is not an e-mail address");
        term.expect("E-mail for the TLS certificate");
        term.answer("ops@example.com");

        // The default key is the bed's ~/.ssh/id_ed25519.
        term.expect("SSH private key");
        term.answer("");

        term.expect("DigitalOcean API token");
        term.answer("short");
        term.expect("is too short to be a token");
        term.expect("DigitalOcean API token");
        term.answer(DO_TOKEN);
        term.expect("GitHub token");
        term.answer(GH_TOKEN);

        term.expect("Secrets stored in");
        term.finish()
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "init failed; the terminal shows:\n{screen}");
    assert!(screen.contains("(file)"), "{screen}");

    let config = std::fs::read_to_string(bed.pd("config.yml")).unwrap();
    let expect = |line: &str| {
        assert!(
            config.lines().any(|l| l.trim() == line),
            "config.yml lacks `{line}`:\n{config}"
        )
    };
    expect("project: demo-previews");
    expect("region: ams3");
    expect("droplet_size: s-2vcpu-4gb");
    expect("- acme/api");
    expect("- acme/web");
    expect("ttl_days: 3");
    expect("max_previews: 50");
    expect("domain: previews.example.com");
    expect("email: ops@example.com");
    expect(&format!(
        "private_key: {}",
        bed.path("home/.ssh/id_ed25519").display()
    ));
    // ACME/api repeated acme/api (GitHub names are case-insensitive) and was dropped.
    assert_eq!(
        config.to_ascii_lowercase().matches("acme/api").count(),
        1,
        "{config}"
    );

    assert_eq!(mode(&bed.pd("config.yml")), 0o600);
    assert_eq!(mode(&bed.pd("secrets.yml")), 0o600);
    assert_eq!(bed.secret("do_token"), DO_TOKEN);
    assert_eq!(bed.secret("github_token"), GH_TOKEN);
    for secret in bed.all_secrets() {
        assert!(!config.contains(&secret), "a secret leaked into config.yml");
        assert!(
            !screen.contains(&secret),
            "a secret was echoed on the terminal:\n{screen}"
        );
    }
}

/// Runs `preview ARGS` on a pseudo-terminal, letting `drive` answer its prompts.
async fn on_terminal(
    bed: &Bed,
    args: &[&str],
    drive: impl FnOnce(&mut Terminal) + Send + 'static,
) -> (Option<i32>, String) {
    let cmd = bed.preview(args);
    tokio::task::spawn_blocking(move || {
        let mut term = Terminal::spawn(cmd);
        drive(&mut term);
        term.finish()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_applies_the_plan_only_when_confirmed() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    let binary = bed.path("preview-orchestrator");
    let args = [
        "setup",
        "--binary",
        binary.to_str().unwrap(),
        "--health-timeout",
        "5",
    ];

    let (code, screen) = on_terminal(&bed, &args, |term| {
        term.expect("Plan: 6 to add");
        term.expect("Apply this plan?");
        term.press("n");
    })
    .await;
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains("cancelled: the plan was not applied"),
        "{screen}"
    );
    assert!(
        !bed.calls()
            .iter()
            .any(|c| c.starts_with("terraform ⇥ apply"))
    );

    let (code, screen) = on_terminal(&bed, &args, |term| {
        term.expect("Apply this plan?");
        term.press("y");
    })
    .await;
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains(&format!("Server {SERVER_IP} is ready")),
        "{screen}"
    );
    assert!(
        bed.calls()
            .iter()
            .any(|c| c.starts_with("terraform ⇥ apply"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_proceeds_only_when_the_project_name_is_typed() {
    let bed = Bed::new().await;
    bed.init().await.ok();
    bed.setup().await.ok();
    let before = bed.call_count();

    let (code, screen) = on_terminal(&bed, &["destroy"], |term| {
        term.expect("Type the project name (preview-deployer) to continue");
        term.answer("preview-deployr");
    })
    .await;
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains("cancelled: the name did not match, nothing was changed"),
        "{screen}"
    );
    assert_eq!(bed.call_count(), before, "nothing ran: {:#?}", bed.calls());
    assert!(bed.pd("config.yml").exists());

    let (code, screen) = on_terminal(&bed, &["destroy"], |term| {
        term.expect("Type the project name (preview-deployer) to continue");
        term.answer("preview-deployer");
    })
    .await;
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("Destroyed project preview-deployer."),
        "{screen}"
    );
    assert!(
        bed.calls()[before..]
            .iter()
            .any(|c| c.starts_with("terraform ⇥ destroy"))
    );
    assert!(!bed.pd("config.yml").exists());
}
