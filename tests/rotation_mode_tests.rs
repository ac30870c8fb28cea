//! `on_rotation = "file"` and `"signal"` (issue 14) with the real binary: key files
//! replaced in place with no restart, the real `openai` SDK reading its key through
//! `agentsup.key()`, signals instead of restarts, and files that never outlive
//! agentsup.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::control_tests::Ctl;
use crate::support::*;

/// A worker calling the provider every 100 ms with the real `openai` SDK, its key a
/// callable over `agentsup.key()`. A call that meets the revoked key (the key file
/// is replaced a moment after the provider revoked the old one) waits for the file
/// to change and is retried with the new key: a call is lost only if that takes
/// 20 s. Prints one line per call and its pid at start.
const FILE_WORKER: &str = r#"
import os, sys, time
import openai
import agentsup

client = openai.OpenAI(
    api_key=lambda: agentsup.key("OPENAI_API_KEY"),
    base_url=os.environ["OPENAI_BASE_URL"],
    max_retries=0,
    timeout=10,
)
print("worker started pid=%d keys_dir=%s file_var=%s" % (
    os.getpid(),
    bool(os.environ.get("AGENTSUP_KEYS_DIR")),
    os.environ.get("OPENAI_API_KEY_FILE", "").startswith(os.environ.get("AGENTSUP_KEYS_DIR", "-")),
), flush=True)
n = 0
lost = 0
retried = 0
while True:
    n += 1
    deadline = time.monotonic() + 20
    while True:
        used = agentsup.key("OPENAI_API_KEY")
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
            break
        except openai.AuthenticationError:
            retried += 1
            while agentsup.key("OPENAI_API_KEY") == used and time.monotonic() < deadline:
                time.sleep(0.01)
            if time.monotonic() >= deadline:
                lost += 1
                break
    print("call %d done lost=%d retried=%d" % (n, lost, retried), flush=True)
    time.sleep(0.1)
"#;

fn file_mode_config(sb: &Sandbox, key: &Canary, port: u16, python: &Path) -> String {
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", key.value()));
    sb.write("worker.py", FILE_WORKER);
    format!(
        r#"
[env]
inherit = ["PATH", "HOME", "LANG"]
vars = {{ OPENAI_BASE_URL = "http://127.0.0.1:{port}/v1", PYTHONPATH = "{pythonpath}" }}

[[source]]
type = "dir"
path = "secrets"

[keys.OPENAI_API_KEY]
provider = "openai"

[[worker]]
name = "caller"
command = ["{python}", "worker.py"]
keys = ["OPENAI_API_KEY"]
on_rotation = "file"
"#,
        python = python.display(),
        pythonpath = repo().join("python").display(),
    )
}

/// The number in `call N done` of the last such line of `out`, with its `lost=`.
fn last_call(out: &str) -> Option<(u64, String)> {
    out.lines().rev().find_map(|l| {
        let rest = &l[l.find("call ")? + 5..];
        let (n, tail) = rest.split_once(" done ")?;
        Some((n.parse().ok()?, tail.to_string()))
    })
}

#[test]
fn file_mode_rotation_loses_no_call_and_restarts_nothing() {
    let python = test_venv_python();
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    let keys = RotationKeys::new();
    let accepted = sb.write("provider/accepted_key", keys.old.value());
    let provider = FakeProvider::openai(&accepted);
    sb.config(&file_mode_config(sb, &keys.old, provider.port, &python));
    let mut run = ctl.start();
    let started = run.wait_for("worker started pid=", PATIENCE);
    assert!(started.contains("keys_dir=True file_var=True"), "{started}");
    let pid = ctl.running_pids(1)[0].1;
    // The key file: private to the worker, on the run's directory.
    let keys_root = ctl.runtime.clone();
    let key_file = find_key_file(&keys_root, "caller", "OPENAI_API_KEY");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        keys.old.value()
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().uid(),
        nix::unistd::geteuid().as_raw()
    );
    let ok_before = wait_until(PATIENCE, || {
        last_call(&run.output()).is_some_and(|(n, _)| n >= 5)
    });
    assert!(ok_before, "no calls before the rotation:\n{}", run.output());
    let (calls_before, _) = last_call(&run.output()).unwrap();

    // Rotate: the provider revokes the old key and the secret store holds the new
    // one, at the same moment.
    write_atomically(&accepted, keys.new.value());
    write_atomically(
        &sb.path().join("secrets/OPENAI_API_KEY"),
        &format!("{}\n", keys.new.value()),
    );
    run.wait_for("key files replaced in place", PATIENCE);
    // Ten more calls after the files changed, every one answered.
    let after = wait_until(PATIENCE, || {
        last_call(&run.output()).is_some_and(|(n, _)| n >= calls_before + 15)
    });
    assert!(after, "calls stopped after the rotation:\n{}", run.output());
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        keys.new.value()
    );

    let status = ctl.status();
    let rep = &status["replicas"][0];
    assert_eq!(rep["pid"].as_i64(), Some(i64::from(pid)), "{status}");
    assert_eq!(rep["restarts"].as_u64(), Some(0), "{status}");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    let out = run.output();
    let (_, tail) = last_call(&out).unwrap();
    assert!(
        tail.starts_with("lost=0 "),
        "a call was lost: {tail}\n{out}"
    );
    eprintln!("file mode across a rotation: {tail}");
    assert_eq!(out.matches("worker started pid=").count(), 1, "{out}");
    keys.assert_absent(&run);
    keys.assert_absent(&("the fake provider's log", provider.log()));
    // The files do not outlive agentsup.
    assert!(!key_file.exists());
    assert!(
        no_keys_dirs(&keys_root),
        "a key directory is left in {}",
        keys_root.display()
    );
}

/// The only `<root>/agentsup-keys-*/<worker>/<key>` there is.
fn find_key_file(root: &Path, worker: &str, key: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agentsup-keys-"))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let mode = std::fs::metadata(&dirs[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the run's key directory is private");
    dirs[0].join(worker).join(key)
}

fn no_keys_dirs(root: &Path) -> bool {
    std::fs::read_dir(root).map_or(true, |d| {
        !d.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("agentsup-keys-")
        })
    })
}

/// A shell worker that reports every SIGUSR1 with what its key file holds then.
const SIGNAL_WORKER: &str = r#"
trap 'echo "reloaded: file now has $(wc -c < "$MY_TOKEN_FILE") bytes, env has ${#MY_TOKEN}"' USR1
echo "signal worker up pid=$$"
while :; do sleep 0.1; done
"#;

#[test]
fn signal_mode_sends_the_reload_signal_and_keeps_the_process() {
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    // Two lengths, so the worker's report tells the file's value from the env's.
    let (first, second) = (Canary::new("first-"), Canary::new("second-token-"));
    sb.write("secrets/MY_TOKEN", first.value());
    sb.script("worker.sh", SIGNAL_WORKER);
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "sig"
command = ["sh", "worker.sh"]
keys = ["MY_TOKEN"]
on_rotation = "signal"
reload_signal = "SIGUSR1"
"#,
    );
    let mut run = ctl.start();
    run.wait_for("signal worker up", PATIENCE);
    let pid = ctl.running_pids(1)[0].1;
    write_atomically(&sb.path().join("secrets/MY_TOKEN"), second.value());
    let line = run.wait_for("SIGUSR1 sent to 1 running replica", PATIENCE);
    assert!(line.contains("MY_TOKEN"), "{line}");
    let line = run.wait_for("reloaded: file now has", PATIENCE);
    // The file holds the new value; the environment keeps the old.
    let sizes = format!(
        "{} bytes, env has {}",
        second.value().len(),
        first.value().len()
    );
    assert!(line.contains(&sizes), "{line}");
    let status = ctl.status();
    assert_eq!(status["replicas"][0]["pid"].as_i64(), Some(i64::from(pid)));
    assert_eq!(status["replicas"][0]["restarts"].as_u64(), Some(0));
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    first.assert_absent(&run);
    second.assert_absent(&run);
}

#[test]
fn an_auth_failure_restarts_a_file_mode_worker_with_fresh_files() {
    // Exits 77 unless its key file holds the accepted key: every mode restarts
    // on an auth failure, and the restarted process finds the new file.
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    sb.write("secrets/MY_TOKEN", "rejected-token-0001");
    sb.script(
        "worker.sh",
        "if [ \"$(cat \"$MY_TOKEN_FILE\")\" = accepted-token-0002 ]; then echo accepted; exec sleep 60; fi\necho rejected; exit 77\n",
    );
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "authy"
command = ["sh", "worker.sh"]
keys = ["MY_TOKEN"]
on_rotation = "file"
backoff = { initial = "100ms", max = "1s" }
auth = { max_delay = "1s" }
"#,
    );
    let mut run = ctl.start();
    run.wait_for("class auth", PATIENCE);
    write_atomically(&sb.path().join("secrets/MY_TOKEN"), "accepted-token-0002");
    run.wait_for("accepted", PATIENCE);
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn check_rejects_reload_signal_without_signal_mode_and_suggests_modes() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\nreload_signal = \"SIGHUP\"\n");
    let out = sb.run(&["check"]);
    out.assert_code(78);
    out.assert_contains("`reload_signal` is only sent with on_rotation = \"signal\"");
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\non_rotation = \"fille\"\n");
    let out = sb.run(&["check"]);
    out.assert_code(78);
    out.assert_contains("did you mean");
    out.assert_contains("file");
}

#[test]
fn a_worker_with_user_reads_its_own_key_files_and_no_one_elses() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching a worker's user needs agentsup to run as root");
        return;
    }
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.write("secrets/MINE_TOKEN", "mine-token-value-01");
    sb.write("secrets/OTHER_TOKEN", "other-token-value-02");
    sb.script(
        "prober.sh",
        r#"
echo "own: $(cat "$MINE_TOKEN_FILE" | wc -c) bytes"
cat "$AGENTSUP_KEYS_DIR/../other/OTHER_TOKEN" >/dev/null 2>&1 && echo "sibling: READ" || echo "sibling: denied"
ls "$AGENTSUP_KEYS_DIR/.." >/dev/null 2>&1 && echo "listing: READ" || echo "listing: denied"
echo "uid: $(id -u)"
exec sleep 300
"#,
    );
    sb.config(
        r#"
[[source]]
type = "dir"
path = "secrets"

[[worker]]
name = "mine"
command = ["sh", "prober.sh"]
keys = ["MINE_TOKEN"]
on_rotation = "file"
user = "nobody"

[[worker]]
name = "other"
command = ["sleep", "300"]
keys = ["OTHER_TOKEN"]
on_rotation = "file"
"#,
    );
    let mut run = sb.spawn(&["run", "--no-color"]);
    run.wait_for("uid: 65534", PATIENCE);
    let out = run.output();
    assert!(out.contains("own: 19 bytes"), "{out}");
    assert!(out.contains("sibling: denied"), "{out}");
    assert!(out.contains("listing: denied"), "{out}");
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
}

#[test]
fn env_says_what_run_adds_for_key_files() {
    let sb = Sandbox::new();
    sb.config("[[worker]]\nname = \"a\"\ncommand = [\"true\"]\nkeys = [\"MY_TOKEN\"]\non_rotation = \"signal\"\n");
    let token = Canary::new("tok-");
    let out = sb.run_env(&["env", "a"], &[("MY_TOKEN", token.value())]);
    out.assert_code(0);
    out.assert_contains("note: on_rotation = \"signal\": under `agentsup run` it also gets AGENTSUP_KEYS_DIR and NAME_FILE");
    out.assert_no_leak(&token);
}

/// The Node twin of [`FILE_WORKER`]: the real `openai` package with
/// `apiKey: async () => key(...)` from node/agentsup.
const NODE_FILE_WORKER: &str = r#"
const { default: OpenAI, AuthenticationError } = await import(process.env.OPENAI_ENTRY);
const { key } = await import(process.env.HELPER_ENTRY);
const client = new OpenAI({ apiKey: async () => key('OPENAI_API_KEY'), baseURL: process.env.OPENAI_BASE_URL, maxRetries: 0 });
console.log(`worker started pid=${process.pid}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let n = 0, lost = 0, retried = 0;
for (;;) {
  n += 1;
  const deadline = Date.now() + 20000;
  for (;;) {
    const used = key('OPENAI_API_KEY');
    try {
      await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'ping' }] });
      break;
    } catch (err) {
      if (!(err instanceof AuthenticationError)) throw err;
      retried += 1;
      while (key('OPENAI_API_KEY') === used && Date.now() < deadline) await sleep(10);
      if (Date.now() >= deadline) { lost += 1; break; }
    }
  }
  console.log(`call ${n} done lost=${lost} retried=${retried}`);
  await sleep(100);
}
"#;

#[test]
fn node_file_mode_rotation_loses_no_call_either() {
    let _ = test_venv_python(); // installs examples/node-openai/node_modules
    let ctl = Ctl::new("");
    let sb = &ctl.sb;
    let keys = RotationKeys::new();
    let accepted = sb.write("provider/accepted_key", keys.old.value());
    let provider = FakeProvider::openai(&accepted);
    sb.write("secrets/OPENAI_API_KEY", format!("{}\n", keys.old.value()));
    sb.write("worker.mjs", NODE_FILE_WORKER);
    let entry = |p: &str| format!("file://{}", repo().join(p).display());
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH", "HOME", "LANG"]
vars = {{ OPENAI_BASE_URL = "http://127.0.0.1:{port}/v1", OPENAI_ENTRY = "{openai}", HELPER_ENTRY = "{helper}" }}

[[source]]
type = "dir"
path = "secrets"

[keys.OPENAI_API_KEY]
provider = "openai"

[[worker]]
name = "caller"
command = ["node", "worker.mjs"]
keys = ["OPENAI_API_KEY"]
on_rotation = "file"
"#,
        port = provider.port,
        openai = entry("examples/node-openai/node_modules/openai/index.mjs"),
        helper = entry("node/agentsup/index.mjs"),
    ));
    let mut run = ctl.start();
    run.wait_for("worker started pid=", PATIENCE);
    let pid = ctl.running_pids(1)[0].1;
    assert!(wait_until(PATIENCE, || last_call(&run.output())
        .is_some_and(|(n, _)| n >= 5)));
    let (before, _) = last_call(&run.output()).unwrap();
    write_atomically(&accepted, keys.new.value());
    write_atomically(
        &sb.path().join("secrets/OPENAI_API_KEY"),
        &format!("{}\n", keys.new.value()),
    );
    run.wait_for("key files replaced in place", PATIENCE);
    let after = wait_until(PATIENCE, || {
        last_call(&run.output()).is_some_and(|(n, _)| n >= before + 15)
    });
    assert!(after, "calls stopped after the rotation:\n{}", run.output());
    let status = ctl.status();
    assert_eq!(
        status["replicas"][0]["pid"].as_i64(),
        Some(i64::from(pid)),
        "{status}"
    );
    assert_eq!(
        status["replicas"][0]["restarts"].as_u64(),
        Some(0),
        "{status}"
    );
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0));
    let out = run.output();
    let (_, tail) = last_call(&out).unwrap();
    assert!(
        tail.starts_with("lost=0 "),
        "a call was lost: {tail}\n{out}"
    );
    keys.assert_absent(&run);
    keys.assert_absent(&("the fake provider's log", provider.log()));
}
