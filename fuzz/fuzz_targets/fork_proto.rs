//! The fork-template wire protocol (src/fork/proto.rs).
//!
//! - any bytes as a message from the template: no panic, and only an `exit`
//!   message has a termination;
//! - any request (argv, cwd, environment with repeated names, TABs and newlines in
//!   values): one line, with exactly one TAB; the header before it decodes to the
//!   id, argv, cwd and two descriptors; the environment after it decodes to the
//!   same pairs in the same order.
#![no_main]

use std::fmt;

use agentsup::fuzzing::{decode_fork_message, fork_request};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok((is_exit, term)) = decode_fork_message(rest) {
            assert!(is_exit || term.is_none());
        }
    } else {
        let _ = request(&mut Unstructured::new(rest));
    }
});

/// An object read as its pairs in order, repeats kept.
struct Pairs(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = m.next_entry::<String, String>()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn request(u: &mut Unstructured<'_>) -> Result<()> {
    let id: u64 = u.arbitrary()?;
    let argv: Vec<String> = u.arbitrary()?;
    let cwd: String = u.arbitrary()?;
    let mut env: Vec<(String, String)> = u.arbitrary()?;
    if let Some(first) = env.first().cloned() {
        if u.arbitrary()? {
            env.push((first.0, "repeated".to_owned()));
        }
    }
    let bytes = fork_request(id, &argv, &cwd, &env).expect("a request serializes");
    assert_eq!(bytes.iter().filter(|&&b| b == b'\t').count(), 1, "one TAB");
    assert_eq!(
        bytes.iter().position(|&b| b == b'\n'),
        Some(bytes.len() - 1),
        "one line"
    );
    let text = std::str::from_utf8(&bytes).expect("UTF-8");
    let (header, env_json) = text.trim_end_matches('\n').split_once('\t').expect("a TAB");
    let header: serde_json::Value = serde_json::from_str(header).expect("header is JSON");
    assert_eq!(
        header,
        serde_json::json!({"id": id, "argv": argv, "cwd": cwd, "fds": 2})
    );
    let Pairs(back) = serde_json::from_str(env_json).expect("environment is JSON");
    assert_eq!(back, env);
    Ok(())
}
