//! Closing every descriptor a child should not inherit.
//!
//! A worker gets descriptors 0, 1 and 2 and nothing else, whatever agentsup
//! inherited: an operator's shell may hold `7<secrets/KEY` open, a container
//! runtime may pass others. Close-on-exec alone does not help with descriptors
//! agentsup never opened itself.

/// Closes every descriptor `>= first` except `keep` (pass -1 to keep none).
///
/// `close_range(2)` as a raw system call (glibc wraps it only since 2.34, musl not
/// at all); on kernels before 5.9 the descriptors listed in `/proc/self/fd` are
/// closed one by one, read with `getdents64` into a stack buffer. Async-signal-
/// safe: no allocation and no lock, so it may run in a `vfork`ed child that
/// shares agentsup's memory, or in a forked child of a multi-threaded process.
pub(crate) fn close_from_except(first: i32, keep: i32) {
    let ranges = if keep >= first {
        [(first, keep - 1), (keep + 1, i32::MAX)]
    } else {
        [(first, i32::MAX), (0, -1)]
    };
    let mut done = true;
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        // SAFETY: close_range takes two descriptor numbers and flags; it only
        // closes descriptors and touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                lo as libc::c_uint,
                hi as libc::c_uint,
                0,
            )
        };
        done &= r == 0;
    }
    if !done {
        close_listed(first, keep);
    }
}

/// The fallback of [`close_from_except`]: walks `/proc/self/fd`, closing as it
/// goes, and repeats until a pass closes nothing (closing entries mid-walk may
/// make `getdents64` skip some, as glibc's own `closefrom` fallback allows for).
fn close_listed(first: i32, keep: i32) {
    // SAFETY: open of a NUL-terminated literal path; the result is checked.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return; // no /proc: nothing more can be done without allocating
    }
    let mut buf = [0u8; 2048];
    loop {
        let mut closed_any = false;
        // SAFETY: lseek on our own directory descriptor.
        unsafe { libc::lseek(dir, 0, libc::SEEK_SET) };
        loop {
            // SAFETY: getdents64 writes at most buf.len() bytes into buf.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 19 < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let fd = parse_fd(&buf[off + 19..(off + reclen).min(n as usize)]);
                if let Some(fd) = fd {
                    if fd >= first && fd != keep && fd != dir {
                        // SAFETY: closing a descriptor number; EBADF is harmless.
                        unsafe { libc::close(fd) };
                        closed_any = true;
                    }
                }
                off += reclen;
            }
        }
        if !closed_any {
            break;
        }
    }
    // SAFETY: our own descriptor, opened above.
    unsafe { libc::close(dir) };
}

/// A NUL-terminated decimal name as a descriptor number; `.` and `..` are None.
fn parse_fd(name: &[u8]) -> Option<i32> {
    let mut v: i32 = 0;
    let mut digits = 0;
    for &b in name {
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_descriptor_numbers() {
        assert_eq!(parse_fd(b"17\0\0\0"), Some(17));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"99999999999\0"), None);
    }

    /// Both paths, in a forked child so the test harness's descriptors are safe.
    #[test]
    fn closes_everything_above_first_but_the_kept_one() {
        for fallback in [false, true] {
            let (r, w) = nix::unistd::pipe().unwrap();
            use std::os::fd::IntoRawFd;
            let (r, w) = (r.into_raw_fd(), w.into_raw_fd());
            let extra = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap()
            .into_raw_fd();
            // SAFETY: the child only makes system calls and _exits.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    if fallback {
                        close_listed(3, w);
                    } else {
                        close_from_except(3, w);
                    }
                    // Report which of 3..64 are still open, as a bit set.
                    let mut open: u64 = 0;
                    for fd in 3..64 {
                        // SAFETY: F_GETFD on a number only queries.
                        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
                            open |= 1 << fd;
                        }
                    }
                    let bytes = open.to_ne_bytes();
                    // SAFETY: writes 8 bytes from a local; _exit never returns.
                    unsafe {
                        libc::write(w, bytes.as_ptr().cast(), 8);
                        libc::_exit(0)
                    }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    // SAFETY: closing our copies of descriptors we own.
                    unsafe {
                        libc::close(w);
                        libc::close(extra);
                    }
                    let mut bytes = [0u8; 8];
                    // SAFETY: reads 8 bytes into a local.
                    let n = unsafe { libc::read(r, bytes.as_mut_ptr().cast(), 8) };
                    nix::sys::wait::waitpid(child, None).unwrap();
                    // SAFETY: our own descriptor.
                    unsafe { libc::close(r) };
                    assert_eq!(n, 8, "fallback={fallback}");
                    assert_eq!(
                        u64::from_ne_bytes(bytes),
                        1 << w,
                        "fallback={fallback}: only the kept descriptor {w} stays open"
                    );
                }
            }
        }
    }
}
