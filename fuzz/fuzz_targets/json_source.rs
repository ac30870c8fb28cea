//! `command` sources with `format = "json"` (src/sources/command.rs), through the
//! public `load` with a runner that returns the fuzzed output.
//!
//! - any stdout, pointer and exit: no panic;
//! - every string field with a variable name in the object under the pointer comes
//!   out as that entry, unchanged;
//! - no problem (error or warning) shows a string value of the output, a value
//!   already known, or a credential of agentsup's environment, including when the
//!   output is cut or corrupted (invalid JSON) and when the command fails with
//!   those values on its stderr.
#![no_main]

use std::path::Path;
use std::time::Duration;

use agentsup::config::CommandFormat;
use agentsup::plan::is_var_name;
use agentsup::redact::SharedRedactor;
use agentsup::secret::Sensitive;
use agentsup::sources::command::{CommandSpec, load};
use agentsup::sources::{Captured, CommandRunner, LoadContext, ProcessEnv, SourceProblem};
use agentsup_fuzz::{leaked, planted, unplanted};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

struct Canned(Captured);

impl CommandRunner for Canned {
    fn run(
        &self,
        _argv: &[String],
        _env: &[(String, String)],
        _cwd: &Path,
        _timeout: Duration,
        _creds: Option<&agentsup::sys::creds::Creds>,
    ) -> std::result::Result<Captured, String> {
        Ok(Captured {
            code: self.0.code,
            signal: self.0.signal,
            stdout: self.0.stdout.clone(),
            stderr: self.0.stderr.clone(),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let _ = if mode % 2 == 0 {
        raw(&mut u)
    } else {
        built(&mut u)
    };
});

/// Runs `load` and checks what it returned against the planted values.
fn run(stdout: Vec<u8>, stderr: Vec<u8>, code: i32, pointer: Option<&str>, planted: &[String]) {
    let mut env = ProcessEnv::default();
    let mut known = Vec::new();
    for (i, p) in planted.iter().enumerate() {
        // Each value is both known (read from an earlier source) and one of
        // agentsup's own credentials: both must be redacted from stderr.
        env.vars
            .insert(format!("VAULT_TOKEN_{i}"), Sensitive::new(p.clone()));
        known.push((format!("K{i}"), Sensitive::new(p.clone())));
    }
    let runner = Canned(Captured {
        code: Some(code),
        signal: None,
        stdout: stdout.clone(),
        stderr,
    });
    // A fresh one per input: `load` registers every value the command printed.
    let shared = SharedRedactor::new(Vec::new());
    let ctx = LoadContext {
        process_env: &env,
        runner: &runner,
        redactor: &shared,
    };
    let argv = vec!["vault".to_owned()];
    let spec = CommandSpec {
        argv: &argv,
        format: CommandFormat::Json,
        json_pointer: pointer,
        timeout: Duration::from_secs(1),
        cwd: Path::new("/"),
        env: &[],
        // The lease is read from the same output (`refresh` / `ttl_pointer`):
        // its problems must not show a value either.
        ttl_pointer: Some("/lease_duration"),
        creds: None,
    };
    let shows = |p: &SourceProblem| {
        let text = format!("{} {} {:?}", p.location, p.message, p.key);
        if let Some(v) = leaked(&text, planted) {
            panic!("problem shows planted value {v:?}: {text}");
        }
    };
    match load(&spec, &ctx, &known) {
        Err(p) => shows(&p),
        Ok(l) => {
            l.problems.iter().for_each(shows);
            assert_eq!(code, 0, "a failed command gave entries");
            let doc: Value = serde_json::from_slice(&stdout).expect("accepted invalid JSON");
            let target = match pointer {
                Some(p) => doc.pointer(p).expect("accepted a pointer to nothing"),
                None => &doc,
            };
            let obj = target.as_object().expect("accepted a non-object");
            assert!(l.entries.len() <= obj.len());
            for (k, v) in obj {
                if let (true, Value::String(s)) = (is_var_name(k), v) {
                    let got = l.entries.iter().find(|e| e.0 == *k).map(|e| e.1.expose());
                    assert_eq!(got, Some(s.as_str()), "field {k:?}");
                }
            }
        }
    }
}

/// Arbitrary bytes as stdout (after a byte choosing the pointer); then, if they are
/// JSON, the same document with every string value planted.
fn raw(u: &mut Unstructured<'_>) -> Result<()> {
    let pointer = match u.int_in_range(0..=5)? {
        0 | 1 => None,
        2 => Some("/data/data".to_owned()),
        3 => Some(String::new()),
        4 => Some("/0".to_owned()),
        _ => Some(u.arbitrary::<String>()?),
    };
    let stdout = u.bytes(u.len())?.to_vec();
    run(stdout.clone(), Vec::new(), 0, pointer.as_deref(), &[]);
    if let Ok(mut doc) = serde_json::from_slice::<Value>(&stdout) {
        let mut planted = Vec::new();
        plant_strings(&mut doc, &mut planted);
        let pointer = pointer.map(|p| p.replace("Zq", "zq"));
        let out = serde_json::to_vec(&doc).unwrap_or_default();
        run(out, Vec::new(), 0, pointer.as_deref(), &planted);
    }
    Ok(())
}

fn plant_strings(v: &mut Value, planted: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            *s = format!("Zq{}_{}_qZ", planted.len(), s.replace(['Z', 'q'], "z"));
            planted.push(s.clone());
        }
        Value::Array(a) => a.iter_mut().for_each(|v| plant_strings(v, planted)),
        Value::Object(o) => {
            // Keys stay as they are, except that none may pass for a planted value.
            let old = std::mem::take(o);
            for (k, mut v) in old {
                plant_strings(&mut v, planted);
                o.insert(k.replace("Zq", "zq"), v);
            }
        }
        _ => {}
    }
}

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let mut planted = Vec::new();
    let doc = value(u, &mut planted, 0)?;
    let pointer = if u.arbitrary()? {
        Some(pointer_into(u, &doc)?)
    } else {
        None
    };
    let mut stdout = if u.arbitrary()? {
        serde_json::to_vec_pretty(&doc)
    } else {
        serde_json::to_vec(&doc)
    }
    .unwrap_or_default();
    if u.ratio(1, 4)? && !stdout.is_empty() {
        // Corrupt it: cut, or put a stray byte in.
        let at = u.choose_index(stdout.len())?;
        if u.arbitrary()? {
            stdout.truncate(at);
        } else {
            stdout.insert(at, u.arbitrary()?);
        }
    }
    let mut code = 0;
    let mut stderr = Vec::new();
    if u.ratio(1, 4)? && !planted.is_empty() {
        code = u.int_in_range(1..=255)?;
        for _ in 0..u.int_in_range(1..=12)? {
            let p: &String = u.choose(&planted)?;
            let before = unplanted(u)?;
            stderr.extend_from_slice(format!("{before} {p}\n").as_bytes());
        }
    }
    run(stdout, stderr, code, pointer.as_deref(), &planted);
    Ok(())
}

/// A JSON value whose strings are all planted; object keys are free text or
/// variable names.
fn value(u: &mut Unstructured<'_>, plants: &mut Vec<String>, depth: u32) -> Result<Value> {
    let pick = if depth >= 3 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => {
            let newlines = u.arbitrary()?;
            let p = planted(u, plants.len(), newlines)?;
            plants.push(p.clone());
            Value::String(p)
        }
        4 => {
            let mut a = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                a.push(value(u, plants, depth + 1)?);
            }
            Value::Array(a)
        }
        _ => {
            let mut o = Map::new();
            for _ in 0..u.int_in_range(0..=5)? {
                let k = if u.arbitrary()? {
                    (*u.choose(&["OPENAI_API_KEY", "data", "A", "_x1", "K-1", ""])?).to_owned()
                } else {
                    unplanted(u)?
                };
                o.insert(k, value(u, plants, depth + 1)?);
            }
            Value::Object(o)
        }
    })
}

/// A JSON pointer to some value of `doc`, or a little past it.
fn pointer_into(u: &mut Unstructured<'_>, doc: &Value) -> Result<String> {
    let mut p = String::new();
    let mut at = doc;
    loop {
        let next = match at {
            Value::Object(o) if !o.is_empty() && u.arbitrary()? => {
                let (k, v) = o.iter().nth(u.choose_index(o.len())?).expect("in range");
                p.push('/');
                p.push_str(&k.replace('~', "~0").replace('/', "~1"));
                v
            }
            Value::Array(a) if !a.is_empty() && u.arbitrary()? => {
                let i = u.choose_index(a.len())?;
                p.push_str(&format!("/{i}"));
                &a[i]
            }
            _ => break,
        };
        at = next;
    }
    if u.ratio(1, 8)? {
        p.push_str("/nope");
    }
    Ok(p)
}
