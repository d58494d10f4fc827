//! The PR comment-command parser on arbitrary comment bodies: it must never panic, a command is
//! only read from a first non-blank line that starts with the word `/preview`, and the text an
//! unknown command echoes back is short and cannot break out of the reply's code span.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preview_github::{MAX_ECHO, PreviewCommand, parse_command};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Some(command) = parse_command(body) else {
        return;
    };
    let first = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .expect("a command comes from a non-blank line");
    assert!(first[..8].eq_ignore_ascii_case("/preview"), "{first:?}");
    assert!(first[8..].chars().next().is_none_or(char::is_whitespace));
    match command {
        PreviewCommand::Unknown(text) => {
            assert!(text.chars().count() <= MAX_ECHO);
            assert!(!text.contains('`'));
            assert!(!text.chars().any(char::is_control));
        }
        PreviewCommand::Deploy => assert!(first[8..].trim().is_empty()),
        PreviewCommand::Redeploy | PreviewCommand::Destroy => {
            assert_eq!(first[8..].split_whitespace().count(), 1);
        }
    }
});
