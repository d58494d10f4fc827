//! The PR comment commands: `/preview`, `/preview redeploy`, `/preview destroy`.
//!
//! Only a comment whose first non-blank line starts with the word `/preview` is a command; any
//! other comment is conversation and is ignored. Keywords are ASCII case-insensitive. What follows
//! the keyword decides the command; anything else is [`PreviewCommand::Unknown`], which is
//! answered with a short reply and never deploys.

/// The longest piece of an unknown command echoed back in a reply.
pub const MAX_ECHO: usize = 60;

/// A command read from a PR comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewCommand {
    /// `/preview`: deploy the PR's head commit now (and approve it).
    Deploy,
    /// `/preview redeploy`: rebuild the current commit.
    Redeploy,
    /// `/preview destroy`: tear the preview down.
    Destroy,
    /// `/preview` followed by something else; holds that text, cut to [`MAX_ECHO`] characters,
    /// with control characters and backticks dropped (it is quoted in a reply).
    Unknown(String),
}

impl PreviewCommand {
    /// The command as a user types it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Deploy => "/preview",
            Self::Redeploy => "/preview redeploy",
            Self::Destroy => "/preview destroy",
            Self::Unknown(_) => "/preview ?",
        }
    }
}

/// The command in a comment's `body`, or `None` when the comment is not a command.
pub fn parse_command(body: &str) -> Option<PreviewCommand> {
    let line = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    let keyword = line.get(..8)?;
    if !keyword.eq_ignore_ascii_case("/preview") {
        return None;
    }
    let rest = &line[8..];
    if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
        return None; // `/previewer`, `/preview-foo`: another word
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    Some(match words.as_slice() {
        [] => PreviewCommand::Deploy,
        [w] if w.eq_ignore_ascii_case("redeploy") => PreviewCommand::Redeploy,
        [w] if w.eq_ignore_ascii_case("destroy") => PreviewCommand::Destroy,
        _ => PreviewCommand::Unknown(
            rest.trim()
                .chars()
                .filter(|c| !c.is_control() && *c != '`')
                .take(MAX_ECHO)
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        use PreviewCommand::*;
        let cases: &[(&str, Option<PreviewCommand>)] = &[
            ("/preview", Some(Deploy)),
            ("  /preview  \r\n", Some(Deploy)),
            ("\n\n/Preview\nthanks!", Some(Deploy)),
            ("/preview redeploy", Some(Redeploy)),
            ("/preview\tREDEPLOY  ", Some(Redeploy)),
            ("/preview destroy\nplease", Some(Destroy)),
            ("/preview deploy", Some(Unknown("deploy".into()))),
            ("/preview destroy now", Some(Unknown("destroy now".into()))),
            ("/preview `rm -rf /`\u{7}", Some(Unknown("rm -rf /".into()))),
            ("/previewer", None),
            ("/preview-it", None),
            ("please /preview", None),
            ("> /preview", None),
            ("LGTM\n/preview", None),
            ("", None),
            ("   \n  ", None),
            ("/prev", None),
            ("/préview", None),
            ("/previe\u{e9}", None),
        ];
        for (body, want) in cases {
            assert_eq!(&parse_command(body), want, "{body:?}");
        }
        let long = format!("/preview {}", "x".repeat(500));
        match parse_command(&long) {
            Some(Unknown(s)) => assert_eq!(s.chars().count(), MAX_ECHO),
            other => panic!("{other:?}"),
        }
    }
}
