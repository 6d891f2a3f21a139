"""The MySQL / MariaDB client of :mod:`mlserve.models.backend`: each call timed once it has a pooled connection."""

from __future__ import annotations

import asyncio
from typing import Any

from tortoise.backends.base.client import (
    ConnectionWrapper,
    PoolConnectionWrapper,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.mysql import client as mysql_client
from tortoise.backends.mysql.client import MySQLClient, TransactionWrapper
from tortoise.exceptions import TransactionManagementError

from .backend import TIMEOUT_KEY, Clock, connections, seconds_of, timed_out

__all__ = ["DRIVER", "TimedMySQLClient"]

DRIVER: str = mysql_client.mysql.__name__  # type: ignore[attr-defined]  # the module it imported
"""The MySQL driver Tortoise found: ``aiomysql`` (the operator's), or ``asyncmy``, which Tortoise
takes instead whenever it is installed (not a dependency, not tested; its read timeout is set)."""


def _time_new_connections(pool: Any, seconds: float) -> None:
    """Bound the opening of ``pool``'s new connections by ``seconds`` (aiomysql only).

    aiomysql times out only the TCP connect: the handshake that follows waits for ever on a
    hung server, and it runs inside the pool's lock, so every later call would wait behind it.
    The pool opens connections in one method, called with that lock held, that never waits for
    another call to give a connection back: timing that method times exactly the opening of
    connections, never a wait for the pool. (asyncmy has a read timeout of its own.)
    """
    fill = pool._fill_free_pool

    async def fill_in_time(override_min: bool) -> None:
        try:
            await asyncio.wait_for(fill(override_min), seconds)
        except TimeoutError as exc:
            raise timed_out(seconds) from exc

    pool._fill_free_pool = fill_in_time


class _TimedPoolConnection(PoolConnectionWrapper[Any]):
    """A pooled connection for one statement: waits for the pool, then times the statement."""

    __slots__ = ("clock",)

    def __init__(self, client: TimedMySQLClient) -> None:
        super().__init__(client, client._pool_init_lock)
        self.clock = Clock()

    async def __aenter__(self) -> Any:
        connection = await super().__aenter__()
        await self.clock.start(seconds_of(self.client))
        return connection

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        expired = await self.clock.stop(exc_type, exc, tb)
        if expired and self.connection is not None:
            self.connection.close()  # out of step with the server: never back to the pool
        await super().__aexit__(exc_type, exc, tb)
        if expired:
            raise timed_out(seconds_of(self.client)) from exc


class _TimedTransaction(TransactionContextPooled):
    """A transaction on a pooled connection: waits for the pool, then times BEGIN … COMMIT."""

    __slots__ = ("clock", "seconds")

    def __init__(self, client: TransactionalDBClient, parent: TimedMySQLClient) -> None:
        super().__init__(client, parent._pool_init_lock)
        self.clock = Clock()
        self.seconds = seconds_of(parent)

    async def __aenter__(self) -> TransactionalDBClient:
        await self.ensure_connection()
        parent: Any = self.client._parent
        self.client._connection = await parent._pool.acquire()
        try:
            await self.clock.start(self.seconds)
            self.token = connections().set(self.connection_name, self.client)
            await self.client.begin()
        except BaseException as exc:
            expired = await self.clock.stop(type(exc), exc, exc.__traceback__)
            self._discard(closed=expired)
            if expired:
                raise timed_out(self.seconds) from exc
            raise
        return self.client

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Cancelled (by the timeout or by the caller) or timed out: the connection may be in the
        # middle of a read, out of step with the server. Close it instead of rolling back: the
        # server rolls the transaction back when the connection goes.
        broken = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        broken = broken or (self.clock.timeout is not None and self.clock.timeout.expired())
        try:
            if not broken and not self.client._finalized:
                if exc_type is None:
                    await self.client.commit()
                elif exc_type is not TransactionManagementError:
                    await self.client.rollback()
        except BaseException as error:
            expired = await self.clock.stop(type(error), error, error.__traceback__)
            self._discard(closed=True)
            if expired:
                raise timed_out(self.seconds) from error
            raise
        expired = await self.clock.stop(exc_type, exc, tb)
        self._discard(closed=broken or expired)
        if expired:
            raise timed_out(self.seconds) from exc

    def _discard(self, *, closed: bool) -> None:
        connection: Any = self.client._connection
        if closed and connection is not None:
            connection.close()
        parent: Any = self.client._parent
        if parent._pool is not None and connection is not None:
            parent._pool.release(connection)
        token = getattr(self, "token", None)
        if token is not None:
            connections().reset(token)
            del self.token


class TimedMySQLClient(MySQLClient):
    """Tortoise's MySQL client, each call timed from the moment it has a connection."""

    def __init__(self, **kwargs: Any) -> None:
        seconds = kwargs.pop(TIMEOUT_KEY, None)
        self.statement_timeout: float | None = None if seconds is None else float(seconds)
        if self.statement_timeout is not None:
            # A new connection of the pool: TCP connect and every read (the handshake too).
            # aiomysql has no read timeout: there the statement's own timeout bounds the reads.
            kwargs.setdefault("connect_timeout", self.statement_timeout)
            if DRIVER == "asyncmy":
                kwargs.setdefault("read_timeout", self.statement_timeout)
        super().__init__(**kwargs)

    async def create_connection(self, with_db: bool) -> None:
        await super().create_connection(with_db)
        if DRIVER == "aiomysql" and self.statement_timeout is not None:
            _time_new_connections(self._pool, self.statement_timeout)

    def acquire_connection(self) -> ConnectionWrapper[Any] | PoolConnectionWrapper[Any]:
        return _TimedPoolConnection(self)

    def _in_transaction(self) -> TransactionContext:
        return _TimedTransaction(TransactionWrapper(self), self)
