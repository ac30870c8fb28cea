//! Process-level containment (issue 12): what a hostile worker can reach from
//! inside, tried with ordinary tools against the real binary.
//!
//! - agentsup and its guard are non-dumpable: a worker of the same uid reads
//!   nothing of their `/proc/PID/environ` or `mem`, and agentsup's core limit is 0;
//! - a worker holds descriptors 0, 1 and 2 only, whatever agentsup inherited;
//! - `user = "nobody"` puts a worker behind a uid wall from its siblings;
//! - `check` reports an unknown user, a switch agentsup cannot make, and `user`
//!   with fork mode.

use crate::support::{Canary, PATIENCE, Sandbox, python};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

const NOBODY: u32 = 65534;

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A Python interpreter that runs as `nobody` too (the test one may live under
/// root's 0700 home); None when there is none.
fn python_for_nobody() -> Option<String> {
    let mut candidates = vec![python()];
    candidates.extend(["/usr/bin/python3", "/usr/local/bin/python3"].map(String::from));
    candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "pass"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Lets another uid into the sandbox (a tempdir is 0700).
pub(crate) fn open_up(sb: &Sandbox) {
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What a hostile worker tries against its supervisor: prints one line per probe.
const PROBE: &str = r#"
import os, sys, time
parent = os.getppid()

def probe(label, path, seek=None):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        print("PROBE %s denied errno=%d" % (label, e.errno), flush=True)
        return
    try:
        if seek is not None:
            os.lseek(fd, seek, 0)
        data = os.read(fd, 1 << 20)
        print("PROBE %s read %d bytes" % (label, len(data)), flush=True)
    except OSError as e:
        print("PROBE %s denied errno=%d" % (label, e.errno), flush=True)
    finally:
        os.close(fd)

def stack_start(pid):
    # Field 28 of stat is the start of the stack: a mapped address worth reading.
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[25])

guards = []
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % name) as f:
            stat = f.read()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    if comm == "agentsup-guard" and ppid == parent:
        guards.append(int(name))
print("GUARDS %d" % len(guards), flush=True)
for label, pid in [("agentsup", parent)] + [("guard", g) for g in guards]:
    probe(label + "-environ", "/proc/%d/environ" % pid)
    probe(label + "-mem", "/proc/%d/mem" % pid, seek=stack_start(pid))
probe("self-environ", "/proc/self/environ")
with open("/proc/%d/limits" % parent) as f:
    for line in f:
        if line.startswith("Max core file size"):
            print("LIMIT " + " ".join(line.split()), flush=True)
print("DECLARED %d" % len(os.environ.get("DECLARED_TOKEN", "")), flush=True)
print("UID %d" % os.getuid(), flush=True)
print("PROBE-DONE", flush=True)
time.sleep(600)
"#;

#[test]
fn a_same_uid_worker_cannot_read_agentsup_or_its_guard() {
    let sb = Sandbox::new();
    sb.write("probe.py", PROBE);
    let py = if is_root() {
        match python_for_nobody() {
            Some(p) => p,
            None => {
                eprintln!("skipped: no Python interpreter that uid {NOBODY} may run");
                return;
            }
        }
    } else {
        python()
    };
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH", "HOME"]

[[source]]
type = "env"

[[worker]]
name = "hostile"
command = ["{py}", "probe.py"]
keys = ["DECLARED_TOKEN"]
restart = "never"
"#
    ));
    let planted = Canary::new("planted-");
    let declared = Canary::new("declared-");
    let mut cmd = sb.cmd(&["run"]);
    cmd.env("PLANTED_TOKEN", planted.value())
        .env("DECLARED_TOKEN", declared.value());
    let uid = if is_root() {
        // Root could read any process (CAP_SYS_PTRACE): run agentsup, and so its
        // worker, as one unprivileged uid, the case the seal is for.
        open_up(&sb);
        cmd.uid(NOBODY).gid(NOBODY);
        NOBODY
    } else {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() }
    };
    let mut running = sb.spawn_cmd(cmd);
    running.wait_for("PROBE-DONE", PATIENCE);
    let out = running.output();
    assert!(
        out.contains(&format!("UID {uid}")),
        "worker not of agentsup's uid:\n{out}"
    );
    assert!(out.contains("GUARDS 1"), "the guard was not found:\n{out}");
    for probe in [
        "agentsup-environ",
        "agentsup-mem",
        "guard-environ",
        "guard-mem",
    ] {
        assert!(
            out.contains(&format!("PROBE {probe} denied errno=13")),
            "{probe} was not refused with EACCES:\n{out}"
        );
    }
    // The worker itself was exec'd: it is dumpable again and reads its own environ.
    assert!(
        out.lines()
            .any(|l| l.contains("PROBE self-environ read") && !l.contains("read 0 bytes")),
        "a worker must still read its own /proc/self/environ:\n{out}"
    );
    assert!(
        out.contains("LIMIT Max core file size 0 "),
        "core limit not 0:\n{out}"
    );
    // A key from agentsup's own environment (the `env` source) still reaches the
    // worker that declares it.
    assert!(
        out.contains(&format!("DECLARED {}", declared.value().len())),
        "{out}"
    );
    running.signal(libc::SIGTERM);
    running
        .wait_exit(PATIENCE)
        .expect("agentsup exits on SIGTERM");
    planted.assert_absent(&running);
    declared.assert_absent(&running);
}

/// Lists the worker's open descriptors (the listing's own is closed by then).
const FDS: &str = r#"
import os, time
def alive(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = sorted(int(x) for x in os.listdir("/proc/self/fd"))
print("FDS %s %s" % (os.environ.get("AGENTSUP_WORKER"), [f for f in fds if alive(f)]), flush=True)
time.sleep(600)
"#;

#[test]
fn workers_hold_only_stdio_whatever_agentsup_inherited() {
    let sb = Sandbox::new();
    let secret = sb.write(
        "secrets/OPENAI_API_KEY",
        "sk-inherited-descriptor-1234567890",
    );
    sb.write("fds.py", FDS);
    let py = python();
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH"]

[[worker]]
name = "spawned"
command = ["{py}", "fds.py"]
restart = "never"

[[worker]]
name = "shell"
command = ["sh", "-c", "exec {py} fds.py"]
restart = "never"

[[worker]]
name = "forked"
start = "fork"
python = "{py}"
script = "fds.py"
restart = "never"
"#
    ));
    let file = std::fs::File::open(&secret).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let (file_fd, null_fd) = (file.as_raw_fd(), null.as_raw_fd());
    let mut cmd = sb.cmd(&["run"]);
    // SAFETY: only dup2 (async-signal-safe) in the child before exec; dup2 clears
    // close-on-exec on the new numbers, so agentsup inherits 7, 9 and 250 as a
    // shell's `7<secrets/KEY` would hand them over.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(file_fd, 7), (null_fd, 9), (file_fd, 250)] {
                if libc::dup2(from, to) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut running = sb.spawn_cmd(cmd);
    running.wait_for_all(&["FDS spawned ", "FDS shell ", "FDS forked "], PATIENCE);
    let out = running.output();
    for w in ["spawned", "shell", "forked"] {
        assert!(
            out.contains(&format!("FDS {w} [0, 1, 2]")),
            "{w} holds more than stdio:\n{out}"
        );
    }
    // agentsup itself did hold them (the test would prove nothing otherwise).
    let fd7 = std::fs::read_link(format!("/proc/{}/fd/7", running.pid())).unwrap();
    assert_eq!(fd7, secret);
    running.signal(libc::SIGTERM);
    running
        .wait_exit(PATIENCE)
        .expect("agentsup exits on SIGTERM");
}

/// Finds the sibling by a marker in its (world-readable) command line and tries
/// its environment and memory.
const PROBER: &str = r#"
import os, time
victim = None
deadline = time.time() + 60
while victim is None and time.time() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                if f.read().split(b"\0")[-2:-1] == [b"victim-marker"]:
                    victim = int(name)
        except OSError:
            pass
    time.sleep(0.05)
print("VICTIM %s" % victim, flush=True)
for what in ("environ", "mem"):
    try:
        with open("/proc/%d/%s" % (victim, what), "rb") as f:
            print("SIBLING %s read %d bytes" % (what, len(f.read(4096))), flush=True)
    except OSError as e:
        print("SIBLING %s denied errno=%d" % (what, e.errno), flush=True)
print("IDS uid=%d gid=%d groups=%s" % (os.getuid(), os.getgid(), os.getgroups()), flush=True)
print("ACCOUNT USER=%s LOGNAME=%s HOME=%s" % (os.environ.get("USER"), os.environ.get("LOGNAME"), os.environ.get("HOME")), flush=True)
print("PROBER-DONE", flush=True)
time.sleep(600)
"#;

#[test]
fn a_worker_with_user_cannot_read_a_siblings_environment() {
    if !is_root() {
        eprintln!("skipped: switching a worker's user needs agentsup to run as root");
        return;
    }
    let sb = Sandbox::new();
    open_up(&sb);
    sb.write("prober.py", PROBER);
    sb.write(".env", "VICTIM_KEY=sk-victim-0f1e2d3c4b5a69788796a5b4\n");
    let Some(py) = python_for_nobody() else {
        eprintln!("skipped: no Python interpreter that uid {NOBODY} may run");
        return;
    };
    sb.config(&format!(
        r#"
[env]
inherit = ["PATH", "HOME", "USER", "LOGNAME"]

[[source]]
type = "dotenv"
path = ".env"

[[worker]]
name = "victim"
command = ["{py}", "-c", "import time; time.sleep(600)", "victim-marker"]
keys = ["VICTIM_KEY"]

[[worker]]
name = "prober"
command = ["{py}", "prober.py"]
user = "nobody"
restart = "never"
"#
    ));
    let mut cmd = sb.cmd(&["run"]);
    cmd.env("USER", "root").env("LOGNAME", "root");
    let mut running = sb.spawn_cmd(cmd);
    running.wait_for("PROBER-DONE", PATIENCE);
    let out = running.output();
    assert!(
        !out.contains("VICTIM None"),
        "the sibling was not found:\n{out}"
    );
    assert!(out.contains("SIBLING environ denied errno=13"), "{out}");
    assert!(out.contains("SIBLING mem denied errno=13"), "{out}");
    assert!(
        out.contains(&format!("IDS uid={NOBODY} gid={NOBODY} groups=[")),
        "{out}"
    );
    assert!(!out.contains("groups=[0"), "root's groups kept:\n{out}");
    assert!(
        out.contains("ACCOUNT USER=nobody LOGNAME=nobody HOME="),
        "{out}"
    );
    assert!(
        !out.contains(&format!("HOME={}", sb.path().display())),
        "agentsup's HOME was passed on:\n{out}"
    );
    running.signal(libc::SIGTERM);
    running
        .wait_exit(PATIENCE)
        .expect("agentsup exits on SIGTERM");
    assert!(
        !running
            .output()
            .contains("sk-victim-0f1e2d3c4b5a69788796a5b4")
    );
}

#[test]
fn check_reports_unknown_users_and_groups_and_fork_mode_with_a_user() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "ghost"
command = ["true"]
user = "no-such-user-agentsup"

[[worker]]
name = "nogroup"
command = ["true"]
group = "no-such-group-agentsup"

[[worker]]
name = "forked"
start = "fork"
script = "x.py"
user = "nobody"
"#,
    );
    let out = sb.run(&["check"]);
    out.assert_code(78)
        .assert_contains("supervisor.toml:5:8: worker \"ghost\": user \"no-such-user-agentsup\" does not exist")
        .assert_contains("supervisor.toml:10:9: worker \"nogroup\": group \"no-such-group-agentsup\" does not exist")
        .assert_contains("supervisor.toml:16:8: worker \"forked\": `user` and `group` are not supported with start = \"fork\"");
}

#[test]
fn check_reports_a_switch_a_non_root_agentsup_cannot_make() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[[worker]]
name = "w"
command = ["true"]
user = "root"
"#,
    );
    let mut cmd = sb.cmd(&["check"]);
    // Unprivileged already, or made so: asking for root is a switch it cannot make.
    if is_root() {
        open_up(&sb);
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = sb.run_cmd(cmd);
    out.assert_code(78)
        .assert_contains("supervisor.toml:5:8: worker \"w\": agentsup runs as uid")
        .assert_contains("not root");
}

fn on_path(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn check_elf(binary: &std::path::Path) -> std::process::Output {
    std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-elf.sh"))
        .arg(binary)
        .output()
        .unwrap()
}

#[test]
fn the_binary_is_a_pie_with_full_relro_and_check_elf_tells_a_non_pie() {
    if !on_path("readelf") {
        eprintln!("skipped: readelf (binutils) is not installed");
        return;
    }
    let out = check_elf(&crate::support::bin());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The script must be able to fail: a non-PIE linked without BIND_NOW.
    if !on_path("cc") {
        eprintln!("negative case skipped: no C compiler to build a non-PIE");
        return;
    }
    let sb = Sandbox::new();
    let src = sb.write("main.c", "int main(void) { return 0; }\n");
    let exe = sb.path().join("nopie");
    let built = std::process::Command::new("cc")
        .args(["-no-pie", "-Wl,-z,lazy", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(built.success());
    let out = check_elf(&exe);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not DYN") && err.contains("no BIND_NOW"),
        "{err}"
    );
}

/// `Max core file size <soft> <hard>` of `pid`, from `/proc/PID/limits`.
fn core_limits(pid: i32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    format!("{} {}", words[4], words[5])
}

/// The guard: agentsup's child named `agentsup-guard`.
fn guard_of(agentsup: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
        let ppid: i32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (comm == "agentsup-guard" && ppid == agentsup).then_some(pid)
    })
}

/// A worker that reports its core limits as the shell and the kernel see them.
const CORE_WORKER: &str = r#"
[[worker]]
name = "w"
command = ["sh", "-c", "echo \"ULIMIT $(ulimit -c) $(ulimit -Hc)\"; echo \"LIMITS $(grep 'core file' /proc/self/limits | tr -s ' ')\"; exec sleep 1000"]
"#;

/// Starts `agentsup run` with core limits `soft:hard` (as `prlimit --core` takes
/// them), as `uid`.
fn run_with_core_limit(sb: &Sandbox, limits: &str, uid: Option<u32>) -> crate::support::Running {
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--core={limits}"))
        .arg("--")
        .arg(crate::support::bin())
        .args(["run", "--no-color"])
        .current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", sb.path())
        .stdin(std::process::Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    sb.spawn_cmd(cmd)
}

/// `prlimit --pid PID --core=unlimited` as `uid` (a worker of agentsup's uid could
/// run it): whether it succeeded.
fn raise_core_limit_of(pid: i32, uid: Option<u32>) -> bool {
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--pid", &pid.to_string(), "--core=unlimited:unlimited"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.status().unwrap().success()
}

#[test]
fn a_same_uid_process_cannot_raise_agentsups_core_limit_and_workers_keep_theirs() {
    if !on_path("prlimit") {
        eprintln!("skipped: no prlimit");
        return;
    }
    let sb = Sandbox::new();
    sb.config(CORE_WORKER);
    // Unprivileged, the case the hard limit is for (root with CAP_SYS_RESOURCE can
    // raise any limit, and gives workers theirs back).
    let uid = is_root().then(|| {
        open_up(&sb);
        NOBODY
    });
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut ours) }, 0);
    if ours.rlim_max != libc::RLIM_INFINITY {
        eprintln!("skipped: this test's own core hard limit is not unlimited");
        return;
    }

    // The usual default, soft 0: agentsup and its guard end with a hard limit of 0,
    // which a process of their uid cannot raise; the workers with 0 too.
    let mut run = run_with_core_limit(&sb, "0:unlimited", uid);
    run.wait_for("LIMITS", PATIENCE);
    let pid = run.pid();
    assert_eq!(core_limits(pid), "0 0", "{}", run.output());
    let guard = guard_of(pid).expect("no guard");
    assert_eq!(core_limits(guard), "0 0");
    assert!(
        !raise_core_limit_of(pid, uid),
        "prlimit raised agentsup's core limit"
    );
    assert!(
        !raise_core_limit_of(guard, uid),
        "prlimit raised the guard's core limit"
    );
    assert_eq!(core_limits(pid), "0 0");
    let out = run.output();
    assert!(out.contains("ULIMIT 0 0"), "{out}");
    assert!(out.contains("LIMITS Max core file size 0 0 bytes"), "{out}");
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());

    // The operator asked for cores (soft above 0) and agentsup cannot raise a hard
    // limit again: agentsup's soft limit is 0, the workers get theirs.
    let mut run = run_with_core_limit(&sb, "4096:unlimited", uid);
    run.wait_for("LIMITS", PATIENCE);
    let pid = run.pid();
    assert_eq!(core_limits(pid), "0 unlimited", "{}", run.output());
    let out = run.output();
    assert!(
        out.contains("LIMITS Max core file size 4096 unlimited bytes"),
        "{out}"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}

/// What `/proc/PID/environ` (`ps e`, readable by root) shows of agentsup and its
/// guard: the names, but no value that looks secret, whether by its name or by
/// a password in a URL; other values stay. The worker still gets its key.
#[test]
fn agentsups_environment_block_holds_no_secret_value() {
    let sb = Sandbox::new();
    sb.config(
        r#"
[env]
inherit = ["PATH", "PLAIN_SETTING"]

[[worker]]
name = "w"
command = ["sh", "-c", "echo \"key length ${#SOME_API_KEY}\"; exec sleep 300"]
keys = ["SOME_API_KEY"]
"#,
    );
    let key = Canary::new("sk-environ-");
    let password = Canary::new("pw-");
    let url = format!(
        "postgres://app:{}@db.internal:5432/agents",
        password.value().replace(['/', '"', '\\', '+', '='], "x")
    );
    let url_password = url.split(['@', ':']).nth(2).unwrap().to_string();
    let mut cmd = sb.cmd(&["run", "--no-color"]);
    cmd.env("SOME_API_KEY", key.value())
        .env("DATABASE_URL", &url)
        .env("PLAIN_SETTING", "visible-plain-value");
    let mut run = sb.spawn_cmd(cmd);
    let line = run.wait_for("key length", PATIENCE);
    assert!(
        line.contains(&format!("key length {}", key.value().len())),
        "{line}"
    );
    let mut blocks = vec![("agentsup".to_string(), run.pid() as u32)];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains("(agentsup-guard)") {
            let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
            if ppid == Some(run.pid().to_string().as_str()) {
                blocks.push(("guard".to_string(), pid));
            }
        }
    }
    assert_eq!(blocks.len(), 2, "the guard was not found: {blocks:?}");
    for (what, pid) in blocks {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let shown = format!("{what}'s /proc/{pid}/environ");
        key.assert_absent(&(shown.as_str(), &text));
        assert!(
            !text.contains(&url_password),
            "{shown} holds the URL's password"
        );
        assert!(text.contains("SOME_API_KEY="), "{shown} lost the name");
        assert!(
            text.contains("PLAIN_SETTING=visible-plain-value"),
            "{shown} lost a plain value"
        );
    }
    run.signal(15);
    assert_eq!(run.wait_exit(PATIENCE), Some(0), "{}", run.output());
}
