"""MLServe → database (DESIGN.md data flow 1): resolve the rows, record a request (``docs/sync.md``).

:func:`check_binding` and :func:`resolve` find the environment, the serve and the requested
artifact, and check the identity rules (the environment is bound to this cluster, the
MLServe lives in the environment's namespace, the serve's type is the one the MLServe says).
Each failure is an :class:`~.errors.InvalidInput` with a reason and a message, raised before
anything is written; a version still being built is :class:`~.errors.ArtifactPending`
(:mod:`.builds` reads its build job).

:func:`sync_deployment` then applies the protocol; no clock decides anything. An MLServe
*reflects* the deployment its ``mlserve.darwin.io/deployment-id`` annotation names. Its
request (``spec.artifactVersion``) is new when it differs from the artifact of the pair's
active deployment while that deployment is the reflected one (or when it reflects nothing
and the pair has none). A new request is recorded by compare-and-swap
(:func:`mlserve.models.propose`): only if the pair's active deployment is still the reflected
one, checked under the database lock. Otherwise the database moved first and wins: the
outcome says so (``superseded``, or ``undeployed``) and the caller sets the MLServe to the
database's deployment. A paused MLServe records nothing.

:func:`end_deployment` is the deletion's write: the pair's deployment ENDED and its
``active_deployments`` row removed, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    Proposal,
    Serve,
    ServeType,
    User,
    end_active,
    propose,
)
from mlserve.models import errors as models_errors
from mlserve.operator.spec.api import ConditionType, Reason
from mlserve.operator.spec.images import image_reference_problem

from . import builds
from .errors import InvalidInput, TemporaryFailure
from .rows import ClusterRows

__all__ = [
    "DeployOutcome",
    "Resolved",
    "check_binding",
    "end_deployment",
    "from_rows",
    "kept_verdict",
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
    """in_sync | recorded | superseded | followed | paused | undeployed

    ``superseded``: the MLServe asked for another artifact, but the database moved first;
    ``followed``: the database moved and the MLServe asked for nothing new. In both the
    caller sets the MLServe's spec to ``active``."""
    message: str
    active: Deployment | None
    """The pair's active deployment (None when undeployed in the database)."""
    active_artifact: Artifact | None
    previous_id: int | None
    recorded: bool = False

    @property
    def moved(self) -> bool:
        """The MLServe must be set to the database's deployment."""
        return self.state in ("superseded", "followed")


_KEPT_STATES = {Reason.SUPERSEDED: "superseded", Reason.DEPLOYMENT_RECORDED: "recorded", Reason.IN_SYNC: "in_sync"}


def kept_verdict(status: Mapping[str, Any], outcome: DeployOutcome) -> tuple[str, str] | None:
    """The ``DatabaseSynced`` verdict the status already gives for the deployment the MLServe
    still reflects: ``(state, message)`` of a deploy it recorded, of a request the database
    superseded, or of a deployment it followed, kept while nothing new happens. A later
    reconcile that finds the pair in step would otherwise rewrite the condition once ("in sync")
    for every deploy: one needless status write each, at the next drift check."""
    if outcome.state != "in_sync" or outcome.active is None or status.get("deploymentId") != outcome.active.pk:
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == ConditionType.DATABASE_SYNCED and condition.get("status") == "True":
            state = _KEPT_STATES.get(condition.get("reason"))
            return None if state is None else (state, str(condition.get("message") or ""))
    return None


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
    environment, config = await check_binding(environment_name, namespace, cluster_name)
    artifact = await Artifact.get_or_none(serve_id=serve.pk, version=artifact_version)
    if artifact is None or not artifact.image_url:
        build = await builds.latest_build(serve.pk, artifact_version)
        raise builds.artifact_unavailable(serve_name, artifact_version, artifact, build)
    problem = image_reference_problem(artifact.image_url)
    if problem is not None:
        raise InvalidInput(
            Reason.INVALID_IMAGE,
            f"artifact {artifact_version!r} of serve {serve_name!r} (artifacts.id {artifact.pk}): its "
            f"image_url {problem}; nothing was deployed",
        )
    return Resolved(serve=serve, environment=environment, env_config=config, artifact=artifact)


async def check_binding(
    environment_name: str, namespace: str, cluster_name: str, rows: ClusterRows | None = None
) -> tuple[Environment, EnvConfig]:
    """The environment and its config, if it is bound to this cluster and ``namespace``: only
    an MLServe there can hold its pair (InvalidInput ``WrongNamespace`` / ``ForeignCluster``
    otherwise). With ``rows`` (the cluster's snapshot), a bound environment in the right
    namespace is taken from it; anything else is read from the database."""
    cached = rows.environments.get(environment_name) if rows is not None else None
    if cached is not None and cached.namespace == namespace and cached.config.cluster_name == cluster_name:
        return cached.model, cached.config
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


def from_rows(
    rows: ClusterRows,
    *,
    serve_name: str,
    serve_type: str,
    environment_name: str,
    artifact_version: str,
    namespace: str,
    cluster_name: str,
) -> tuple[Resolved, DeployOutcome] | None:
    """:func:`resolve` and :func:`sync_deployment` answered from the cluster's snapshot, when it
    says the MLServe asks for what runs: the pair's active deployment runs the requested
    artifact (outcome ``in_sync``, whatever the MLServe reflects, as the database would say).

    None whenever the snapshot cannot say so (the request differs from the active
    deployment, the pair or the environment is not in it, the artifact has no image, the
    types differ): the caller then reads the database, and any write re-checks under the
    pair's lock, so a stale snapshot never records anything."""
    environment = rows.environments.get(environment_name)
    pair = rows.pairs.get((serve_name, environment_name))
    if (
        environment is None
        or environment.namespace != namespace
        or environment.config.cluster_name != cluster_name
        or pair is None
        or pair.status != DeploymentStatus.ACTIVE.value
        or pair.serve_type != serve_type
        or pair.artifact_version != artifact_version
        or not pair.image_url
    ):
        return None
    try:
        serve = Serve(id=pair.serve_id, name=pair.serve_name, type=ServeType(pair.serve_type))
    except ValueError:
        return None
    artifact = Artifact(
        id=pair.artifact_id, serve_id=pair.serve_id, version=pair.artifact_version, image_url=pair.image_url
    )
    active = Deployment(
        id=pair.deployment_id,
        serve_id=pair.serve_id,
        artifact_id=pair.artifact_id,
        environment_id=pair.environment_id,
        status=DeploymentStatus.ACTIVE,
        created_at=pair.created_at,
    )
    resolved = Resolved(serve=serve, environment=environment.model, env_config=environment.config, artifact=artifact)
    outcome = DeployOutcome(
        "in_sync",
        f"deployment {active.pk} runs artifact {artifact.version}",
        active,
        artifact,
        pair.previous_deployment_id,
    )
    return resolved, outcome


async def _pointer(serve: Serve, environment: Environment) -> ActiveDeployment | None:
    rows = await ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk).order_by("id")
    if len(rows) > 1:
        raise ActiveDeploymentConflict(serve.name, environment.name, [r.deployment_id for r in rows])
    return rows[0] if rows else None


async def sync_deployment(
    resolved: Resolved,
    *,
    reflects: int | None,
    paused: bool = False,
    deploy_user: str,
) -> DeployOutcome:
    """Apply the protocol to an MLServe that reflects deployment ``reflects`` and asks for
    ``resolved.artifact``: record its request by compare-and-swap, or say how the database
    moved first."""
    serve, environment, artifact = resolved.serve, resolved.environment, resolved.artifact
    active, previous_id = await _active(serve, environment)
    active_id = active.pk if active is not None else None
    if active is not None and active.artifact_id == artifact.pk:
        # Asks for what runs: in step (an MLServe that reflected nothing or an older
        # deployment now reflects this one).
        return DeployOutcome(
            "in_sync", f"deployment {active.pk} runs artifact {artifact.version}", active, artifact, previous_id
        )
    if active_id == reflects:
        if paused:
            return DeployOutcome(
                "paused",
                f"spec.paused is true: the request for artifact {artifact.version} is recorded when "
                "the MLServe is resumed",
                active,
                await Artifact.get(id=active.artifact_id) if active is not None else None,
                previous_id,
            )
        proposal = await _propose(resolved, reflects, deploy_user)
        if proposal.recorded and proposal.active is not None:
            return _recorded(resolved, proposal.active, proposal.previous_id)
        active, previous_id = await _active(serve, environment)  # the database moved meanwhile
        if active is not None and active.artifact_id == artifact.pk:
            return DeployOutcome(
                "in_sync", f"deployment {active.pk} runs artifact {artifact.version}", active, artifact, previous_id
            )
        asked = True
    else:
        asked = reflects is None or await _reflected_version(reflects) != artifact.version
    if active is None:
        return DeployOutcome(
            "undeployed",
            f"serve {serve.name} is undeployed from {environment.name} in the database (the "
            f"deployment this MLServe reflects, {reflects}, ended): the database sync removes this MLServe",
            None,
            None,
            None,
        )
    active_artifact = await Artifact.get(id=active.artifact_id)
    if asked:
        message = (
            f"the request for artifact {artifact.version} was superseded by deployment {active.pk} "
            f"(artifact {active_artifact.version}), which the database recorded first: "
            "spec.artifactVersion follows it; apply again to ask for another version"
        )
        return DeployOutcome("superseded", message, active, active_artifact, previous_id)
    message = f"deployment {active.pk} (artifact {active_artifact.version}) was made in the database: following it"
    return DeployOutcome("followed", message, active, active_artifact, previous_id)


async def _active(serve: Serve, environment: Environment) -> tuple[Deployment | None, int | None]:
    """The pair's active deployment (via its pointer) and the one it replaced."""
    try:
        pointer = await _pointer(serve, environment)
    except ActiveDeploymentConflict as exc:
        raise InvalidInput(Reason.DUPLICATE_ACTIVE_DEPLOYMENTS, str(exc)) from None
    active = await Deployment.get_or_none(id=pointer.deployment_id) if pointer else None
    if active is None or active.status != DeploymentStatus.ACTIVE:
        return None, None
    return active, pointer.previous_deployment_id if pointer else None


async def _reflected_version(deployment_id: int) -> str | None:
    """The artifact version of the deployment an MLServe reflects (None: the row is gone)."""
    reflected = await Deployment.get_or_none(id=deployment_id)
    if reflected is None:
        return None
    artifact = await Artifact.get_or_none(id=reflected.artifact_id)
    return artifact.version if artifact is not None else None


async def _propose(resolved: Resolved, reflects: int | None, deploy_user: str) -> Proposal:
    """Record the MLServe's request as ``deploy_user``, if the pair still is at ``reflects``."""
    user = await User.get_or_none(username=deploy_user)
    if user is None:
        raise InvalidInput(
            Reason.UNKNOWN_USER,
            f"user {deploy_user!r} (MLSERVE_DEPLOY_USER) is not in the users table: deploys are "
            "recorded as that user, so create it (mlserve db init does) or set the variable",
        )
    try:
        return await propose(resolved.serve, resolved.environment, resolved.artifact, user, reflects=reflects)
    except ActiveDeploymentConflict as exc:
        raise InvalidInput(Reason.DUPLICATE_ACTIVE_DEPLOYMENTS, str(exc)) from None


def _recorded(resolved: Resolved, new: Deployment, previous_id: int | None) -> DeployOutcome:
    serve, environment, artifact = resolved.serve, resolved.environment, resolved.artifact
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
