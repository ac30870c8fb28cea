//! `exec` on a terminal: giving the command's group the foreground and taking
//! it back.

use std::io;
use std::os::fd::AsFd;

use nix::unistd::{getpgrp, isatty, tcgetpgrp, tcsetpgrp};

/// True when stdin is a terminal whose foreground group is ours, i.e. a child may
/// be given the terminal without stealing it from a shell that put us in the
/// background.
pub(crate) fn owns_terminal_foreground() -> bool {
    let stdin = io::stdin();
    isatty(stdin.as_fd()).unwrap_or(false) && tcgetpgrp(stdin.as_fd()) == Ok(getpgrp())
}

/// Makes our own process group the terminal's foreground group again, after a
/// child that had it exited. Needs SIGTTOU ignored (we are in the background).
pub(crate) fn reclaim_terminal() {
    let _ = tcsetpgrp(io::stdin().as_fd(), getpgrp());
}
