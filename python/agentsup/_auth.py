"""Recognising a credential rejection, without importing any SDK.

Every current OpenAI, Anthropic, Groq, LangChain/LangGraph (which re-raise the SDK's
own exception) and AutoGen client raises an exception class named
``AuthenticationError`` on a 401; Cohere names it ``UnauthorizedError`` and
google-api-core ``Unauthenticated``. Matching by class name along the MRO keeps this
module free of imports (a worker need not install every SDK) and also recognises the
stand-in types that Celery builds when an exception cannot be pickled (it keeps the
original class name and module).
"""

from __future__ import annotations

from typing import Iterator, Optional

#: What agentsup's default ``auth.exit_codes`` expects (EX_NOPERM of sysexits.h).
AUTH_EXIT_CODE = 77

_AUTH_CLASS_NAMES = frozenset({"AuthenticationError", "UnauthorizedError", "Unauthenticated"})

# Modules whose HTTP errors carry a `status_code`; a 401 from one of them is a
# rejected credential even when the class has a generic name (mistralai's SDKError).
_SDK_MODULE_PREFIXES = (
    "openai",
    "anthropic",
    "groq",
    "mistralai",
    "cohere",
    "google",
    "langchain",
    "langgraph",
    "autogen",
)

# Messages some wrappers put in a plain Exception (the SDK's text survives re-raising).
_AUTH_MESSAGES = (
    "Incorrect API key provided",
    "invalid x-api-key",
    "authentication_error",
    "API_KEY_INVALID",
    "invalid_api_key",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in getattr(current, "exceptions", None) or ():
            if isinstance(nested, BaseException):
                todo.append(nested)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)


def is_auth_type(exc_type: Optional[type]) -> bool:
    """True when ``exc_type`` (or a base class) is named like an SDK's 401 exception."""
    if exc_type is None or not isinstance(exc_type, type):
        return False
    return any(klass.__name__ in _AUTH_CLASS_NAMES for klass in exc_type.__mro__)


def _is_sdk_401(exc: BaseException) -> bool:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "status", None)
    if status != 401:
        return False
    return any(
        klass.__module__.split(".")[0] in _SDK_MODULE_PREFIXES for klass in type(exc).__mro__
    )


def is_auth_error(exc: Optional[BaseException]) -> bool:
    """True when ``exc`` (or anything it wraps) is a provider rejecting a credential.

    Quota (429) and permission (403) errors are not auth failures: restarting with a
    fresh key cannot fix them, and agentsup classifies them as crashes too.
    """
    if exc is None:
        return False
    for current in _chain(exc):
        if is_auth_type(type(current)) or _is_sdk_401(current):
            return True
        if type(current).__name__ in ("Exception", "RuntimeError", "ValueError"):
            text = str(current)
            if any(marker in text for marker in _AUTH_MESSAGES):
                return True
    return False
