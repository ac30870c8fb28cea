#!/usr/bin/env python3
"""agentsup benchmark suite (issue 7): every workload against every tool, one table.

    bench/setup.sh            # once: peers, floor launcher, workers, release build
    bench/run.py [--quick]    # the table, and bench/results.json

Tools: the floor launcher (bench/floor/floor.c), agentsup, supervisord, circus, PM2
(pm2-runtime) and honcho, each configured as equivalently as it allows (see
bench/README.md). Workloads W1-W6 as in issue 7. Only the standard library is used;
the driver runs under any python3 >= 3.8.

Every measurement is taken from outside the tool: workers announce their pid on a
FIFO the instant they run (bench/workers/ready.c), memory and CPU come from /proc,
and log output is read from the file the tool's stdout is redirected to.
"""

import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
VENV = os.path.join(HERE, ".venv")
FLOOR = os.path.join(BUILD, "floor")
READY = os.path.join(BUILD, "ready")
FLOOD = os.path.join(BUILD, "flood")
AGENT_PY = os.path.join(HERE, "workers", "agent.py")
AGENTSUP = os.environ.get("AGENTSUP_BIN", os.path.join(ROOT, "target", "build-dist", "agentsup"))
PM2_RUNTIME = os.path.join(HERE, "node_modules", ".bin", "pm2-runtime")
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

LAST_BUSY = None  # share of CPU busy just before the last launch
QUIET = True  # wait for an idle machine before each run (--no-wait-quiet)

TOOLS = ["floor", "agentsup", "supervisord", "circus", "pm2", "honcho"]
PEERS = ["supervisord", "circus", "pm2", "honcho"]

now = time.monotonic


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid):
    """Fields of /proc/PID/stat after the comm: [state, ppid, ...]."""
    s = read(f"/proc/{pid}/stat")
    if s is None:
        return None
    return s[s.rfind(")") + 2 :].split()


def all_ppids():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = stat_fields(int(name))
            if f:
                out[int(name)] = int(f[1])
    return out


def tree(root):
    """root and all its descendants, live now."""
    kids = {}
    for pid, ppid in all_ppids().items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(kids.get(p, []))
    return [p for p in seen if alive(p)]


def alive(pid):
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def cpu_ticks(pid):
    f = stat_fields(pid)
    return int(f[11]) + int(f[12]) if f else None  # utime + stime


def mem_kb(pid):
    """(rss, pss) in KiB from smaps_rollup."""
    s = read(f"/proc/{pid}/smaps_rollup")
    rss = pss = 0
    if s:
        for line in s.splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def ctx_switches(pid):
    """{(pid, tid): voluntary + involuntary context switches}: wake-ups per thread."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        s = read(f"/proc/{pid}/task/{tid}/status") or ""
        n = 0
        for line in s.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                n += int(line.split()[1])
        out[(pid, tid)] = n
    return out


def thread_cpu_ns(pid):
    """{(pid, tid): ns on CPU} from /proc/PID/task/TID/schedstat (exact, unlike the
    10 ms ticks of /proc/PID/stat)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        s = read(f"/proc/{pid}/task/{tid}/schedstat")
        if s:
            out[(pid, tid)] = int(s.split()[0])
    return out


def wakeups_between(before, after):
    """Context switches of the threads alive at both samples (a thread that exited
    in between takes its count with it; one that started is counted from 0)."""
    return sum(n - before.get(k, 0) for k, n in after.items())


def busy_fraction(interval=0.3):
    """Share of all CPUs busy over `interval` (from /proc/stat)."""
    def sample():
        f = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
        idle = f[3] + f[4]
        return sum(f), idle
    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit=90.0, threshold=0.2):
    """Waits (up to `limit` s) until the machine is idle, so another job's build does
    not land in one tool's numbers. Returns the busy share seen last."""
    end = now() + limit
    b = busy_fraction()
    while b > threshold and now() < end:
        time.sleep(1.0)
        b = busy_fraction()
    return b


def comm(pid):
    return (read(f"/proc/{pid}/comm") or "?").strip()


# ---------------------------------------------------------------------------
# FIFO: workers announce "PID\n" when they start
# ---------------------------------------------------------------------------


class Fifo:
    def __init__(self, path):
        self.path = path
        os.mkfifo(path)
        self.rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.keep = os.open(path, os.O_WRONLY)  # never EOF, never ENXIO for writers
        self.buf = b""
        self.seen = []  # (monotonic time, pid)

    def poll(self, timeout):
        """Waits up to timeout for announcements; returns the new ones."""
        r, _, _ = select.select([self.rfd], [], [], max(0.0, timeout))
        if not r:
            return []
        t = now()
        new = []
        while True:
            try:
                chunk = os.read(self.rfd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line.strip():
                new.append((t, int(line)))
        self.seen.extend(new)
        return new

    def wait_count(self, n, deadline, proc=None):
        """Waits until n announcements in total; True if reached."""
        while len(self.seen) < n:
            left = deadline - now()
            if left <= 0:
                return False
            self.poll(min(left, 0.25))
            if proc is not None and proc.poll() is not None and len(self.seen) < n:
                self.poll(0.05)
                return len(self.seen) >= n
        return True

    def close(self):
        os.close(self.rfd)
        os.close(self.keep)


# ---------------------------------------------------------------------------
# Workload specs and tools
# ---------------------------------------------------------------------------


class Prog:
    def __init__(self, name, argv, replicas=1):
        self.name, self.argv, self.replicas = name, argv, replicas


class Spec:
    """What to run. restart: restart workers that exit. pacing: 'fast' = the lowest
    restart delay the tool allows and no give-up (W3, W4-fast); 'default' = lowest
    delay but the tool's default give-up rules (W4)."""

    def __init__(self, progs, restart=False, pacing="fast", secrets=None, env=None):
        self.progs, self.restart, self.pacing = progs, restart, pacing
        self.secrets = secrets or {}
        self.env = env or {}


def q(s):
    return json.dumps(s)


class Tool:
    name = "?"
    gave_up = None  # regex on the tool's output meaning "stopped restarting"
    can_restart = True

    def available(self):
        return True, ""

    def version(self):
        return ""

    def env(self, d):
        e = dict(os.environ)
        e.pop("PYTHONPATH", None)
        return e

    def launch(self, spec, d, out_path, err_path):
        argv = self.write(spec, d)
        out = open(out_path, "ab")
        err = open(err_path, "ab")
        env = self.env(d)
        env.update(spec.env)
        p = subprocess.Popen(
            argv, cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            start_new_session=True,
        )
        out.close()
        err.close()
        return p


class Floor(Tool):
    name = "floor"

    def available(self):
        return os.access(FLOOR, os.X_OK), "run bench/setup.sh (builds bench/.build/floor)"

    def write(self, spec, d):
        path = os.path.join(d, "floor.spec")
        with open(path, "w") as f:
            for p in spec.progs:
                f.write(f"{p.replicas} {' '.join(p.argv)}\n")
        return [FLOOR] + (["-r"] if spec.restart else []) + [path]


class Agentsup(Tool):
    name = "agentsup"
    gave_up = re.compile(r"failed for good|gave up")

    def __init__(self, log_format="pretty", fork=False):
        self.log_format = log_format
        self.fork = fork  # start = "fork": Python replicas forked from a preloaded template

    def available(self):
        return os.access(AGENTSUP, os.X_OK), "scripts/build-dist.sh"

    def version(self):
        try:
            return subprocess.run([AGENTSUP, "--version"], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    def write(self, spec, d):
        lines = ['[supervisor]', 'shutdown_timeout = "30s"', '', '[env]', 'inherit = ["PATH", "HOME", "LANG"]', '']
        if spec.secrets:
            sd = os.path.join(d, "secrets")
            os.makedirs(sd, exist_ok=True)
            for k, v in spec.secrets.items():
                with open(os.path.join(sd, k), "w") as f:
                    f.write(v + "\n")
                lines += [f"[keys.{k}]", "secret = true", ""]
            lines += ["[[source]]", 'type = "dir"', 'path = "secrets"', ""]
        for p in spec.progs:
            lines += ["[[worker]]", f"name = {q(p.name)}"]
            if self.fork:
                # argv is [python, script, args...]
                lines += ['start = "fork"', f"python = {q(p.argv[0])}", f"script = {q(p.argv[1])}",
                          f"args = {json.dumps(p.argv[2:])}",
                          'preload = ["openai", "langgraph.graph", "langchain_openai"]']
            else:
                lines.append(f"command = {json.dumps(p.argv)}")
            lines += [
                f"replicas = {p.replicas}",
                f'restart = "{"always" if spec.restart else "never"}"',
                'stop_timeout = "30s"',
            ]
            if spec.secrets:
                lines.append(f"keys = {json.dumps(sorted(spec.secrets))}")
            if spec.pacing == "fast":
                # Smallest delay agentsup accepts is 0; no growth, no give-up.
                lines += ['backoff = { initial = "0s", max = "0s", multiplier = 1.0, jitter = 0.0 }',
                          "max_restarts = 0"]
            else:
                # Lowest first delay; default growth (x2, cap 60 s) and max_restarts (10).
                lines += ['backoff = { initial = "0s" }']
            lines.append("")
        path = os.path.join(d, "supervisor.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return [AGENTSUP, "run", "-c", path, "--no-color", "--log-format", self.log_format]


class Supervisord(Tool):
    name = "supervisord"
    gave_up = re.compile(r"gave up: ")

    def available(self):
        return os.access(os.path.join(VENV, "bin", "supervisord"), os.X_OK), "run bench/setup.sh"

    def version(self):
        return "supervisor " + subprocess.run([os.path.join(VENV, "bin", "supervisord"), "--version"],
                                              capture_output=True, text=True).stdout.strip()

    def write(self, spec, d):
        lines = [
            "[supervisord]", "nodaemon=true", f"pidfile={d}/supervisord.pid",
            "logfile=/dev/null", "logfile_maxbytes=0", "loglevel=info", "minfds=1024", "minprocs=200", "",
        ]
        for p in spec.progs:
            lines += [
                f"[program:{p.name}]",
                "command=" + " ".join(p.argv),
                f"numprocs={p.replicas}",
                "process_name=%(program_name)s_%(process_num)d",
                "autostart=true",
                f"autorestart={'true' if spec.restart else 'false'}",
                # startsecs=0: a process counts as running at once, so an exit after
                # that restarts it immediately (supervisord has no delay setting).
                # W4 'default' keeps the default startsecs=1/startretries=3 give-up.
                f"startsecs={0 if spec.pacing == 'fast' else 1}",
                "stopsignal=TERM", "stopwaitsecs=30", "stopasgroup=true", "killasgroup=true",
                "stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0", "redirect_stderr=true", "",
            ]
        path = os.path.join(d, "supervisord.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return [os.path.join(VENV, "bin", "supervisord"), "-n", "-c", path]


class Circus(Tool):
    name = "circus"
    gave_up = re.compile(r"flapping|stopping the watcher")

    def available(self):
        return os.access(os.path.join(VENV, "bin", "circusd"), os.X_OK), "run bench/setup.sh"

    def version(self):
        return "circus " + subprocess.run([os.path.join(VENV, "bin", "circusd"), "--version"],
                                          capture_output=True, text=True).stdout.strip()

    def write(self, spec, d):
        lines = [
            "[circus]",
            f"endpoint = ipc://{d}/endpoint",
            f"pubsub_endpoint = ipc://{d}/pubsub",
            f"stats_endpoint = ipc://{d}/stats",
            "statsd = False", "httpd = False",
            # circus respawns only when its controller polls (check_delay, 5 s by
            # default): the lowest pacing it allows is a short poll interval.
            *(["check_delay = 0.01"] if spec.restart else []), "",
        ]
        for p in spec.progs:
            lines += [
                f"[watcher:{p.name}]",
                f"cmd = {p.argv[0]}",
                f"args = {' '.join(p.argv[1:])}",
                f"numprocesses = {p.replicas}",
                f"respawn = {'True' if spec.restart else 'False'}",
                "warmup_delay = 0", "graceful_timeout = 30", "copy_env = True",
                "stop_children = True",
                "stdout_stream.class = StdoutStream", "stderr_stream.class = StdoutStream", "",
            ]
        path = os.path.join(d, "circus.ini")
        with open(path, "w") as f:
            f.write("\n".join(lines))
        return [os.path.join(VENV, "bin", "circusd"), path]


class Pm2(Tool):
    name = "pm2"
    gave_up = re.compile(r"too many unstable restarts|errored")

    def available(self):
        return os.access(PM2_RUNTIME, os.X_OK), "run bench/setup.sh (npm ci in bench/)"

    def version(self):
        try:
            with open(os.path.join(HERE, "node_modules", "pm2", "package.json")) as f:
                return "pm2 " + json.load(f)["version"]
        except OSError:
            return ""

    def env(self, d):
        e = super().env(d)
        e["PM2_HOME"] = os.path.join(d, "pm2home")
        e["PM2_DISCRETE_MODE"] = "true"
        return e

    def write(self, spec, d):
        apps = []
        for p in spec.progs:
            for r in range(p.replicas):
                app = {
                    "name": p.name if p.replicas == 1 else f"{p.name}_{r}",
                    "script": p.argv[0], "args": p.argv[1:], "interpreter": "none",
                    "exec_mode": "fork", "autorestart": spec.restart, "restart_delay": 0,
                    "kill_timeout": 30000, "merge_logs": True,
                }
                if spec.pacing == "fast":
                    app.update({"min_uptime": 0, "max_restarts": 1_000_000_000})
                apps.append(app)
        path = os.path.join(d, "ecosystem.json")
        with open(path, "w") as f:
            json.dump({"apps": apps}, f)
        return [PM2_RUNTIME, path]


class Honcho(Tool):
    name = "honcho"
    can_restart = False
    gave_up = re.compile(r"exited with code|stopped \(rc=")

    def available(self):
        return os.access(os.path.join(VENV, "bin", "honcho"), os.X_OK), "run bench/setup.sh"

    def version(self):
        return subprocess.run([os.path.join(VENV, "bin", "honcho"), "--version"],
                              capture_output=True, text=True).stdout.strip()

    def write(self, spec, d):
        path = os.path.join(d, "Procfile")
        with open(path, "w") as f:
            for p in spec.progs:
                f.write(f"{p.name}: exec {' '.join(p.argv)}\n")
        conc = ",".join(f"{p.name}={p.replicas}" for p in spec.progs)
        return [os.path.join(VENV, "bin", "honcho"), "start", "-f", path, "-d", d, "-c", conc, "--no-colour"]


def make_tool(name):
    return {"floor": Floor, "agentsup": Agentsup, "supervisord": Supervisord, "circus": Circus,
            "pm2": Pm2, "honcho": Honcho}[name]()


# ---------------------------------------------------------------------------
# Running one tool
# ---------------------------------------------------------------------------


class Run:
    """One launched tool in its own scratch directory."""

    def __init__(self, tool, spec, base, label):
        self.tool = tool
        self.dir = os.path.join(base, label)
        os.makedirs(self.dir)
        self.fifo = Fifo(os.path.join(self.dir, "ready.fifo"))
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        self.spec = spec(self.fifo.path) if callable(spec) else spec
        self.known = set()  # every pid seen in the tool's tree
        global LAST_BUSY
        self.busy_before = LAST_BUSY = wait_quiet() if QUIET else None
        self.t0 = now()
        self.proc = tool.launch(self.spec, self.dir, self.out_path, self.err_path)

    def workers(self):
        return {pid for _, pid in self.fifo.seen}

    def supervisor_pids(self):
        """The tool's own processes: its tree minus the announced workers."""
        t = tree(self.proc.pid)
        self.known.update(t)
        w = self.workers()
        return [p for p in t if p not in w]

    def output(self):
        return (read(self.out_path, "rb") or b"").decode("utf-8", "replace") + \
               (read(self.err_path, "rb") or b"").decode("utf-8", "replace")

    def stop(self, timeout=30.0):
        """SIGTERM the tool; returns (seconds to exit, exit code, orphans)."""
        self.supervisor_pids()
        # Popen.wait(timeout) polls with sleeps of up to 50 ms; a pidfd is exact.
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        t0 = now()
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
            dt = now() - t0
            os.close(pidfd)
        try:
            rc = self.proc.wait(timeout if pidfd is None else 0.5)
        except subprocess.TimeoutExpired:
            rc = None
        if pidfd is None:
            dt = now() - t0
        self.fifo.poll(0)
        orphans = []
        for pid in sorted(self.known | self.workers()):
            if pid != self.proc.pid and alive(pid):
                orphans.append(pid)
        return dt, rc, orphans

    def cleanup(self):
        pids = self.known | self.workers() | {self.proc.pid}
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        end = now() + 10
        while now() < end and any(alive(p) for p in pids):
            time.sleep(0.02)
        self.fifo.close()


# ---------------------------------------------------------------------------
# Workloads. Each returns a dict of metric -> value for one run.
# ---------------------------------------------------------------------------


def w1_fanout(tool, base, label, n, idle):
    r = Run(tool, lambda fifo: Spec([Prog("w", [READY, fifo], n)]), base, label)
    try:
        ok = r.fifo.wait_count(n, r.t0 + 120, r.proc)
        if not ok:
            return {"error": f"only {len(r.fifo.seen)}/{n} workers announced"}
        res = {"ready_s": max(t for t, _ in r.fifo.seen) - r.t0}
        time.sleep(1.0)
        sup = r.supervisor_pids()
        mems = [mem_kb(p) for p in sup]
        res["rss_mb"] = sum(m[0] for m in mems) / 1024
        res["pss_mb"] = sum(m[1] for m in mems) / 1024
        res["processes"] = len(sup)
        if idle:
            c0, s0 = {}, {}
            for p in sup:
                c0.update(thread_cpu_ns(p))
                s0.update(ctx_switches(p))
            time.sleep(idle)
            sup2 = [p for p in sup if alive(p)]
            c1, s1 = {}, {}
            for p in sup2:
                c1.update(thread_cpu_ns(p))
                s1.update(ctx_switches(p))
            res["idle_cpu_ms"] = wakeups_between(c0, c1) / 1e6 * (10.0 / idle)
            res["idle_wakeups_per_s"] = wakeups_between(s0, s1) / idle
        return res
    finally:
        r.stop()
        r.cleanup()


ALPHA = b"abcdefghijklmnopqrstuvwxyz0123456789"
PAYLOADS = [(ALPHA * 4)[o : o + 80] for o in range(36)]
FRAGMENTS = [(ALPHA * 2)[o : o + 12] for o in range(36)]


def verify_flood(path, names, count):
    """Every line "NAME N PAYLOAD" must be there exactly once, intact, in order per
    worker. Tool prefixes ("x | ") are stripped; other lines are the tool's own."""
    idx = {n.encode(): i for i, n in enumerate(names)}
    seen = [bytearray(count) for _ in names]
    nxt = [0] * len(names)
    ok = dup = corrupt = disorder = ends = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"{"):
                k = line.find(b'"line":"')
                if k < 0:
                    continue
                body = line[k + 8 : line.find(b'"', k + 8)]
            else:
                k = line.find(b" | ")
                body = line[k + 3 :] if k >= 0 else line
                body = body.rstrip(b"\r\n")
            parts = body.split(b" ")
            if len(parts) == 3 and parts[0] in idx and parts[1].isdigit():
                w, n = idx[parts[0]], int(parts[1])
                if n < count and parts[2] == PAYLOADS[n * 7 % 36]:
                    if seen[w][n]:
                        dup += 1
                    else:
                        seen[w][n] = 1
                        ok += 1
                    if n != nxt[w]:
                        disorder += 1
                    nxt[w] = n + 1
                    continue
            if len(parts) == 2 and parts[0] in idx and parts[1] == b"END":
                ends += 1
                continue
            if any(fr in line for fr in FRAGMENTS):
                corrupt += 1
    total = count * len(names)
    return {"lines_ok": ok, "lost": total - ok, "dup": dup, "corrupt": corrupt,
            "out_of_order": disorder, "ends": ends}


def w2_flood(tool, base, label, per_worker, secrets, timeout):
    names = [f"w{i}" for i in range(4)]

    def spec(fifo):
        return Spec([Prog(nm, [FLOOD, nm, str(per_worker), fifo]) for nm in names], secrets=secrets)

    r = Run(tool, spec, base, label)
    try:
        ends = 0
        tail = b""
        t_done = None
        with open(r.out_path, "rb") as f:
            deadline = r.t0 + timeout
            while ends < 4 and now() < deadline:
                chunk = f.read(8 << 20)
                if not chunk:
                    if r.proc.poll() is not None:
                        break
                    time.sleep(0.002)
                    continue
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                ends += data.count(b" END\n", 0, cut) + data.count(b' END"', 0, cut)
                tail = data[cut:]
                if ends >= 4:
                    t_done = now()
        if t_done is None:
            res = {"error": f"timeout/exit with {ends}/4 workers complete"}
        else:
            res = {"time_s": t_done - r.t0}
            res["lines_per_s"] = per_worker * 4 / res["time_s"]
        # Each flood announces itself after its END line. Without reading those
        # announcements the workers count as the supervisor's own processes, and
        # their CPU (more than the supervisor's) lands in cpu_s.
        r.fifo.wait_count(4, now() + 5, r.proc)
        sup = r.supervisor_pids()
        res["cpu_s"] = sum(cpu_ticks(p) or 0 for p in sup) / CLK
    finally:
        r.stop()
        r.cleanup()
    res.update(verify_flood(r.out_path, names, per_worker))
    os.unlink(r.out_path)
    return res


def w3_restart(tool, base, label, kills):
    r = Run(tool, lambda fifo: Spec([Prog("w", [READY, fifo])], restart=True, pacing="fast"), base, label)
    try:
        if not r.fifo.wait_count(1, r.t0 + 60, r.proc):
            return {"error": "worker never started"}
        pid = r.fifo.seen[-1][1]
        lats = []
        for _ in range(kills):
            time.sleep(0.1)
            r.supervisor_pids()
            have = len(r.fifo.seen)
            t0 = now()
            os.kill(pid, signal.SIGKILL)
            if not r.fifo.wait_count(have + 1, t0 + 10, r.proc):
                return {"error": f"no replacement within 10 s after {len(lats)} kills", "samples_ms": lats}
            t1, pid = r.fifo.seen[have]
            lats.append((t1 - t0) * 1000)
        lats.sort()
        return {"median_ms": statistics.median(lats),
                "p95_ms": lats[min(len(lats) - 1, int(round(0.95 * (len(lats) - 1))))],
                "max_ms": lats[-1], "samples_ms": [round(x, 3) for x in lats]}
    finally:
        r.stop()
        r.cleanup()


def w4_crashloop(tool, base, label, secs, pacing):
    r = Run(tool, lambda fifo: Spec([Prog("w", [READY, fifo, "--exit", "1"])], restart=True, pacing=pacing),
            base, label)
    cpu = {}  # pid -> last cumulative ticks
    try:
        end = r.t0 + secs
        next_sample = now()
        exited_at = None
        while now() < end:
            r.fifo.poll(min(0.05, max(0.0, end - now())))
            if now() >= next_sample:
                for p in r.supervisor_pids():
                    c = cpu_ticks(p)
                    if c is not None:
                        cpu[p] = c
                next_sample = now() + 0.2
            if r.proc.poll() is not None:
                exited_at = now() - r.t0
                break
        r.fifo.poll(0.05)
        starts = [t for t, _ in r.fifo.seen]
        out = r.output()
        res = {
            "restarts": max(0, len(starts) - 1),
            "last_start_s": (starts[-1] - r.t0) if starts else None,
            "tool_exited_s": exited_at,
            "gave_up": bool(exited_at is not None or (tool.gave_up and tool.gave_up.search(out))),
            "cpu_s": sum(cpu.values()) / CLK,
            "output_bytes": len(out),
        }
        res["cpu_pct"] = 100.0 * res["cpu_s"] / ((exited_at or secs))
        return res
    finally:
        r.stop()
        r.cleanup()


def w5_shutdown(tool, base, label, n):
    r = Run(tool, lambda fifo: Spec([Prog("w", [READY, fifo, "--term-delay", "100"], n)]), base, label)
    try:
        if not r.fifo.wait_count(n, r.t0 + 120, r.proc):
            return {"error": f"only {len(r.fifo.seen)}/{n} workers announced"}
        time.sleep(0.5)
        dt, rc, orphans = r.stop(timeout=60)
        return {"stop_s": dt, "exit_code": rc, "orphans": len(orphans),
                "orphan_comms": sorted({comm(p) for p in orphans})}
    finally:
        r.cleanup()


def w6_python(tool, base, label, n, python):
    r = Run(tool, lambda fifo: Spec([Prog("agent", [python, AGENT_PY, fifo], n)],
                                    env={"OPENAI_API_KEY": "sk-bench-dummy-not-a-key"}), base, label)
    try:
        if not r.fifo.wait_count(n, r.t0 + 300, r.proc):
            return {"error": f"only {len(r.fifo.seen)}/{n} workers ready"}
        res = {"ready_s": max(t for t, _ in r.fifo.seen) - r.t0}
        time.sleep(1.0)
        sup = r.supervisor_pids()
        res["supervisor_pss_mb"] = sum(mem_kb(p)[1] for p in sup) / 1024
        res["workers_pss_mb"] = sum(mem_kb(p)[1] for p in r.workers()) / 1024
        res["total_pss_mb"] = res["supervisor_pss_mb"] + res["workers_pss_mb"]
        return res
    finally:
        r.stop()
        r.cleanup()


def git_state():
    """Commit of the tree and whether src/ has uncommitted changes (read-only)."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "src_changes": git("status", "--porcelain", "--", "src")}


def pick_python():
    """target/test-venv when it has the three packages, else bench/.venv."""
    for py in (os.path.join(ROOT, "target", "test-venv", "bin", "python"), os.path.join(VENV, "bin", "python")):
        if os.access(py, os.X_OK):
            rc = subprocess.run([py, "-c", "import openai, langgraph, langchain_openai"],
                                capture_output=True).returncode
            if rc == 0:
                return py
    return None


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def median(xs):
    if xs and all(isinstance(x, bool) for x in xs):
        return sum(xs) * 2 > len(xs)  # majority
    xs = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return statistics.median(xs) if xs else None


class Results:
    def __init__(self):
        self.data = {}  # workload -> tool -> list of run dicts

    def add(self, wl, tool, res):
        self.data.setdefault(wl, {}).setdefault(tool, []).append(res)

    def med(self, wl, tool, metric):
        runs = self.data.get(wl, {}).get(tool, [])
        return median([r.get(metric) for r in runs])

    def summary(self):
        out = {}
        for wl, tools in self.data.items():
            out[wl] = {}
            for tool, runs in tools.items():
                metrics = {}
                keys = []
                for r in runs:
                    keys += [k for k in r if k not in keys]
                for k in keys:
                    vals = [r.get(k) for r in runs if k in r]
                    m = median(vals)
                    if m is not None:
                        metrics[k] = {"median": m, "samples": vals}
                    else:
                        metrics[k] = {"samples": vals}
                out[wl][tool] = metrics
        return out


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}" if abs(v) < 1 else f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool) or b == 0:
        return None
    return a / b


def render_table(res, tools, rows):
    """rows: (workload, label, metric). Columns: tools, then agentsup/x ratios."""
    others = [t for t in tools if t != "agentsup"]
    head = ["metric"] + tools + [f"a/{t}" for t in others if "agentsup" in tools]
    lines = []
    for wl, label, metric, a_tool in rows:
        cells = [label]
        for t in tools:
            if t == "agentsup" and a_tool != "agentsup":
                cells.append(fmt(res.med(wl, a_tool, metric)))
            else:
                cells.append(fmt(res.med(wl, t, metric)))
        if "agentsup" in tools:
            a = res.med(wl, a_tool, metric)
            for t in others:
                cells.append(fmt(ratio(a, res.med(wl, t, metric)), 2))
        lines.append(cells)
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
    sep = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)), sep]
    for r in lines:
        out.append(" | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def evict_from_page_cache(paths):
    """Drops freshly built binaries from the page cache, so that their first exec
    reads them from disk like a deployed binary. As the linker or `cp` leaves
    them, the kernel maps their code in larger pieces around each fault: 0.3 MB
    more supervisor RSS for agentsup in W1, an artefact of the build, not of the
    binary. Clean pages only (hence the fsync); no root needed."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, shorter idle and crash-loop windows")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6")
    ap.add_argument("--runs", type=int, help="repetitions per workload (default 5, quick 3)")
    ap.add_argument("--fanout", type=int, default=200, help="W1/W5 workers")
    ap.add_argument("--lines", type=int, default=250_000, help="W2 lines per worker (4 workers), all tools")
    ap.add_argument("--big-lines", type=int, default=625_000,
                    help="W2 lines per worker for the agentsup-vs-floor runs (4 x 625k = 2.5 M)")
    ap.add_argument("--idle", type=float, default=10.0, help="W1 idle CPU window, seconds")
    ap.add_argument("--crash-secs", type=float, help="W4 window (default 30, quick 10)")
    ap.add_argument("--kills", type=int, default=20, help="W3 kills")
    ap.add_argument("--py-replicas", type=int, default=8, help="W6 replicas")
    ap.add_argument("--secrets", type=int, default=10, help="W2 redaction: number of secrets")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--no-wait-quiet", action="store_true",
                    help="do not wait for other load (a build, ...) to settle before each run")
    args = ap.parse_args()
    global QUIET
    QUIET = not args.no_wait_quiet
    runs = args.runs or (3 if args.quick else 5)
    crash_secs = args.crash_secs or (10.0 if args.quick else 30.0)
    workloads = [w.strip().upper() for w in args.workloads.split(",")]

    tools = []
    for name in [t.strip() for t in args.tools.split(",") if t.strip()]:
        t = make_tool(name)
        ok, why = t.available()
        if ok:
            tools.append(t)
        else:
            log(f"skipping {name}: not installed ({why})")
    names = [t.name for t in tools]
    by = {t.name: t for t in tools}
    evict_from_page_cache([AGENTSUP, FLOOR])
    base = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp", f"agentsup-bench-{os.getpid()}")
    os.makedirs(base)
    res = Results()
    counter = [0]

    def label(wl, t, i):
        counter[0] += 1
        return f"{counter[0]:03d}-{wl}-{t}-{i}"

    last = [now()]

    def record(wl, tname, r):
        r["wall_s"] = round(now() - last[0], 2)
        if LAST_BUSY is not None:
            r["busy_before"] = round(LAST_BUSY, 2)
        last[0] = now()
        res.add(wl, tname, r)
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "samples_ms"}
        log(f"  {wl:9} {tname:13} {brief}")

    started = now()
    git_at_start = git_state()  # the tree the binary was just built from (run.sh builds first)
    secrets = {f"BENCH_TOKEN_{i}": f"tok_{i}_" + os.urandom(16).hex() for i in range(args.secrets)}
    try:
        if "W1" in workloads:
            log(f"W1 fanout: {args.fanout} x sleep, {runs} runs")
            for i in range(runs):
                for t in tools:
                    record("W1", t.name, w1_fanout(t, base, label("W1", t.name, i), args.fanout,
                                                   args.idle if i == 0 else 0))
        if "W2" in workloads:
            log(f"W2 log flood: 4 x {args.lines} lines (all tools), 4 x {args.big_lines} (floor vs agentsup)")
            for i in range(runs):
                for t in tools:
                    if t.name == "honcho" and i > 0 and args.quick:
                        continue  # ~30 s a run; once is enough in quick mode
                    record("W2", t.name, w2_flood(t, base, label("W2", t.name, i), args.lines, None, 300))
                    if t.name == "agentsup":
                        record("W2", "agentsup+redact", w2_flood(t, base, label("W2r", t.name, i),
                                                                 args.lines, secrets, 300))
            if "agentsup" in by and "floor" in by:
                for i in range(runs):
                    record("W2big", "floor", w2_flood(by["floor"], base, label("W2b", "floor", i), args.big_lines, None, 300))
                    record("W2big", "agentsup", w2_flood(by["agentsup"], base, label("W2b", "agentsup", i), args.big_lines, None, 300))
                    record("W2big", "agentsup+redact", w2_flood(by["agentsup"], base, label("W2br", "agentsup", i),
                                                                args.big_lines, secrets, 300))
                    record("W2big", "agentsup+json", w2_flood(Agentsup("json"), base, label("W2bj", "agentsup", i),
                                                              args.big_lines, None, 300))
        if "W3" in workloads:
            log(f"W3 restart latency: {args.kills} x kill -9")
            for t in tools:
                if not t.can_restart:
                    res.add("W3", t.name, {"error": "cannot restart a process"})
                    continue
                record("W3", t.name, w3_restart(t, base, label("W3", t.name, 0), args.kills))
        if "W4" in workloads:
            for pacing in ("default", "fast"):
                wl = "W4" if pacing == "default" else "W4fast"
                log(f"{wl} crash loop: exit 1 at once, {crash_secs:.0f} s, pacing={pacing}")
                for t in tools:
                    record(wl, t.name, w4_crashloop(t, base, label(wl, t.name, 0), crash_secs, pacing))
        if "W5" in workloads:
            log(f"W5 shutdown: {args.fanout} workers that exit 0.1 s after SIGTERM, {runs} runs")
            for i in range(runs):
                for t in tools:
                    record("W5", t.name, w5_shutdown(t, base, label("W5", t.name, i), args.fanout))
        if "W6" in workloads:
            py = pick_python()
            if py is None:
                log("W6 skipped: no python with openai, langgraph, langchain_openai (run bench/setup.sh)")
            else:
                w6runs = 1 if args.quick else 3
                # Warm the page cache (and .pyc files) so the first tool is not
                # charged for the cold import.
                subprocess.run([py, "-c", "import openai, langgraph.graph, langchain_openai"], capture_output=True)
                log(f"W6 python-heavy: {args.py_replicas} x import openai+langgraph+langchain_openai ({py}), {w6runs} runs")
                for i in range(w6runs):
                    for t in tools:
                        record("W6", t.name, w6_python(t, base, label("W6", t.name, i), args.py_replicas, py))
                        if t.name == "agentsup":
                            record("W6", "agentsup-fork", w6_python(Agentsup(fork=True), base,
                                                                    label("W6f", t.name, i), args.py_replicas, py))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    elapsed = now() - started
    rows = [
        ("W1", f"W1 {args.fanout} running (s)", "ready_s", "agentsup"),
        ("W1", "W1 supervisor RSS (MB)", "rss_mb", "agentsup"),
        ("W1", "W1 supervisor PSS (MB)", "pss_mb", "agentsup"),
        ("W1", "W1 idle CPU per 10 s (ms)", "idle_cpu_ms", "agentsup"),
        ("W1", "W1 idle wake-ups/s", "idle_wakeups_per_s", "agentsup"),
        ("W2", f"W2 {4 * args.lines / 1e6:g}M lines (s)", "time_s", "agentsup"),
        ("W2", "W2 ... redaction on (s)", "time_s", "agentsup+redact"),
        ("W2", "W2 lines lost", "lost", "agentsup"),
        ("W2", "W2 lines corrupt", "corrupt", "agentsup"),
        ("W2", "W2 lines duplicated", "dup", "agentsup"),
        ("W2", "W2 supervisor CPU (s)", "cpu_s", "agentsup"),
        ("W3", "W3 restart median (ms)", "median_ms", "agentsup"),
        ("W3", "W3 restart p95 (ms)", "p95_ms", "agentsup"),
        ("W4", f"W4 restarts in {crash_secs:.0f} s", "restarts", "agentsup"),
        ("W4", "W4 gave up", "gave_up", "agentsup"),
        ("W4", "W4 supervisor CPU (s)", "cpu_s", "agentsup"),
        ("W4fast", f"W4 no-give-up restarts/{crash_secs:.0f} s", "restarts", "agentsup"),
        ("W4fast", "W4 no-give-up CPU (s)", "cpu_s", "agentsup"),
        ("W5", f"W5 stop {args.fanout} (s)", "stop_s", "agentsup"),
        ("W5", "W5 orphans", "orphans", "agentsup"),
        ("W6", f"W6 {args.py_replicas} python ready (s)", "ready_s", "agentsup"),
        ("W6", "W6 total PSS (MB)", "total_pss_mb", "agentsup"),
        ("W6", "W6 supervisor PSS (MB)", "supervisor_pss_mb", "agentsup"),
        ("W6", "W6 ... agentsup fork mode ready (s)", "ready_s", "agentsup-fork"),
        ("W6", "W6 ... fork mode total PSS (MB)", "total_pss_mb", "agentsup-fork"),
    ]
    rows = [r for r in rows if r[0] in res.data]
    table = render_table(res, names, rows)

    big = []
    if "W2big" in res.data:
        fl = res.med("W2big", "floor", "time_s")
        for v in ("agentsup", "agentsup+redact", "agentsup+json"):
            a = res.med("W2big", v, "time_s")
            lost = max([r.get("lost", 0) + r.get("corrupt", 0) + r.get("dup", 0) for r in res.data["W2big"].get(v, [])] or [0])
            big.append((v, a, ratio(fl, a), lost))

    # Targets (issue 7), as ratios from this run.
    targets = []

    def target(name, value, ok, note=""):
        targets.append({"target": name, "value": value, "met": ok, "note": note})

    a_w1, f_w1 = res.med("W1", "agentsup", "ready_s"), res.med("W1", "floor", "ready_s")
    if a_w1 and f_w1:
        target("W1 <= 1.5x floor", round(a_w1 / f_w1, 2), a_w1 / f_w1 <= 1.5)
    s_w1 = res.med("W1", "supervisord", "ready_s")
    if a_w1 and s_w1:
        target("W1 >= 8x faster than supervisord", round(s_w1 / a_w1, 2), s_w1 / a_w1 >= 8)
    rss = res.med("W1", "agentsup", "rss_mb")
    if rss is not None:
        target("agentsup RSS with 200 workers <= 5 MB", round(rss, 2), rss <= 5)
    for v, a, thr, lost in big:
        if v == "agentsup+redact":
            target(f"W2 redaction of {args.secrets} secrets >= 80% of floor throughput (2.5M lines)",
                   round(thr, 3) if thr else None, bool(thr and thr >= 0.8))
            target("W2 zero lines lost or corrupted (agentsup, every run)", lost, lost == 0)
    p95 = res.med("W3", "agentsup", "p95_ms")
    if p95 is not None:
        target("W3 p95 <= 5 ms", round(p95, 2), p95 <= 5)
    a_w5, f_w5 = res.med("W5", "agentsup", "stop_s"), res.med("W5", "floor", "stop_s")
    if a_w5 is not None and f_w5 is not None:
        orph = max([r.get("orphans", 0) for r in res.data["W5"].get("agentsup", [])] or [0])
        target("W5 <= floor + 0.1 s", round(a_w5 - f_w5, 3), a_w5 <= f_w5 + 0.1)
        target("W5 zero orphans", orph, orph == 0)
    idle = res.med("W1", "agentsup", "idle_cpu_ms")
    if idle is not None:
        wk = res.med("W1", "agentsup", "idle_wakeups_per_s")
        target("idle CPU ~ 0 (<= 1 wake-up/s beyond a 1 s timer)", {"cpu_ms_per_10s": round(idle, 2),
               "wakeups_per_s": round(wk, 2) if wk is not None else None}, idle <= 10 and (wk or 0) <= 2)

    print()
    print(f"agentsup benchmark ({'quick' if args.quick else 'full'}; {runs} runs, medians; "
          f"{os.cpu_count()} cores; {elapsed:.0f} s)")
    print()
    print(table)
    if big:
        print()
        print(f"W2 agentsup vs floor, 4 x {args.big_lines} = {4 * args.big_lines / 1e6:g}M lines:")
        fl = res.med("W2big", "floor", "time_s")
        print(f"  floor            {fmt(fl)} s  ({fmt(4 * args.big_lines / fl / 1e6) if fl else '-'} M lines/s)")
        for v, a, thr, lost in big:
            print(f"  {v:16} {fmt(a)} s  ({fmt(4 * args.big_lines / a / 1e6) if a else '-'} M lines/s) "
                  f"= {fmt(thr and thr * 100, 1)}% of floor throughput, worst run lost/corrupt/dup {lost}")
    if targets:
        print()
        print("targets (issue 7):")
        for t in targets:
            print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['value']}")
    summary = {
        "meta": {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": "quick" if args.quick else "full",
            "runs": runs, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": sys.version.split()[0], "elapsed_s": round(elapsed, 1),
            "args": vars(args),
            "versions": {t.name: t.version() for t in tools},
            "agentsup_bin": AGENTSUP,
            "git": git_at_start,
            "agentsup_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(os.stat(AGENTSUP).st_mtime)) if os.path.exists(AGENTSUP) else None,
            "load_before": read("/proc/loadavg"),
        },
        "results": res.summary(),
        "table": table,
        "targets": targets,
    }
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    print(f"\nmachine-readable: {args.json}")


if __name__ == "__main__":
    main()
