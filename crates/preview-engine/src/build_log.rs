//! Reading a build log for people: terminal colour codes removed (GitHub shows them as garbage),
//! and the real cause of a failed build, the failing Dockerfile step and its last error line,
//! rather than the compose command line that ran it.

/// `text` without terminal escape sequences (colours, cursor moves, titles).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates up to a final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Any other escape is two characters long.
            _ => {}
        }
    }
    out
}

/// The failing step of a build log and its last error line, e.g. ``step 5/19 `RUN go mod
/// download`: go: ...: no such host``. Understands the classic builder's `Step N/M :` lines
/// and BuildKit's `> [stage N/M] STEP:` error block. `None` when the log shows no failed step.
pub fn build_failure(log: &str) -> Option<String> {
    let log = strip_ansi(log);
    buildkit_failure(&log)
        .or_else(|| classic_failure(&log))
        .or_else(|| network_failure(&log))
        .or_else(|| engine_failure(&log))
}

/// The engine's last error when no step failed: its refusal of a container (that could not be
/// created or started, e.g. at a port another process took between its allocation and the
/// start), or the builder's own failure (`failed to export image: ...`).
fn engine_failure(log: &str) -> Option<String> {
    const MARK: &str = "Error response from daemon: ";
    let line = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.contains(MARK) || l.starts_with("failed to "))?;
    let Some((_, refusal)) = line.split_once(MARK) else {
        return Some(format!("Docker failed: {line}"));
    };
    let refusal = refusal.trim();
    if refusal.ends_with("address already in use") || refusal.contains("port is already allocated")
    {
        return Some(format!(
            "a port the preview publishes was taken on the host by another process meanwhile; \
             the next deploy picks a free one (Docker: {refusal})"
        ));
    }
    Some(format!("Docker refused: {refusal}"))
}

/// Docker's default address pools hold about 30 bridge networks, and each preview has one.
fn network_failure(log: &str) -> Option<String> {
    log.contains("could not find an available, non-overlapping IPv4 address pool")
        .then(|| {
            "Docker has no address pool left for the preview's network: every pool is taken by \
             other networks; give dockerd more with default-address-pools in \
             /etc/docker/daemon.json (the Ansible docker role sets 512 /24s)"
                .to_owned()
        })
}

fn classic_failure(log: &str) -> Option<String> {
    let mut step: Option<&str> = None;
    let mut last_output: Option<&str> = None;
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("Step ") {
            step = Some(rest);
            last_output = None;
        } else if line.starts_with("The command '") && line.contains("returned a non-zero code") {
            let (counter, instruction) = step?.split_once(" : ")?;
            let cause = last_output.map(|l| format!(": {l}")).unwrap_or_default();
            return Some(format!("step {counter} `{instruction}` failed{cause}"));
        } else if !line.trim().is_empty() && !line.starts_with(" ---> ") && !is_noise(line) {
            last_output = Some(line.trim());
        }
    }
    None
}

fn buildkit_failure(log: &str) -> Option<String> {
    // ------
    //  > [build 5/9] RUN go mod download:
    // 0.523 go: ...: no such host
    // ------
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    let start = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("> [") && l.trim_end().ends_with(':'))?;
    let header = lines[start]
        .trim()
        .trim_start_matches("> ")
        .trim_end_matches(':');
    let (counter, instruction) = header.strip_prefix('[')?.split_once("] ")?;
    let counter = counter.rsplit(' ').next().unwrap_or(counter);
    let cause = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("------"))
        .map(|l| strip_timestamp(l.trim()))
        .filter(|l| !l.is_empty() && !is_noise(l))
        .last()
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    Some(format!("step {counter} `{instruction}` failed{cause}"))
}

/// Lines a tool prints after its real error that only point elsewhere, such as npm's "A complete
/// log of this run can be found in" and the log's path.
fn is_noise(line: &str) -> bool {
    let line = line.trim();
    let npm = line
        .strip_prefix("npm ERR!")
        .or_else(|| line.strip_prefix("npm error"));
    npm.is_some_and(|rest| {
        let rest = rest.trim();
        rest.is_empty()
            || rest.starts_with("A complete log of this run")
            || rest.contains("/_logs/")
    })
}

/// BuildKit prefixes a step's output with its seconds, e.g. `0.523 `.
fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((t, rest)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            rest.trim()
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_and_titles() {
        assert_eq!(
            strip_ansi("\u{1b}[91mgo: boom\u{1b}[0m done"),
            "go: boom done"
        );
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}text"), "text");
        assert_eq!(strip_ansi("\u{1b}[1;32m✓\u{1b}[39;49m ok"), "✓ ok");
        assert_eq!(strip_ansi("plain"), "plain");
        assert_eq!(strip_ansi("trailing \u{1b}"), "trailing ");
    }

    /// As the classic builder printed it on the test bed for a Go app whose module proxy is
    /// unreachable.
    const CLASSIC: &str = "Sending build context to Docker daemon     746B\r\r\nStep 1/19 : FROM golang:1.22-bookworm AS build\n ---> 94226a9215fd\nStep 4/19 : COPY go.mod ./\n ---> 1da6e969cb22\nStep 5/19 : RUN go mod download\n ---> Running in fed0b60fc168\n\u{1b}[91mgo: github.com/gin-gonic/gin@v1.10.0: Get \"https://proxy.golang.org/github.com/gin-gonic/gin/@v/v1.10.0.mod\": dial tcp: lookup proxy.golang.org on 10.255.255.53:53: no such host\n\u{1b}[0mThe command '/bin/sh -c go mod download' returned a non-zero code: 1\n";

    #[test]
    fn names_a_network_without_an_address_pool() {
        let log = "Successfully tagged p-pr-23-app:latest\n Network p-pr-23_default Creating \n Network p-pr-23_default Error Error response from daemon: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network\nfailed to create network p-pr-23_default\n";
        let reason = build_failure(log).unwrap();
        assert!(reason.contains("default-address-pools"), "{reason}");
    }

    #[test]
    fn names_the_engines_refusal_when_no_step_failed() {
        let log = "Successfully tagged p-pr-4-app:latest\n Container p-pr-4-app-1  Starting\nError response from daemon: driver failed programming external connectivity on endpoint p-pr-4-app-1 (359a): Error starting userland proxy: listen tcp4 127.0.0.1:53000: bind: address already in use\n";
        let reason = build_failure(log).unwrap();
        assert!(
            reason.starts_with("a port the preview publishes was taken"),
            "{reason}"
        );
        assert!(reason.contains("127.0.0.1:53000"), "{reason}");
        let log = " Container p-pr-4-app-1  Creating\nError response from daemon: invalid mount config for type \"bind\": bind source path does not exist: /x\n";
        assert_eq!(
            build_failure(log).unwrap(),
            "Docker refused: invalid mount config for type \"bind\": bind source path does not exist: /x"
        );
        // As the classic builder printed it when an image it took from its cache was removed.
        let log = "Step 2/10 : WORKDIR /app\n ---> Using cache\n ---> 953f825cf4f0\nStep 3/10 : COPY main.py .\nfailed to export image: failed to set parent sha256:953f: unknown parent image ID sha256:953f\n";
        assert_eq!(
            build_failure(log).unwrap(),
            "Docker failed: failed to export image: failed to set parent sha256:953f: unknown parent image ID sha256:953f"
        );
    }

    #[test]
    fn names_the_classic_builders_failing_step() {
        assert_eq!(
            build_failure(CLASSIC).unwrap(),
            "step 5/19 `RUN go mod download` failed: go: github.com/gin-gonic/gin@v1.10.0: Get \"https://proxy.golang.org/github.com/gin-gonic/gin/@v/v1.10.0.mod\": dial tcp: lookup proxy.golang.org on 10.255.255.53:53: no such host"
        );
    }

    #[test]
    fn names_buildkits_failing_step() {
        let log = "#9 [build 5/9] RUN npm ci\n#9 0.812 npm ERR! code EUSAGE\n#9 ERROR: process \"/bin/sh -c npm ci\" did not complete successfully: exit code: 1\n------\n > [build 5/9] RUN npm ci:\n0.811 npm ERR! code EUSAGE\n0.812 npm ERR! The `npm ci` command can only install with an existing package-lock.json\n------\nfailed to solve: process \"/bin/sh -c npm ci\" did not complete successfully: exit code: 1\n";
        assert_eq!(
            build_failure(log).unwrap(),
            "step 5/9 `RUN npm ci` failed: npm ERR! The `npm ci` command can only install with an existing package-lock.json"
        );
    }

    #[test]
    fn npms_pointer_to_its_log_is_not_the_cause() {
        let log = "Step 6/12 : RUN npm install\n ---> Running in 0a1b\nnpm ERR! Cannot read properties of null (reading 'edgesOut')\n\nnpm ERR! A complete log of this run can be found in:\nnpm ERR!     /root/.npm/_logs/2026-12-06T04_00_00_000Z-debug-0.log\nThe command '/bin/sh -c npm install' returned a non-zero code: 1\n";
        assert_eq!(
            build_failure(log).unwrap(),
            "step 6/12 `RUN npm install` failed: npm ERR! Cannot read properties of null (reading 'edgesOut')"
        );
    }

    #[test]
    fn no_failed_step_is_none() {
        assert_eq!(build_failure("Step 1/2 : FROM x\n ---> abc\n"), None);
        assert_eq!(build_failure(""), None);
    }
}
