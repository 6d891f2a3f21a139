"""The build jobs' lease (``models/builds.py``) on SQLite and MariaDB: picked once, renewed only
by its holder, finished only while held; and on MariaDB, invisible to Darwin's own poller
query while held."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from mlserve_testing import darwin
from tortoise import Tortoise

from mlserve.models import builds
from mlserve.models.settings import DatabaseSettings

# Darwin's poller's query, as ml-serve-app's sql_queries.py has it.
DARWIN_POLLER_SQL = (
    "SELECT * FROM artifact_builder_job WHERE status='PENDING' AND last_picked_at <= NOW() - INTERVAL '10' second "
    "ORDER BY status_last_updated_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)


async def waiting_job(minutes: int = 5) -> tuple[darwin.Seed, int]:
    seed = await darwin.seed_api_serve("fraud", "prod", "serving", versions=("v1",))
    job = await darwin.build_job(seed, "v2")
    past = builds.db_time(datetime.now(UTC) - timedelta(minutes=minutes))
    await darwin.query("UPDATE artifact_builder_job SET last_picked_at = ? WHERE id = ?", past, job)
    return seed, job


async def test_many_pickers_at_once_one_lease(db: DatabaseSettings) -> None:
    _, job = await waiting_job()
    picked = await asyncio.gather(*(builds.pick(10) for _ in range(8)))
    holders = [p for p in picked if p is not None]
    assert [h.id for h in holders] == [job]


async def test_a_fresh_job_waits_for_the_lease_as_darwins_poller_does(db: DatabaseSettings) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", "serving", versions=("v1",))
    job = await darwin.build_job(seed, "v2")  # last_picked_at = now, as Darwin's POST /artifact writes it
    assert await builds.pick(10) is None
    later = datetime.now(UTC) + timedelta(seconds=11)
    leased = await builds.pick(10, now=later)
    assert leased is not None and leased.id == job and leased.serve == "fraud"


async def test_only_the_holder_renews_and_finishes(db: DatabaseSettings) -> None:
    seed, job = await waiting_job()
    now = datetime.now(UTC)
    first = await builds.pick(10, now=now)
    assert first is not None
    # Within the lease nobody else takes it; after it, someone does, and the first holder's
    # renewal and result are refused.
    assert await builds.pick(10, now=now + timedelta(seconds=5)) is None
    second = await builds.pick(10, now=now + timedelta(seconds=11))
    assert second is not None and second.id == job
    assert await builds.renew(first) is None
    assert not await builds.finish(first, succeeded=True, image_url="r.example.com/x:1")
    assert await darwin.query("SELECT id FROM artifacts WHERE artifact_job_id = ?", job) == []
    renewed = await builds.renew(second, task_id="kubernetes job b/mlserve-build-1")
    assert renewed is not None and renewed.token > second.token
    assert await builds.finish(renewed, succeeded=True, image_url="r.example.com/x:1")
    (row,) = await darwin.query("SELECT status, task_id FROM artifact_builder_job WHERE id = ?", job)
    assert row == {"status": "SUCCESSFUL", "task_id": "kubernetes job b/mlserve-build-1"}
    (artifact,) = await darwin.query(
        "SELECT image_url, version FROM artifacts WHERE serve_id = ? AND artifact_job_id = ?", seed.serve, job
    )
    assert artifact == {"image_url": "r.example.com/x:1", "version": "v2"}
    assert await builds.renew(renewed) is None  # finished: no lease any more


async def test_failed_records_no_artifact(db: DatabaseSettings) -> None:
    _, job = await waiting_job()
    leased = await builds.pick(10)
    assert leased is not None
    assert await builds.finish(leased, succeeded=False, task_id="kubernetes job b/j failed: BackoffLimitExceeded")
    (row,) = await darwin.query("SELECT status, task_id FROM artifact_builder_job WHERE id = ?", job)
    assert row["status"] == "FAILED" and "BackoffLimitExceeded" in row["task_id"]
    assert await darwin.query("SELECT id FROM artifacts WHERE artifact_job_id = ?", job) == []


@pytest.mark.parametrize("db", ["mariadb"], indirect=True)
async def test_darwins_poller_skips_a_held_job_and_takes_a_lapsed_one(db: DatabaseSettings) -> None:
    _, job = await waiting_job()
    connection = Tortoise.get_connection("default")
    _, before = await connection.execute_query(DARWIN_POLLER_SQL)
    assert [r["id"] for r in before] == [job]
    leased = await builds.pick(10)
    assert leased is not None
    _, held = await connection.execute_query(DARWIN_POLLER_SQL)
    assert held == []  # held: Darwin's poller does not see it
    past = builds.db_time(datetime.now(UTC) - timedelta(seconds=30))
    await darwin.query("UPDATE artifact_builder_job SET last_picked_at = ? WHERE id = ?", past, job)
    _, lapsed = await connection.execute_query(DARWIN_POLLER_SQL)
    assert [r["id"] for r in lapsed] == [job]
