"""Database rows → :class:`~mlserve.operator.spec.ServeContext`: the only reader of the rows
the renderers need (environment, artifact, infra config, per-deployment settings).

A row with an invalid JSON column raises :class:`~.errors.InvalidInput` naming the column
and the fix, before anything is rendered or applied.
"""

from __future__ import annotations

from mlserve.models import (
    APIServeInfraConfig,
    AppLayerDeployment,
    Artifact,
    Deployment,
    Environment,
    InvalidConfig,
    Serve,
    ServeType,
    WorkflowServeInfraConfig,
)
from mlserve.operator.spec import EnvironmentContext, ServeContext
from mlserve.operator.spec.api import Reason

from .errors import InvalidInput

__all__ = ["load_context"]


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
        fields: dict[str, object] = {}
        if serve.type == ServeType.API:
            row = (
                await APIServeInfraConfig.filter(serve_id=serve.pk, environment_id=environment.pk)
                .order_by("-id")
                .first()
            )
            if row is not None:
                fields.update(
                    backend_type=row.backend_type,
                    api_config=row.config if row.fast_api_config is not None else None,
                    additional_hosts=row.hosts,
                )
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
                fields.update(
                    schedule=wf_row.schedule or None,
                    head_config=wf_row.head,
                    worker_configs=wf_row.workers,
                )
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
        **fields,  # type: ignore[arg-type]
    )
