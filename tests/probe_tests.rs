//! `agentsup check --probe` (SPEC 4): the real binary against loopback fakes of
//! the providers (`examples/demo/fake_provider.py` for OpenAI,
//! `tests/fixtures/fake_anthropic.py` for Anthropic), a closed port, a server that
//! never answers and one that redirects. Every test asserts the exit code, the
//! finding, and that no key value (nor the provider's masked echo of it) appears
//! anywhere in the output.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::*;

/// A second fake OpenAI key, for "the provider accepts another one".
const OTHER_OPENAI_KEY: &str = "sk-proj-Wm3Kx9Lq2Rv7Tn5Bc8Yd4Hf6Jg1Ps0Ua2Ze9Xi7Oo3Qk";
/// A fake Anthropic key.
const ANTHROPIC_KEY: &str = "sk-ant-api03-Hq7wR2xK9mN4pL6tV8bZ3cF5gJ1dS0aQ7eY2uI4oP9";

/// What the fake logs for the sentinel request of [`Fake::settled_log`].
const SENTINEL: &str = "GET /models -> 401";

/// A fake provider process, killed on drop, whose output lines are collected.
struct Fake {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Fake {
    /// `examples/demo/fake_provider.py`, accepting only `key`. It takes its port
    /// from the environment, so a free one is found first; should another process
    /// grab it in between, the fake exits and another port is tried.
    fn openai(key: &str) -> Fake {
        let script = root().join("examples/demo/fake_provider.py");
        for _ in 0..5 {
            let port = free_port();
            if let Some(f) = Fake::start(&script, key, port, "provider: fake OpenAI API on") {
                return f;
            }
        }
        panic!("the fake OpenAI provider did not start");
    }

    /// `tests/fixtures/fake_anthropic.py`, accepting only `key`, on a port it picks.
    fn anthropic(key: &str) -> Fake {
        let script = root().join("tests/fixtures/fake_anthropic.py");
        let mut f = Fake::start(&script, key, 0, "anthropic: listening on")
            .expect("the fake Anthropic provider did not start");
        let line = f.lines_matching("anthropic: listening on").remove(0);
        f.port = line.rsplit(' ').next().unwrap().parse().unwrap();
        f
    }

    /// Starts `script` and waits until it says it listens (it prints that after
    /// binding, so it then accepts connections); `None` when it exits first.
    fn start(script: &Path, key: &str, port: u16, ready: &str) -> Option<Fake> {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("accepted_key");
        std::fs::write(&key_file, key).unwrap();
        let mut child = Command::new(python())
            .arg(script)
            .env("FAKE_PROVIDER_KEY_FILE", &key_file)
            .env("FAKE_PROVIDER_PORT", port.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is needed by the probe tests");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut fake = Fake {
            child,
            port,
            lines,
            _dir: dir,
        };
        let mut exited = false;
        let up = wait_until(PATIENCE, || {
            exited = !matches!(fake.child.try_wait(), Ok(None));
            exited || !fake.lines_matching(ready).is_empty()
        });
        assert!(
            up,
            "fake provider neither started nor exited:\n{}",
            fake.log()
        );
        (!exited).then_some(fake)
    }

    /// The OpenAI-style base URL (`/v1` included).
    fn openai_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The Anthropic-style base URL (no `/v1`: the SDK adds it).
    fn anthropic_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lines_matching(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Every line the fake printed for requests made before now. The fake prints
    /// one line per rejected request; a sentinel request (wrong key, on `/models`
    /// where agentsup asks `/v1/models`) is made now, and once its line arrives
    /// every earlier line has too.
    fn settled_log(&self) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(
            b"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
              Connection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            wait_until(PATIENCE, || !self.lines_matching(SENTINEL).is_empty()),
            "the fake never logged the sentinel:\n{}",
            self.log()
        );
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.contains(SENTINEL))
            .cloned()
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nothing listens on right now (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
fn probe_both(sb: &Sandbox, code: i32, secrets: &[&str]) -> (Output, serde_json::Value) {
    let text = sb.run(&["check", "--probe"]);
    text.assert_code(code);
    let json = sb.run(&["check", "--probe", "--format", "json"]);
    json.assert_code(code);
    for s in secrets {
        for out in [&text, &json] {
            out.assert_no_leak(s);
            out.assert_no_leak(&s[..8]);
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
    let fake = Fake::openai(FAKE_OPENAI_KEY);
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{}\"", fake.openai_base()),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[FAKE_OPENAI_KEY]);
    text.assert_contains(&format!(
        "probe: OPENAI_API_KEY (worker planner) accepted by OpenAI: GET {}/models answered 200",
        fake.openai_base()
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
    let fake = Fake::openai(OTHER_OPENAI_KEY);
    let sb = Sandbox::new();
    sb.write(
        ".env",
        format!("# the old key\nOPENAI_API_KEY={FAKE_OPENAI_KEY}\n"),
    );
    let vars = format!("OPENAI_BASE_URL = \"{}\"", fake.openai_base());
    sb.config(&config(&[
        ("planner", "\"OPENAI_API_KEY\"", &vars),
        ("critic", "\"OPENAI_API_KEY\"", &vars),
    ]));
    let (text, doc) = probe_both(&sb, 78, &[FAKE_OPENAI_KEY]);
    text.assert_contains("OpenAI rejected OPENAI_API_KEY")
        .assert_contains("(workers planner, critic)")
        .assert_contains(".env:2")
        .assert_contains(&fake.openai_base());
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
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"));
    let base = format!("http://127.0.0.1:{}/v1", free_port());
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{base}\""),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[FAKE_OPENAI_KEY]);
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
    // Bound and listening, so the connection is made, but never accepted or
    // answered: only the timeout ends the probe.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"http://127.0.0.1:{port}/v1\""),
    )]));
    let out = sb.run(&["check", "--probe", "--format", "json"]);
    out.assert_code(0).assert_no_leak(FAKE_OPENAI_KEY);
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
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"));
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"http://127.0.0.1:{port}/v1\""),
    )]));
    let (text, doc) = probe_both(&sb, 0, &[FAKE_OPENAI_KEY]);
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
    let openai = Fake::openai(OTHER_OPENAI_KEY);
    let anthropic = Fake::anthropic(ANTHROPIC_KEY);
    let sb = Sandbox::new();
    sb.write(
        ".env",
        format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\nANTHROPIC_API_KEY={ANTHROPIC_KEY}\n"),
    );
    sb.config(&config(&[(
        "planner",
        "\"OPENAI_API_KEY\", \"ANTHROPIC_API_KEY\"",
        &format!(
            "OPENAI_BASE_URL = \"{}\", ANTHROPIC_BASE_URL = \"{}\"",
            openai.openai_base(),
            anthropic.anthropic_base()
        ),
    )]));
    let (text, doc) = probe_both(&sb, 78, &[FAKE_OPENAI_KEY, ANTHROPIC_KEY]);
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
    let fake = Fake::openai(OTHER_OPENAI_KEY);
    let google_key = format!("AIza{}", "Sy3x9Kq2Lm7Rv5Tn8Bc4Yd6Hf1Jg0Ps2Ua");
    let sb = Sandbox::new();
    sb.write(
        ".env",
        format!("LLM_GATEWAY_KEY={FAKE_OPENAI_KEY}\nGEMINI_API_KEY={google_key}\n"),
    );
    let mut toml = String::from("[keys.LLM_GATEWAY_KEY]\nprovider = \"openai\"\n\n");
    toml.push_str(&config(&[(
        "planner",
        "\"LLM_GATEWAY_KEY\", \"GEMINI_API_KEY\"",
        &format!("OPENAI_BASE_URL = \"{}\"", fake.openai_base()),
    )]));
    sb.config(&toml);
    let (text, doc) = probe_both(&sb, 78, &[FAKE_OPENAI_KEY, &google_key]);
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
    let fake = Fake::openai(OTHER_OPENAI_KEY);
    let sb = Sandbox::new();
    sb.write(".env", format!("OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"));
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
        fake.openai_base()
    ));
    sb.run(&["run", "--no-color"])
        .assert_code(78)
        .assert_contains("OpenAI rejected OPENAI_API_KEY")
        .assert_contains("nothing was started")
        .assert_no_leak(FAKE_OPENAI_KEY)
        .assert_no_leak(&FAKE_OPENAI_KEY[..12]);
    assert!(!sb.path().join("started").exists(), "a worker was started");
}
