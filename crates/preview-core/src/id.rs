//! Validated GitHub names and the ids a preview is known by.
//!
//! # Scheme
//!
//! * A repository's **slug** is the human `{owner}-{repo}`, lowercased, with every character
//!   outside `[a-z0-9-]` (GitHub allows `.` and `_` in names) turned into `-`, and cut to 54
//!   characters. That is the *base slug*.
//! * Different repositories can share a base slug: `a-b/c` and `a/b-c` both give `a-b-c`, and so
//!   do `a/b.c` and `a/b_c`. The [`SlugRegistry`] therefore hands out slugs, first come first
//!   served: the first repository to ask gets its base slug, a later one whose base slug is taken
//!   gets `{base}-{h}`, where `h` is 8 hex digits of a hash of its lowercased `owner/name` (and of a
//!   counter, should even that be taken). The registry is persisted with the deployments, so a
//!   repository keeps its slug for good and no two repositories ever share one.
//! * A preview's **id** is `{slug}-pr-{N}`. The slug is read back by cutting the last `-pr-{N}`,
//!   so distinct (slug, PR) pairs give distinct ids.
//! * Slugs and ids use only `[a-z0-9-]`, start with a letter or digit and stay under 64 + 14
//!   characters, so they are valid Docker Compose project names, file names, URL path segments
//!   and (the slug) DNS labels. The preview's URL path is `/{slug}/pr-{N}/`.
//!
//! Owner and repository names compare case-insensitively, as on GitHub.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Longest owner login accepted (GitHub's limit is 39; managed users add `_shortcode`).
pub const MAX_OWNER_LEN: usize = 64;
/// Longest repository name GitHub allows.
pub const MAX_REPO_LEN: usize = 100;
/// Longest branch name accepted, in bytes.
pub const MAX_BRANCH_LEN: usize = 255;
/// Longest base slug, so that a disambiguated slug still fits a 63-character DNS label.
const MAX_BASE_SLUG_LEN: usize = 54;

/// Checks an owner login: ASCII letters, digits, `-` and `_`, starting with a letter or digit.
pub fn validate_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(invalid(
            "repository owner",
            format!("must be 1 to {MAX_OWNER_LEN} characters"),
        ));
    }
    if !owner.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid(
            "repository owner",
            "must start with a letter or digit",
        ));
    }
    if let Some(c) = owner
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(invalid(
            "repository owner",
            format!("character {c:?} is not allowed (letters, digits, '-', '_')"),
        ));
    }
    Ok(())
}

/// Checks a repository name: ASCII letters, digits, `.`, `-` and `_`; not `.` or `..`.
pub fn validate_repo_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_REPO_LEN {
        return Err(invalid(
            "repository name",
            format!("must be 1 to {MAX_REPO_LEN} characters"),
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("repository name", "must not be '.' or '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(invalid(
            "repository name",
            format!("character {c:?} is not allowed (letters, digits, '.', '-', '_')"),
        ));
    }
    Ok(())
}

/// A repository's `owner/name`, validated, kept as GitHub spells it, compared case-insensitively.
#[derive(Clone)]
pub struct RepoFullName {
    owner: String,
    name: String,
    key: String,
}

impl RepoFullName {
    /// Validates both parts.
    pub fn new(owner: &str, name: &str) -> Result<Self> {
        validate_owner(owner)?;
        validate_repo_name(name)?;
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
            key: format!(
                "{}/{}",
                owner.to_ascii_lowercase(),
                name.to_ascii_lowercase()
            ),
        })
    }

    /// Parses `owner/name`.
    pub fn parse(full: &str) -> Result<Self> {
        let (owner, name) = full
            .split_once('/')
            .ok_or_else(|| invalid("repository", format!("{full:?} is not owner/name")))?;
        Self::new(owner, name)
    }

    /// The owner login as GitHub spells it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository name as GitHub spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `owner/name` as GitHub spells it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Lowercased `owner/name`: the identity of the repository.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for RepoFullName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for RepoFullName {}
impl std::hash::Hash for RepoFullName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for RepoFullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl fmt::Debug for RepoFullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoFullName({self})")
    }
}

/// A pull request number, in `1..=2^31`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrNumber(u32);

impl PrNumber {
    /// Largest number accepted.
    pub const MAX: u64 = 1 << 31;

    /// Checks the range.
    pub fn new(n: u64) -> Result<Self> {
        if n == 0 || n > Self::MAX {
            return Err(invalid(
                "pull request number",
                format!("{n} is outside 1..={}", Self::MAX),
            ));
        }
        Ok(Self(n as u32))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PrNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A full commit sha: 40 hex digits, kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    /// Checks for exactly 40 hex digits (either case) and lowercases them.
    pub fn parse(sha: &str) -> Result<Self> {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("head sha", "must be 40 hex digits"));
        }
        Ok(Self(sha.to_ascii_lowercase()))
    }

    /// The sha.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 7 digits, for humans.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch name valid by `git check-ref-format --branch` (and not starting with `-`, so it can
/// never be read as an option).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BranchName(String);

impl BranchName {
    /// Applies git's rules for ref names to `refs/heads/{name}`; `field` names the value in errors.
    pub fn parse_field(name: &str, field: &str) -> Result<Self> {
        check_ref_format(name).map_err(|reason| invalid(field, reason))?;
        Ok(Self(name.to_owned()))
    }

    /// [`BranchName::parse_field`] with the field called "branch".
    pub fn parse(name: &str) -> Result<Self> {
        Self::parse_field(name, "branch")
    }

    /// The branch name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rules of git-check-ref-format(1), for a branch name.
fn check_ref_format(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_BRANCH_LEN {
        return Err(format!("must be at most {MAX_BRANCH_LEN} bytes"));
    }
    if name.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if name == "@" {
        return Err("must not be '@'".into());
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err("must not start or end with '/'".into());
    }
    if name.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    for bad in ["..", "@{", "//"] {
        if name.contains(bad) {
            return Err(format!("must not contain {bad:?}"));
        }
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(format!("character {c:?} is not allowed"));
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("no path component may start with '.'".into());
        }
        if component.ends_with(".lock") {
            return Err("no path component may end with '.lock'".into());
        }
    }
    Ok(())
}

/// The part of a preview's URL and id that names its repository (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoSlug(String);

impl RepoSlug {
    /// The base slug of a repository: `{owner}-{repo}`, lowercased, `[a-z0-9-]` only, at most 54
    /// characters. Not unique; [`SlugRegistry`] makes it so.
    pub fn base_for(repo: &RepoFullName) -> Self {
        let mut s: String = repo
            .key()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        s.truncate(MAX_BASE_SLUG_LEN);
        Self(s)
    }

    /// Checks an existing slug (from the store): `[a-z0-9-]`, starting with a letter or digit, at
    /// most 63 characters.
    pub fn parse(slug: &str) -> Result<Self> {
        let ok = !slug.is_empty()
            && slug.len() <= 63
            && slug.as_bytes()[0].is_ascii_alphanumeric()
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid(
                "slug",
                format!("{slug:?} is not 1-63 of [a-z0-9-] starting with a letter or digit"),
            ));
        }
        Ok(Self(slug.to_owned()))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn disambiguated(base: &RepoSlug, repo_key: &str, attempt: u32) -> Self {
        let mut h = Fnv1a::new();
        h.write(repo_key.as_bytes());
        if attempt > 0 {
            h.write(b"#");
            h.write(attempt.to_string().as_bytes());
        }
        Self(format!("{}-{:08x}", base.0, h.finish() as u32))
    }
}

impl fmt::Display for RepoSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, which `DefaultHasher` does not promise.
/// Only used to tell slugs apart; the registry checks for collisions.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        // Fold the high half in, so the 32 bits kept depend on every input byte's full mixing.
        self.0 ^ (self.0 >> 32)
    }
}

/// The slugs handed out so far, one per repository and one repository per slug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlugRegistry {
    by_repo: BTreeMap<String, RepoSlug>,
    by_slug: BTreeMap<RepoSlug, String>,
}

impl SlugRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slug of `repo`, handing out a new one on first use (see the module docs).
    pub fn slug_for(&mut self, repo: &RepoFullName) -> RepoSlug {
        if let Some(slug) = self.by_repo.get(repo.key()) {
            return slug.clone();
        }
        let base = RepoSlug::base_for(repo);
        let mut candidate = base.clone();
        let mut attempt = 0;
        while self.by_slug.contains_key(&candidate) {
            candidate = RepoSlug::disambiguated(&base, repo.key(), attempt);
            attempt += 1;
        }
        self.by_repo
            .insert(repo.key().to_owned(), candidate.clone());
        self.by_slug
            .insert(candidate.clone(), repo.key().to_owned());
        candidate
    }

    /// The slug already handed out to `repo`, if any.
    pub fn get(&self, repo: &RepoFullName) -> Option<&RepoSlug> {
        self.by_repo.get(repo.key())
    }

    /// The lowercased `owner/name` holding `slug`, if any.
    pub fn repo_of(&self, slug: &RepoSlug) -> Option<&str> {
        self.by_slug.get(slug).map(String::as_str)
    }

    /// Restores one entry (when loading the store); refuses a second slug for a repository or a
    /// second repository for a slug.
    pub fn restore(&mut self, repo_key: &str, slug: RepoSlug) -> Result<()> {
        let repo = RepoFullName::parse(repo_key)?;
        if repo.key() != repo_key {
            return Err(invalid(
                "slug registry",
                format!("key {repo_key:?} is not lowercase"),
            ));
        }
        if self.by_repo.contains_key(repo_key) {
            return Err(invalid(
                "slug registry",
                format!("{repo_key} has two slugs"),
            ));
        }
        if let Some(other) = self.by_slug.get(&slug) {
            return Err(invalid(
                "slug registry",
                format!("slug {slug} is held by both {other} and {repo_key}"),
            ));
        }
        self.by_repo.insert(repo_key.to_owned(), slug.clone());
        self.by_slug.insert(slug, repo_key.to_owned());
        Ok(())
    }

    /// Every (lowercased `owner/name`, slug) pair, sorted by repository.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &RepoSlug)> {
        self.by_repo.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many repositories hold a slug.
    pub fn len(&self) -> usize {
        self.by_repo.len()
    }

    /// Whether no slug was handed out yet.
    pub fn is_empty(&self) -> bool {
        self.by_repo.is_empty()
    }
}

/// A preview's id: `{slug}-pr-{N}` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreviewId {
    id: String,
    slug_len: usize,
    pr: PrNumber,
}

impl PreviewId {
    /// The id of PR `pr` of the repository holding `slug`.
    pub fn new(slug: &RepoSlug, pr: PrNumber) -> Self {
        Self {
            id: format!("{}-pr-{}", slug.as_str(), pr.get()),
            slug_len: slug.as_str().len(),
            pr,
        }
    }

    /// Parses and checks an id, for example from a URL path.
    pub fn parse(id: &str) -> Result<Self> {
        let bad = || {
            invalid(
                "preview id",
                format!("{id:?} is not of the form {{slug}}-pr-{{N}}"),
            )
        };
        let (slug, n) = id.rsplit_once("-pr-").ok_or_else(bad)?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
            return Err(bad());
        }
        let pr = PrNumber::new(n.parse::<u64>().map_err(|_| bad())?)?;
        let slug = RepoSlug::parse(slug)?;
        Ok(Self::new(&slug, pr))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The repository's slug.
    pub fn slug(&self) -> RepoSlug {
        RepoSlug(self.id[..self.slug_len].to_owned())
    }

    /// The pull request number.
    pub fn pr(&self) -> PrNumber {
        self.pr
    }

    /// The path the preview is served under: `/{slug}/pr-{N}/`.
    pub fn url_path(&self) -> String {
        format!("/{}/pr-{}/", &self.id[..self.slug_len], self.pr)
    }

    /// The DNS label of the preview's own hostname, `{slug}-pr-{N}`: at most 63 characters of
    /// `[a-z0-9-]`, never starting or ending with `-`, so that one wildcard certificate for
    /// `*.{domain}` covers every preview. A longer (or IDNA-looking) id keeps the start of its
    /// slug and gets a short hash of the whole id, so the label stays unique and stable.
    pub fn host_label(&self) -> String {
        self.host_label_within(63)
    }

    /// The DNS label of a second web service's own hostname, `{slug}-pr-{N}-{label}` (see
    /// [`crate::sanitize::HOSTNAME_LABEL`]): the preview's label, shortened and hashed as
    /// [`Self::host_label`] does when the whole would pass 63 characters. `label` is a checked
    /// [`crate::sanitize::is_service_label`], so it has no `pr` part: the last `-pr-{N}` of a
    /// hostname tells which preview it is, and only a service's hostname has more after it, so
    /// no service's host is ever another preview's or another service's.
    pub fn service_host_label(&self, label: &str) -> String {
        let budget = 63usize.saturating_sub(label.len() + 1);
        format!("{}-{label}", self.host_label_within(budget))
    }

    fn host_label_within(&self, max: usize) -> String {
        let id = &self.id;
        let plain_ok = id.len() <= max
            && !id.starts_with('-')
            && id.get(2..4) != Some("--")
            && !id[..self.slug_len].ends_with('-');
        if plain_ok {
            return id.clone();
        }
        // FNV-1a: stable across versions and machines, which std's hasher is not.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let suffix = format!("-{:06x}-pr-{}", hash & 0xff_ffff, self.pr);
        let keep = max.saturating_sub(suffix.len());
        let head = id[..self.slug_len]
            .chars()
            .take(keep)
            .collect::<String>()
            .split('-')
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let head = if head.is_empty() {
            "p".to_owned()
        } else {
            head
        };
        format!("{head}{suffix}")
    }
}

impl fmt::Display for PreviewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl AsRef<str> for PreviewId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl std::borrow::Borrow<str> for PreviewId {
    fn borrow(&self) -> &str {
        &self.id
    }
}

macro_rules! string_serde {
    ($ty:ty, $parse:expr, $as_str:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str($as_str(self))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(PreviewId, PreviewId::parse, PreviewId::as_str);
string_serde!(RepoSlug, RepoSlug::parse, RepoSlug::as_str);
string_serde!(CommitSha, CommitSha::parse, CommitSha::as_str);
string_serde!(BranchName, BranchName::parse, BranchName::as_str);

impl Serialize for RepoFullName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for RepoFullName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        RepoFullName::parse(&s).map_err(serde::de::Error::custom)
    }
}
impl Serialize for PrNumber {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}
impl<'de> Deserialize<'de> for PrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        PrNumber::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_labels_are_dns_labels_of_at_most_63() {
        let is_label = |l: &str| {
            l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.get(2..4) != Some("--")
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let id = |slug: &str, pr: u64| {
            PreviewId::new(&RepoSlug::parse(slug).unwrap(), PrNumber::new(pr).unwrap())
        };
        assert_eq!(
            id("octo-org-hello-api", 7).host_label(),
            "octo-org-hello-api-pr-7"
        );
        let long = "a".repeat(54) + "-x1";
        let label = id(&long, 2_147_483_647).host_label();
        assert!(is_label(&label), "{label}");
        assert!(label.ends_with("-pr-2147483647"), "{label}");
        assert_eq!(label, id(&long, 2_147_483_647).host_label(), "stable");
        assert_ne!(
            label,
            id(&("a".repeat(54) + "-x2"), 2_147_483_647).host_label(),
            "slugs that share a prefix stay apart"
        );
        for slug in ["xn--abc", "ab--cd", "trailing-", "a-"] {
            let label = id(slug, 1).host_label();
            assert!(is_label(&label), "{slug}: {label}");
        }
    }

    use super::*;

    fn repo(s: &str) -> RepoFullName {
        RepoFullName::parse(s).unwrap()
    }

    #[test]
    fn predecessor_collision_cannot_happen() {
        let mut reg = SlugRegistry::new();
        let a = reg.slug_for(&repo("a-b/c"));
        let b = reg.slug_for(&repo("a/b-c"));
        let c = reg.slug_for(&repo("a/b.c"));
        let d = reg.slug_for(&repo("A/B_C"));
        assert_eq!(a.as_str(), "a-b-c");
        let all = [&a, &b, &c, &d];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert!(b.as_str().starts_with("a-b-c-") && b.as_str().len() == "a-b-c-".len() + 8);
        // Stable: asking again gives the same slug; case does not matter.
        assert_eq!(reg.slug_for(&repo("A-B/C")), a);
        assert_eq!(reg.slug_for(&repo("a/B-c")), b);
    }

    #[test]
    fn human_slug_kept_when_unique() {
        let mut reg = SlugRegistry::new();
        assert_eq!(
            reg.slug_for(&repo("Preview-Deployer/web.app")).as_str(),
            "preview-deployer-web-app"
        );
        let id = PreviewId::new(
            &reg.slug_for(&repo("octo/hello")),
            PrNumber::new(42).unwrap(),
        );
        assert_eq!(id.as_str(), "octo-hello-pr-42");
        assert_eq!(id.url_path(), "/octo-hello/pr-42/");
    }

    #[test]
    fn hash_collisions_are_resolved_by_the_registry() {
        let mut reg = SlugRegistry::new();
        let r = repo("a/b-c");
        let base = RepoSlug::base_for(&r);
        // Someone already holds both the base slug and r's first disambiguated slug.
        reg.restore("x/a-b-c", base.clone()).unwrap();
        reg.restore("y/zz", RepoSlug::disambiguated(&base, r.key(), 0))
            .unwrap();
        let s = reg.slug_for(&r);
        assert_eq!(s, RepoSlug::disambiguated(&base, r.key(), 1));
        assert_eq!(reg.repo_of(&s), Some("a/b-c"));
    }

    #[test]
    fn ids_round_trip_and_are_safe() {
        let mut reg = SlugRegistry::new();
        for (name, n) in [
            ("a/b", 1u64),
            ("x-pr-3/y", 4),
            ("o/pr-9", 2147483648),
            ("O/_.-", 7),
            (&format!("{}/{}", "o".repeat(39), "r".repeat(100)), 5),
        ] {
            let slug = reg.slug_for(&repo(name));
            let id = PreviewId::new(&slug, PrNumber::new(n).unwrap());
            let back = PreviewId::parse(id.as_str()).unwrap();
            assert_eq!(back, id);
            assert_eq!(back.slug(), slug);
            assert_eq!(back.pr().get() as u64, n);
            assert!(id.as_str().len() <= 63 + 14);
            assert!(id.as_str().as_bytes()[0].is_ascii_alphanumeric());
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
        for bad in [
            "",
            "a",
            "-a-pr-1",
            "a-pr-0",
            "a-pr-01",
            "a-pr-x",
            "A-pr-1",
            "a/b-pr-1",
            "../x-pr-1",
            "a-pr-2147483649",
        ] {
            assert!(PreviewId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_github() {
        assert!(RepoFullName::parse("octo-cat/Hello-World.js_2").is_ok());
        for bad in [
            "noslash", "/r", "o/", "-o/r", "o o/r", "o/r r", "o/.", "o/..", "o/r/x", "ö/r",
        ] {
            assert!(RepoFullName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(repo("Octo/Hello"), repo("octo/hello"));
        assert_eq!(repo("Octo/Hello").to_string(), "Octo/Hello");
    }

    #[test]
    fn pr_number_range() {
        assert!(PrNumber::new(0).is_err());
        assert!(PrNumber::new(1).is_ok());
        assert!(PrNumber::new(1 << 31).is_ok());
        assert!(PrNumber::new((1 << 31) + 1).is_err());
    }

    #[test]
    fn sha_is_40_hex() {
        let s = CommitSha::parse("EC26C3E57CA3A959CA5AAD62DE7213C562F8C821").unwrap();
        assert_eq!(s.as_str(), "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
        assert_eq!(s.short(), "ec26c3e");
        for bad in ["", "abc", &"g".repeat(40), &"a".repeat(41), &"a".repeat(64)] {
            assert!(CommitSha::parse(bad).is_err());
        }
    }

    #[test]
    fn branches_follow_check_ref_format() {
        for good in [
            "main",
            "feature/x",
            "fix-1.2",
            "user/ünïcode",
            "a.b/c",
            "dependabot/npm_and_yarn/lodash-4.17.21",
            "x@y",
        ] {
            assert!(BranchName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "@",
            "/a",
            "a/",
            "a.",
            "a..b",
            "a@{1}",
            "a//b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a\u{7f}",
            "a\tb",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(BranchName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn serde_as_strings() {
        let id = PreviewId::parse("octo-hello-pr-3").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"octo-hello-pr-3\"");
        assert_eq!(serde_json::from_str::<PreviewId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PreviewId>("\"../etc\"").is_err());
        let r: RepoFullName = serde_json::from_str("\"Octo/Hello\"").unwrap();
        assert_eq!(r.full_name(), "Octo/Hello");
    }
}
