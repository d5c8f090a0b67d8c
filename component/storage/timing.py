"""Database latency measurement for repository functions."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from component.metrics import DB_QUERY_SECONDS

P = ParamSpec("P")
R = TypeVar("R")


def timed(operation: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Observe the wrapped coroutine's duration in herald_db_query_seconds{operation}."""

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        histogram = DB_QUERY_SECONDS.labels(operation=operation)

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - start)

        return wrapper

    return decorate


def observed(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Awaitable[R]]:
    """Time every call in herald_db_query_seconds{operation=<function name>}."""
    return timed(fn.__name__)(fn)
