//! The canary sweep (issue 12): one generated secret sent through every kind of
//! source, printed by a worker in every form the redactor claims, and looked for
//! in everything agentsup prints or serves: `check` (text and JSON), `run` (pretty
//! and JSON), `/metrics`, the control socket's status JSON, `env` without
//! `--reveal` in each format, `exec`'s masked output, a failing `command` source,
//! a config error, and every file left in the sandbox.

use std::time::Duration;

use crate::support::*;

/// The names the one canary is delivered under, one per kind of source.
const NAMES: [&str; 6] = [
    "DOTENV_TOKEN",
    "DIR_TOKEN",
    "FILE_TOKEN",
    "CMD_TOKEN",
    "JSON_TOKEN",
    "ENV_TOKEN",
];

/// Checks that every source delivered the same value (printing only whether they
/// agree), then prints it in each form the redactor claims, on stdout and stderr,
/// as real code does, and waits.
const PRINTER: &str = r#"
import base64, json, os, re, sys, time, urllib.parse
names = ["DOTENV_TOKEN", "DIR_TOKEN", "FILE_TOKEN", "CMD_TOKEN", "JSON_TOKEN", "ENV_TOKEN"]
values = [os.environ.get(n) for n in names]
print("sources agree:", len(set(values)) == 1 and values[0] is not None, flush=True)
v = values[0] or ""
b = v.encode()
forms = [
    ("raw", v),
    ("json", json.dumps(v)),
    ("json_obj", json.dumps({"token": v})),
    ("repr", repr(v)),
    ("repr_bytes", repr(b"Bearer " + b + b"\n")),
    ("quote", urllib.parse.quote(v)),
    ("quote_safe", urllib.parse.quote(v, safe="")),
    ("quote_plus", urllib.parse.quote_plus(v)),
    ("quote_lower", re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(v, safe=""))),
    ("b64", base64.b64encode(b).decode()),
    ("b64url", base64.urlsafe_b64encode(b).decode()),
    ("b64_in_json", base64.b64encode(json.dumps({"auth": v}).encode()).decode()),
    ("b64_after_1", base64.b64encode(b"x" + b).decode()),
    ("b64_after_2", base64.b64encode(b"xy" + b).decode()),
    ("hex", b.hex()),
    ("HEX", b.hex().upper()),
    ("prefix", v[:24]),
    ("suffix", v[-20:]),
]
for label, form in forms:
    print("out", label, form, flush=True)
    print("err", label, form, file=sys.stderr, flush=True)
print("printed every form", flush=True)
if len(sys.argv) < 2:
    time.sleep(600)
"#;

/// Lays out the six sources, each holding `canary` under its own name, and a
/// `printer` worker that declares them all ([`sweep_config`]).
fn sweep_sandbox(canary: &Canary) -> Sandbox {
    let sb = Sandbox::new();
    let v = canary.value();
    // dotenv, and a `*_FILE` variable in it naming a file that holds the value.
    sb.write("token.txt", format!("{v}\n"));
    sb.write(
        ".env",
        format!(
            "{}FILE_TOKEN_FILE={}\n",
            canary.dotenv("DOTENV_TOKEN"),
            sb.path().join("token.txt").display()
        ),
    );
    // dir
    sb.write("secrets/DIR_TOKEN", format!("{v}\n"));
    // command, dotenv text and JSON
    sb.write("cmd.env", canary.dotenv("CMD_TOKEN"));
    sb.write(
        "cmd.json",
        serde_json::json!({ "data": { "JSON_TOKEN": v } }).to_string(),
    );
    sb.write("printer.py", PRINTER);
    sb.config(&sweep_config(None));
    sb
}

/// The sweep's config, with health on `health` if given.
fn sweep_config(health: Option<u16>) -> String {
    let health = health
        .map(|p| format!("[supervisor]\nhealth = \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"{health}
[[source]]
type = "dotenv"
path = ".env"

[[source]]
type = "dir"
path = "secrets"

[[source]]
type = "command"
command = ["cat", "cmd.env"]

[[source]]
type = "command"
command = ["cat", "cmd.json"]
format = "json"
json_pointer = "/data"

[[source]]
type = "env"

[[worker]]
name = "printer"
command = ["{py}", "printer.py"]
keys = [{keys}]
"#,
        py = python(),
        keys = NAMES.map(|n| format!("\"{n}\"")).join(", "),
    )
}

/// agentsup's own environment: the `env` source's value.
fn with_env_token(sb: &Sandbox, canary: &Canary, args: &[&str]) -> std::process::Command {
    let mut c = sb.cmd(args);
    c.env("ENV_TOKEN", canary.value());
    c
}

#[test]
fn one_canary_through_every_source_and_every_output_appears_nowhere() {
    let canary = Canary::new("sk-proj-");

    // `check`, in both formats: every source loads, nothing is printed.
    let sb = sweep_sandbox(&canary);
    for args in [&["check"][..], &["check", "--format", "json"][..]] {
        let out = sb.run_cmd(with_env_token(&sb, &canary, args));
        out.assert_code(0).assert_no_leak(&canary);
    }

    // `env` without --reveal, in each format.
    for format in ["text", "json", "dotenv"] {
        let out = sb.run_cmd(with_env_token(
            &sb,
            &canary,
            &["env", "printer", "--format", format],
        ));
        out.assert_code(0)
            .assert_no_leak(&canary)
            .assert_contains("CMD_TOKEN");
    }

    // `exec` masks what it injected, on both streams, and passes the status on.
    let py = python();
    let out = sb.run_cmd(with_env_token(
        &sb,
        &canary,
        &[
            "exec",
            "--worker",
            "printer",
            "--",
            &py,
            "printer.py",
            "once",
        ],
    ));
    out.assert_code(0)
        .assert_contains("sources agree: True")
        .assert_contains("printed every form")
        .assert_no_leak(&canary);

    // `run` in both log formats, with /metrics and the status JSON read while the
    // worker has printed everything.
    for format in ["pretty", "json"] {
        let sb2 = sweep_sandbox(&canary);
        let (run, port) = spawn_with_health_port(|port| {
            sb2.config(&sweep_config(Some(port)));
            sb2.spawn_cmd(with_env_token(
                &sb2,
                &canary,
                &["run", "--no-color", "--log-format", format],
            ))
        });
        assert!(
            run.wait_output(PATIENCE, |out, _| out.contains("printed every form")),
            "{}",
            run.output()
        );
        assert!(
            run.output().contains("sources agree: True"),
            "{}",
            run.output()
        );
        let metrics = http_get(port, "/metrics");
        assert!(metrics.contains("agentsup_ready"), "{metrics}");
        canary.assert_absent(&("GET /metrics", &metrics));
        let status = sb2.run(&["status", "--format", "json"]);
        status.assert_code(0).assert_no_leak(&canary);
        let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        canary.assert_absent(&doc);
        let text = sb2.run(&["status"]);
        text.assert_code(0).assert_no_leak(&canary);
        let mut run = run;
        run.signal(15);
        assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
        canary.assert_absent(&run);
        let redacted = run.output().matches("[redacted:").count();
        assert!(redacted >= 36, "{format}: only {redacted} redactions");
        canary.assert_not_in_sandbox(&sb2, &[]);
    }

    // A failing `command` source that printed the value (dotenv and JSON), then
    // echoed it on stderr: named, exit 78, no value.
    // The JSON also cut short, as a helper failing halfway prints it.
    for (format, body) in [
        ("dotenv", "cat cmd.env"),
        ("json", "cat cmd.json"),
        ("json", "cat cmd-cut.json"),
    ] {
        let fail = Sandbox::new();
        fail.write("cmd.env", canary.dotenv("CMD_TOKEN"));
        fail.write(
            "cmd.json",
            serde_json::json!({ "data": { "CMD_TOKEN": canary.value() } }).to_string(),
        );
        fail.write(
            "cmd-cut.json",
            format!(
                "{{\"data\": {{\"CMD_TOKEN\": {}, \"X\": ",
                serde_json::Value::from(canary.value())
            ),
        );
        fail.write("token.txt", canary.value());
        let pointer = if format == "json" {
            "json_pointer = \"/data\"\n"
        } else {
            ""
        };
        fail.config(&format!(
            r#"
[[source]]
type = "command"
command = ["sh", "-c", "{body}; echo; echo \"renewal failed for $(cat token.txt)\" >&2; exit 2"]
format = "{format}"
{pointer}
[[worker]]
name = "w"
command = ["true"]
keys = ["CMD_TOKEN"]
"#
        ));
        for args in [
            &["check"][..],
            &["check", "--format", "json"][..],
            &["run"][..],
        ] {
            fail.run(args)
                .assert_code(78)
                .assert_contains("exited with status 2")
                .assert_no_leak(&canary);
        }
        canary.assert_not_in_sandbox(&fail, &[]);
    }

    // A config error whose bad value is the canary.
    let bad = Sandbox::new();
    bad.config(&format!(
        "[[worker]]\nname = \"w\"\ncommand = [\"true\"]\nreplicas = {}\n",
        canary.toml()
    ));
    for args in [&["check"][..], &["run"][..], &["env", "w"][..]] {
        bad.run(args)
            .assert_code(78)
            .assert_contains("replicas")
            .assert_no_leak(&canary);
    }
    canary.assert_not_in_sandbox(&sb, &[]);
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0, read to the end).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(reply)
}

/// A panic of `run` itself (forced in debug builds by
/// `AGENTSUP_DEBUG_PANIC_WITH`, its message holding the loaded value) prints the
/// value redacted, exits 101, and the guard leaves no worker alive.
#[test]
fn a_panic_of_run_prints_no_value_and_leaves_no_worker() {
    let canary = Canary::new("sk-panic-");
    let sb = Sandbox::new();
    sb.write("secrets/DIR_TOKEN", format!("{}\n", canary.value()));
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "w"
replicas = 2
command = ["sh", "-c", "exec sleep 600"]
keys = ["DIR_TOKEN"]
"#,
    );
    let mut c = sb.cmd(&["run", "--no-color"]);
    c.env("AGENTSUP_DEBUG_PANIC_WITH", "DIR_TOKEN");
    let mut run = sb.spawn_cmd(c);
    assert_eq!(run.wait_exit(PATIENCE), Some(101), "{}", run.output());
    let out = run.output();
    assert!(
        out.contains("forced panic (AGENTSUP_DEBUG_PANIC_WITH): DIR_TOKEN is [redacted:DIR_TOKEN]"),
        "{out}"
    );
    canary.assert_absent(&run);
    // Nothing keeps running in the sandbox: the guard killed every worker.
    let in_sandbox = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|d| d == sb.path())
            })
            .collect()
    };
    assert!(
        wait_until(PATIENCE, || in_sandbox().is_empty()),
        "still running after the panic: {:?}",
        in_sandbox()
    );
}

/// A key pasted into a config field that is not a secret (`user`, `group`,
/// `health`, `cwd`, an `inherit` entry, a source `path`): the error about that
/// field quotes it back, and no source loaded it to redact; its shape hides it.
#[test]
fn a_key_pasted_into_the_wrong_field_is_not_quoted_back() {
    let key = "sk-proj-PaStEdInToThEwRoNgFiElD0123456789abcd";
    let sb = Sandbox::new();
    let worker = |extra: &str| format!("[[worker]]\nname = \"w\"\ncommand = [\"true\"]\n{extra}\n");
    for config in [
        worker(&format!("user = \"{key}\"")),
        worker(&format!("group = \"{key}\"")),
        worker(&format!("cwd = \"{key}\"")),
        format!("[supervisor]\nhealth = \"{key}\"\n{}", worker("")),
        format!("[env]\ninherit = [\"a b {key}\"]\n{}", worker("")),
        format!(
            "[[source]]\ntype = \"dir\"\npath = \"{key}\"\n{}",
            worker("")
        ),
    ] {
        sb.config(&config);
        for args in [&["check"][..], &["run"][..]] {
            let out = sb.run(args);
            assert_ne!(out.code, Some(0), "{config}\n{}", out.all());
            assert!(!out.all().contains(&key[8..20]), "{config}\n{}", out.all());
            out.assert_contains("[credential-shaped text not shown]");
        }
    }
}
