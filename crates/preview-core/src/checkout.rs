//! Reading a checkout whose content is hostile: paths are resolved component by component, a
//! symlink is followed only while it stays inside the checkout, and every read is size-capped.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Cap for `preview-config.yml` and `docker-compose.preview.yml`.
pub const CONFIG_LIMIT: u64 = 64 * 1024;
/// Cap for manifests and lockfiles we parse (package.json, Cargo.toml, go.mod, ...).
pub const MANIFEST_LIMIT: u64 = 1024 * 1024;
/// Cap for source files we peek into (e.g. to find `app = FastAPI()`).
pub const SOURCE_LIMIT: u64 = 256 * 1024;
/// Most entries listed from one directory; a hostile repo cannot make us list millions.
pub const LIST_LIMIT: usize = 20_000;
/// Most symlinks followed while resolving one path (the kernel's own limit is 40).
const SYMLINK_HOPS: usize = 40;

/// A checked-out repository, read without trusting its content.
#[derive(Debug, Clone)]
pub struct Checkout {
    root: PathBuf,
    /// Relative paths already found to be real directories (not symlinks): a plan probes the same
    /// few directories many times, and each probe would otherwise `lstat` every component again.
    real_dirs: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

/// What a directory entry is, after resolving symlinks that stay inside the checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink that leads outside the checkout, loops, or dangles; never followed.
    Unsafe,
    Other,
}

/// One entry of [`Checkout::list_dir`].
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

impl Checkout {
    /// Opens the checkout at `root`; the root itself is trusted (the operator chose it).
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.canonicalize().map_err(|source| Error::Io {
            path: root.to_owned(),
            source,
        })?;
        if !root.is_dir() {
            return Err(Error::Io {
                path: root,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Self {
            root,
            real_dirs: Default::default(),
        })
    }

    /// The checkout's absolute, canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` to an absolute path inside the checkout, following only symlinks that stay
    /// inside. `Ok(None)` when some component does not exist.
    pub fn resolve(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let mut pending: Vec<OsString> = Vec::new();
        push_relative(&mut pending, rel, rel)?;
        pending.reverse();
        let mut done: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                if done.pop().is_none() {
                    return Err(unsafe_path(rel, "`..` leads outside the checkout"));
                }
                continue;
            }
            let mut prefix = PathBuf::new();
            prefix.extend(&done);
            prefix.push(&part);
            if self.is_known_dir(&prefix) {
                done.push(part);
                continue;
            }
            let here = self.root.join(&prefix);
            let meta = match std::fs::symlink_metadata(&here) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
                Err(source) => return Err(Error::Io { path: here, source }),
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > SYMLINK_HOPS {
                    return Err(unsafe_path(rel, "too many levels of symlinks"));
                }
                let target = std::fs::read_link(&here).map_err(|source| Error::Io {
                    path: here.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    return Err(unsafe_path(
                        rel,
                        &format!(
                            "symlink {} points to the absolute path {}, outside the checkout; it is not followed",
                            display_rel(&done, &part),
                            target.display()
                        ),
                    ));
                }
                let mut expanded = Vec::new();
                push_relative(&mut expanded, &target, rel)?;
                // The target replaces this component, relative to the symlink's directory.
                for p in expanded.into_iter().rev() {
                    pending.push(p);
                }
                let depth_before = done.len();
                // Check lexically that the target does not climb above the root before touching it.
                let mut probe = done.clone();
                for p in pending.iter().rev() {
                    if p == ".." {
                        if probe.pop().is_none() {
                            return Err(unsafe_path(
                                rel,
                                &format!(
                                    "symlink {} points to {}, outside the checkout; it is not followed",
                                    display_rel(&done, &part),
                                    target.display()
                                ),
                            ));
                        }
                    } else {
                        probe.push(p.clone());
                    }
                }
                debug_assert_eq!(done.len(), depth_before);
                continue;
            }
            if meta.is_dir()
                && let Ok(mut dirs) = self.real_dirs.lock()
            {
                dirs.insert(prefix);
            }
            done.push(part);
        }
        let mut out = self.root.clone();
        out.extend(&done);
        Ok(Some(out))
    }

    fn is_known_dir(&self, prefix: &Path) -> bool {
        self.real_dirs
            .lock()
            .map(|dirs| dirs.contains(prefix))
            .unwrap_or(false)
    }

    /// Reads `rel` as UTF-8 text of at most `limit` bytes; `Ok(None)` if it does not exist.
    pub fn read_text(&self, rel: &Path, limit: u64) -> Result<Option<String>> {
        let Some(path) = self.resolve(rel)? else {
            return Ok(None);
        };
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            path: rel.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > limit {
            return Err(Error::TooLarge {
                path: rel.to_owned(),
                limit,
            });
        }
        let file = std::fs::File::open(&path).map_err(|source| Error::Io {
            path: rel.to_owned(),
            source,
        })?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow between stat and read; the `take` keeps the cap honest.
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                path: rel.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                path: rel.to_owned(),
                limit,
            });
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::manifest(rel, "not valid UTF-8"))
    }

    /// Like [`Checkout::read_text`], but a file that is missing, unsafe or too large is `None`:
    /// for files we only peek into, where a refusal should not fail the whole plan.
    pub fn peek_text(&self, rel: &Path, limit: u64) -> Option<String> {
        self.read_text(rel, limit).ok().flatten()
    }

    /// What `rel` is; symlinks leading outside count as [`EntryKind::Unsafe`], missing as `None`.
    pub fn kind(&self, rel: &Path) -> Option<EntryKind> {
        match self.resolve(rel) {
            Ok(Some(path)) => Some(match std::fs::metadata(path) {
                Ok(m) if m.is_file() => EntryKind::File,
                Ok(m) if m.is_dir() => EntryKind::Dir,
                Ok(_) => EntryKind::Other,
                Err(_) => EntryKind::Unsafe,
            }),
            Ok(None) => None,
            Err(_) => Some(EntryKind::Unsafe),
        }
    }

    /// True if `rel` is a regular file reachable without leaving the checkout.
    pub fn is_file(&self, rel: impl AsRef<Path>) -> bool {
        self.kind(rel.as_ref()) == Some(EntryKind::File)
    }

    /// True if `rel` is a directory reachable without leaving the checkout.
    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        self.kind(rel.as_ref()) == Some(EntryKind::Dir)
    }

    /// The entries of directory `rel`, sorted by name, at most [`LIST_LIMIT`] of them.
    pub fn list_dir(&self, rel: &Path) -> Result<Vec<Entry>> {
        let Some(dir) = self.resolve(rel)? else {
            return Ok(Vec::new());
        };
        let read = match std::fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: rel.to_owned(),
                    source,
                });
            }
        };
        let mut entries = Vec::new();
        for entry in read.take(LIST_LIMIT) {
            let entry = entry.map_err(|source| Error::Io {
                path: rel.to_owned(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = match entry.file_type() {
                Ok(t) if t.is_file() => EntryKind::File,
                Ok(t) if t.is_dir() => EntryKind::Dir,
                Ok(t) if t.is_symlink() => self.kind(&rel.join(&name)).unwrap_or(EntryKind::Unsafe),
                _ => EntryKind::Other,
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
}

/// Splits a relative path into components; absolute paths and prefixes are refused.
fn push_relative(out: &mut Vec<OsString>, path: &Path, whole: &Path) -> Result<()> {
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => out.push(OsString::from("..")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path(
                    whole,
                    "an absolute path is outside the checkout",
                ));
            }
        }
    }
    Ok(())
}

fn display_rel(done: &[OsString], part: &OsString) -> String {
    let mut p = PathBuf::new();
    p.extend(done);
    p.push(part);
    p.display().to_string()
}

fn unsafe_path(path: &Path, reason: &str) -> Error {
    Error::UnsafePath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Normalises a repo-relative path lexically (no filesystem access) and refuses one that is
/// absolute or climbs above the root. Returns it with `/` separators, `.` for the root.
pub fn normalize_relative(path: &str) -> std::result::Result<String, String> {
    if path.starts_with('/') || path.starts_with('~') {
        return Err(format!(
            "{path:?} is absolute; give a path inside the repository"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{path:?} leads outside the repository"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        Ok(".".to_owned())
    } else {
        Ok(parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Checkout) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("repo");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/file.txt"), "inside").unwrap();
        std::fs::write(outer.path().join("secret.txt"), "outside").unwrap();
        symlink("b/file.txt", root.join("a/ok-link")).unwrap();
        symlink("../../secret.txt", root.join("a/escape")).unwrap();
        symlink("/etc/passwd", root.join("abs")).unwrap();
        symlink("a", root.join("dir-link")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let checkout = Checkout::open(&root).unwrap();
        (outer, checkout)
    }

    #[test]
    fn follows_symlinks_that_stay_inside() {
        let (_t, c) = tree();
        let text = c.read_text(Path::new("a/ok-link"), 100).unwrap();
        assert_eq!(text.as_deref(), Some("inside"));
        let text = c.read_text(Path::new("dir-link/b/file.txt"), 100).unwrap();
        assert_eq!(text.as_deref(), Some("inside"));
        assert!(c.is_dir("dir-link/b"));
    }

    #[test]
    fn refuses_symlinks_that_leave() {
        let (_t, c) = tree();
        for rel in ["a/escape", "abs", "../secret.txt", "/etc/passwd", "loop1"] {
            let err = c.read_text(Path::new(rel), 100).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{rel}: {err}");
            assert!(!c.is_file(rel), "{rel}");
        }
        let err = c
            .read_text(Path::new("a/escape"), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the checkout"), "{err}");
    }

    #[test]
    fn caps_the_size() {
        let (_t, c) = tree();
        let err = c.read_text(Path::new("a/b/file.txt"), 3).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 3, .. }), "{err}");
    }

    #[test]
    fn missing_is_none_and_listing_marks_unsafe_links() {
        let (_t, c) = tree();
        assert_eq!(c.read_text(Path::new("nope/x"), 10).unwrap(), None);
        assert_eq!(c.read_text(Path::new("a/b/file.txt/x"), 10).unwrap(), None);
        let entries = c.list_dir(Path::new(".")).unwrap();
        let kinds: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert!(kinds.contains(&("abs", EntryKind::Unsafe)), "{kinds:?}");
        assert!(kinds.contains(&("dir-link", EntryKind::Dir)), "{kinds:?}");
    }

    #[test]
    fn normalizes_relative_paths() {
        assert_eq!(normalize_relative("./apps//api/").unwrap(), "apps/api");
        assert_eq!(normalize_relative("apps/../x").unwrap(), "x");
        assert_eq!(normalize_relative(".").unwrap(), ".");
        assert!(normalize_relative("../x").is_err());
        assert!(normalize_relative("/etc").is_err());
        assert!(normalize_relative("a/../../b").is_err());
    }
}
