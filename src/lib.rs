//! agentsup: a process supervisor for AI-agent workers.
//!
//! # Theory of operation
//!
//! Data flows one way, and each step has exactly one owner:
//!
//! 1. [`config`] mirrors `supervisor.toml` with serde and keeps spans for errors;
//!    [`plan`] turns it into the checked, resolved model (paths against the config
//!    directory, compiled globs and regexes, defaults). Everything downstream takes
//!    only the plan.
//! 2. [`sources`] loads every secret source **once** into a [`sources::Snapshot`]
//!    that records the provenance of each value. Nothing reads or writes agentsup's
//!    own environment except the `env` source and the `inherit` list, both of which
//!    receive a copy of it taken at start-up.
//! 3. `check` turns plan + snapshot into findings before anything starts.
//! 4. [`env`](mod@env) builds the exact environment of one replica, a pure function shared by
//!    `run`, `env` and `exec`.
//! 5. The supervisor spawns replicas ([`process`]), one reaper owns `waitpid`
//!    ([`reaper`]), one writer owns stdout ([`output`]) and every byte of text passes
//!    the [`redact`] matcher first. Replica transitions are a pure function
//!    ([`replica`]); exit classification lives in [`auth`].
//!
//! Linux is the target: process groups, `PR_SET_PDEATHSIG`, child subreapers and
//! `/proc` are used directly.
#![warn(missing_docs)]
// The public API is what the binary, tests, benches and fuzz targets use (see
// docs/design.md); the rest is `pub(crate)`. These keep it so: a `pub` item nothing
// outside can reach, or a reachable type outside code cannot name, is a warning
// (an error under clippy's `-D warnings`). Here rather than in Cargo.toml's
// [lints] because they are about this crate's API, not the tests' own helpers.
#![warn(unreachable_pub)]
#![warn(unnameable_types)]
// Only `sys` may hold unchecked code (issue 11): every other module uses its safe
// functions or nix's.
#![deny(unsafe_code)]

pub mod auth;
pub(crate) mod check;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub mod diag;
pub mod env;
pub(crate) mod env_report;
pub(crate) mod exec;
pub mod exit;
pub(crate) mod fleet;
pub mod fork;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod init;
pub(crate) mod keys_dir;
pub(crate) mod limits;
pub(crate) mod notify;
pub mod output;
pub(crate) mod paths;
pub mod plan;
pub(crate) mod probe;
pub mod process;
pub(crate) mod procfs;
pub mod ready;
pub mod reaper;
pub mod redact;
pub(crate) mod refresh;
pub mod replica;
pub mod secret;
pub mod signals;
pub mod sources;
pub mod status;
pub(crate) mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
pub(crate) mod validate;
pub(crate) mod watch;
