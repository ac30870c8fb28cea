//! [`Canary`]: the one leak check of the suite. A canary is a secret value made
//! fresh for each test (so one test's leak can never be another's pass), holding
//! `"` `\` `/` `+` `=` so that every escaping and encoding a program may apply
//! changes it. [`Canary::assert_absent`] looks for it in any [`Surface`] (a
//! finished run's [`Output`], a [`Running`] supervisor, an HTTP body, status JSON)
//! and [`Canary::assert_not_in_sandbox`] in every file of a sandbox, in each of the
//! forms listed by [`Canary::forms`], and for any 12 consecutive bytes of each.
//!
//! A failing check names the form and the offset, never the value: the text it
//! shows is [`mask`]ed, and so is every other panic message of the test binary
//! (the panic hook installed by [`Canary::new`] masks every live canary), so an
//! `assert!(…, "{out}")` elsewhere in a test cannot print a leaked secret either.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};

use super::{Output, Running, Sandbox};

/// Windows shorter than this are not looked for: 12 bytes of a random value do not
/// occur by chance, and the redactor catches runs of 16 (so a 12-byte window seen
/// in output is a real leak of a piece at least that long).
pub const WINDOW: usize = 12;

/// Every canary made in this test process, for [`mask`] (tests run in parallel in
/// one process; masking another test's canary too is harmless).
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SEQ: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// A generated secret value. See the module documentation.
#[derive(Clone)]
pub struct Canary {
    value: String,
}

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Canary(<masked>)")
    }
}

/// Random ASCII letters and digits.
fn alnum(n: usize) -> String {
    (0..n).map(|_| fastrand::alphanumeric()).collect()
}

impl Canary {
    /// A fresh canary starting with `prefix` (e.g. `"sk-proj-"`, for a test whose
    /// subject is a provider's key shape; `""` otherwise), then a per-process
    /// sequence number and random letters with `"` `\` `/` `+` `=` among them:
    /// about 50 bytes, unique per test.
    pub fn new(prefix: &str) -> Canary {
        install_masking_hook();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let value = format!(
            "{prefix}Cn{pid:x}x{seq}{a}\"{b}\\{c}/{d}+{e}={f}",
            pid = std::process::id(),
            a = alnum(6),
            b = alnum(5),
            c = alnum(5),
            d = alnum(5),
            e = alnum(5),
            f = alnum(6),
        );
        LIVE.lock().unwrap().push(value.clone());
        Canary { value }
    }

    /// A fresh canary of ASCII letters and digits only, for a place whose syntax
    /// cannot carry the usual punctuation (the password of a connection URL, a
    /// `KEY=value` argument): unique per test all the same.
    pub fn alnum(prefix: &str) -> Canary {
        install_masking_hook();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let value = format!(
            "{prefix}Cn{pid:x}x{seq}{r}",
            pid = std::process::id(),
            r = alnum(30)
        );
        LIVE.lock().unwrap().push(value.clone());
        Canary { value }
    }

    /// A fresh decimal number of `n` digits (a number a JSON source prints).
    pub fn digits(n: usize) -> Canary {
        install_masking_hook();
        let value: String = std::iter::once(fastrand::char('1'..='9'))
            .chain((1..n).map(|_| fastrand::char('0'..='9')))
            .collect();
        LIVE.lock().unwrap().push(value.clone());
        Canary { value }
    }

    /// A canary over a value the test does not choose (an example file's secret),
    /// so its leak check is the same as every other's. Prefer [`Canary::new`].
    pub fn of_fixed(value: &str) -> Canary {
        install_masking_hook();
        LIVE.lock().unwrap().push(value.to_string());
        Canary {
            value: value.to_string(),
        }
    }

    /// The value itself, to write into a source.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// A dotenv line `NAME='value'` (single quotes: literal, no escapes).
    pub fn dotenv(&self, name: &str) -> String {
        format!("{name}='{}'\n", self.value)
    }

    /// The value inside a double-quoted dotenv string (`\\` and `\"` escaped).
    pub fn dotenv_double_quoted_inner(&self) -> String {
        self.value.replace('\\', "\\\\").replace('"', "\\\"")
    }

    /// A TOML literal string (`'value'`).
    pub fn toml(&self) -> String {
        format!("'{}'", self.value)
    }

    /// The value single-quoted for `sh`.
    pub fn sh(&self) -> String {
        format!("'{}'", self.value)
    }

    /// The value as a JSON string literal (with its quotes).
    pub fn json(&self) -> String {
        serde_json::to_string(&self.value).unwrap()
    }

    /// A fixed part of the value of `len` bytes from `start`, for tests where a
    /// worker prints a piece of the key.
    pub fn piece(&self, start: usize, len: usize) -> &str {
        &self.value[start..start + len]
    }

    /// Every form looked for, with its name: raw, trimmed, JSON-escaped, Python
    /// repr, percent-encoded (RFC 3986, `quote`'s `/` kept, `encodeURIComponent`,
    /// upper and lower hex), base64 (standard and URL-safe, whole and the three
    /// alignments inside a longer text) and hex.
    pub fn forms(&self) -> Vec<(String, Vec<u8>)> {
        forms_of(&self.value)
    }

    /// Where the canary occurs in `hay`: the form and offset of the first
    /// occurrence of a form, or of any [`WINDOW`] bytes of one.
    pub fn find(&self, hay: &[u8]) -> Option<String> {
        let (pats, names) = patterns(&self.value);
        let ac = AhoCorasick::new(&pats).unwrap();
        ac.find(hay).map(|m| {
            format!(
                "{} at byte {} ({} bytes)",
                names[m.pattern().as_usize()],
                m.start(),
                m.len()
            )
        })
    }

    /// Panics (naming the form and offset, showing `surface` masked) if the canary
    /// is anywhere in `surface`.
    pub fn assert_absent(&self, surface: &(impl Surface + ?Sized)) {
        let (label, text) = surface.leak_text();
        if let Some(hit) = self.find(&text) {
            panic!(
                "canary leaked into {label}: {hit}\n--- {label} (masked) ---\n{}",
                mask(&String::from_utf8_lossy(&text))
            );
        }
    }

    /// Panics if the first `len` bytes of the value are in `surface`: what a
    /// provider echoes of a rejected key (`sk-proj-****…wxyz` shows 8).
    pub fn assert_prefix_absent(&self, surface: &(impl Surface + ?Sized), len: usize) {
        let (label, text) = surface.leak_text();
        let prefix = &self.value.as_bytes()[..len];
        if let Some(at) = text.windows(len).position(|w| w == prefix) {
            panic!(
                "the canary's first {len} bytes are in {label} at byte {at}\n--- {label} (masked) ---\n{}",
                mask(&String::from_utf8_lossy(&text))
            );
        }
    }

    /// Panics if `encoded`, an encoding of the canary computed elsewhere (a
    /// worker's own `json.dumps` or `quote`, as an oracle beside
    /// [`Canary::forms`]), is in `surface` whole.
    pub fn assert_encoding_absent(
        &self,
        surface: &(impl Surface + ?Sized),
        what: &str,
        encoded: &str,
    ) {
        let (label, text) = surface.leak_text();
        let e = encoded.as_bytes();
        if !e.is_empty() {
            if let Some(at) = text.windows(e.len()).position(|w| w == e) {
                panic!(
                    "{what} of the canary is in {label} at byte {at}\n--- {label} (masked) ---\n{}",
                    mask(&String::from_utf8_lossy(&text).replace(encoded, "[ENCODED CANARY]"))
                );
            }
        }
    }

    /// [`Canary::assert_absent`] for several surfaces.
    pub fn assert_absent_all(&self, surfaces: &[&dyn Surface]) {
        for s in surfaces {
            self.assert_absent(*s);
        }
    }

    /// Scans every file under the sandbox (contents, names and symlink targets),
    /// except the files the test wrote itself with [`Sandbox::write`] and the
    /// paths (relative to the sandbox) in `except` (e.g. a file a worker wrote on
    /// purpose); panics naming the file if the canary is in one.
    pub fn assert_not_in_sandbox(&self, sb: &Sandbox, except: &[&str]) {
        let mut skip: Vec<PathBuf> = sb.written();
        skip.extend(except.iter().map(|e| sb.path().join(e)));
        let mut stack = vec![sb.path().to_path_buf()];
        let mut scanned = 0usize;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let rel = path.strip_prefix(sb.path()).unwrap_or(&path).display();
                self.assert_absent(&(format!("the name {rel}"), rel.to_string()));
                if skip.iter().any(|s| s == &path) {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    if let Ok(target) = std::fs::read_link(&path) {
                        let t = target.display().to_string();
                        self.assert_absent(&(format!("the symlink {rel}"), t));
                    }
                } else if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    if let Ok(bytes) = std::fs::read(&path) {
                        scanned += 1;
                        self.assert_absent(&(format!("the file {rel}"), bytes));
                    }
                }
            }
        }
        let _ = scanned;
    }
}

/// Something a leak check can read: its name (for the failure message) and text.
pub trait Surface {
    fn leak_text(&self) -> (String, Vec<u8>);
}

impl Surface for Output {
    fn leak_text(&self) -> (String, Vec<u8>) {
        (
            "the output (stdout + stderr)".into(),
            self.all().into_bytes(),
        )
    }
}

impl Surface for Running {
    fn leak_text(&self) -> (String, Vec<u8>) {
        ("the supervisor's output".into(), self.output().into_bytes())
    }
}

impl Surface for str {
    fn leak_text(&self) -> (String, Vec<u8>) {
        ("the text".into(), self.as_bytes().to_vec())
    }
}

impl Surface for String {
    fn leak_text(&self) -> (String, Vec<u8>) {
        self.as_str().leak_text()
    }
}

/// A JSON document (status, a control reply): its compact text and, unescaped,
/// every key and string in it.
impl Surface for serde_json::Value {
    fn leak_text(&self) -> (String, Vec<u8>) {
        fn strings(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::String(s) => {
                    out.push_str(s);
                    out.push('\n');
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                serde_json::Value::Object(o) => {
                    for (k, x) in o {
                        out.push_str(k);
                        out.push('\n');
                        strings(x, out);
                    }
                }
                _ => {}
            }
        }
        let mut text = self.to_string();
        text.push('\n');
        strings(self, &mut text);
        ("the JSON document".into(), text.into_bytes())
    }
}

/// A labelled text: `(label, text)`, e.g. `("GET /metrics", body)`.
impl<L: AsRef<str>, T: AsRef<[u8]>> Surface for (L, T) {
    fn leak_text(&self) -> (String, Vec<u8>) {
        (self.0.as_ref().to_string(), self.1.as_ref().to_vec())
    }
}

/// `text` with every live canary (each form, and any [`WINDOW`] bytes of one)
/// replaced by `[CANARY]`.
pub fn mask(text: &str) -> String {
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    if live.is_empty() {
        return text.to_string();
    }
    let mut pats = Vec::new();
    for v in &live {
        pats.extend(patterns(v).0);
    }
    let Ok(ac) = AhoCorasick::new(&pats) else {
        return "<text withheld: masking failed>".into();
    };
    let bytes = text.as_bytes();
    let mut covered = vec![false; bytes.len()];
    for m in ac.find_overlapping_iter(bytes) {
        covered[m.start()..m.end()]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if covered[i] {
            out.extend_from_slice(b"[CANARY]");
            while i < bytes.len() && covered[i] {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Masks every panic message of the test binary (see the module documentation).
fn install_masking_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "Box<dyn Any>".to_string()
            };
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            eprintln!("thread '{name}' panicked at {at}:\n{}", mask(&msg));
        }));
    });
}

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

fn percent(bytes: &[u8], keep: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

/// The base64 characters of `bytes` that do not depend on what surrounds them,
/// when `align` bytes (mod 3) precede them in the encoded text.
fn base64_inside(bytes: &[u8], align: usize) -> Vec<u8> {
    let mut padded = vec![0u8; align];
    padded.extend_from_slice(bytes);
    let enc = STANDARD_NO_PAD.encode(&padded);
    let first = (8 * align).div_ceil(6);
    let end = 8 * (align + bytes.len()) / 6;
    enc.as_bytes()[first..end].to_vec()
}

fn forms_of(value: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let trimmed = value.trim();
    out.push(("the raw value".into(), value.as_bytes().to_vec()));
    out.push(("the trimmed value".into(), trimmed.as_bytes().to_vec()));
    let b = trimmed.as_bytes();
    let json = serde_json::to_string(trimmed).unwrap();
    let json = &json[1..json.len() - 1];
    out.push(("the JSON-escaped value".into(), json.as_bytes().to_vec()));
    // json.dumps' default (ensure_ascii): every non-ASCII char as `\uXXXX`.
    let mut ascii = String::new();
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0u16; 2]) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.push(("the ASCII JSON-escaped value".into(), ascii.into_bytes()));
    // Python's repr of a str without `'`: backslashes doubled, `"` kept; of
    // bytes: non-ASCII bytes as `\xNN` too.
    out.push((
        "the repr".into(),
        trimmed.replace('\\', "\\\\").into_bytes(),
    ));
    let mut bytes_repr = Vec::new();
    for &x in b {
        match x {
            b'\\' => bytes_repr.extend_from_slice(b"\\\\"),
            0x20..=0x7e => bytes_repr.push(x),
            _ => bytes_repr.extend_from_slice(format!("\\x{x:02x}").as_bytes()),
        }
    }
    out.push(("the repr of its bytes".into(), bytes_repr));
    for (keep, what) in [
        (&b"-._~"[..], "quote(safe='')"),
        (b"-._~/", "quote()"),
        (b"-._~!*'()", "encodeURIComponent"),
    ] {
        out.push((
            format!("percent-encoded, {what}, upper"),
            percent(b, keep, UPPER),
        ));
        out.push((
            format!("percent-encoded, {what}, lower"),
            percent(b, keep, LOWER),
        ));
    }
    if b.contains(&b' ') {
        // quote_plus and form encoding: a space as `+`.
        let plus: Vec<u8> = percent(b, b"-._~ ", UPPER)
            .into_iter()
            .map(|c| if c == b' ' { b'+' } else { c })
            .collect();
        out.push(("percent-encoded with + for spaces".into(), plus));
    }
    out.push(("base64".into(), STANDARD.encode(b).into_bytes()));
    out.push(("URL-safe base64".into(), URL_SAFE.encode(b).into_bytes()));
    for align in 0..3 {
        let core = base64_inside(b, align);
        let url: Vec<u8> = core
            .iter()
            .map(|&c| match c {
                b'+' => b'-',
                b'/' => b'_',
                c => c,
            })
            .collect();
        out.push((format!("base64 inside a text (offset {align})"), core));
        out.push((
            format!("URL-safe base64 inside a text (offset {align})"),
            url,
        ));
    }
    out.push((
        "hex".into(),
        b.iter()
            .flat_map(|&x| [LOWER[usize::from(x >> 4)], LOWER[usize::from(x & 15)]])
            .collect(),
    ));
    out.push((
        "upper-case hex".into(),
        b.iter()
            .flat_map(|&x| [UPPER[usize::from(x >> 4)], UPPER[usize::from(x & 15)]])
            .collect(),
    ));
    out
}

/// Every pattern looked for: each form, then each [`WINDOW`]-byte window of each
/// form, with a name per pattern.
fn patterns(value: &str) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut pats = Vec::new();
    let mut names = Vec::new();
    let forms = forms_of(value);
    for (name, form) in &forms {
        pats.push(form.clone());
        names.push(name.clone());
    }
    for (name, form) in &forms {
        for (i, w) in form.windows(WINDOW).enumerate() {
            pats.push(w.to_vec());
            names.push(format!("{WINDOW} bytes of {name} (from its byte {i})"));
        }
    }
    (pats, names)
}

/// The path `p` relative to the sandbox, for messages.
pub fn rel(sb: &Sandbox, p: &Path) -> String {
    p.strip_prefix(sb.path()).unwrap_or(p).display().to_string()
}
