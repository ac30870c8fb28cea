"""The line protocol every soak worker speaks (scripts/soak checks it).

    H <token> <kind> KEY=<fingerprint> ...   first line of a run: which values it got
    S <token> <seq> <payload>                seq 0, 1, 2, ... ; payload from payload()
    E <token> <last seq>                     a run that ends on its own says so

The token is random per run, so a line can be tied to exactly one process run. A
payload is a pure function of the sequence number (and of the run's key values for
the lines that print one), so the checker can tell a mangled line from a good one.
Every line is written with os.write straight to fd 1: what a process has written is
in the pipe even if it is SIGKILLed a moment later.
"""

import hashlib
import os

KEYS = ("SOAK_DIR_TOKEN", "SOAK_ENV_API_KEY", "SOAK_CMD_SECRET")
FILL = "abcdefghijklmnopqrstuvwxyz0123456789" * 4
LONG_EVERY = 1500
LONG_LEN = 100_000


def fingerprint(value):
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def payload(seq, key_names, values):
    """What line `seq` carries. `values` maps key name -> value (None in the checker,
    which expects the redacted form instead)."""
    if key_names and seq % 37 == 5:
        name = key_names[(seq // 37) % len(key_names)]
        if values is None:
            return "k=[redacted:%s]" % name
        return "k=" + values[name]
    if seq % LONG_EVERY == LONG_EVERY - 1:
        unit = "L%x." % seq
        return (unit * (LONG_LEN // len(unit) + 1))[:LONG_LEN]
    return "p%x-%s" % (seq, FILL[: (seq * 7) % 120])


class Emitter:
    def __init__(self, kind):
        self.token = os.urandom(6).hex()
        self.seq = 0
        self.names = [k for k in KEYS if k in os.environ]
        self.values = {k: os.environ[k] for k in self.names}
        fps = " ".join("%s=%s" % (k, fingerprint(v)) for k, v in self.values.items())
        self.write("H %s %s %s\n" % (self.token, kind, fps))

    @staticmethod
    def write(text):
        data = text.encode()
        while data:
            n = os.write(1, data)
            data = data[n:]

    def lines(self, n):
        out = []
        for _ in range(n):
            out.append("S %s %d %s\n" % (self.token, self.seq, payload(self.seq, self.names, self.values)))
            self.seq += 1
        self.write("".join(out))

    def end(self):
        self.write("E %s %d\n" % (self.token, self.seq - 1))
