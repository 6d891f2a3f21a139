"""Creation, validation, relations, deletes and constraints, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from mlserve_testing import factories as f
from mlserve_testing.darwin import count
from tortoise.exceptions import IntegrityError

from mlserve.models import (
    AppLayerDeployment,
    Artifact,
    ArtifactBuilderJob,
    Deployment,
    DeploymentStatus,
    Environment,
    InvalidConfig,
    JobStatus,
    NodeCapacityType,
    ScheduledWorkflowDeployment,
    Serve,
    ServeType,
    User,
    activate,
)
from mlserve.models.settings import DatabaseSettings


async def test_create_and_read_back(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve = await f.serve(owner)
    loaded = await Serve.get(name="iris").prefetch_related("created_by")
    assert loaded.type is ServeType.API
    assert loaded.created_by.username == "alice"
    assert loaded.created_by_id == owner.user_id
    assert loaded.description is None
    assert serve.pk == loaded.pk


async def test_reverse_relations_read_well(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve = await f.serve(owner)
    env = await f.environment()
    first = await f.artifact(owner, serve, "1.0.0")
    await f.artifact(owner, serve, "1.1.0")
    deployment = await activate(serve, env, first, owner)

    assert sorted(a.version for a in await serve.artifacts.all()) == ["1.0.0", "1.1.0"]
    assert [d.pk for d in await serve.deployments.all()] == [deployment.pk]
    assert [d.pk for d in await env.deployments.all()] == [deployment.pk]
    assert [d.pk for d in await first.deployments.all()] == [deployment.pk]
    assert [s.name for s in await owner.serves.all()] == ["iris"]
    active = await deployment.active_for.all()
    assert len(active) == 1 and active[0].environment_id == env.pk
    assert [a.serve_id for a in await env.active_deployments.all()] == [serve.pk]


async def test_timestamps_are_set_and_updated(db: DatabaseSettings) -> None:
    before = datetime.now(UTC)
    owner = await f.user()
    assert owner.created_at >= before.replace(microsecond=0)
    assert owner.created_at.tzinfo is not None
    created, updated = owner.created_at, owner.updated_at
    # Wait until the clock has visibly moved, then write again.
    while datetime.now(UTC) <= updated:  # noqa: ASYNC110 - a clock, not an event, is awaited
        await asyncio.sleep(0)
    owner.token = "rotated"
    await owner.save()
    reloaded = await User.get(pk=owner.pk)
    assert reloaded.created_at == created
    assert reloaded.updated_at > updated


async def test_job_and_deployment_defaults(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve = await f.serve(owner)
    job = await ArtifactBuilderJob.create(serve=serve, version="1", github_repo_url="g", created_by=owner)
    assert (await ArtifactBuilderJob.get(pk=job.pk)).status is JobStatus.PENDING
    assert job.last_picked_at is not None
    artifact = await Artifact.create(serve=serve, version="1", github_repo_url="g", artifact_job=job, created_by=owner)
    assert [a.pk for a in await job.artifacts.all()] == [artifact.pk]
    env = await f.environment()
    deployment = await Deployment.create(serve=serve, artifact=artifact, environment=env, created_by=owner)
    assert (await Deployment.get(pk=deployment.pk)).status is DeploymentStatus.ACTIVE
    assert (await Environment.get(pk=env.pk)).is_protected is False


async def test_duplicate_username_is_refused(db: DatabaseSettings) -> None:
    await f.user("alice")
    with pytest.raises(IntegrityError):
        await f.user("alice")
    assert await count("users") == 1


async def test_duplicate_serve_name_is_refused(db: DatabaseSettings) -> None:
    owner = await f.user()
    await f.serve(owner, "iris")
    with pytest.raises(IntegrityError) as caught:
        await f.serve(owner, "iris")
    assert "name" in str(caught.value) or "Duplicate" in str(caught.value) or "UNIQUE" in str(caught.value)
    assert await count("serves") == 1


async def test_duplicate_serve_version_is_refused(db: DatabaseSettings) -> None:
    owner = await f.user()
    iris, other = await f.serve(owner, "iris"), await f.serve(owner, "other")
    await f.artifact(owner, iris, "1.0.0")
    await f.artifact(owner, other, "1.0.0")  # the same version of another serve is fine
    with pytest.raises(IntegrityError):
        await f.artifact(owner, iris, "1.0.0")
    assert await count("artifacts") == 2


async def test_unknown_serve_type_names_field_and_rule(db: DatabaseSettings) -> None:
    owner = await f.user()
    with pytest.raises(InvalidConfig) as caught:
        await f.serve(owner, type="batch")
    assert caught.value.field in ("type", "serves.type")
    assert "'api', 'workflow'" in str(caught.value)
    assert await count("serves") == 0


async def test_enum_checked_on_assignment_before_save(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve = await f.serve(owner)
    serve.type = "batch"  # type: ignore[assignment]
    with pytest.raises(InvalidConfig) as caught:
        await serve.save()
    assert caught.value.field == "type"
    assert (await Serve.get(pk=serve.pk)).type is ServeType.API


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"namespace": ...}, "env_configs.namespace"),
        ({"cluster_name": 12}, "env_configs.cluster_name"),
        ({"namespace": "Upper_Case"}, "env_configs.namespace"),
    ],
    ids=["missing-namespace", "number-for-string", "bad-namespace"],
)
async def test_invalid_env_configs_are_refused(db: DatabaseSettings, overrides: dict, field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        await f.environment(**overrides)
    assert caught.value.field == field
    assert field in str(caught.value)
    assert await count("environments") == 0


async def test_environment_config_view(db: DatabaseSettings) -> None:
    env = await f.environment(namespace="mlserve-prod", extra_key="kept")
    loaded = await Environment.get(pk=env.pk)
    assert loaded.config.namespace == "mlserve-prod"
    assert loaded.config.security_groups == ("sg-1", "sg-2")
    assert loaded.env_configs["extra_key"] == "kept"


async def test_api_config_validation_and_view(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    with pytest.raises(InvalidConfig) as caught:
        await f.api_config(owner, serve, env, min_replicas=5, max_replicas=2)
    assert caught.value.field == "fast_api_config.max_replicas"
    assert "min_replicas <= max_replicas" in str(caught.value)
    for cores in (0, -1):
        with pytest.raises(InvalidConfig) as caught:
            await f.api_config(owner, serve, env, cores=cores)
        assert caught.value.field == "fast_api_config.cores"
        assert "at least 0.1" in str(caught.value)
    assert await count("api_serve_configs") == 0

    created = await f.api_config(owner, serve, env, node_capacity_type="on-demand")
    loaded = await created.__class__.get(pk=created.pk)
    assert loaded.config.node_capacity_type is NodeCapacityType.ON_DEMAND
    assert loaded.config.max_replicas == 3
    assert [c.pk for c in await serve.api_configs.all()] == [created.pk]


async def test_workflow_config_views(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner, "nightly", ServeType.WORKFLOW), await f.environment()
    created = await f.workflow_config(owner, serve, env, [f.worker(), f.worker(node_capacity_type="spot")])
    loaded = await created.__class__.get(pk=created.pk)
    assert [w.node_capacity_type for w in loaded.workers] == [NodeCapacityType.ON_DEMAND, NodeCapacityType.SPOT]
    assert loaded.head is not None and loaded.head.cores == 1
    loaded.head_node_config = None
    await loaded.save()
    assert (await created.__class__.get(pk=created.pk)).head is None
    with pytest.raises(InvalidConfig) as caught:
        await f.workflow_config(owner, serve, env, [f.worker(min_pods=4, max_pods=1)])
    assert caught.value.field == "worker_node_config.0.max_pods"
    assert await count("workflow_serve_configs") == 1


async def test_app_layer_and_workflow_schedule_are_one_to_one(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    # A bare deployment row: activate() writes the side row itself, this test writes its own.
    deployment = await Deployment.create(
        serve=serve, artifact=await f.artifact(owner, serve), environment=env, created_by=owner
    )
    layer = await AppLayerDeployment.create(
        deployment=deployment, deployment_strategy="rolling", environment_variables={"MODEL": "iris"}
    )
    assert (await AppLayerDeployment.get(pk=layer.pk)).env == {"MODEL": "iris"}
    assert (await deployment.app_layer).pk == layer.pk
    with pytest.raises(IntegrityError):
        await AppLayerDeployment.create(deployment=deployment)
    with pytest.raises(InvalidConfig) as caught:  # a JSON scalar is accepted (Darwin's rule); an object is not
        await AppLayerDeployment.create(deployment=deployment, environment_variables={"PORT": {"n": 8000}})
    assert caught.value.field == "environment_variables.PORT"
    assert await count("app_layer_deployments") == 1
    schedule = await ScheduledWorkflowDeployment.create(
        deployment=deployment, workflow_id="wf-1", job_cluster_id="jc-1", input_params={"a": [1]}
    )
    assert (await deployment.workflow_schedule).pk == schedule.pk
    assert (await ScheduledWorkflowDeployment.get(pk=schedule.pk)).input_params == {"a": [1]}


async def test_deleting_a_serve_cascades(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    await activate(serve, env, await f.artifact(owner, serve), owner)  # with its app_layer_deployments row
    assert await count("app_layer_deployments") == 1
    await f.api_config(owner, serve, env)
    await serve.delete()
    for table in (
        "serves",
        "artifacts",
        "deployments",
        "active_deployments",
        "app_layer_deployments",
        "api_serve_configs",
    ):
        assert await count(table) == 0, table
    assert await count("environments") == 1
    assert await count("users") == 1


async def test_deleting_the_previous_deployment_sets_null(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    old = await activate(serve, env, await f.artifact(owner, serve, "1"), owner)
    new = await activate(serve, env, await f.artifact(owner, serve, "2"), owner)
    await old.delete()
    pointers = await env.active_deployments.all()
    assert len(pointers) == 1
    assert pointers[0].deployment_id == new.pk
    assert pointers[0].previous_deployment_id is None


async def test_deleting_a_user_cascades_to_what_they_created(db: DatabaseSettings) -> None:
    owner = await f.user()
    await f.serve(owner)
    await owner.delete()
    assert await count("serves") == 0
