//! `supervisor.toml` parsing (src/config.rs).
//!
//! - any text: no panic;
//! - a document built along the schema, with planted values as every `vars` value
//!   and as every string put where the schema wants something else (a type error),
//!   or under an unknown field: the error, if any, shows none of them. Strings the
//!   schema does expect (names, enums, durations, signals) may be echoed and are
//!   never planted.
//! - raw mode: a TOML document from the corpus has every string under a `vars`
//!   table replaced by a planted value, and the same check applies.
#![no_main]

use std::path::Path;

use agentsup::config::parse;
use agentsup_fuzz::{leaked, planted, unplanted};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        let mut g = Gen {
            u: Unstructured::new(rest),
            planted: Vec::new(),
        };
        if let Ok(text) = g.document() {
            check(&text, &g.planted);
        }
    }
});

fn check(text: &str, planted: &[String]) {
    if let Err(e) = parse(Path::new("supervisor.toml"), text) {
        let shown = e.to_string();
        if let Some(p) = leaked(&shown, planted) {
            panic!("config error shows planted value {p:?}:\n{shown}\n--- document ---\n{text}");
        }
    }
}

fn raw(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = parse(Path::new("supervisor.toml"), text);
    // No key or other text may pass for a planted value.
    let Ok(mut doc) = text.replace("Zq", "zq").parse::<toml::Table>() else {
        return;
    };
    let mut planted = Vec::new();
    let mut plant = |t: &mut toml::Table| {
        if let Some(toml::Value::Table(vars)) = t.get_mut("vars") {
            for (_, v) in vars.iter_mut() {
                replace_strings(v, &mut planted);
            }
        }
    };
    if let Some(toml::Value::Table(env)) = doc.get_mut("env") {
        plant(env);
    }
    if let Some(toml::Value::Array(workers)) = doc.get_mut("worker") {
        for w in workers {
            if let toml::Value::Table(w) = w {
                plant(w);
            }
        }
    }
    if planted.is_empty() {
        return;
    }
    if let Ok(text) = toml::to_string(&doc) {
        check(&text, &planted);
    }
}

fn replace_strings(v: &mut toml::Value, planted: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => {
            *s = format!("Zq{}_{}_qZ", planted.len(), s.replace(['Z', 'q'], "z"));
            planted.push(s.clone());
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| replace_strings(v, planted)),
        toml::Value::Table(t) => {
            let old = std::mem::take(t);
            for (k, mut v) in old {
                replace_strings(&mut v, planted);
                t.insert(k.replace("Zq", "zq"), v);
            }
        }
        _ => {}
    }
}

/// What the schema expects at a field.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Enum(&'static [&'static str]),
    Dur,
    Signal,
    Bool,
    Int,
    Float,
    Strs,
    Ints,
    Vars,
    Table(&'static [(&'static str, Kind)]),
}

use Kind::*;

const SUPERVISOR: &[(&str, Kind)] = &[
    ("shutdown_timeout", Dur),
    ("log_format", Enum(&["pretty", "json"])),
    ("health", Str),
    ("on_give_up", Enum(&["exit", "keep"])),
    ("on_rotation", Enum(&["restart", "next-start"])),
    ("probe", Bool),
];
const ENV: &[(&str, Kind)] = &[("inherit", Strs), ("vars", Vars), ("worker_dotenv", Bool)];
const SOURCE: &[(&str, Kind)] = &[
    ("type", Enum(&["dotenv", "dir", "env", "command"])),
    ("path", Str),
    ("optional", Bool),
    ("command", Strs),
    ("format", Enum(&["dotenv", "json"])),
    ("json_pointer", Str),
    ("timeout", Dur),
];
const KEY: &[(&str, Kind)] = &[
    (
        "provider",
        Enum(&["openai", "azure-openai", "anthropic", "google", "none"]),
    ),
    ("pattern", Str),
    ("secret", Bool),
];
const BACKOFF: &[(&str, Kind)] = &[
    ("initial", Dur),
    ("max", Dur),
    ("multiplier", Float),
    ("jitter", Float),
    ("reset_after", Dur),
];
const AUTH: &[(&str, Kind)] = &[("exit_codes", Ints), ("patterns", Strs), ("max_delay", Dur)];
const WORKER: &[(&str, Kind)] = &[
    ("name", Str),
    ("command", Strs),
    ("cwd", Str),
    ("replicas", Int),
    ("keys", Strs),
    ("vars", Vars),
    ("restart", Enum(&["always", "on-failure", "never"])),
    ("stop_signal", Signal),
    ("stop_timeout", Dur),
    ("start", Enum(&["spawn", "fork"])),
    ("backoff", Table(BACKOFF)),
    ("max_restarts", Int),
    ("auth", Table(AUTH)),
    ("preload", Strs),
    ("module", Str),
    ("script", Str),
    ("args", Strs),
    ("python", Str),
];

struct Gen<'a> {
    u: Unstructured<'a>,
    planted: Vec<String>,
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl Gen<'_> {
    fn document(&mut self) -> Result<String> {
        let mut out = String::new();
        if self.u.arbitrary()? {
            out.push_str("[supervisor]\n");
            self.fields(&mut out, SUPERVISOR)?;
        }
        if self.u.arbitrary()? {
            out.push_str("[env]\n");
            self.fields(&mut out, ENV)?;
        }
        for _ in 0..self.u.int_in_range(0..=2)? {
            out.push_str("[[source]]\n");
            self.fields(&mut out, SOURCE)?;
        }
        for _ in 0..self.u.int_in_range(0..=2)? {
            let name = unplanted(&mut self.u)?;
            out.push_str(&format!("[keys.{}]\n", lit(&name)));
            self.fields(&mut out, KEY)?;
        }
        for _ in 0..self.u.int_in_range(0..=3)? {
            out.push_str("[[worker]]\n");
            self.fields(&mut out, WORKER)?;
            if self.u.ratio(1, 4)? {
                // The sub-table form of `vars`.
                out.push_str("[worker.vars]\n");
                for _ in 0..self.u.int_in_range(0..=3)? {
                    let name = unplanted(&mut self.u)?;
                    let v = self.vars_value()?;
                    out.push_str(&format!("{} = {v}\n", lit(&name)));
                }
            }
        }
        if self.u.ratio(1, 8)? {
            // Trailing text of any kind: syntax errors after planted values.
            out.push_str(&unplanted(&mut self.u)?);
        }
        Ok(out)
    }

    fn fields(&mut self, out: &mut String, schema: &[(&str, Kind)]) -> Result<()> {
        for _ in 0..self.u.int_in_range(0..=schema.len() + 1)? {
            if self.u.ratio(1, 12)? {
                // An unknown field: its value is protected whatever it is.
                let name = unplanted(&mut self.u)?;
                let v = self.random(true, true)?;
                out.push_str(&format!("{} = {v}\n", lit(&name)));
                continue;
            }
            let (name, kind) = *self.u.choose(schema)?;
            let v = self.value(kind)?;
            out.push_str(&format!("{name} = {v}\n"));
        }
        Ok(())
    }

    fn plant(&mut self) -> Result<String> {
        let p = planted(&mut self.u, self.planted.len(), true)?;
        self.planted.push(p.clone());
        Ok(lit(&p))
    }

    fn free_text(&mut self) -> Result<String> {
        Ok(lit(&unplanted(&mut self.u)?))
    }

    /// A value for a field of `kind`: well typed most of the time.
    fn value(&mut self, kind: Kind) -> Result<String> {
        let wants_string = matches!(kind, Str | Enum(_) | Dur | Signal);
        if self.u.ratio(1, 4)? {
            // Ill typed. A string is planted unless the field wants a string.
            // serde reads a table's fields from an array by position, so strings
            // in an array given for a table land in its (echoable) duration fields.
            return self.random(!wants_string, !matches!(kind, Table(_)));
        }
        Ok(match kind {
            Str => self.free_text()?,
            Enum(names) => {
                if self.u.ratio(1, 5)? {
                    self.free_text()?
                } else {
                    lit(self.u.choose(names)?)
                }
            }
            Dur => {
                if self.u.ratio(1, 5)? {
                    self.free_text()?
                } else {
                    lit(self.u.choose(&["10s", "500ms", "1h 30m", "0s", "400d"])?)
                }
            }
            Signal => {
                if self.u.ratio(1, 5)? {
                    self.free_text()?
                } else {
                    lit(self.u.choose(&["SIGTERM", "term", "INT", "SIGBOGUS"])?)
                }
            }
            Bool => self.u.arbitrary::<bool>()?.to_string(),
            Int => self.u.arbitrary::<i64>()?.to_string(),
            Float => format!("{:?}", f64::from(self.u.arbitrary::<f32>()?)).replace("NaN", "nan"),
            Strs => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=3)? {
                    items.push(if self.u.ratio(1, 6)? {
                        // A non-string element: strings beside it are fine.
                        self.random(false, true)?
                    } else {
                        self.free_text()?
                    });
                }
                format!("[{}]", items.join(", "))
            }
            Ints => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=3)? {
                    items.push(if self.u.ratio(1, 6)? {
                        self.plant()?
                    } else {
                        self.u.arbitrary::<i32>()?.to_string()
                    });
                }
                format!("[{}]", items.join(", "))
            }
            Vars => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=3)? {
                    let name = unplanted(&mut self.u)?;
                    let v = self.vars_value()?;
                    items.push(format!("{} = {v}", lit(&name)));
                }
                format!("{{ {} }}", items.join(", "))
            }
            Table(schema) => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=schema.len())? {
                    let (name, kind) = *self.u.choose(schema)?;
                    let v = self.value(kind)?;
                    items.push(format!("{name} = {v}"));
                }
                format!("{{ {} }}", items.join(", "))
            }
        })
    }

    /// A `vars` value: planted, or anything (any string inside is planted).
    fn vars_value(&mut self) -> Result<String> {
        if self.u.ratio(3, 4)? {
            self.plant()
        } else {
            self.random(true, true)
        }
    }

    /// Any value. `plant_top`: a string at the top is planted (else free text is
    /// avoided there: the field may legitimately echo it). `plant_nested`: strings
    /// nested in arrays and tables are planted (else they are free text).
    fn random(&mut self, plant_top: bool, plant_nested: bool) -> Result<String> {
        Ok(match self.u.int_in_range(0..=6)? {
            0 => self.u.arbitrary::<i64>()?.to_string(),
            1 => self.u.arbitrary::<bool>()?.to_string(),
            2 => "1979-05-27T07:32:00Z".to_owned(),
            3 => "3.5".to_owned(),
            4 => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=2)? {
                    items.push(self.random_nested(plant_nested)?);
                }
                format!("[{}]", items.join(", "))
            }
            5 => {
                let mut items = Vec::new();
                for _ in 0..self.u.int_in_range(0..=2)? {
                    let name = unplanted(&mut self.u)?;
                    let v = self.random_nested(plant_nested)?;
                    items.push(format!("{} = {v}", lit(&name)));
                }
                format!("{{ {} }}", items.join(", "))
            }
            _ if plant_top => self.plant()?,
            _ => "-7".to_owned(),
        })
    }

    fn random_nested(&mut self, plant: bool) -> Result<String> {
        if self.u.ratio(1, 2)? {
            if plant {
                self.plant()
            } else {
                self.free_text()
            }
        } else {
            self.random(plant, plant)
        }
    }
}
