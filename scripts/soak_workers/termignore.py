"""Ignores SIGTERM and keeps printing slowly: only SIGKILL ends it."""
import signal
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from soaklib import Emitter  # noqa: E402

signal.signal(signal.SIGTERM, signal.SIG_IGN)
e = Emitter(sys.argv[1] if len(sys.argv) > 1 else "termignore")
while True:
    e.lines(5)
    time.sleep(0.1)
