//! Who may see a repository's previews: HTTP basic auth and an allowlist of client CIDRs,
//! enforced by nginx. One access file per repository (`{owner}.{name}.conf`, rendered from
//! `templates/nginx-access.conf.j2`) is included by every preview's location or server block
//! through a glob that matches nothing while the repository is public, so a change applies to
//! live previews at the next nginx reload, without redeploying them.
//!
//! The password hash is SHA-512-crypt (`$6$`), which nginx hands to the system's `crypt(3)`
//! (glibc/libxcrypt on Debian). nginx checks the password on every request, in its event loop,
//! so the default 5,000 rounds are kept: a slow hash would stall every preview behind a page's
//! assets (on the 2-core test VM under load: about 9 ms a check, against about 670 ms for bcrypt
//! at cost 12).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::id::RepoFullName;
use crate::{Error, Result};

/// Longest basic-auth user name accepted.
pub const MAX_USER_LEN: usize = 64;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (SHA-512-crypt's work grows with the length).
pub const MAX_PASSWORD_LEN: usize = 256;
/// Most CIDRs in one allowlist.
pub const MAX_CIDRS: usize = 64;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A client network in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`); a bare address is one
/// host (`/32` or `/128`). Host bits must be zero, so what is written is what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientCidr {
    network: IpAddr,
    prefix: u8,
}

impl ClientCidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl FromStr for ClientCidr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let field = "CIDR";
        if text.is_empty() || text.len() > 64 {
            return Err(invalid(
                field,
                format!("{text:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32"),
            ));
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            invalid(
                field,
                format!("{text:?}: {addr:?} is not an IPv4 or IPv6 address (e.g. 203.0.113.0/24, 2001:db8::/32)"),
            )
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
                    return Err(invalid(
                        field,
                        format!(
                            "{text:?}: the prefix length {p:?} is not a number from 0 to {max}"
                        ),
                    ));
                }
                let n: u8 = p.parse().unwrap_or(u8::MAX);
                if n > max {
                    return Err(invalid(
                        field,
                        format!("{text:?}: the prefix length {n} is more than {max}"),
                    ));
                }
                n
            }
        };
        let masked = mask(network, prefix);
        if masked != network {
            return Err(invalid(
                field,
                format!(
                    "{text:?} has bits set after the first {prefix}; the network is {masked}/{prefix}"
                ),
            ));
        }
        Ok(Self { network, prefix })
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - prefix))
            };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - prefix))
            };
            IpAddr::V6(kept.into())
        }
    }
}

impl fmt::Display for ClientCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for ClientCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a basic-auth user name: 1 to 64 printable ASCII characters, no space or `:` (the
/// htpasswd separator), not starting with `#` (a comment to nginx).
pub fn validate_user(user: &str) -> Result<()> {
    let field = "basic-auth user";
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_USER_LEN} characters"),
        ));
    }
    if let Some(c) = user.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(invalid(
            field,
            format!("character {c:?} is not allowed (printable ASCII without spaces or ':')"),
        ));
    }
    if user.starts_with('#') {
        return Err(invalid(field, "must not start with '#'"));
    }
    Ok(())
}

/// Checks a password before it is hashed: 8 to 256 characters, no control characters (a NUL
/// would cut it short in `crypt(3)`, and a newline cannot be typed at a browser's prompt).
pub fn validate_password(password: &str) -> Result<()> {
    let field = "password";
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(invalid(
            field,
            format!("must be at least {MIN_PASSWORD_LEN} characters (it has {len})"),
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PASSWORD_LEN} characters (it has {len})"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must not contain control characters (newline, tab, NUL...)",
        ));
    }
    Ok(())
}

/// A SHA-512-crypt hash (`$6$[rounds=N$]salt$hash`), as nginx's `auth_basic_user_file` takes it.
/// Only this shape is accepted, so nothing else can reach the htpasswd file.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

/// The characters of crypt's base-64 alphabet.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl PasswordHash {
    /// Hashes `password` (checked with [`validate_password`]) with `salt` (1 to 16 of crypt's
    /// alphabet `[./0-9A-Za-z]`; make it random) and the default 5,000 rounds.
    pub fn new(password: &str, salt: &str) -> Result<Self> {
        validate_password(password)?;
        if salt.is_empty() || salt.len() > 16 || !salt.bytes().all(|b| CRYPT_ALPHABET.contains(&b))
        {
            return Err(invalid("salt", "must be 1 to 16 of [./0-9A-Za-z]"));
        }
        Ok(Self(sha512_crypt(
            password.as_bytes(),
            salt.as_bytes(),
            None,
        )))
    }

    /// Parses a hash made elsewhere (e.g. by `openssl passwd -6`).
    pub fn parse(text: &str) -> Result<Self> {
        let field = "password hash";
        let shape = "must be a SHA-512-crypt hash: $6$SALT$HASH or $6$rounds=N$SALT$HASH (e.g. from `openssl passwd -6`)";
        let rest = text
            .strip_prefix("$6$")
            .ok_or_else(|| invalid(field, shape))?;
        let rest = match rest.strip_prefix("rounds=") {
            Some(r) => {
                let (n, r) = r.split_once('$').ok_or_else(|| invalid(field, shape))?;
                let ok = !n.is_empty()
                    && n.len() <= 9
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && n.parse::<u32>()
                        .is_ok_and(|n| (1000..=999_999_999).contains(&n));
                if !ok {
                    return Err(invalid(field, "rounds must be 1000 to 999999999"));
                }
                r
            }
            None => rest,
        };
        let (salt, hash) = rest.split_once('$').ok_or_else(|| invalid(field, shape))?;
        let in_alphabet = |s: &str| s.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
        if salt.is_empty()
            || salt.len() > 16
            || !in_alphabet(salt)
            || hash.len() != 86
            || !in_alphabet(hash)
        {
            return Err(invalid(field, shape));
        }
        Ok(Self(text.to_owned()))
    }

    /// The hash as written to the htpasswd file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes stay out of logs and panics: they are offline-guessable.
        f.write_str("PasswordHash(..)")
    }
}

impl Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PasswordHash::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// SHA-512-crypt as specified by Ulrich Drepper ("Unix crypt using SHA-256 and SHA-512"), the
/// `$6$` scheme of glibc's and libxcrypt's `crypt(3)`. `rounds` None means the default 5,000
/// (and no `rounds=` in the result).
fn sha512_crypt(key: &[u8], salt: &[u8], rounds: Option<u32>) -> String {
    let salt = &salt[..salt.len().min(16)];
    let round_count = rounds.map_or(5000, |r| r.clamp(1000, 999_999_999));
    let b = Sha512::new()
        .chain_update(key)
        .chain_update(salt)
        .chain_update(key)
        .finalize();
    let mut a = Sha512::new().chain_update(key).chain_update(salt);
    let mut left = key.len();
    while left > 64 {
        a.update(&b[..]);
        left -= 64;
    }
    a.update(&b[..left]);
    let mut bits = key.len();
    while bits > 0 {
        if bits & 1 != 0 {
            a.update(&b[..]);
        } else {
            a.update(key);
        }
        bits >>= 1;
    }
    let a = a.finalize();
    let mut dp = Sha512::new();
    for _ in 0..key.len() {
        dp.update(key);
    }
    let dp = dp.finalize();
    let p: Vec<u8> = dp.iter().copied().cycle().take(key.len()).collect();
    let mut ds = Sha512::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let ds = ds.finalize();
    let s: Vec<u8> = ds.iter().copied().cycle().take(salt.len()).collect();
    let mut c = a;
    for round in 0..round_count {
        let mut ctx = Sha512::new();
        if round & 1 != 0 {
            ctx.update(&p);
        } else {
            ctx.update(&c[..]);
        }
        if round % 3 != 0 {
            ctx.update(&s);
        }
        if round % 7 != 0 {
            ctx.update(&p);
        }
        if round & 1 != 0 {
            ctx.update(&c[..]);
        } else {
            ctx.update(&p);
        }
        c = ctx.finalize();
    }
    let mut out = String::from("$6$");
    if rounds.is_some() {
        out.push_str(&format!("rounds={round_count}$"));
    }
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    const ORDER: [(usize, usize, usize); 21] = [
        (0, 21, 42),
        (22, 43, 1),
        (44, 2, 23),
        (3, 24, 45),
        (25, 46, 4),
        (47, 5, 26),
        (6, 27, 48),
        (28, 49, 7),
        (50, 8, 29),
        (9, 30, 51),
        (31, 52, 10),
        (53, 11, 32),
        (12, 33, 54),
        (34, 55, 13),
        (56, 14, 35),
        (15, 36, 57),
        (37, 58, 16),
        (59, 17, 38),
        (18, 39, 60),
        (40, 61, 19),
        (62, 20, 41),
    ];
    let mut push = |w: u32, n: usize| {
        let mut w = w;
        for _ in 0..n {
            out.push(CRYPT_ALPHABET[(w & 0x3f) as usize] as char);
            w >>= 6;
        }
    };
    for (x, y, z) in ORDER {
        push(
            (u32::from(c[x]) << 16) | (u32::from(c[y]) << 8) | u32::from(c[z]),
            4,
        );
    }
    push(u32::from(c[63]), 2);
    out
}

/// HTTP basic auth for a repository's previews: one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name ([`validate_user`]).
    pub user: String,
    /// The password's hash; the password itself never reaches the server.
    pub password_hash: PasswordHash,
}

impl BasicAuth {
    /// Checks the user name (the hash is checked when parsed).
    pub fn validate(&self) -> Result<()> {
        validate_user(&self.user)
    }
}

/// Who may see the previews of one repository. Both parts set means both apply: a client must be
/// in the allowlist and know the password.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicy {
    /// HTTP basic auth, if set.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Client networks allowed; empty means any.
    #[serde(default)]
    pub allow: Vec<ClientCidr>,
}

impl AccessPolicy {
    /// True when the previews are public: nothing to write for nginx.
    pub fn is_public(&self) -> bool {
        self.basic_auth.is_none() && self.allow.is_empty()
    }

    /// Checks the user name and the allowlist's size, and that no network is listed twice.
    pub fn validate(&self) -> Result<()> {
        if let Some(auth) = &self.basic_auth {
            auth.validate()?;
        }
        if self.allow.len() > MAX_CIDRS {
            return Err(invalid("allow", format!("at most {MAX_CIDRS} CIDRs")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for cidr in &self.allow {
            if !seen.insert(cidr) {
                return Err(invalid("allow", format!("{cidr} is listed twice")));
            }
        }
        Ok(())
    }
}

/// The access files of one repository in an access directory: the conf every preview includes
/// and the htpasswd file it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFiles {
    /// `{dir}/{owner}.{name}.conf`, lowercased (owners have no `.`, so the name is unambiguous).
    pub conf: std::path::PathBuf,
    /// `{dir}/{owner}.{name}.htpasswd`.
    pub htpasswd: std::path::PathBuf,
    /// The pattern previews include: the conf's path with its last letter as a glob class
    /// (`.con[f]`), so that nginx accepts it while no file matches, and it never matches a
    /// backup such as `.conf.previous`.
    pub include_pattern: String,
}

impl AccessFiles {
    /// The files of `repo` in `dir`; `dir` must be a path nginx can take unquoted
    /// (absolute, of `[A-Za-z0-9._/-]`).
    pub fn new(dir: &std::path::Path, repo: &RepoFullName) -> Result<Self> {
        let dir_text = dir.to_str().unwrap_or_default();
        if !crate::render::is_config_path(dir_text) {
            return Err(invalid(
                "access dir",
                format!(
                    "{} must be absolute, of [A-Za-z0-9._/-] only",
                    dir.display()
                ),
            ));
        }
        let stem = repo.key().replace('/', ".");
        let conf = dir.join(format!("{stem}.conf"));
        let include_pattern = format!("{}/{stem}.con[f]", dir_text.trim_end_matches('/'));
        Ok(Self {
            htpasswd: dir.join(format!("{stem}.htpasswd")),
            conf,
            include_pattern,
        })
    }
}

/// What the access files of a repository contain; both `None` for a public repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedAccess {
    /// The conf included by the previews.
    pub conf: Option<String>,
    /// The htpasswd file, when basic auth is set.
    pub htpasswd: Option<String>,
}

#[derive(Serialize)]
struct AccessContext<'a> {
    repo: String,
    basic_auth: bool,
    htpasswd: String,
    allow: Vec<String>,
    user: &'a str,
    password_hash: &'a str,
}

/// Renders the access files of `repo` under `policy`.
pub fn render_access(
    repo: &RepoFullName,
    files: &AccessFiles,
    policy: &AccessPolicy,
) -> Result<RenderedAccess> {
    policy.validate()?;
    if policy.is_public() {
        return Ok(RenderedAccess {
            conf: None,
            htpasswd: None,
        });
    }
    let context = AccessContext {
        repo: repo.full_name(),
        basic_auth: policy.basic_auth.is_some(),
        htpasswd: files.htpasswd.display().to_string(),
        allow: policy.allow.iter().map(ToString::to_string).collect(),
        user: policy.basic_auth.as_ref().map_or("", |a| a.user.as_str()),
        password_hash: policy
            .basic_auth
            .as_ref()
            .map_or("", |a| a.password_hash.as_str()),
    };
    let conf = crate::render::render_template("nginx-access.conf.j2", &context)?;
    let htpasswd = match policy.basic_auth {
        Some(_) => Some(crate::render::render_template("htpasswd.j2", &context)?),
        None => None,
    };
    Ok(RenderedAccess {
        conf: Some(conf),
        htpasswd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_crypt_matches_the_specifications_vectors() {
        // From Drepper's specification, and one made with `openssl passwd -6 -salt saltsalt`; each
        // was checked against glibc's crypt(3) on Debian 12.
        assert_eq!(
            sha512_crypt(b"Hello world!", b"saltstring", None),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        assert_eq!(
            sha512_crypt(b"Hello world!", b"saltstringsaltstring", Some(10000)),
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
        );
        assert_eq!(
            sha512_crypt(b"This is just a test", b"toolongsaltstring", Some(5000)),
            "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"
        );
        assert_eq!(
            sha512_crypt(b"pw-secret-1", b"saltsalt", None),
            "$6$saltsalt$laiNRSZtsdnm7n7dwsTYnpu4SvuD5SZtnVSj6eFc4qH1lzBFTuli6I..xfpEMpXvdxfTWQCFAkBAngasbGT430"
        );
        // A key longer than one digest exercises the 64-byte loops (checked with glibc's crypt).
        let long = "x".repeat(150);
        let hash = PasswordHash::new(&long, "abcdefgh").unwrap();
        assert_eq!(
            hash.as_str(),
            "$6$abcdefgh$es1cVW1moPCm0YUQ/j5VP4i/LuEZJ/JZpwJVNo2Ddk1qClvR17aS9pgMvujE64dFJJAaPvQCqpcSn.o0HdwO.."
        );
        assert!(PasswordHash::parse(hash.as_str()).is_ok());
    }

    #[test]
    fn cidrs_parse_both_families_and_refuse_garbage_precisely() {
        for (text, shown) in [
            ("203.0.113.0/24", "203.0.113.0/24"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
        ] {
            assert_eq!(text.parse::<ClientCidr>().unwrap().to_string(), shown);
        }
        for (text, says) in [
            ("", "is not a CIDR"),
            ("203.0.113.0/33", "more than 32"),
            ("2001:db8::/129", "more than 128"),
            ("203.0.113.5/24", "the network is 203.0.113.0/24"),
            ("2001:db8::1/32", "the network is 2001:db8::/32"),
            ("300.1.1.1/8", "not an IPv4 or IPv6 address"),
            ("example.com/24", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/", "is not a number"),
            ("10.0.0.0/-1", "is not a number"),
            ("10.0.0.0/8; deny all", "is not a number"),
            ("10.0.0.0/8/8", "is not a number"),
        ] {
            let err = text.parse::<ClientCidr>().unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.starts_with("invalid CIDR"), "{err}");
        }
    }

    #[test]
    fn user_names_and_passwords_are_checked() {
        validate_user("alice").unwrap();
        validate_user("ci.bot+preview@example.com").unwrap();
        for (user, says) in [
            ("", "1 to 64"),
            ("a:b", "':'"),
            ("a b", "' '"),
            ("tab\there", "'\\t'"),
            ("#admin", "'#'"),
            ("é", "'é'"),
        ] {
            let err = validate_user(user).unwrap_err().to_string();
            assert!(err.contains(says), "{user:?}: {err}");
        }
        assert!(validate_user(&"u".repeat(65)).is_err());
        validate_password("correct horse").unwrap();
        validate_password(&"p".repeat(MAX_PASSWORD_LEN)).unwrap();
        for (password, says) in [
            ("short", "at least 8"),
            ("with\nnewline", "control"),
            ("nul\0inside", "control"),
        ] {
            let err = validate_password(password).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        assert!(validate_password(&"p".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }

    #[test]
    fn only_sha512_crypt_hashes_are_taken() {
        let good = "$6$saltsalt$laiNRSZtsdnm7n7dwsTYnpu4SvuD5SZtnVSj6eFc4qH1lzBFTuli6I..xfpEMpXvdxfTWQCFAkBAngasbGT430";
        PasswordHash::parse(good).unwrap();
        PasswordHash::parse(&good.replace("$6$", "$6$rounds=6000$")).unwrap();
        for bad in [
            "plain",
            "{PLAIN}secret",
            "$apr1$x$y",
            "$6$saltsalt$short",
            &format!("{good}\nmallory:$6$x$y"),
            &good.replace("$6$", "$6$rounds=10$"),
            &good.replace("saltsalt", "salt:salt"),
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(
            format!("{:?}", PasswordHash::parse(good).unwrap()),
            "PasswordHash(..)",
            "a hash never shows in debug output"
        );
    }

    #[test]
    fn access_files_are_named_by_repository_and_included_by_a_glob() {
        let repo = RepoFullName::parse("Octo-Org/My.Api").unwrap();
        let files = AccessFiles::new(
            std::path::Path::new("/etc/nginx/preview-configs/access"),
            &repo,
        )
        .unwrap();
        assert_eq!(
            files.conf,
            std::path::Path::new("/etc/nginx/preview-configs/access/octo-org.my.api.conf")
        );
        assert_eq!(
            files.htpasswd,
            std::path::Path::new("/etc/nginx/preview-configs/access/octo-org.my.api.htpasswd")
        );
        assert_eq!(
            files.include_pattern,
            "/etc/nginx/preview-configs/access/octo-org.my.api.con[f]"
        );
        assert!(AccessFiles::new(std::path::Path::new("/etc/ngi nx"), &repo).is_err());
        assert!(AccessFiles::new(std::path::Path::new("relative"), &repo).is_err());
    }

    #[test]
    fn a_policy_with_a_duplicate_network_is_refused() {
        let cidr: ClientCidr = "10.0.0.0/8".parse().unwrap();
        let policy = AccessPolicy {
            basic_auth: None,
            allow: vec![cidr, cidr],
        };
        assert!(
            policy
                .validate()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        let json = r#"{"allow":["10.0.0.1/8"]}"#;
        let err = serde_json::from_str::<AccessPolicy>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the network is 10.0.0.0/8"), "{err}");
    }
}
