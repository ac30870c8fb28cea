"""What a worker can ask about itself: its identity and its current keys."""

from __future__ import annotations

import os
import threading
from typing import Dict, NamedTuple, Optional, Tuple


class Worker(NamedTuple):
    """This process's place in the fleet, from the variables agentsup sets."""

    name: str
    replica: int
    replicas: int


def worker() -> Optional[Worker]:
    """``Worker(name, replica, replicas)``, or ``None`` when not started by agentsup."""
    name = os.environ.get("AGENTSUP_WORKER")
    if not name:
        return None
    try:
        replica = int(os.environ.get("AGENTSUP_REPLICA", "0"))
        replicas = int(os.environ.get("AGENTSUP_REPLICAS", "1"))
    except ValueError:
        return None
    return Worker(name, replica, replicas)


class KeyNotAvailable(KeyError):
    """The worker asked for a key agentsup did not give it."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0]) if self.args else "key not available"


# (st_ino, st_mtime_ns, st_size) -> value, per key file path.
_cache: Dict[str, Tuple[Tuple[int, int, int], str]] = {}
_cache_lock = threading.Lock()


def key(name: str) -> str:
    """The current value of the declared key ``name``.

    With ``on_rotation = "file"`` agentsup keeps each declared key in
    ``$AGENTSUP_KEYS_DIR/NAME`` and replaces the file atomically when the key
    rotates; this reads it again only when the file changed, so it is cheap to call
    per request (pass ``lambda: agentsup.key("OPENAI_API_KEY")`` where an SDK takes a
    callable). Otherwise the value comes from the environment, which does not change
    while the process lives.
    """
    directory = os.environ.get("AGENTSUP_KEYS_DIR")
    if directory:
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            with _cache_lock:
                hit = _cache.get(path)
                if hit is not None and hit[0] == stamp:
                    return hit[1]
            with open(path, encoding="utf-8") as f:
                # The stamp of the file actually read: agentsup may have replaced
                # it between the stat above and this open.
                fst = os.fstat(f.fileno())
                stamp = (fst.st_ino, fst.st_mtime_ns, fst.st_size)
                value = f.read()
            with _cache_lock:
                _cache[path] = (stamp, value)
            return value
    value = os.environ.get(name)
    if value is None:
        raise KeyNotAvailable(
            "%s is not in this worker's environment%s: declare it in the worker's "
            "`keys` in supervisor.toml" % (
                name,
                " or in $AGENTSUP_KEYS_DIR" if directory else "",
            )
        )
    return value
