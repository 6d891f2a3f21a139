"""``serves`` and ``environments``: what runs, and where."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from . import _validators
from .configs import EnvConfig, lenient_json_loads
from .enums import ServeType

if TYPE_CHECKING:
    from .artifacts import Artifact, ArtifactBuilderJob
    from .deployments import ActiveDeployment, Deployment
    from .serve_configs import APIServeInfraConfig, WorkflowServeInfraConfig
    from .users import User


class Serve(Model):
    """A named model service: an HTTP API or a scheduled workflow."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, unique=True)
    type = fields.CharEnumField(ServeType, max_length=50, validators=[_validators.EnumValue(ServeType, "type")])
    description = fields.TextField(null=True)
    space = fields.TextField()
    # Darwin names this column ``created_by`` (not ``created_by_id``).
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="serves", source_field="created_by", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    artifacts: fields.ReverseRelation[Artifact]
    build_jobs: fields.ReverseRelation[ArtifactBuilderJob]
    deployments: fields.ReverseRelation[Deployment]
    active_deployments: fields.ReverseRelation[ActiveDeployment]
    api_configs: fields.ReverseRelation[APIServeInfraConfig]
    workflow_configs: fields.ReverseRelation[WorkflowServeInfraConfig]

    class Meta:
        table = "serves"
        app = "models"

    def __str__(self) -> str:
        return self.name


class Environment(Model):
    """A deployment target: a namespace of a cluster, described by ``env_configs``."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=255, unique=True)
    env_configs: fields.JSONField[Any] = fields.JSONField(
        decoder=lenient_json_loads, validators=[_validators.env_configs()]
    )
    is_protected = fields.BooleanField(default=False, db_default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    deployments: fields.ReverseRelation[Deployment]
    active_deployments: fields.ReverseRelation[ActiveDeployment]
    api_configs: fields.ReverseRelation[APIServeInfraConfig]
    workflow_configs: fields.ReverseRelation[WorkflowServeInfraConfig]

    class Meta:
        table = "environments"
        app = "models"

    def __str__(self) -> str:
        return self.name

    @property
    def config(self) -> EnvConfig:
        """``env_configs`` validated; raises InvalidConfig naming the bad key."""
        return EnvConfig.parse(self.env_configs, "env_configs")
