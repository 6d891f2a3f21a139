"""The one place where an MLServe's overrides meet the database's infra config.

:func:`resolve_api` and :func:`resolve_workflow` return the renderers' inputs,
:class:`ApiServe` and :class:`WorkflowServe`: everything a manifest needs, already merged
and checked, so a renderer never decides between two sources.

Merge rules (also in the CRD's field descriptions):

- ``replicas``, ``resources``, ``nodeCapacityType``: field by field over ``fast_api_config``.
- ``hosts``: replaces ``additional_hosts`` when given.
- ``env``: merged over the deployment's ``environment_variables`` and the injected ``ENV`` and
  ``SERVICE_NAME``; a name in the spec wins (:mod:`.env` has Darwin's rules).
- ``head``: field by field over ``head_node_config`` (or :data:`DEFAULT_HEAD` when the
  database has none).
- ``workerGroups``: replaces ``worker_node_config`` entirely when given.
- ``schedule``: replaces ``workflow_serve_configs.schedule`` when given; empty means none.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mlserve.models.configs import FastAPIConfig, HeadNodeConfig
from mlserve.models.enums import NodeCapacityType, ServeType
from mlserve.models.errors import InvalidConfig

from .context import EnvironmentContext, ServeContext
from .env import EnvVar, container_environment
from .mlserve import MLServeSpec
from .pods import PodExtras, pod_extras_from_env_config
from .schedule import InvalidSchedule, parse_schedule

__all__ = [
    "DEFAULT_HEAD",
    "ApiServe",
    "WorkerGroup",
    "WorkflowServe",
    "check_identity",
    "effective_api_config",
    "effective_head_config",
    "effective_worker_groups",
    "resolve_api",
    "resolve_workflow",
]

# The Ray head when neither head_node_config (a column Darwin leaves out) nor spec.head
# says otherwise: a small, on-demand pod that only coordinates.
DEFAULT_HEAD = HeadNodeConfig.parse({"cores": 2, "memory": 4, "node_capacity_type": "on_demand"})


class _Resolved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    serve: str
    environment: EnvironmentContext
    image: str
    artifact_version: str
    deployment_id: int | None = None
    env: tuple[EnvVar, ...] = ()
    """Container environment, sorted by name (:func:`.env.container_environment`)."""
    pod: PodExtras = PodExtras()
    """The environment's pod settings (``env_configs``); the renderers merge the operator's
    settings under them."""
    paused: bool = False

    @property
    def namespace(self) -> str:
        return self.environment.config.namespace


class ApiServe(_Resolved):
    """Everything the API renderers need."""

    config: FastAPIConfig
    """The effective size and scaling (database merged with the spec)."""
    additional_hosts: tuple[str, ...] = ()
    cpu_utilization: int | None = None
    """HPA CPU target from the spec; None: the render settings' default."""
    memory_utilization: int | None = None

    @property
    def autoscaled(self) -> bool:
        """A HorizontalPodAutoscaler manages the replica count (min below max)."""
        return self.config.min_replicas < self.config.max_replicas


class WorkerGroup(BaseModel):
    """One Ray worker group, named."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cores: float
    memory: int
    min_replicas: int
    max_replicas: int
    node_capacity_type: NodeCapacityType = NodeCapacityType.ON_DEMAND


class WorkflowServe(_Resolved):
    """Everything the workflow renderers need."""

    schedule: str | None = None
    """Cron schedule, None to run once per deployment."""
    head: HeadNodeConfig
    workers: tuple[WorkerGroup, ...]
    entrypoint: str | None = None
    """None: the render settings' default entrypoint."""
    runtime_env: dict[str, Any] | None = None

    @property
    def autoscaled(self) -> bool:
        """Some worker group may grow: Ray's in-tree autoscaler is needed."""
        return any(group.min_replicas < group.max_replicas for group in self.workers)


def check_identity(ctx: ServeContext, spec: MLServeSpec) -> None:
    """Raise when the spec and the database disagree on what is being served."""
    if spec.serve != ctx.serve:
        raise InvalidConfig("spec.serve", f"is {spec.serve!r} but the context is for serve {ctx.serve!r}")
    if spec.environment != ctx.environment.name:
        raise InvalidConfig(
            "spec.environment",
            f"is {spec.environment!r} but the context is for environment {ctx.environment.name!r}",
        )
    if spec.type is not ctx.serve_type:
        raise InvalidConfig(
            "spec.type",
            f"is {spec.type.value} but serve {ctx.serve!r} is a {ctx.serve_type.value} serve in the "
            f"database: set spec.type to {ctx.serve_type.value}",
        )
    if spec.artifact_version != ctx.artifact_version:
        raise InvalidConfig(
            "spec.artifactVersion",
            f"is {spec.artifact_version!r} but the context resolved artifact {ctx.artifact_version!r}",
        )


def _merged_env(ctx: ServeContext, spec: MLServeSpec) -> tuple[EnvVar, ...]:
    return container_environment(
        serve=ctx.serve,
        environment=ctx.environment.name,
        protected=ctx.environment.is_protected,
        database=ctx.env_vars,
        spec=spec.env,
    )


def effective_api_config(ctx: ServeContext, spec: MLServeSpec) -> FastAPIConfig:
    """``fast_api_config`` with ``spec.replicas``, ``spec.resources`` and ``spec.nodeCapacityType`` over it."""
    base: dict[str, Any] = {}
    if ctx.api_config is not None:
        base = ctx.api_config.model_dump(
            include={"min_replicas", "max_replicas", "cores", "memory", "node_capacity_type"}
        )
    if spec.replicas is not None:
        if spec.replicas.min is not None:
            base["min_replicas"] = spec.replicas.min
        if spec.replicas.max is not None:
            base["max_replicas"] = spec.replicas.max
    if spec.resources is not None:
        if spec.resources.cores is not None:
            base["cores"] = float(spec.resources.cores)
        if spec.resources.memory is not None:
            base["memory"] = spec.resources.memory
    if spec.node_capacity_type is not None:
        base["node_capacity_type"] = spec.node_capacity_type

    missing = [
        path
        for key, path in (
            ("min_replicas", "spec.replicas.min"),
            ("max_replicas", "spec.replicas.max"),
            ("cores", "spec.resources.cores"),
            ("memory", "spec.resources.memory"),
        )
        if key not in base
    ]
    if missing:
        raise InvalidConfig(
            missing[0],
            f"serve {ctx.serve!r} has no fast_api_config in environment {ctx.environment.name!r}: "
            f"set {', '.join(missing)} in the MLServe, or save the serve's infra config in the database",
        )
    if base["min_replicas"] > base["max_replicas"]:
        raise InvalidConfig(
            "spec.replicas",
            f"the effective min replicas ({base['min_replicas']}) is greater than the effective max "
            f"({base['max_replicas']}) once the spec is merged over fast_api_config: set both "
            "spec.replicas.min and spec.replicas.max",
        )
    base["cores"] = float(base["cores"])
    base["node_capacity_type"] = NodeCapacityType.parse(
        base.get("node_capacity_type", NodeCapacityType.ON_DEMAND)
    ).value
    return FastAPIConfig.parse(base, "fast_api_config")


def effective_head_config(ctx: ServeContext, spec: MLServeSpec) -> HeadNodeConfig:
    """``head_node_config`` (or :data:`DEFAULT_HEAD`) with ``spec.head`` over it, field by field."""
    head = ctx.head_config or DEFAULT_HEAD
    values: dict[str, Any] = {
        "cores": float(head.cores),
        "memory": head.memory,
        "node_capacity_type": head.node_capacity_type.value,
    }
    if spec.head is not None:
        if spec.head.cores is not None:
            values["cores"] = float(spec.head.cores)
        if spec.head.memory is not None:
            values["memory"] = spec.head.memory
        if spec.head.node_capacity_type is not None:
            values["node_capacity_type"] = spec.head.node_capacity_type.value
    return HeadNodeConfig.parse(values, "head_node_config")


def effective_worker_groups(ctx: ServeContext, spec: MLServeSpec) -> tuple[WorkerGroup, ...]:
    """``spec.workerGroups`` when given, else ``worker_node_config``; unnamed groups get ``wg-<index>``."""
    if spec.worker_groups is not None:
        return tuple(
            WorkerGroup(
                name=group.name or f"wg-{index}",
                cores=float(group.cores),
                memory=group.memory,
                min_replicas=group.min_replicas,
                max_replicas=group.max_replicas,
                node_capacity_type=group.node_capacity_type or NodeCapacityType.ON_DEMAND,
            )
            for index, group in enumerate(spec.worker_groups)
        )
    if not ctx.worker_configs:
        raise InvalidConfig(
            "spec.workerGroups",
            f"serve {ctx.serve!r} has no worker_node_config in environment {ctx.environment.name!r}: "
            "set spec.workerGroups in the MLServe, or save the serve's infra config in the database",
        )
    return tuple(
        WorkerGroup(
            name=f"wg-{index}",
            cores=float(config.cores_per_pods),
            memory=config.memory_per_pods,
            min_replicas=config.min_pods,
            max_replicas=config.max_pods,
            node_capacity_type=config.node_capacity_type,
        )
        for index, config in enumerate(ctx.worker_configs)
    )


def _named_groups_unique(groups: tuple[WorkerGroup, ...]) -> None:
    names = [group.name for group in groups]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise InvalidConfig(
            "spec.workerGroups",
            f"group names {clashes} appear twice (a named group clashes with a default wg-<index> "
            "name): rename the group",
        )


def _common_fields(ctx: ServeContext, spec: MLServeSpec) -> dict[str, Any]:
    """What every resolved serve takes from the context and the spec alike (``_Resolved``)."""
    return {
        "serve": ctx.serve,
        "environment": ctx.environment,
        "image": ctx.image,
        "artifact_version": ctx.artifact_version,
        "deployment_id": ctx.deployment_id,
        "env": _merged_env(ctx, spec),
        "pod": pod_extras_from_env_config(ctx.environment.config),
        "paused": spec.paused,
    }


def resolve_api(ctx: ServeContext, spec: MLServeSpec) -> ApiServe:
    """The API renderers' input: the context and the spec merged (see the module's rules)."""
    check_identity(ctx, spec)
    if ctx.serve_type is not ServeType.API:
        raise InvalidConfig("spec.type", f"serve {ctx.serve!r} is not an API serve")
    return ApiServe(
        **_common_fields(ctx, spec),
        config=effective_api_config(ctx, spec),
        additional_hosts=spec.hosts if spec.hosts is not None else ctx.additional_hosts,
        cpu_utilization=spec.autoscaling.cpu_utilization if spec.autoscaling else None,
        memory_utilization=spec.autoscaling.memory_utilization if spec.autoscaling else None,
    )


def resolve_workflow(ctx: ServeContext, spec: MLServeSpec) -> WorkflowServe:
    """The workflow renderers' input: the context and the spec merged (see the module's rules)."""
    check_identity(ctx, spec)
    if ctx.serve_type is not ServeType.WORKFLOW:
        raise InvalidConfig("spec.type", f"serve {ctx.serve!r} is not a workflow serve")
    workers = effective_worker_groups(ctx, spec)
    _named_groups_unique(workers)
    schedule = spec.schedule if spec.schedule is not None else ctx.schedule
    if spec.schedule is None and (ctx.schedule or "").strip():
        try:
            parse_schedule(str(ctx.schedule))
        except InvalidSchedule as exc:
            raise InvalidConfig("workflow_serve_configs.schedule", str(exc)) from None
    return WorkflowServe(
        **_common_fields(ctx, spec),
        schedule=(schedule or "").strip() or None,
        head=effective_head_config(ctx, spec),
        workers=workers,
        entrypoint=spec.entrypoint,
        runtime_env=spec.runtime_env,
    )
