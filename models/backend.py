"""Tortoise clients whose every database call runs under a timeout that starts once it has a
connection.

Tortoise 1.1's MySQL client takes a connection from the driver's pool for each statement
(``acquire_connection``) and for each transaction (``_in_transaction``); its SQLite client has
one connection behind a lock, taken the same two ways. A timeout around the caller's code counts
the time spent waiting for that connection: under load (many reconciles, a small pool) a
healthy database then looks like one that "did not answer". These clients wait for the
connection first, untimed, and only then start the clock, for the statement or for the whole
transaction (``BEGIN`` to ``COMMIT``):

* a statement or transaction that runs longer than ``statement_timeout`` seconds raises
  :class:`TimeoutError`. On MySQL the connection is closed, never returned to the pool (a
  cancelled read leaves its protocol out of step; the server rolls the open transaction back
  when it sees the connection go), so a hung server (a half-open connection, a stopped
  process) costs one timeout per call and no stuck task;
* a new MySQL connection the pool opens is bounded too: ``connect_timeout`` for the TCP
  connection, ``read_timeout`` (the same seconds) for every read, the handshake included.

``statement_timeout`` comes from :attr:`~mlserve.models.settings.DatabaseSettings.statement_timeout`
(the operator sets it from ``MLSERVE_DB_TIMEOUT``); None, the default of the ``mlserve db``
commands, leaves calls unbounded (a migration may run long). :func:`statement_timeout` sets it
for the calls of one task and its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["TIMEOUT_KEY", "CallObserver", "get_client_class", "observe_calls", "statement_timeout"]

TIMEOUT_KEY = "statement_timeout"
"""The key of the connection's credentials that carries the timeout (popped before the driver sees it)."""

_override: ContextVar[float | None] = ContextVar("mlserve_statement_timeout", default=None)


@contextlib.contextmanager
def statement_timeout(seconds: float) -> Iterator[None]:
    """Every database call of the current task (and the tasks it starts) under ``seconds``."""
    token = _override.set(seconds)
    try:
        yield
    finally:
        _override.reset(token)


def seconds_of(client: Any) -> float | None:
    override = _override.get()
    return override if override is not None else getattr(client, "statement_timeout", None)


CallObserver = Callable[[float, bool], None]
"""Told of every database call once it ends: its seconds (from the moment it had a connection)
and whether it failed."""

_observers: list[CallObserver] = []


def observe_calls(observer: CallObserver) -> None:
    """Call ``observer`` after every database call (the operator's metrics)."""
    _observers.append(observer)


class Clock:
    """The timeout of one call, started after the connection was obtained."""

    __slots__ = ("started", "timeout")

    def __init__(self) -> None:
        self.timeout: asyncio.Timeout | None = None
        self.started = 0.0

    async def start(self, seconds: float | None) -> None:
        self.started = time.perf_counter()
        if seconds is not None:
            self.timeout = asyncio.timeout(seconds)
            await self.timeout.__aenter__()

    async def stop(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Leave the timeout; True when it expired (the call was cancelled by it)."""
        timeout, self.timeout = self.timeout, None
        expired = False
        if timeout is not None:
            try:
                await timeout.__aexit__(exc_type, exc, tb)
            except TimeoutError:
                expired = True
            else:
                expired = timeout.expired()
        if self.started:
            elapsed, self.started = time.perf_counter() - self.started, 0.0
            for observer in _observers:
                observer(elapsed, expired or exc_type is not None)
        return expired


def timed_out(seconds: float | None) -> TimeoutError:
    return TimeoutError(f"the database call took longer than {seconds:g}s")


def connections() -> Any:
    """Tortoise's connection context (which client a task's transaction uses)."""
    from tortoise.connection import get_connections

    return get_connections()


def get_client_class(db_info: dict[str, Any]) -> type[Any]:
    """Tortoise's hook for an ``engine`` module: the client of the configured database.

    The clients live in modules named after their database: Tortoise's migrations pick their
    SQL dialect by the client's module name."""
    if "file_path" in (db_info.get("credentials") or {}):
        from .backend_sqlite import TimedSqliteClient

        return TimedSqliteClient
    from .backend_mysql import TimedMySQLClient

    return TimedMySQLClient
