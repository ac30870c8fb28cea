"""The fork-mode worker (run as __main__ in a child of the template)."""
import signal
import sys
import time

from soaklib import Emitter

stop = False


def on_term(_sig, _frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
e = Emitter("fork")
while not stop:
    e.lines(20)
    time.sleep(0.05)
e.end()
