"""Database → cluster (DESIGN.md data flow 2): MLServes follow the active deployments.

For every environment bound to this operator's cluster (``env_configs.cluster_name``), the
sync creates, updates or deletes MLServes so they match ``active_deployments``. The rules,
the marker annotation and the last-writer-wins comparison are written down in
``docs/sync.md``; in short:

* A tick costs one query when nothing changed (:func:`read_watermark`); a full pass runs
  when the watermark moved, something is pending, or the full-resync interval passed.
* An MLServe *reflects* a deployment when its ``mlserve.darwin.io/deployment-id``
  annotation or its ``status.deploymentId`` names it. The sync only writes when the
  database changed after the MLServe's spec did (:func:`mlserve.operator.reconcile.deploy.
  mlserve_is_newer`, the same test the MLServe's reconcile applies the other way round).
* Undeploys the finalizer could not write (database down) are retried first
  (:mod:`.pending`); until written, their pair is not re-created.

:func:`sync_once` is one tick (testable); :func:`run_sync_loop` repeats it until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import CascadeType, PatchType

from mlserve.models import (
    ActiveDeployment,
    Deployment,
    DeploymentStatus,
    Environment,
    InvalidConfig,
)
from mlserve.operator.render import names
from mlserve.operator.spec import api
from mlserve.operator.spec.namespaces import watches_namespace

from . import pending
from .deploy import end_deployment, is_database_error, mlserve_is_newer
from .kube import MLServe

__all__ = [
    "ANNOTATION_DEPLOYMENT_ID",
    "NEVER",
    "ActiveRow",
    "SyncResult",
    "SyncState",
    "Watermark",
    "read_watermark",
    "reflected_deployment_ids",
    "run_sync_loop",
    "spec_changed_at",
    "sync_once",
]

log = logging.getLogger(__name__)

ANNOTATION_DEPLOYMENT_ID = "mlserve.darwin.io/deployment-id"
"""On an MLServe: the id of the deployments row its spec.artifactVersion reflects."""

SYNC_FIELD_MANAGER_SUFFIX = "-sync"
WRITE_CONCURRENCY = 8
"""MLServes the sync creates or changes at the same time during one pass."""


# --- the watermark: one query per tick ---------------------------------------------------------

_WATERMARK_SQL = (
    "SELECT"
    " (SELECT COUNT(*) FROM active_deployments) AS active_count,"
    " (SELECT MAX(id) FROM active_deployments) AS active_max_id,"
    " (SELECT MAX(updated_at) FROM active_deployments) AS active_updated,"
    " (SELECT MAX(ended_at) FROM deployments) AS deployments_ended,"
    " (SELECT MAX(updated_at) FROM environments) AS environments_updated"
)


@dataclass(frozen=True)
class Watermark:
    """Aggregates that move whenever a deploy, an undeploy or an environment changes."""

    active_count: int
    active_max_id: int | None
    active_updated: str | None
    deployments_ended: str | None
    environments_updated: str | None


def _text(value: Any) -> str | None:
    # Drivers return datetimes (MySQL) or strings (SQLite): compare their text.
    return None if value is None else str(value)


async def read_watermark() -> Watermark:
    """The watermark, in one SELECT on the models' connection."""
    connection = ActiveDeployment._meta.db
    rows = await connection.execute_query_dict(_WATERMARK_SQL)
    row = rows[0]
    return Watermark(
        active_count=int(row["active_count"] or 0),
        active_max_id=None if row["active_max_id"] is None else int(row["active_max_id"]),
        active_updated=_text(row["active_updated"]),
        deployments_ended=_text(row["deployments_ended"]),
        environments_updated=_text(row["environments_updated"]),
    )


# --- what the database asks for ----------------------------------------------------------------


@dataclass(frozen=True)
class BoundEnvironment:
    name: str
    namespace: str


@dataclass(frozen=True)
class ActiveRow:
    """One pair's active deployment, as the MLServe should reflect it."""

    serve: str
    serve_type: str
    environment: str
    namespace: str
    deployment_id: int
    artifact_version: str
    changed_at: datetime
    """When the database last changed the pair (the deployment's created_at)."""

    @property
    def pair(self) -> tuple[str, str]:
        return self.serve, self.environment


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _bound_environments(
    cluster_name: str, namespaces: Sequence[str] = (), unwatched: set[str] | None = None
) -> dict[int, BoundEnvironment]:
    """The environments of this cluster whose namespace this operator watches.

    An environment in a namespace outside ``namespaces`` (``MLSERVE_NAMESPACES``) is skipped:
    no worker of this operator would reconcile an MLServe there. It is logged once per
    environment (``unwatched`` remembers which, across ticks).
    """
    bound: dict[int, BoundEnvironment] = {}
    for environment in await Environment.all():
        try:
            config = environment.config
        except InvalidConfig as exc:
            log.warning("environment %s skipped by the database sync: %s", environment.name, exc)
            continue
        if config.cluster_name != cluster_name:
            continue
        if not watches_namespace(namespaces, config.namespace):
            if unwatched is not None and environment.name not in unwatched:
                unwatched.add(environment.name)
                log.info(
                    "environment %s skipped by the database sync: its namespace %s is not among "
                    "the namespaces this operator watches (MLSERVE_NAMESPACES=%s)",
                    environment.name,
                    config.namespace,
                    ",".join(namespaces),
                )
            continue
        bound[environment.pk] = BoundEnvironment(environment.name, config.namespace)
    return bound


async def _active_rows(bound: Mapping[int, BoundEnvironment]) -> tuple[list[ActiveRow], set[tuple[str, str]]]:
    """The active deployments of the bound environments, and the pairs with more than one."""
    if not bound:
        return [], set()
    pointers = await ActiveDeployment.filter(environment_id__in=list(bound)).select_related(
        "serve", "deployment", "deployment__artifact"
    )
    by_pair: dict[tuple[str, str], list[ActiveRow]] = {}
    for pointer in pointers:
        deployment = pointer.deployment
        if deployment.status != DeploymentStatus.ACTIVE:
            continue  # ended without its pointer removed: the pair is undeployed
        environment = bound[pointer.environment_id]
        row = ActiveRow(
            serve=pointer.serve.name,
            serve_type=str(pointer.serve.type),
            environment=environment.name,
            namespace=environment.namespace,
            deployment_id=deployment.pk,
            artifact_version=deployment.artifact.version,
            changed_at=_utc(deployment.created_at) or datetime.now(UTC),
        )
        by_pair.setdefault(row.pair, []).append(row)
    duplicates = {pair for pair, rows in by_pair.items() if len({r.deployment_id for r in rows}) > 1}
    for pair in sorted(duplicates):
        ids = sorted({r.deployment_id for r in by_pair[pair]})
        log.warning(
            "serve %s has %d active deployments in %s (ids %s): the sync leaves the pair alone "
            "until all but one are ended",
            pair[0],
            len(ids),
            pair[1],
            ids,
        )
    rows = [rows[0] for pair, rows in by_pair.items() if pair not in duplicates]
    return rows, duplicates


# --- what the cluster holds --------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


NEVER = datetime.min.replace(tzinfo=UTC)


def spec_changed_at(body: Mapping[str, Any], ignore_managers: Collection[str] = ()) -> datetime:
    """When someone last wrote the MLServe's spec, from the API server's managedFields.

    The newest time of a managedFields entry that owns a field under ``spec``; status writes
    are a subresource and never count, and neither do the writes of ``ignore_managers`` (the
    sync's own: a spec the sync wrote only mirrors the database, it is no newer than it).
    :data:`NEVER` when only ignored managers wrote the spec. Without managedFields (an
    object that never went through an API server), the creation time.
    """
    metadata = body.get("metadata") or {}
    entries = metadata.get("managedFields")
    if not entries:
        return _parse_time(metadata.get("creationTimestamp")) or NEVER
    times: list[datetime] = []
    for entry in entries:
        if entry.get("subresource") or entry.get("manager") in ignore_managers:
            continue
        if "f:spec" not in (entry.get("fieldsV1") or {}):
            continue
        moment = _parse_time(entry.get("time"))
        if moment is not None:
            times.append(moment)
    return max(times, default=NEVER)


def reflected_deployment_ids(body: Mapping[str, Any]) -> set[int]:
    """The deployment ids the MLServe says it reflects (marker annotation, status)."""
    ids: set[int] = set()
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(ANNOTATION_DEPLOYMENT_ID)
    if raw is not None and str(raw).isdigit():
        ids.add(int(raw))
    status_id = (body.get("status") or {}).get("deploymentId")
    if isinstance(status_id, int):
        ids.add(status_id)
    return ids


def _pair_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(serve, environment) of an MLServe: its labels, else its spec (serve defaults to the name)."""
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    spec = body.get("spec") or {}
    serve = labels.get(api.LABEL_SERVE) or spec.get("serve") or metadata.get("name")
    environment = labels.get(api.LABEL_ENVIRONMENT) or spec.get("environment")
    if not serve or not environment:
        return None
    # A label value may be cut with a hash; the spec holds the full names.
    return str(spec.get("serve") or serve), str(spec.get("environment") or environment)


async def _list_mlserves(client: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async for item in client.list(MLServe, namespace=namespace):
        found.append(_as_dict(item))
    return found


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


# --- one tick ------------------------------------------------------------------------------------


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
    """The MLServe changed after the database: its own reconcile records a deployment."""
    pending_written: list[tuple[str, str]] = field(default_factory=list)
    """Undeploys that deletion had to skip, written now."""
    failed: list[str] = field(default_factory=list)
    """What could not be done; the next tick tries again."""

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


def _ref(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def _new_mlserve(row: ActiveRow) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": names.mlserve_name(row.serve, row.environment),
            "namespace": row.namespace,
            "labels": {
                api.LABEL_SERVE: names.label_value(row.serve),
                api.LABEL_ENVIRONMENT: names.label_value(row.environment),
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
            "annotations": {ANNOTATION_DEPLOYMENT_ID: str(row.deployment_id)},
        },
        "spec": {
            "serve": row.serve,
            "environment": row.environment,
            "type": row.serve_type,
            "artifactVersion": row.artifact_version,
        },
    }


async def _retry_pending(result: SyncResult) -> set[tuple[str, str]]:
    """Write the undeploys deletion had to skip; returns the pairs still held back.

    An MLServe whose pair is held back is not re-created: it was deleted, and its
    deployment is only still active because the database was down at the time.
    """
    await pending.flush()  # a write of the list that failed earlier
    if not pending.pending_ends():
        return set()
    done = await pending.retry_pending(end_deployment)
    result.pending_written.extend((entry.serve, entry.environment) for entry in done)
    held = {(entry.serve, entry.environment) for entry in pending.pending_ends()}
    result.failed.extend(f"undeploy {serve}/{environment}" for serve, environment in sorted(held))
    return held


async def _ended_since(deployment_ids: Iterable[int]) -> dict[int, datetime | None]:
    """For each id that is not ACTIVE (or gone), when it ended (None when unknown or gone)."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return {}
    rows = await Deployment.filter(id__in=ids).values("id", "status", "ended_at", "created_at")
    found = {int(r["id"]): r for r in rows}
    ended: dict[int, datetime | None] = {}
    for deployment_id in ids:
        row = found.get(deployment_id)
        if row is None:
            ended[deployment_id] = None
        elif str(row["status"]) != DeploymentStatus.ACTIVE.value:
            ended[deployment_id] = _utc(row["ended_at"]) or _utc(row["created_at"])
    return ended


async def _set_version(client: AsyncClient, body: Mapping[str, Any], row: ActiveRow, field_manager: str) -> None:
    """Set spec.artifactVersion and the marker, only if the spec is still the one read.

    A JSON Patch ``test`` of ``metadata.generation`` makes the write conditional on the spec
    alone (the generation moves with spec changes only): a status or label write in between
    does not refuse it, a spec change does (422), and the next tick decides again.
    """
    metadata = body["metadata"]
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/generation", "value": metadata["generation"]},
        {"op": "add", "path": "/spec/artifactVersion", "value": row.artifact_version},
    ]
    if metadata.get("annotations"):
        key = ANNOTATION_DEPLOYMENT_ID.replace("~", "~0").replace("/", "~1")
        operations.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": str(row.deployment_id)})
    else:
        operations.append(
            {"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_DEPLOYMENT_ID: str(row.deployment_id)}}
        )
    await client.patch(
        MLServe,
        metadata["name"],
        operations,
        namespace=metadata["namespace"],
        patch_type=PatchType.JSON,
        field_manager=field_manager,
    )


async def _full_pass(
    client: AsyncClient,
    cluster_name: str,
    field_manager: str,
    result: SyncResult,
    namespaces: Sequence[str] = (),
    unwatched: set[str] | None = None,
) -> None:
    # Skipped undeploys first, so the rows read next already reflect them.
    held = await _retry_pending(result)
    bound = await _bound_environments(cluster_name, namespaces, unwatched)
    rows, duplicates = await _active_rows(bound)
    active = {row.pair: row for row in rows}

    bound_names = {env.name: env for env in bound.values()}
    existing: dict[tuple[str, str], list[dict[str, Any]]] = {}
    terminating: set[tuple[str, str]] = set()
    for namespace in sorted({env.namespace for env in bound.values()}):
        try:
            mlserves = await _list_mlserves(client, namespace)
        except ApiError as exc:
            result.failed.append(f"list {namespace}: {exc.status.message}")
            continue
        for body in mlserves:
            pair = _pair_of(body)
            env = bound_names.get(pair[1]) if pair else None
            if pair is None or env is None or env.namespace != namespace:
                continue  # another cluster's environment, or in the wrong namespace: not ours
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                # being deleted: its finalizer ends the deployment; never re-create meanwhile
                terminating.add(pair)
                continue
            existing.setdefault(pair, []).append(body)

    # Deployments the MLServes of undeployed pairs reflect: are they ended?
    orphans = {pair: bodies for pair, bodies in existing.items() if pair not in active and pair not in duplicates}
    ended = await _ended_since(
        i for bodies in orphans.values() for body in bodies for i in reflected_deployment_ids(body)
    )

    async def one(pair: tuple[str, str], row: ActiveRow) -> None:
        bodies = existing.get(pair, [])
        try:
            if not bodies:
                await client.create(MLServe.from_dict(_new_mlserve(row)), field_manager=field_manager)
                result.created.append(f"{row.namespace}/{names.mlserve_name(*pair)}")
                log.info(
                    "created MLServe %s/%s for deployment %s (%s %s in %s)",
                    row.namespace,
                    names.mlserve_name(*pair),
                    row.deployment_id,
                    row.serve,
                    row.artifact_version,
                    row.environment,
                )
            elif len(bodies) == 1:
                await _follow(client, bodies[0], row, field_manager, result)
            # more than one: a Conflict the MLServes' reconcile reports; no side is picked here
        except ApiError as exc:
            code = exc.status.code
            what = f"{row.namespace}/{names.mlserve_name(*pair)}"
            result.failed.append(f"{what}: {code} {exc.status.message}")
            if code in (409, 422):  # changed meanwhile: the next tick decides again
                log.info("MLServe %s changed while the sync read it; deciding again next tick", what)
            else:
                log.warning("database sync could not write MLServe %s: %s", what, exc.status.message)

    # Pairs are independent: write several at once (a burst of deploys is not serialised).
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def gated(pair: tuple[str, str], row: ActiveRow) -> None:
        async with gate:
            await one(pair, row)

    await asyncio.gather(
        *(gated(pair, row) for pair, row in sorted(active.items()) if pair not in held and pair not in terminating)
    )
    result.created.sort()
    result.updated.sort()

    for _pair, bodies in sorted(orphans.items()):
        for body in bodies:
            ids = reflected_deployment_ids(body)
            if not ids or not all(i in ended for i in ids):
                continue  # reflects no deployment yet, or one still active elsewhere
            ended_at = max((t for t in (ended[i] for i in ids) if t is not None), default=None)
            if ended_at is not None and mlserve_is_newer(spec_changed_at(body, (field_manager,)), ended_at):
                result.left_to_mlserve.append(_ref(body))
                continue  # re-applied after the undeploy: it wins, its reconcile records it
            try:
                await client.delete(
                    MLServe,
                    body["metadata"]["name"],
                    namespace=body["metadata"]["namespace"],
                    cascade=CascadeType.BACKGROUND,
                )
            except ApiError as exc:
                if exc.status.code != 404:
                    result.failed.append(f"{_ref(body)}: {exc.status.code} {exc.status.message}")
                    continue
            result.deleted.append(_ref(body))
            log.info("deleted MLServe %s: its deployment %s ended in the database", _ref(body), sorted(ids))


async def _follow(
    client: AsyncClient, body: dict[str, Any], row: ActiveRow, field_manager: str, result: SyncResult
) -> None:
    """Bring one existing MLServe in line with the pair's active deployment, if the database won."""
    if row.deployment_id in reflected_deployment_ids(body):
        return
    spec = body.get("spec") or {}
    if spec.get("artifactVersion") == row.artifact_version:
        return  # already asks for that artifact; its reconcile reports the deployment id
    if mlserve_is_newer(spec_changed_at(body, (field_manager,)), row.changed_at):
        result.left_to_mlserve.append(_ref(body))
        return
    await _set_version(client, body, row, field_manager)
    result.updated.append(_ref(body))
    log.info(
        "MLServe %s follows deployment %s: artifactVersion %s -> %s",
        _ref(body),
        row.deployment_id,
        spec.get("artifactVersion"),
        row.artifact_version,
    )


async def sync_once(
    client: AsyncClient,
    cluster_name: str,
    state: SyncState,
    *,
    field_manager: str = "mlserve-operator" + SYNC_FIELD_MANAGER_SUFFIX,
    full_resync_interval: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
    force_full: bool = False,
    namespaces: Sequence[str] = (),
) -> SyncResult:
    """One tick: read the watermark; when it moved (or a full pass is due) act on every pair.

    ``namespaces`` is ``MLSERVE_NAMESPACES`` (empty: the whole cluster): environments whose
    namespace it does not match are left alone.

    Database errors propagate (the loop logs them and tries again next tick); API errors on
    one MLServe are collected in ``result.failed`` and do not stop the others.
    """
    result = SyncResult()
    watermark = await read_watermark()
    now = clock()
    full_due = state.last_full_pass is None or now - state.last_full_pass >= full_resync_interval
    has_pending = bool(pending.pending_ends())
    if not (force_full or full_due or has_pending or watermark != state.watermark):
        return result
    result.full_pass = True
    await _full_pass(client, cluster_name, field_manager, result, namespaces, state.unwatched)
    if not result.failed:
        state.watermark = watermark
        state.last_full_pass = now
    return result


async def run_sync_loop(
    settings: Any,
    client: AsyncClient,
    stop: asyncio.Event,
    *,
    on_result: Callable[[SyncResult], None] | None = None,
    active: Callable[[], bool] | None = None,
) -> None:
    """Tick every ``settings.sync_interval`` seconds until ``stop`` is set.

    ``settings`` is the operator's :class:`~mlserve.operator.settings.OperatorSettings`
    (``cluster_name``, ``namespaces``, ``field_manager``, ``sync_interval``,
    ``full_resync_interval``).
    Errors never end the loop: they are logged and the next tick starts from fresh state.

    ``active`` (under kopf peering, :class:`mlserve.operator.peering.ActiveReplica`) is asked
    before every tick: while it says no, the loop neither reads the database nor writes to
    the cluster, and it starts again with a full pass when it says yes.
    """
    state = SyncState()
    field_manager = settings.field_manager + SYNC_FIELD_MANAGER_SUFFIX
    failures = 0
    waiting = False
    restored = False
    log.info(
        "database sync started for cluster %s: every %gs, full pass every %gs",
        settings.cluster_name,
        settings.sync_interval,
        settings.full_resync_interval,
    )
    while not stop.is_set():
        if active is not None and not active():
            if not waiting:
                log.info("database sync waits: this replica is not the active one (kopf peering)")
                waiting = True
            state = SyncState()  # when it acts again, a full pass: the active replica wrote meanwhile
            restored = False  # and the pending undeploys as the active replica left them
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, settings.sync_interval))
            continue
        if waiting:
            log.info("database sync acts: this replica is the active one (kopf peering)")
            waiting = False
        try:
            if not restored:
                # Undeploys a deletion skipped before a restart: without them, the pass would
                # re-create the MLServes that were deleted.
                await pending.restore()
                restored = True
            result = await sync_once(
                client,
                settings.cluster_name,
                state,
                field_manager=field_manager,
                full_resync_interval=settings.full_resync_interval,
                namespaces=settings.namespaces,
            )
            if result.full_pass:
                log.debug(
                    "database sync pass: %d created, %d updated, %d deleted, %d failed",
                    len(result.created),
                    len(result.updated),
                    len(result.deleted),
                    len(result.failed),
                )
            if on_result is not None:
                on_result(result)
            if failures:
                log.info("database sync recovered")
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive any one failure
            failures += 1
            state.watermark = None  # after an error, the next good tick is a full pass
            if is_database_error(exc):
                log.warning(
                    "database sync: the database did not answer (%s); retrying in %gs",
                    type(exc).__name__,
                    settings.sync_interval,
                )
            else:
                log.exception("database sync tick failed; retrying in %gs", settings.sync_interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sync_interval)
    log.info("database sync stopped")
