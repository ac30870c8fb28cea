"""Prints bursts of sequenced lines until SIGTERM, then says where it ended."""
import signal
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from soaklib import Emitter  # noqa: E402

stop = False


def on_term(_sig, _frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
kind = sys.argv[1] if len(sys.argv) > 1 else "flood"
rate = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
e = Emitter(kind)
batch = max(1, rate // 20)
while not stop:
    e.lines(batch)
    time.sleep(0.05)
e.end()
