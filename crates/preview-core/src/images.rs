//! Images: the one table of base images, shared with scripts/testbed.sh (see base-images.tsv),
//! and the images a rendered preview needs before it can build and start ([`needed`]): those
//! of its `image:` services and those its Dockerfiles build from, each with who wants it, so a
//! missing one can be named before any build starts.

mod dockerfile;

pub use dockerfile::run_command;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkout::{Checkout, SOURCE_LIMIT};

const TABLE: &str = include_str!("../base-images.tsv");

/// Most distinct images checked for one preview; a hostile repository cannot make the
/// orchestrator inspect or pull thousands.
pub const MAX_IMAGES: usize = 40;
/// Most places named for one image; the rest are counted.
const MAX_WANTERS: usize = 4;
/// Most notes of what is not checked; the rest are counted in one last note, so that a
/// Dockerfile of thousands of invalid `FROM` lines does not log thousands of notes.
pub const MAX_UNCHECKED: usize = 40;

/// One row of the base-image table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseImage {
    /// What the image is for: `python`, `node`, `go`, `php`, `rust`, `runtime`, `postgres`, ...
    pub role: &'static str,
    /// The pinned image reference that generated files use.
    pub image: &'static str,
}

/// Every row of the table, in file order.
pub fn all() -> impl Iterator<Item = BaseImage> {
    TABLE.lines().filter_map(|line| {
        if line.trim().is_empty() || line.starts_with('#') {
            return None;
        }
        let mut cols = line.split('\t');
        Some(BaseImage {
            role: cols.next()?,
            image: cols.next()?,
        })
    })
}

/// The image for `role`; panics on an unknown role, which is a programming error.
pub fn image_for(role: &str) -> &'static str {
    all()
        .find(|row| row.role == role)
        .map(|row| row.image)
        .unwrap_or_else(|| panic!("no base image for role {role:?} in base-images.tsv"))
}

/// Who needs an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WantedBy {
    /// A service of the compose file that runs it (`image:` without `build:`).
    Service(String),
    /// A line of a Dockerfile of the checkout (its path relative to the checkout's root).
    Dockerfile { file: String, line: usize },
    /// A line of the Dockerfile the orchestrator generated.
    GeneratedDockerfile { line: usize },
    /// A line of a service's `dockerfile_inline`.
    InlineDockerfile { service: String, line: usize },
}

impl fmt::Display for WantedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WantedBy::Service(name) => write!(f, "service `{name}`"),
            WantedBy::Dockerfile { file, line } => write!(f, "`{file}:{line}`"),
            WantedBy::GeneratedDockerfile { line } => {
                write!(f, "the generated Dockerfile, line {line}")
            }
            WantedBy::InlineDockerfile { service, line } => {
                write!(f, "service `{service}`'s dockerfile_inline, line {line}")
            }
        }
    }
}

/// An image a preview needs, and who needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededImage {
    /// The reference as the build or Compose will ask Docker for it, e.g. `postgres:18`.
    pub reference: String,
    /// The first few places that need it.
    pub wanted_by: Vec<WantedBy>,
    /// How many more places need it.
    pub more: usize,
}

impl NeededImage {
    /// Who wants it, in one line: ``service `db`, `web/Dockerfile:3` and 2 more``.
    pub fn wanted_by_text(&self) -> String {
        let mut text = self
            .wanted_by
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if self.more > 0 {
            text.push_str(&format!(" and {} more", self.more));
        }
        text
    }
}

/// The images a preview needs, and what could not be checked before the build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeededImages {
    /// Every image needed, in the order first named (services by name, a Dockerfile's lines
    /// in order); at most [`MAX_IMAGES`].
    pub images: Vec<NeededImage>,
    /// What is not checked, and why (a variable without a value, an unreadable Dockerfile, an
    /// invalid reference): the build meets it by itself. At most [`MAX_UNCHECKED`] notes, and
    /// one more that counts the others.
    pub unchecked: Vec<String>,
    /// Notes past [`MAX_UNCHECKED`], counted.
    unchecked_more: usize,
}

/// A rendered preview, as far as its images go.
pub struct RenderedProject<'a> {
    /// The rendered compose file.
    pub compose: &'a str,
    /// The checkout its build contexts are in.
    pub checkout: &'a Checkout,
    /// The checkout's directory as the compose file's paths spell it.
    pub checkout_dir: &'a Path,
    /// The generated Dockerfile, if any: its path as the compose file names it, and its text.
    pub generated_dockerfile: Option<(&'a Path, &'a str)>,
}

/// The images `project` needs: those of its services with `image:` and no `build:` (unless
/// another service builds that image), and those its Dockerfiles build from. An `image:` next
/// to `build:` is the name of what is built, not an image to get; a service with `profiles` is
/// not started, so it needs nothing.
pub fn needed(project: &RenderedProject) -> NeededImages {
    let mut needs = NeededImages::default();
    needed_into(project, &mut needs);
    if needs.unchecked_more > 0 {
        let more = std::mem::take(&mut needs.unchecked_more);
        needs
            .unchecked
            .push(format!("{more} more references are not checked"));
    }
    needs
}

fn needed_into(project: &RenderedProject, needs: &mut NeededImages) {
    let services = match serde_saphyr::from_str::<Value>(project.compose) {
        Ok(root) => root.get("services").cloned().unwrap_or(Value::Null),
        Err(e) => {
            needs.not_checked(|| format!("the compose file could not be read: {e}"));
            return;
        }
    };
    let Value::Object(services) = services else {
        return;
    };
    let built: Vec<String> = services
        .values()
        .filter(|s| s.get("build").is_some())
        .filter_map(|s| s.get("image").and_then(Value::as_str))
        .map(literal)
        .collect();
    for (name, service) in &services {
        if service
            .get("profiles")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty())
        {
            // Compose starts (and builds) a service with profiles only when asked to.
            continue;
        }
        match service.get("build") {
            Some(build) => dockerfile_needs(project, name, build, needs),
            None => {
                if let Some(image) = service.get("image").and_then(Value::as_str).map(literal)
                    && !built.contains(&image)
                {
                    needs.add(&image, WantedBy::Service(name.clone()));
                }
            }
        }
    }
}

/// A value of the rendered compose file as Compose reads it: the renderer writes every `$` of
/// the repository's values as `$$`, which Compose reads as one literal `$`.
fn literal(value: &str) -> String {
    value.replace("$$", "$")
}

/// Where a service's Dockerfile is, to name its lines.
enum DockerfileOrigin {
    /// The service's `dockerfile_inline`.
    Inline(String),
    /// The Dockerfile the orchestrator generated.
    Generated,
    /// A file of the checkout, relative to its root.
    File(String),
}

impl DockerfileOrigin {
    fn at(&self, line: usize) -> WantedBy {
        match self {
            DockerfileOrigin::Inline(service) => WantedBy::InlineDockerfile {
                service: service.clone(),
                line,
            },
            DockerfileOrigin::Generated => WantedBy::GeneratedDockerfile { line },
            DockerfileOrigin::File(file) => WantedBy::Dockerfile {
                file: file.clone(),
                line,
            },
        }
    }
}

/// The images service `service` builds from, by its `build` section.
fn dockerfile_needs(
    project: &RenderedProject,
    service: &str,
    build: &Value,
    needs: &mut NeededImages,
) {
    let text = |key: &str| build.get(key).and_then(Value::as_str);
    let args: BTreeMap<String, String> = match build.get("args") {
        Some(Value::Object(args)) => args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), literal(v.as_str()?))))
            .collect(),
        _ => BTreeMap::new(),
    };
    let (origin, source) = if let Some(inline) = text("dockerfile_inline") {
        (
            DockerfileOrigin::Inline(service.to_owned()),
            literal(inline),
        )
    } else {
        let context = PathBuf::from(text("context").unwrap_or("."));
        let path = context.join(text("dockerfile").unwrap_or("Dockerfile"));
        match project.generated_dockerfile {
            Some((generated, source)) if generated == path => {
                (DockerfileOrigin::Generated, source.to_owned())
            }
            _ => match read_dockerfile(project, &path) {
                Ok((file, source)) => (DockerfileOrigin::File(file), source),
                Err(why) => {
                    needs.not_checked(|| {
                        format!("the Dockerfile of service `{service}` is not checked: {why}")
                    });
                    return;
                }
            },
        }
    };
    for found in dockerfile::images(&source, &args, text("target")) {
        let place = origin.at(found.line);
        match found.resolved {
            Ok(reference) => needs.add(&reference, place),
            Err(dockerfile::Unresolved::Variable) => needs.not_checked(|| format!(
                "`{}` ({place}) holds a variable without a value",
                found.written
            )),
            Err(dockerfile::Unresolved::TooLong) => needs.not_checked(|| format!(
                "`{}` ({place}) grows beyond {} bytes once its variables are substituted, longer than any image reference",
                found.written,
                dockerfile::MAX_REFERENCE
            )),
        }
    }
}

/// A Dockerfile of the checkout: its path relative to the checkout's root, and its text.
fn read_dockerfile(project: &RenderedProject, path: &Path) -> Result<(String, String), String> {
    let rel = path
        .strip_prefix(project.checkout_dir)
        .map_err(|_| format!("{} is outside the checkout", path.display()))?;
    let file = rel.display().to_string();
    match project.checkout.read_text(rel, SOURCE_LIMIT) {
        Ok(Some(text)) => Ok((file, text)),
        Ok(None) => Err(format!("{file} is not a file in the checkout")),
        Err(e) => Err(e.to_string()),
    }
}

impl NeededImages {
    /// Notes what is not checked; past [`MAX_UNCHECKED`] notes, only counts it.
    fn not_checked(&mut self, note: impl FnOnce() -> String) {
        if self.unchecked.len() < MAX_UNCHECKED {
            self.unchecked.push(note());
        } else {
            self.unchecked_more += 1;
        }
    }

    /// Records that `wanted_by` needs `reference`.
    fn add(&mut self, reference: &str, wanted_by: WantedBy) {
        if !is_image_reference(reference) {
            self.not_checked(|| {
                format!(
                    "`{}` ({wanted_by}) is not a valid image reference",
                    reference.escape_debug()
                )
            });
            return;
        }
        if let Some(image) = self.images.iter_mut().find(|i| i.reference == reference) {
            if image.wanted_by.contains(&wanted_by) {
                // Two services built from one Dockerfile.
            } else if image.wanted_by.len() < MAX_WANTERS {
                image.wanted_by.push(wanted_by);
            } else {
                image.more += 1;
            }
        } else if self.images.len() < MAX_IMAGES {
            self.images.push(NeededImage {
                reference: reference.to_owned(),
                wanted_by: vec![wanted_by],
                more: 0,
            });
        } else {
            self.not_checked(|| {
                format!(
                    "`{reference}` ({wanted_by}): only the first {MAX_IMAGES} images are checked"
                )
            });
        }
    }
}

/// True for a reference Docker accepts: `[host[:port]/]path[:tag][@algorithm:hex]`, the path
/// lowercase components of `[a-z0-9._-]`, the tag `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_image_reference(text: &str) -> bool {
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (text, None),
    };
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    });
    let (name, tag) = match name_and_tag.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (name_and_tag, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        (1..=128).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-'])
    });
    let mut components: Vec<&str> = name.split('/').collect();
    let host_ok = if components.len() > 1
        && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        let host = components.remove(0);
        let (host, port) = host.split_once(':').unwrap_or((host, "0"));
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            && !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
    } else {
        true
    };
    let path_ok = components.iter().all(|c| {
        c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    });
    name.len() <= 255 && digest_ok && tag_ok && host_ok && path_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `needed` for `compose` (with `[CHECKOUT]` standing for the checkout's directory) in a
    /// checkout holding `files`, with the generated Dockerfile at `/work/Dockerfile`.
    fn needs(compose: &str, files: &[(&str, &str)], generated: Option<&str>) -> NeededImages {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let checkout = Checkout::open(dir.path()).unwrap();
        let compose = compose.replace("[CHECKOUT]", &dir.path().display().to_string());
        needed(&RenderedProject {
            compose: &compose,
            checkout: &checkout,
            checkout_dir: dir.path(),
            generated_dockerfile: generated.map(|text| (Path::new("/work/Dockerfile"), text)),
        })
    }

    fn listed(needs: &NeededImages) -> Vec<String> {
        needs
            .images
            .iter()
            .map(|i| format!("{} ({})", i.reference, i.wanted_by_text()))
            .collect()
    }

    #[test]
    fn services_and_dockerfiles_name_their_images_with_who_wants_them() {
        let compose = r#"
services:
  web:
    build:
      context: "[CHECKOUT]/backend"
      args:
        PY: "3.14"
  worker:
    build:
      context: "[CHECKOUT]"
      dockerfile: "[CHECKOUT]/backend/Dockerfile"
      target: "base"
    image: "acme/backend:latest"
  prestart:
    image: "acme/backend:latest"
  db:
    image: "postgres:18"
  adminer:
    image: "adminer"
  debug:
    image: "not-started:1"
    profiles: ["debug"]
  inline:
    build:
      context: "[CHECKOUT]"
      dockerfile_inline: "FROM busybox:1 AS x
RUN true
FROM x
"
"#;
        let dockerfile = "ARG PY=3.12
FROM python:${PY} AS base
COPY --from=ghcr.io/astral-sh/uv:0.9.26 /uv /bin/
FROM base
COPY --from=postgres:18 /usr/bin/psql /bin/
";
        let needs = needs(compose, &[("backend/Dockerfile", dockerfile)], None);
        assert_eq!(
            listed(&needs),
            [
                "adminer (service `adminer`)",
                "postgres:18 (service `db`, `backend/Dockerfile:5`)",
                "busybox:1 (service `inline`'s dockerfile_inline, line 1)",
                "python:3.14 (`backend/Dockerfile:2`)",
                "ghcr.io/astral-sh/uv:0.9.26 (`backend/Dockerfile:3`)",
                "python:3.12 (`backend/Dockerfile:2`)",
            ]
        );
        assert!(needs.unchecked.is_empty(), "{:?}", needs.unchecked);
    }

    #[test]
    fn the_generated_dockerfile_is_read_from_the_render() {
        let compose = r#"
services:
  app:
    build:
      context: "[CHECKOUT]"
      dockerfile: "/work/Dockerfile"
  db:
    image: "postgres:16-bookworm"
"#;
        let needs = needs(
            compose,
            &[],
            Some("# generated\nFROM python:3.12-slim-bookworm\n"),
        );
        assert_eq!(
            listed(&needs),
            [
                "python:3.12-slim-bookworm (the generated Dockerfile, line 2)",
                "postgres:16-bookworm (service `db`)",
            ]
        );
    }

    #[test]
    fn what_cannot_be_checked_is_reported_and_skipped() {
        let compose = r#"
services:
  missing:
    build:
      context: "[CHECKOUT]/nowhere"
  outside:
    build:
      context: "/elsewhere"
  variable:
    build:
      context: "[CHECKOUT]"
  odd:
    image: "Bad Name!"
  escaped:
    image: "$${TAG}"
"#;
        let needs = needs(
            compose,
            &[("Dockerfile", "ARG TAG\nFROM node:${TAG}\n")],
            None,
        );
        assert!(needs.images.is_empty(), "{:?}", needs.images);
        let notes = needs.unchecked.join("\n");
        for expected in [
            "the Dockerfile of service `missing` is not checked: nowhere/Dockerfile is not a file in the checkout",
            "the Dockerfile of service `outside` is not checked: /elsewhere/Dockerfile is outside the checkout",
            "`node:${TAG}` (`Dockerfile:2`) holds a variable without a value",
            "`Bad Name!` (service `odd`) is not a valid image reference",
            "`${TAG}` (service `escaped`) is not a valid image reference",
        ] {
            assert!(notes.contains(expected), "{expected}\nin\n{notes}");
        }
    }

    #[test]
    fn a_hostile_project_is_capped() {
        let many: String = (0..500)
            .map(|i| format!("FROM img{i}:1\nCOPY --from=same:1 / /\n"))
            .collect();
        let compose = "services:\n  web:\n    build:\n      context: \"[CHECKOUT]\"\n";
        let needs = needs(compose, &[("Dockerfile", &many)], None);
        assert_eq!(needs.images.len(), MAX_IMAGES);
        let same = needs
            .images
            .iter()
            .find(|i| i.reference == "same:1")
            .unwrap();
        assert_eq!(
            (same.wanted_by.len(), same.more),
            (MAX_WANTERS, 500 - MAX_WANTERS)
        );
        assert!(
            same.wanted_by_text()
                .ends_with(&format!(" and {} more", 500 - MAX_WANTERS))
        );
        // 461 images past the cap (500 and `same:1`): 40 notes, and one that counts the other 421.
        assert_eq!(
            needs.unchecked.len(),
            MAX_UNCHECKED + 1,
            "{:?}",
            needs.unchecked
        );
        assert!(needs.unchecked[0].ends_with("only the first 40 images are checked"));
        assert_eq!(
            needs.unchecked[MAX_UNCHECKED],
            "421 more references are not checked"
        );
        // Found by the hostile-input properties: each invalid line of a Dockerfile was a note,
        // so a 256 KiB Dockerfile made about five times its size in notes, each one logged.
        let invalid = "FROM python: -1\n".repeat(10_000);
        let needs = super::tests::needs(compose, &[("Dockerfile", &invalid)], None);
        assert_eq!(needs.unchecked.len(), MAX_UNCHECKED + 1);
        assert!(
            needs.unchecked[0]
                .contains("`python:` (`Dockerfile:1`) is not a valid image reference")
        );
        assert_eq!(
            needs.unchecked[MAX_UNCHECKED],
            "9960 more references are not checked"
        );
        let huge = "#".repeat(SOURCE_LIMIT as usize + 1);
        let needs = super::tests::needs(compose, &[("Dockerfile", &huge)], None);
        assert!(
            needs.unchecked[0].contains("limit"),
            "{:?}",
            needs.unchecked
        );
        let needs = super::tests::needs("{[", &[], None);
        assert!(needs.unchecked[0].starts_with("the compose file could not be read"));
    }

    #[test]
    fn image_references() {
        for good in [
            "postgres",
            "postgres:18",
            "oven/bun:1",
            "ghcr.io/astral-sh/uv:0.9.26",
            "localhost:5000/app",
            "127.0.0.1:5000/acme/app:v1.2_3",
            "python:3.12-slim-bookworm",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my_org/my.app__x:latest",
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "Postgres",
            "postgres:",
            "postgres:.x",
            "a b",
            "`x`",
            "-x",
            "x/",
            "host:port/x",
            "x@sha256:short",
            "ünïcode",
            "$x",
            "x:y\nz",
        ] {
            assert!(!is_image_reference(bad), "{bad:?}");
        }
        assert!(!is_image_reference(&"a".repeat(256)));
    }

    #[test]
    fn every_role_has_one_pinned_image() {
        let rows: Vec<_> = all().collect();
        for role in [
            "python", "node", "go", "php", "rust", "runtime", "postgres", "mysql", "mongodb",
            "redis",
        ] {
            assert_eq!(rows.iter().filter(|r| r.role == role).count(), 1, "{role}");
        }
        for row in rows {
            let (_, tag) = row.image.split_once(':').expect("a tag");
            assert_ne!(tag, "latest", "{}", row.image);
        }
        assert_eq!(image_for("python"), "python:3.12-slim-bookworm");
    }
}
