"""What the database says about one serve in one environment, as the renderers need it.

Built from rows by ``mlserve.operator.reconcile.context.load_context`` (the only place that
reads them); constructed directly in tests. Holds the database's values only: the MLServe's
overrides are merged later, by :mod:`.effective`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlserve.models.configs import (
    EnvConfig,
    FastAPIConfig,
    HeadNodeConfig,
    WorkerNodeConfig,
    parse_environment_variables,
)
from mlserve.models.enums import BackendType, ServeType

__all__ = ["EnvironmentContext", "ServeContext"]


class EnvironmentContext(BaseModel):
    """A row of ``environments``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    is_protected: bool = False
    config: EnvConfig
    """``env_configs``: domain suffix, cluster, namespace, security groups, subnets."""


class ServeContext(BaseModel):
    """A serve, its environment, the artifact to run and the infra config, from the database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    serve: str
    """``serves.name``."""
    serve_type: ServeType
    """``serves.type``."""
    environment: EnvironmentContext

    artifact_version: str
    """``artifacts.version`` of the artifact to run."""
    image: str
    """``artifacts.image_url``: the container image."""

    deployment_id: int | None = None
    """The active ``deployments.id``; None when rendering a version not deployed yet."""
    previous_deployment_id: int | None = None

    # API serves (api_serve_configs)
    backend_type: BackendType = BackendType.FASTAPI
    api_config: FastAPIConfig | None = None
    """``fast_api_config``; None when the row or the column is missing."""
    additional_hosts: tuple[str, ...] = ()
    """``additional_hosts``, split on commas."""
    env_vars: dict[str, str] = Field(default_factory=dict)
    """``app_layer_deployments.environment_variables`` of the deployment, names as stored and
    JSON scalars as text (a context read from a file takes the same values as the column)."""

    # workflow serves (workflow_serve_configs)
    schedule: str | None = None
    """Cron schedule; None or empty: run once per deployment."""
    head_config: HeadNodeConfig | None = None
    worker_configs: tuple[WorkerNodeConfig, ...] = ()

    @field_validator("env_vars", mode="before")
    @classmethod
    def _env_vars(cls, value: Any) -> dict[str, str]:
        return parse_environment_variables(value)

    @property
    def namespace(self) -> str:
        return self.environment.config.namespace
