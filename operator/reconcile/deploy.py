"""MLServe → database (DESIGN.md data flow 1): resolve the rows, record a deploy when asked.

:func:`resolve` finds the serve, the environment and the requested artifact, and checks the
identity rules (the environment is bound to this cluster, the MLServe lives in the
environment's namespace, the serve's type is the one the MLServe says). Each failure is an
:class:`~.errors.InvalidInput` with a reason and a message, raised before anything is
written.

:func:`sync_deployment` then compares the request with the database and applies
"whoever wrote last wins" (:func:`.identity.mlserve_is_newer`): the MLServe's spec was last
written at ``spec_changed_at`` (from its managedFields); the database's last deploy or undeploy
of the pair at the newest ``created_at`` / ``ended_at``. When the MLServe is newer and asks for another artifact,
:func:`mlserve.models.activate` records the deploy in one transaction (idempotent: a retry
after a crash finds the artifact active and writes nothing). When the database is newer,
nothing is written here: the database → cluster sync updates the MLServe, so one change is
never recorded twice (no ping-pong).

:func:`end_deployment` is the deletion's write: the pair's deployment ENDED and its
``active_deployments`` row removed, in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import (
    BaseORMException,
    FieldError,
    IncompleteInstanceError,
    IntegrityError,
    NotExistOrMultiple,
    NoValuesFetched,
    ObjectDoesNotExistError,
    ParamsError,
    ValidationError,
)

from mlserve.models import (
    ActiveDeployment,
    ActiveDeploymentConflict,
    Artifact,
    Deployment,
    DeploymentStatus,
    EnvConfig,
    Environment,
    InvalidConfig,
    ModelsError,
    Serve,
    User,
    activate,
    end_active,
)
from mlserve.models import errors as models_errors
from mlserve.operator.spec.api import ConditionType, Reason
from mlserve.operator.spec.times import as_utc

from .errors import InvalidInput, TemporaryFailure
from .identity import mlserve_is_newer

__all__ = [
    "DeployOutcome",
    "Resolved",
    "end_deployment",
    "mlserve_is_newer",
    "owns_pair",
    "resolve",
    "sync_deployment",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    """The rows an MLServe names, checked against the identity rules."""

    serve: Serve
    environment: Environment
    env_config: EnvConfig
    artifact: Artifact


@dataclass(frozen=True)
class DeployOutcome:
    """Where the database stands after :func:`sync_deployment`."""

    state: str
    """in_sync | recorded | db_newer | undeployed"""
    message: str
    active: Deployment | None
    """The pair's active deployment (None when undeployed in the database)."""
    active_artifact: Artifact | None
    previous_id: int | None
    recorded: bool = False
    db_changed_at: datetime | None = None


async def resolve(
    *,
    serve_name: str,
    serve_type: str,
    environment_name: str,
    artifact_version: str,
    namespace: str,
    cluster_name: str,
) -> Resolved:
    """The serve, environment and artifact; InvalidInput naming what is wrong."""
    serve = await Serve.get_or_none(name=serve_name)
    if serve is None:
        raise InvalidInput(
            Reason.UNKNOWN_SERVE,
            f"serve {serve_name!r} is not in the database (serves.name): create it in Darwin, or fix spec.serve",
        )
    if str(serve.type) != serve_type:
        raise InvalidInput(
            Reason.SERVE_TYPE_MISMATCH,
            f"serve {serve_name!r} is of type {serve.type} in the database, but spec.type is "
            f"{serve_type!r}: a serve's type does not change, so recreate the MLServe with "
            f"type {serve.type}",
        )
    environment, config = await _bound_environment(environment_name, namespace, cluster_name)
    artifact = await Artifact.get_or_none(serve_id=serve.pk, version=artifact_version)
    if artifact is None:
        raise InvalidInput(
            Reason.UNKNOWN_ARTIFACT,
            f"serve {serve_name!r} has no artifact version {artifact_version!r} "
            "(artifacts.version): build it first, or fix spec.artifactVersion",
        )
    if not artifact.image_url:
        raise InvalidInput(
            Reason.ARTIFACT_NOT_BUILT,
            f"artifact {artifact_version!r} of serve {serve_name!r} has no image yet "
            "(artifacts.image_url is empty): wait for its build to succeed",
        )
    return Resolved(serve=serve, environment=environment, env_config=config, artifact=artifact)


async def _bound_environment(environment_name: str, namespace: str, cluster_name: str) -> tuple[Environment, EnvConfig]:
    """The environment and its config, if it is bound to this cluster and ``namespace``."""
    environment = await Environment.get_or_none(name=environment_name)
    if environment is None:
        raise InvalidInput(
            Reason.UNKNOWN_ENVIRONMENT,
            f"environment {environment_name!r} is not in the database (environments.name): "
            "create it in Darwin, or fix spec.environment",
        )
    try:
        config = environment.config
    except InvalidConfig as exc:
        raise InvalidInput(
            Reason.INVALID_ENV_CONFIG,
            f"environment {environment_name!r} has invalid env_configs in the database: {exc}",
        ) from None
    if config.cluster_name != cluster_name:
        raise InvalidInput(
            Reason.FOREIGN_CLUSTER,
            f"environment {environment_name!r} is bound to cluster {config.cluster_name!r} "
            f"(env_configs.cluster_name), and this operator runs cluster {cluster_name!r}: apply "
            "the MLServe in that cluster; nothing was changed",
        )
    if config.namespace != namespace:
        raise InvalidInput(
            Reason.WRONG_NAMESPACE,
            f"environment {environment_name!r} deploys to namespace {config.namespace!r} "
            f"(env_configs.namespace), but this MLServe is in {namespace!r}: create it in "
            f"{config.namespace!r}; nothing was changed",
        )
    return environment, config


async def _last_change(serve: Serve, environment: Environment) -> datetime | None:
    """When the database last deployed or undeployed the pair."""
    latest = await Deployment.filter(serve_id=serve.pk, environment_id=environment.pk).order_by("-id").first()
    if latest is None:
        return None
    times = [as_utc(t) for t in (latest.created_at, latest.ended_at) if t is not None]
    return max(times) if times else None


async def _pointer(serve: Serve, environment: Environment) -> ActiveDeployment | None:
    rows = await ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk).order_by("id")
    if len(rows) > 1:
        raise ActiveDeploymentConflict(serve.name, environment.name, [r.deployment_id for r in rows])
    return rows[0] if rows else None


async def sync_deployment(
    resolved: Resolved,
    *,
    spec_changed_at: datetime | None,
    spec_changed: bool,
    deploy_user: str,
) -> DeployOutcome:
    """Record a deployment when the MLServe asks for another artifact and changed last.

    ``spec_changed`` is False when this generation of the MLServe was already judged (its
    request is not new), so only the database can have moved since.
    """
    serve, environment, artifact = resolved.serve, resolved.environment, resolved.artifact
    try:
        pointer = await _pointer(serve, environment)
    except ActiveDeploymentConflict as exc:
        raise InvalidInput(Reason.DUPLICATE_ACTIVE_DEPLOYMENTS, str(exc)) from None
    active = await Deployment.get_or_none(id=pointer.deployment_id) if pointer else None
    if active is not None and active.status != DeploymentStatus.ACTIVE:
        active = None
    db_changed_at = await _last_change(serve, environment)

    if active is not None and active.artifact_id == artifact.pk:
        return DeployOutcome(
            "in_sync",
            f"deployment {active.pk} runs artifact {artifact.version}",
            active,
            artifact,
            pointer.previous_deployment_id if pointer else None,
            db_changed_at=db_changed_at,
        )

    newer = spec_changed and mlserve_is_newer(spec_changed_at, db_changed_at)
    if not newer:
        if active is None:
            return DeployOutcome(
                "undeployed",
                f"serve {serve.name} was undeployed from {environment.name} in the database after "
                "this MLServe last changed: the database sync removes this MLServe",
                None,
                None,
                None,
                db_changed_at=db_changed_at,
            )
        active_artifact = await Artifact.get(id=active.artifact_id)
        return DeployOutcome(
            "db_newer",
            f"the database deployed artifact {active_artifact.version} (deployment {active.pk}) "
            f"after this MLServe asked for {artifact.version}: the database sync updates "
            "spec.artifactVersion; the children run the database's deployment",
            active,
            active_artifact,
            pointer.previous_deployment_id if pointer else None,
            db_changed_at=db_changed_at,
        )

    return await _record(resolved, active, deploy_user)


async def _record(resolved: Resolved, active: Deployment | None, deploy_user: str) -> DeployOutcome:
    """Record the MLServe's request as the pair's new deployment, as ``deploy_user``."""
    serve, environment, artifact = resolved.serve, resolved.environment, resolved.artifact
    user = await User.get_or_none(username=deploy_user)
    if user is None:
        raise InvalidInput(
            Reason.UNKNOWN_USER,
            f"user {deploy_user!r} (MLSERVE_DEPLOY_USER) is not in the users table: deploys are "
            "recorded as that user, so create it (mlserve db init does) or set the variable",
        )
    try:
        new = await activate(serve, environment, artifact, user)
    except ActiveDeploymentConflict as exc:
        raise InvalidInput(Reason.DUPLICATE_ACTIVE_DEPLOYMENTS, str(exc)) from None
    previous_id = active.pk if active is not None else None
    log.info(
        "recorded deployment %s: serve %s artifact %s in %s (previous %s)",
        new.pk,
        serve.name,
        artifact.version,
        environment.name,
        previous_id,
    )
    return DeployOutcome(
        "recorded",
        f"recorded deployment {new.pk} of artifact {artifact.version}"
        + (f", replacing deployment {previous_id}" if previous_id else ""),
        new,
        artifact,
        previous_id,
        recorded=True,
        db_changed_at=as_utc(new.created_at),
    )


async def owns_pair(serve_name: str, environment_name: str, namespace: str, cluster_name: str) -> bool:
    """Whether an MLServe in ``namespace`` may act for the pair (the identity rules)."""
    environment = await Environment.get_or_none(name=environment_name)
    if environment is None or not await Serve.exists(name=serve_name):
        return False
    try:
        config = environment.config
    except InvalidConfig:
        return False
    return config.cluster_name == cluster_name and config.namespace == namespace


async def end_deployment(serve_name: str, environment_name: str, deployment_id: int | None = None) -> int | None:
    """End the pair's active deployment and remove its active row: :func:`mlserve.models.end_active` by names.

    With ``deployment_id``, only that deployment, while it is still the active one (a retry
    never ends a newer deploy). Returns the id ended, or None when there was nothing to end.
    """
    serve = await Serve.get_or_none(name=serve_name)
    environment = await Environment.get_or_none(name=environment_name)
    if serve is None or environment is None:
        return None
    return await end_active(serve, environment, deployment_id=deployment_id)


# Errors of the data, not of the database: a missing or duplicate row, a broken constraint,
# a value the column refuses. Retrying cannot help, so they are never "unavailable".
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    NotExistOrMultiple,  # DoesNotExist, MultipleObjectsReturned
    ObjectDoesNotExistError,
    IntegrityError,
    ValidationError,
    FieldError,
    ParamsError,
    NoValuesFetched,
    IncompleteInstanceError,
    ModelsError,  # InvalidConfig, ActiveDeploymentConflict (DatabaseUnavailable is checked first)
)
# The drivers' (PEP 249) names of the same kind of error.
_DRIVER_DATA_ERRORS = frozenset({"IntegrityError", "DataError", "ProgrammingError", "NotSupportedError"})
_DRIVER_MODULES = ("asyncmy", "pymysql", "aiosqlite", "sqlite3")


def is_database_error(exc: BaseException) -> bool:
    """The database is unreachable (down, timed out, lost connection), not the data wrong.

    A missing row, a duplicate or a broken constraint is a data error: False, so it is
    reported as what it is instead of being retried as "database down".
    """
    if isinstance(exc, models_errors.DatabaseUnavailable):
        return True
    if isinstance(exc, _DATA_ERRORS):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, OSError, BaseORMException)):
        return True
    if (type(exc).__module__ or "").startswith(_DRIVER_MODULES):
        return type(exc).__name__ not in _DRIVER_DATA_ERRORS
    return False


def as_unavailable(exc: BaseException) -> TemporaryFailure:
    """The reconcile's failure for a database that did not answer: retried with backoff,
    reported on the ``DatabaseSynced`` condition; its message never carries credentials."""
    return TemporaryFailure(
        Reason.DATABASE_UNAVAILABLE,
        f"the database did not answer ({type(exc).__name__}); the operator retries with backoff "
        "and keeps the children as they are",
        condition=ConditionType.DATABASE_SYNCED,
    )
