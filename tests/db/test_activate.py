"""activate(): one transaction, one active deployment per (serve, environment)."""

from __future__ import annotations

import asyncio

import pytest
from mlserve_testing import factories as f
from mlserve_testing.darwin import count
from tortoise import Tortoise
from tortoise.exceptions import IntegrityError

from mlserve.models import (
    ActiveDeployment,
    ActiveDeploymentConflict,
    Deployment,
    DeploymentStatus,
    InvalidConfig,
    activate,
    current_deployment,
)
from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings


async def test_first_activation_creates_deployment_and_pointer(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    artifact = await f.artifact(owner, serve)
    deployment = await activate(serve, env, artifact, owner)
    assert deployment.status is DeploymentStatus.ACTIVE
    assert deployment.ended_at is None
    pointer = await ActiveDeployment.get(serve_id=serve.pk, environment_id=env.pk)
    assert pointer.deployment_id == deployment.pk
    assert pointer.previous_deployment_id is None
    assert (await current_deployment(serve, env)).pk == deployment.pk  # type: ignore[union-attr]


async def test_new_artifact_ends_the_old_deployment(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    old = await activate(serve, env, await f.artifact(owner, serve, "1"), owner)
    new = await activate(serve, env, await f.artifact(owner, serve, "2"), owner)
    old = await Deployment.get(pk=old.pk)
    assert old.status is DeploymentStatus.ENDED and old.ended_at is not None
    assert (await Deployment.get(pk=new.pk)).status is DeploymentStatus.ACTIVE
    pointer = await ActiveDeployment.get(serve_id=serve.pk, environment_id=env.pk)
    assert (pointer.deployment_id, pointer.previous_deployment_id) == (new.pk, old.pk)
    assert await count("active_deployments") == 1


async def test_same_artifact_again_writes_nothing(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    artifact = await f.artifact(owner, serve)
    first = await activate(serve, env, artifact, owner)
    pointer = await ActiveDeployment.get(serve_id=serve.pk)
    again = await activate(serve, env, artifact, owner)
    assert again.pk == first.pk
    assert await count("deployments") == 1
    assert (await ActiveDeployment.get(serve_id=serve.pk)).updated_at == pointer.updated_at


async def test_environments_are_independent(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve = await f.serve(owner)
    dev, prod = await f.environment("dev"), await f.environment("prod", namespace="mlserve-prod")
    artifact = await f.artifact(owner, serve)
    await activate(serve, dev, artifact, owner)
    await activate(serve, prod, artifact, owner)
    assert await Deployment.filter(status=DeploymentStatus.ACTIVE).count() == 2
    assert await count("active_deployments") == 2


async def test_artifact_of_another_serve_is_refused(db: DatabaseSettings) -> None:
    owner = await f.user()
    iris, other = await f.serve(owner, "iris"), await f.serve(owner, "other")
    env = await f.environment()
    with pytest.raises(InvalidConfig) as caught:
        await activate(iris, env, await f.artifact(owner, other), owner)
    assert caught.value.field == "artifact"
    assert await count("deployments") == 0


async def test_a_second_active_row_for_the_pair_is_refused_by_the_index(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    deployment = await activate(serve, env, await f.artifact(owner, serve), owner)
    with pytest.raises(IntegrityError):
        await ActiveDeployment.create(deployment=deployment, environment=env, serve=serve)
    assert await count("active_deployments") == 1


async def test_two_active_rows_in_a_darwin_database_are_reported(empty_db: DatabaseSettings) -> None:
    """Darwin's schema has no unique index: the code refuses to guess which row wins."""
    await init_db(empty_db)  # a database of its own: this test changes the schema
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    first = await activate(serve, env, await f.artifact(owner, serve, "1"), owner)
    connection = Tortoise.get_connection("default")
    if connection.capabilities.dialect == "mysql":
        _, rows = await connection.execute_query(
            "SELECT DISTINCT index_name AS name FROM information_schema.statistics "
            "WHERE table_schema = DATABASE() AND table_name = 'active_deployments' AND non_unique = 0 "
            "AND index_name <> 'PRIMARY'"
        )
        index = rows[0]["name"]
        # The FK on environment_id needs an index of its own once the unique one is gone.
        await connection.execute_script(
            f"ALTER TABLE active_deployments ADD INDEX env_only (environment_id), DROP INDEX `{index}`"
        )
    else:
        # SQLite keeps the constraint in the table: rebuild the table without it, as Darwin's.
        await connection.execute_script(
            "CREATE TABLE ad_copy AS SELECT * FROM active_deployments;"
            "DROP TABLE active_deployments;"
            "ALTER TABLE ad_copy RENAME TO active_deployments"
        )
    second = await Deployment.create(
        serve=serve, artifact=await f.artifact(owner, serve, "2"), environment=env, created_by=owner
    )
    await ActiveDeployment.create(deployment=second, environment=env, serve=serve)

    with pytest.raises(ActiveDeploymentConflict) as caught:
        await activate(serve, env, await f.artifact(owner, serve, "3"), owner)
    assert "at most one per (serve, environment)" in str(caught.value)
    assert sorted(caught.value.deployment_ids) == sorted([first.pk, second.pk])
    assert await count("deployments") == 2  # nothing half-written
    with pytest.raises(ActiveDeploymentConflict):
        await current_deployment(serve, env)
    await close_db()


async def test_concurrent_activations_leave_one_active(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    artifacts = [await f.artifact(owner, serve, str(n)) for n in range(4)]
    await asyncio.gather(*(activate(serve, env, a, owner) for a in artifacts))
    assert await Deployment.filter(status=DeploymentStatus.ACTIVE).count() == 1
    assert await count("active_deployments") == 1
    assert await count("deployments") == 4
    active = await Deployment.get(status=DeploymentStatus.ACTIVE)
    pointer = await ActiveDeployment.get(serve_id=serve.pk)
    assert pointer.deployment_id == active.pk
