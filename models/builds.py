"""Leasing Darwin's ``artifact_builder_job`` rows, so one build job is built once.

Darwin's own poller (``ml-serve-app``) takes a PENDING job with
``SELECT ... WHERE status = 'PENDING' AND last_picked_at <= NOW() - 10 s ... FOR UPDATE SKIP
LOCKED`` and sets ``last_picked_at`` to now: ``last_picked_at`` is a lease that lapses after
ten seconds. The operator's builder (``mlserve.operator.reconcile.builder``) takes jobs the same
way and keeps the lease while its build runs, so neither another operator nor Darwin's poller
takes a job it builds:

- **pick** (:func:`pick`): the oldest PENDING job whose ``last_picked_at`` is older than the
  lease, then a conditional ``UPDATE ... SET last_picked_at = <now> WHERE id = ? AND status =
  'PENDING' AND last_picked_at = <the value read>``. The UPDATE is the lease: of two pickers
  that read the same row, only the first changes it, the second's UPDATE matches no row. On
  MySQL/MariaDB the read is also ``FOR UPDATE SKIP LOCKED`` in the same transaction, as
  Darwin's poller reads it, so two pickers never even wait for each other; SQLite has no
  ``SKIP LOCKED`` (and serialises writers anyway), so there the conditional UPDATE alone
  decides. The value written is the holder's token.
- **renew** (:func:`renew`): the same conditional UPDATE against the holder's own token, well
  within the lease; when it matches no row the lease was lost (taken over after it lapsed,
  or the job finished elsewhere) and the holder lets the job go.
- **finish** (:func:`finish`): SUCCESSFUL with an ``artifacts`` row carrying ``image_url`` (as
  Darwin's poller writes it), or FAILED; one transaction, and only while the token still
  matches, so a holder that lost its lease never writes a result.

Times are UTC, written as ``YYYY-MM-DD HH:MM:SS.ffffff`` (DATETIME(6) on MySQL, text on
SQLite, where that form sorts as time does). The holders' clocks must agree to well within
the lease (NTP), as Darwin's poller already assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

__all__ = ["LeasedBuild", "db_time", "finish", "pick", "renew"]

_CANDIDATES = 5
"""SQLite: how many expired jobs one pick tries before it gives up until the next tick."""


@dataclass(frozen=True)
class LeasedBuild:
    """A PENDING ``artifact_builder_job`` this holder has the lease of."""

    id: int
    serve_id: int
    serve: str
    version: str
    repository: str
    branch: str | None
    created_by_id: int
    task_id: str | None
    token: str
    """The ``last_picked_at`` this holder wrote: the lease is its while the row still has it."""


def db_time(moment: datetime) -> str:
    """``moment`` as the DATETIME(6) columns take it (UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _connection(name: str = "default") -> BaseDBAsyncClient:
    client: BaseDBAsyncClient = connections.get(name)
    return client


def _mysql(conn: BaseDBAsyncClient) -> bool:
    return bool(conn.capabilities.dialect == "mysql")


def _sql(conn: BaseDBAsyncClient, sql: str) -> str:
    return sql.replace("?", "%s") if _mysql(conn) else sql


def _token(now: datetime, after: str | None = None) -> str:
    token = db_time(now)
    if after is not None and token <= after:
        # The clock did not move (or went back): a renewal must still write a new value.
        token = db_time(
            datetime.strptime(after, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC) + timedelta(microseconds=1)
        )
    return token


def _select(limit: int, exclude: frozenset[int], lock: bool) -> str:
    """The expired PENDING jobs, oldest status first (Darwin's poller's order)."""
    others = f"AND id NOT IN ({', '.join(str(int(i)) for i in sorted(exclude))}) " if exclude else ""
    return (
        "SELECT id, serve_id, version, github_repo_url, branch, created_by_id, task_id, last_picked_at "
        f"FROM artifact_builder_job WHERE status = 'PENDING' AND last_picked_at <= ? {others}"
        f"ORDER BY status_last_updated_at, id LIMIT {int(limit)}" + (" FOR UPDATE SKIP LOCKED" if lock else "")
    )


_TAKE = "UPDATE artifact_builder_job SET last_picked_at = ? WHERE id = ? AND status = 'PENDING' AND last_picked_at = ?"


async def pick(
    lease_seconds: float, *, now: datetime | None = None, exclude: frozenset[int] = frozenset()
) -> LeasedBuild | None:
    """Take the lease of the oldest PENDING job nobody holds (its ``last_picked_at`` older than
    ``lease_seconds``), or None. ``exclude``: jobs this holder already builds."""
    now = now or datetime.now(UTC)
    cutoff = db_time(now - timedelta(seconds=lease_seconds))
    token = _token(now)
    conn = _connection()
    if _mysql(conn):
        async with in_transaction("default") as tx:
            _, rows = await tx.execute_query(_sql(tx, _select(1, exclude, lock=True)), [cutoff])
            for row in rows:
                changed, _ = await tx.execute_query(_sql(tx, _TAKE), [token, row["id"], row["last_picked_at"]])
                if changed == 1:
                    return await _leased(tx, dict(row), token)
        return None
    _, rows = await conn.execute_query(_select(_CANDIDATES, exclude, lock=False), [cutoff])
    for row in rows:
        changed, _ = await conn.execute_query(_TAKE, [token, row["id"], row["last_picked_at"]])
        if changed == 1:
            return await _leased(conn, dict(row), token)
    return None


async def _leased(conn: BaseDBAsyncClient, row: dict[str, Any], token: str) -> LeasedBuild:
    _, serves = await conn.execute_query(_sql(conn, "SELECT name FROM serves WHERE id = ?"), [row["serve_id"]])
    return LeasedBuild(
        id=int(row["id"]),
        serve_id=int(row["serve_id"]),
        serve=str(serves[0]["name"]) if serves else "",
        version=str(row["version"]),
        repository=str(row.get("github_repo_url") or ""),
        branch=None if row.get("branch") is None else str(row["branch"]),
        created_by_id=int(row["created_by_id"]),
        task_id=None if row.get("task_id") is None else str(row["task_id"]),
        token=token,
    )


async def renew(build: LeasedBuild, *, now: datetime | None = None, task_id: str | None = None) -> LeasedBuild | None:
    """Extend the lease (and record ``task_id`` when given); None when it is no longer ours."""
    token = _token(now or datetime.now(UTC), after=build.token)
    conn = _connection()
    if task_id is None:
        sql, values = _TAKE, [token, build.id, build.token]
    else:
        sql = (
            "UPDATE artifact_builder_job SET last_picked_at = ?, task_id = ? "
            "WHERE id = ? AND status = 'PENDING' AND last_picked_at = ?"
        )
        values = [token, task_id, build.id, build.token]
    changed, _ = await conn.execute_query(_sql(conn, sql), values)
    if changed != 1:
        return None
    return replace(build, token=token, task_id=build.task_id if task_id is None else task_id)


async def finish(
    build: LeasedBuild,
    *,
    succeeded: bool,
    image_url: str = "",
    task_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Record the job's end: SUCCESSFUL with its ``artifacts`` row (``image_url``), or FAILED
    (``task_id`` then says where and why). False, and nothing written, when the lease is no
    longer this holder's."""
    stamp = db_time(now or datetime.now(UTC))
    status = "SUCCESSFUL" if succeeded else "FAILED"
    async with in_transaction("default") as tx:
        changed, _ = await tx.execute_query(
            _sql(
                tx,
                "UPDATE artifact_builder_job SET status = ?, status_last_updated_at = ?, task_id = ? "
                "WHERE id = ? AND status = 'PENDING' AND last_picked_at = ?",
            ),
            [status, stamp, build.task_id if task_id is None else task_id, build.id, build.token],
        )
        if changed != 1:
            return False
        if succeeded:
            await _record_artifact(tx, build, image_url, stamp)
    return True


async def _record_artifact(tx: BaseDBAsyncClient, build: LeasedBuild, image_url: str, stamp: str) -> None:
    """The ``artifacts`` row of the built version. One may exist already (unique per serve and
    version): without an image it gets this one; with an image it is left as it is."""
    _, existing = await tx.execute_query(
        _sql(tx, "SELECT id, image_url FROM artifacts WHERE serve_id = ? AND version = ?"),
        [build.serve_id, build.version],
    )
    if existing:
        if not existing[0].get("image_url"):
            await tx.execute_query(
                _sql(tx, "UPDATE artifacts SET image_url = ?, artifact_job_id = ? WHERE id = ?"),
                [image_url, build.id, existing[0]["id"]],
            )
        return
    await tx.execute_query(
        _sql(
            tx,
            "INSERT INTO artifacts (serve_id, version, github_repo_url, image_url, branch, artifact_job_id, "
            "created_at, created_by_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ),
        [
            build.serve_id,
            build.version,
            build.repository,
            image_url,
            None if build.branch is None else build.branch[:50],
            build.id,
            stamp,
            build.created_by_id,
        ],
    )
