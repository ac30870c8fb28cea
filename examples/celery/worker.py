"""Option B's worker: one Celery process (`--pool=solo`) per agentsup replica.

Runs `celery -A tasks worker --pool=solo -n celery-N@%h` in place of this process
(exec: same pid, so agentsup's signals and the worker's exit status are Celery's
own), with N the replica number agentsup gives (AGENTSUP_REPLICA), so each replica
has its own node name. A Python entry point rather than `sh -c "exec celery …"`:
agentsup checks before starting anything that `python3` is on the worker's PATH,
which a shell wrapper would hide. (Not `app.worker_main()`: in Celery 5.7 it drops
the worker's exit status, and the 77 of an auth failure is what tells agentsup to
re-read the key.)
"""

import os
import sys

if __name__ == "__main__":
    replica = os.environ.get("AGENTSUP_REPLICA", "0")
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo",
            "--loglevel=INFO", "--hostname=celery-%s@%%h" % replica]
    os.execv(sys.executable, argv)
