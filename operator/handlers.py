"""kopf wiring only: start-up, shut-down, the probe; the reconciles run in :mod:`.reconcile.controller`.

How the reconcile is driven (controller-runtime's model, level-triggered):

- kopf runs the operator process: the startup and cleanup handlers, the liveness endpoint
  and, with ``MLSERVE_PEERING_NAME``, the peering that decides which replica acts. Events
  are posted by :class:`~.reconcile.events.ApiEvents` (kopf's poster only serves its handlers). It registers **no** handler on MLServes or children, so it
  writes nothing on them: no finalizer, no diff-base (``last-handled-configuration``) and no
  progress annotations, and it keeps no per-object state.
- :class:`~.reconcile.controller.Controller` (started here) lists and watches the MLServes and
  every child kind into small caches, and runs :func:`~.reconcile.mlserve.reconcile` from a
  work queue keyed by MLServe, with ``MLSERVE_WORKERS`` workers: de-duplicated (a burst of
  events costs one reconcile; one MLServe never has two reconciles at once), per-key backoff
  with jitter for temporary failures, the drift check every ``MLSERVE_DRIFT_CHECK_INTERVAL``
  (spread by jitter), a schedule's next run, and a global rate (``MLSERVE_RECONCILE_RATE``).
  A converged reconcile reads only the caches: no API request, no write.
- An MLServe is enqueued when it appears, when its request changes (generation, rollback
  annotation), when it is being deleted, when a child changes in what the reconcile reads
  (an HPA's metrics do not count), for an MLServe in Conflict when the holder of its pair
  goes, when the database rows of its pair change (the sync's snapshot: an infra config, an
  environment), and, for an MLServe waiting for its artifact (phase Building, or a version
  not built), after a database sync pass (one runs when a build job's status changes). The
  claims index of :mod:`.reconcile.identity` comes from the MLServe cache.

Errors: invalid input becomes a condition and an Event and the MLServe waits for a change or
the drift check (the equivalent of ``kopf.PermanentError``); temporary failures (database
down, API errors) are retried with doubling backoff and jitter (the equivalent of
``kopf.TemporaryError(delay=...)``). Neither crashes the operator.

Deletion: the reconcile puts the finalizer (:data:`~.spec.api.FINALIZER`) on an MLServe once
it reflects a deployment (the sync creates its MLServes with it); when the MLServe is being deleted the controller runs
:func:`~.reconcile.finalize.finalize` (retried with backoff until the database answers or
``MLSERVE_DELETION_DB_TIMEOUT`` passes) and then removes the finalizer with a JSON patch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from mlserve.operator import metrics
from mlserve.operator.peering import ActiveReplica, KopfInternalsChanged, kopf_pause_toggles
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import api
from mlserve.operator.spec.namespaces import Scope, scope_of

from .reconcile import kube, sync
from .reconcile.controller import Controller
from .reconcile.events import ApiEvents
from .reconcile.identity import Pair
from .reconcile.pending import ConfigMapStore, PendingUndeploys
from .reconcile.rows import RowCache
from .reconcile.runtime import Runtime

log = logging.getLogger("mlserve.operator")


@dataclass
class OperatorState:
    """What the handlers share, kept in kopf's memo."""

    settings: OperatorSettings
    runtime: Runtime | None = None
    controller: Controller | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    active: Callable[[], bool] | None = None
    """Under peering: whether this replica is the one that acts (None: standalone, always)."""
    heartbeat: sync.SyncHeartbeat = field(default_factory=sync.SyncHeartbeat)
    """The database sync loop's; the liveness probe checks it."""

    def wake_pairs(self, pairs: set[Pair]) -> None:
        """The database rows of ``pairs`` changed (an infra config, an environment): reconcile
        their MLServes now rather than at the next drift check."""
        if self.controller is not None:
            self.controller.enqueue_pairs(pairs)


def _state(memo: Any) -> OperatorState:
    state = memo.state
    if not isinstance(state, OperatorState):
        raise TypeError("kopf's memo must hold the OperatorState (cli/run.py sets it)")
    return state


# --- start-up and shut-down -------------------------------------------------------------------


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf's settings for this operator (called by the startup handler, before kopf starts
    watching: its observers and watchers wait for the startup handlers). kopf handles no
    MLServe nor child, so it stores nothing on them; the finalizer is named for clarity."""
    settings.persistence.finalizer = api.FINALIZER
    settings.posting.reporting_component = ours.field_manager
    settings.watching.server_timeout = 300
    settings.peering.stealth = True
    if ours.peering_name:
        settings.peering.name = ours.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = ours.clusterwide
    else:
        settings.peering.standalone = True
    if scope_of(ours.namespaces) is Scope.NAMESPACES:
        # Names only: nothing to discover. kopf would otherwise list and watch namespaces and
        # CRDs, which a per-namespace install may not do; it retries the refusals for about a
        # minute before it falls back to these same names (permissions.REFUSED_WHEN_NAMESPACED).
        settings.scanning.disabled = True


@kopf.on.startup()
async def startup(
    *, settings: kopf.OperatorSettings, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    state = _state(memo)
    ours = state.settings
    configure_kopf(settings, ours)
    if ours.peering_name:
        try:
            # The database sync and the reconciles run outside kopf's handlers: they pause with them.
            state.active = ActiveReplica(kopf_pause_toggles(), ours.peering_name)
        except KopfInternalsChanged as exc:
            raise kopf.PermanentError(str(exc)) from None

    from mlserve.models.db import init_db, prepare_schema
    from mlserve.models.errors import SchemaNotReady

    try:
        await init_db(ours.database, create_schema=False)
        await prepare_schema(create=ours.db_create_schema, migrate_on_start=ours.db_migrate_on_start)
    except SchemaNotReady as exc:
        # `mlserve run` refuses to start on such a schema; reached here only when the database
        # answered late. Retried, so the operator starts once someone runs the migration.
        logger.error("%s", exc)
        raise kopf.TemporaryError("the database schema is not ready", delay=ours.retry_max_delay) from None
    except Exception as exc:  # noqa: BLE001 - the models' errors already hide the password
        # Retried by kopf with backoff; nothing is watched until the database answers.
        logger.warning("the database is not usable yet: %s", exc)
        raise kopf.TemporaryError(f"database not usable: {type(exc).__name__}", delay=ours.retry_delay) from None
    client = kube.make_client(ours.field_manager)
    store = None
    if ours.operator_namespace:
        store = ConfigMapStore(client, ours.operator_namespace, ours.pending_configmap, ours.field_manager)
    else:
        logger.info("MLSERVE_OPERATOR_NAMESPACE is not set: undeploys a deletion skips are kept in memory only")
    # One list of skipped undeploys: the finalizer adds to it, the sync loop retries it.
    events = ApiEvents(client, ours.field_manager)
    state.background.append(asyncio.create_task(events.run(), name="events"))
    # The rows of this cluster: the sync loop refreshes them, the reconciles read them.
    # A tick either confirms them, or drops them when it fails or passes MLSERVE_SYNC_TICK_TIMEOUT.
    rows = RowCache(ours.cluster_name, max_age=ours.sync_tick_timeout + 3 * ours.sync_interval)
    rows.subscribe(state.wake_pairs)
    state.runtime = Runtime(settings=ours, client=client, events=events, pending=PendingUndeploys(store), rows=rows)
    metrics.watch_pending(lambda: len(state.runtime.pending) if state.runtime is not None else 0)
    # Watches hold their connections for good: clients of their own, so they never wait for
    # (or hold) a connection a reconcile needs.
    state.controller = Controller(state.runtime, lambda: kube.make_client(ours.field_manager), active=state.active)
    state.background.append(asyncio.create_task(state.controller.run(), name="reconcile-controller"))
    state.background.append(asyncio.create_task(_database_sync(state), name="database-sync"))
    if ours.builder.enabled:
        from .reconcile.builder import run_builder_loop

        builder = run_builder_loop(ours.builder, client, state.stop, active=state.active)
        state.background.append(asyncio.create_task(builder, name="artifact-builder"))
    if ours.dcm_listen is not None:
        from .dcm.server import serve_forever

        dcm = serve_forever(ours.dcm_listen, cluster=ours.cluster_name, namespaces=ours.namespaces, client=client)
        state.background.append(asyncio.create_task(dcm, name="dcm-endpoint"))
    logger.info(
        "mlserve operator started for cluster %s (%s), %d workers",
        ours.cluster_name,
        "cluster-wide" if ours.clusterwide else "namespaces " + ",".join(ours.namespaces),
        ours.workers,
    )


async def _database_sync(state: OperatorState) -> None:
    """Database → cluster (DESIGN.md data flow 2), with the database writes that deletions
    had to skip retried first. Under peering, only while this replica is the active one."""
    assert state.runtime is not None

    def wake_waiting(result: sync.SyncResult) -> None:
        # A full pass runs when the watermark moved, a build ending included: MLServes waiting
        # for their artifact look again at once instead of at the next drift check.
        if state.controller is not None:
            state.controller.enqueue(result.waiting_for_artifact)

    await sync.run_sync_loop(
        state.settings,
        state.runtime.client,
        state.stop,
        on_result=wake_waiting,
        active=state.active,
        pending=state.runtime.pending,
        rows=state.runtime.rows,
        heartbeat=state.heartbeat,
        events=state.runtime.events,
        mlserves=state.controller.sync_source if state.controller is not None else None,
    )


@kopf.on.cleanup()
async def cleanup(*, memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    state.stop.set()
    for task in state.background:
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)
    if state.controller is not None:
        await state.controller.close()
    if state.runtime is not None:
        await state.runtime.client.close()
    from mlserve.models.db import close_db

    await close_db()


@kopf.on.probe(id="database-sync-pending")
async def pending_probe(*, memo: kopf.Memo, **_: Any) -> int:
    """Shown on the liveness endpoint: how many deletions wait for the database."""
    runtime = _state(memo).runtime
    return len(runtime.pending) if runtime is not None else 0


@kopf.on.probe(id="database-sync-heartbeat")
async def sync_heartbeat_probe(*, memo: kopf.Memo, **_: Any) -> float:
    """Seconds since the database sync loop last finished a tick. Past MLSERVE_SYNC_STALL_TIMEOUT
    the probe fails, and with it the liveness endpoint: the loop is stuck, restart the pod."""
    state = _state(memo)
    age = round(state.heartbeat.age(), 1)
    if age > state.settings.sync_stall_timeout:
        raise kopf.PermanentError(
            f"the database sync loop has not finished a tick for {age:g}s "
            f"(MLSERVE_SYNC_STALL_TIMEOUT={state.settings.sync_stall_timeout:g}s)"
        )
    return age


@kopf.on.probe(id="reconcile-queue")
async def queue_probe(*, memo: kopf.Memo, **_: Any) -> dict[str, int | bool]:
    """Shown on the liveness endpoint: the caches and the work queue."""
    controller = _state(memo).controller
    if controller is None:
        return {"synced": False}
    return {
        "synced": controller.synced.is_set(),
        "mlserves": len(controller.mlserves),
        "children": len(controller.children),
        "ready": len(controller.queue),
        "waiting": controller.queue.waiting,
        "processing": controller.queue.processing,
    }
