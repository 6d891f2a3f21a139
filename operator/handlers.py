"""kopf wiring only: every handler calls one function of :mod:`mlserve.operator.reconcile`.

How the reconcile is driven (level-triggered, one worker per MLServe):

- a kopf daemon per MLServe runs :func:`~.reconcile.mlserve.reconcile` when the MLServe
  appears (created, or found at start-up: kopf's resume), then again whenever it is woken,
  and at the latest every ``MLSERVE_DRIFT_CHECK_INTERVAL`` (the drift timer);
- it is woken by a change of the MLServe's request (generation or rollback annotation),
  by any event of a child (Deployment, Service, HPA, Ingress, PDB, RayJob, RayCronJob
  labelled ``app.kubernetes.io/managed-by=mlserve-operator``: edits, deletions, readiness),
  and, for an MLServe in Conflict, by the deletion of the holder of its pair;
- wake-ups that arrive during a reconcile coalesce into one more run, so one MLServe never
  has two reconciles at once and a burst of child events costs one reconcile.

Every handler is a coroutine: kopf runs plain functions in worker threads, and waking a
worker (an ``asyncio.Event``) is only safe from the event loop's own thread.

Errors: invalid input becomes a condition and an Event and the worker waits for a change
(the equivalent of ``kopf.PermanentError``, without kopf stopping the worker for good);
temporary failures (database down, API errors) are retried with doubling backoff (the
equivalent of ``kopf.TemporaryError(delay=...)``). Neither crashes the operator, and kopf
writes no progress annotations for them, so a converged operator writes nothing.

Deletion uses kopf's finalizer (:data:`~.spec.api.FINALIZER`) and retries with
``kopf.TemporaryError`` until the database answers or the deletion timeout passes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from mlserve.operator.peering import ActiveReplica, KopfInternalsChanged, kopf_pause_toggles
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import api
from mlserve.operator.spec.namespaces import Scope, scope_of

from .reconcile import kube, sync
from .reconcile.events import EventType
from .reconcile.finalize import finalize
from .reconcile.identity import Claim, claim_of
from .reconcile.mlserve import Runtime, reconcile
from .reconcile.pending import ConfigMapStore, PendingUndeploys

log = logging.getLogger("mlserve.operator")

MLSERVES = (api.GROUP, api.VERSION, api.PLURAL)
CHILD_LABELS = {api.LABEL_MANAGED_BY: api.MANAGED_BY}


@dataclass
class OperatorState:
    """What the handlers share, kept in kopf's memo."""

    settings: OperatorSettings
    runtime: Runtime | None = None
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    fingerprints: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    active: Callable[[], bool] | None = None
    """Under peering: whether this replica is the one that acts (None: standalone, always)."""

    def wake(self, uid: str) -> None:
        event = self.wakeups.get(uid)
        if event is not None:
            event.set()


class KopfEvents:
    """The reconcile's :class:`~.reconcile.events.EventSink` in the operator: posts through kopf's
    event queue (batched, as ``mlserve-operator``)."""

    def post(self, body: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        kopf.event(cast(Any, dict(body)), type=type_, reason=reason, message=message[:1024])


def _state(memo: Any) -> OperatorState:
    state = memo.state
    if not isinstance(state, OperatorState):
        raise TypeError("kopf's memo must hold the OperatorState (cli/run.py sets it)")
    return state


def _claims(index: Mapping[tuple[str, str], Any], body: Mapping[str, Any]) -> list[Claim]:
    got = claim_of(body)
    if got is None:
        return []
    return list(index.get(got[0], []))


# --- start-up and shut-down -------------------------------------------------------------------


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf's settings for this operator (called by the startup handler, before kopf starts
    watching: its observers and watchers wait for the startup handlers)."""
    settings.persistence.finalizer = api.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = ours.field_manager
    settings.watching.server_timeout = 300
    for child in api.CHILD_KINDS:
        # Children are watched by label on the server: other Deployments never reach us.
        settings.watching.label_selectors[child.group, child.version, child.plural] = (
            f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"
        )
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
        # A kind (a KubeRay CRD) installed after the start is then served after a restart.
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
            # The database sync runs outside kopf's handlers: it pauses with them.
            state.active = ActiveReplica(kopf_pause_toggles(), ours.peering_name)
        except KopfInternalsChanged as exc:
            raise kopf.PermanentError(str(exc)) from None

    from mlserve.models.db import init_db

    try:
        await init_db(ours.database)
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
    state.runtime = Runtime(settings=ours, client=client, events=KopfEvents(), pending=PendingUndeploys(store))
    state.background.append(asyncio.create_task(_database_sync(state), name="database-sync"))
    logger.info(
        "mlserve operator started for cluster %s (%s)",
        ours.cluster_name,
        "cluster-wide" if ours.clusterwide else "namespaces " + ",".join(ours.namespaces),
    )


async def _database_sync(state: OperatorState) -> None:
    """Database → cluster (DESIGN.md data flow 2), with the database writes that deletions
    had to skip retried first. Under peering, only while this replica is the active one."""
    assert state.runtime is not None
    await sync.run_sync_loop(
        state.settings, state.runtime.client, state.stop, active=state.active, pending=state.runtime.pending
    )


@kopf.on.cleanup()
async def cleanup(*, memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    state.stop.set()
    for task in state.background:
        task.cancel()
    await asyncio.gather(*state.background, return_exceptions=True)
    if state.runtime is not None:
        await state.runtime.client.close()
    from mlserve.models.db import close_db

    await close_db()


@kopf.on.probe(id="database-sync-pending")
async def pending_probe(*, memo: kopf.Memo, **_: Any) -> int:
    """Shown on the liveness endpoint: how many deletions wait for the database."""
    runtime = _state(memo).runtime
    return len(runtime.pending) if runtime is not None else 0


# --- the index of claims: who holds which (serve, environment) ----------------------------------


@kopf.index(*MLSERVES)
async def mlserve_claims(*, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Claim] | None:
    got = claim_of(body)
    if got is None:
        return None
    pair, claim = got
    return {pair: claim}


# --- one worker per MLServe ---------------------------------------------------------------------


# kopf's handler protocols do not list index keyword arguments (``mlserve_claims``), which
# kopf passes by name: hence the type: ignore on the decorators of handlers that take one.
@kopf.daemon(*MLSERVES, id="reconcile", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def worker(
    *,
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    meta: kopf.Meta,
    memo: kopf.Memo,
    mlserve_claims: kopf.Index[tuple[str, str], Claim],
    **_: Any,
) -> None:
    state = _state(memo)
    runtime = state.runtime
    assert runtime is not None
    uid = str(meta.uid)
    wakeup = state.wakeups.setdefault(uid, asyncio.Event())
    known: Mapping[str, Any] | None = None  # the MLServe as our own last writes left it
    basis_version: str | None = None
    failures = 0
    try:
        while not stopped:
            wakeup.clear()
            live = copy.deepcopy(dict(body))
            if known is not None and live["metadata"].get("resourceVersion") == basis_version:
                live = copy.deepcopy(dict(known))  # the watch has not caught up with our writes
            if live["metadata"].get("deletionTimestamp"):
                return
            basis_version = live["metadata"].get("resourceVersion")
            try:
                report = await reconcile(live, runtime, _claims(mlserve_claims, live))
            except Exception:  # a bug must not end the worker: log it and retry with backoff
                log.exception("reconcile of %s/%s failed unexpectedly", meta.namespace, meta.name)
                known = None
                await _wait(wakeup, stopped, state.settings.backoff(failures))
                failures += 1
                continue
            known = dict(report.body or live)
            if report.new_status is not None:
                known["status"] = report.new_status
            if report.retry_after is not None:
                delay = state.settings.backoff(failures)
                failures += 1
            else:
                delay = state.settings.drift_check_interval
                failures = 0
            if report.requeue_after is not None:  # a scheduled workflow's next run
                delay = min(delay, report.requeue_after)
            await _wait(wakeup, stopped, delay)
    finally:
        state.wakeups.pop(uid, None)
        state.fingerprints.pop(uid, None)


async def _wait(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, delay: float) -> None:
    waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.event(*MLSERVES)  # type: ignore[arg-type]
async def mlserve_event(
    *,
    type: str,
    body: kopf.Body,
    meta: kopf.Meta,
    memo: kopf.Memo,
    mlserve_claims: kopf.Index[tuple[str, str], Claim],
    **_: Any,
) -> None:
    """Wake the MLServe's worker when its request changed; wake rivals when it goes."""
    state = _state(memo)
    uid = str(meta.uid)
    annotations = meta.annotations or {}
    fingerprint = (meta.get("generation"), annotations.get(api.ANNOTATION_ROLLBACK))
    if state.fingerprints.get(uid) != fingerprint:
        state.fingerprints[uid] = fingerprint
        state.wake(uid)
    if type == "DELETED" or meta.get("deletionTimestamp"):
        for claim in _claims(mlserve_claims, body):
            if claim.uid != uid:
                state.wake(claim.uid)


def _owner_uids(body: Mapping[str, Any]) -> list[str]:
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return [str(ref.get("uid")) for ref in refs if ref.get("kind") == api.KIND]


def _register_child_watch(child: api.ChildKind) -> None:
    @kopf.on.event(child.group, child.version, child.plural, labels=CHILD_LABELS, id=f"child-{child.plural}")
    async def child_event(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        state = _state(memo)
        for uid in _owner_uids(body):
            state.wake(uid)


for _child in api.CHILD_KINDS:
    _register_child_watch(_child)


# --- deletion -----------------------------------------------------------------------------------


@kopf.on.delete(*MLSERVES, id="undeploy")  # type: ignore[arg-type]
async def undeploy(
    *,
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    runtime: Any,
    mlserve_claims: kopf.Index[tuple[str, str], Claim],
    **_: Any,
) -> None:
    state = _state(memo)
    assert state.runtime is not None
    raw = copy.deepcopy(dict(body))
    result = await finalize(
        raw, state.runtime, _claims(mlserve_claims, raw), waited=runtime.total_seconds(), retry=retry
    )
    if not result.done:
        raise kopf.TemporaryError(result.message, delay=result.retry_after or 1.0)
