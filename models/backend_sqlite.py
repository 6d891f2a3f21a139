"""The SQLite client of :mod:`mlserve.models.backend`: each call timed once it holds the one connection."""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import ConnectionWrapper, TransactionalDBClient, TransactionContext
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.exceptions import TransactionManagementError

from .backend import TIMEOUT_KEY, Clock, connections, seconds_of, timed_out

__all__ = ["TimedSqliteClient"]


class _TimedLockedConnection(ConnectionWrapper[Any]):
    """SQLite's one connection for one statement: waits for its lock, then times the statement."""

    __slots__ = ("clock",)

    def __init__(self, client: TimedSqliteClient) -> None:
        super().__init__(client._lock, client)
        self.clock = Clock()

    async def __aenter__(self) -> Any:
        connection = await super().__aenter__()
        try:
            await self.clock.start(seconds_of(self.client))
        except BaseException:
            self._lock.release()
            raise
        return connection

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            expired = await self.clock.stop(exc_type, exc, tb)
        finally:
            await super().__aexit__(exc_type, exc, tb)
        if expired:
            raise timed_out(seconds_of(self.client)) from exc


class _TimedSqliteTransaction(SqliteTransactionContext):
    """A SQLite transaction: waits for the connection's lock, then times BEGIN … COMMIT."""

    __slots__ = ("clock", "seconds")

    def __init__(self, client: TimedSqliteClient) -> None:
        super().__init__(SqliteTransactionWrapper(client), client._lock)
        self.clock = Clock()
        self.seconds = seconds_of(client)

    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        try:
            await self.clock.start(self.seconds)
            await self.ensure_connection()
            self.token = connections().set(self.connection_name, self.connection)
            await self.connection.begin()
        except BaseException as exc:
            expired = await self.clock.stop(type(exc), exc, exc.__traceback__)
            token = getattr(self, "token", None)
            if token is not None:
                connections().reset(token)
            self._trxlock.release()
            if expired:
                raise timed_out(self.seconds) from exc
            raise
        return self.connection  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            try:
                if not self.connection._finalized:
                    if exc_type is None:
                        await self.connection.commit()
                    elif exc_type is not TransactionManagementError:
                        await self.connection.rollback()
            finally:
                expired = await self.clock.stop(exc_type, exc, tb)
        finally:
            connections().reset(self.token)
            self._trxlock.release()
        if expired:
            raise timed_out(self.seconds) from exc


class TimedSqliteClient(SqliteClient):
    """Tortoise's SQLite client, each call timed from the moment it holds the connection.

    SQLite has one connection (no pool): waiting for its lock is the wait for a connection.
    A timed-out statement is abandoned, not interrupted: SQLite finishes it in its thread.
    """

    def __init__(self, file_path: str, **kwargs: Any) -> None:
        seconds = kwargs.pop(TIMEOUT_KEY, None)
        self.statement_timeout: float | None = None if seconds is None else float(seconds)
        super().__init__(file_path, **kwargs)

    def acquire_connection(self) -> ConnectionWrapper[Any]:
        return _TimedLockedConnection(self)

    def _in_transaction(self) -> TransactionContext:
        return _TimedSqliteTransaction(self)
