#!/usr/bin/env python3
"""Rotation benchmark (issue 14): N replicas calling the fake provider in a loop,
the key rotated (and the old one revoked at the same moment), per on_rotation mode.

For each mode it reports:
  - time until every replica has made a successful call with the new key;
  - 401 answers, and calls lost (given up: restart mode exits on a 401, the
    others retry once their key changed);
  - restarts after the rotation, and the most any one replica was restarted;
  - the fleet's start time (every replica up), for the restart-mode target
    "completes within replicas x start time".

Standard library only; the workers need the `openai` SDK (target/test-venv has it:
`bash tests/setup-deps.sh`). Usage:

  python3 bench/rotation/run.py [--replicas 50] [--modes restart,file,signal]
                                [--python PATH] [--json PATH] [--no-wait-quiet]

AGENTSUP_BIN picks the binary (default target/build-dist/agentsup, else
target/release/agentsup; never a debug build, whose timings mean nothing).
By default it waits until the machine is quiet (under 20 % CPU busy, up to 90 s)
before each mode, as bench/run.py does.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OLD = "sk-proj-OLDoldOLDoldOLDoldOLDoldOLDoldOLDold0001"
NEW = "sk-proj-NEWnewNEWnewNEWnewNEWnewNEWnewNEWnew0002"


def agentsup_bin():
    env = os.environ.get("AGENTSUP_BIN")
    if env:
        return env
    for p in ("target/build-dist/agentsup", "target/release/agentsup"):
        full = os.path.join(ROOT, p)
        if os.access(full, os.X_OK):
            return full
    sys.exit("no optimised agentsup binary: scripts/build-dist.sh or "
             "cargo build --release, or set AGENTSUP_BIN")


def cpu_busy(seconds=1.0):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t1, i1 = snap()
    time.sleep(seconds)
    t2, i2 = snap()
    return 1.0 - (i2 - i1) / max(1, t2 - t1)


def wait_quiet(limit=0.2, patience=90):
    end = time.time() + patience
    busy = cpu_busy()
    while busy > limit and time.time() < end:
        busy = cpu_busy()
    return busy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Lines:
    """Collects a process's stdout lines with their arrival time."""

    def __init__(self, stream):
        self.lines = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.t.start()

    def _read(self, stream):
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)

    def snapshot(self):
        with self.lock:
            return list(self.lines)


def events(lines, kind):
    """(replica, time, rest) of every worker line `... | KIND replica t rest`."""
    out = []
    for line in lines:
        body = line.split("| ", 1)[-1]
        parts = body.split()
        if len(parts) >= 3 and parts[0] == kind:
            out.append((parts[1], float(parts[2]), parts[3:]))
    return out


def run_mode(mode, args, python):
    work = tempfile.mkdtemp(prefix="agentsup-rotbench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        os.makedirs(os.path.join(work, "secrets"))
        os.makedirs(os.path.join(work, "provider"))
        write_atomic(os.path.join(work, "secrets", "OPENAI_API_KEY"), OLD + "\n")
        accepted = os.path.join(work, "provider", "accepted_key")
        write_atomic(accepted, OLD)
        port = free_port()
        provider = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples/demo/fake_provider.py")],
            env={"PATH": os.environ.get("PATH", ""), "FAKE_PROVIDER_KEY_FILE": accepted,
                 "FAKE_PROVIDER_PORT": str(port)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        config = os.path.join(work, "supervisor.toml")
        with open(config, "w") as f:
            f.write(
                '[env]\ninherit = ["PATH", "HOME", "LANG"]\n'
                'vars = {{ OPENAI_BASE_URL = "http://127.0.0.1:{port}/v1", PYTHONPATH = "{pp}", '
                'BENCH_MODE = "{mode}", BENCH_INTERVAL = "{iv}" }}\n\n'
                '[[source]]\ntype = "dir"\npath = "secrets"\n\n'
                '[keys.OPENAI_API_KEY]\nprovider = "openai"\n\n'
                '[[worker]]\nname = "caller"\nreplicas = {n}\n'
                'command = ["{py}", "{worker}"]\nkeys = ["OPENAI_API_KEY"]\n'
                'on_rotation = "{mode}"\n'
                'backoff = {{ initial = "0s", max = "1s" }}\n'.format(
                    port=port, pp=os.path.join(ROOT, "python"), mode=mode, iv=args.interval,
                    n=args.replicas, py=python, worker=os.path.join(ROOT, "bench/rotation/worker.py"),
                )
            )
        busy = None if args.no_wait_quiet else wait_quiet()
        t_launch = time.time()
        sup = subprocess.Popen(
            [agentsup_bin(), "run", "-c", config, "--no-color"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=work,
        )
        out = Lines(sup.stdout)

        def until(pred, timeout):
            end = time.time() + timeout
            while time.time() < end:
                if pred(out.snapshot()):
                    return True
                time.sleep(0.05)
            return False

        ok = until(lambda ls: len({r for r, _, _ in events(ls, "NEWKEY")}) >= args.replicas, args.timeout)
        if not ok:
            raise SystemExit("%s: the fleet did not come up:\n%s" % (mode, "\n".join(out.snapshot()[-40:])))
        starts = events(out.snapshot(), "START")
        start_time = max(t for _, t, _ in starts) - t_launch
        time.sleep(1.0)  # a second of steady calls before the rotation
        t0 = time.time()
        write_atomic(accepted, NEW)
        write_atomic(os.path.join(work, "secrets", "OPENAI_API_KEY"), NEW + "\n")

        def all_new(ls):
            return len({r for r, t, rest in events(ls, "NEWKEY") if t >= t0 and rest == [NEW[-4:]]}) >= args.replicas

        done = until(all_new, args.timeout)
        lines = out.snapshot()
        new_ok = [t for _, t, rest in events(lines, "NEWKEY") if t >= t0 and rest == [NEW[-4:]]]
        restarts = {}
        for r, t, _ in events(lines, "START"):
            if t >= t0:
                restarts[r] = restarts.get(r, 0) + 1
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sup.kill()
        provider.terminate()
        provider.wait()
        return {
            "mode": mode,
            "replicas": args.replicas,
            "complete": done,
            "fleet_start_s": round(start_time, 3),
            "all_new_key_s": round(max(new_ok) - t0, 3) if done else None,
            "auth_401": sum(1 for _, t, _ in events(lines, "AUTH401") if t >= t0),
            "lost_calls": sum(1 for _, t, _ in events(lines, "LOST") if t >= t0),
            "restarts": sum(restarts.values()),
            "max_restarts_per_replica": max(restarts.values()) if restarts else 0,
            "busy_before": busy,
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=50)
    ap.add_argument("--modes", default="restart,file,signal")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--python", default=os.path.join(ROOT, "target/test-venv/bin/python"))
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-wait-quiet", action="store_true")
    args = ap.parse_args()
    if not os.access(args.python, os.X_OK):
        sys.exit("%s not found: run `bash tests/setup-deps.sh` (it makes target/test-venv with openai)" % args.python)
    results = [run_mode(m.strip(), args, args.python) for m in args.modes.split(",") if m.strip()]
    head = "%-8s %8s %12s %14s %8s %6s %9s %12s" % (
        "mode", "replicas", "fleet start", "all on new key", "401s", "lost", "restarts", "max/replica")
    print(head)
    for r in results:
        print("%-8s %8d %11.2fs %14s %8d %6d %9d %12d" % (
            r["mode"], r["replicas"], r["fleet_start_s"],
            "%.2fs" % r["all_new_key_s"] if r["all_new_key_s"] is not None else "incomplete",
            r["auth_401"], r["lost_calls"], r["restarts"], r["max_restarts_per_replica"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
