"""Prints a few lines, then exits 1; `auth` ends like an SDK rejecting its key."""
import random
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from soaklib import Emitter  # noqa: E402

kind = sys.argv[1]
e = Emitter(kind)
for _ in range(random.randint(1, 40)):
    e.lines(random.randint(1, 20))
    time.sleep(random.uniform(0.01, 0.1))
e.end()
if kind == "auth":
    sys.stderr.write("openai.AuthenticationError: Error code: 401 - {'error': {'code': 'invalid_api_key'}}\n")
    sys.stderr.flush()
sys.exit(1)
