//! `agentsup check --probe` (SPEC 4): the real binary against loopback fakes of
//! the providers (`examples/demo/fake_provider.py` for OpenAI,
//! `tests/fixtures/fake_anthropic.py` for Anthropic), a closed port, a server that
//! never answers and one that redirects. Every test asserts the exit code, the
//! finding, and that no key value (nor the provider's masked echo of it) appears
//! anywhere in the output.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use crate::support::*;

/// A fresh OpenAI-shaped canary (the probe sends it to the fake as a bearer token).
fn openai_key() -> Canary {
    Canary::new("sk-proj-")
}

/// A config with one worker per `(name, keys, vars)`, over the default sources
/// (`.env`, then the process environment).
fn config(workers: &[(&str, &str, &str)]) -> String {
    let mut s = String::new();
    for (name, keys, vars) in workers {
        s.push_str(&format!(
            "[[worker]]\nname = \"{name}\"\ncommand = [\"python3\", \"-c\", \"pass\"]\n\
             keys = [{keys}]\nvars = {{ {vars} }}\n\n"
        ));
    }
    s
}

/// Runs `check --probe` in text and JSON, asserts both exit with `code` and leak
/// none of `secrets` (nor the 8-character prefix OpenAI echoes in its 401), and
/// returns the text run and the parsed JSON report.
fn probe_both(sb: &Sandbox, code: i32, secrets: &[&Canary]) -> (Output, serde_json::Value) {
    let text = sb.run(&["check", "--probe"]);
    text.assert_code(code);
    let json = sb.run(&["check", "--probe", "--format", "json"]);
    json.assert_code(code);
    for s in secrets {
        for out in [&text, &json] {
            out.assert_no_leak(s);
            s.assert_prefix_absent(out, 8);
        }
    }
    assert!(!text.all().contains("panicked"), "{}", text.all());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "check --probe --format json is not JSON ({e}):\n{}",
            json.stdout
        )
    });
    (text, doc)
}

/// The JSON findings whose code starts with `probe-`.
fn probe_findings(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"].as_str().unwrap().starts_with("probe-"))
        .cloned()
        .collect()
}

#[test]
fn probe_accepted_key_exits_zero() {
    let key = openai_key();
    let ok = key.value();
    let fake = FakeProvider::openai_accepting(ok);
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{}\"", fake.base_url()),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[&key]);
    text.assert_contains(&format!(
        "probe: OPENAI_API_KEY (worker planner) accepted by OpenAI: GET {}/models answered 200",
        fake.base_url()
    ));
    assert!(probe_findings(&doc).is_empty(), "{doc:#}");
    // Only the sentinel was refused: the probe sent the accepted key.
    assert!(
        fake.settled_log().iter().all(|l| !l.contains("401")),
        "{}",
        fake.log()
    );
}

#[test]
fn probe_rejected_key_is_an_error_naming_key_workers_and_source_once() {
    let key = openai_key();
    let ok = key.value();
    let other = openai_key();
    let fake = FakeProvider::openai_accepting(other.value());
    let sb = Sandbox::new();
    sb.write(".env", format!("# the old key\nOPENAI_API_KEY='{ok}'\n"));
    let vars = format!("OPENAI_BASE_URL = \"{}\"", fake.base_url());
    sb.config(&config(&[
        ("planner", "\"OPENAI_API_KEY\"", &vars),
        ("critic", "\"OPENAI_API_KEY\"", &vars),
    ]));
    let (text, doc) = probe_both(&sb, 78, &[&key]);
    text.assert_contains("OpenAI rejected OPENAI_API_KEY")
        .assert_contains("(workers planner, critic)")
        .assert_contains(".env:2")
        .assert_contains(&fake.base_url());
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    let f = &found[0];
    assert_eq!(f["code"], "probe-rejected");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["key"], "OPENAI_API_KEY");
    assert_eq!(f["workers"], serde_json::json!(["planner", "critic"]));
    assert_eq!(f["location"], ".env:2");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("answered 401 (invalid_api_key)"),
        "{f:#}"
    );
    // Two workers, one (provider, base URL, key): one request per `check` run
    // (text and JSON), not one per worker.
    let rejected: Vec<String> = fake
        .settled_log()
        .into_iter()
        .filter(|l| l.contains("GET /v1/models -> 401"))
        .collect();
    assert_eq!(rejected.len(), 2, "{}", fake.log());
}

#[test]
fn probe_unreachable_base_url_is_a_warning() {
    let key = openai_key();
    let ok = key.value();
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    let base = format!("http://127.0.0.1:{}/v1", free_port());
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{base}\""),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[&key]);
    text.assert_contains("OPENAI_API_KEY could not be checked")
        .assert_contains("connection refused")
        .assert_contains("OPENAI_BASE_URL from worker vars");
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["code"], "probe-unreachable");
    assert_eq!(found[0]["severity"], "warning");
    assert_eq!(found[0]["workers"], serde_json::json!(["planner"]));
}

#[test]
fn probe_silent_server_times_out_as_unreachable() {
    let key = openai_key();
    let ok = key.value();
    // Bound and listening, so the connection is made, but never accepted or
    // answered: only the timeout ends the probe.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"http://127.0.0.1:{port}/v1\""),
    )]));
    let out = sb.run(&["check", "--probe", "--format", "json"]);
    out.assert_code(0).assert_no_leak(&key);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["code"], "probe-unreachable");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains("no answer within 5s"),
        "{doc:#}"
    );
    drop(silent);
}

#[test]
fn probe_never_follows_a_redirect() {
    let key = openai_key();
    let ok = key.value();
    // `elsewhere` must never see a connection: the key stays with the configured
    // base URL even when that server redirects.
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!(
        "http://127.0.0.1:{}/v1/models",
        elsewhere.local_addr().unwrap().port()
    );
    let redirector = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = redirector.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in redirector.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
        }
    });
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"http://127.0.0.1:{port}/v1\""),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[&key]);
    text.assert_contains("answered 307: a redirect, not followed");
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["code"], "probe-unexpected");
    assert_eq!(found[0]["severity"], "warning");
    assert!(
        elsewhere.accept().is_err(),
        "the probe followed the redirect to another server"
    );
}

#[test]
fn probe_anthropic_key_uses_x_api_key_next_to_a_rejected_openai_key() {
    let key = openai_key();
    let ok = key.value();
    let other = openai_key();
    let anthropic_key = Canary::new("sk-ant-api03-");
    let ak = anthropic_key.value();
    let openai = FakeProvider::openai_accepting(other.value());
    let anthropic = FakeProvider::anthropic(ak);
    let sb = Sandbox::new();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY='{ok}'\nANTHROPIC_API_KEY='{ak}'\n"),
    );
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\"",
        &format!(
            "OPENAI_BASE_URL = \"{}\", ANTHROPIC_BASE_URL = \"{}\"",
            openai.base_url(),
            anthropic.anthropic_base()
        ),
    )]));
    let (text, doc) = probe_both(&sb, 78, &[&key, &anthropic_key]);
    text.assert_contains(&format!(
        "probe: ANTHROPIC_API_KEY (worker planner) accepted by Anthropic: GET {}/v1/models \
         answered 200",
        anthropic.anthropic_base()
    ));
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["code"], "probe-rejected");
    assert_eq!(found[0]["key"], "OPENAI_API_KEY");
    // The Anthropic way: x-api-key and a version, never a bearer header.
    // The fake prints its line after answering, so the second check may exit
    // before that line is read: wait for it rather than read at once.
    wait_until(PATIENCE, || {
        anthropic.lines_matching("GET /v1/models -> 200").len() >= 2
    });
    let served = anthropic.lines_matching("GET /v1/models -> 200");
    assert_eq!(served.len(), 2, "{}", anthropic.log());
    assert!(
        served
            .iter()
            .all(|l| l.ends_with("[x-api-key anthropic-version=2023-06-01]")),
        "{}",
        anthropic.log()
    );
}

#[test]
fn probe_honours_a_provider_override_and_skips_google() {
    let key = openai_key();
    let ok = key.value();
    let other = openai_key();
    let fake = FakeProvider::openai_accepting(other.value());
    // A Google key's shape (AIza + 35) is what the skip recognises: a fixed value.
    let google_key = format!("AIza{}", "Sy3x9Kq2Lm7Rv5Tn8Bc4Yd6Hf1Jg0Ps2Ua");
    let google = Canary::of_fixed(&google_key);
    let sb = Sandbox::new();
    sb.write(
        ".env",
        format!("LLM_GATEWAY_KEY='{ok}'\nGEMINI_API_KEY={google_key}\n"),
    );
    let mut toml = String::from("[keys.LLM_GATEWAY_KEY]\nprovider = \"openai\"\n\n");
    toml.push_str(&config(&[(
        "planner",
        "\"LLM_GATEWAY_KEY\", \"GEMINI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{}\"", fake.base_url()),
    )]));
    sb.config(&toml);
    let (text, doc) = probe_both(&sb, 78, &[&key, &google]);
    text.assert_contains(
        "probe: GEMINI_API_KEY (worker planner) skipped: Google keys are not probed",
    );
    let found = probe_findings(&doc);
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["code"], "probe-rejected");
    assert_eq!(found[0]["key"], "LLM_GATEWAY_KEY");
}

#[test]
fn run_with_probe_true_refuses_a_rejected_key_and_starts_nothing() {
    let key = openai_key();
    let ok = key.value();
    let other = openai_key();
    let fake = FakeProvider::openai_accepting(other.value());
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY='{ok}'\n"));
    sb.config(&format!(
        r#"
[supervisor]
probe = true

[[worker]]
name = "planner"
command = ["sh", "-c", "touch started"]
keys = ["OPENAI_API_KEY"]
vars = {{ OPENAI_BASE_URL = "{}" }}
"#,
        fake.base_url()
    ));
    sb.run(&["run", "--no-color"])
        .assert_code(78)
        .assert_contains("OpenAI rejected OPENAI_API_KEY")
        .assert_contains("nothing was started")
        .assert_no_leak(&key);
    assert!(!sb.path().join("started").exists(), "a worker was started");
}
