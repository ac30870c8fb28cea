"""The Celery side: a failed task whose provider rejected the key stops the worker
with the auth status, so agentsup re-reads the secrets and restarts it.

Why not ``isinstance(exception, openai.AuthenticationError)`` in ``task_failure``:
the SDKs' exception classes cannot be pickled (their constructors need
``response=`` and ``body=``), so Celery hands the signal a stand-in exception of
another class. The stand-in keeps the original type in ``einfo.type``, which is
what this hook checks, by class name, like the rest of this package.

Why not ``os._exit(77)`` in the hook: with ``--pool=solo`` the task runs inside the
consumer's event loop, and the message's acknowledgement is still queued on that
loop when the hook runs; exiting there leaves the task unacknowledged and it is
delivered again after the broker's visibility timeout. Instead the hook asks the
worker's main process for a *warm* shutdown with exit status 77 (Celery's own
``worker.state.should_stop``, the mechanism its SIGTERM handler uses), so the
current task finishes its bookkeeping and the worker exits through its normal
path. A prefork pool child cannot set its parent's state: it sends the main process
a real-time signal (``SIGRTMIN+3`` by default) whose handler this hook installed
at ``worker_init``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

from ._auth import is_auth_error, is_auth_type
from ._exit import _exit_code, _flush, exit_now

__all__ = ["exit_on_auth_error"]


def _default_signal() -> int:
    return int(signal.SIGRTMIN) + 3


def exit_on_auth_error(app: Any = None, code: Optional[int] = None, signum: Optional[int] = None) -> None:
    """Install the hook. Call it once where the Celery app is created::

        app = Celery("proj")
        agentsup.celery.exit_on_auth_error(app)

    ``app`` is accepted for clarity and future use; Celery's signals are global.
    """
    from celery import signals  # imported here: the package has no dependencies
    from celery.worker import state

    status = _exit_code(code)
    stop_signal = signum if signum is not None else _default_signal()
    main_pid: list = [None]

    def request_warm_shutdown(*_: Any) -> None:
        # Read by the consumer loop, which raises WorkerShutdown(status): the exit
        # status of the whole worker.
        state.should_stop = status

    def on_worker_init(**_: Any) -> None:
        main_pid[0] = os.getpid()
        signal.signal(stop_signal, request_warm_shutdown)

    def on_task_failure(
        sender: Any = None,
        task_id: Optional[str] = None,
        exception: Optional[BaseException] = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if not (is_auth_type(getattr(einfo, "type", None)) or is_auth_error(exception)):
            return
        name = getattr(sender, "name", "?")
        print(
            "agentsup: task %s (%s) failed because the provider rejected the credential; "
            "stopping this worker with status %d so the supervisor re-reads the secrets"
            % (name, task_id, status),
            file=sys.stderr,
        )
        _flush()
        if main_pid[0] is None:
            # Not inside a worker started by `celery worker` (a test calling the
            # task eagerly, say): nothing to shut down gracefully.
            if exception is not None:
                exit_now(exception, status, print_traceback=False)
            os._exit(status)
        if os.getpid() == main_pid[0]:
            request_warm_shutdown()
        else:
            os.kill(main_pid[0], stop_signal)

    signals.worker_init.connect(on_worker_init, weak=False)
    signals.task_failure.connect(on_task_failure, weak=False)
