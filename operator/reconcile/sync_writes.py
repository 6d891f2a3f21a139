"""The database sync's writes: the actions of one pass, carried out on the API server.

:func:`.sync_plan.decide` says what to do without I/O; :func:`execute` does it: creates and
version changes several at a time, then deletes, each failure counted in the
:class:`SyncResult` without stopping the others. :func:`set_to_deployment` is the one way
an MLServe is set to a deployment of the database, by the sync and by the reconcile (when the
database moved first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import CascadeType, PatchType

from mlserve.operator import logfields

from .identity import Pair, pair_of
from .kube import MLServe, as_dict
from .sync_checks import SyncIssue
from .sync_plan import (
    Action,
    ActiveRow,
    Create,
    Delete,
    LeaveToMLServe,
    SetVersion,
    Skip,
    new_mlserve,
    set_version_operations,
)

__all__ = ["WRITE_CONCURRENCY", "SyncResult", "execute", "set_to_deployment"]

log = logging.getLogger(__name__)

WRITE_CONCURRENCY = 8
"""MLServes the sync creates or changes at the same time during one pass."""


@dataclass
class SyncResult:
    """What one tick did (``Kind``-less ``namespace/name`` of each MLServe touched)."""

    full_pass: bool = False
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    left_to_mlserve: list[str] = field(default_factory=list)
    """The MLServe has a request pending: its own reconcile records it."""
    pending_written: list[Pair] = field(default_factory=list)
    """Undeploys that deletion had to skip, written now."""
    failed: list[str] = field(default_factory=list)
    """What could not be done; the next tick tries again."""
    waiting_for_artifact: list[str] = field(default_factory=list)
    """uids of the MLServes whose status says their version has no usable artifact yet (being
    built, failed, missing): the operator wakes them after a full pass, which runs when the
    watermark saw the builds change."""
    failed_pairs: list[Pair] = field(default_factory=list)
    """The pairs of the failures in :attr:`failed` that were one pair's write: each retried on
    its own, with backoff, without holding back the watermark."""
    issues: list[SyncIssue] = field(default_factory=list)
    """Database rows the pass could not use (:mod:`.sync_checks`): their pairs were left alone."""

    @property
    def blocking_failures(self) -> int:
        """Failures that concern no one pair (a list, a pending undeploy): the watermark waits."""
        return len(self.failed) - len(self.failed_pairs)

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


Written = Callable[[Mapping[str, Any] | None, Mapping[str, Any]], None]
"""Told of each MLServe created (``None``, the answer) or changed (as read, the answer)."""


async def execute(
    client: AsyncClient,
    actions: Sequence[Action],
    field_manager: str,
    result: SyncResult,
    *,
    written: Written | None = None,
) -> None:
    """Carry out one pass's actions: the creates and version changes several at a time (a
    burst of deploys is not written one after the other), then the deletes in order.
    ``written`` hears of every MLServe created or changed (the cache the next pass reads)."""
    writes: list[Create | SetVersion] = []
    for action in actions:
        if isinstance(action, LeaveToMLServe):
            result.left_to_mlserve.append(action.ref)
        elif isinstance(action, Skip):
            log.debug("database sync leaves %s alone: %s", action.ref, action.reason)
        elif isinstance(action, Create | SetVersion):
            writes.append(action)
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def gated(action: Create | SetVersion) -> None:
        namespace, _, name = action.ref.partition("/")
        row = action.row
        with logfields.bound(
            namespace=namespace,
            mlserve=name,
            serve=row.serve,
            environment=row.environment,
            deployment_id=row.deployment_id,
        ):
            async with gate:
                await _write(client, action, field_manager, result, written)

    await asyncio.gather(*(gated(action) for action in writes))
    result.created.sort()
    result.updated.sort()
    for action in actions:
        if isinstance(action, Delete):
            await _delete(client, action, result)


async def _write(
    client: AsyncClient, action: Create | SetVersion, field_manager: str, result: SyncResult, written: Written | None
) -> None:
    """Create the pair's MLServe, or set its version; an API error is counted as failed."""
    row = action.row
    try:
        if isinstance(action, Create):
            created = await client.create(
                MLServe.from_dict(new_mlserve(row, action.name or None)), field_manager=field_manager
            )
            if written is not None:
                written(None, as_dict(created))
            result.created.append(action.ref)
            log.info(
                "created MLServe %s for deployment %s (%s %s in %s)",
                action.ref,
                row.deployment_id,
                row.serve,
                row.artifact_version,
                row.environment,
            )
        else:
            patched = await _set_version(client, action.mlserve, row, field_manager)
            if written is not None:
                written(action.mlserve, patched)
            result.updated.append(action.ref)
            log.info(
                "MLServe %s follows deployment %s: artifactVersion %s -> %s",
                action.ref,
                row.deployment_id,
                (action.mlserve.get("spec") or {}).get("artifactVersion"),
                row.artifact_version,
            )
    except ApiError as exc:
        code = exc.status.code
        result.failed.append(f"{action.ref}: {code} {exc.status.message}")
        result.failed_pairs.append(row.pair)
        if code in (409, 422):  # changed meanwhile: the next tick decides again
            log.info("MLServe %s changed while the sync read it; deciding again next tick", action.ref)
        else:
            log.warning("database sync could not write MLServe %s: %s", action.ref, exc.status.message)


async def _set_version(
    client: AsyncClient, body: Mapping[str, Any], row: ActiveRow, field_manager: str
) -> dict[str, Any]:
    return await set_to_deployment(client, body, row.artifact_version, row.deployment_id, field_manager)


async def set_to_deployment(
    client: AsyncClient, body: Mapping[str, Any], artifact_version: str, deployment_id: int, field_manager: str
) -> dict[str, Any]:
    """Set spec.artifactVersion and the annotation to a deployment of the database, only if
    the spec is still the one read (:func:`.sync_plan.set_version_operations`; 422 when it
    changed). The sync and the MLServe's reconcile (when the database moved first) both
    write this way. Returns the patched MLServe."""
    metadata = body["metadata"]
    patched = await client.patch(
        MLServe,
        metadata["name"],
        set_version_operations(body, artifact_version, deployment_id),
        namespace=metadata["namespace"],
        patch_type=PatchType.JSON,
        field_manager=field_manager,
    )
    return as_dict(patched)


async def _delete(client: AsyncClient, action: Delete, result: SyncResult) -> None:
    """Delete an undeployed pair's MLServe (its children go with it); gone already counts."""
    metadata = action.mlserve["metadata"]
    try:
        await client.delete(MLServe, metadata["name"], namespace=metadata["namespace"], cascade=CascadeType.BACKGROUND)
    except ApiError as exc:
        if exc.status.code != 404:
            result.failed.append(f"{action.ref}: {exc.status.code} {exc.status.message}")
            pair = pair_of(action.mlserve, by_labels=True)
            result.failed_pairs.append(pair if pair is not None else ("", action.ref))
            return
    result.deleted.append(action.ref)
    log.info("deleted MLServe %s: its deployment %s ended in the database", action.ref, list(action.deployment_ids))
