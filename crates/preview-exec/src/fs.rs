//! File-system calls std does not offer (at the workspace's Rust version): swapping two paths in
//! one step, proving that no other process has a file open, reserving a file's disk space in one
//! piece, and advisory locks.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Swaps two paths atomically: renameat2(2) with `RENAME_EXCHANGE`. A reader of either path sees
/// the old file or the new one, never neither. Fails with `EINVAL` where the file system cannot.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes a write lease on `file` (fcntl(2) `F_SETLEASE`). The kernel grants it only while no
/// other open file refers to the same inode, so success proves that nobody else is reading the
/// file; `WouldBlock` means somebody is. While the lease is held, another process that opens the
/// file waits until it is released (closing `file` releases it). The lease-break notice is sent
/// as `SIGURG`, which is ignored by default (`SIGIO`, the kernel's default, would end the process).
/// Other errors mean leases are not available here (another owner, a file system without them).
pub fn take_write_lease(file: &File) -> io::Result<()> {
    /// `F_SETSIG` from <fcntl.h> (the same on every Linux architecture; the libc crate lacks it).
    const F_SETSIG: libc::c_int = 10;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns, with integer arguments only.
    #[allow(unsafe_code)]
    let rc = unsafe {
        if libc::fcntl(fd, F_SETSIG, libc::SIGURG) == 0 {
            libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK)
        } else {
            -1
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Locks `file` (flock(2)), shared with other shared holders or alone, waiting as long as it
/// takes; closing `file` unlocks it. Each open of the file is a holder of its own, in one
/// process as between processes.
pub fn lock(file: &File, shared: bool) -> io::Result<()> {
    let operation = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    loop {
        // SAFETY: flock on a descriptor `file` owns, with integer arguments only.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reserves disk space for the first `len` bytes of `file` without changing its size (fallocate(2)
/// with `FALLOC_FL_KEEP_SIZE`), in as few pieces as the file system can. A file rewritten in
/// place then stays in one piece as it grows, and an fsync writes it with one request instead
/// of one per fragment. Fails with [`io::ErrorKind::Unsupported`] where the file system cannot.
pub fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate on a descriptor `file` owns, with integer arguments only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Err(io::Error::new(io::ErrorKind::Unsupported, err)),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "A").unwrap();
        std::fs::write(&b, "B").unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "B");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "A");
        let err = exchange(&a, &dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_write_lease_is_refused_while_another_file_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let reader = File::open(&path).unwrap();
        let err = take_write_lease(&writer).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(reader);
        take_write_lease(&writer).unwrap();
    }

    #[test]
    fn reserve_takes_disk_space_but_keeps_the_size() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        reserve(&file, 256 * 1024).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 1);
        assert!(
            meta.blocks() * 512 >= 256 * 1024,
            "{} blocks",
            meta.blocks()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }
}
