//! The streaming redactor (src/redact.rs). Kept small so it follows API changes.
//!
//! Up to four secrets of any bytes, any text, any chunking: no panic; feeding the
//! chunks to a `StreamRedactor` gives exactly what one whole `redact_into` gives
//! (and `redact_slice` / `redact_str` agree); no registered value (raw or trimmed,
//! at least `MIN_SECRET_LEN` bytes) is left in the output, except where it is
//! made of the `[redacted:NAME]` text itself.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use agentsup::redact::{MIN_SECRET_LEN, Redactor, StreamRedactor};
use agentsup::secret::Sensitive;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let n = u.int_in_range(1..=4)?;
    let mut secrets = Vec::new();
    for i in 0..n {
        let v: String = u.arbitrary()?;
        secrets.push((format!("K{i}"), v));
    }
    let cuts: Vec<u8> = u.arbitrary()?;
    let mut input: Vec<u8> = u.arbitrary()?;
    // Put whole secrets into the text too, not only what the fuzzer guesses.
    for _ in 0..u.int_in_range(0..=4)? {
        let (_, v) = u.choose(&secrets)?;
        let at = u.int_in_range(0..=input.len())?;
        input.splice(at..at, v.bytes());
    }
    let r = redactor_for(&secrets);

    let mut whole = Vec::new();
    r.redact_into(&input, &mut whole);

    let mut streamed = Vec::new();
    let mut s = StreamRedactor::new();
    let mut at = 0;
    for &c in &cuts {
        if at >= input.len() {
            break;
        }
        let end = (at + usize::from(c)).min(input.len());
        s.feed(&r, &input[at..end], &mut streamed);
        at = end;
        assert!(
            s.carry_len() < r.max_pattern_len().max(1),
            "carry beyond the longest form"
        );
    }
    s.feed(&r, &input[at..], &mut streamed);
    s.finish(&r, &mut streamed);
    // The case is shown only when the property fails: the fuzzer's own report.
    assert!(
        streamed == whole,
        "chunked output differs from the whole write: secrets {secrets:?}, input {:?}, cut at {:?}",
        String::from_utf8_lossy(&input),
        cut_points(&cuts, input.len())
    );

    let mut scratch = Vec::new();
    assert!(r.redact_slice(&input, &mut scratch) == whole.as_slice());
    if let Ok(text) = std::str::from_utf8(&input) {
        assert!(r.redact_str(text).as_bytes() == whole.as_slice());
    }

    let markers: Vec<String> = (0..n).map(|i| format!("[redacted:K{i}]")).collect();
    for (name, v) in &secrets {
        for form in [v.as_str(), v.trim()] {
            if form.len() < MIN_SECRET_LEN {
                continue;
            }
            if let Some(at) = find_outside(&whole, form.as_bytes(), &markers) {
                panic!(
                    "{name} (form of {} bytes) survived at byte {at}",
                    form.len()
                );
            }
        }
    }
    Ok(())
}

thread_local! {
    /// Redactors already built, by their secrets. libFuzzer mutates mostly the
    /// input after the secrets (they are read first), and building the automaton
    /// of every form costs far more than redacting a short input: reusing it is
    /// what takes this target from hundreds to thousands of executions a second.
    /// A redactor is immutable once built, so reuse cannot hide a bug in one run.
    static BUILT: RefCell<HashMap<Vec<(String, String)>, Rc<Redactor>>> =
        RefCell::new(HashMap::new());
}

/// The redactor for `secrets`, built once per distinct set.
fn redactor_for(secrets: &[(String, String)]) -> Rc<Redactor> {
    BUILT.with(|built| {
        let mut built = built.borrow_mut();
        if let Some(r) = built.get(secrets) {
            return Rc::clone(r);
        }
        if built.len() >= 2048 {
            // Bounded memory (the run's RSS limit): start over.
            built.clear();
        }
        let r = Rc::new(Redactor::new(
            secrets
                .iter()
                .map(|(k, v)| (k.clone(), Sensitive::new(v.clone()))),
        ));
        built.insert(secrets.to_vec(), Rc::clone(&r));
        r
    })
}

/// First occurrence of `needle` in `hay` that does not overlap a marker.
fn find_outside(hay: &[u8], needle: &[u8], markers: &[String]) -> Option<usize> {
    let mut covered = vec![false; hay.len()];
    for m in markers {
        let m = m.as_bytes();
        for i in 0..hay.len().saturating_sub(m.len() - 1) {
            if &hay[i..i + m.len()] == m {
                covered[i..i + m.len()].iter_mut().for_each(|c| *c = true);
            }
        }
    }
    (0..hay.len().saturating_sub(needle.len() - 1)).find(|&i| {
        &hay[i..i + needle.len()] == needle && !covered[i..i + needle.len()].iter().any(|&c| c)
    })
}

/// Where `cuts` split an input of `len` bytes (for the failure message).
fn cut_points(cuts: &[u8], len: usize) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    for &c in cuts {
        if at >= len {
            break;
        }
        at = (at + usize::from(c)).min(len);
        out.push(at);
    }
    out
}
