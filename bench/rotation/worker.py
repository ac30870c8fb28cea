"""One replica of the rotation benchmark (bench/rotation/run.py).

Calls the fake provider every INTERVAL seconds with the real `openai` SDK and
reports on stdout, one line per event, wall-clock stamped:

  START <replica> <t>            the process started
  NEWKEY <replica> <t> <last4>   first successful call with a key ending in <last4>
  AUTH401 <replica> <t>          a call was rejected (401)
  LOST <replica> <t>             a call was given up (the process exits on it, or
                                 no new key came within 30 s)

How it takes a rotated key depends on BENCH_MODE, the agentsup on_rotation mode:
restart: the key from its environment; a 401 exits 77 (agentsup re-reads and
restarts it). file: the key is a callable over agentsup.key(); a 401 waits for
the key file to change and retries the call. signal: SIGHUP makes it re-read the
key (agentsup.key()); a 401 waits for that and retries.
"""

import os
import signal
import sys
import time

import openai

import agentsup

MODE = os.environ.get("BENCH_MODE", "restart")
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "0.1"))
REPLICA = os.environ.get("AGENTSUP_REPLICA", "?")
BASE = os.environ["OPENAI_BASE_URL"]


def say(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


say("START", REPLICA, "%.6f" % time.time())

current = {"key": agentsup.key("OPENAI_API_KEY")}
if MODE == "signal":
    def reread(signum, frame):
        current["key"] = agentsup.key("OPENAI_API_KEY")
    signal.signal(signal.SIGHUP, reread)
    get_key = lambda: current["key"]
elif MODE == "file":
    get_key = lambda: agentsup.key("OPENAI_API_KEY")
else:
    get_key = lambda: os.environ["OPENAI_API_KEY"]

client = openai.OpenAI(api_key=get_key, base_url=BASE, max_retries=0, timeout=10)
last_ok = None
while True:
    deadline = time.monotonic() + 30
    while True:
        used = get_key()
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
            )
            if used[-4:] != last_ok:
                last_ok = used[-4:]
                say("NEWKEY", REPLICA, "%.6f" % time.time(), last_ok)
            break
        except openai.AuthenticationError:
            say("AUTH401", REPLICA, "%.6f" % time.time())
            if MODE == "restart":
                say("LOST", REPLICA, "%.6f" % time.time())
                sys.stdout.flush()
                os._exit(77)
            while get_key() == used and time.monotonic() < deadline:
                time.sleep(0.01)
            if time.monotonic() >= deadline:
                say("LOST", REPLICA, "%.6f" % time.time())
                break
    time.sleep(INTERVAL)
