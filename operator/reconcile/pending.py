"""Database writes a deletion had to skip, kept for the database → cluster sync to retry.

When an MLServe is deleted while the database is unreachable, the finalizer waits at most
``MLSERVE_DELETION_DB_TIMEOUT`` and then lets the MLServe go (no MLServe can get stuck).
The deployment it should have ended is recorded here and logged; :func:`retry_pending`
ends it once the database answers. The sync loop calls :func:`retry_pending` on each tick
(before it creates MLServes for active deployments, so it never recreates an MLServe that
was deleted) and skips the pairs :func:`is_pending` names.

The list survives a restart when a store is set (:func:`use_store`: the operator uses a
ConfigMap in its own namespace, :class:`ConfigMapStore`, written with server-side apply): every
change is written through (:func:`flush`, by the finalizer before it lets the MLServe go, and by
the retries), and the sync loop reads it back (:func:`restore`) before its first tick, and again
whenever it becomes the active replica. Without a store (``MLSERVE_OPERATOR_NAMESPACE`` unset)
the list is in memory only: after a restart, a deployment left ACTIVE for a deleted MLServe
looks like any active deployment, and its MLServe is re-created.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from mlserve.operator.spec import api

__all__ = [
    "ConfigMapStore",
    "PendingEnd",
    "PendingStore",
    "add_pending",
    "flush",
    "is_pending",
    "pending_ends",
    "restore",
    "retry_pending",
    "use_store",
]

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

    def to_json(self) -> dict[str, Any]:
        return {
            "serve": self.serve,
            "environment": self.environment,
            "deploymentId": self.deployment_id,
            "mlserve": self.mlserve,
            "since": self.since.isoformat(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PendingEnd:
        deployment_id = raw.get("deploymentId")
        return cls(
            serve=str(raw["serve"]),
            environment=str(raw["environment"]),
            deployment_id=None if deployment_id is None else int(deployment_id),
            mlserve=str(raw.get("mlserve") or ""),
            since=datetime.fromisoformat(str(raw["since"])),
        )


class PendingStore(Protocol):
    """Where the list is kept across restarts."""

    async def load(self) -> list[PendingEnd]: ...

    async def save(self, entries: list[PendingEnd]) -> None: ...


_PENDING: dict[tuple[str, str], PendingEnd] = {}
_store: PendingStore | None = None
_dirty = False
"""The list changed since it was last written to the store."""
_write_lock: asyncio.Lock | None = None


def use_store(store: PendingStore | None) -> None:
    """Keep the list in ``store`` from now on (None: in memory only)."""
    global _store, _dirty
    _store = store
    _dirty = bool(_PENDING)


async def restore() -> int:
    """Merge the stored list into memory (entries already in memory win); return how many were
    read. Errors propagate: the caller must not act on the database without the list."""
    if _store is None:
        return 0
    stored = await _store.load()
    for entry in stored:
        if _PENDING.setdefault((entry.serve, entry.environment), entry) is entry:
            log.info(
                "deployment %s of serve %s in %s is still to be ended (from the deletion of %s, kept across a restart)",
                entry.deployment_id,
                entry.serve,
                entry.environment,
                entry.mlserve,
            )
    return len(stored)


async def flush() -> bool:
    """Write the list to the store if it changed; False (and logged) when the write failed,
    in which case the next flush tries again."""
    global _dirty, _write_lock
    if _store is None or not _dirty:
        return True
    if _write_lock is None:
        _write_lock = asyncio.Lock()
    async with _write_lock:
        if not _dirty:
            return True
        _dirty = False
        try:
            await _store.save(list(_PENDING.values()))
        except Exception as exc:  # noqa: BLE001 - kept in memory; written on the next flush
            _dirty = True
            log.warning("could not keep the pending undeploys across restarts: %s: %s", type(exc).__name__, exc)
            return False
    return True


def add_pending(
    serve: str, environment: str, deployment_id: int | None, mlserve: str, now: datetime | None = None
) -> PendingEnd:
    global _dirty
    entry = PendingEnd(serve, environment, deployment_id, mlserve, now or datetime.now(UTC))
    _PENDING[(serve, environment)] = entry
    _dirty = True
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
    global _dirty
    if _PENDING.pop((serve, environment), None) is not None:
        _dirty = True


async def retry_pending(
    end: Callable[[str, str, int | None], Awaitable[int | None]] | None = None,
) -> list[PendingEnd]:
    """Try every pending end once; return those done. Database errors leave them pending.
    The list is written to the store when some were done."""
    global _dirty
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
        _dirty = True
        done.append(entry)
        log.info(
            "ended deployment %s of serve %s in %s, left over from the deletion of %s",
            ended,
            entry.serve,
            entry.environment,
            entry.mlserve,
        )
    await flush()
    return done


class ConfigMapStore:
    """The list as JSON in one key of a ConfigMap, written with server-side apply; the
    ConfigMap is deleted when the list is empty."""

    KEY = "pending.json"

    def __init__(self, client: Any, namespace: str, name: str, field_manager: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.field_manager = field_manager

    async def load(self) -> list[PendingEnd]:
        try:
            found = await self.client.get(ConfigMap, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return []
            raise
        raw = (found.data or {}).get(self.KEY) or "[]"
        return [PendingEnd.from_json(item) for item in json.loads(raw)]

    async def save(self, entries: list[PendingEnd]) -> None:
        if not entries:  # nothing pending: no ConfigMap left behind
            try:
                await self.client.delete(ConfigMap, self.name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            return
        body = ConfigMap(
            metadata=ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels={api.LABEL_MANAGED_BY: api.MANAGED_BY},
            ),
            data={self.KEY: json.dumps([e.to_json() for e in entries], sort_keys=True)},
        )
        await self.client.apply(body, field_manager=self.field_manager, force=True)
