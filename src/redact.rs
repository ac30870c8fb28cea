//! Redaction of secret values from every byte of text agentsup prints (SPEC 7).
//!
//! One [`Redactor`] holds a single Aho-Corasick automaton over every form of every
//! secret value, so the cost per byte of output does not grow with the number of
//! secrets. Forms matched for each value (SPEC 7, crates.md §4):
//!
//! - the value itself;
//! - its whitespace-trimmed form (a key read with a stray newline is printed by the
//!   SDK without it);
//! - its percent-encoded form, upper- and lower-case hex (Google's `?key=` URLs);
//! - its escaped form as Python's `repr` prints it (`\n` as backslash-n), because
//!   httpx logs `b'Bearer <key>\n'`.
//!
//! Every form shorter than [`MIN_SECRET_LEN`] bytes is skipped: redacting `abc` or
//! `true` everywhere would mangle ordinary output and reveal the value by its gaps.
//!
//! Output is line-framed by [`crate::output`], so most text is redacted one complete
//! line at a time. Lines too long to buffer arrive in pieces; [`StreamRedactor`] keeps
//! just enough carry between pieces that a secret straddling a boundary is still
//! caught.
//!
//! [`SharedRedactor`] is what the supervisor and the output pumps share: it keeps the
//! union of every value ever seen, so a rotated-out key stays redacted while some
//! replica may still print it. [`global`] is the process-wide instance that
//! agentsup's own messages (tracing, errors in `main`, panics) go through.
//!
//! This module does not decide *which* variables are secret; the caller passes the
//! pairs (SPEC 7: secret sources, secret-looking names, `secret = true`).

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::Location;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use tracing_subscriber::fmt::MakeWriter;

use crate::secret::Sensitive;

/// Forms of a value shorter than this many bytes are not redacted (SPEC 7).
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces every known secret form in text by `[redacted:NAME]`.
///
/// Immutable once built; [`SharedRedactor`] swaps in a new one when values change.
#[derive(Default)]
pub struct Redactor {
    /// `None` when there is nothing to redact, so the common empty case is a copy.
    matcher: Option<AhoCorasick>,
    /// SIMD (Teddy) detector for "holds any form?" when the set is small enough
    /// (about 64 forms or fewer). The automaton's single rare-byte prefilter stops
    /// at every occurrence of a byte common to all forms, which in ordinary log
    /// text is every few bytes.
    detector: Option<aho_corasick::packed::Searcher>,
    /// Pattern id → index into `replacements`.
    pattern_name: Vec<u32>,
    /// `[redacted:NAME]` per distinct name, built once.
    replacements: Vec<Box<[u8]>>,
    /// Longest pattern in bytes: the carry a stream needs is one less.
    max_len: usize,
}

impl std::fmt::Debug for Redactor {
    // Never show patterns: they are the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.pattern_name.len())
            .field("names", &self.replacements.len())
            .finish()
    }
}

impl Redactor {
    /// Builds the automaton from `(name, value)` pairs.
    ///
    /// When two names share one form, the lexicographically smallest name is used,
    /// so the output does not depend on the order of the pairs (sources are maps).
    pub fn new(pairs: impl IntoIterator<Item = (String, Sensitive)>) -> Redactor {
        // Sorted by pattern bytes so the automaton, and thus the output, is the same
        // for the same set of pairs in any order.
        let mut by_form: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for (name, value) in pairs {
            for form in forms(value.expose()) {
                match by_form.get_mut(&form) {
                    Some(existing) if *existing <= name => {}
                    Some(existing) => existing.clone_from(&name),
                    None => {
                        by_form.insert(form, name.clone());
                    }
                }
            }
        }
        if by_form.is_empty() {
            return Redactor::default();
        }

        let mut names: BTreeMap<&str, u32> = BTreeMap::new();
        for name in by_form.values() {
            let next = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.entry(name.as_str()).or_insert(next);
        }
        let mut replacements = vec![Box::<[u8]>::default(); names.len()];
        for (name, &idx) in &names {
            replacements[idx as usize] = format!("[redacted:{name}]").into_bytes().into();
        }
        let pattern_name: Vec<u32> = by_form.values().map(|n| names[n.as_str()]).collect();
        let max_len = by_form.keys().map(Vec::len).max().unwrap_or(0);

        // Building only fails past aho-corasick's size limits (billions of states).
        // Carrying on without redaction would print secrets, so stopping is the
        // only safe answer.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(by_form.keys())
            .expect("secret set exceeds aho-corasick limits; refusing to print unredacted");

        let detector = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(by_form.keys())
            .build();
        Redactor {
            matcher: Some(matcher),
            detector,
            pattern_name,
            replacements,
            max_len,
        }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Length in bytes of the longest form matched; 0 when empty.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    fn replacement(&self, pattern: aho_corasick::PatternID) -> &[u8] {
        &self.replacements[self.pattern_name[pattern.as_usize()] as usize]
    }

    /// Appends `input` to `out` with every secret form replaced.
    pub fn redact_into(&self, input: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.matcher else {
            out.extend_from_slice(input);
            return;
        };
        let mut last = 0;
        for m in matcher.find_iter(input) {
            out.extend_from_slice(&input[last..m.start()]);
            out.extend_from_slice(self.replacement(m.pattern()));
            last = m.end();
        }
        out.extend_from_slice(&input[last..]);
    }

    /// Returns `input` itself when it holds no secret, else its redacted form built
    /// in `scratch`. Saves a copy on the hot path, where almost no line matches.
    pub fn redact_slice<'a>(&self, input: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if !self.contains_secret(input) {
            return input;
        }
        scratch.clear();
        self.redact_into(input, scratch);
        scratch
    }

    /// True when `input` holds any secret form.
    pub fn contains_secret(&self, input: &[u8]) -> bool {
        if let Some(d) = &self.detector {
            return d.find(input).is_some();
        }
        self.matcher
            .as_ref()
            .is_some_and(|m| m.find(input).is_some())
    }

    /// Redacts a string, borrowing it unchanged when it holds no secret.
    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !self.contains_secret(s.as_bytes()) {
            return Cow::Borrowed(s);
        }
        let mut out = Vec::with_capacity(s.len());
        self.redact_into(s.as_bytes(), &mut out);
        // Patterns are whole UTF-8 strings (or ASCII escapes of them) and the
        // replacement is ASCII, so matches fall on char boundaries and the result
        // is valid; the lossy path is only a guard against a panic.
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }
}

/// Every form of `value` that is matched, each at least [`MIN_SECRET_LEN`] bytes.
fn forms(value: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut bases = vec![value];
    let trimmed = value.trim();
    if trimmed != value {
        bases.push(trimmed);
    }
    for base in bases {
        out.push(base.as_bytes().to_vec());
        out.push(percent_encode(base.as_bytes(), b"0123456789ABCDEF"));
        out.push(percent_encode(base.as_bytes(), b"0123456789abcdef"));
        // Python prints a `str` with non-ASCII letters as they are and a `bytes`
        // value with them as `\xNN`; both occur in SDK logs.
        out.push(repr_escape(base.as_bytes(), false));
        out.push(repr_escape(base.as_bytes(), true));
    }
    out.retain(|f| f.len() >= MIN_SECRET_LEN);
    out.sort();
    out.dedup();
    out
}

/// RFC 3986 percent-encoding: unreserved characters kept, every other byte `%XX`.
fn percent_encode(bytes: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// The body of Python's `repr` of the value: `\n`, `\r`, `\t`, `\\`, other control
/// bytes as `\xNN`, and, for a `bytes` repr, non-ASCII bytes as `\xNN` too.
fn repr_escape(bytes: &[u8], escape_non_ascii: bool) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            0x80..=0xff if escape_non_ascii => {
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Redacts one long line delivered in pieces.
///
/// After each piece it holds back the last `max_pattern_len - 1` bytes that could
/// still be the start of a match, and emits only what no later byte can change. The
/// concatenated output equals [`Redactor::redact_into`] over the whole line, with
/// memory bounded by the longest secret. Use the same [`Redactor`] for all pieces of
/// one line: a shorter carry from a different automaton could let a secret through.
///
/// aho-corasick's own stream API refuses `LeftmostLongest`, and with `Standard` the
/// tail of a longer secret leaks (crates.md §4), hence this helper.
#[derive(Debug, Default)]
pub struct StreamRedactor {
    carry: Vec<u8>,
    joined: Vec<u8>,
}

impl StreamRedactor {
    /// A helper with no carry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held back, waiting for the next piece.
    pub fn carry_len(&self) -> usize {
        self.carry.len()
    }

    /// Redacts `chunk` after the carry, appending to `out` whatever is final.
    pub fn feed(&mut self, redactor: &Redactor, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &redactor.matcher else {
            out.append(&mut self.carry);
            out.extend_from_slice(chunk);
            return;
        };
        self.joined.clear();
        self.joined.extend_from_slice(&self.carry);
        self.joined.extend_from_slice(chunk);
        let buf = &self.joined;

        // A match starting before `limit` fits inside `buf` whatever follows, so
        // leftmost-longest has already decided it; one starting later might grow.
        let limit = buf.len().saturating_sub(redactor.max_len.saturating_sub(1));
        let mut pos = 0;
        for m in matcher.find_iter(buf.as_slice()) {
            if m.start() >= limit {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(redactor.replacement(m.pattern()));
            pos = m.end();
        }
        let keep_from = pos.max(limit);
        out.extend_from_slice(&buf[pos..keep_from]);
        self.carry.clear();
        self.carry.extend_from_slice(&buf[keep_from..]);
    }

    /// Ends the line: redacts and appends the carry.
    pub fn finish(&mut self, redactor: &Redactor, out: &mut Vec<u8>) {
        redactor.redact_into(&self.carry, out);
        self.carry.clear();
    }
}

/// The redactor shared by the supervisor, the output pumps and agentsup's own
/// messages. Cloning is cheap.
///
/// It keeps every value it was ever given, so after a rotation the old key stays
/// redacted: a replica that has not restarted yet may still print it.
#[derive(Clone, Default)]
pub struct SharedRedactor {
    inner: Arc<SharedInner>,
}

#[derive(Default)]
struct SharedInner {
    /// Every (name, value) seen, per name; also serialises rebuilds.
    known: Mutex<BTreeMap<String, Vec<Sensitive>>>,
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
    pub fn current(&self) -> Arc<Redactor> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds values (after a load, a rotation or a reload). Values already known,
    /// including older values of the same name, stay redacted. Rebuilds the
    /// automaton only when something new arrived.
    pub fn extend(&self, pairs: impl IntoIterator<Item = (String, Sensitive)>) {
        let mut known = self
            .inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut added = false;
        for (name, value) in pairs {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let values = known.entry(name).or_default();
            if !values.contains(&value) {
                values.push(value);
                added = true;
            }
        }
        if !added {
            return;
        }
        // Built outside the write lock so readers keep the old automaton meanwhile.
        let rebuilt =
            Arc::new(Redactor::new(known.iter().flat_map(|(name, values)| {
                values.iter().map(|v| (name.clone(), v.clone()))
            })));
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rebuilt;
    }

    /// Redacts a message with the current redactor.
    pub fn redact_str(&self, s: &str) -> String {
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

/// Redacts a message with the global redactor, for error printing in `main`.
pub fn redact_message(message: &str) -> String {
    global().redact_str(message)
}

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that redacts each event.
///
/// Each writer it makes buffers the whole event and writes it, redacted, in one
/// `write_all` when dropped (fmt makes one writer per event). Redacting whole events
/// means a secret split across the formatter's several `write` calls is still caught.
#[derive(Debug, Clone)]
pub struct RedactingWriter<M> {
    inner: M,
    redactor: SharedRedactor,
}

impl RedactingWriter<fn() -> io::Stderr> {
    /// Writes to stderr through the [`global`] redactor.
    pub fn stderr() -> Self {
        Self::new(io::stderr, global().clone())
    }
}

impl<M> RedactingWriter<M> {
    /// Wraps `inner`, redacting with `redactor`.
    pub fn new(inner: M, redactor: SharedRedactor) -> Self {
        RedactingWriter { inner, redactor }
    }
}

impl<'a, M> MakeWriter<'a> for RedactingWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = RedactingGuard<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingGuard::new(self.inner.make_writer(), self.redactor.clone())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingGuard::new(self.inner.make_writer_for(meta), self.redactor.clone())
    }
}

/// The writer for one event made by [`RedactingWriter`]: buffers, then writes the
/// redacted event on drop.
pub struct RedactingGuard<W: Write> {
    inner: W,
    buf: Vec<u8>,
    redactor: SharedRedactor,
}

impl<W: Write> RedactingGuard<W> {
    fn new(inner: W, redactor: SharedRedactor) -> Self {
        RedactingGuard {
            inner,
            buf: Vec::new(),
            redactor,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(self.buf.len());
        self.redactor.current().redact_into(&self.buf, &mut out);
        self.buf.clear();
        self.inner.write_all(&out)?;
        self.inner.flush()
    }
}

impl<W: Write> Write for RedactingGuard<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    // Deliberately keeps buffering: emitting half an event here could split a
    // secret. Everything goes out on drop.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingGuard<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write; losing it beats panicking in drop.
        let _ = self.emit();
    }
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(name: &str, value: &str) -> (String, Sensitive) {
        (name.to_owned(), Sensitive::new(value))
    }

    fn redact(r: &Redactor, s: &str) -> String {
        r.redact_str(s).into_owned()
    }

    #[test]
    fn replaces_value_with_name() {
        let r = Redactor::new([pair("OPENAI_API_KEY", "sk-abcdef123456")]);
        assert_eq!(
            redact(&r, "key=sk-abcdef123456 ok"),
            "key=[redacted:OPENAI_API_KEY] ok"
        );
        assert!(matches!(r.redact_str("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_skipped() {
        let r = Redactor::new([pair("PIN", "12345"), pair("EMPTY", "")]);
        assert!(r.is_empty());
        assert_eq!(redact(&r, "12345"), "12345");
        assert_eq!(r.max_pattern_len(), 0);
    }

    #[test]
    fn trimmed_and_escaped_forms() {
        let r = Redactor::new([pair("K", "sk-secret-value\n")]);
        assert_eq!(redact(&r, "auth sk-secret-value."), "auth [redacted:K].");
        // httpx: b'Bearer sk-secret-value\n' printed with the newline escaped; the
        // longest form wins, so the `\n` goes too.
        assert_eq!(
            redact(&r, r"b'Bearer sk-secret-value\n'"),
            "b'Bearer [redacted:K]'"
        );
        let r = Redactor::new([pair("K", " sk-secret-value\r\n")]);
        assert_eq!(redact(&r, r"' sk-secret-value\r\n'"), "'[redacted:K]'");
        assert_eq!(redact(&r, "[sk-secret-value]"), "[[redacted:K]]");
    }

    #[test]
    fn control_and_non_ascii_escapes() {
        let r = Redactor::new([pair("K", "pä\tss\u{1}word")]);
        assert_eq!(redact(&r, r"x='pä\tss\x01word'"), "x='[redacted:K]'");
        assert_eq!(
            redact(&r, r"x=b'p\xc3\xa4\tss\x01word'"),
            "x=b'[redacted:K]'"
        );
    }

    #[test]
    fn percent_encoded_forms() {
        let r = Redactor::new([pair("GOOGLE_API_KEY", "AIza/b+c=d e")]);
        assert_eq!(
            redact(&r, "GET /v1?key=AIza%2Fb%2Bc%3Dd%20e&x=1"),
            "GET /v1?key=[redacted:GOOGLE_API_KEY]&x=1"
        );
        assert_eq!(
            redact(&r, "GET /v1?key=AIza%2fb%2bc%3dd%20e"),
            "GET /v1?key=[redacted:GOOGLE_API_KEY]"
        );
        assert_eq!(
            percent_encode(b"a-._~Z9 /", b"0123456789ABCDEF"),
            b"a-._~Z9%20%2F"
        );
    }

    #[test]
    fn longest_secret_wins_when_one_is_a_prefix() {
        let r = Redactor::new([pair("A", "abc123"), pair("B", "abc123def456")]);
        assert_eq!(redact(&r, "x abc123def456 y"), "x [redacted:B] y");
        assert_eq!(redact(&r, "x abc123de y"), "x [redacted:A]de y");
    }

    #[test]
    fn shared_value_picks_smallest_name_in_any_order() {
        let a = Redactor::new([
            pair("ZED_KEY", "same-value-1"),
            pair("ALPHA_KEY", "same-value-1"),
        ]);
        let b = Redactor::new([
            pair("ALPHA_KEY", "same-value-1"),
            pair("ZED_KEY", "same-value-1"),
        ]);
        assert_eq!(redact(&a, "same-value-1"), "[redacted:ALPHA_KEY]");
        assert_eq!(redact(&b, "same-value-1"), "[redacted:ALPHA_KEY]");
    }

    #[test]
    fn invalid_utf8_input_is_redacted_bytewise() {
        let r = Redactor::new([pair("K", "secret-1")]);
        let mut out = Vec::new();
        r.redact_into(b"\xff\xfesecret-1\xff", &mut out);
        assert_eq!(out, b"\xff\xfe[redacted:K]\xff");
    }

    #[test]
    fn stream_catches_secret_across_pieces() {
        let r = Redactor::new([pair("K", "0123456789abcdef")]);
        let mut s = StreamRedactor::new();
        let mut out = Vec::new();
        for piece in [&b"xx0123"[..], b"45678", b"9abcdefyy"] {
            s.feed(&r, piece, &mut out);
            assert!(s.carry_len() < r.max_pattern_len());
        }
        s.finish(&r, &mut out);
        assert_eq!(out, b"xx[redacted:K]yy");
    }

    #[test]
    fn stream_without_secrets_passes_through() {
        let r = Redactor::default();
        let mut s = StreamRedactor::new();
        let mut out = Vec::new();
        s.feed(&r, b"abc", &mut out);
        s.feed(&r, b"def", &mut out);
        s.finish(&r, &mut out);
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn shared_keeps_old_values_after_rotation() {
        let shared = SharedRedactor::new([pair("KEY", "old-secret-value")]);
        let before = shared.current();
        shared.extend([pair("KEY", "new-secret-value")]);
        let text = "old-secret-value new-secret-value";
        assert_eq!(shared.redact_str(text), "[redacted:KEY] [redacted:KEY]");
        // A reader that took the old automaton keeps using it undisturbed.
        assert_eq!(redact(&before, text), "[redacted:KEY] new-secret-value");
        // Nothing new: no rebuild.
        let cur = shared.current();
        shared.extend([pair("KEY", "new-secret-value"), pair("X", "tiny")]);
        assert!(Arc::ptr_eq(&cur, &shared.current()));
    }

    #[test]
    fn clones_share_state() {
        let a = SharedRedactor::default();
        let b = a.clone();
        a.extend([pair("T", "token-123456")]);
        assert_eq!(b.redact_str("token-123456"), "[redacted:T]");
    }

    #[test]
    fn redacting_writer_redacts_a_whole_event() {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl Write for Capture {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let cap = Capture::default();
        let cap2 = cap.clone();
        let redactor = SharedRedactor::new([pair("K", "sk-live-987654")]);
        let make = RedactingWriter::new(move || cap2.clone(), redactor);
        {
            let mut w = make.make_writer();
            // The formatter may split one event into many writes.
            w.write_all(b"loaded sk-live").unwrap();
            w.flush().unwrap();
            w.write_all(b"-987654 from env\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(cap.0.lock().unwrap().clone()).unwrap(),
            "loaded [redacted:K] from env\n"
        );
    }

    #[test]
    fn panic_report_is_redactable() {
        let r = Redactor::new([pair("K", "sk-panic-secret")]);
        let payload: Box<dyn Any> = Box::new(String::from("bad key sk-panic-secret"));
        let text = panic_report(&*payload, None, Some("main"));
        assert_eq!(
            redact(&r, &text),
            "thread 'main' panicked:\nbad key [redacted:K]\n"
        );
        let payload: Box<dyn Any> = Box::new("static");
        assert!(panic_report(&*payload, Some(Location::caller()), None).contains("'<unnamed>'"));
    }

    #[test]
    fn debug_shows_no_patterns() {
        let r = SharedRedactor::new([pair("K", "sk-debug-secret")]);
        let text = format!("{r:?}");
        assert!(!text.contains("sk-debug"), "{text}");
    }

    /// How a secret is embedded in generated text.
    #[derive(Debug, Clone)]
    enum Piece {
        Filler(String),
        Secret { index: usize, form: u8 },
    }

    fn secret_form(value: &str, form: u8) -> Vec<u8> {
        match form {
            0 => value.as_bytes().to_vec(),
            1 => value.trim().as_bytes().to_vec(),
            2 => percent_encode(value.as_bytes(), b"0123456789ABCDEF"),
            3 => percent_encode(value.trim().as_bytes(), b"0123456789abcdef"),
            _ => repr_escape(value.as_bytes(), true),
        }
    }

    fn secrets() -> impl Strategy<Value = Vec<String>> {
        // No `[`, `]` or `:` and not inside "redacted": a secret can then never be
        // formed by a replacement token plus its neighbours, so any hit is a leak.
        prop::collection::vec("[ \t\n]{0,2}[a-z0-9%/=+._-]{6,14}[ \t\n]{0,2}", 1..6)
            .prop_filter("not part of a replacement", |v| {
                v.iter().all(|s| !"redacted".contains(s.trim()))
            })
    }

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        prop::collection::vec(
            prop_oneof![
                "[a-z0-9 %._=-]{0,12}".prop_map(Piece::Filler),
                (0usize..6, 0u8..5).prop_map(|(index, form)| Piece::Secret { index, form }),
            ],
            0..16,
        )
    }

    proptest! {
        #[test]
        fn no_secret_survives_any_chunking(
            values in secrets(),
            pieces in pieces(),
            cuts in prop::collection::vec(1usize..40, 0..20),
        ) {
            let pairs: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(i, v)| pair(&format!("K{i}"), v))
                .collect();
            let r = Redactor::new(pairs);
            let mut text = Vec::new();
            for p in &pieces {
                match p {
                    Piece::Filler(s) => text.extend_from_slice(s.as_bytes()),
                    Piece::Secret { index, form } => {
                        text.extend(secret_form(&values[index % values.len()], *form));
                    }
                }
            }

            let mut whole = Vec::new();
            r.redact_into(&text, &mut whole);

            let mut streamed = Vec::new();
            let mut s = StreamRedactor::new();
            let mut rest = &text[..];
            for cut in &cuts {
                let (head, tail) = rest.split_at((*cut).min(rest.len()));
                s.feed(&r, head, &mut streamed);
                prop_assert!(s.carry_len() < r.max_pattern_len().max(1));
                rest = tail;
            }
            s.feed(&r, rest, &mut streamed);
            s.finish(&r, &mut streamed);

            prop_assert_eq!(&whole, &streamed);
            for v in &values {
                for form in 0..5u8 {
                    let f = secret_form(v, form);
                    if f.len() < MIN_SECRET_LEN {
                        continue;
                    }
                    prop_assert!(
                        !whole.windows(f.len()).any(|w| w == &f[..]),
                        "form {} of {:?} leaked in {:?}", form, v, String::from_utf8_lossy(&whole)
                    );
                }
            }
        }
    }
}
