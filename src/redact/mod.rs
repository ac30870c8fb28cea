//! Redaction of secret values from every byte of text agentsup prints (SPEC 7).
//!
//! - `forms` lists what counts as a value's form: the value, trimmed, each line
//!   of a multi-line value, JSON- and Python-escaped, percent-encoded, base64 and
//!   hex, and for values of 16 bytes or more any run of 16 consecutive bytes of any
//!   of those (`key[:24]`).
//! - [`Redactor`] (in `matcher`) finds them all in one pass whose cost per byte does
//!   not grow with the number of secrets, in memory linear in the forms (issue 13).
//! - `terminal` turns a worker's line into what a terminal would show, so escape
//!   sequences, backspaces or NULs between pieces of a key hide nothing.
//! - `ShownLines` puts the two together for a stream of lines: worker output
//!   and `exec`'s masked output both print through it.
//!
//! Output is line-framed by [`crate::output`], so most text is redacted one complete
//! line at a time. Lines too long to buffer arrive in pieces; [`StreamRedactor`] keeps
//! just enough carry between pieces that a secret straddling a boundary is still
//! caught.
//!
//! [`SharedRedactor`] is what the supervisor and the output pumps share: it keeps the
//! current and the previous values of each name, so a rotated-out key stays redacted
//! while some replica may still print it. [`global`] is the process-wide instance that
//! agentsup's own messages (tracing, errors in `main`, panics) go through.
//!
//! This module does not decide *which* variables are secret; the caller passes the
//! pairs (SPEC 7: secret sources, secret-looking names, `secret = true`).

use std::any::Any;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::Location;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crate::secret::Sensitive;

pub(crate) mod forms;
mod lines;
mod matcher;
pub(crate) mod terminal;
mod url;

pub use forms::MIN_SECRET_LEN;
pub(crate) use lines::ShownLines;
pub use matcher::{Redactor, StreamRedactor};
pub(crate) use url::{mask_url_password, url_password, url_password_forms};

/// The redactor shared by the supervisor, the output pumps and agentsup's own
/// messages. Cloning is cheap.
///
/// Per name it keeps the values of the latest registration that brought a new
/// value and those of the one before: after a rotation the old key stays redacted
/// (a replica that has not restarted yet may still print it) until the next
/// rotation of that name, and memory does not grow with every rotation (issue 13).
#[derive(Clone, Default)]
pub struct SharedRedactor {
    inner: Arc<SharedInner>,
}

/// The values kept for one name.
#[derive(Default)]
struct Generations {
    current: Vec<Sensitive>,
    previous: Vec<Sensitive>,
    /// Values a live process still holds ([`SharedRedactor::hold`]), with how many
    /// holders: kept whatever the rotations since, for as long as one is held.
    held: Vec<(Sensitive, usize)>,
}

impl Generations {
    fn knows(&self, v: &Sensitive) -> bool {
        self.current.contains(v)
            || self.previous.contains(v)
            || self.held.iter().any(|(h, _)| h == v)
    }
}

/// Values registered for as long as the process they were given to may print
/// them: dropping it releases them (see [`SharedRedactor::hold`]).
#[must_use = "the values stay registered only while this is kept"]
pub(crate) struct Held {
    shared: SharedRedactor,
    pairs: Vec<(String, Sensitive)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.release(std::mem::take(&mut self.pairs));
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} values)", self.pairs.len())
    }
}

#[derive(Default)]
struct SharedInner {
    /// The values kept, per name; also serialises rebuilds.
    known: Mutex<BTreeMap<String, Generations>>,
    /// Readers clone the `Arc` and drop the lock at once, so a rebuild never waits
    /// for a line being redacted.
    current: RwLock<Arc<Redactor>>,
}

impl std::fmt::Debug for SharedRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedRedactor")
            .field(&*self.current())
            .finish()
    }
}

impl SharedRedactor {
    /// A shared redactor holding `pairs`.
    pub fn new(pairs: impl IntoIterator<Item = (String, Sensitive)>) -> Self {
        let shared = Self::default();
        shared.extend(pairs);
        shared
    }

    /// The redactor to use now. Hold it for one line (or one long line's pieces).
    pub(crate) fn current(&self) -> Arc<Redactor> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers values (after a load, a rotation, a reload or at a spawn).
    ///
    /// The values one call gives for a name are a batch. A batch holding a value
    /// the name has not had (in its current or previous batch) becomes the name's
    /// current batch and the current one becomes the previous, dropping what was
    /// older; a batch of known values only moves them to the current batch.
    /// Rebuilds the matcher only when the set of values changed.
    pub fn extend(&self, pairs: impl IntoIterator<Item = (String, Sensitive)>) {
        let mut batches: BTreeMap<String, Vec<Sensitive>> = BTreeMap::new();
        for (name, value) in pairs {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let batch = batches.entry(name).or_default();
            if !batch.contains(&value) {
                batch.push(value);
            }
        }
        let mut known = self.lock_known();
        let mut changed = false;
        for (name, batch) in batches {
            let g = known.entry(name).or_default();
            let is_new = |v: &Sensitive| !g.current.contains(v) && !g.previous.contains(v);
            let was_known: Vec<bool> = batch.iter().map(|v| g.knows(v)).collect();
            if batch.iter().any(is_new) {
                let mut previous = std::mem::take(&mut g.current);
                previous.retain(|v| !batch.contains(v));
                // What falls out of `previous` here stays matched only if held.
                let dropped = std::mem::replace(&mut g.previous, previous);
                changed |= dropped.iter().any(|v| !g.knows(v));
                changed |= was_known.iter().any(|k| !k);
                g.current = batch;
            } else {
                for v in batch {
                    if let Some(i) = g.previous.iter().position(|p| *p == v) {
                        g.previous.remove(i);
                        g.current.push(v);
                    }
                }
            }
        }
        if changed {
            self.rebuild(&known);
        }
    }

    /// Registers `pairs` for as long as the returned [`Held`] lives, whatever
    /// rotations happen meanwhile: the supervisor holds each replica's injected
    /// secrets until its next run, so a replica still running on a value rotated
    /// out twice (a slow stop, a rolling restart not yet at it) is still redacted.
    pub(crate) fn hold(&self, pairs: Vec<(String, Sensitive)>) -> Held {
        let mut known = self.lock_known();
        let mut changed = false;
        for (name, value) in &pairs {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let g = known.entry(name.clone()).or_default();
            changed |= !g.knows(value);
            match g.held.iter_mut().find(|(h, _)| h == value) {
                Some((_, n)) => *n += 1,
                None => g.held.push((value.clone(), 1)),
            }
        }
        if changed {
            self.rebuild(&known);
        }
        Held {
            shared: self.clone(),
            pairs,
        }
    }

    fn release(&self, pairs: Vec<(String, Sensitive)>) {
        let mut known = self.lock_known();
        let mut changed = false;
        for (name, value) in pairs {
            let Some(g) = known.get_mut(&name) else {
                continue;
            };
            if let Some(i) = g.held.iter().position(|(h, _)| *h == value) {
                g.held[i].1 -= 1;
                if g.held[i].1 == 0 {
                    g.held.remove(i);
                    changed |= !g.knows(&value);
                }
            }
        }
        if changed {
            self.rebuild(&known);
        }
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Generations>> {
        self.inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Rebuilds the matcher from every kept value; called with `known` locked, so
    /// rebuilds are serialised. Built outside the write lock so readers keep the
    /// old matcher meanwhile.
    fn rebuild(&self, known: &BTreeMap<String, Generations>) {
        let rebuilt = Arc::new(Redactor::new(known.iter().flat_map(|(name, g)| {
            let mut values: Vec<&Sensitive> = g.current.iter().chain(&g.previous).collect();
            for (h, _) in &g.held {
                if !values.contains(&h) {
                    values.push(h);
                }
            }
            values.into_iter().map(|v| (name.clone(), v.clone()))
        })));
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rebuilt;
    }

    /// Redacts a message with the current redactor.
    pub(crate) fn redact_str(&self, s: &str) -> String {
        self.current().redact_str(s).into_owned()
    }
}

static GLOBAL: OnceLock<SharedRedactor> = OnceLock::new();

/// The process-wide redactor for agentsup's own messages. The supervisor should
/// `extend` this one (or share a clone of it with the output pumps) so that its own
/// logs, errors and panics are redacted with the same values as worker output.
pub fn global() -> &'static SharedRedactor {
    GLOBAL.get_or_init(SharedRedactor::default)
}

/// Whether a variable of agentsup's own environment holds a secret by its name,
/// or by its value (a connection URL with a password).
pub fn variable_looks_secret(name: &str, value: &str) -> bool {
    crate::secret::name_looks_secret(name) || url_password(value).is_some()
}

/// Redacts a message with the global redactor, for error printing in `main`, and
/// hides credential-shaped text no source loaded
/// ([`crate::secret::hide_credential_shapes`]).
pub fn redact_message(message: &str) -> String {
    crate::secret::hide_credential_shapes(&global().redact_str(message)).into_owned()
}

/// A worker's (or a helper's) text quoted in agentsup's own messages, as a
/// terminal shows it ([`terminal::render_str`]) and then redacted with the
/// [`global`] redactor: redacting the raw text would miss a key printed in
/// pieces joined by escape sequences, which the terminal then shows whole.
pub(crate) fn redact_shown(text: &str) -> String {
    global().redact_str(&terminal::render_str(text))
}

/// Replaces the panic hook with one that redacts the message (and backtrace) with
/// the [`global`] redactor before printing to stderr. A panic message built with
/// `{}` from a value, or an `unwrap` on an error that quotes one, would otherwise
/// print a secret.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let mut text = panic_report(info.payload(), info.location(), thread.name());
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                text.push_str(&format!("stack backtrace:\n{backtrace}\n"));
            }
            std::backtrace::BacktraceStatus::Disabled => text.push_str(
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
            ),
            _ => {}
        }
        let text = redact_message(&text);
        // stderr may be closed; a panic hook has nowhere else to go.
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }));
}

/// The panic message in the shape the default hook prints, before redaction.
fn panic_report(
    payload: &dyn Any,
    location: Option<&Location<'_>>,
    thread: Option<&str>,
) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "Box<dyn Any>"
    };
    let thread = thread.unwrap_or("<unnamed>");
    match location {
        Some(l) => format!("thread '{thread}' panicked at {l}:\n{message}\n"),
        None => format!("thread '{thread}' panicked:\n{message}\n"),
    }
}

#[cfg(test)]
mod tests;
