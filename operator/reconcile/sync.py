"""Database → cluster (DESIGN.md data flow 2): MLServes follow the active deployments.

For every environment bound to this operator's cluster (``env_configs.cluster_name``), the
sync creates, updates or deletes MLServes so they match ``active_deployments``. The
protocol is written down in ``docs/sync.md``; in short:

* A tick costs one query when nothing changed (:func:`.sync_reads.read_watermark`); a full
  pass runs when the watermark moved, something is pending, or the full-resync interval
  passed.
* An MLServe *reflects* the deployment its ``mlserve.darwin.io/deployment-id`` annotation
  names. When the pair's active deployment is another one, the sync sets the MLServe to it
  (spec.artifactVersion and the annotation, guarded by the generation read); when the pair
  has none and the MLServe reflects one that ended, the sync deletes the MLServe. An MLServe
  that reflects the active deployment but asks for another version has a request pending:
  its own reconcile records it. No clock is compared.
* A namespace whose MLServes could not be listed is skipped for the pass (nothing is
  created there).
* Undeploys the finalizer could not write (database down) are retried first
  (:mod:`.pending`); until written, their pair is not re-created.

A pass reads (:mod:`.sync_reads`, the API server's list of MLServes), decides without I/O
(:func:`.sync_plan.decide`) and writes the actions here. :func:`sync_once` is one tick
(testable); :func:`run_sync_loop` repeats it until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import CascadeType, PatchType

from mlserve.operator.spec import api

from . import sync_reads
from .deploy import end_deployment, is_database_error
from .identity import Pair
from .kube import MLServe, as_dict
from .pending import PendingUndeploys
from .sync_plan import (
    Action,
    ActiveRow,
    Create,
    Delete,
    LeaveToMLServe,
    SetVersion,
    Skip,
    Snapshot,
    decide,
    deployments_to_check,
    new_mlserve,
    set_version_operations,
)
from .sync_reads import Watermark, read_watermark

__all__ = ["SyncResult", "SyncState", "run_sync_loop", "set_to_deployment", "sync_once"]

log = logging.getLogger(__name__)

WRITE_CONCURRENCY = 8
"""MLServes the sync creates or changes at the same time during one pass."""


@dataclass
class SyncState:
    """What the loop remembers between ticks."""

    watermark: Watermark | None = None
    last_full_pass: float | None = None
    """``clock()`` at the last full pass that succeeded."""
    unwatched: set[str] = field(default_factory=set)
    """Environments already logged as outside the watched namespaces."""


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

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


# --- one pass: read, decide, write ---------------------------------------------------------------


async def _retry_pending(pending: PendingUndeploys, result: SyncResult) -> set[Pair]:
    """Write the undeploys deletion had to skip; returns the pairs still held back.

    An MLServe whose pair is held back is not re-created: it was deleted, and its
    deployment is only still active because the database was down at the time.
    """
    await pending.flush()  # a write of the list that failed earlier
    if not pending:
        return set()
    done = await pending.retry(end_deployment)
    result.pending_written.extend((entry.serve, entry.environment) for entry in done)
    held = {(entry.serve, entry.environment) for entry in pending.entries()}
    result.failed.extend(f"undeploy {serve}/{environment}" for serve, environment in sorted(held))
    return held


async def _list_mlserves(
    client: AsyncClient, namespaces: Sequence[str], result: SyncResult
) -> dict[str, list[dict[str, Any]]]:
    """The MLServes of each namespace; a namespace that cannot be listed is left out (and
    counted as failed: the pass is repeated)."""
    listed: dict[str, list[dict[str, Any]]] = {}
    for namespace in namespaces:
        try:
            listed[namespace] = [as_dict(item) async for item in client.list(MLServe, namespace=namespace)]
        except ApiError as exc:
            result.failed.append(f"list {namespace}: {exc.status.message}")
    return listed


async def _full_pass(
    client: AsyncClient,
    cluster_name: str,
    field_manager: str,
    result: SyncResult,
    namespaces: Sequence[str] = (),
    unwatched: set[str] | None = None,
    pending: PendingUndeploys | None = None,
) -> None:
    # Skipped undeploys first, so the rows read next already reflect them.
    held = await _retry_pending(pending, result) if pending is not None else set()
    bound = await sync_reads.bound_environments(cluster_name, namespaces, unwatched)
    rows, duplicates = await sync_reads.active_rows(bound)
    environments = {env.name: env.namespace for env in bound.values()}
    snapshot = Snapshot(
        rows=rows,
        duplicates=duplicates,
        environments=environments,
        mlserves=await _list_mlserves(client, sorted(set(environments.values())), result),
        held=held,
    )
    # Deployments the MLServes of undeployed pairs reflect: are they ended?
    ended = await sync_reads.ended_deployments(deployments_to_check(snapshot))
    actions = decide(dataclasses.replace(snapshot, ended=ended))
    await _execute(client, actions, field_manager, result)


async def _execute(client: AsyncClient, actions: Sequence[Action], field_manager: str, result: SyncResult) -> None:
    """Carry out one pass's actions: the creates and version changes several at a time (a
    burst of deploys is not written one after the other), then the deletes in order."""
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
        async with gate:
            await _write(client, action, field_manager, result)

    await asyncio.gather(*(gated(action) for action in writes))
    result.created.sort()
    result.updated.sort()
    for action in actions:
        if isinstance(action, Delete):
            await _delete(client, action, result)


async def _write(client: AsyncClient, action: Create | SetVersion, field_manager: str, result: SyncResult) -> None:
    """Create the pair's MLServe, or set its version; an API error is counted as failed."""
    row = action.row
    try:
        if isinstance(action, Create):
            await client.create(MLServe.from_dict(new_mlserve(row, action.name or None)), field_manager=field_manager)
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
            await _set_version(client, action.mlserve, row, field_manager)
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
        if code in (409, 422):  # changed meanwhile: the next tick decides again
            log.info("MLServe %s changed while the sync read it; deciding again next tick", action.ref)
        else:
            log.warning("database sync could not write MLServe %s: %s", action.ref, exc.status.message)


async def _set_version(client: AsyncClient, body: Mapping[str, Any], row: ActiveRow, field_manager: str) -> None:
    await set_to_deployment(client, body, row.artifact_version, row.deployment_id, field_manager)


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
            return
    result.deleted.append(action.ref)
    log.info("deleted MLServe %s: its deployment %s ended in the database", action.ref, list(action.deployment_ids))


# --- the tick and the loop -----------------------------------------------------------------------


async def sync_once(
    client: AsyncClient,
    cluster_name: str,
    state: SyncState,
    *,
    field_manager: str = api.sync_field_manager(api.FIELD_MANAGER),
    full_resync_interval: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
    force_full: bool = False,
    namespaces: Sequence[str] = (),
    pending: PendingUndeploys | None = None,
) -> SyncResult:
    """One tick: read the watermark; when it moved (or a full pass is due) act on every pair.

    ``namespaces`` is ``MLSERVE_NAMESPACES`` (empty: the whole cluster): environments whose
    namespace it does not match are left alone. ``pending`` holds the undeploys deletions
    had to skip (the operator's one list; None: nothing is pending).

    Database errors propagate (the loop logs them and tries again next tick); API errors on
    one MLServe are collected in ``result.failed`` and do not stop the others.
    """
    result = SyncResult()
    watermark = await read_watermark()
    now = clock()
    full_due = state.last_full_pass is None or now - state.last_full_pass >= full_resync_interval
    has_pending = bool(pending)
    if not (force_full or full_due or has_pending or watermark != state.watermark):
        return result
    result.full_pass = True
    await _full_pass(client, cluster_name, field_manager, result, namespaces, state.unwatched, pending)
    if not result.failed:
        state.watermark = watermark
        state.last_full_pass = now
    return result


async def _tick(
    client: AsyncClient, settings: Any, state: SyncState, field_manager: str, pending: PendingUndeploys
) -> SyncResult:
    """One tick of the loop, logged when it made a full pass."""
    result = await sync_once(
        client,
        settings.cluster_name,
        state,
        field_manager=field_manager,
        full_resync_interval=settings.full_resync_interval,
        namespaces=settings.namespaces,
        pending=pending,
    )
    if result.full_pass:
        log.debug(
            "database sync pass: %d created, %d updated, %d deleted, %d failed",
            len(result.created),
            len(result.updated),
            len(result.deleted),
            len(result.failed),
        )
    return result


def _log_failure(exc: Exception, interval: float) -> None:
    if is_database_error(exc):
        log.warning("database sync: the database did not answer (%s); retrying in %gs", type(exc).__name__, interval)
    else:
        log.exception("database sync tick failed; retrying in %gs", interval)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


@dataclass
class _Replica:
    """Whether this replica acts (kopf peering; ``active`` None: always), logged when it
    changes."""

    active: Callable[[], bool] | None
    waiting: bool = False

    def acts(self) -> bool:
        if self.active is not None and not self.active():
            if not self.waiting:
                log.info("database sync waits: this replica is not the active one (kopf peering)")
                self.waiting = True
            return False
        if self.waiting:
            log.info("database sync acts: this replica is the active one (kopf peering)")
            self.waiting = False
        return True


async def run_sync_loop(
    settings: Any,
    client: AsyncClient,
    stop: asyncio.Event,
    *,
    on_result: Callable[[SyncResult], None] | None = None,
    active: Callable[[], bool] | None = None,
    pending: PendingUndeploys | None = None,
) -> None:
    """Tick every ``settings.sync_interval`` seconds until ``stop`` is set.

    ``settings`` is the operator's :class:`~mlserve.operator.settings.OperatorSettings`
    (``cluster_name``, ``namespaces``, ``field_manager``, ``sync_interval``,
    ``full_resync_interval``). Errors never end the loop: they are logged and the next tick
    starts from fresh state.

    ``active`` (under kopf peering, :class:`mlserve.operator.peering.ActiveReplica`) is asked
    before every tick: while it says no, the loop neither reads the database nor writes to
    the cluster, and it starts again with a full pass when it says yes.

    ``pending`` is the operator's list of undeploys deletions had to skip (the one the
    finalizer adds to); without it, one in memory that only this loop sees.
    """
    pending = pending if pending is not None else PendingUndeploys()
    replica = _Replica(active)
    state = SyncState()
    field_manager = api.sync_field_manager(settings.field_manager)
    failures = 0
    restored = False
    log.info(
        "database sync started for cluster %s: every %gs, full pass every %gs",
        settings.cluster_name,
        settings.sync_interval,
        settings.full_resync_interval,
    )
    while not stop.is_set():
        if not replica.acts():
            state = SyncState()  # when it acts again, a full pass: the active replica wrote meanwhile
            restored = False  # and the pending undeploys as the active replica left them
            await _sleep(stop, min(1.0, settings.sync_interval))
            continue
        try:
            if not restored:
                # Undeploys a deletion skipped before a restart: without them, the pass would
                # re-create the MLServes that were deleted.
                await pending.restore()
                restored = True
            result = await _tick(client, settings, state, field_manager, pending)
            if on_result is not None:
                on_result(result)
            if failures:
                log.info("database sync recovered")
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure (logged)
            failures += 1
            state.watermark = None  # after an error, the next good tick is a full pass
            _log_failure(exc, settings.sync_interval)
        await _sleep(stop, settings.sync_interval)
    log.info("database sync stopped")
