"""Each database call is timed from the moment it has a connection (``mlserve.models.backend``).

On SQLite and on MariaDB: waiting for the connection (the pool, SQLite's one connection) is
never counted; a transaction or statement that outlasts ``MLSERVE_DB_TIMEOUT`` once it runs
raises TimeoutError and leaves nothing written. On a MariaDB server of its own, stopped with
SIGSTOP (a hung server: the TCP connection stays open, nothing answers), a call fails after
the timeout instead of hanging, and the next call after SIGCONT works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mlserve_testing.mariadb import start_mariadb
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from mlserve.models import User
from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.reconcile.deploy import is_database_error

TIMEOUT = 0.5


@pytest.fixture
async def timed_db(db: DatabaseSettings) -> AsyncIterator[DatabaseSettings]:
    """The ``db`` database reconnected with a 0.5 s timeout and a pool of one connection."""
    await close_db()
    settings = db.model_copy(update={"statement_timeout": TIMEOUT, "pool_size": 1})
    await init_db(settings, create_schema=False)
    yield settings


async def test_waiting_for_a_connection_is_not_counted(timed_db: DatabaseSettings) -> None:
    async def hold(name: str) -> None:
        async with in_transaction("default"):
            await User.create(username=name, token="t")
            await asyncio.sleep(TIMEOUT * 0.6)  # within the timeout, once it has the connection

    started = time.monotonic()
    # One connection, four transactions: the last waits about three times the timeout.
    await asyncio.gather(*(hold(f"user{i}") for i in range(4)))
    assert time.monotonic() - started > 2 * TIMEOUT
    assert await User.all().count() == 4


async def test_a_transaction_that_outlasts_the_timeout_fails_and_writes_nothing(timed_db: DatabaseSettings) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        async with in_transaction("default"):
            await User.create(username="slow", token="t")
            await asyncio.sleep(TIMEOUT * 4)
    assert time.monotonic() - started < TIMEOUT * 3
    assert is_database_error(caught.value), "reported as a database that did not answer"
    assert await User.filter(username="slow").count() == 0
    await User.create(username="next", token="t")  # the connection (or a new one) works
    assert await User.all().count() == 1


@pytest.mark.mariadb
async def test_a_hung_mariadb_times_out_then_recovers(tmp_path: Path) -> None:
    """SIGSTOP: connections stay open, nothing answers (a half-open connection's view)."""
    server = start_mariadb(tmp_path)
    try:
        name = await server.create_database("hung")
        settings = server.settings(name).model_copy(update={"statement_timeout": TIMEOUT})
        await init_db(settings)
        connection = Tortoise.get_connection("default")
        await connection.execute_query("SELECT 1")
        server.freeze()
        try:
            for _ in range(3):  # the pooled connection, then new ones (their handshake hangs)
                started = time.monotonic()
                with pytest.raises(Exception) as caught:
                    await connection.execute_query("SELECT 1")
                assert is_database_error(caught.value), caught.value
                assert time.monotonic() - started < TIMEOUT * 4, "bounded by the timeout"
            started = time.monotonic()
            with pytest.raises(Exception) as caught:
                async with in_transaction("default"):
                    await User.create(username="during", token="t")
            assert is_database_error(caught.value)
            assert time.monotonic() - started < TIMEOUT * 4
        finally:
            server.thaw()
        await connection.execute_query("SELECT 1")
        await User.create(username="after", token="t")
        assert [u.username for u in await User.all()] == ["after"]
    finally:
        await close_db()
        server.stop()
