//! Fleet-level guarantees of issue 14, end to end with real processes: one restart
//! per rotation per replica, and `auth-blocked` on a quiet queue (a revoked key
//! that fails once per long run).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

const OLD_KEY: &str = "sk-proj-FLTold0OLDoldOLDoldOLDoldOLDoldOLDold4321";
const NEW_KEY: &str = "sk-proj-FLTnew0NEWnewNEWnewNEWnewNEWnewNEWnew8765";

/// No form of a key in `text` (raw, or as JSON escapes it: these keys have no
/// character JSON escapes, so the raw check covers both).
fn assert_no_key(text: &str, keys: &[&str]) {
    for k in keys {
        assert!(!text.contains(k), "a key leaked:\n{text}");
        assert!(!text.contains(&k[8..20]), "part of a key leaked:\n{text}");
    }
}

/// A worker like a queue consumer on a rejected key: it records each start (and
/// whether it got the old or the new key, never the key) in `starts.log`, exits 77
/// a second after the key file changes, and takes 2 s to stop on SIGTERM.
const SLOW_STOPPER: &str = r#"
import os, signal, sys, time
key = os.environ["OPENAI_API_KEY"]
path, log, new_tail = sys.argv[1], sys.argv[2], sys.argv[3]
which = "new" if key.endswith(new_tail) else "old"
with open(log, "a") as f:
    f.write("start %s %s\n" % (os.environ["AGENTSUP_REPLICA"], which))
def stop(*_):
    time.sleep(2)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up %s %s" % (os.environ["AGENTSUP_REPLICA"], which), flush=True)
changed = None
while True:
    time.sleep(0.05)
    try:
        current = open(path).read().strip()
    except OSError:
        continue
    if changed is None and current != key:
        changed = time.monotonic()
    if changed is not None and time.monotonic() - changed >= 1:
        print("provider rejected the key", flush=True)
        os._exit(77)
"#;

/// `(replica, "old"|"new")` per start, in order.
fn starts(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

fn count(starts: &[(String, String)], replica: &str, which: &str) -> usize {
    starts
        .iter()
        .filter(|(r, w)| r == replica && w == which)
        .count()
}

#[test]
fn a_rotation_restarts_each_replica_once_even_when_an_auth_failure_restarted_it_first() {
    let sb = Sandbox::new();
    sb.write("secrets/OPENAI_API_KEY", format!("{OLD_KEY}\n"));
    let script = sb.script("slow_stopper.py", SLOW_STOPPER);
    let key_file = sb.path().join("secrets/OPENAI_API_KEY");
    let log = sb.path().join("starts.log");
    sb.config(&format!(
        r#"
[supervisor]
shutdown_timeout = "20s"

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "agent"
replicas = 2
command = ["{}", "{}", "{}", "{}", "{}"]
keys = ["OPENAI_API_KEY"]
stop_timeout = "5s"
backoff = {{ initial = "100ms", jitter = 0.0 }}
"#,
        python(),
        script.display(),
        key_file.display(),
        log.display(),
        &NEW_KEY[NEW_KEY.len() - 5..],
    ));
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for_all(&["up 0 old", "up 1 old"], PATIENCE);
    sb.write("secrets/OPENAI_API_KEY", format!("{NEW_KEY}\n"));
    // Each replica comes back once on the new key.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = starts(&log);
            count(&s, "0", "new") >= 1 && count(&s, "1", "new") >= 1
        }),
        "not every replica started on the new key: {:?}\n{}",
        starts(&log),
        run.output()
    );
    // A second restart of either would follow within its 2 s stop; give it
    // three times that to show up.
    let again = wait_until(Duration::from_secs(6), || {
        let s = starts(&log);
        count(&s, "0", "new") > 1 || count(&s, "1", "new") > 1
    });
    let s = starts(&log);
    assert!(
        !again && s.len() == 4,
        "each replica must start exactly twice (start + one rotation): {s:?}\n{}",
        run.output()
    );
    assert_eq!(count(&s, "0", "old") + count(&s, "1", "old"), 2, "{s:?}");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    assert_no_key(&run.output(), &[OLD_KEY, NEW_KEY]);
}

#[test]
fn a_revoked_key_on_a_quiet_queue_reaches_auth_blocked_and_readyz_503() {
    let sb = Sandbox::new();
    sb.write("secrets/OPENAI_API_KEY", format!("{OLD_KEY}\n"));
    // Idles about 7 s (a quiet queue), then its one task meets the revoked key.
    let (mut run, port) = spawn_with_health_port(|port| {
        sb.config(&format!(
            r#"
[supervisor]
health = "127.0.0.1:{port}"

[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "consumer"
command = ["sh", "-c", "echo idle; sleep 7; echo 'task failed: key rejected'; exit 77"]
keys = ["OPENAI_API_KEY"]
backoff = {{ initial = "1s", multiplier = 2.0, jitter = 0.0, reset_after = "4s" }}
"#
        ));
        sb.spawn(&["run", "--no-color"])
    });
    let started = Instant::now();
    let line = run.wait_for("-> auth-blocked", Duration::from_secs(90));
    assert!(
        line.contains("sources unchanged after 3 auth failure(s)"),
        "{line}\n{}",
        run.output()
    );
    // The two failures before it backed off (1 s, then 2 s) as `backoff`.
    let out = run.output();
    let first = out
        .find("sources unchanged after 1 auth failure(s) in a row; retrying in 1s")
        .expect("first failure backs off 1s");
    let second = out
        .find("sources unchanged after 2 auth failure(s) in a row; retrying in 2s")
        .expect("second failure backs off 2s");
    assert!(first < second, "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(21),
        "three runs of 7 s each"
    );
    // Blocked for 4 s now: not ready, and saying why (the snapshot is published
    // right after the line is logged).
    let mut last = None;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        last = get(port, "/readyz");
        if matches!(&last, Some(r) if r.code == 503 && r.body.contains("consumer.0 is auth-blocked"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(Reply { body, .. }) = last
        .clone()
        .filter(|r| r.code == 503 && r.body.contains("is auth-blocked"))
    else {
        panic!(
            "/readyz never said auth-blocked: {last:?}\n{}",
            run.output()
        )
    };
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
    assert_no_key(&run.output(), &[OLD_KEY]);
    assert_no_key(&body, &[OLD_KEY]);
}
