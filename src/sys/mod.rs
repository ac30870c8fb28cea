//! Thin, documented wrappers around the system calls that keep secrets contained
//! (issue 12): sealing agentsup's own process, closing inherited descriptors, and
//! switching a worker's credentials. New `unsafe` code goes here, each block with
//! a `// SAFETY:` note, rather than spread over the modules that use it.
//!
//! Everything called from a child between `clone`/`fork` and `exec` is marked
//! "async-signal-safe" in its docs: raw system calls only, no allocation, no lock,
//! no libc wrapper that touches process-wide state.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod child;
pub mod creds;
pub mod fd;
pub mod seal;
