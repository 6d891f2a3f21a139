import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops
from tortoise.timezone import now

from mlserve.models.enums import BackendType, DeploymentStatus, JobStatus, ServeType


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Environment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("name", fields.CharField(unique=True, max_length=255)),
                (
                    "env_configs",
                    fields.JSONField(encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                ("is_protected", fields.BooleanField(default=False, db_default=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "environments",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A deployment target: a namespace of a cluster, described by ``env_configs``.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="User",
            fields=[
                ("user_id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("username", fields.CharField(unique=True, max_length=50)),
                ("token", fields.CharField(max_length=255)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "users",
                "app": "models",
                "pk_attr": "user_id",
                "table_description": "A Darwin user. Darwin's primary key column is ``user_id``, not ``id``.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Serve",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("name", fields.CharField(unique=True, max_length=50)),
                (
                    "type",
                    fields.CharEnumField(
                        description="API: api\nWORKFLOW: workflow", enum_type=ServeType, max_length=50
                    ),
                ),
                ("description", fields.TextField(null=True, unique=False)),
                ("space", fields.TextField(unique=False)),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by",
                        db_constraint=True,
                        to_field="user_id",
                        related_name="serves",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "serves",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A named model service: an HTTP API or a scheduled workflow.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="APIServeInfraConfig",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="api_configs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="api_configs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "backend_type",
                    fields.CharEnumField(
                        description="FASTAPI: fastapi\nRAY: ray", enum_type=BackendType, max_length=50
                    ),
                ),
                ("additional_hosts", fields.TextField(null=True, unique=False)),
                (
                    "fast_api_config",
                    fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name=False,
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "updated_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="updated_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name=False,
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "api_serve_configs",
                "app": "models",
                "pk_attr": "id",
                "table_description": "How an API serve runs in one environment: backend, sizing, extra host names.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ArtifactBuilderJob",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="build_jobs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("version", fields.CharField(max_length=50)),
                ("github_repo_url", fields.TextField(unique=False)),
                ("branch", fields.CharField(null=True, max_length=255)),
                ("task_id", fields.TextField(null=True, unique=False)),
                (
                    "status",
                    fields.CharEnumField(
                        default=JobStatus.PENDING,
                        description="PENDING: PENDING\nSUCCESSFUL: SUCCESSFUL\nFAILED: FAILED",
                        db_default="PENDING",
                        enum_type=JobStatus,
                        max_length=50,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("last_picked_at", fields.DatetimeField(default=now, auto_now=False, auto_now_add=False)),
                ("status_last_updated_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name="build_jobs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
            ],
            options={
                "table": "artifact_builder_job",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A request to build a serve's image from a Git repository (Darwin's table is singular).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Artifact",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="artifacts",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("version", fields.CharField(max_length=50)),
                ("github_repo_url", fields.TextField(unique=False)),
                ("image_url", fields.TextField(null=True, unique=False)),
                ("branch", fields.CharField(null=True, max_length=50)),
                ("file_path", fields.CharField(null=True, max_length=255)),
                (
                    "artifact_job",
                    fields.ForeignKeyField(
                        "models.ArtifactBuilderJob",
                        source_field="artifact_job_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="artifacts",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name="artifacts",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
            ],
            options={
                "table": "artifacts",
                "app": "models",
                "unique_together": (("serve", "version"),),
                "pk_attr": "id",
                "table_description": "One version of a serve's image, unique per (serve, version).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Deployment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "artifact",
                    fields.ForeignKeyField(
                        "models.Artifact",
                        source_field="artifact_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name="deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                (
                    "status",
                    fields.CharEnumField(
                        default=DeploymentStatus.ACTIVE,
                        description="ACTIVE: ACTIVE\nENDED: ENDED",
                        db_default="ACTIVE",
                        enum_type=DeploymentStatus,
                        max_length=20,
                    ),
                ),
                ("ended_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "deployments",
                "app": "models",
                "indexes": [
                    Index(fields=["serve_id", "environment_id", "status"], name="idx_deployments_serve_env_status")
                ],
                "pk_attr": "id",
                "table_description": "One deploy of an artifact of a serve to an environment.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ActiveDeployment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "deployment",
                    fields.ForeignKeyField(
                        "models.Deployment",
                        source_field="deployment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="active_for",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "previous_deployment",
                    fields.ForeignKeyField(
                        "models.Deployment",
                        source_field="previous_deployment_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="replaced_in",
                        on_delete=OnDelete.SET_NULL,
                    ),
                ),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="active_deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="active_deployments",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "active_deployments",
                "app": "models",
                "unique_together": (("environment", "serve"),),
                "pk_attr": "id",
                "table_description": "The current deployment of a serve in an environment (one row per pair).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="AppLayerDeployment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "deployment",
                    fields.OneToOneField(
                        "models.Deployment",
                        source_field="deployment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="app_layer",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("deployment_strategy", fields.CharField(null=True, max_length=50)),
                (
                    "deployment_params",
                    fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                (
                    "environment_variables",
                    fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
            ],
            options={
                "table": "app_layer_deployments",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Per-deployment settings of an API serve: rollout strategy and container environment.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ScheduledWorkflowDeployment",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "deployment",
                    fields.OneToOneField(
                        "models.Deployment",
                        source_field="deployment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="workflow_schedule",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("workflow_id", fields.CharField(max_length=255)),
                ("job_cluster_id", fields.CharField(max_length=255)),
                (
                    "input_params",
                    fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "scheduled_workflow_deployments",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Per-deployment settings of a workflow serve.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="WorkflowServeInfraConfig",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "serve",
                    fields.ForeignKeyField(
                        "models.Serve",
                        source_field="serve_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="workflow_configs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="workflow_configs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("schedule", fields.CharField(max_length=50)),
                (
                    "worker_node_config",
                    fields.JSONField(encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                (
                    "head_node_config",
                    fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
                ),
                (
                    "created_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="created_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name=False,
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "updated_by",
                    fields.ForeignKeyField(
                        "models.User",
                        source_field="updated_by_id",
                        db_constraint=True,
                        to_field="user_id",
                        related_name=False,
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "workflow_serve_configs",
                "app": "models",
                "pk_attr": "id",
                "table_description": "How a workflow serve runs in one environment: schedule and Ray cluster shape.",
            },
            bases=["Model"],
        ),
    ]
