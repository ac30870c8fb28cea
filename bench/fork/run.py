#!/usr/bin/env python3
"""Fork mode vs spawn mode vs supervisord vs Celery prefork: 8 LangGraph-style replicas.

    bench/fork/run.py [--replicas 8] [--rounds 3] [--kills 3] [--client] [--python PY]
                      [--supervisord BIN] [--redis-server BIN] [--only SETUP]...

Run by hand, not in CI. Each replica imports openai, langgraph and langchain_openai
(issue 6's workload), then announces itself (its pid on a FIFO, and a "ready" line
on stdout) and sleeps. With --client each replica also builds a ChatOpenAI client
from its OPENAI_API_KEY before it announces itself: that is ~75 ms of the replica's
own work (lazy imports of httpx's transport and an SSL context) that no
supervisor can take off a restart. Three setups run the same module, and a
fourth runs what Celery users run today:

  fork         agentsup, start = "fork", preload = [the three imports]
  spawn        agentsup, command = [python, "-m", module]
  supervisord  numprocs = 8, the same command
  prefork      python -m celery -A bench_tasks worker --pool prefork --concurrency 8
               --loglevel warning --without-gossip --without-mingle --without-heartbeat,
               with a Redis broker. bench_tasks imports the same three packages at
               import time (so the Celery main process holds them before it forks its
               pool) and defines one trivial task; each pool child announces itself from
               Celery's worker_process_init signal (building its ChatOpenAI client there
               first with --client). One redis-server (--redis-server, else
               /usr/bin/redis-server, Debian's `redis-server` package) serves every
               round on a unix socket in the scratch directory and is stopped at the
               end; without it prefork is skipped, with a message.

For each, in every round:

  all ready    launch of the supervisor -> the last replica announced itself
  replace      SIGKILL of one replica -> its replacement announced itself
               (median of 3 kills; each is printed: billiard notices a lost prefork
               child through its sentinel pipe or else its 5 s maintain_pool timer)
  PSS          sum of Pss (/proc/<pid>/smaps_rollup) over the workers (template +
               replicas in fork mode), and of the supervisor itself, 1 s after ready.
               For prefork the supervisor is the Celery main process: it is the
               template (it imported everything before forking) and the supervisor in
               one, so its workers column holds the pool children only and prefork is
               compared with fork on the total (the whole process tree).

Every setup is stopped with SIGTERM (Celery's warm shutdown), then SIGKILL to its
session after 30 s. It prints medians over the rounds, then the ratios fork/spawn,
fork/supervisord and fork/prefork.

Interpreter: --python, else bench/.venv (bench/setup.sh) or target/test-venv
(tests/setup-deps.sh), whichever has the three packages. supervisord: --supervisord,
else the one beside that interpreter, else bench/fork/.venv is created with
`pip install supervisor`. agentsup: $AGENTSUP_BIN, else target/build-dist/agentsup (`scripts/build-dist.sh`).
Only the standard library is used.
"""

import argparse
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMPORTS = ["openai", "langgraph.graph", "langchain_openai"]
# A well-formed fake key: agentsup's checks run before anything starts.
FAKE_KEY = "sk-bench-" + "Zq8xN3vR7tY2wK5mP9aB4cD6eF1gH0jL3nQ7sT9uVw"
KILLS = 3
SETUPS = ["fork", "spawn", "supervisord", "prefork"]
CELERY_IMPORTS = IMPORTS + ["celery"]

AGENT = '''"""A LangGraph + OpenAI agent process, for the fork benchmark."""
import os
import signal
import sys

import openai  # noqa: F401
import langgraph.graph  # noqa: F401
import langchain_openai  # noqa: F401

if os.environ.get("BENCH_CLIENT") == "1":
    from langchain_openai import ChatOpenAI

    # Built at run time, from this replica's own environment (fork-mode safe).
    llm = ChatOpenAI(model="gpt-4o-mini", api_key=os.environ["OPENAI_API_KEY"])

fd = os.open(os.environ["BENCH_FIFO"], os.O_WRONLY | os.O_NONBLOCK)
os.write(fd, b"%d\\n" % os.getpid())
os.close(fd)
print("ready", os.getpid(), flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
'''

TASKS = '''"""A Celery tasks module with the agent's imports, for the fork benchmark."""
import os

import openai  # noqa: F401
import langgraph.graph  # noqa: F401
import langchain_openai  # noqa: F401
from celery import Celery
from celery.signals import worker_process_init

app = Celery("bench_tasks", broker=os.environ["BENCH_BROKER"])
app.conf.broker_connection_retry_on_startup = True


@app.task
def noop():
    return None


@worker_process_init.connect
def announce(**_):
    # Runs in each pool child right after billiard forked it.
    if os.environ.get("BENCH_CLIENT") == "1":
        from langchain_openai import ChatOpenAI

        global llm
        llm = ChatOpenAI(model="gpt-4o-mini", api_key=os.environ["OPENAI_API_KEY"])
    fd = os.open(os.environ["BENCH_FIFO"], os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"%d\\n" % os.getpid())
    os.close(fd)
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def has_packages(python):
    if not python or not os.access(python, os.X_OK):
        return False
    code = "import " + ", ".join(IMPORTS)
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def find_python(explicit):
    candidates = [explicit] if explicit else [
        os.path.join(ROOT, "bench", ".venv", "bin", "python"),
        os.path.join(ROOT, "target", "test-venv", "bin", "python"),
    ]
    for py in candidates:
        if has_packages(py):
            return py
    if explicit:
        sys.exit("%s cannot import %s" % (explicit, ", ".join(IMPORTS)))
    log("no interpreter with %s yet: running tests/setup-deps.sh" % ", ".join(IMPORTS))
    subprocess.run(["bash", os.path.join(ROOT, "tests", "setup-deps.sh")], check=True)
    py = candidates[-1]
    if not has_packages(py):
        sys.exit("target/test-venv lacks %s (examples/langgraph/requirements.txt)" % IMPORTS)
    return py


def find_supervisord(explicit, python):
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(python), "supervisord")
    if os.access(beside, os.X_OK):
        return beside
    venv = os.path.join(HERE, ".venv")
    binary = os.path.join(venv, "bin", "supervisord")
    if not os.access(binary, os.X_OK):
        log("creating %s with supervisor" % venv)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [os.path.join(venv, "bin", "pip"), "install", "--quiet", "supervisor"], check=True
        )
    return binary


# ---------------------------------------------------------------------------
# /proc


def children_of(pid):
    """Every descendant of pid (walks PPid links)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------
# setups


class Setup:
    """One supervisor running `replicas` copies of the agent module."""

    def __init__(self, name, workdir, argv, fifo, extra_env=None):
        self.name, self.workdir, self.argv, self.fifo = name, workdir, argv, fifo
        self.extra_env = extra_env or {}
        self.proc = None

    def start(self, env):
        out = open(os.path.join(self.workdir, self.name + ".out"), "wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, env=dict(env, **self.extra_env), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Anything left in its session (there should be nothing) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc = None


def agentsup_setup(name, workdir, fork, python, replicas, fifo, client):
    if fork:
        start = 'start = "fork"\npython = "%s"\npreload = %s\nmodule = "bench_agent"\n' % (
            python, "[" + ", ".join('"%s"' % m for m in IMPORTS) + "]",
        )
    else:
        start = 'command = ["%s", "-m", "bench_agent"]\n' % python
    config = os.path.join(workdir, name + ".toml")
    with open(config, "w") as f:
        f.write(
            '[supervisor]\nshutdown_timeout = "10s"\n\n'
            '[[source]]\ntype = "env"\n\n'
            '[[worker]]\nname = "bench"\n%s'
            'replicas = %d\nkeys = ["OPENAI_API_KEY"]\n'
            'vars = { BENCH_FIFO = "%s", BENCH_CLIENT = "%d" }\nrestart = "always"\n'
            'backoff = { initial = "10ms", max = "1s", jitter = 0.0 }\n'
            "max_restarts = 1000\n" % (start, replicas, fifo, client)
        )
    binary = os.environ.get("AGENTSUP_BIN", os.path.join(ROOT, "target", "build-dist", "agentsup"))
    return Setup(name, workdir, [binary, "run", "-c", config, "--no-color"], fifo)


def supervisord_setup(workdir, supervisord, python, replicas, fifo, client):
    config = os.path.join(workdir, "supervisord.conf")
    with open(config, "w") as f:
        f.write(
            "[supervisord]\nnodaemon=true\nlogfile=%(d)s/supervisord.log\n"
            "pidfile=%(d)s/supervisord.pid\nchildlogdir=%(d)s\n\n"
            "[program:bench]\ncommand=%(py)s -m bench_agent\ndirectory=%(d)s\n"
            "numprocs=%(n)d\nprocess_name=%%(program_name)s_%%(process_num)d\n"
            "autorestart=true\nstartsecs=0\nstartretries=1000\n"
            "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
            "stdout_logfile=%(d)s/bench_%%(process_num)d.log\n"
            'environment=OPENAI_API_KEY="%(key)s",BENCH_FIFO="%(fifo)s",BENCH_CLIENT="%(client)d",'
            'PYTHONUNBUFFERED="1"\n'
            % {"d": workdir, "py": python, "n": replicas, "key": FAKE_KEY, "fifo": fifo,
               "client": client}
        )
    return Setup("supervisord", workdir, [supervisord, "-n", "-c", config], fifo)


def prefork_setup(workdir, python, replicas, fifo, client, broker):
    argv = [
        python, "-m", "celery", "-A", "bench_tasks", "worker", "--pool", "prefork",
        "--concurrency", str(replicas), "--loglevel", "warning",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    extra = {"BENCH_FIFO": fifo, "BENCH_CLIENT": str(int(client)), "BENCH_BROKER": broker}
    return Setup("prefork", workdir, argv, fifo, extra)


class Redis:
    """One redis-server on a unix socket in the scratch directory, no persistence."""

    def __init__(self, binary, workdir):
        self.sock = os.path.join(workdir, "redis.sock")
        self.log = open(os.path.join(workdir, "redis.out"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", workdir],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = "redis+socket://" + self.sock
        deadline = time.monotonic() + 30
        while not self.pong():
            if self.proc.poll() is not None:
                self.log.close()
                with open(self.log.name, "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                sys.exit("redis-server exited with %s:\n%s" % (self.proc.returncode, tail))
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("redis-server did not answer PING on %s within 30 s" % self.sock)
            time.sleep(0.05)

    def pong(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(self.sock)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def find_redis(explicit):
    if explicit:
        if not os.access(explicit, os.X_OK):
            sys.exit("%s is not an executable redis-server" % explicit)
        return explicit
    for binary in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if binary and os.access(binary, os.X_OK):
            return binary
    return None


# ---------------------------------------------------------------------------
# measuring


class Announcements:
    """Pids written to the FIFO, one per line, with their arrival time."""

    def __init__(self, path):
        # O_RDWR: the FIFO never reports end-of-file between writers.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.buf = b""

    def wait(self, count, timeout):
        """Returns [(pid, time)] for the next `count` announcements."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%d of %d replicas announced themselves" % (len(got), count))
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            self.buf += os.read(self.fd, 65536)
            *lines, self.buf = self.buf.split(b"\n")
            now = time.monotonic()
            got.extend((int(line), now) for line in lines if line.strip())
        return got

    def close(self):
        os.close(self.fd)


def measure(setup, replicas, env, kills=KILLS):
    fifo = Announcements(setup.fifo)
    try:
        t0 = time.monotonic()
        setup.start(env)
        ready = fifo.wait(replicas, 300)
        all_ready = ready[-1][1] - t0
        time.sleep(1)
        workers = children_of(setup.proc.pid)
        workers_pss = sum(pss_kb(p) for p in workers)
        supervisor_pss = pss_kb(setup.proc.pid)
        live = [pid for pid, _ in ready]
        replace = []
        for i in range(kills):
            victim = live[i]
            t = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            (new, when), = fifo.wait(1, 120)
            replace.append(when - t)
            live.append(new)
            time.sleep(0.5)
        return {
            "all_ready": all_ready,
            "replace": statistics.median(replace),
            "kills": replace,
            "workers_pss": workers_pss,
            "supervisor_pss": supervisor_pss,
            "processes": len(workers),
        }
    finally:
        setup.stop()
        fifo.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--kills", type=int, default=KILLS,
        help="SIGKILLs per round for the replacement time (median reported; Celery's "
        "prefork pool notices some losses only on its 5 s maintenance timer)",
    )
    ap.add_argument("--python")
    ap.add_argument("--supervisord")
    ap.add_argument("--redis-server", help="the broker for prefork (default /usr/bin/redis-server)")
    ap.add_argument("--only", choices=SETUPS, action="append")
    ap.add_argument(
        "--client", action="store_true",
        help="each replica also builds a ChatOpenAI client before announcing itself",
    )
    args = ap.parse_args()

    python = find_python(args.python)
    names = list(dict.fromkeys(args.only or SETUPS))
    redis = find_redis(args.redis_server) if "prefork" in names else None
    if "prefork" in names:
        celery_ok = subprocess.run(
            [python, "-c", "import celery, redis"], capture_output=True).returncode == 0
        if not redis:
            log("redis-server not found (apt-get install redis-server, or --redis-server): "
                "skipping prefork")
            names.remove("prefork")
        elif not celery_ok:
            log("%s cannot import celery and redis (pip install 'celery[redis]'): "
                "skipping prefork" % python)
            names.remove("prefork")
    if not names:
        sys.exit("nothing to run")
    supervisord = find_supervisord(args.supervisord, python) if "supervisord" in names else None
    agentsup = os.environ.get("AGENTSUP_BIN", os.path.join(ROOT, "target", "build-dist", "agentsup"))
    if ("fork" in names or "spawn" in names) and not os.access(agentsup, os.X_OK):
        sys.exit("%s missing: scripts/build-dist.sh (or set AGENTSUP_BIN)" % agentsup)
    log("python %s\nagentsup %s\nsupervisord %s\nredis-server %s"
        % (python, agentsup, supervisord, redis if "prefork" in names else None))

    workdir = tempfile.mkdtemp(prefix="agentsup-fork-bench-")
    with open(os.path.join(workdir, "bench_agent.py"), "w") as f:
        f.write(AGENT)
    with open(os.path.join(workdir, "bench_tasks.py"), "w") as f:
        f.write(TASKS)
    fifo = os.path.join(workdir, "ready.fifo")
    os.mkfifo(fifo)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", workdir),
        "OPENAI_API_KEY": FAKE_KEY,
    }
    setups = {
        "fork": lambda: agentsup_setup(
            "fork", workdir, True, python, args.replicas, fifo, args.client),
        "spawn": lambda: agentsup_setup(
            "spawn", workdir, False, python, args.replicas, fifo, args.client),
        "supervisord": lambda: supervisord_setup(
            workdir, supervisord, python, args.replicas, fifo, args.client),
    }
    # Warm the page cache and .pyc files so the first setup measured is not penalised.
    warm = CELERY_IMPORTS if "prefork" in names else IMPORTS
    subprocess.run([python, "-c", "import " + ", ".join(warm)], check=True)

    results = {n: [] for n in names}
    broker = None
    try:
        if "prefork" in names:
            broker = Redis(redis, workdir)
            setups["prefork"] = lambda: prefork_setup(
                workdir, python, args.replicas, fifo, args.client, broker.url)
        for r in range(args.rounds):
            for name in names:
                res = measure(setups[name](), args.replicas, env, args.kills)
                results[name].append(res)
                log(
                    "round %d %-11s all ready %6.2f s  replace %7.3f s  workers PSS %7.1f MiB"
                    "  supervisor PSS %5.1f MiB  (%d processes; replacements %s s)"
                    % (r + 1, name, res["all_ready"], res["replace"], res["workers_pss"] / 1024,
                       res["supervisor_pss"] / 1024, res["processes"],
                       ", ".join("%.3f" % k for k in res["kills"]))
                )
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    med = {
        n: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "kills"}
        for n, rs in results.items()
    }
    print("\n%d replicas importing %s; medians of %d rounds (%s)\n"
          % (args.replicas, ", ".join(IMPORTS), args.rounds, os.uname().machine))
    print("%-12s %12s %12s %18s %16s %14s"
          % ("", "all ready", "replace", "workers PSS", "supervisor PSS", "total PSS"))
    for n in names:
        m = med[n]
        print("%-12s %10.2f s %10.3f s %14.1f MiB %12.1f MiB %10.1f MiB"
              % (n, m["all_ready"], m["replace"], m["workers_pss"] / 1024,
                 m["supervisor_pss"] / 1024, (m["workers_pss"] + m["supervisor_pss"]) / 1024))
    if "prefork" in med:
        print("(prefork: supervisor = the Celery main process, which also holds the imports "
              "its pool children are forked from; workers = the pool children)")
    if "fork" in med:
        for other in ("spawn", "supervisord"):
            if other not in med:
                continue
            f, o = med["fork"], med[other]
            f_total = f["workers_pss"] + f["supervisor_pss"]
            o_total = o["workers_pss"] + o["supervisor_pss"]
            print("\nfork vs %s: all ready %.1fx faster, replacement %.1fx faster, "
                  "workers PSS %.0f%% lower, total PSS %.0f%% lower"
                  % (other, o["all_ready"] / f["all_ready"], o["replace"] / f["replace"],
                     100 * (1 - f["workers_pss"] / o["workers_pss"]), 100 * (1 - f_total / o_total)))
        if "prefork" in med:
            # The Celery main process is template and supervisor in one, so only the
            # whole trees compare fairly.
            f, o = med["fork"], med["prefork"]
            f_total = f["workers_pss"] + f["supervisor_pss"]
            o_total = o["workers_pss"] + o["supervisor_pss"]
            print("\nfork vs prefork: all ready %.1fx faster, replacement %.1fx faster, "
                  "total PSS %.0f%% lower (%.1f vs %.1f MiB, each whole process tree)"
                  % (o["all_ready"] / f["all_ready"], o["replace"] / f["replace"],
                     100 * (1 - f_total / o_total), f_total / 1024, o_total / 1024))


if __name__ == "__main__":
    main()
