//! Room for one more preview: free disk for a build (`MIN_FREE_DISK_GB`) and available memory
//! for a start (the preview's memory limit plus `MEMORY_RESERVE_MB`, against `MemAvailable` in
//! `/proc/meminfo` on one host, or the unreserved memory of the roomiest node of a swarm).
//! Reading only; the deploy job decides what to do.

use std::path::{Path, PathBuf};

/// What the disk guard watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskGuard {
    /// A path on the filesystem where images and volumes grow (Docker's root dir).
    pub path: PathBuf,
    /// Below this many free bytes, new builds wait.
    pub min_free_bytes: u64,
}

/// Where admission reads the memory a new preview can have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemorySource {
    /// `MemTotal` and `MemAvailable` of this host's meminfo file (`/proc/meminfo`): one host.
    Meminfo(PathBuf),
    /// The engine's nodes: on a swarm, the node with the most memory not reserved by tasks
    /// (Swarm places a preview by its reservations).
    Nodes,
}

/// How a deploy is admitted by memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryAdmission {
    /// Where the memory a new preview can have is read.
    pub source: MemorySource,
    /// Memory kept free beyond the previews' limits, in bytes.
    pub reserve_bytes: u64,
    /// The memory limit of each preview container, in bytes.
    pub container_limit_bytes: u64,
}

/// The two figures of `/proc/meminfo` that admission reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`, in bytes.
    pub total_bytes: u64,
    /// `MemAvailable`, in bytes: what can be given to new processes without swapping.
    pub available_bytes: u64,
}

impl MemInfo {
    /// Memory in use: total less available.
    pub fn in_use_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
}

/// Reads `MemTotal` and `MemAvailable` from the meminfo file at `path`.
pub fn read_meminfo(path: &Path) -> std::io::Result<MemInfo> {
    let text = std::fs::read_to_string(path)?;
    parse_meminfo(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: no MemTotal and MemAvailable lines in kB",
                path.display()
            ),
        )
    })
}

/// `MemTotal` and `MemAvailable` of a meminfo text (`MemAvailable:  3891204 kB`).
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    Some(MemInfo {
        total_bytes: preview_engine::meminfo_bytes(text, "MemTotal")?,
        available_bytes: preview_engine::meminfo_bytes(text, "MemAvailable")?,
    })
}

/// Size and space available to unprivileged users of the file system holding `path` (or of
/// its nearest existing ancestor).
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points to
    // writable memory of the right type; statvfs(3) only writes into it.
    #[allow(unsafe_code)]
    let (rc, stat) = unsafe {
        let rc = libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr());
        (
            rc,
            if rc == 0 {
                Some(stat.assume_init())
            } else {
                None
            },
        )
    };
    let stat = stat.filter(|_| rc == 0)?;
    // 64-bit on the Linux targets we build for.
    let block = stat.f_frsize;
    Some((stat.f_blocks * block, stat.f_bavail * block))
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    disk_space(path).map(|(_, free)| free).ok_or_else(|| {
        std::io::Error::other(format!(
            "statvfs {}: cannot read the free space",
            path.display()
        ))
    })
}

/// A Docker memory limit (`512m`, `1g`, `1.5G`, `256MiB`, `1048576`) in bytes; `None` when it
/// is not one.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    (number.is_finite() && number > 0.0).then(|| (number * factor as f64).round() as u64)
}

/// `bytes` in GB as comments show sizes: one decimal (`3.1`), two below 1 GB (`0.04`).
pub fn gb(bytes: u64) -> String {
    let gb = bytes as f64 / (1u64 << 30) as f64;
    if gb < 1.0 {
        format!("{gb:.2}")
    } else {
        format!("{gb:.1}")
    }
}

/// `bytes` in MB, rounded (`768`).
pub fn mb(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1u64 << 20) as f64)
}

/// `bytes` as a comment shows a preview's footprint: `0 B`, `28 kB`, `41 MB`, `1.2 GB`.
pub fn human(bytes: u64) -> String {
    const KB: u64 = 1 << 10;
    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;
    match bytes {
        b if b < KB => format!("{b} B"),
        b if b < MB => format!("{} kB", b.div_ceil(KB)),
        b if b < GB => format!("{} MB", (b + MB / 2) / MB),
        b => format!("{:.1} GB", b as f64 / GB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_meminfo_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meminfo");
        std::fs::write(
            &path,
            "MemTotal:        3980000 kB\nMemFree:          120000 kB\nMemAvailable:     700000 kB\nBuffers:            1000 kB\n",
        )
        .unwrap();
        let info = read_meminfo(&path).unwrap();
        assert_eq!(info.total_bytes, 3_980_000 * 1024);
        assert_eq!(info.available_bytes, 700_000 * 1024);
        assert_eq!(info.in_use_bytes(), 3_280_000 * 1024);
        std::fs::write(&path, "MemTotal: 1 kB\n").unwrap();
        let err = read_meminfo(&path).unwrap_err();
        assert!(err.to_string().contains("MemAvailable"), "{err}");
        assert!(read_meminfo(&dir.path().join("missing")).is_err());
        // This machine's own.
        let own = read_meminfo(Path::new("/proc/meminfo")).unwrap();
        assert!(own.available_bytes > 0 && own.available_bytes <= own.total_bytes);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory_limit("512m"), Some(512 << 20));
        assert_eq!(parse_memory_limit("1G"), Some(1 << 30));
        assert_eq!(parse_memory_limit("1.5g"), Some(3 << 29));
        assert_eq!(parse_memory_limit("256MiB"), Some(256 << 20));
        assert_eq!(parse_memory_limit("1048576"), Some(1 << 20));
        assert_eq!(parse_memory_limit("64kb"), Some(64 << 10));
        for bad in ["", "m", "-1m", "0", "12x", "lots"] {
            assert_eq!(parse_memory_limit(bad), None, "{bad}");
        }
    }

    #[test]
    fn free_disk_of_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_disk_bytes(dir.path()).unwrap() > 0);
        // A path not made yet counts on the filesystem it will be made on.
        assert!(free_disk_bytes(&dir.path().join("missing")).unwrap() > 0);
        assert!(free_disk_bytes(Path::new("relative/nowhere")).is_err());
    }

    #[test]
    fn sizes_as_comments_show_them() {
        assert_eq!(gb(3_328_599_654), "3.1");
        assert_eq!(gb(43 << 20), "0.04");
        assert_eq!(human(0), "0 B");
        assert_eq!(human(28_470), "28 kB");
        assert_eq!(human(41 << 20), "41 MB");
        assert_eq!(human(1_288_490_189), "1.2 GB");
        assert_eq!(mb(768 << 20), "768");
    }
}
