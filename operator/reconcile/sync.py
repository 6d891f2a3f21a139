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
* The MLServes are read from the controller's cache, fed by its watches (:class:`MLServeSource`;
  without one, a list per namespace, :class:`ListedMLServes`). A namespace whose MLServes
  could not be read (not listed yet, a list refused) is skipped for the pass (nothing is
  created there).
* Undeploys the finalizer could not write (database down) are retried first
  (:mod:`.pending`); until written, their pair is not re-created.
* MLServes waiting for an artifact (a build running or failed, a version missing) are listed
  in the pass's result, so the operator wakes them: the watermark moves when a build ends.

A pass reads (:mod:`.sync_reads`, the MLServes of an :class:`MLServeSource`), decides without I/O
(:func:`.sync_plan.decide`) and writes the actions (:mod:`.sync_writes`). :func:`sync_once` is one tick
(testable); :func:`run_sync_loop` repeats it until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from mlserve.operator import metrics
from mlserve.operator.spec import api

from . import sync_reads
from .deploy import end_deployment, is_database_error
from .events import EventSink
from .identity import Pair, pair_of
from .kube import MLServe, as_dict
from .pending import ConfigMapStore, PendingUndeploys
from .rows import RowCache
from .status import waits_for_artifact
from .sync_checks import SyncIssue
from .sync_plan import (
    Action,
    Snapshot,
    decide,
    deployments_to_check,
)
from .sync_reads import Watermark, read_watermark
from .sync_writes import SyncResult, execute

__all__ = ["ListedMLServes", "MLServeSource", "SyncHeartbeat", "SyncResult", "SyncState", "run_sync_loop", "sync_once"]

log = logging.getLogger(__name__)


@dataclass
class _Retry:
    failures: int
    next_at: float
    why: str


@dataclass
class SyncState:
    """What the loop remembers between ticks."""

    watermark: Watermark | None = None
    last_full_pass: float | None = None
    """``clock()`` at the last full pass that succeeded."""
    unwatched: set[str] = field(default_factory=set)
    """Environments already logged as outside the watched namespaces."""
    retry_delay: float = 5.0
    retry_max_delay: float = 120.0
    """Backoff of a failing pair (MLSERVE_RETRY_DELAY, doubling up to MLSERVE_RETRY_MAX_DELAY)."""
    retries: dict[Hashable, _Retry] = field(default_factory=dict)
    """Pairs (and environments) that failed: each is left alone until its own retry time, and a
    pass runs when one is due; the others are not held back by it."""
    reported: dict[tuple[str, ...], SyncIssue] = field(default_factory=dict)
    """The issues of the last pass, each logged and posted once (again when it changes)."""

    def backoff(self, key: Hashable, now: float, why: str) -> None:
        failures = self.retries[key].failures + 1 if key in self.retries else 1
        delay = min(self.retry_max_delay, self.retry_delay * float(2 ** min(failures - 1, 16)))
        self.retries[key] = _Retry(failures, now + delay, why)

    def waiting(self, now: float) -> dict[Hashable, str]:
        """What waits for its retry time at ``now``."""
        return {
            key: f"retried at its own pace ({retry.why})" for key, retry in self.retries.items() if retry.next_at > now
        }

    def retry_due(self, now: float) -> bool:
        return any(retry.next_at <= now for retry in self.retries.values())


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


class MLServeSource(Protocol):
    """Where a pass reads the MLServes, and hears of the ones it wrote."""

    async def mlserves(self, namespaces: Sequence[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        """The MLServes of each namespace, and the namespaces that could not be read, with why
        (left out of the first: the pass creates nothing there)."""
        ...

    def written(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        """The pass created (``before`` None) or changed an MLServe; ``after`` is the server's answer."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Held while the pass reads and decides (the operator: its work queue starts no
        reconcile that only looks again meanwhile)."""
        ...


class ListedMLServes:
    """The MLServes listed from the API server, one list per namespace, on every pass: the
    sync without the operator's caches (the tests, tools). The operator reads its cache
    instead (``controller.CachedMLServes``): no list while idle."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def mlserves(self, namespaces: Sequence[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        listed: dict[str, list[dict[str, Any]]] = {}
        failed: dict[str, str] = {}
        for namespace in namespaces:
            try:
                listed[namespace] = [as_dict(item) async for item in self.client.list(MLServe, namespace=namespace)]
            except ApiError as exc:
                failed[namespace] = str(exc.status.message)
        return listed, failed

    def written(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        """Listed again next pass."""

    def reading(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


async def _read_mlserves(
    source: MLServeSource, namespaces: Sequence[str], result: SyncResult
) -> dict[str, list[dict[str, Any]]]:
    """The MLServes of each namespace; a namespace that cannot be read is left out (and
    counted as failed: the pass is repeated)."""
    found, failed = await source.mlserves(namespaces)
    result.failed.extend(f"list {namespace}: {why}" for namespace, why in sorted(failed.items()))
    return found


@dataclass(frozen=True)
class _PassOptions:
    namespaces: Sequence[str] = ()
    unwatched: set[str] | None = None
    pending: PendingUndeploys | None = None
    refusal: Callable[[str], str | None] = lambda _: None
    waiting: Mapping[Hashable, str] = field(default_factory=dict)


async def _full_pass(
    client: AsyncClient,
    source: MLServeSource,
    cluster_name: str,
    field_manager: str,
    result: SyncResult,
    options: _PassOptions,
) -> Snapshot:
    with source.reading():
        snapshot, actions = await _read_and_decide(source, cluster_name, result, options)
    await execute(client, actions, field_manager, result, written=source.written)
    return snapshot


async def _read_and_decide(
    source: MLServeSource, cluster_name: str, result: SyncResult, options: _PassOptions
) -> tuple[Snapshot, list[Action]]:
    # Skipped undeploys first, so the rows read next already reflect them.
    held = await _retry_pending(options.pending, result) if options.pending is not None else set()
    bound = await sync_reads.bound_environments(
        cluster_name, options.namespaces, options.unwatched, issues=result.issues, refusal=options.refusal
    )
    rows, duplicates = await sync_reads.active_rows(bound, issues=result.issues)
    metrics.SYNC_ROWS.set(len(rows))
    environments = {env.name: env.namespace for env in bound.values()}
    held_back: dict[Pair, str] = {
        key: why for key, why in options.waiting.items() if isinstance(key, tuple) and len(key) == 2
    }
    held_back.update({issue.pair: issue.message for issue in result.issues if issue.pair is not None})
    snapshot = Snapshot(
        rows=rows,
        duplicates=duplicates,
        environments=environments,
        mlserves=await _read_mlserves(source, sorted(set(environments.values())), result),
        held=held,
        held_back=held_back,
    )
    result.waiting_for_artifact.extend(
        str(body["metadata"].get("uid"))
        for bodies in snapshot.mlserves.values()
        for body in bodies
        if waits_for_artifact(body.get("status"))
    )
    # Deployments the MLServes of undeployed pairs reflect: are they ended?
    ended = await sync_reads.ended_deployments(deployments_to_check(snapshot))
    return snapshot, decide(dataclasses.replace(snapshot, ended=ended))


def _issue_key(issue: SyncIssue) -> Hashable:
    return issue.pair if issue.pair is not None else ("environment", str(issue.environment), "")


def _report_issues(
    state: SyncState,
    snapshot: Snapshot | None,
    result: SyncResult,
    events: EventSink | None,
    operator_namespace: str | None,
) -> None:
    """Log and post each new issue once: a Warning Event on the pair's MLServe (or on the
    MLServe the sync would create), or, for an environment, on the operator's namespace."""
    current = {issue.key: issue for issue in result.issues}
    metrics.record_sync_issues(
        (str(issue.reason), "pair" if issue.pair is not None else "environment") for issue in current.values()
    )
    for key, issue in current.items():
        if key in state.reported:
            continue
        log.warning("%s", issue.text)
        if events is None:
            continue
        body = _event_object(issue, snapshot, operator_namespace)
        if body is not None:
            try:
                events.post(body, "Warning", str(issue.reason), issue.text)
            except Exception as exc:  # noqa: BLE001 - a report that cannot be posted never stops the sync
                log.warning("could not post the Event %s: %s", issue.reason, type(exc).__name__)
    state.reported = current


def _event_object(issue: SyncIssue, snapshot: Snapshot | None, operator_namespace: str | None) -> dict[str, Any] | None:
    if issue.pair is not None and issue.namespace is not None:
        for body in snapshot.mlserves.get(issue.namespace, ()) if snapshot is not None else ():
            if pair_of(body, by_labels=True) == issue.pair:
                return dict(body)
        return issue.mlserve_reference()
    if operator_namespace:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": operator_namespace, "namespace": operator_namespace},
        }
    return None


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
    rows: RowCache | None = None,
    events: EventSink | None = None,
    namespace_refusal: Callable[[str], str | None] = lambda _: None,
    operator_namespace: str | None = None,
    mlserves: MLServeSource | None = None,
) -> SyncResult:
    """One tick: read the watermark; when it moved (or a full pass is due) act on every pair.

    ``namespaces`` is ``MLSERVE_NAMESPACES`` (empty: the whole cluster): environments whose
    namespace it does not match are left alone. ``pending`` holds the undeploys deletions
    had to skip (the operator's one list; None: nothing is pending). ``rows`` is the cluster's
    snapshot the reconciles read (:mod:`.rows`): refreshed before a pass, when the watermark
    moved, and confirmed by an idle tick. ``namespace_refusal`` says why
    ``env_configs.namespace`` may not hold serves (the settings' namespace policy).
    ``mlserves`` is where the pass reads the MLServes (the operator: its cache, fed by the
    watches); None: listed from the API server (:class:`ListedMLServes`).

    Database errors propagate (the loop logs them and tries again next tick). A database row
    the operator cannot use is an issue of its pair (or environment): logged and posted as an
    Event (``events``) once, the pair left alone. An API error on one MLServe is collected in
    ``result.failed``; the pair is retried on its own with backoff (``state.retries``) and
    does not hold the watermark back, nor stop the other pairs.
    """
    result = SyncResult()
    watermark = await read_watermark()
    now = clock()
    full_due = state.last_full_pass is None or now - state.last_full_pass >= full_resync_interval
    has_pending = bool(pending)
    moved = watermark != state.watermark
    retry_due = state.retry_due(now)
    if not (force_full or full_due or has_pending or retry_due or moved):
        if rows is not None:
            rows.confirm()
        return result
    source = mlserves if mlserves is not None else ListedMLServes(client)
    changed: set[Pair] = set()
    if rows is not None and (moved or full_due or force_full):
        # Before the pass: the reconciles its writes wake read the new rows. The MLServes of
        # the pairs whose rows changed are woken after it: a deploy's MLServe is then set to
        # the new deployment by this pass, not by its reconcile racing the pass's patch.
        with source.reading():
            changed = await rows.refresh(notify=False)
    result.full_pass = True
    waiting = state.waiting(now)
    options = _PassOptions(namespaces, state.unwatched, pending, namespace_refusal, waiting)
    try:
        snapshot = await _full_pass(client, source, cluster_name, field_manager, result, options)
    finally:
        if rows is not None and changed:
            rows.notify(changed)
    if rows is not None:
        rows.confirm()  # a long pass (thousands of creates) does not age the snapshot out
    _report_issues(state, snapshot, result, events, operator_namespace)
    _update_retries(state, result, waiting, now)
    if not result.blocking_failures:
        state.watermark = watermark
        state.last_full_pass = now
    return result


def _update_retries(state: SyncState, result: SyncResult, waiting: Mapping[Hashable, str], now: float) -> None:
    """Back off what failed this pass, one by one; forget what was tried again and worked."""
    failed: dict[Hashable, str] = dict.fromkeys(result.failed_pairs, "a write failed")
    failed.update({_issue_key(issue): "its database row cannot be used" for issue in result.issues})
    for key in list(state.retries):
        if key not in failed and key not in waiting:
            del state.retries[key]
    for key, why in failed.items():
        if key not in waiting:
            state.backoff(key, now, why)


async def _tick(
    client: AsyncClient,
    settings: Any,
    state: SyncState,
    field_manager: str,
    pending: PendingUndeploys,
    rows: RowCache | None = None,
    events: EventSink | None = None,
    mlserves: MLServeSource | None = None,
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
        rows=rows,
        events=events,
        namespace_refusal=getattr(settings, "namespace_refusal", lambda _: None),
        operator_namespace=getattr(settings, "operator_namespace", None),
        mlserves=mlserves,
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


class SyncHeartbeat:
    """When the sync loop last finished a tick (well or not), or waited as the passive replica:
    the liveness probe fails when that is too long ago, so a loop stuck where no timeout reaches
    restarts the pod."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.ticks = 0

    def beat(self) -> None:
        self.last = self.clock()
        self.ticks += 1

    def age(self) -> float:
        """Seconds since the last beat."""
        return self.clock() - self.last


def _report_store_warnings(pending: PendingUndeploys, events: EventSink | None) -> None:
    """Post what the pending list's store could not read (kept aside, never a stop)."""
    store = pending.store
    if isinstance(store, ConfigMapStore):
        for message in store.warnings:
            if events is not None:
                events.post(store.reference(), "Warning", str(api.Reason.PENDING_LIST_MALFORMED), message)
        store.warnings.clear()


def _new_state(settings: Any) -> SyncState:
    return SyncState(
        retry_delay=float(getattr(settings, "retry_delay", 5.0)),
        retry_max_delay=float(getattr(settings, "retry_max_delay", 120.0)),
    )


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
    rows: RowCache | None = None,
    heartbeat: SyncHeartbeat | None = None,
    events: EventSink | None = None,
    mlserves: MLServeSource | None = None,
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
    finalizer adds to); without it, one in memory that only this loop sees. ``events`` posts
    the Warning Events about database rows the sync cannot use.

    ``rows`` is the cluster's snapshot the reconciles read: refreshed when the watermark
    moves, dropped when a tick fails. Each tick runs under ``settings.sync_tick_timeout``
    (every database call in it under its own timeout too); ``heartbeat`` beats after every
    tick, failed or not, for the liveness probe. ``mlserves``: where the passes read the
    MLServes (the controller's cache; None: a list per namespace and pass).
    """
    pending = pending if pending is not None else PendingUndeploys()
    replica = _Replica(active)
    state = _new_state(settings)
    field_manager = api.sync_field_manager(settings.field_manager)
    failures = 0
    restored = False
    log.info(
        "database sync started for cluster %s: every %gs, full pass every %gs",
        settings.cluster_name,
        settings.sync_interval,
        settings.full_resync_interval,
    )
    tick_timeout = float(getattr(settings, "sync_tick_timeout", 120.0))
    while not stop.is_set():
        if not replica.acts():
            state = _new_state(settings)  # when it acts again, a full pass: the active replica wrote meanwhile
            restored = False  # and the pending undeploys as the active replica left them
            if rows is not None:
                rows.invalidate()  # the active replica's writes are not seen here
            if heartbeat is not None:
                heartbeat.beat()
            await _sleep(stop, min(1.0, settings.sync_interval))
            continue
        timeout = asyncio.timeout(tick_timeout)
        try:
            async with timeout:
                if not restored:
                    # Undeploys a deletion skipped before a restart: without them, the pass would
                    # re-create the MLServes that were deleted.
                    await pending.restore()
                    restored = True
                    _report_store_warnings(pending, events)
                with metrics.SYNC_TICK_DURATION.time():
                    result = await _tick(client, settings, state, field_manager, pending, rows, events, mlserves)
            metrics.SYNC_TICKS.labels("ok").inc()
            if on_result is not None:
                on_result(result)
            if failures:
                log.info("database sync recovered")
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure (logged)
            failures += 1
            metrics.SYNC_TICKS.labels("error").inc()
            state.watermark = None  # after an error, the next good tick is a full pass
            if rows is not None:
                rows.invalidate()
            if timeout.expired():
                log.warning("database sync: a tick took longer than %gs and was cancelled", tick_timeout)
            else:
                _log_failure(exc, settings.sync_interval)
        if heartbeat is not None:
            heartbeat.beat()
        await _sleep(stop, settings.sync_interval)
    log.info("database sync stopped")
