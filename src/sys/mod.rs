//! The only module allowed `unsafe` (the crate root denies it everywhere else):
//! thin, documented, safe functions over the system calls nix has no safe
//! wrapper for, or none that fits. Each `unsafe` block carries a `// SAFETY:`
//! note (`clippy::undocumented_unsafe_blocks` is on in Cargo.toml).
//!
//! - [`child`]: the one child routine every process agentsup starts goes through;
//! - [`creds`]: resolving and switching to a worker's `user`/`group`;
//! - [`environ`]: wiping secret values out of agentsup's own environment block;
//! - `fd`: closing every descriptor but stdio;
//! - [`process`]: `fork` of a single-threaded process (the guard), `_exit`,
//!   glibc's malloc arena limit;
//! - [`seal`]: agentsup non-dumpable, core limit 0 (soft and hard);
//! - `signal`: signals by number, dispositions, who sent one, and forwarding
//!   the fault signals `exec` receives from other processes;
//! - [`wait`]: `waitpid` and the `waitid(WNOWAIT)` peek, with raw statuses.
//!
//! Everywhere else, nix's safe wrappers are used directly (`killpg` with a
//! standard signal, `getpgid`, `geteuid`, `getrlimit`, `poll`, `write`, `fstat`,
//! `setpgid`, `dup2_*`, the terminal calls).
//!
//! Everything called from a child between `clone`/`fork` and `exec` is marked
//! "async-signal-safe" in its docs: raw system calls only, no allocation, no lock,
//! no libc wrapper that touches process-wide state.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod child;
pub mod creds;
pub mod environ;
pub(crate) mod fd;
pub mod process;
pub mod seal;
pub(crate) mod signal;
pub mod wait;
