//! [`Redactor`]: finds every form of every secret in text, and [`StreamRedactor`]
//! for a line delivered in pieces.
//!
//! # How forms are found
//!
//! Most forms are [`Kind::Run`]s, where any run of [`RUN_LEN`] (16) bytes counts,
//! and the other long forms are exact. Listing every 16-byte substring as a pattern
//! for an automaton would cost far more than the value; instead:
//!
//! - Every 8-byte window of every run form (and the first eight windows of each
//!   long exact form) goes into a hash index: 4 bytes per window, plus 2 to 4
//!   bytes of bit filter and 2 to 4 of bucket table, about 11 bytes per byte of
//!   form with the form itself (measured: 11.2 for a 1 KiB key, whose ~10 forms
//!   make it ~116 bytes per byte of the value; the old full DFA took ~1.7 KB).
//! - The text is probed at every 8th byte only. A run of 16 bytes always holds
//!   one whole 8-byte window starting at a multiple of 8, so no match is missed,
//!   and the scan costs one multiply and one bit test per 8 bytes of output.
//! - A hit is checked against the form and extended left and right as far as the
//!   text keeps agreeing with it, so the whole run is redacted, not 16 bytes.
//! - Exact forms of 8 to 15 bytes (values that short) go to an Aho-Corasick
//!   contiguous NFA, small and built per form byte, never a full DFA: a DFA costs
//!   about a kilobyte per pattern byte (issue 13).
//!
//! Matches are non-overlapping and leftmost-longest over the set of all matchable
//! strings, the semantics an automaton over that set would give, so the result
//! does not depend on where the text was cut ([`StreamRedactor`]).

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use zeroize::Zeroizing;

use super::forms::{Kind, RUN_LEN, forms};
use crate::secret::Sensitive;

/// Width of an index window, and the stride at which the text is probed. A run of
/// `RUN_LEN` = `2 * WINDOW` bytes always holds one window at a probe.
const WINDOW: usize = 8;
/// A long exact form is found by its first `WINDOW` windows (a probe falls on one
/// of them, whatever the form's alignment in the text).
const EXACT_WINDOWS: usize = WINDOW;

/// Multipliers for the filter and the bucket hash (odd 64-bit constants; the
/// first is 2^64 / golden ratio).
const K_FILTER: u64 = 0x9E37_79B9_7F4A_7C15;
const K_BUCKET: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// One form laid out in the arena.
#[derive(Debug, Clone, Copy)]
struct Form {
    start: usize,
    len: usize,
    name: u32,
    run: bool,
}

/// Replaces every known secret form in text by `[redacted:NAME]`.
///
/// Immutable once built; `SharedRedactor` swaps in a new one when values change.
#[derive(Default)]
pub struct Redactor {
    /// Every indexed form's bytes back to back, wiped when dropped.
    arena: Zeroizing<Vec<u8>>,
    /// Indexed forms, by `start`.
    forms: Vec<Form>,
    index: WindowIndex,
    /// Exact forms of 8..16 bytes.
    short: Option<Short>,
    /// `[redacted:NAME]` per distinct name, names in sorted order.
    replacements: Vec<Box<[u8]>>,
    /// Longest form in bytes: the carry a stream needs is one less.
    max_len: usize,
}

struct Short {
    matcher: AhoCorasick,
    /// SIMD (Teddy) detector for "holds any?" when the set is small enough.
    detector: Option<aho_corasick::packed::Searcher>,
    /// Pattern id → name index.
    names: Vec<u32>,
    /// The patterns, kept only to count and wipe them.
    _patterns: Vec<Zeroizing<Vec<u8>>>,
}

/// The window index: a bit filter in front of a bucketed table of arena offsets.
#[derive(Default)]
struct WindowIndex {
    filter: Vec<u64>,
    filter_shift: u32,
    /// Bucket b's entries are `entries[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
    bucket_shift: u32,
    /// Arena offsets of windows.
    entries: Vec<u32>,
}

impl WindowIndex {
    fn build(arena: &[u8], forms: &[Form]) -> WindowIndex {
        let windows = || {
            forms.iter().flat_map(|f| {
                let count = if f.run {
                    f.len - WINDOW + 1
                } else {
                    EXACT_WINDOWS
                };
                (f.start..f.start + count).map(|p| (p, window_key(arena, p)))
            })
        };
        let total: usize = windows().count();
        if total == 0 {
            return WindowIndex::default();
        }
        // 16 filter bits per window, two set per window within one word (about 2%
        // false hits on text that holds no secret, each costing one table
        // probe), at least 32 Ki bits.
        let filter_len = (total * 16).next_power_of_two().max(1 << 15);
        // One to two windows per bucket: 2 to 4 bytes of table per window; a
        // bucket is read only after the filter said yes.
        let buckets = (total / 2).max(1).next_power_of_two();
        let filter_shift = 64 - (filter_len / 64).trailing_zeros();
        let bucket_shift = 64 - buckets.trailing_zeros();
        let mut filter = vec![0u64; filter_len / 64];
        let mut starts = vec![0u32; buckets + 1];
        for (_, key) in windows() {
            let (word, mask) = filter_bits(key, filter_shift);
            filter[word] |= mask;
            starts[bucket_hash(key, bucket_shift) + 1] += 1;
        }
        for b in 0..buckets {
            starts[b + 1] += starts[b];
        }
        let mut fill = starts.clone();
        let mut entries = vec![0u32; total];
        for (pos, key) in windows() {
            let b = bucket_hash(key, bucket_shift);
            entries[fill[b] as usize] = to_u32(pos);
            fill[b] += 1;
        }
        WindowIndex {
            filter,
            filter_shift,
            starts,
            bucket_shift,
            entries,
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.filter.capacity() * 8 + self.starts.capacity() * 4 + self.entries.capacity() * 4
    }
}

fn window_key(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; WINDOW];
    w.copy_from_slice(&bytes[at..at + WINDOW]);
    u64::from_le_bytes(w)
}

/// The filter word of `key` and the two bits set in it (a blocked Bloom filter:
/// one load per probe, about a third of the false hits of one bit per key).
///
/// One multiply per probe (this runs every 8 bytes of all output): the word is
/// the product's top bits, the two bit numbers the twelve bits just below them.
/// Those are high bits too, which mix the key's first seven bytes; the low bits
/// of a multiplicative hash would not mix at all. `shift` is at most 55 (the
/// filter has at least 512 words), so the bits below it exist.
#[inline(always)]
fn filter_bits(key: u64, shift: u32) -> (usize, u64) {
    let h = key.wrapping_mul(K_FILTER);
    let word = (h >> shift) as usize;
    let bits = h >> (shift - 12);
    let mask = (1u64 << (bits & 63)) | (1u64 << ((bits >> 6) & 63));
    (word, mask)
}

fn bucket_hash(key: u64, shift: u32) -> usize {
    ((key ^ (key >> 29)).wrapping_mul(K_BUCKET) >> shift) as usize
}

/// Arena offsets fit in u32: the arena holds at most a few forms of each value,
/// and values are files and variables, not gigabytes.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("secret forms exceed 4 GiB")
}

impl std::fmt::Debug for Redactor {
    // Never show patterns: they are the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field(
                "forms",
                &(self.forms.len() + self.short.as_ref().map_or(0, |s| s.names.len())),
            )
            .field("names", &self.replacements.len())
            .finish()
    }
}

/// A match: bytes `start..end` are a form of name `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub name: u32,
}

impl Found {
    /// Leftmost, then longest, then the smallest name: the one to take.
    fn better_than(&self, other: &Found) -> bool {
        (self.start, std::cmp::Reverse(self.end), self.name)
            < (other.start, std::cmp::Reverse(other.end), other.name)
    }
}

fn pick(a: Option<Found>, b: Option<Found>) -> Option<Found> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.better_than(&x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Redactor {
    /// Builds the matcher from `(name, value)` pairs.
    ///
    /// When two names share one form, the lexicographically smallest name is used,
    /// so the output does not depend on the order of the pairs (sources are maps).
    pub fn new(pairs: impl IntoIterator<Item = (String, Sensitive)>) -> Redactor {
        // (form, kind, name), sorted so that the layout, and thus the output, is
        // the same for the same set of pairs in any order.
        let mut all: Vec<(Zeroizing<Vec<u8>>, Kind, String)> = Vec::new();
        for (name, value) in pairs {
            for (form, kind) in forms(value.expose()) {
                all.push((Zeroizing::new(form), kind, name.clone()));
            }
        }
        if all.is_empty() {
            return Redactor::default();
        }
        all.sort_by(|a, b| (&a.0[..], b.1, &a.2).cmp(&(&b.0[..], a.1, &b.2)));
        // One entry per byte string: the run kind if any name has it as a run, the
        // smallest name.
        all.dedup_by(|later, earlier| later.0 == earlier.0);

        let mut names: Vec<&str> = all.iter().map(|(_, _, n)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let name_id = |n: &str| to_u32(names.binary_search(&n).unwrap_or(0));
        let replacements: Vec<Box<[u8]>> = names
            .iter()
            .map(|n| format!("[redacted:{n}]").into_bytes().into())
            .collect();
        let max_len = all.iter().map(|(f, _, _)| f.len()).max().unwrap_or(0);

        let mut arena = Zeroizing::new(Vec::new());
        let mut forms = Vec::new();
        let mut short_patterns = Vec::new();
        let mut short_names = Vec::new();
        for (form, kind, name) in &all {
            let run = *kind == Kind::Run && form.len() >= RUN_LEN;
            if run || form.len() >= RUN_LEN {
                forms.push(Form {
                    start: arena.len(),
                    len: form.len(),
                    name: name_id(name),
                    run,
                });
                arena.extend_from_slice(form);
            } else {
                short_patterns.push(form.clone());
                short_names.push(name_id(name));
            }
        }
        arena.shrink_to_fit();
        let index = WindowIndex::build(&arena, &forms);
        let short = (!short_patterns.is_empty()).then(|| {
            // Building only fails past aho-corasick's limits (billions of states);
            // carrying on without redaction would print secrets.
            let matcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(short_patterns.iter().map(|p| &p[..]))
                .expect("secret set exceeds aho-corasick limits; refusing to print unredacted");
            let detector = aho_corasick::packed::Config::new()
                .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                .builder()
                .extend(short_patterns.iter().map(|p| &p[..]))
                .build();
            Short {
                matcher,
                detector,
                names: short_names,
                _patterns: short_patterns,
            }
        });
        Redactor {
            arena,
            forms,
            index,
            short,
            replacements,
            max_len,
        }
    }

    /// True when there is nothing to redact.
    pub(crate) fn is_empty(&self) -> bool {
        self.forms.is_empty() && self.short.is_none()
    }

    /// Length in bytes of the longest form matched; 0 when empty.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Heap bytes held (forms, index and automaton), for the memory budget of
    /// issue 13: about 11 bytes per byte of each form.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.forms.capacity() * std::mem::size_of::<Form>()
            + self.index.bytes()
            + self.short.as_ref().map_or(0, |s| {
                s.matcher.memory_usage()
                    + s.names.capacity() * 4
                    + s._patterns.iter().map(|p| p.capacity() + 24).sum::<usize>()
            })
            + self
                .replacements
                .iter()
                .map(|r| r.len() + 16)
                .sum::<usize>()
    }

    pub(crate) fn replacement(&self, name: u32) -> &[u8] {
        &self.replacements[name as usize]
    }

    /// The form holding arena offset `pos`.
    fn form_at(&self, pos: usize) -> &Form {
        let i = self.forms.partition_point(|f| f.start <= pos);
        &self.forms[i - 1]
    }

    /// The leftmost-longest match from an indexed form starting at or after `from`.
    fn find_indexed(&self, text: &[u8], from: usize) -> Option<Found> {
        let idx = &self.index;
        if idx.entries.is_empty() || text.len() < from + RUN_LEN {
            return None;
        }
        let start = from.next_multiple_of(WINDOW);
        let (filter, shift) = (&idx.filter[..], idx.filter_shift);
        // chunks_exact: a plain 8-byte load per probe, no bounds checks. `probe`
        // is out of line (a few % of probes reach it), so this loop keeps its
        // state in registers.
        for (k, chunk) in text.get(start..)?.chunks_exact(WINDOW).enumerate() {
            let key = u64::from_le_bytes(chunk.try_into().unwrap_or([0; WINDOW]));
            let (word, mask) = filter_bits(key, shift);
            if filter[word] & mask == mask
                && let Some(found) = self.probe(text, from, start + k * WINDOW, key)
            {
                return Some(found);
            }
        }
        None
    }

    /// The best match holding the window at text offset `p`, if any.
    ///
    /// Every occurrence of the window in every form is tried: skipping some (a
    /// value made of one repeated piece puts dozens in one bucket) would make the
    /// result depend on where the text was cut and let a 16-byte run through (fuzz
    /// finding, `stream_redaction_equals_whole_write`). The work stays bounded:
    /// the left extension is under `WINDOW` bytes (a longer one would hold the
    /// window one probe back, where the scan would have stopped), and a candidate
    /// whose longest possible end cannot beat the best so far is not extended.
    #[inline(never)]
    fn probe(&self, text: &[u8], from: usize, p: usize, key: u64) -> Option<Found> {
        let idx = &self.index;
        let b = bucket_hash(key, idx.bucket_shift);
        let (lo, hi) = (idx.starts[b] as usize, idx.starts[b + 1] as usize);
        let arena = &self.arena[..];
        let mut best: Option<Found> = None;
        for &pos in &idx.entries[lo..hi] {
            let pos = pos as usize;
            if window_key(arena, pos) != key {
                continue;
            }
            let form = self.form_at(pos);
            let off = pos - form.start;
            let bytes = &arena[form.start..form.start + form.len];
            let found = if form.run {
                let (mut a, mut fa) = (p, off);
                while a > from && fa > 0 && text[a - 1] == bytes[fa - 1] {
                    a -= 1;
                    fa -= 1;
                }
                // The farthest this candidate could reach: end of form or text.
                let reach = p + WINDOW + (form.len - off - WINDOW).min(text.len() - p - WINDOW);
                let bound = Found {
                    start: a,
                    end: reach,
                    name: form.name,
                };
                if reach - a < RUN_LEN || best.is_some_and(|b| !bound.better_than(&b)) {
                    continue;
                }
                // Starting where the best does, it must go past the best's end
                // (unless its name is smaller): the byte there rejects most
                // candidates of a repetitive value at once. `b.end` is past the
                // window (a match spans 16 bytes) and before `reach` (the bound).
                if let Some(b) = best
                    && b.start == a
                    && form.name >= b.name
                    && text[b.end] != bytes[off + (b.end - p)]
                {
                    continue;
                }
                let (mut e, mut fe) = (p + WINDOW, off + WINDOW);
                while e < text.len() && fe < form.len && text[e] == bytes[fe] {
                    e += 1;
                    fe += 1;
                }
                (e - a >= RUN_LEN).then_some(Found {
                    start: a,
                    end: e,
                    name: form.name,
                })
            } else {
                p.checked_sub(off)
                    .filter(|&s| s >= from && text.get(s..s + form.len) == Some(bytes))
                    .map(|s| Found {
                        start: s,
                        end: s + form.len,
                        name: form.name,
                    })
            };
            best = pick(best, found);
        }
        best
    }

    fn find_short(&self, text: &[u8], from: usize) -> Option<Found> {
        let short = self.short.as_ref()?;
        let m = short
            .matcher
            .find(Input::new(text).span(from..text.len()))?;
        Some(Found {
            start: m.start(),
            end: m.end(),
            name: short.names[m.pattern().as_usize()],
        })
    }

    /// Iterates over the matches of `text`, leftmost-longest, non-overlapping.
    pub(crate) fn matches<'r, 't>(&'r self, text: &'t [u8]) -> Matches<'r, 't> {
        Matches {
            redactor: self,
            text,
            pos: 0,
            indexed: None,
            short: None,
        }
    }

    /// Appends `input` to `out` with every secret form replaced.
    pub fn redact_into(&self, input: &[u8], out: &mut Vec<u8>) {
        let mut last = 0;
        for m in self.matches(input) {
            out.extend_from_slice(&input[last..m.start]);
            out.extend_from_slice(self.replacement(m.name));
            last = m.end;
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
    pub(crate) fn contains_secret(&self, input: &[u8]) -> bool {
        if let Some(short) = &self.short {
            let hit = match &short.detector {
                Some(d) => d.find(input).is_some(),
                None => short.matcher.is_match(input),
            };
            if hit {
                return true;
            }
        }
        self.find_indexed(input, 0).is_some()
    }

    /// Redacts a string, borrowing it unchanged when it holds no secret.
    pub fn redact_str<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        if !self.contains_secret(s.as_bytes()) {
            return Cow::Borrowed(s);
        }
        let mut out = Vec::with_capacity(s.len());
        self.redact_into(s.as_bytes(), &mut out);
        // A run may start or end inside a multi-byte char of the text; the lossy
        // conversion then shows U+FFFD for the cut char rather than panicking.
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }
}

/// Matches of one text; see [`Redactor::matches`].
pub(crate) struct Matches<'r, 't> {
    redactor: &'r Redactor,
    text: &'t [u8],
    pos: usize,
    /// The next match of each kind from some earlier `pos`, still valid while it
    /// starts at or after the current `pos` (leftmost-longest from an earlier
    /// position that starts later is also leftmost-longest from here).
    indexed: Option<Option<Found>>,
    short: Option<Option<Found>>,
}

impl Iterator for Matches<'_, '_> {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        let pos = self.pos;
        if self
            .indexed
            .is_none_or(|m| m.is_some_and(|m| m.start < pos))
        {
            self.indexed = Some(self.redactor.find_indexed(self.text, pos));
        }
        if self.short.is_none_or(|m| m.is_some_and(|m| m.start < pos)) {
            self.short = Some(self.redactor.find_short(self.text, pos));
        }
        let m = pick(self.indexed.flatten(), self.short.flatten())?;
        self.pos = m.end;
        Some(m)
    }
}

/// Redacts one long line delivered in pieces.
///
/// After each piece it holds back the last `max_pattern_len - 1` bytes that could
/// still be the start of a match, and emits only what no later byte can change. The
/// concatenated output equals [`Redactor::redact_into`] over the whole line, with
/// memory bounded by the longest form. Use the same [`Redactor`] for all pieces of
/// one line: a shorter carry from a different one could let a secret through.
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
        if redactor.is_empty() {
            out.append(&mut self.carry);
            out.extend_from_slice(chunk);
            return;
        }
        self.joined.clear();
        self.joined.extend_from_slice(&self.carry);
        self.joined.extend_from_slice(chunk);
        let buf = &self.joined;

        // A match starting before `limit` fits inside `buf` whatever follows, so
        // leftmost-longest has already decided it; one starting later might grow.
        let limit = buf.len().saturating_sub(redactor.max_len.saturating_sub(1));
        let mut pos = 0;
        for m in redactor.matches(buf) {
            if m.start >= limit {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start]);
            out.extend_from_slice(redactor.replacement(m.name));
            pos = m.end;
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
