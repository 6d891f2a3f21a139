"""Database writes a deletion had to skip, kept for the database → cluster sync to retry.

When an MLServe is deleted while the database is unreachable, the finalizer waits at most
``MLSERVE_DELETION_DB_TIMEOUT`` and then lets the MLServe go (no MLServe can get stuck).
The deployment it should have ended is recorded here and logged; :func:`retry_pending`
ends it once the database answers. The sync loop calls :func:`retry_pending` on each tick
(before it creates MLServes for active deployments, so it never recreates an MLServe that
was deleted) and skips the pairs :func:`is_pending` names.

The list lives in the operator's memory: after a restart, a deployment left ACTIVE for a
deleted MLServe is found by the sync loop's full resync like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["PendingEnd", "add_pending", "is_pending", "pending_ends", "retry_pending"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingEnd:
    """A deployment to end because its MLServe was deleted."""

    serve: str
    environment: str
    deployment_id: int | None
    """Only this deployment is ended (None: whatever is active for the pair)."""
    mlserve: str
    """``namespace/name`` of the deleted MLServe, for the logs."""
    since: datetime


_PENDING: dict[tuple[str, str], PendingEnd] = {}


def add_pending(
    serve: str, environment: str, deployment_id: int | None, mlserve: str, now: datetime | None = None
) -> PendingEnd:
    entry = PendingEnd(serve, environment, deployment_id, mlserve, now or datetime.now(UTC))
    _PENDING[(serve, environment)] = entry
    log.warning(
        "database unreachable: deployment %s of serve %s in %s is left ACTIVE after %s was "
        "deleted; it is ended when the database answers",
        deployment_id,
        serve,
        environment,
        mlserve,
    )
    return entry


def pending_ends() -> list[PendingEnd]:
    return list(_PENDING.values())


def is_pending(serve: str, environment: str) -> bool:
    return (serve, environment) in _PENDING


def discard_pending(serve: str, environment: str) -> None:
    _PENDING.pop((serve, environment), None)


async def retry_pending(
    end: Callable[[str, str, int | None], Awaitable[int | None]] | None = None,
) -> list[PendingEnd]:
    """Try every pending end once; return those done. Database errors leave them pending."""
    if end is None:
        from .deploy import end_deployment

        end = end_deployment
    done: list[PendingEnd] = []
    for key, entry in list(_PENDING.items()):
        try:
            ended = await end(entry.serve, entry.environment, entry.deployment_id)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the entry for the next tick
            log.info("pending end of %s/%s still waits: %s", entry.serve, entry.environment, type(exc).__name__)
            continue
        _PENDING.pop(key, None)
        done.append(entry)
        log.info(
            "ended deployment %s of serve %s in %s, left over from the deletion of %s",
            ended,
            entry.serve,
            entry.environment,
            entry.mlserve,
        )
    return done
