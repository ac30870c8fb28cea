#!/usr/bin/env python3
"""Rotates the demo key the way a real rotation often happens: the provider revokes
the old key first (each worker's next call gets 401; agentsup re-reads its sources,
finds the same key, and waits), then, a few seconds later, the new key lands in
the secret directory, which agentsup watches: it restarts the waiting workers with
the new key at once.

Usage: python3 examples/demo/rotate.py [DELAY_SECONDS]   (default 3: longer than
the workers' 2 s between calls, so every replica fails once, and shorter than the
demo's 5 s wait after a rejected key, so none fails twice)."""

import os
import secrets
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
new_key = "sk-demo-" + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
delay = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
secret_file = os.path.join("examples", "demo", "secrets", "OPENAI_API_KEY")


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def say(line):
    print("rotate: " + line, flush=True)


write_atomically(os.path.join(here, "provider", "accepted_key"), new_key)
say("1. the provider now accepts only a new key; the old one is revoked")
say("   the workers' next calls fail with 401; the new key reaches them in %g s" % delay)
time.sleep(delay)
write_atomically(os.path.join(here, "secrets", "OPENAI_API_KEY"), new_key)
say("2. the new key is in %s; agentsup restarts the workers with it" % secret_file)
say("   (undo with: git checkout examples/demo)")
