//! Hostile input, property-tested: every parser of a repository's files (the compose
//! sanitiser and its interpolation, the `.env` parsers, `preview-config.yml`, the Dockerfile
//! image scan, and the whole planner on a checkout) is fed arbitrary text and structured
//! mutations of the real fixture files. None may panic, and each refusal must be a precise
//! error: one that names the file (and the key or line where it can), never a bare message.
//! Where the code promises limits (values, nesting, alias expansion), the results are checked
//! against them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use preview_core::checkout::Checkout;
use preview_core::config::PreviewConfig;
use preview_core::images::{NeededImages, RenderedProject, needed};
use preview_core::render::{AppSlot, RenderInput, render};
use preview_core::sanitize::{MAX_RESOLVED_TOTAL, SanitizeContext, resolve_text, sanitize};
use preview_core::{Error, dotenv};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

use crate::harness::fixtures_dir;

/// The size cap the parsers apply to `preview-config.yml`, compose files and `.env`.
const CONFIG_LIMIT: usize = preview_core::checkout::CONFIG_LIMIT as usize;

/// The longest `.env` value `dotenv::parse` keeps once resolved (its documented limit).
const DOTENV_MAX_VALUE: usize = 8 * 1024;

/// `n` cases, times `HOSTILE_INPUT_SCALE` when set (to hunt longer than the suite does).
fn cases(n: u32) -> Config {
    let scale: u32 = std::env::var("HOSTILE_INPUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Config {
        cases: n * scale,
        // Shrinking a failure is worth more than its time; a passing run never shrinks.
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// How long one case may take before the run counts it as a hang. A case takes milliseconds;
/// proptest's own timeout would fork a process for every case.
const CASE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Ends the whole test process (exit code 101, as a failed test) when the case it guards runs
/// past [`CASE_DEADLINE`], naming the parser and the input: a parser that hangs would otherwise
/// hold the test, and the CI run, until its own limit. Dropped when the case ends.
#[must_use = "the case is watched while this lives"]
struct Watchdog {
    /// Dropped with the guard, which tells the watching thread the case ended.
    _done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn new(parser: &'static str, input: &str) -> Self {
        let (done, watched) = std::sync::mpsc::channel::<()>();
        let input = excerpt(input);
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                watched.recv_timeout(CASE_DEADLINE)
            {
                // Straight to the process's stderr: the test's captured output dies with it.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "hostile_input: {parser} ran past {CASE_DEADLINE:?} on this input, a hang: {input:?}"
                );
                std::process::exit(101);
            }
        });
        Self { _done: done }
    }
}

// ----- the corpus: the real fixture files ---------------------------------------------------

/// A file of a fixture app.
#[derive(Debug, Clone)]
struct FixtureFile {
    /// The fixture's name, e.g. `compose-project`.
    app: String,
    /// The file's path inside the fixture.
    rel: PathBuf,
    text: String,
}

#[derive(Debug, Default)]
struct Corpus {
    compose: Vec<FixtureFile>,
    configs: Vec<FixtureFile>,
    dockerfiles: Vec<FixtureFile>,
    dotenvs: Vec<FixtureFile>,
}

fn is_compose_name(name: &str) -> bool {
    preview_core::sanitize::FILE_NAMES.contains(&name)
        || preview_core::sanitize::PROJECT_FILE_NAMES.contains(&name)
        || name == "stack.yml"
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut corpus = Corpus::default();
        let mut apps: Vec<_> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        apps.sort();
        for app in apps {
            let name = app.file_name().unwrap().to_string_lossy().into_owned();
            for rel in files_of(&app) {
                let file_name = rel.file_name().unwrap().to_string_lossy().into_owned();
                let Ok(text) = std::fs::read_to_string(app.join(&rel)) else {
                    continue;
                };
                let file = FixtureFile {
                    app: name.clone(),
                    rel: rel.clone(),
                    text,
                };
                if is_compose_name(&file_name) {
                    corpus.compose.push(file);
                } else if preview_core::config::FILE_NAMES.contains(&file_name.as_str()) {
                    corpus.configs.push(file);
                } else if file_name.starts_with("Dockerfile") {
                    corpus.dockerfiles.push(file);
                } else if file_name.starts_with(".env") {
                    corpus.dotenvs.push(file);
                }
            }
        }
        corpus.configs.push(FixtureFile {
            app: "fastapi".to_owned(),
            rel: PathBuf::from("preview-config.yml"),
            text: FULL_CONFIG.to_owned(),
        });
        corpus.dotenvs.push(FixtureFile {
            app: "upstream-shape-fullstack-fastapi".to_owned(),
            rel: PathBuf::from(".env"),
            text: FULL_DOTENV.to_owned(),
        });
        assert!(corpus.compose.len() >= 20, "{corpus:?}");
        assert!(corpus.configs.len() >= 10, "{corpus:?}");
        assert!(corpus.dockerfiles.len() >= 10, "{corpus:?}");
        corpus
    })
}

/// Every regular file under `dir` (symlinks are not followed), relative to it, sorted.
fn files_of(dir: &Path) -> Vec<PathBuf> {
    entries_of(dir, false)
}

/// Every file under `dir`, with symlinks when `symlinks`, relative to it, sorted.
fn entries_of(dir: &Path, symlinks: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let path = rel.join(entry.file_name());
            if kind.is_dir() {
                if entry.file_name() != "node_modules" && entry.file_name() != "target" {
                    stack.push(path);
                }
            } else if kind.is_file() || (symlinks && kind.is_symlink()) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A config using every key, so that mutations reach each one's validation.
const FULL_CONFIG: &str = "\
framework: fastapi
database:
  engine: postgres
  seed: db/seed.sql
health_check_path: /health
app_port: 8000
app_port_env: PORT
app_entrypoint: main:app
build_commands:
  - pip install -r requirements.txt
startup_commands:
  - python manage.py migrate
env:
  GREETING: hello
  COUNT: 3
  EMPTY:
env_file: .env.preview
extra_services:
  - redis
dockerfile: Dockerfile
app_path: .
compose: none
web_service: web
hostname_service: admin
";

/// A `.env` using each form the parser reads.
const FULL_DOTENV: &str = "\
# comment
export A=1
B=\"two words\\n\\t\\\"q\\\" \\$HOME\"
C='${A} literal'
D=${A:-x}${B:+y}${UNSET-z}
E=${A}$A$$ # comment
F=\"-----BEGIN KEY-----
abc
-----END KEY-----\"
G=${NOPE:?required}
";

// ----- mutations ----------------------------------------------------------------------------

/// One structured change to a file's text.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    DuplicateLine(Index),
    DeleteLine(Index),
    SwapLines(Index, Index),
    /// The line repeated many times.
    RepeatLine(Index, usize),
    Insert(Index, String),
    InsertLine(Index, String),
    /// The value after a line's first `:` or `=` replaced, e.g. by one of the wrong type.
    ReplaceValue(Index, String),
    Prepend(String),
    Append(String),
}

/// Text fragments that parsers trip on.
fn fragment() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        // interpolation
        "${",
        "$$",
        "$",
        "}",
        "${A",
        "${A:-",
        "${A}",
        "$A$B",
        "${A:-${B:-${C:-x}}}",
        "${A:?boom}",
        "${A?}",
        "${A:+${B}}",
        "${A-}",
        "${1}",
        "${:-x}",
        "${A:}",
        "${A:=x}",
        "$$${A}",
        "$}",
        // numbers
        "99999999999999999999999999",
        "-1",
        "0",
        "65536",
        "0x1F",
        "1e400",
        ".inf",
        "-.nan",
        "0777",
        "1_000",
        "+5",
        // unicode and control
        "é",
        "🦀",
        "\u{202e}",
        "\u{feff}",
        "\u{0}",
        "\u{7f}",
        "\u{2028}",
        "\r",
        "\r\n",
        "\t",
        "\u{85}",
        "İ",
        "ß",
        // YAML
        "&a ",
        "*a",
        "<<: *a",
        "<<: [*a, *b]",
        "<<: {x: 1}",
        "!!binary aGVsbG8=",
        "!!str ",
        "!!python/object:os.system",
        "!custom ",
        "? ",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "---\n",
        "...\n",
        "|\n",
        ">-\n",
        "'",
        "\"",
        "#",
        "%YAML 1.1\n",
        "%TAG ! tag:x:\n",
        "&",
        "*",
        "<<",
        "~",
        "null",
        "true",
        "yes",
        "on",
        // Dockerfile
        "FROM ",
        "ARG A=",
        "ARG ",
        "COPY --from=",
        "RUN --mount=type=cache,from=",
        "<<EOF\n",
        "<<-\"EOF\"\n",
        "EOF\n",
        "\\\n",
        "`\n",
        "# escape=`\n",
        " AS ",
        "scratch",
        "--platform=$A ",
        "ADD --from=x ",
        "FROM $A AS a\n",
        // .env
        "export ",
        "=",
        "\\",
        "\\\"",
        " #",
        "\"\n",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        8 => fixed,
        1 => (1usize..300).prop_map(|n| format!("{}x{}", "${A:-".repeat(n), "}".repeat(n))),
        1 => (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..300).prop_map(|n| "{a: ".repeat(n) + &"}".repeat(n)),
        1 => (1usize..100).prop_map(|n| (0..n).map(|i| format!("{}- x\n", "  ".repeat(i))).collect()),
        1 => (1usize..100_000).prop_map(|n| "x".repeat(n)),
        1 => (1usize..2_000).prop_map(|n| "$A".repeat(n)),
        1 => any::<String>(),
        1 => alias_bomb(),
    ]
}

/// A billion-laughs block: each anchor a list (or mapping, merged with `<<`) of aliases of the
/// one before, then a key using the last.
fn alias_bomb() -> impl Strategy<Value = String> {
    (2usize..12, 2usize..12, any::<bool>()).prop_map(|(depth, width, merge)| {
        let mut text = String::new();
        if merge {
            text.push_str("x-l0: &l0 {a: lol}\n");
            for level in 1..depth {
                let aliases: Vec<String> = (0..width).map(|_| format!("*l{}", level - 1)).collect();
                text.push_str(&format!(
                    "x-l{level}: &l{level} {{<<: [{}], k{level}: v}}\n",
                    aliases.join(", ")
                ));
            }
        } else {
            text.push_str(&format!("x-l0: &l0 [{}]\n", vec!["lol"; width].join(",")));
            for level in 1..depth {
                let aliases = vec![format!("*l{}", level - 1); width].join(",");
                text.push_str(&format!("x-l{level}: &l{level} [{aliases}]\n"));
            }
        }
        text.push_str(&format!("x-use: *l{}\n", depth - 1));
        text
    })
}

/// Values of the wrong type (or the right type with a wrong value) for any key.
fn wrong_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            " [1, 2]",
            " {a: 1}",
            " null",
            " ~",
            " true",
            " false",
            " 12345678901234567890",
            " -5",
            " 3.14",
            " \"\"",
            " ''",
            " []",
            " {}",
            " *undefined",
            " &x {}",
            " !!int x",
            " [[[]]]",
            " {<<: {a: 1}}",
            " |\n  multi\n  line",
            " 0",
            " 65536",
            " /",
            " ..",
            " ../../etc/passwd",
            " /etc/passwd",
            " \"\\u0000\"",
            " \"a\nb\"",
            " ${A}",
            " $$",
        ])
        .prop_map(str::to_owned),
        fragment().prop_map(|f| format!(" {f}")),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => any::<Index>().prop_map(Mutation::DuplicateLine),
        2 => any::<Index>().prop_map(Mutation::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => (any::<Index>(), 2usize..5_000).prop_map(|(i, n)| Mutation::RepeatLine(i, n)),
        4 => (any::<Index>(), fragment()).prop_map(|(i, f)| Mutation::Insert(i, f)),
        2 => (any::<Index>(), fragment()).prop_map(|(i, f)| Mutation::InsertLine(i, f)),
        3 => (any::<Index>(), wrong_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        1 => fragment().prop_map(Mutation::Prepend),
        1 => fragment().prop_map(Mutation::Append),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

/// The byte offsets of `text`'s char boundaries, its end included.
fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect()
}

/// The lines of `text` with their endings, so that joining them gives `text` back.
fn lines_of(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines = lines_of(text);
    let join = |lines: Vec<String>| lines.concat();
    match mutation {
        Mutation::Truncate(at) => {
            let b = boundaries(text);
            text[..b[at.index(b.len())]].to_owned()
        }
        Mutation::Insert(at, fragment) => {
            let b = boundaries(text);
            let at = b[at.index(b.len())];
            format!("{}{fragment}{}", &text[..at], &text[at..])
        }
        Mutation::Prepend(fragment) => format!("{fragment}\n{text}"),
        Mutation::Append(fragment) => format!("{text}\n{fragment}"),
        _ if lines.is_empty() => text.to_owned(),
        Mutation::DuplicateLine(i) => {
            let i = i.index(lines.len());
            let line = with_newline(&lines[i]);
            lines.insert(i, line);
            join(lines)
        }
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
            join(lines)
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            // The last line may lack its newline: keep every line whole.
            join(lines.iter().map(|l| with_newline(l)).collect())
        }
        Mutation::RepeatLine(i, n) => {
            let i = i.index(lines.len());
            let line = with_newline(&lines[i]);
            // At most about twice the size limit: bigger only tests the size check again.
            let n = (*n).min(2 * CONFIG_LIMIT / line.len().max(1) + 1);
            lines.splice(i..i, std::iter::repeat_n(line, n));
            join(lines)
        }
        Mutation::InsertLine(i, fragment) => {
            let i = i.index(lines.len() + 1);
            let indent = lines
                .get(i)
                .map(|l| l.len() - l.trim_start().len())
                .unwrap_or(0);
            lines.insert(i, format!("{}{fragment}\n", &" ".repeat(indent)));
            join(lines)
        }
        Mutation::ReplaceValue(i, value) => {
            let i = i.index(lines.len());
            let line = &lines[i];
            if let Some(at) = line.find([':', '=']) {
                let end = if line.ends_with('\n') { "\n" } else { "" };
                lines[i] = format!("{}{value}{end}", &line[..=at]);
            }
            join(lines)
        }
    }
}

fn with_newline(line: &str) -> String {
    if line.ends_with('\n') {
        line.to_owned()
    } else {
        format!("{line}\n")
    }
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    mutations.iter().fold(text.to_owned(), |t, m| apply(&t, m))
}

/// Arbitrary text: any string, any bytes read lossily, or lines of the characters parsers
/// care about.
fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..2_000)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(
            "[ \\t\\-:a-z_A-Z0-9$={}\\[\\]&*<>|#'\"\\\\?+!,.\n]{0,60}",
            0..40
        )
        .prop_map(|lines| lines.join("\n")),
    ]
}

// ----- what a precise error is --------------------------------------------------------------

/// The longest an error may be: it is the reason in the PR comment, which GitHub caps at 65,536
/// characters, and it should point at the fault, not quote the file.
const MAX_ERROR_CHARS: usize = 2_000;

/// The longest an error listing several refusals of one compose file may be, in bytes: each
/// listed refusal within [`MAX_ERROR_CHARS`], all of them well under 8 KiB.
const MAX_REFUSALS_BYTES: usize = 8 * 1024;

/// Whether `shown`, the text of `err`, is within the limits: [`MAX_ERROR_CHARS`], or for a list
/// of refusals, [`MAX_REFUSALS_BYTES`] with each line within [`MAX_ERROR_CHARS`].
fn within_limits(err: &Error, shown: &str) -> bool {
    if err.refusals().len() > 1 {
        shown.len() <= MAX_REFUSALS_BYTES
            && shown
                .lines()
                .all(|line| line.chars().count() <= MAX_ERROR_CHARS)
    } else {
        shown.chars().count() <= MAX_ERROR_CHARS
    }
}

/// `err` names `file`, and the key or line at fault where the kind of error has one; so does
/// each refusal it lists.
fn assert_precise(err: &Error, file: &str, input: &str) {
    let shown = err.to_string();
    let context = || format!("error {:?} for input {:?}", excerpt(&shown), excerpt(input));
    assert!(
        within_limits(err, &shown),
        "an error of {} characters: {}",
        shown.chars().count(),
        context()
    );
    for refusal in err.refusals() {
        let Error::ComposeRefused {
            file: f,
            key,
            reason,
            more,
            ..
        } = refusal
        else {
            unreachable!("refusals() holds refusals only");
        };
        assert_eq!(f, file, "names another file: {}", context());
        assert!(!key.is_empty(), "names no key: {}", context());
        assert!(!reason.trim().is_empty(), "no reason: {}", context());
        assert!(
            std::ptr::eq(refusal, err) || more.is_empty(),
            "a listed refusal lists more: {}",
            context()
        );
    }
    match err {
        Error::Config {
            file: f,
            line,
            key,
            message,
        } => {
            assert!(f.contains(file), "names another file: {}", context());
            assert!(!message.trim().is_empty(), "no message: {}", context());
            let about_the_whole_file =
                message.contains("limit") || message.contains("bytes") || message.contains("both");
            assert!(
                line.is_some() || key.is_some() || about_the_whole_file,
                "names neither a line nor a key: {}",
                context()
            );
        }
        // Each refusal it lists was checked above.
        Error::ComposeRefused { .. } => {}
        other => panic!("not an error about {file}: {other:?}: {}", context()),
    }
}

/// The start of a (possibly huge) input, for messages.
fn excerpt(text: &str) -> String {
    let b = boundaries(text);
    let end = b[b.partition_point(|&i| i <= 400) - 1];
    if end < text.len() {
        format!("{}… ({} bytes)", &text[..end], text.len())
    } else {
        text.to_owned()
    }
}

// ----- .env ---------------------------------------------------------------------------------

fn check_dotenv(text: &str) {
    let _watched = Watchdog::new("the .env parsers", text);
    match dotenv::parse(".env", text) {
        Ok(env) => {
            for (key, value) in &env.values {
                assert!(
                    value.len() <= DOTENV_MAX_VALUE,
                    "{key} is {} bytes: {:?}",
                    value.len(),
                    excerpt(text)
                );
            }
            for warning in &env.warnings {
                assert!(
                    warning.starts_with(".env:"),
                    "a warning that names no line: {warning:?} for {:?}",
                    excerpt(text)
                );
            }
        }
        Err(e) => {
            assert_precise(&e, ".env", text);
            assert!(matches!(e, Error::Config { line: Some(_), .. }), "{e}");
        }
    }
    // The `env_file` of preview-config.yml has its own, stricter parser.
    if let Err(e) = preview_core::config::parse_env_file(text, "vars.env") {
        assert_precise(&e, "vars.env", text);
        assert!(matches!(e, Error::Config { line: Some(_), .. }), "{e}");
    }
}

/// A Compose interpolation expression, nested up to `depth`.
fn interpolation() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z $]{0,6}".prop_map(|s| s.replace('$', "$$")),
        "[A-D]".prop_map(|n| format!("${n}")),
        "[A-D]".prop_map(|n| format!("${{{n}}}")),
        Just("$".to_owned()),
        Just("${".to_owned()),
        Just("}".to_owned()),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        (
            "[A-D_]|[0-9]|",
            prop::sample::select(vec![":-", "-", ":?", "?", ":+", "+", "", ":", "=", ":="]),
            prop::collection::vec(inner, 0..4),
            any::<bool>(),
        )
            .prop_map(|(name, op, parts, closed)| {
                format!(
                    "${{{name}{op}{}{}",
                    parts.concat(),
                    if closed { "}" } else { "" }
                )
            })
    })
}

/// A valid Compose interpolation expression, nested up to 12 deep (deeper than the parser's
/// limit of 8).
fn valid_interpolation() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z ]{0,6}",
        Just("$$".to_owned()),
        "[A-D]".prop_map(|n| format!("${n}")),
        "[A-D]".prop_map(|n| format!("${{{n}}}")),
    ];
    leaf.prop_recursive(12, 64, 3, |inner| {
        (
            "[A-D]",
            prop::sample::select(vec![":-", "-", ":?", "?", ":+", "+"]),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(name, op, parts)| format!("${{{name}{op}{}}}", parts.concat()))
    })
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn dotenv_arbitrary_text(text in arbitrary_text()) {
        check_dotenv(&text);
    }

    #[test]
    fn dotenv_lines_of_interpolations(
        lines in prop::collection::vec(("[A-D]", interpolation(), 0usize..3), 0..12)
    ) {
        let quotes = ["", "\"", "'"];
        let text: String = lines
            .iter()
            .map(|(key, value, quote)| format!("{key}={q}{value}{q}\n", q = quotes[*quote]))
            .collect();
        check_dotenv(&text);
    }

    #[test]
    fn interpolation_resolves_or_says_why(
        text in prop_oneof![valid_interpolation(), interpolation()],
        a in "[a-z$]{0,8}",
    ) {
        let values: BTreeMap<String, String> =
            [("A".to_owned(), a), ("B".to_owned(), String::new())].into();
        let _watched = Watchdog::new("Compose interpolation", &text);
        match resolve_text(&text, &values) {
            Ok(resolved) => prop_assert!(resolved.len() <= CONFIG_LIMIT),
            Err(why) => prop_assert!(!why.trim().is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn dotenv_mutations_of_real_files(file in any::<Index>(), m in mutations()) {
        let files = &corpus().dotenvs;
        let text = mutate(&files[file.index(files.len())].text, &m);
        check_dotenv(&text);
    }
}

// ----- preview-config.yml ------------------------------------------------------------------

fn check_config(text: &str) {
    let _watched = Watchdog::new("the preview-config.yml parser", text);
    if let Err(e) = PreviewConfig::parse(text, "preview-config.yml") {
        assert_precise(&e, "preview-config.yml", text);
    }
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn config_arbitrary_text(text in arbitrary_text()) {
        check_config(&text);
    }

    #[test]
    fn config_mutations_of_real_files(file in any::<Index>(), m in mutations()) {
        let files = &corpus().configs;
        check_config(&mutate(&files[file.index(files.len())].text, &m));
    }

    #[test]
    fn config_every_key_with_a_wrong_value(key in prop::sample::select(preview_core::config::KEYS.to_vec()), value in wrong_value()) {
        check_config(&format!("{key}:{value}\n"));
        check_config(&format!("{key}:\n  nested:{value}\n"));
        check_config(&format!("{key}:\n  -{value}\n"));
    }
}

// ----- compose files ------------------------------------------------------------------------

/// Sanitises `text` as `file` of fixture `app`, whose checkout the bind mounts and env files are
/// checked against.
fn check_compose(app: &str, file: &Path, text: &str) {
    let _watched = Watchdog::new("the compose sanitiser", text);
    let checkout = Checkout::open(&fixtures_dir().join(app)).unwrap();
    let file = file.to_string_lossy().into_owned();
    let ctx = SanitizeContext {
        checkout: &checkout,
        file: file.clone(),
    };
    match sanitize(text, &ctx) {
        Ok(compose) => {
            // The resolution of its variables from `.env`-sized values stays bounded too.
            let values: BTreeMap<String, String> = compose
                .variables
                .iter()
                .map(|v| (v.name.clone(), "v$".repeat(64)))
                .collect();
            for service in &compose.services {
                if let Err(e) = service.resolved(&file, &values) {
                    assert_precise(&e, &file, text);
                }
            }
        }
        Err(e) => assert_precise(&e, &file, text),
    }
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn compose_arbitrary_text(text in arbitrary_text()) {
        check_compose("compose-project", Path::new("compose.yaml"), &text);
        check_compose("compose-ok", Path::new("docker-compose.preview.yml"), &text);
    }

    #[test]
    fn compose_mutations_of_real_files(file in any::<Index>(), m in mutations()) {
        let files = &corpus().compose;
        let f = &files[file.index(files.len())];
        check_compose(&f.app, &f.rel, &mutate(&f.text, &m));
    }
}

/// A YAML double-quoted scalar holding `text`.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    /// Compose interpolation, nested and broken, in each key that may hold it and in some that
    /// may not; what passes is checked against the preview's variables and resolved.
    #[test]
    fn compose_interpolation_in_every_key(
        key in prop::sample::select(vec![
            "environment", "labels", "command", "entrypoint", "working_dir", "user", "image",
            "hostname", "extra_hosts", "annotations", "ports", "expose", "volumes", "env_file",
            "build.args", "build.labels", "build.target", "build.dockerfile_inline",
            "build.context", "healthcheck", "post_start",
        ]),
        values in prop::collection::vec(prop_oneof![3 => valid_interpolation(), 1 => interpolation()], 1..4),
        preview in prop::collection::btree_set("[A-D]", 0..4),
    ) {
        let quoted_values: Vec<String> = values.iter().map(|v| quoted(v)).collect();
        let list = quoted_values.join(", ");
        let entry = match key {
            "environment" | "labels" | "annotations" => format!(
                "{{{}}}",
                quoted_values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("K{i}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "healthcheck" => format!("{{test: [{list}]}}"),
            "post_start" => format!("[{{command: [{list}]}}]"),
            "command" | "entrypoint" | "extra_hosts" | "ports" | "expose" | "volumes"
            | "env_file" => format!("[{list}]"),
            _ => quoted_values[0].clone(),
        };
        let service = match key.strip_prefix("build.") {
            Some("args" | "labels") => format!("    build:\n      context: .\n      {}: {{A: {}}}\n", &key[6..], quoted_values[0]),
            Some(build_key) => format!("    build:\n      context: .\n      {build_key}: {entry}\n"),
            None => format!("    build: .\n    {key}: {entry}\n"),
        };
        let text = format!("services:\n  web:\n{service}");
        let _watched = Watchdog::new("the compose sanitiser", &text);
        let checkout = Checkout::open(&fixtures_dir().join("compose-project")).unwrap();
        let ctx = SanitizeContext { checkout: &checkout, file: "compose.yaml".to_owned() };
        match sanitize(&text, &ctx) {
            Ok(compose) => {
                let names: std::collections::BTreeSet<String> = preview.iter().cloned().collect();
                if let Err(e) = preview_core::sanitize::check_variables(&compose, &names) {
                    assert_precise(&e, "compose.yaml", &text);
                    prop_assert!(!e.refusals().is_empty(), "{e}");
                    prop_assert!(
                        e.refusals().iter().all(|r| matches!(r, Error::ComposeRefused { line: Some(_), .. })),
                        "{e}"
                    );
                } else {
                    let values: BTreeMap<String, String> =
                        names.iter().map(|n| (n.clone(), format!("{n}$"))).collect();
                    if let Err(e) = compose.resolved_services(&values) {
                        assert_precise(&e, "compose.yaml", &text);
                    }
                }
            }
            Err(e) => assert_precise(&e, "compose.yaml", &text),
        }
    }
}

/// Every service key the sanitiser reads, passes through, overrides or refuses (from
/// `sanitize/mod.rs`), and a few it does not know.
const SERVICE_KEYS: &[&str] = &[
    "build",
    "image",
    "environment",
    "labels",
    "env_file",
    "volumes",
    "expose",
    "ports",
    "restart",
    "develop",
    "privileged",
    "network_mode",
    "volumes_from",
    "pid",
    "ipc",
    "post_start",
    "pre_stop",
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "healthcheck",
    "depends_on",
    "tmpfs",
    "stop_signal",
    "read_only",
    "shm_size",
    "ulimits",
    "extra_hosts",
    "hostname",
    "domainname",
    "dns",
    "dns_search",
    "dns_opt",
    "platform",
    "pull_policy",
    "profiles",
    "stdin_open",
    "tty",
    "cap_drop",
    "group_add",
    "links",
    "networks",
    "init",
    "attach",
    "mac_address",
    "annotations",
    "secrets",
    "configs",
    "mem_limit",
    "cpus",
    "deploy",
    "stop_grace_period",
    "container_name",
    "scale",
    "devices",
    "cap_add",
    "sysctls",
    "logging",
    "userns_mode",
    "x-custom",
    "extends",
    "unknown",
    "",
];

/// Every `build` key the sanitiser reads, passes through or refuses, and one it does not know.
const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "target",
    "args",
    "labels",
    "network",
    "tags",
    "cache_to",
    "no_cache",
    "pull",
    "shm_size",
    "ulimits",
    "cache_from",
    "extra_hosts",
    "secrets",
    "ssh",
    "platforms",
    "additional_contexts",
    "privileged",
    "unknown",
];

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn compose_every_key_with_a_wrong_value(
        key in prop::sample::select(SERVICE_KEYS),
        build_key in prop::sample::select(BUILD_KEYS),
        top in prop::sample::select(vec!["volumes", "networks", "secrets", "configs", "name", "version", "include", "x-a"]),
        value in wrong_value(),
    ) {
        let file = Path::new("compose.yaml");
        for text in [
            format!("services:\n  web:\n    build: .\n    {key}:{value}\n"),
            format!("services:\n  web:\n    build: .\n    {key}:\n      - {value}\n"),
            format!("services:\n  web:\n    build: .\n    {key}:\n      nested:{value}\n"),
            format!("services:\n  web:\n    build:\n      context: .\n      {build_key}:{value}\n"),
            format!("services:\n  web:\n    build: .\n    volumes: [v:/v]\n{top}:\n  v:{value}\n"),
            format!("services:\n  web:\n    build: .\n{top}:{value}\n"),
            format!("services:{value}\n"),
            format!("services:\n  web:{value}\n"),
        ] {
            check_compose("compose-project", file, &text);
        }
    }
}

// ----- Dockerfiles --------------------------------------------------------------------------

/// The images a Dockerfile needs, scanned as the compose file's `dockerfile_inline`, with
/// `args` as its build args.
fn dockerfile_needs(
    text: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> NeededImages {
    let dir = fixtures_dir().join("compose-project");
    let checkout = Checkout::open(&dir).unwrap();
    let mut build = serde_json::json!({ "context": dir, "dockerfile_inline": text, "args": args });
    if let Some(target) = target {
        build["target"] = target.into();
    }
    let compose = serde_json::json!({ "services": { "app": { "build": build } } });
    needed(&RenderedProject {
        compose: &compose.to_string(),
        checkout: &checkout,
        checkout_dir: &dir,
        generated_dockerfile: None,
    })
}

/// What the scan reports stays within a small multiple of its input: variables cannot
/// amplify it.
fn check_dockerfile(text: &str, args: &BTreeMap<String, String>, target: Option<&str>) {
    let _watched = Watchdog::new("the Dockerfile image scan", text);
    let needs = dockerfile_needs(text, args, target);
    let input = text.len() + args.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let output: usize = needs
        .images
        .iter()
        .map(|i| i.reference.len())
        .sum::<usize>()
        + needs.unchecked.iter().map(String::len).sum::<usize>();
    assert!(
        output <= 4 * input + 64 * 1024,
        "{output} bytes reported for {input} bytes of input: {:?}",
        excerpt(text)
    );
    for image in &needs.images {
        assert!(
            preview_core::images::is_image_reference(&image.reference),
            "{image:?}"
        );
    }
}

/// A Dockerfile of the instructions that name images, with variables.
fn dockerfile_text() -> impl Strategy<Value = String> {
    let reference = prop_oneof![
        Just("python:3.12-slim-bookworm".to_owned()),
        "[a-z]{1,8}(:[a-z0-9.]{1,6})?",
        "[A-D]".prop_map(|n| format!("${n}")),
        "[A-D]".prop_map(|n| format!("${{{n}}}")),
        ("[A-D]", "[a-z:${}]{0,12}").prop_map(|(n, d)| format!("${{{n}:-{d}}}")),
        ("[A-D]", "[a-z:${}]{0,12}").prop_map(|(n, d)| format!("${{{n}:+{d}}}")),
        ("[A-D]", 1usize..500).prop_map(|(n, k)| format!("${n}").repeat(k)),
        (1usize..40).prop_map(|k| format!("{}x{}", "${A:-".repeat(k), "}".repeat(k))),
        Just("scratch".to_owned()),
        "[0-9]",
    ];
    let line = prop_oneof![
        (
            "[A-D]",
            prop_oneof!["[a-z:]{0,10}", (0usize..20_000).prop_map(|n| "x".repeat(n))]
        )
            .prop_map(|(n, v)| format!("ARG {n}={v}")),
        "[A-D]".prop_map(|n| format!("ARG {n}")),
        (reference.clone(), prop::option::of("[a-z]{1,4}")).prop_map(|(r, s)| match s {
            Some(s) => format!("FROM --platform=$BUILDPLATFORM {r} AS {s}"),
            None => format!("FROM {r}"),
        }),
        reference
            .clone()
            .prop_map(|r| format!("COPY --link --from={r} /a /b")),
        reference.prop_map(|r| format!("RUN --mount=type=bind,from={r},target=/x true")),
        Just("RUN <<EOF\nFROM hidden:1\nEOF".to_owned()),
        Just("RUN echo \\".to_owned()),
        Just("# escape=`".to_owned()),
        fragment(),
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn dockerfile_instructions_with_variables(
        text in dockerfile_text(),
        args in prop::collection::btree_map("[A-D]", "[a-z:]{0,10}|x{0,3000}", 0..3),
        target in prop::option::of("[a-z]{1,4}"),
    ) {
        check_dockerfile(&text, &args, target.as_deref());
    }

    #[test]
    fn dockerfile_arbitrary_text(text in arbitrary_text()) {
        check_dockerfile(&text, &BTreeMap::new(), None);
    }

    #[test]
    fn dockerfile_mutations_of_real_files(file in any::<Index>(), m in mutations()) {
        let files = &corpus().dockerfiles;
        let text = mutate(&files[file.index(files.len())].text, &m);
        check_dockerfile(&text, &BTreeMap::new(), None);
    }
}

// ----- the whole planner ---------------------------------------------------------------------

/// The fixtures with a compose file, the upstream shapes and the hostile ones, or when `all`,
/// every fixture.
fn plan_fixtures(all: bool) -> Vec<String> {
    let mut apps: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            all || n.starts_with("compose-")
                || n.starts_with("upstream-shape-")
                || n.starts_with("hostile-")
        })
        .collect();
    apps.sort();
    apps
}

/// Which files of a fixture a plan property mutates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mutated {
    /// Compose files, preview-config.yml, Dockerfiles and `.env` files.
    Parsed,
    /// Any text file: manifests, lockfiles, version pins and sources too.
    AnyText,
}

/// Copies `from` to `to`, symlinks as symlinks.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Plans a copy of fixture `app` with its file chosen by `file` mutated, and `dotenv` (if any)
/// written as the `.env` at its root, which Compose reads beside a compose file there. A plan
/// that succeeds is rendered in both slots and its images listed. A refusal must name a file of
/// the checkout.
fn check_plan(app: &str, which: Mutated, file: Index, m: &[Mutation], dotenv: Option<&str>) {
    let _watched = Watchdog::new("the planner", &format!("{app}, {which:?}, {m:?}"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    copy_dir(&fixtures_dir().join(app), &root);
    if let Some(dotenv) = dotenv {
        std::fs::write(root.join(".env"), dotenv).unwrap();
    }
    let parsed: Vec<PathBuf> = files_of(&root)
        .into_iter()
        .filter(|rel| {
            let name = rel.file_name().unwrap().to_string_lossy();
            which == Mutated::AnyText
                || is_compose_name(&name)
                || preview_core::config::FILE_NAMES.contains(&&*name)
                || name.starts_with("Dockerfile")
                || name.starts_with(".env")
        })
        .filter(|rel| std::fs::read_to_string(root.join(rel)).is_ok())
        .collect();
    let mutated = match parsed.as_slice() {
        [] => None,
        files => {
            let rel = files[file.index(files.len())].clone();
            let text = std::fs::read_to_string(root.join(&rel)).unwrap();
            let text = mutate(&text, m);
            std::fs::write(root.join(&rel), &text).unwrap();
            Some((rel, text))
        }
    };
    let context = || {
        format!(
            "{app}, {:?} = {:?}, .env = {:?}",
            mutated.as_ref().map(|(rel, _)| rel),
            excerpt(
                mutated
                    .as_ref()
                    .map(|(_, t)| t.as_str())
                    .unwrap_or_default()
            ),
            dotenv.map(excerpt)
        )
    };
    let names: Vec<String> = entries_of(&root, true)
        .into_iter()
        .chain(preview_core::config::FILE_NAMES.iter().map(PathBuf::from))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let names_a_file = |e: &Error| {
        let shown = e.to_string();
        assert!(
            within_limits(e, &shown),
            "an error of {} characters: {:?} for {}",
            shown.chars().count(),
            excerpt(&shown),
            context()
        );
        names.iter().any(|n| shown.contains(n.as_str()))
            || matches!(e, Error::NoApp(_) | Error::Unsupported { .. })
    };
    let planned = match preview_core::plan(&root) {
        Ok(planned) => planned,
        Err(e) => {
            assert!(
                names_a_file(&e),
                "an error that names no file of the checkout: {e} ({e:?}) for {}",
                context()
            );
            return;
        }
    };
    // A plan's warnings go into the PR comment too.
    assert!(
        planned.plan.warnings.len() <= 21
            && planned
                .plan
                .warnings
                .iter()
                .all(|w| w.chars().count() <= 1_001),
        "warnings {:?} for {}",
        planned.plan.warnings,
        context()
    );
    let checkout = Checkout::open(&root).unwrap();
    for slot in [AppSlot::Blue, AppSlot::Green] {
        let mut input = RenderInput::new(
            format!("acme-{app}-pr-7"),
            format!("acme/{app}"),
            7,
            "0123456789abcdef0123456789abcdef01234567",
            format!("acme-{app}"),
            8007,
            root.clone(),
            root.join("Dockerfile.generated"),
            "SnapshotSecret0123456789",
        );
        input.app_slot = slot;
        match render(&planned, &input) {
            Ok(rendered) => {
                // The repo's values resolve to at most MAX_RESOLVED_TOTAL bytes; what the
                // renderer adds is at most a few KiB a service.
                let services = planned
                    .repo_compose
                    .as_ref()
                    .map_or(0, |c| c.services.len());
                assert!(
                    rendered.compose.len()
                        <= MAX_RESOLVED_TOTAL + 2 * CONFIG_LIMIT + 4096 * (services + 3),
                    "a compose file of {} bytes rendered for {}",
                    rendered.compose.len(),
                    context()
                );
                let needs = rendered.needed_images(&input, &checkout);
                assert!(
                    needs.images.len() <= preview_core::images::MAX_IMAGES
                        && needs.unchecked.len() <= preview_core::images::MAX_UNCHECKED + 1,
                    "{needs:?} for {}",
                    context()
                );
            }
            // Resolving the repo's variables can refuse a plan; it must say where.
            Err(e @ Error::ComposeRefused { .. }) if names_a_file(&e) => {}
            Err(e) => panic!(
                "a plan that succeeded fails to render ({slot:?}): {e} ({e:?}) for {}",
                context()
            ),
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn plan_of_mutated_fixture_checkouts(
        app in any::<Index>(),
        file in any::<Index>(),
        m in mutations(),
        dotenv in prop::option::weighted(0.3, mutations()),
    ) {
        let apps = plan_fixtures(false);
        let dotenv = dotenv.map(|m| mutate(FULL_DOTENV, &m));
        check_plan(&apps[app.index(apps.len())], Mutated::Parsed, file, &m, dotenv.as_deref());
    }

    /// Every fixture, any of its text files mutated: the detectors read manifests, lockfiles,
    /// version pins and sources, all the repository's.
    #[test]
    fn plan_of_fixtures_with_any_file_mutated(
        app in any::<Index>(),
        file in any::<Index>(),
        m in mutations(),
    ) {
        let apps = plan_fixtures(true);
        check_plan(&apps[app.index(apps.len())], Mutated::AnyText, file, &m, None);
    }
}

// ----- limits the code promises ---------------------------------------------------------------

/// The process's peak resident memory so far, in bytes (Linux's `VmHWM`).
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A billion laughs of ten levels of ten (10^10 strings if expanded) in each YAML the repo
/// writes: refused by the parser's budget, and the process's memory stays far below what an
/// expansion would take.
#[test]
fn alias_bombs_are_refused_without_expanding() {
    let mut bomb = "x-a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n".to_owned();
    for level in 1..10 {
        let aliases = vec![format!("*a{}", level - 1); 10].join(",");
        bomb.push_str(&format!("x-a{level}: &a{level} [{aliases}]\n"));
    }
    let config = format!("{bomb}env: *a9\n");
    let err = PreviewConfig::parse(&config, "preview-config.yml").unwrap_err();
    assert!(
        err.to_string().contains("refused: the YAML exceeds"),
        "{err}"
    );
    assert_precise(&err, "preview-config.yml", &config);

    let compose = format!("{bomb}services:\n  app:\n    image: x\n    environment: *a9\n");
    let checkout = Checkout::open(&fixtures_dir().join("compose-ok")).unwrap();
    let ctx = SanitizeContext {
        checkout: &checkout,
        file: "docker-compose.preview.yml".to_owned(),
    };
    let err = sanitize(&compose, &ctx).unwrap_err();
    assert!(
        err.to_string().contains("refused: the YAML exceeds"),
        "{err}"
    );

    // The same with merge keys, whose expansion is a copy of each mapping merged.
    let mut merge = "x-m0: &m0 {a: lol, b: lol}\n".to_owned();
    for level in 1..10 {
        let aliases = vec![format!("*m{}", level - 1); 10].join(", ");
        merge.push_str(&format!(
            "x-m{level}: &m{level} {{<<: [{aliases}], k{level}: v}}\n"
        ));
    }
    let compose = format!("{merge}services:\n  app:\n    image: x\n    labels: *m9\n");
    let err = sanitize(&compose, &ctx).unwrap_err();
    assert!(
        err.to_string().contains("refused: the YAML exceeds"),
        "{err}"
    );
    assert_precise(&err, "docker-compose.preview.yml", &compose);

    let peak = peak_memory();
    assert!(peak < 1 << 30, "peak resident memory {peak} bytes");
}

/// Nesting far beyond the parsers' depth limits is an error, not a stack overflow.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for depth in [100, 10_000, 100_000] {
        let flow = format!("env: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let err = PreviewConfig::parse(&flow, "preview-config.yml").unwrap_err();
        assert_precise(&err, "preview-config.yml", &flow);

        let block: String = (0..depth.min(2_000))
            .map(|i| format!("{}- x:\n", " ".repeat(2 * i)))
            .collect();
        let block = format!("env:\n{block}");
        let err = PreviewConfig::parse(&block, "preview-config.yml").unwrap_err();
        assert_precise(&err, "preview-config.yml", &block);

        let nested = format!("A={}x{}\n", "${B:-".repeat(depth), "}".repeat(depth));
        let env = dotenv::parse(".env", &nested).unwrap();
        assert!(env.warnings[0].contains("nested more than"), "{env:?}");
        assert!(resolve_text(&nested, &BTreeMap::new()).is_err());

        let dockerfile = format!("FROM {}x{}\n", "${A:-".repeat(depth), "}".repeat(depth));
        let needs = dockerfile_needs(&dockerfile, &BTreeMap::new(), None);
        assert!(needs.images.is_empty(), "{needs:?}");
    }
}

/// Writes `files` into a new checkout.
fn checkout_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn render_blue(root: &Path) -> preview_core::Result<preview_core::render::Rendered> {
    let planned = preview_core::plan(root)?;
    let input = RenderInput::new(
        "acme-app-pr-7",
        "acme/app",
        7,
        "0123456789abcdef0123456789abcdef01234567",
        "acme-app",
        8007,
        root,
        root.join("Dockerfile.generated"),
        "SnapshotSecret0123456789",
    );
    render(&planned, &input)
}

/// The worst a 64 KiB compose file and its `.env` can do through variables: an 8 KiB value
/// referred to eight times in each of 1,500 items is refused when rendered, naming the file,
/// service and key, instead of rendering about 100 MB.
#[test]
fn variables_cannot_amplify_a_compose_file() {
    let items = "      - ${A}${A}${A}${A}${A}${A}${A}${A}\n".repeat(1_500);
    let compose = format!("services:\n  web:\n    build: .\n    command:\n{items}");
    assert!(compose.len() <= CONFIG_LIMIT);
    let dotenv = format!("A={}\n", "x".repeat(8 * 1024));
    let dir = checkout_with(&[
        ("compose.yaml", &compose),
        (".env", &dotenv),
        ("Dockerfile", "FROM python:3.12-slim-bookworm\n"),
    ]);
    let err = render_blue(dir.path()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "compose.yaml: service `web`: key `command`: the file's values grow beyond {MAX_RESOLVED_TOTAL} bytes once their variables are resolved"
        )
    );
}

/// Thousands of references in one file plan (every reference located on its line) and render.
#[test]
fn thousands_of_references_plan_and_render() {
    let mut compose = "services:\n  web:\n    build: .\n    environment:\n".to_owned();
    let mut dotenv = String::new();
    for i in 0..2_000 {
        compose.push_str(&format!("      A{i}: $V{i}\n"));
        dotenv.push_str(&format!("V{i}={i}\n"));
    }
    compose.push_str(&format!("      MANY: {}\n", "$X".repeat(5_000)));
    dotenv.push_str("X=x\n");
    let dir = checkout_with(&[
        ("compose.yaml", &compose),
        (".env", &dotenv),
        ("Dockerfile", "FROM python:3.12-slim-bookworm\n"),
    ]);
    let rendered = render_blue(dir.path()).unwrap();
    let line = |key: &str| {
        rendered
            .compose
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {}", excerpt(&rendered.compose)))
            .trim()
            .to_owned()
    };
    assert_eq!(line("A1999"), "A1999: \"1999\"");
    assert_eq!(line("MANY"), format!("MANY: \"{}\"", "x".repeat(5_000)));
}

/// A Dockerfile's variables cannot grow a reference beyond any valid one, nor its invalid lines
/// make more than a few dozen notes.
#[test]
fn a_dockerfile_cannot_amplify_its_image_list() {
    let mut dockerfile = format!("ARG A={}\n", "x".repeat(100_000));
    dockerfile.push_str(&format!("FROM {}\n", "$A".repeat(10_000)));
    dockerfile.push_str(&"FROM $A\nCOPY --from=$A / /\nFROM python: -1\n".repeat(1_000));
    let needs = dockerfile_needs(&dockerfile, &BTreeMap::new(), None);
    assert!(needs.images.is_empty(), "{:?}", needs.images);
    assert_eq!(
        needs.unchecked.len(),
        preview_core::images::MAX_UNCHECKED + 1,
        "{:?}",
        needs.unchecked
    );
    assert!(
        needs.unchecked[0].contains("grows beyond 1024 bytes once its variables are substituted"),
        "{}",
        needs.unchecked[0]
    );
    let total: usize = needs.unchecked.iter().map(String::len).sum();
    assert!(total < 64 * 1024, "{total} bytes of notes");
}
