//! `[supervisor] health` (SPEC 8): `/healthz`, `/readyz` and `/metrics` of a real
//! `agentsup run` with real workers, over real HTTP, plus the start-up failure when
//! the port is taken.
//!
//! HTTP is polled with short retries inside generous deadlines, because on a loaded
//! CI machine a worker's restart can take seconds; nothing here relies on a fixed
//! sleep for correctness.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use crate::support::*;

/// The sample value of the classic-format line `series` (name plus labels exactly
/// as the server writes them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Sets `sb` up so that its `planner` worker (openai_auth.py) is rejected until
/// the `dir` source holds `keys.new`, with fast auth retries, and health on `port`.
fn auth_config(sb: &Sandbox, keys: &RotationKeys, port: u16, extra_workers: &str) {
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.old.value()));
    sb.write("good_key", format!("{}\n", keys.new.value()));
    sb.config(&format!(
        r#"
[supervisor]
health = "127.0.0.1:{port}"

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "planner"
command = ["{}", "{}"]
keys = ["OPENAI_API_KEY"]
vars = {{ GOOD_KEY_FILE = "{}" }}
backoff = {{ initial = "100ms", max = "1s", jitter = 0.0 }}
auth = {{ max_delay = "500ms" }}
{extra_workers}
"#,
        python(),
        fixture("openai_auth.py"),
        sb.path().join("good_key").display()
    ));
}

fn stop(mut run: Running) -> String {
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    run.output()
}

#[test]
fn readyz_is_503_while_auth_blocked_and_200_after_rotation() {
    let sb = Sandbox::new();
    let keys = RotationKeys::new();
    let (run, port) = spawn_with_health_port(|port| {
        auth_config(&sb, &keys, port, "");
        sb.spawn(&["run", "--no-color"])
    });

    let blocked = poll(&run, port, "/readyz", |r| {
        r.code == 503 && r.body.contains("planner.0 is auth-blocked")
    });
    assert!(
        blocked.headers.contains("content-type: text/plain"),
        "{blocked:?}"
    );
    // The replica cycles auth-blocked -> starting -> running -> backoff (every
    // `auth.max_delay`), so the state gauge and the readiness gauge are asserted
    // together, from one scrape, never across two replies.
    let blocked_series =
        r#"agentsup_replica_state{worker="planner",replica="0",state="auth-blocked"}"#;
    let metrics = poll(&run, port, "/metrics", |r| {
        r.code == 200
            && sample(&r.body, blocked_series) == Some(1.0)
            && sample(&r.body, "agentsup_ready") == Some(0.0)
    });

    // Rotate. The supervisor re-reads the sources on its next auth retry (at most
    // `auth.max_delay` away); a source watcher may notice sooner.
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.new.value()));
    let ready = poll(&run, port, "/readyz", |r| r.code == 200);
    assert_eq!(ready.body, "ready\n");
    run.wait_for("authenticated with key of length", PATIENCE);
    let running_series = r#"agentsup_replica_state{worker="planner",replica="0",state="running"}"#;
    let running = poll(&run, port, "/metrics", |r| {
        r.code == 200
            && sample(&r.body, running_series) == Some(1.0)
            && sample(&r.body, "agentsup_ready") == Some(1.0)
    });

    let out = stop(run);
    keys.assert_absent(&("GET /readyz (auth-blocked)", &blocked.body));
    keys.assert_absent(&("GET /metrics (auth-blocked)", &metrics.body));
    keys.assert_absent(&("GET /metrics (running)", &running.body));
    keys.assert_absent(&out);
}

/// Parses stdin with the Python client's parser — `text` (classic 0.0.4) or
/// `openmetrics` — and prints the families as JSON. Any parse error is a traceback
/// and a non-zero exit.
const PARSE: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = [
    {"name": f.name, "type": f.type, "help": f.documentation,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
print(json.dumps(out))
"#;

fn parse_with_python(text: &str, parser: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new(test_venv_python())
        .args(["-c", PARSE, parser])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test venv's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client ({parser} parser) rejected /metrics:\n{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// The value of `family`'s sample `name` with exactly `labels`, from parsed JSON.
fn parsed_value(
    families: &[serde_json::Value],
    family: &str,
    name: &str,
    labels: serde_json::Value,
) -> Option<f64> {
    families
        .iter()
        .filter(|f| f["name"] == family)
        .flat_map(|f| f["samples"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_parse_with_prometheus_client_and_count_restarts_by_reason() {
    let sb = Sandbox::new();
    let keys = RotationKeys::new();
    let (run, port) = spawn_with_health_port(|port| {
        auth_config(
            &sb,
            &keys,
            port,
            r#"
[[worker]]
name = "crasher"
command = ["sh", "-c", "exit 3"]
max_restarts = 1000
backoff = { initial = "50ms", max = "200ms", jitter = 0.0 }
"#,
        );
        sb.spawn(&["run", "--no-color"])
    });
    let crash = r#"agentsup_restarts_total{worker="crasher",reason="crash"}"#;
    let auth = r#"agentsup_restarts_total{worker="planner",reason="auth"}"#;
    poll(&run, port, "/metrics", |r| {
        r.code == 200
            && sample(&r.body, crash).is_some_and(|n| n >= 2.0)
            && sample(&r.body, auth).is_some_and(|n| n >= 1.0)
    });

    // Both formats, each through the parser made for it.
    let classic = poll(&run, port, "/metrics", |r| r.code == 200);
    assert!(
        classic
            .headers
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        classic.headers
    );
    let open = request(
        port,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"),
    )
    .expect("GET /metrics (OpenMetrics)");
    assert!(
        open.headers
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{}",
        open.headers
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    stop(run);

    for (reply, parser) in [(&classic, "text"), (&open, "openmetrics")] {
        let families = parse_with_python(&reply.body, parser);
        for (name, kind) in [
            ("agentsup_worker_up", "gauge"),
            ("agentsup_worker_replicas", "gauge"),
            ("agentsup_replica_state", "gauge"),
            ("agentsup_restarts", "counter"),
            ("agentsup_auth_failures", "counter"),
            ("agentsup_secret_reloads", "counter"),
            ("agentsup_secret_reload_failures", "counter"),
            ("agentsup_ready", "gauge"),
            ("agentsup_uptime_seconds", "gauge"),
        ] {
            let f = families
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("{parser}: no family {name} in {families:?}"));
            assert_eq!(f["type"], kind, "{parser}: {f}");
            assert!(
                f["help"].as_str().is_some_and(|h| !h.is_empty()),
                "{parser}: {name} has no HELP"
            );
        }
        let restarts = |worker: &str, reason: &str| {
            parsed_value(
                &families,
                "agentsup_restarts",
                "agentsup_restarts_total",
                serde_json::json!({"worker": worker, "reason": reason}),
            )
        };
        assert!(
            restarts("crasher", "crash").is_some_and(|n| n >= 2.0),
            "{parser}: {families:?}"
        );
        assert!(
            restarts("planner", "auth").is_some_and(|n| n >= 1.0),
            "{parser}: {families:?}"
        );
        assert_eq!(restarts("planner", "crash"), Some(0.0), "{parser}");
        let auth_failures = parsed_value(
            &families,
            "agentsup_auth_failures",
            "agentsup_auth_failures_total",
            serde_json::json!({"worker": "planner"}),
        );
        assert!(
            auth_failures.is_some_and(|n| n >= 1.0),
            "{parser}: {families:?}"
        );
        let replicas = parsed_value(
            &families,
            "agentsup_worker_replicas",
            "agentsup_worker_replicas",
            serde_json::json!({"worker": "crasher"}),
        );
        assert_eq!(replicas, Some(1.0), "{parser}");
        let uptime = parsed_value(
            &families,
            "agentsup_uptime_seconds",
            "agentsup_uptime_seconds",
            serde_json::json!({}),
        );
        assert!(uptime.is_some_and(|u| u > 0.0), "{parser}: {uptime:?}");
        keys.assert_absent(&(format!("GET /metrics ({parser})"), &reply.body));
    }
}

#[test]
fn healthz_is_200_and_other_paths_and_methods_are_refused() {
    let sb = Sandbox::new();
    let (run, port) = spawn_with_health_port(|port| {
        sb.config(&format!(
            r#"
[supervisor]
health = "127.0.0.1:{port}"

[[worker]]
name = "idle"
command = ["sleep", "1000"]
"#
        ));
        sb.spawn(&["run", "--no-color"])
    });
    let ok = poll(&run, port, "/healthz", |r| r.code == 200);
    assert_eq!(ok.body, "ok\n");
    poll(&run, port, "/readyz", |r| r.code == 200);
    let missing = get(port, "/nope").expect("GET /nope");
    assert_eq!(missing.code, 404, "{missing:?}");
    let post = request(port, "POST", "/healthz", None).expect("POST /healthz");
    assert_eq!(post.code, 405, "{post:?}");
    assert!(post.headers.contains("allow: get, head"), "{post:?}");
    stop(run);
}

#[test]
fn health_port_in_use_exits_78_naming_the_address_and_starts_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let sb = Sandbox::new();
    sb.config(&format!(
        r#"
[supervisor]
health = "{addr}"

[[worker]]
name = "w"
command = ["sh", "-c", "touch started; sleep 1000"]
"#
    ));
    let out = sb.run(&["run", "--no-color"]);
    out.assert_code(78).assert_contains(&addr);
    assert!(!sb.path().join("started").exists(), "a worker was started");
    drop(taken);
}
