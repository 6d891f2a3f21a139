"""Database writes a deletion had to skip, kept for the database → cluster sync to retry.

When an MLServe is deleted while the database is unreachable, the finalizer waits at most
``MLSERVE_DELETION_DB_TIMEOUT`` and then lets the MLServe go (no MLServe can get stuck).
The deployment it should have ended is recorded in the operator's :class:`PendingUndeploys`
and logged; :meth:`PendingUndeploys.retry` ends it once the database answers. The sync loop
retries on each tick (before it creates MLServes for active deployments, so it never
recreates an MLServe that was deleted) and skips the pairs still pending.

The list survives a restart when it has a store (the operator uses a ConfigMap in its own
namespace, :class:`ConfigMapStore`, written with server-side apply): every change is written
through (:meth:`~PendingUndeploys.flush`, by the finalizer before it lets the MLServe go, and
by the retries), and the sync loop reads it back (:meth:`~PendingUndeploys.restore`) before
its first tick, and again whenever it becomes the active replica. Without a store
(``MLSERVE_OPERATOR_NAMESPACE`` unset) the list is in memory only: after a restart, a
deployment left ACTIVE for a deleted MLServe looks like any active deployment, and its
MLServe is re-created.
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
from mlserve.operator.spec.times import parse_rfc3339

from .identity import Pair

__all__ = [
    "ConfigMapStore",
    "EndDeployment",
    "PendingEnd",
    "PendingStore",
    "PendingUndeploys",
    "parse_entries",
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
        since = parse_rfc3339(raw["since"])
        if since is None:
            raise ValueError(f"a pending undeploy has an unreadable time: {raw['since']!r}")
        return cls(
            serve=str(raw["serve"]),
            environment=str(raw["environment"]),
            deployment_id=None if deployment_id is None else int(deployment_id),
            mlserve=str(raw.get("mlserve") or ""),
            since=since,
        )


def parse_entries(text: str) -> tuple[list[PendingEnd], list[str]]:
    """The entries of the stored list that can be read, and the others as text (the whole
    value when it is not a JSON list)."""
    try:
        items = json.loads(text)
    except ValueError:
        return [], [text]
    if not isinstance(items, list):
        return [], [text]
    entries: list[PendingEnd] = []
    malformed: list[str] = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise TypeError("not an object")
            entries.append(PendingEnd.from_json(item))
        except (AttributeError, KeyError, TypeError, ValueError):
            malformed.append(json.dumps(item, sort_keys=True))
    return entries, malformed


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        items = json.loads(text)
    except ValueError:
        return [text]
    return [str(item) for item in items] if isinstance(items, list) else [text]


class PendingStore(Protocol):
    """Where the list is kept across restarts."""

    async def load(self) -> list[PendingEnd]: ...

    async def save(self, entries: list[PendingEnd]) -> None: ...


EndDeployment = Callable[[str, str, int | None], Awaitable[int | None]]
"""Ends (serve, environment)'s deployment (only that id, when given); returns the id ended."""


class PendingUndeploys:
    """The undeploys deletions had to skip, one per (serve, environment), and where they are
    kept across restarts (``store``; None: in memory only).

    The operator holds one (the reconcile's :class:`~.mlserve.Runtime` and the sync loop
    share it): the finalizer adds to it, the sync loop retries it.
    """

    def __init__(self, store: PendingStore | None = None) -> None:
        self._entries: dict[Pair, PendingEnd] = {}
        self.store = store
        self._dirty = False
        """The list changed since it was last written to the store."""
        self._write_lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[PendingEnd]:
        return list(self._entries.values())

    def is_pending(self, serve: str, environment: str) -> bool:
        return (serve, environment) in self._entries

    def add(
        self, serve: str, environment: str, deployment_id: int | None, mlserve: str, now: datetime | None = None
    ) -> PendingEnd:
        entry = PendingEnd(serve, environment, deployment_id, mlserve, now or datetime.now(UTC))
        self._entries[(serve, environment)] = entry
        self._dirty = True
        log.warning(
            "database unreachable: deployment %s of serve %s in %s is left ACTIVE after %s was "
            "deleted; it is ended when the database answers",
            deployment_id,
            serve,
            environment,
            mlserve,
        )
        return entry

    def discard(self, serve: str, environment: str) -> None:
        if self._entries.pop((serve, environment), None) is not None:
            self._dirty = True

    async def restore(self) -> int:
        """Merge the stored list into memory (entries already in memory win); return how many
        were read. Errors propagate: the caller must not act on the database without the list."""
        if self.store is None:
            return 0
        stored = await self.store.load()
        if getattr(self.store, "malformed", None):
            self._dirty = True  # the next flush moves what could not be read aside
        for entry in stored:
            if self._entries.setdefault((entry.serve, entry.environment), entry) is entry:
                log.info(
                    "deployment %s of serve %s in %s is still to be ended (from the deletion of %s, "
                    "kept across a restart)",
                    entry.deployment_id,
                    entry.serve,
                    entry.environment,
                    entry.mlserve,
                )
        return len(stored)

    def _take_changes(self) -> bool:
        """Whether the list changed since it was last written; the mark is cleared (a failed
        write sets it again)."""
        changed, self._dirty = self._dirty, False
        return changed

    async def flush(self) -> bool:
        """Write the list to the store if it changed; False (and logged) when the write failed,
        in which case the next flush tries again."""
        if self.store is None or not self._dirty:
            return True
        async with self._write_lock:
            if not self._take_changes():
                return True  # another flush wrote it meanwhile
            try:
                await self.store.save(self.entries())
            except Exception as exc:  # noqa: BLE001 - kept in memory; written on the next flush
                self._dirty = True
                log.warning("could not keep the pending undeploys across restarts: %s: %s", type(exc).__name__, exc)
                return False
        return True

    async def retry(self, end: EndDeployment | None = None) -> list[PendingEnd]:
        """Try every pending end once; return those done. Database errors leave them pending.
        The list is written to the store when some were done."""
        if end is None:
            from .deploy import end_deployment

            end = end_deployment
        done: list[PendingEnd] = []
        for key, entry in list(self._entries.items()):
            try:
                ended = await end(entry.serve, entry.environment, entry.deployment_id)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the entry for the next tick
                log.info("pending end of %s/%s still waits: %s", entry.serve, entry.environment, type(exc).__name__)
                continue
            self._entries.pop(key, None)
            self._dirty = True
            done.append(entry)
            log.info(
                "ended deployment %s of serve %s in %s, left over from the deletion of %s",
                ended,
                entry.serve,
                entry.environment,
                entry.mlserve,
            )
        await self.flush()
        return done


class ConfigMapStore:
    """The list as JSON in one key of a ConfigMap, written with server-side apply; the
    ConfigMap is deleted when the list is empty."""

    KEY = "pending.json"
    MALFORMED_KEY = "malformed.json"
    """Entries of :attr:`KEY` that could not be read, kept for a person to look at."""

    def __init__(self, client: Any, namespace: str, name: str, field_manager: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.field_manager = field_manager
        self.malformed: list[str] = []
        """The unreadable entries (as text), written back under :attr:`MALFORMED_KEY`."""
        self.warnings: list[str] = []
        """Messages about unreadable content not yet reported (the sync posts them as Events)."""

    def reference(self) -> dict[str, Any]:
        """The ConfigMap as an Event's object."""
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": self.name, "namespace": self.namespace}}

    async def load(self) -> list[PendingEnd]:
        """The entries that can be read. What cannot (the key is not JSON, an entry lacks a
        field) never stops the sync: it is logged, kept aside under :attr:`MALFORMED_KEY` (the
        next write keeps it there, for a person to fix or remove) and said in :attr:`warnings`."""
        try:
            found = await self.client.get(ConfigMap, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return []
            raise
        data = found.data or {}
        entries, malformed = parse_entries(data.get(self.KEY) or "[]")
        kept = _json_list(data.get(self.MALFORMED_KEY))
        new = [item for item in malformed if item not in kept and item not in self.malformed]
        self.malformed = [*kept, *(m for m in self.malformed if m not in kept), *new]
        if new:
            message = (
                f"ConfigMap {self.namespace}/{self.name} (MLSERVE_PENDING_CONFIGMAP), key {self.KEY}: "
                f"{len(new)} entr{'y' if len(new) == 1 else 'ies'} cannot be read (each needs serve, "
                f"environment and since; the key a JSON list): kept aside under key {self.MALFORMED_KEY}; "
                "the sync goes on without them. Fix them back into the list, or remove that key"
            )
            log.warning("%s", message)
            self.warnings.append(message)
        return entries

    async def save(self, entries: list[PendingEnd]) -> None:
        if not entries and not self.malformed:  # nothing pending: no ConfigMap left behind
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
            data={
                self.KEY: json.dumps([e.to_json() for e in entries], sort_keys=True),
                **({self.MALFORMED_KEY: json.dumps(self.malformed)} if self.malformed else {}),
            },
        )
        await self.client.apply(body, field_manager=self.field_manager, force=True)
