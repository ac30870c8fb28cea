//! Process-wide calls with no safe wrapper: `fork` of a single-threaded process
//! (the guard), `_exit`, and glibc's malloc arena limit.

use std::io;

pub use nix::unistd::ForkResult;

/// `fork()`, refused unless the calling process has exactly one thread.
///
/// A fork copies only the calling thread; a lock another thread held (the
/// allocator's, stdout's) would stay locked forever in the child. With one thread
/// there is no other thread, and none can appear while we are the one running,
/// so the child may use the standard library as usual.
pub fn fork_single_threaded() -> io::Result<ForkResult> {
    match crate::procfs::stat_field("self", 20) {
        Some(1) => {}
        n => {
            return Err(io::Error::other(format!(
                "the process runs {} threads",
                n.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
            )));
        }
    }
    // SAFETY: the process has one thread (checked above, and only this thread
    // could start another), so the child inherits no lock held by a thread that
    // does not exist there: nix's documented precondition for `fork`.
    Ok(unsafe { nix::unistd::fork() }?)
}

/// `_exit(code)`: ends the process at once, without running destructors, atexit
/// handlers or flushing stdio buffers (a forked child must not flush what it
/// copied from its parent).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// glibc's `mallopt(M_ARENA_MAX, n)`: at most `n` malloc arenas. glibc only; the
/// caller checks `target_env`. Call before other threads start allocating.
#[cfg(target_env = "gnu")]
pub(crate) fn set_malloc_arena_max(n: i32) {
    // SAFETY: mallopt only sets an allocator tunable (glibc takes its own lock
    // for it); no memory of ours is passed.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
}
