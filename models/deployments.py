"""Deployments: which artifact of a serve runs in which environment, and since when.

``deployments`` keeps the history (one row per deploy, ACTIVE until replaced), and
``active_deployments`` points at the current row of each (serve, environment) with the
one it replaced. Three writers change them, all under the same locks taken in the same
order (the serve row, then the pair's pointer rows, then its ACTIVE rows):

- :func:`propose`: a deploy recorded only if the pair has not moved since the caller looked
  (compare-and-swap on the active deployment id);
- :func:`activate`: a deploy, whatever is active (rollback, Darwin-style deploys);
- :func:`end_active`: an undeploy, of one given deployment or of whatever is active.

Each writes Darwin's per-deployment side row (``app_layer_deployments`` or
``scheduled_workflow_deployments``) in the same transaction, and retries deadlocks and lock
wait timeouts itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise import connections, fields, timezone
from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.indexes import Index
from tortoise.models import Model
from tortoise.transactions import in_transaction

from . import _validators
from .configs import lenient_json_loads, parse_environment_variables
from .enums import DeploymentStatus, ServeType
from .errors import ActiveDeploymentConflict, InvalidConfig
from .serves import Environment, Serve

if TYPE_CHECKING:
    from .artifacts import Artifact
    from .users import User

__all__ = [
    "ActiveDeployment",
    "AppLayerDeployment",
    "Deployment",
    "Proposal",
    "ScheduledWorkflowDeployment",
    "activate",
    "current_deployment",
    "end_active",
    "propose",
]

log = logging.getLogger(__name__)


class Deployment(Model):
    """One deploy of an artifact of a serve to an environment."""

    id = fields.IntField(primary_key=True)
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="deployments", on_delete=fields.CASCADE
    )
    artifact: fields.ForeignKeyRelation[Artifact] = fields.ForeignKeyField(
        "models.Artifact", related_name="deployments", on_delete=fields.CASCADE
    )
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="deployments", on_delete=fields.CASCADE
    )
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="deployments", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    status = fields.CharEnumField(
        DeploymentStatus,
        max_length=20,
        default=DeploymentStatus.ACTIVE,
        db_default=DeploymentStatus.ACTIVE.value,
        validators=[_validators.EnumValue(DeploymentStatus, "status")],
    )
    ended_at = fields.DatetimeField(null=True)

    # the foreign keys' columns, which Tortoise sets next to each relation
    serve_id: int
    artifact_id: int
    environment_id: int
    created_by_id: int
    active_for: fields.ReverseRelation[ActiveDeployment]
    replaced_in: fields.ReverseRelation[ActiveDeployment]
    app_layer: fields.BackwardOneToOneRelation[AppLayerDeployment]
    workflow_schedule: fields.BackwardOneToOneRelation[ScheduledWorkflowDeployment]

    class Meta:
        table = "deployments"
        app = "models"
        indexes = (Index(fields=("serve_id", "environment_id", "status"), name="idx_deployments_serve_env_status"),)


class ActiveDeployment(Model):
    """The current deployment of a serve in an environment (one row per pair)."""

    id = fields.IntField(primary_key=True)
    deployment: fields.ForeignKeyRelation[Deployment] = fields.ForeignKeyField(
        "models.Deployment", related_name="active_for", on_delete=fields.CASCADE
    )
    previous_deployment: fields.ForeignKeyNullableRelation[Deployment] = fields.ForeignKeyField(
        "models.Deployment", related_name="replaced_in", null=True, on_delete=fields.SET_NULL
    )
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="active_deployments", on_delete=fields.CASCADE
    )
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="active_deployments", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    # the foreign keys' columns, which Tortoise sets next to each relation
    deployment_id: int
    previous_deployment_id: int | None
    environment_id: int
    serve_id: int

    class Meta:
        table = "active_deployments"
        app = "models"
        # Environment first: the same index answers "active deployments of an environment".
        # Databases created by Darwin lack it; the writers check the rule in code too.
        unique_together = (("environment", "serve"),)


class AppLayerDeployment(Model):
    """Per-deployment settings of an API serve: rollout strategy and container environment."""

    id = fields.IntField(primary_key=True)
    deployment: fields.OneToOneRelation[Deployment] = fields.OneToOneField(
        "models.Deployment", related_name="app_layer", on_delete=fields.CASCADE
    )
    deployment_strategy = fields.CharField(max_length=50, null=True)
    deployment_params: fields.JSONField[Any] = fields.JSONField(decoder=lenient_json_loads, null=True)
    environment_variables: fields.JSONField[Any] = fields.JSONField(
        decoder=lenient_json_loads, null=True, validators=[_validators.environment_variables()]
    )

    class Meta:
        table = "app_layer_deployments"
        app = "models"

    @property
    def env(self) -> dict[str, str]:
        """``environment_variables`` validated as a NAME -> value mapping ({} when NULL)."""
        return parse_environment_variables(self.environment_variables, "environment_variables")


class ScheduledWorkflowDeployment(Model):
    """Per-deployment settings of a workflow serve."""

    id = fields.IntField(primary_key=True)
    deployment: fields.OneToOneRelation[Deployment] = fields.OneToOneField(
        "models.Deployment", related_name="workflow_schedule", on_delete=fields.CASCADE
    )
    workflow_id = fields.CharField(max_length=255)
    job_cluster_id = fields.CharField(max_length=255)
    input_params: fields.JSONField[Any] = fields.JSONField(decoder=lenient_json_loads, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "scheduled_workflow_deployments"
        app = "models"


async def current_deployment(
    serve: Serve, environment: Environment, *, using_db: BaseDBAsyncClient | None = None
) -> Deployment | None:
    """The active deployment of ``serve`` in ``environment``, or None.

    Raises :class:`ActiveDeploymentConflict` when a database (one Darwin created, without
    the unique index) holds more than one active row for the pair.
    """
    rows = (
        await ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk)
        .using_db(using_db)
        .order_by("id")
    )
    if len(rows) > 1:
        raise ActiveDeploymentConflict(serve.name, environment.name, [r.deployment_id for r in rows])
    if not rows:
        return None
    return await Deployment.get(id=rows[0].deployment_id, using_db=using_db)


@dataclass(frozen=True)
class Proposal:
    """What :func:`propose` did."""

    recorded: bool
    """True: ``active`` is the new deployment this call wrote."""
    active: Deployment | None
    """The pair's active deployment after the call: the new one, or the one that won."""
    previous_id: int | None
    """The deployment that was active before (when recorded)."""


# MySQL/MariaDB errors that abort a transaction because of another one, not because of the
# data: the same transaction run again succeeds. ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT.
_LOCK_CONFLICTS = frozenset({1213, 1205})
_ATTEMPTS = 5
_BACKOFF = 0.05  # seconds; doubled on every attempt, jittered

_T = TypeVar("_T")


@dataclass
class _Pair:
    """The locked rows of a (serve, environment) pair, read inside the transaction."""

    serve: Serve
    pointer: ActiveDeployment | None
    current: Deployment | None
    """The deployment the pointer names (ACTIVE or not)."""
    active_rows: list[Deployment]

    @property
    def active_id(self) -> int | None:
        """The pair's active deployment: the pointer's, when that one is ACTIVE."""
        if self.current is not None and self.current.status == DeploymentStatus.ACTIVE:
            return self.current.id
        return None

    def runs(self, artifact: Artifact) -> bool:
        """The pair's active deployment runs ``artifact``, and no other row is ACTIVE."""
        current = self.current
        return (
            current is not None
            and self.active_id == current.pk
            and current.artifact_id == artifact.pk
            and all(d.pk == current.pk for d in self.active_rows)
        )


def _is_mysql(connection: BaseDBAsyncClient) -> bool:
    return connection.capabilities.dialect == "mysql"


def _lock_conflict(exc: BaseException) -> bool:
    """A deadlock or lock wait timeout, wherever Tortoise wrapped the driver's error."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if error.args and isinstance(error.args[0], int) and error.args[0] in _LOCK_CONFLICTS:
            return True
        pending.extend(a for a in error.args if isinstance(a, BaseException))
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return False


async def _in_locked_transaction(
    using_db: BaseDBAsyncClient | None, operation: Callable[[BaseDBAsyncClient], Awaitable[_T]]
) -> _T:
    """Run ``operation`` in a transaction, again on a deadlock or lock wait timeout.

    Always on the primary ("default" unless ``using_db`` names another: with a read replica
    configured Tortoise has two). Inside a caller's transaction it runs once, nested: the
    database rolled the whole transaction back, so only the caller can start it again.
    """
    connection_name = using_db.connection_name if using_db is not None else "default"
    nested = isinstance(using_db, TransactionalDBClient) or isinstance(
        connections.get(connection_name), TransactionalDBClient
    )
    attempts = 1 if nested else _ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            async with in_transaction(connection_name) as conn:
                return await operation(conn)
        except Exception as exc:
            if attempt == attempts or not _lock_conflict(exc):
                raise
            delay = _BACKOFF * 2 ** (attempt - 1)
            log.info("deployments: lock conflict (%s), attempt %d of %d", type(exc).__name__, attempt, attempts)
            await asyncio.sleep(delay / 2 + random.uniform(0, delay))
    raise AssertionError("unreachable")  # pragma: no cover


async def _lock_pair(conn: BaseDBAsyncClient, serve: Serve, environment: Environment) -> _Pair:
    """Lock and read the pair: the serve row, then its pointer rows, then its ACTIVE rows.

    Every writer takes the locks in this order (MySQL/MariaDB ``SELECT ... FOR UPDATE``;
    SQLite serialises writers anyway), so two of them for one serve run one after the other.
    """
    lock = _is_mysql(conn)
    serve_query = Serve.filter(id=serve.pk).using_db(conn)
    locked_serve = await (serve_query.select_for_update() if lock else serve_query).first()
    if locked_serve is None:
        raise InvalidConfig("serve", f"serve {serve.name!r} (id {serve.pk}) is no longer in the database")

    pointer_query = ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk).using_db(conn)
    pointers = await (pointer_query.select_for_update() if lock else pointer_query).order_by("id")
    if len(pointers) > 1:
        raise ActiveDeploymentConflict(serve.name, environment.name, [p.deployment_id for p in pointers])
    pointer = pointers[0] if pointers else None

    active_query = Deployment.filter(
        serve_id=serve.pk, environment_id=environment.pk, status=DeploymentStatus.ACTIVE
    ).using_db(conn)
    active_rows = list(await (active_query.select_for_update() if lock else active_query).order_by("id"))

    current: Deployment | None = None
    if pointer is not None:
        current = next((d for d in active_rows if d.pk == pointer.deployment_id), None)
        if current is None:
            current = await Deployment.get_or_none(id=pointer.deployment_id, using_db=conn)
    return _Pair(locked_serve, pointer, current, active_rows)


async def _side_rows(
    conn: BaseDBAsyncClient,
    pair: _Pair,
    environment: Environment,
    new: Deployment,
    environment_variables: dict[str, Any] | None,
) -> None:
    """Darwin's per-deployment row for ``new``, carried forward from the pair's previous one.

    API serve: an ``app_layer_deployments`` row, as Darwin's deploy writes it. Darwin's next
    deploy reads the previous deployment's row (and fails when it is missing), and copies its
    variables when the request has none: ``environment_variables=None`` here does the same
    (an explicit ``{}`` clears them); the rollout strategy and its parameters, which no
    caller of the operator sets, are always carried.

    Workflow serve: a ``scheduled_workflow_deployments`` row, as Darwin's workflow deploy
    writes it. Darwin fills it from its workflow service: ``workflow_id`` is the id of the
    service's workflow named after the serve (Darwin finds it by that name),
    ``input_params`` the request's task inputs, carried from the previous row when none are
    given, and ``job_cluster_id`` it never sets (its job cluster is found through the
    workflow). The operator runs a workflow as a scheduled RayJob, without that service, so:
    ``workflow_id`` is the serve's name, the one key Darwin itself uses to find the
    workflow; ``job_cluster_id`` is empty (the column is NOT NULL; no job cluster definition
    exists, the RayJob brings its own cluster, and an id made up here would point at nothing);
    ``input_params`` are carried from the pair's previous row (None for a first deploy).
    """
    previous = pair.current.pk if pair.current is not None else None
    if pair.serve.type == ServeType.WORKFLOW:
        if environment_variables is not None:
            raise InvalidConfig(
                "environment_variables",
                f"serve {pair.serve.name!r} is a workflow: deployments carry environment variables for API serves only",
            )
        schedule = await _previous_side_row(ScheduledWorkflowDeployment, conn, pair, environment, previous)
        await ScheduledWorkflowDeployment.create(
            deployment_id=new.pk,
            workflow_id=pair.serve.name,
            job_cluster_id="",
            input_params=schedule.input_params if schedule is not None else None,
            using_db=conn,
        )
        return
    layer = await _previous_side_row(AppLayerDeployment, conn, pair, environment, previous)
    if environment_variables is None and layer is not None:
        environment_variables = layer.environment_variables
    await AppLayerDeployment.create(
        deployment_id=new.pk,
        deployment_strategy=layer.deployment_strategy if layer is not None else None,
        deployment_params=layer.deployment_params if layer is not None else None,
        environment_variables=environment_variables,
        using_db=conn,
    )


_SideRow = TypeVar("_SideRow", "AppLayerDeployment", "ScheduledWorkflowDeployment")


async def _previous_side_row(
    model: type[_SideRow], conn: BaseDBAsyncClient, pair: _Pair, environment: Environment, previous: int | None
) -> _SideRow | None:
    """The side row of the deployment being replaced; without one (undeployed, or a row
    Darwin never wrote), the newest side row of the pair's history."""
    if previous is not None:
        row = await model.filter(deployment_id=previous).using_db(conn).first()
        if row is not None:
            return row
    return (
        await model.filter(deployment__serve_id=pair.serve.pk, deployment__environment_id=environment.pk)
        .using_db(conn)
        .order_by("-deployment_id")
        .first()
    )


async def _record(
    conn: BaseDBAsyncClient,
    pair: _Pair,
    environment: Environment,
    artifact: Artifact,
    user: User,
    environment_variables: dict[str, Any] | None,
) -> Deployment:
    """Write the new deployment over the locked pair: the new ACTIVE row and its side row,
    every other ACTIVE row of the pair ENDED, the pointer moved (previous = the old one)."""
    new = await Deployment.create(
        serve_id=pair.serve.pk,
        artifact_id=artifact.pk,
        environment_id=environment.pk,
        created_by_id=user.pk,
        status=DeploymentStatus.ACTIVE,
        using_db=conn,
    )
    await _side_rows(conn, pair, environment, new, environment_variables)
    ended_ids = [d.pk for d in pair.active_rows]
    if ended_ids:
        await (
            Deployment.filter(id__in=ended_ids)
            .using_db(conn)
            .update(status=DeploymentStatus.ENDED, ended_at=timezone.now())
        )
    previous_id = pair.current.pk if pair.current is not None else None
    if pair.pointer is None:
        await ActiveDeployment.create(
            deployment_id=new.pk,
            previous_deployment_id=previous_id,
            environment_id=environment.pk,
            serve_id=pair.serve.pk,
            using_db=conn,
        )
    else:
        pair.pointer.deployment_id = new.pk
        pair.pointer.previous_deployment_id = previous_id
        await pair.pointer.save(using_db=conn)
    return new


def _check_artifact(serve: Serve, artifact: Artifact) -> None:
    if artifact.serve_id != serve.pk:
        raise InvalidConfig(
            "artifact",
            f"artifact {artifact.version!r} (id {artifact.pk}) belongs to another serve than "
            f"{serve.name!r}: pick an artifact of {serve.name!r}",
        )


async def propose(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    user: User,
    *,
    reflects: int | None,
    environment_variables: dict[str, Any] | None = None,
    using_db: BaseDBAsyncClient | None = None,
) -> Proposal:
    """Record ``artifact`` as the pair's new deployment if the pair has not moved (compare-and-swap).

    ``reflects`` is the deployment the caller's view is based on (an MLServe's annotation;
    None: the pair had no active deployment). Under the pair's locks: when the pair's active
    deployment id is still ``reflects``, the deploy is recorded as :func:`activate` records it
    (``recorded=True``, ``active`` the new deployment, ``previous_id`` the one it replaced);
    otherwise another writer moved first and wins: nothing is written, ``active`` is the
    pair's active deployment (None when undeployed). When the active deployment is
    ``reflects`` and already runs ``artifact``, nothing is written either (``recorded=False``).

    A retry after a crash between this call and the caller's own bookkeeping finds the pair
    moved (to the deployment it recorded): ``recorded=False`` with ``active`` running
    ``artifact``, which the caller can adopt.

    Deadlocks and lock wait timeouts are retried here; the decision is taken again each time.
    """
    _check_artifact(serve, artifact)

    async def operation(conn: BaseDBAsyncClient) -> Proposal:
        pair = await _lock_pair(conn, serve, environment)
        active = pair.current if pair.active_id is not None else None
        if pair.active_id != reflects or pair.runs(artifact):
            return Proposal(recorded=False, active=active, previous_id=None)
        new = await _record(conn, pair, environment, artifact, user, environment_variables)
        return Proposal(recorded=True, active=new, previous_id=pair.current.pk if pair.current is not None else None)

    return await _in_locked_transaction(using_db, operation)


async def activate(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    user: User,
    *,
    environment_variables: dict[str, Any] | None = None,
    using_db: BaseDBAsyncClient | None = None,
) -> Deployment:
    """Make ``artifact`` the active deployment of ``serve`` in ``environment``, whatever is active.

    In one transaction: a new ACTIVE ``deployments`` row with Darwin's side row (see
    :func:`propose`; ``environment_variables`` as there); every other ACTIVE row of the pair
    ENDED with ``ended_at``; the pair's ``active_deployments`` row pointing at the new one
    with ``previous_deployment`` set to the old. Idempotent: when the active deployment
    already runs ``artifact``, it is returned and nothing is written.

    The same locks as :func:`propose` and :func:`end_active`, in the same order, so
    concurrent calls for one serve run one after the other; deadlocks and lock wait
    timeouts are retried here.
    """
    _check_artifact(serve, artifact)

    async def operation(conn: BaseDBAsyncClient) -> Deployment:
        pair = await _lock_pair(conn, serve, environment)
        if pair.runs(artifact):
            assert pair.current is not None
            return pair.current
        return await _record(conn, pair, environment, artifact, user, environment_variables)

    return await _in_locked_transaction(using_db, operation)


async def end_active(
    serve: Serve,
    environment: Environment,
    *,
    deployment_id: int | None,
    using_db: BaseDBAsyncClient | None = None,
) -> int | None:
    """End the pair's active deployment and remove its ``active_deployments`` row (an undeploy).

    With ``deployment_id``, only that deployment, and only while it is still the active one
    (compare-and-swap: a newer deploy is never ended, a retry ends nothing); with None,
    whatever is active, and any other ACTIVE row of the pair with it. Returns the id ended,
    or None when there was nothing to end. Same locks in the same order as :func:`activate`.
    """

    async def operation(conn: BaseDBAsyncClient) -> int | None:
        pair = await _lock_pair(conn, serve, environment)
        if pair.pointer is None:
            return None
        ended = pair.pointer.deployment_id
        if deployment_id is not None and ended != deployment_id:
            return None
        ids = [ended] if deployment_id is not None else sorted({ended, *(d.pk for d in pair.active_rows)})
        await (
            Deployment.filter(id__in=ids, status=DeploymentStatus.ACTIVE)
            .using_db(conn)
            .update(status=DeploymentStatus.ENDED, ended_at=timezone.now())
        )
        await ActiveDeployment.filter(id=pair.pointer.pk).using_db(conn).delete()
        return ended

    return await _in_locked_transaction(using_db, operation)
