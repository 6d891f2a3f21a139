"""``artifact_builder_job`` and ``artifacts``: container images built for a serve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields, timezone
from tortoise.models import Model

from . import _validators
from .enums import JobStatus

if TYPE_CHECKING:
    from .deployments import Deployment
    from .serves import Serve
    from .users import User


class ArtifactBuilderJob(Model):
    """A request to build a serve's image from a Git repository (Darwin's table is singular)."""

    id = fields.IntField(primary_key=True)
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="build_jobs", on_delete=fields.CASCADE
    )
    version = fields.CharField(max_length=50)
    github_repo_url = fields.TextField()
    branch = fields.CharField(max_length=255, null=True)
    task_id = fields.TextField(null=True)
    status = fields.CharEnumField(
        JobStatus,
        max_length=50,
        default=JobStatus.PENDING,
        db_default=JobStatus.PENDING.value,
        validators=[_validators.EnumValue(JobStatus, "status")],
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    last_picked_at = fields.DatetimeField(default=timezone.now)
    status_last_updated_at = fields.DatetimeField(null=True)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="build_jobs", on_delete=fields.CASCADE
    )

    artifacts: fields.ReverseRelation[Artifact]

    class Meta:
        table = "artifact_builder_job"
        app = "models"


class Artifact(Model):
    """One version of a serve's image, unique per (serve, version)."""

    id = fields.IntField(primary_key=True)
    serve: fields.ForeignKeyRelation[Serve] = fields.ForeignKeyField(
        "models.Serve", related_name="artifacts", on_delete=fields.CASCADE
    )
    version = fields.CharField(max_length=50)
    github_repo_url = fields.TextField()
    image_url = fields.TextField(null=True)
    branch = fields.CharField(max_length=50, null=True)
    file_path = fields.CharField(max_length=255, null=True)
    artifact_job: fields.ForeignKeyNullableRelation[ArtifactBuilderJob] = fields.ForeignKeyField(
        "models.ArtifactBuilderJob", related_name="artifacts", null=True, on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="artifacts", on_delete=fields.CASCADE
    )

    # the foreign keys' columns, which Tortoise sets next to each relation
    serve_id: int
    artifact_job_id: int | None
    created_by_id: int
    deployments: fields.ReverseRelation[Deployment]

    class Meta:
        table = "artifacts"
        app = "models"
        unique_together = (("serve", "version"),)

    def __str__(self) -> str:
        return self.version
