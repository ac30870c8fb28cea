//! Redaction of every common form of a secret (issue 12) and the redactor's memory
//! (issue 13), with real python3 workers printing what real code prints.

use std::time::Duration;

use crate::support::*;

/// The secrets of [`sandbox_with_secrets`], each a fresh canary.
struct Secrets {
    /// SERVICE_TOKEN: every character class an encoder treats differently, `"`,
    /// `\`, `/`, `+`, `=` (the canary's), a space and non-ASCII (its prefix).
    token: Canary,
    /// OPENAI_API_KEY.
    openai: Canary,
    /// The two body lines of TLS_KEY, a PEM key.
    pem: [Canary; 2],
}

/// Prints each form of each secret as `NAME LABEL: FORM` and writes them all to
/// forms.json for the test to look for.
const PRINTER: &str = r#"
import base64, json, os, re, sys, urllib.parse
forms = {}
for name in ["SERVICE_TOKEN", "OPENAI_API_KEY", "TLS_KEY"]:
    v = os.environ[name]
    b = v.encode()
    f = {
        "raw": v,
        "json": json.dumps(v),
        "json_utf8": json.dumps(v, ensure_ascii=False),
        "json_obj": json.dumps({"token": v}),
        "quote": urllib.parse.quote(v),
        "quote_safe": urllib.parse.quote(v, safe=""),
        "quote_plus": urllib.parse.quote_plus(v),
        "quote_lower": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(v, safe="")),
        "b64": base64.b64encode(b).decode(),
        "b64url": base64.urlsafe_b64encode(b).decode(),
        "b64_in_json": base64.b64encode(json.dumps({"auth": v}).encode()).decode(),
        "b64_after_1": base64.b64encode(b"x" + b + b"y").decode(),
        "b64_after_2": base64.b64encode(b"xy" + b).decode(),
        "hex": b.hex(),
        "HEX": b.hex().upper(),
        "hex_colon": b.hex(":"),
        "HEX_colon": b.hex(":").upper(),
        "hex_dash": b.hex("-"),
        "hex_space": b.hex(" ").upper(),
        "b64_in_json_body": base64.b64encode(json.dumps({"model": "gpt", "key": v}).encode()).decode(),
        "b64url_in_json_utf8": base64.urlsafe_b64encode(json.dumps({"k": v}, ensure_ascii=False).encode()).decode(),
        "prefix": v.strip()[:24],
        "suffix": v.strip()[-20:],
        "repr": repr(b),
    }
    if "\n" in v.strip():
        for i, line in enumerate(v.strip().splitlines()):
            if not line.startswith("-----"):
                f["line%d" % i] = line
    for label, form in f.items():
        if "\n" in form:
            continue
        print(name, label + ":", form, flush=True)
    forms[name] = f
with open("forms.json", "w") as out:
    json.dump(forms, out)
print("printed all forms", flush=True)
"#;

fn sandbox_with_secrets(worker: &str, script: &str) -> (Sandbox, Secrets) {
    let secrets = Secrets {
        token: Canary::new("tok_9 q\u{e9}\u{6f22}\u{5b57}-"),
        openai: Canary::new("sk-proj-"),
        pem: [Canary::new("MIIEvQIBADAN"), Canary::new("pQ8xK2mZ9vL4")],
    };
    let sb = Sandbox::new();
    sb.write("secrets/SERVICE_TOKEN", secrets.token.value());
    sb.write("secrets/OPENAI_API_KEY", secrets.openai.value());
    sb.write(
        "secrets/TLS_KEY",
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
            secrets.pem[0].value(),
            secrets.pem[1].value()
        ),
    );
    sb.write(&format!("{worker}.py"), script);
    sb.config(&format!(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "{worker}"
command = ["{}", "{worker}.py"]
keys = ["SERVICE_TOKEN", "OPENAI_API_KEY", "TLS_KEY"]
restart = "never"
"#,
        python()
    ));
    (sb, secrets)
}

/// The text a reader sees: pretty output as is; JSON records' `line` and
/// `message` decoded, as `jq -r` prints them.
fn seen(out: &Output, format: &str) -> String {
    let mut text = out.stderr.clone();
    if format == "json" {
        for l in out.stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            for key in ["line", "message"] {
                if let Some(s) = v[key].as_str() {
                    text.push_str(s);
                    text.push('\n');
                }
            }
        }
    } else {
        text.push_str(&out.stdout);
    }
    text
}

impl Secrets {
    /// Asserts no secret is in `surface`, in any form (the canary's check).
    fn assert_absent(&self, surface: &(impl Surface + ?Sized)) {
        self.token.assert_absent(surface);
        self.openai.assert_absent(surface);
        self.pem[0].assert_absent(surface);
        self.pem[1].assert_absent(surface);
    }
}

#[test]
fn every_encoded_form_is_redacted_in_pretty_and_json() {
    let (sb, secrets) = sandbox_with_secrets("printer", PRINTER);
    for format in ["pretty", "json"] {
        let out = sb.run(&["run", "--no-color", "--log-format", format]);
        out.assert_code(0);
        let text = seen(&out, format);
        assert!(text.contains("printed all forms"), "{text}");
        let forms: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sb.path().join("forms.json")).unwrap()).unwrap();
        for (name, by_label) in forms.as_object().unwrap() {
            for (label, form) in by_label.as_object().unwrap() {
                let form = form.as_str().unwrap();
                // A PEM's first and last characters are its armour, not secret.
                let armour = name == "TLS_KEY" && (label == "prefix" || label == "suffix");
                if form.contains('\n') || armour {
                    continue;
                }
                // python3's own encoding of the value, as an oracle beside the
                // canary's forms below.
                let canary = match name.as_str() {
                    "SERVICE_TOKEN" => &secrets.token,
                    "OPENAI_API_KEY" => &secrets.openai,
                    _ => &secrets.pem[0],
                };
                canary.assert_encoding_absent(
                    &(format!("the {format} output"), &text),
                    &format!("python3's {label} of {name}"),
                    form,
                );
                let line = text
                    .lines()
                    .find(|l| l.contains(&format!("{name} {label}:")))
                    .unwrap_or_else(|| panic!("{format}: no line for {name} {label}:\n{text}"));
                assert!(
                    line.contains(&format!("[redacted:{name}]")),
                    "{format}: {line}"
                );
            }
        }
        secrets.assert_absent(&(format!("{format} output, as read"), &text));
        secrets.assert_absent(&out);
        // Separated hex with its separators deleted is plain hex, which the
        // canary looks for in any 12 characters.
        for (label, sep) in [
            ("hex_colon", ":"),
            ("HEX_colon", ":"),
            ("hex_dash", "-"),
            ("hex_space", " "),
        ] {
            for line in text.lines().filter(|l| l.contains(&format!(" {label}: "))) {
                let form = &line[line.find(": ").unwrap() + 2..];
                secrets.assert_absent(&(format!("{format} {label}"), form.replace(sep, "")));
            }
        }
        // What is left of a base64 form around the redaction decodes to nothing
        // of the secret (red-team F: the JSON-escaped stretch of a non-ASCII
        // token used to decode out of the part before it).
        for line in text.lines().filter(|l| l.contains(" b64")) {
            let form = &line[line.find(": ").unwrap() + 2..];
            let decoded = decode_around_redactions(form);
            secrets.assert_absent(&(format!("{format}: {line} decoded"), decoded));
        }
        // The armour says nothing secret and is left alone.
        assert!(
            text.contains("TLS_KEY prefix: -----BEGIN PRIVATE KEY--"),
            "{text}"
        );
    }
}

/// Every stretch of `form` between redactions, base64-decoded at each of the four
/// offsets it could start at (standard or URL-safe alphabet), concatenated.
fn decode_around_redactions(form: &str) -> Vec<u8> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for piece in form.split("[redacted:") {
        let piece = piece.find(']').map_or(piece, |i| &piece[i + 1..]);
        let piece = piece.trim_end_matches('=');
        for skip in 0..4.min(piece.len() + 1) {
            let rest = &piece[skip..];
            let rest = &rest[..rest.len() / 4 * 4];
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                if let Ok(bytes) = engine.decode(rest) {
                    out.extend_from_slice(&bytes);
                    out.push(b'\n');
                }
            }
        }
    }
    out
}

/// Pieces of 12 characters joined by what a terminal does not show.
const CONTROLS: &str = r##"
import os, sys
key = os.environ["OPENAI_API_KEY"]
pieces = [key[i:i + 12] for i in range(0, len(key), 12)]
for label, sep in [("sgr", "\x1b[0m"), ("osc", "\x1b]0;title\x07"), ("bs", "Z\b"),
                   ("nul", "\0"), ("c1", "\u009b1m"), ("cr", "")]:
    if label == "cr":
        # The second half first, then the first half over padding: a terminal
        # shows the key whole.
        half = len(key) // 2
        print("#" * half + key[half:] + " (cr)\r" + key[:half], flush=True)
    else:
        print(label + ": " + sep.join(pieces), flush=True)
print("\ragentsup | warning: forged event", flush=True)
print("done", flush=True)
"##;

#[test]
fn terminal_controls_cannot_hide_a_key_or_forge_an_event() {
    let (sb, secrets) = sandbox_with_secrets("ctl", CONTROLS);
    for format in ["pretty", "json"] {
        let out = sb.run(&["run", "--no-color", "--log-format", format]);
        out.assert_code(0);
        let text = seen(&out, format);
        assert!(text.contains("done"), "{text}");
        // Neither raw (stdout) nor decoded holds a control or 16 bytes of the key.
        for t in [&out.stdout, &text] {
            assert!(
                !t.contains(['\x1b', '\x08', '\0', '\r', '\u{9b}']),
                "{format}: {t:?}"
            );
            secrets
                .openai
                .assert_absent(&(format!("{format} output"), t));
        }
        assert!(!out.stdout.contains("\\u001b"), "{}", out.stdout);
        for label in ["sgr", "osc", "bs", "nul", "c1", "cr"] {
            assert!(
                text.lines()
                    .any(|l| l.contains(label) && l.contains("[redacted:OPENAI_API_KEY]")),
                "{format} {label}: {text}"
            );
        }
        if format == "pretty" {
            let forged = text.lines().find(|l| l.contains("forged")).unwrap();
            assert!(forged.starts_with("ctl.0"), "{forged:?}");
        }
    }
}

/// VmHWM (peak RSS) of `pid`, in KiB; `None` once it has exited.
fn peak_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn two_megabyte_secret_runs_in_bounded_memory() {
    // A 2 MB secret: the old automaton needed gigabytes for it and aborted (issue
    // 13). No worker can receive it (Linux caps one environment string at 128 KiB),
    // so declaring it is refused naming it (below); but agentsup must load,
    // register and redact it: a secret-looking name is registered whoever declares
    // it, and a worker prints it, read from the file, as one 2 MB line.
    // A canary first, so a leak of the value's start is the canary's to find.
    let head = Canary::new("");
    let big: String = head.value().to_string()
        + &(0..2 * 1024 * 1024)
            .map(|i: usize| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7919 + i / 36) % 36])
            })
            .collect::<String>();
    let sb = Sandbox::new();
    sb.write("secrets/BIG_TOKEN", &big);
    sb.write(
        "printer.py",
        r#"
import sys, time
v = open("secrets/BIG_TOKEN").read()
sys.stdout.write("blob=" + v + " end\n")
sys.stdout.flush()
print("printed", flush=True)
time.sleep(60)
"#,
    );
    sb.config(&format!(
        r#"
[supervisor]
on_give_up = "keep"

[[source]]
type = "dir"
path = "secrets"
max_size = "4MiB"

[[worker]]
name = "printer"
command = ["{py}", "printer.py"]
restart = "never"
"#,
        py = python()
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    let mut peak = 0;
    let printed = wait_until(Duration::from_secs(90), || {
        let now = peak_rss_kib(run.pid());
        peak = peak.max(now.unwrap_or(0));
        now.is_none() || run.output().contains("printed")
    });
    let last = peak_rss_kib(run.pid());
    assert!(
        last.is_some(),
        "agentsup exited:\n{}",
        run.output().chars().take(3000).collect::<String>()
    );
    peak = peak.max(last.unwrap_or(0));
    run.signal(15);
    assert!(run.wait_exit(Duration::from_secs(30)).is_some());
    let all = run.output();
    let excerpt = |s: &str| s.chars().take(3000).collect::<String>();
    assert!(printed, "{}", excerpt(&all));
    head.assert_absent(&("agentsup's output", &all));
    // A line this long is printed in pieces: the first byte is final before the
    // match is, so `b` comes out on its own.
    assert!(
        all.contains("lob=[redacted:BIG_TOKEN] end"),
        "{}",
        excerpt(&all)
    );
    assert!(
        peak < 100 * 1024,
        "agentsup peak RSS {peak} KiB with a 2 MB secret"
    );
    eprintln!("agentsup peak RSS (VmHWM) with a 2 MB secret: {peak} KiB");

    // Declared by a worker: refused with the key named, before anything starts
    // (no execve could pass it: the worker would crash-loop on E2BIG).
    let config = std::fs::read_to_string(sb.path().join("supervisor.toml")).unwrap();
    let declared = format!(
        "{config}\n[[worker]]\nname = \"big\"\ncommand = [\"{}\", \"-c\", \"pass\"]\nkeys = [\"BIG_TOKEN\"]\n",
        python()
    );
    sb.config(&declared);
    for args in [&["check"][..], &["run", "--no-color"][..]] {
        let out = sb.run(args);
        out.assert_code(78)
            .assert_no_leak(&head)
            .assert_contains(&format!("BIG_TOKEN is {} bytes", big.len()));
    }

    // With the default 64 KiB cap of a `dir` source, the value is refused with
    // the key (its file) named, before anything starts.
    sb.config(&declared.replace("max_size = \"4MiB\"\n", ""));
    let out = sb.run(&["check"]);
    out.assert_no_leak(&head).assert_contains("BIG_TOKEN");
    assert_ne!(out.code, Some(0), "{}", out.all());
}

#[test]
fn connection_url_password_is_masked_and_redacted_whatever_the_name() {
    // URL userinfo cannot carry `/` or `"` unencoded: a letters-and-digits canary.
    let password = Canary::alnum("Sup3r-");
    let url = format!(
        "postgres://app:{}@db.internal:5432/orders",
        password.value()
    );
    let sb = Sandbox::new();
    sb.write(".env", format!("DATABASE_URL={url}\n"));
    sb.write(
        "db.py",
        r#"
import os, urllib.parse
url = os.environ["DATABASE_URL"]
print("connecting to", url, flush=True)
print("password", urllib.parse.urlsplit(url).password, flush=True)
"#,
    );
    sb.config(&format!(
        r#"
[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "db"
command = ["{}", "db.py"]
keys = ["DATABASE_URL"]
restart = "never"
"#,
        python()
    ));
    for format in ["text", "json", "dotenv"] {
        let out = sb.run(&["env", "db", "--format", format]);
        out.assert_code(0).assert_no_leak(&password);
        out.assert_contains("postgres://app:***@db.internal:5432/orders");
    }
    sb.run(&["env", "db", "--reveal"]).assert_contains(&url);
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(0).assert_no_leak(&password);
    out.assert_contains(
        "connecting to postgres://app:[redacted:DATABASE_URL]@db.internal:5432/orders",
    );
    out.assert_contains("password [redacted:DATABASE_URL]");
}

#[test]
fn check_warns_when_inherit_hands_out_secret_looking_variables() {
    let sb = Sandbox::new();
    let vault = Canary::new("hvs.");
    let broker_pass = Canary::alnum("brokerpass");
    let broker_url = format!("amqp://u:{}@mq/", broker_pass.value());
    sb.config(
        r#"
[env]
inherit = ["*"]

[[worker]]
name = "w"
command = ["true"]
"#,
    );
    let out = sb.run_env(
        &["check"],
        &[
            ("VAULT_TOKEN", vault.value()),
            ("BROKER_URL", &broker_url),
            ("HARMLESS", "x"),
        ],
    );
    out.assert_code(0)
        .assert_no_leak(&vault)
        .assert_no_leak(&broker_pass)
        .assert_contains("inherit")
        .assert_contains("VAULT_TOKEN")
        .assert_contains("BROKER_URL");
    assert!(!out.all().contains("HARMLESS"), "{}", out.all());
    // The default inherit list names no secret.
    sb.config("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\n");
    let out = sb.run_env(&["check"], &[("VAULT_TOKEN", vault.value())]);
    out.assert_code(0).assert_no_leak(&vault);
    assert!(
        !out.all().contains("inherit-secret") && !out.all().contains("VAULT_TOKEN"),
        "{}",
        out.all()
    );
}

#[test]
fn exec_masks_the_secrets_it_injected_unless_told_not_to() {
    let (sb, secrets) = sandbox_with_secrets("unused", "");
    let script = r#"
import base64, os, sys
k = os.environ["OPENAI_API_KEY"]
print("out", k, flush=True)
print("err", base64.b64encode(k.encode()).decode(), file=sys.stderr, flush=True)
sys.stdout.write("partial " + k[:20])
sys.exit(3)
"#;
    let py = python();
    let out = sb.run(&["exec", "--worker", "unused", "--", &py, "-c", script]);
    out.assert_code(3).assert_no_leak(&secrets.openai);
    assert!(
        out.stdout.contains("out [redacted:OPENAI_API_KEY]\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("partial [redacted:OPENAI_API_KEY]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("err [redacted:OPENAI_API_KEY]\n"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("err ") && !out.stderr.contains("out "),
        "each to its own stream"
    );

    let out = sb.run(&[
        "exec",
        "--no-masking",
        "--worker",
        "unused",
        "--",
        &py,
        "-c",
        script,
    ]);
    out.assert_code(3)
        .assert_contains(&format!("out {}", secrets.openai.value()));
}

/// issue 12: `exec`'s masking redacts what a terminal shows, as worker output
/// does: a key printed in pieces joined by escape sequences, backspaces or NULs,
/// or as hex, never shows whole, on either stream; and a line starting with `\r`
/// cannot print over what came before it.
#[test]
fn exec_masking_redacts_what_a_terminal_shows() {
    let (sb, secrets) = sandbox_with_secrets("unused", "");
    let script = r#"
import os, sys
k = os.environ["OPENAI_API_KEY"]
parts = [k[i:i + 12] for i in range(0, len(k), 12)]
for stream in (sys.stdout, sys.stderr):
    for sep in ("\x1b[0m", "\x1b]0;title\x07", "Z\b", "\0", "\u009b1m"):
        stream.write("k=" + sep.join(parts) + "\n")
    stream.write("hex " + k.encode().hex() + "\n")
    stream.write("\rforged line\n")
    stream.flush()
"#;
    let py = python();
    let out = sb.run(&["exec", "--worker", "unused", "--", &py, "-c", script]);
    out.assert_code(0);
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert_eq!(
            text.matches("k=[redacted:OPENAI_API_KEY]\n").count(),
            5,
            "{name}: {text:?}"
        );
        assert!(
            text.contains("hex [redacted:OPENAI_API_KEY]\n"),
            "{name}: {text:?}"
        );
        assert!(text.contains("\nforged line\n"), "{name}: {text:?}");
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\0'),
            "{name}: no control reaches the terminal: {text:?}"
        );
        secrets.openai.assert_absent(&(name, text.as_str()));
    }
    // Opting out passes the bytes through untouched.
    let out = sb.run(&[
        "exec",
        "--no-masking",
        "--worker",
        "unused",
        "--",
        &py,
        "-c",
        script,
    ]);
    out.assert_code(0).assert_contains("\x1b[0m");
}

/// Pieces of 12 characters joined by Unicode's default-ignorable characters,
/// which a terminal shows as nothing (issue 12, red-team row D), and text that
/// needs some of them (an emoji ZWJ sequence, Persian with a ZWNJ).
const INVISIBLE: &str = r##"
import os, sys
key = os.environ["OPENAI_API_KEY"]
pieces = [key[i:i + 12] for i in range(0, len(key), 12)]
for label, sep in [("zwsp", "\u200b"), ("shy", "\u00ad"), ("wj", "\u2060"), ("bom", "\ufeff"),
                   ("rlo", "\u202e"), ("pdf", "\u202a\u202c"), ("isolate", "\u2066\u2069"),
                   ("zwj", "\u200d"), ("zwnj", "\u200c"), ("lrm", "\u200e"), ("vs16", "\ufe0f"),
                   ("tag", "\U000e0041")]:
    print(label + ": " + sep.join(pieces), flush=True)
    print(label + " stderr: " + sep.join(pieces), file=sys.stderr, flush=True)
print("family \U0001f468\u200d\U0001f469\u200d\U0001f467 persian \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", flush=True)
print("done", flush=True)
"##;

const INVISIBLE_LABELS: [&str; 12] = [
    "zwsp", "shy", "wj", "bom", "rlo", "pdf", "isolate", "zwj", "zwnj", "lrm", "vs16", "tag",
];

/// Default-ignorable characters: what a reader deleting the invisible characters
/// from a copy of the output would delete.
fn without_invisible(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(u32::from(*c), 0xad | 0x200b..=0x200f | 0x202a..=0x202e
                | 0x2060..=0x206f | 0xfe00..=0xfe0f | 0xfeff | 0xe0000..=0xe0fff)
        })
        .collect()
}

fn assert_invisible_joins_redacted(what: &str, text: &str, secrets: &Secrets, stderr_too: bool) {
    for label in INVISIBLE_LABELS {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{label}: ")))
            .unwrap_or_else(|| panic!("{what}: no line for {label}:\n{text}"));
        assert!(
            line.ends_with(&format!("{label}: [redacted:OPENAI_API_KEY]")),
            "{what}: {line:?}"
        );
        if stderr_too {
            assert!(
                text.contains(&format!("{label} stderr: [redacted:OPENAI_API_KEY]")),
                "{what} {label}: {text}"
            );
        }
    }
    secrets.openai.assert_absent(&(what.to_string(), text));
    secrets.openai.assert_absent(&(
        format!("{what}, invisible characters deleted"),
        without_invisible(text),
    ));
    // Legitimate text keeps what it needs.
    assert!(
        text.contains("family \u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} persian \u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}"),
        "{what}: {text}"
    );
}

#[test]
fn invisible_unicode_between_pieces_cannot_hide_a_key() {
    let (sb, secrets) = sandbox_with_secrets("inv", INVISIBLE);
    for format in ["pretty", "json"] {
        let out = sb.run(&["run", "--no-color", "--log-format", format]);
        out.assert_code(0);
        let text = seen(&out, format);
        assert!(text.contains("done"), "{text}");
        assert_invisible_joins_redacted(&format!("{format} output"), &text, &secrets, true);
        // Nor in the raw bytes printed (JSON escapes stay escapes of nothing).
        secrets
            .openai
            .assert_absent(&(format!("{format} raw"), without_invisible(&out.stdout)));
        assert!(!out.stdout.contains("\\u200b") && !out.stdout.contains('\u{202e}'));
    }
    let py = python();
    let script = sb.path().join("inv.py");
    let out = sb.run(&[
        "exec",
        "--worker",
        "inv",
        "--",
        &py,
        script.to_str().unwrap(),
    ]);
    out.assert_code(0);
    assert_invisible_joins_redacted("exec stdout", &out.stdout, &secrets, false);
    for label in INVISIBLE_LABELS {
        assert!(
            out.stderr
                .contains(&format!("{label} stderr: [redacted:OPENAI_API_KEY]\n")),
            "exec stderr {label}: {}",
            out.stderr
        );
    }
    secrets
        .openai
        .assert_absent(&("exec stderr", without_invisible(&out.stderr)));
}

/// issue 12, red-team G: a password in a URL's query string, a JDBC URL, a
/// MongoDB URL or an ADO.NET connection string, in variables whose names do not
/// look secret, is masked by `env` (host and user visible) and redacted in
/// output, as the `user:pass@` password is.
#[test]
fn password_parameters_are_masked_and_redacted_whatever_the_name() {
    let pg = Canary::alnum("QueryPass");
    let jdbc = Canary::alnum("JdbcPass");
    let mongo = Canary::alnum("MongoPass");
    let ado = Canary::alnum("AdoPass");
    let vars = [
        (
            "PG_QS_URL",
            format!("postgres://db.internal/x?user=app&password={}", pg.value()),
            "postgres://db.internal/x?user=app&password=***".to_string(),
        ),
        (
            "JDBC_URL",
            format!(
                "jdbc:postgresql://h:5432/db?user=u&password={}&ssl=true",
                jdbc.value()
            ),
            "jdbc:postgresql://h:5432/db?user=u&password=***&ssl=true".to_string(),
        ),
        (
            "MONGO_URL",
            format!("mongodb://h/?authSource=admin&pwd={}", mongo.value()),
            "mongodb://h/?authSource=admin&pwd=***".to_string(),
        ),
        (
            "SQLSERVER_CONN",
            format!("Server=x;Database=y;User Id=u;Password={};", ado.value()),
            "Server=x;Database=y;User Id=u;Password=***;".to_string(),
        ),
    ];
    let sb = Sandbox::new();
    let dotenv: String = vars
        .iter()
        .map(|(name, value, _)| format!("{name}='{value}'\n"))
        .collect();
    sb.write(".env", dotenv);
    sb.write(
        "db.py",
        r#"
import os
for name in ["PG_QS_URL", "JDBC_URL", "MONGO_URL", "SQLSERVER_CONN"]:
    print("using", name, os.environ[name], flush=True)
print("done", flush=True)
"#,
    );
    sb.config(&format!(
        r#"
[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "db"
command = ["{}", "db.py"]
keys = ["PG_QS_URL", "JDBC_URL", "MONGO_URL", "SQLSERVER_CONN"]
restart = "never"
"#,
        python()
    ));
    let canaries = [&pg, &jdbc, &mongo, &ado];
    for format in ["text", "json", "dotenv"] {
        let out = sb.run(&["env", "db", "--format", format]);
        out.assert_code(0);
        for c in canaries {
            out.assert_no_leak(c);
        }
        for (_, _, masked) in &vars {
            out.assert_contains(masked);
        }
    }
    let out = sb.run(&["env", "db", "--reveal"]);
    for (_, value, _) in &vars {
        out.assert_contains(value);
    }
    for format in ["pretty", "json"] {
        let out = sb.run(&["run", "--no-color", "--log-format", format]);
        out.assert_code(0);
        let text = seen(&out, format);
        assert!(text.contains("done"), "{text}");
        for c in canaries {
            out.assert_no_leak(c);
            c.assert_absent(&(format!("{format} output, as read"), &text));
        }
        for (name, _, masked) in &vars {
            let redacted = masked.replace("***", &format!("[redacted:{name}]"));
            assert!(
                text.contains(&format!("using {name} {redacted}")),
                "{format}: {text}"
            );
        }
    }
}

/// A key dumped by `od -An -tx1`, `hexdump -C` or `xxd` (at either alignment):
/// no line of what agentsup shows decodes to 12 bytes of the key.
#[test]
fn a_hex_dump_of_a_key_is_redacted_line_by_line() {
    let key = "sk-proj-DuMpEd0123456789abcdefGHIJKLMNOPqrstuvwx";
    let sb = Sandbox::new();
    sb.write("secrets/OPENAI_API_KEY", key);
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "d"
command = ["sh", "-c", "printf %s \"$OPENAI_API_KEY\" | od -An -tx1; printf %s \"$OPENAI_API_KEY\" | hexdump -C; printf %s \"$OPENAI_API_KEY\" | xxd; printf x%s \"$OPENAI_API_KEY\" | xxd; echo dumped"]
keys = ["OPENAI_API_KEY"]
restart = "never"
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("dumped", PATIENCE);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    let out = run.output();
    assert!(out.contains("[redacted:OPENAI_API_KEY]"), "{out}");
    for line in out.lines() {
        // Every 2- or 4-digit hex word of the line (od/hexdump bytes, xxd groups).
        let bytes: Vec<u8> = line
            .split_whitespace()
            .filter(|w| (w.len() == 2 || w.len() == 4) && w.chars().all(|c| c.is_ascii_hexdigit()))
            .flat_map(|w| {
                (0..w.len() / 2)
                    .map(|i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16).unwrap())
                    .collect::<Vec<u8>>()
            })
            .collect();
        for window in key.as_bytes().windows(12) {
            assert!(
                !bytes.windows(12).any(|w| w == window),
                "a dump line still shows the key: {line}\n{out}"
            );
        }
    }
}
