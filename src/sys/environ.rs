//! Wiping secret values out of agentsup's own environment block (issue 12).
//!
//! `/proc/PID/environ` shows the block the process was started with, whatever
//! `setenv` did since: `ps e`, a support engineer's `ps auxeww` pasted into a ticket,
//! or a monitoring agent collecting environments would show every key agentsup
//! inherited (the seal keeps other processes of our uid out, not root). agentsup
//! copies its environment once at start-up ([`crate::sources::ProcessEnv`]) and
//! never needs those bytes again: the values of the variables that look secret are
//! overwritten in place, so the block shows `NAME=` followed by zero bytes.
//!
//! Hand-written because no crate edits the initial environment block in place
//! (`std::env::remove_var` only drops the pointer; the bytes stay on the stack).

use std::ffi::{CStr, c_char};

unsafe extern "C" {
    /// The process's environment: a NULL-terminated array of `NAME=value`
    /// C strings (environ(7)).
    static mut environ: *mut *mut c_char;
}

/// Overwrites with zero bytes, in place, the value of every `NAME=value` entry of
/// the environment for which `wipe(name, value)` is true; returns how many.
/// Afterwards those variables read as empty.
///
/// Call it only while agentsup is single-threaded (the start of `main`): another
/// thread reading the environment meanwhile would race these writes. Reading the
/// environment later is fine; setting variables is not something agentsup does.
pub fn wipe_values(wipe: impl Fn(&str, &str) -> bool) -> usize {
    let mut wiped = 0;
    // SAFETY: reading the `environ` pointer itself; at the start of `main` no other
    // thread exists to change it (see above).
    let mut entry_ptr = unsafe { environ };
    if entry_ptr.is_null() {
        return 0;
    }
    loop {
        // SAFETY: `entry_ptr` points into the NULL-terminated `environ` array: it
        // starts at its first element and advances only past non-NULL ones.
        let entry = unsafe { *entry_ptr };
        if entry.is_null() {
            return wiped;
        }
        // SAFETY: every element of `environ` is a NUL-terminated C string.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
            let value_len = bytes.len() - eq - 1;
            let matches = value_len > 0
                && match (
                    std::str::from_utf8(&bytes[..eq]),
                    std::str::from_utf8(&bytes[eq + 1..]),
                ) {
                    (Ok(name), Ok(value)) => wipe(name, value),
                    _ => false,
                };
            if matches {
                // SAFETY: `value_len` bytes from just after the `=` lie inside this
                // C string (before its NUL), which the process owns and may write:
                // the initial block lives on the stack, later ones on the heap. Its
                // length only shrinks (to zero), so readers still find a NUL.
                unsafe { std::ptr::write_bytes(entry.add(eq + 1), 0, value_len) };
                wiped += 1;
            }
        }
        // SAFETY: `entry` was not NULL, so the array continues past it.
        entry_ptr = unsafe { entry_ptr.add(1) };
    }
}
