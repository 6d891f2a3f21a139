"""Database rows → :class:`~mlserve.operator.spec.ServeContext`: the only reader of the rows
the renderers need (environment, artifact, infra config, per-deployment settings).

A row with an invalid JSON column raises :class:`~.errors.InvalidInput` naming the column
and the fix, before anything is rendered or applied.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from mlserve.models import (
    APIServeInfraConfig,
    AppLayerDeployment,
    Artifact,
    BackendType,
    Deployment,
    Environment,
    FastAPIConfig,
    HeadNodeConfig,
    InvalidConfig,
    Serve,
    ServeType,
)
from mlserve.models.configs import WorkerNodeConfig, parse_environment_variables, parse_worker_node_configs
from mlserve.models.serve_configs import WorkflowServeInfraConfig
from mlserve.operator.spec import EnvironmentContext, ServeContext
from mlserve.operator.spec.api import Reason

from .errors import InvalidInput
from .rows import EnvironmentRow, PairRow

__all__ = ["context_from_rows", "load_context"]


class _InfraFields(TypedDict, total=False):
    """The fields of :class:`ServeContext` that come from the serve's infra config rows."""

    backend_type: BackendType
    api_config: FastAPIConfig | None
    additional_hosts: tuple[str, ...]
    env_vars: dict[str, str]
    schedule: str | None
    head_config: HeadNodeConfig | None
    worker_configs: tuple[WorkerNodeConfig, ...]


async def load_context(
    serve: Serve,
    environment: Environment,
    artifact: Artifact,
    deployment: Deployment | None,
    previous_deployment_id: int | None = None,
) -> ServeContext:
    """What the renderers need to run ``artifact`` of ``serve`` in ``environment``."""
    try:
        env_context = EnvironmentContext(
            name=environment.name, is_protected=bool(environment.is_protected), config=environment.config
        )
        fields: _InfraFields = {}
        if serve.type == ServeType.API:
            row = (
                await APIServeInfraConfig.filter(serve_id=serve.pk, environment_id=environment.pk)
                .order_by("-id")
                .first()
            )
            if row is not None:
                fields["backend_type"] = row.backend_type
                fields["api_config"] = row.config if row.fast_api_config is not None else None
                fields["additional_hosts"] = row.hosts
            if deployment is not None:
                app_layer = await AppLayerDeployment.get_or_none(deployment_id=deployment.pk)
                if app_layer is not None:
                    fields["env_vars"] = app_layer.env
        else:
            wf_row = (
                await WorkflowServeInfraConfig.filter(serve_id=serve.pk, environment_id=environment.pk)
                .order_by("-id")
                .first()
            )
            if wf_row is not None:
                fields["schedule"] = wf_row.schedule or None
                fields["head_config"] = wf_row.head
                fields["worker_configs"] = wf_row.workers
    except InvalidConfig as exc:
        raise InvalidInput(
            Reason.INVALID_INFRA_CONFIG,
            f"the database's config of serve {serve.name!r} in {environment.name!r} is invalid: {exc}",
        ) from None
    return ServeContext(
        serve=serve.name,
        serve_type=serve.type,
        environment=env_context,
        artifact_version=artifact.version,
        image=artifact.image_url or "",
        deployment_id=deployment.pk if deployment is not None else None,
        previous_deployment_id=previous_deployment_id,
        **fields,
    )


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def context_from_rows(pair: PairRow, environment: EnvironmentRow) -> ServeContext | None:
    """:func:`load_context` of the pair's active deployment, from the cluster's snapshot
    (:mod:`.rows`). None when a row does not parse: the caller reads the database, which
    reports the column and the fix."""
    try:
        fields: _InfraFields = {}
        if pair.serve_type == ServeType.API.value:
            if pair.infra is not None:
                backend_type, additional_hosts, fast_api_config = pair.infra
                fields["backend_type"] = BackendType(backend_type)
                raw = _json(fast_api_config)
                fields["api_config"] = FastAPIConfig.parse(raw, "fast_api_config") if raw is not None else None
                row = APIServeInfraConfig(additional_hosts=additional_hosts)
                fields["additional_hosts"] = row.hosts
            if pair.environment_variables is not None:
                fields["env_vars"] = parse_environment_variables(
                    _json(pair.environment_variables), "environment_variables"
                )
        else:
            if pair.infra is not None:
                schedule, worker_node_config, head_node_config = pair.infra
                fields["schedule"] = schedule or None
                head = _json(head_node_config)
                fields["head_config"] = HeadNodeConfig.parse(head, "head_node_config") if head is not None else None
                fields["worker_configs"] = parse_worker_node_configs(_json(worker_node_config), "worker_node_config")
        env_context = EnvironmentContext(
            name=environment.name, is_protected=bool(environment.model.is_protected), config=environment.config
        )
        return ServeContext(
            serve=pair.serve_name,
            serve_type=ServeType(pair.serve_type),
            environment=env_context,
            artifact_version=pair.artifact_version,
            image=pair.image_url or "",
            deployment_id=pair.deployment_id,
            previous_deployment_id=pair.previous_deployment_id,
            **fields,
        )
    except (InvalidConfig, ValueError, TypeError):
        return None
