"""Worker-side helpers for processes run by agentsup (no dependencies).

- ``exit_on_auth_error()``: a credential rejected by OpenAI, Anthropic,
  LangChain/LangGraph or AutoGen clients ends the process with status 77, so
  agentsup re-reads the secrets and restarts it (``agentsup.celery`` for Celery).
- ``key(name)``: the current value of a declared key (rotation without restart with
  ``on_rotation = "file"``).
- ``worker()``: this process's worker name, replica index and replica count.
"""

from ._auth import AUTH_EXIT_CODE, is_auth_error
from ._exit import exit_on_auth_error, install_asyncio_handler
from ._worker import KeyNotAvailable, Worker, key, worker

__all__ = [
    "AUTH_EXIT_CODE",
    "KeyNotAvailable",
    "Worker",
    "exit_on_auth_error",
    "install_asyncio_handler",
    "is_auth_error",
    "key",
    "worker",
]
