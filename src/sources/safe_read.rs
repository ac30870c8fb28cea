//! Reading a secret file without trusting it: a `dir` source's key files, `*_FILE`
//! targets and dotenv files.
//!
//! A FIFO would block `read` forever, `/dev/zero` never ends, a huge file eats
//! memory, and `metadata()` followed by `read()` can be raced by a swap. So the
//! file is opened with `O_NONBLOCK` (opening a FIFO does not wait for a writer)
//! and `O_NOFOLLOW` on the already-resolved path, the *open descriptor* is
//! `fstat`ed, only a regular file is accepted, and at most `max` bytes (plus one,
//! to detect growth) are read from that same descriptor.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(crate) use crate::plan::size::DEFAULT_MAX;

/// Why a file was refused; the text names no value.
pub(crate) type Refusal = String;

/// Reads a regular file of at most `max` bytes. `path` may be a symlink: it is
/// resolved first and, when `inside` is given, the target must stay inside that
/// directory (Kubernetes' `KEY -> ..data/KEY` does; a link to `/dev/zero` or
/// `/etc/shadow` does not).
pub(crate) fn read_regular(
    path: &Path,
    inside: Option<&Path>,
    max: u64,
) -> Result<Vec<u8>, Refusal> {
    // Kubernetes swaps `..data` atomically and then deletes the old directory: a
    // path resolved just before the swap can vanish before the open. Resolve again.
    let mut last = String::new();
    for _ in 0..3 {
        let target = resolve(path, inside)?;
        match open_checked(&target, max) {
            Ok(bytes) => return Ok(bytes),
            Err(Open::Vanished(e)) => last = e,
            Err(Open::Refused(r)) => return Err(r),
        }
    }
    Err(format!("cannot read: {last}"))
}

enum Open {
    /// ENOENT/ELOOP after resolving: retry.
    Vanished(String),
    Refused(Refusal),
}

fn resolve(path: &Path, inside: Option<&Path>) -> Result<PathBuf, Refusal> {
    let target = std::fs::canonicalize(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("cannot follow: {e} (a dangling symlink?)")
        } else {
            format!("cannot resolve: {e}")
        }
    })?;
    if let Some(dir) = inside {
        let dir =
            std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve its directory: {e}"))?;
        if !target.starts_with(&dir) {
            return Err(format!(
                "is a symlink to {}, outside the source's directory; only links that stay inside it (as Kubernetes' `..data` links do) are followed",
                target.display()
            ));
        }
    }
    Ok(target)
}

fn open_checked(target: &Path, max: u64) -> Result<Vec<u8>, Open> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(target)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ELOOP) => Open::Vanished(e.to_string()),
            Some(libc::EMFILE) | Some(libc::ENFILE) => {
                Open::Refused(format!("cannot open: {}", crate::limits::explain(&e)))
            }
            // open(2) of a Unix socket fails with ENXIO.
            Some(libc::ENXIO) => Open::Refused(format!(
                "cannot be opened ({e}): a socket or a device without a driver, not a regular file"
            )),
            _ => Open::Refused(format!("cannot be read: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Open::Refused(format!("cannot stat: {e}")))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Open::Refused(format!(
            "is {what}, not a regular file; secret files must be plain files, so it is not read"
        )));
    }
    if meta.len() > max {
        return Err(Open::Refused(too_big(meta.len(), max)));
    }
    read_capped(file, max).map_err(Open::Refused)
}

fn read_capped(file: File, max: u64) -> Result<Vec<u8>, Refusal> {
    let mut bytes = Vec::new();
    // One byte over the cap tells a file that grew since fstat from one that fits.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64, max));
    }
    Ok(bytes)
}

fn too_big(len: u64, max: u64) -> Refusal {
    format!(
        "is {} bytes, over the {} limit for a secret file; raise the source's `max_size` if it is meant to be this big",
        len,
        format_size(max)
    )
}

/// `64 KiB`, `1 MiB`, `1000 bytes`.
pub(crate) fn format_size(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::size::parse_size;
    use std::os::unix::fs::symlink;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(format_size(DEFAULT_MAX), "64 KiB");
    }

    #[test]
    fn hostile_files_are_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let fifo = d.join("FIFO");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&fifo, Some(d), DEFAULT_MAX).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        symlink("/dev/zero", d.join("ZERO")).unwrap();
        let e = read_regular(&d.join("ZERO"), Some(d), DEFAULT_MAX).unwrap_err();
        assert!(e.contains("outside the source's directory"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), None, DEFAULT_MAX).unwrap_err();
        assert!(e.contains("character device"), "{e}");
        std::fs::write(d.join("BIG"), vec![b'x'; 70_000]).unwrap();
        let e = read_regular(&d.join("BIG"), Some(d), DEFAULT_MAX).unwrap_err();
        assert!(e.contains("70000 bytes, over the 64 KiB limit"), "{e}");
        assert_eq!(
            read_regular(&d.join("BIG"), Some(d), 70_000).unwrap().len(),
            70_000
        );
        let sock = std::os::unix::net::UnixListener::bind(d.join("SOCK")).unwrap();
        let e = read_regular(&d.join("SOCK"), Some(d), DEFAULT_MAX).unwrap_err();
        assert!(e.contains("socket") || e.contains("cannot be read"), "{e}");
        drop(sock);
    }
}
