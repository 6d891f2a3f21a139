"""Wait on a condition with a deadline; never sleep as a way to synchronise.

    pods = wait_for(lambda: ready_pods(client) == 3, timeout=60, what="3 ready pods")

On timeout the error says what was awaited, for how long, and the last value or
exception seen, so a failing test explains itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 0.2


class WaitTimeout(AssertionError):
    """The awaited condition did not hold before the deadline."""


def _timeout_error(what: str, timeout: float, last: object, last_error: BaseException | None) -> WaitTimeout:
    seen = f"last error: {last_error!r}" if last_error is not None else f"last value: {last!r}"
    return WaitTimeout(f"timed out after {timeout:g} s waiting for {what} ({seen})")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = DEFAULT_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions of the types in ``ignore`` count as "not yet" (e.g. a 404 before an object
    exists); any other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_error = None
            if last:
                return last
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timeout_error(what, timeout, last, last_error)
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    *,
    interval: float = DEFAULT_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_for` for a coroutine predicate."""
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            result = await predicate()
            last, last_error = result, None
            if result:
                return result
        except ignore as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timeout_error(what, timeout, last, last_error)
        await asyncio.sleep(interval)
