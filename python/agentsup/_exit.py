"""``exit_on_auth_error``: turn an uncaught credential rejection into exit status 77.

agentsup classifies a worker's exit from its status and the tail of its output. An
SDK's ``AuthenticationError`` traceback is already recognised, but only when the
process actually exits: a thread, an asyncio task or a task framework that swallows
the exception keeps a worker running on a rejected key. These hooks end the process
with the auth status instead, after printing the traceback and flushing output, so
agentsup re-reads the secrets and restarts the worker with the rotated key.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable, Optional, Type, TypeVar, overload

from ._auth import AUTH_EXIT_CODE, is_auth_error

F = TypeVar("F", bound=Callable[..., Any])

_installed_code: Optional[int] = None
_lock = threading.Lock()


def _exit_code(code: Optional[int]) -> int:
    if code is not None:
        return code
    raw = os.environ.get("AGENTSUP_AUTH_EXIT_CODE", "")
    return int(raw) if raw.isdigit() else AUTH_EXIT_CODE


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def exit_now(exc: BaseException, code: Optional[int] = None, *, print_traceback: bool = True) -> None:
    """Print ``exc``'s traceback (agentsup reads it), flush, and exit with the auth status.

    ``os._exit`` rather than ``sys.exit``: called from a thread, an excepthook or an
    event-loop callback, ``SystemExit`` would end only that thread or be swallowed.
    """
    status = _exit_code(code)
    if print_traceback:
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        except Exception:  # a broken stderr must not keep the process alive
            pass
    try:
        print(
            "agentsup: credential rejected (%s); exiting with status %d so the supervisor "
            "re-reads the secrets" % (type(exc).__name__, status),
            file=sys.stderr,
        )
    except Exception:
        pass
    _flush()
    os._exit(status)


def _install_hooks(code: Optional[int]) -> None:
    global _installed_code
    with _lock:
        if _installed_code is not None:
            _installed_code = _exit_code(code)
            return
        _installed_code = _exit_code(code)

        previous_sys = sys.excepthook

        def sys_hook(
            kind: Type[BaseException], value: BaseException, tb: Optional[TracebackType]
        ) -> None:
            if is_auth_error(value):
                exit_now(value, _installed_code)
            previous_sys(kind, value, tb)

        sys.excepthook = sys_hook

        previous_thread = threading.excepthook

        def thread_hook(args: Any) -> None:
            if args.exc_value is not None and is_auth_error(args.exc_value):
                exit_now(args.exc_value, _installed_code)
            previous_thread(args)

        threading.excepthook = thread_hook

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        install_asyncio_handler(loop, code)


def install_asyncio_handler(loop: Optional[asyncio.AbstractEventLoop] = None, code: Optional[int] = None) -> None:
    """Exit on an auth error that an asyncio task raised and nobody awaited.

    ``exit_on_auth_error()`` calls this for the running loop; call it yourself for a
    loop created later (``asyncio.run`` creates one per call).
    """
    target = loop if loop is not None else asyncio.get_event_loop()
    previous = target.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException) and is_auth_error(exc):
            exit_now(exc, code)
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    target.set_exception_handler(handler)


class _Guard:
    """Both a context manager and a decorator (sync or async)."""

    def __init__(self, code: Optional[int]) -> None:
        self.code = code

    def __enter__(self) -> "_Guard":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        if value is not None and is_auth_error(value):
            exit_now(value, self.code)
        return False

    async def __aenter__(self) -> "_Guard":
        return self

    async def __aexit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        return self.__exit__(kind, value, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


@overload
def exit_on_auth_error(func: F) -> F: ...


@overload
def exit_on_auth_error(func: None = None, *, code: Optional[int] = None) -> _Guard: ...


def exit_on_auth_error(func: Optional[F] = None, *, code: Optional[int] = None) -> Any:
    """Exit with status 77 when a provider rejects the worker's credential.

    Three ways to use it::

        agentsup.exit_on_auth_error()          # process-wide: sys, threading, asyncio hooks

        @agentsup.exit_on_auth_error           # around a worker's main loop (sync or async)
        def main(): ...

        with agentsup.exit_on_auth_error():    # around a block
            client.chat.completions.create(...)

    The status is ``code``, else ``$AGENTSUP_AUTH_EXIT_CODE``, else 77 (agentsup's
    default ``auth.exit_codes``). Quota (429) and permission (403) errors are left
    alone: a new key cannot fix them.
    """
    _install_hooks(code)
    guard = _Guard(code)
    if func is not None:
        return guard(func)
    return guard
