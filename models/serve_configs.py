"""``api_serve_configs`` and ``workflow_serve_configs``: per-environment infrastructure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from . import _validators
from .configs import FastAPIConfig, HeadNodeConfig, WorkerNodeConfig, lenient_json_loads, parse_worker_node_configs
from .enums import BackendType

if TYPE_CHECKING:
    from .serves import Environment, Serve
    from .users import User


class APIServeInfraConfig(Model):
    """How an API serve runs in one environment: backend, sizing, extra host names."""

    id = fields.IntField(primary_key=True)
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="api_configs", on_delete=fields.CASCADE
    )
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="api_configs", on_delete=fields.CASCADE
    )
    backend_type = fields.CharEnumField(
        BackendType, max_length=50, validators=[_validators.EnumValue(BackendType, "backend_type")]
    )
    additional_hosts = fields.TextField(null=True)
    fast_api_config: fields.JSONField[Any] = fields.JSONField(
        decoder=lenient_json_loads, null=True, validators=[_validators.fast_api_config()]
    )
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, on_delete=fields.CASCADE
    )
    updated_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "api_serve_configs"
        app = "models"

    @property
    def config(self) -> FastAPIConfig:
        """``fast_api_config`` validated; raises InvalidConfig when it is missing or wrong."""
        return FastAPIConfig.parse(self.fast_api_config, "fast_api_config")

    @property
    def hosts(self) -> tuple[str, ...]:
        """``additional_hosts`` split on commas, blanks dropped."""
        if not self.additional_hosts:
            return ()
        return tuple(h.strip() for h in self.additional_hosts.split(",") if h.strip())


class WorkflowServeInfraConfig(Model):
    """How a workflow serve runs in one environment: schedule and Ray cluster shape."""

    id = fields.IntField(primary_key=True)
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="workflow_configs", on_delete=fields.CASCADE
    )
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="workflow_configs", on_delete=fields.CASCADE
    )
    schedule = fields.CharField(max_length=50)
    worker_node_config: fields.JSONField[Any] = fields.JSONField(
        decoder=lenient_json_loads, validators=[_validators.worker_node_config()]
    )
    # Darwin declares this field but its tables lack the column; ours adds it, nullable.
    head_node_config: fields.JSONField[Any] = fields.JSONField(
        decoder=lenient_json_loads, null=True, validators=[_validators.head_node_config()]
    )
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, on_delete=fields.CASCADE
    )
    updated_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name=False, on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "workflow_serve_configs"
        app = "models"

    @property
    def workers(self) -> tuple[WorkerNodeConfig, ...]:
        """``worker_node_config`` validated, one entry per Ray worker group."""
        return parse_worker_node_configs(self.worker_node_config, "worker_node_config")

    @property
    def head(self) -> HeadNodeConfig | None:
        """``head_node_config`` validated, or None when not set."""
        if self.head_node_config is None:
            return None
        return HeadNodeConfig.parse(self.head_node_config, "head_node_config")
