"""Each database call is timed from the moment it has a connection (``mlserve.models.backend``).

On SQLite and on MariaDB: waiting for the connection (the pool, SQLite's one connection) is
never counted; a transaction or statement that outlasts ``MLSERVE_DB_TIMEOUT`` once it runs
raises TimeoutError and leaves nothing written. On a MariaDB server of its own, stopped with
SIGSTOP (a hung server: the TCP connection stays open, nothing answers), a call fails after
the timeout instead of hanging, and the next call after SIGCONT works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mlserve_testing.mariadb import start_mariadb
from mlserve_testing.wait import async_wait_for
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


@pytest.mark.mariadb
async def test_a_sync_tick_stuck_on_a_hung_database_is_cancelled_and_the_loop_beats_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No statement timeout at all: MLSERVE_SYNC_TICK_TIMEOUT alone bounds the tick, the
    heartbeat (what liveness checks) keeps beating, and the loop ticks again after SIGCONT."""
    from mlserve.operator.reconcile import sync
    from mlserve.operator.render.settings import RenderSettings
    from mlserve.operator.settings import OperatorSettings

    async def no_cluster_pass(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(sync, "_full_pass", no_cluster_pass)
    caplog.set_level(logging.INFO, logger="mlserve.operator.reconcile.sync")
    server = start_mariadb(tmp_path)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        await init_db(server.settings(await server.create_database("tick")))
        settings = OperatorSettings(
            cluster_name="local", sync_interval=0.1, sync_tick_timeout=0.5, render=RenderSettings(), database=None
        )
        heartbeat = sync.SyncHeartbeat()
        results: list[object] = []
        task = asyncio.create_task(
            sync.run_sync_loop(settings, None, stop, heartbeat=heartbeat, on_result=results.append)  # type: ignore[arg-type]
        )
        await async_wait_for(lambda: _at_least(results, 1), timeout=10, what="a first tick")
        server.freeze()
        try:
            ticks = heartbeat.ticks
            await async_wait_for(lambda: _beyond(heartbeat, ticks + 2), timeout=10, what="beats while hung")
            assert "a tick took longer than 0.5s and was cancelled" in caplog.text
        finally:
            server.thaw()
        done = len(results)
        await async_wait_for(lambda: _at_least(results, done + 1), timeout=10, what="a good tick after SIGCONT")
        assert "database sync recovered" in caplog.text
    finally:
        stop.set()
        if task is not None:
            await task
        await close_db()
        server.stop()


async def _at_least(items: list[object], count: int) -> bool:
    return len(items) >= count


async def _beyond(heartbeat: object, ticks: int) -> bool:
    return int(heartbeat.ticks) >= ticks  # type: ignore[attr-defined]
