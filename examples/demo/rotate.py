#!/usr/bin/env python3
"""Rotates the demo key the way a real rotation happens: the provider revokes the
old key first (workers now get 401 and agentsup re-reads its sources), then, a few
seconds later, the new key lands in the secret directory, where agentsup finds it
on its next re-read and restarts the workers with it."""

import os
import secrets
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
new_key = "sk-demo-" + secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
delay = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


write_atomically(os.path.join(here, "provider", "accepted_key"), new_key)
print("rotate: the provider now accepts only the new key (the old one is revoked)")
time.sleep(delay)
write_atomically(os.path.join(here, "secrets", "OPENAI_API_KEY"), new_key)
print("rotate: new key written to examples/demo/secrets/OPENAI_API_KEY")
