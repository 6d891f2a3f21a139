"""Deployments: which artifact of a serve runs in which environment, and since when.

``deployments`` keeps the history (one row per deploy, ACTIVE until replaced), and
``active_deployments`` points at the current row of each (serve, environment) with the
one it replaced. :func:`activate` is the only writer the operator uses for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tortoise import fields, timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.indexes import Index
from tortoise.models import Model
from tortoise.transactions import in_transaction

from . import _validators
from .configs import parse_environment_variables
from .enums import DeploymentStatus
from .errors import ActiveDeploymentConflict, InvalidConfig
from .serves import Environment, Serve

if TYPE_CHECKING:
    from .artifacts import Artifact
    from .users import User


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
        # Databases created by Darwin lack it; activate() checks the rule in code too.
        unique_together = (("environment", "serve"),)


class AppLayerDeployment(Model):
    """Per-deployment settings of an API serve: rollout strategy and container environment."""

    id = fields.IntField(primary_key=True)
    deployment: fields.OneToOneRelation[Deployment] = fields.OneToOneField(
        "models.Deployment", related_name="app_layer", on_delete=fields.CASCADE
    )
    deployment_strategy = fields.CharField(max_length=50, null=True)
    deployment_params: fields.JSONField[Any] = fields.JSONField(null=True)
    environment_variables: fields.JSONField[Any] = fields.JSONField(
        null=True, validators=[_validators.environment_variables()]
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
    input_params: fields.JSONField[Any] = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "scheduled_workflow_deployments"
        app = "models"


def _is_mysql(connection: BaseDBAsyncClient) -> bool:
    return connection.capabilities.dialect == "mysql"


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
    """What :func:`propose` found or wrote."""

    recorded: bool
    """True: ``active`` is the new deployment this call wrote."""
    active: Deployment | None
    """The pair's active deployment after the call (the new one, or the one that won)."""
    previous_id: int | None
    """The deployment that was active before (when recorded)."""


_UNCHECKED: Any = object()


async def propose(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    user: User,
    *,
    reflects: int | None,
    using_db: BaseDBAsyncClient | None = None,
) -> Proposal:
    """Record ``artifact`` as the pair's new deployment only if the pair's active deployment
    is still ``reflects`` (None: the pair has none), decided under :func:`activate`'s locks.

    When the active deployment is ``reflects`` and already runs ``artifact``, nothing is written.
    """
    return await _activate(serve, environment, artifact, user, using_db=using_db, reflects=reflects)


async def activate(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    user: User,
    *,
    using_db: BaseDBAsyncClient | None = None,
) -> Deployment:
    """Make ``artifact`` the active deployment of ``serve`` in ``environment``.

    In one transaction: a new ACTIVE ``deployments`` row; every other ACTIVE row of the
    pair ENDED with ``ended_at``; the pair's ``active_deployments`` row pointing at the
    new one with ``previous_deployment`` set to the old. Idempotent: when the active
    deployment already runs ``artifact``, it is returned and nothing is written.

    On MySQL the serve row and the pair's rows are locked (SELECT ... FOR UPDATE), so two
    concurrent calls for the same serve run one after the other.
    """
    proposal = await _activate(serve, environment, artifact, user, using_db=using_db, reflects=_UNCHECKED)
    assert proposal.active is not None
    return proposal.active


async def _activate(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    user: User,
    *,
    using_db: BaseDBAsyncClient | None,
    reflects: Any,
) -> Proposal:
    if artifact.serve_id != serve.pk:
        raise InvalidConfig(
            "artifact",
            f"artifact {artifact.version!r} (id {artifact.pk}) belongs to another serve than "
            f"{serve.name!r}: pick an artifact of {serve.name!r}",
        )
    # Always the primary ("default"): with a read replica configured Tortoise has two.
    connection_name = using_db.connection_name if using_db is not None else "default"
    async with in_transaction(connection_name) as conn:
        lock = _is_mysql(conn)

        # Serialise activations of this serve: lock its row first, always in the same order.
        serve_query = Serve.filter(id=serve.pk).using_db(conn)
        await (serve_query.select_for_update() if lock else serve_query)

        pointer_query = ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk).using_db(conn)
        pointers = await (pointer_query.select_for_update() if lock else pointer_query).order_by("id")
        if len(pointers) > 1:
            raise ActiveDeploymentConflict(serve.name, environment.name, [p.deployment_id for p in pointers])
        pointer = pointers[0] if pointers else None

        active_query = Deployment.filter(
            serve_id=serve.pk, environment_id=environment.pk, status=DeploymentStatus.ACTIVE
        ).using_db(conn)
        active = await (active_query.select_for_update() if lock else active_query).order_by("id")

        current: Deployment | None = None
        if pointer is not None:
            current = await Deployment.get(id=pointer.deployment_id, using_db=conn)
        if reflects is not _UNCHECKED:
            live = current if current is not None and current.status == DeploymentStatus.ACTIVE else None
            if (live.pk if live is not None else None) != reflects:
                return Proposal(False, live, None)  # the database moved first: it wins
        if (
            current is not None
            and current.status == DeploymentStatus.ACTIVE
            and current.artifact_id == artifact.pk
            and all(d.pk == current.pk for d in active)
        ):
            return Proposal(False, current, pointer.previous_deployment_id if pointer else None)

        new = await Deployment.create(
            serve_id=serve.pk,
            artifact_id=artifact.pk,
            environment_id=environment.pk,
            created_by_id=user.pk,
            status=DeploymentStatus.ACTIVE,
            using_db=conn,
        )
        ended_ids = [d.pk for d in active]
        if ended_ids:
            await (
                Deployment.filter(id__in=ended_ids)
                .using_db(conn)
                .update(status=DeploymentStatus.ENDED, ended_at=timezone.now())
            )
        if pointer is None:
            await ActiveDeployment.create(
                deployment_id=new.pk,
                previous_deployment_id=current.pk if current is not None else None,
                environment_id=environment.pk,
                serve_id=serve.pk,
                using_db=conn,
            )
        else:
            pointer.deployment_id = new.pk
            pointer.previous_deployment_id = current.pk if current is not None else None
            await pointer.save(using_db=conn)
        return Proposal(True, new, current.pk if current is not None else None)
