"""MLServe → database on a real schema: resolve errors, recording deploys, deletion's end.

Runs on SQLite (always) and on MariaDB (``-m mariadb``, the server the suite starts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mlserve_testing import darwin

from mlserve.operator.reconcile import deploy, rollback
from mlserve.operator.reconcile.errors import InvalidInput

NS = "team-a"


async def _resolve(serve: str = "fraud", env: str = "prod", version: str = "v1", **kw: str):
    args = {
        "serve_name": serve,
        "serve_type": "api",
        "environment_name": env,
        "artifact_version": version,
        "namespace": NS,
        "cluster_name": "local",
    }
    args.update(kw)
    return await deploy.resolve(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"serve": "nope"}, "UnknownServe"),
        ({"env": "nope"}, "UnknownEnvironment"),
        ({"version": "v9"}, "UnknownArtifact"),
        ({"serve_type": "workflow"}, "ServeTypeMismatch"),
        ({"namespace": "elsewhere"}, "WrongNamespace"),
        ({"cluster_name": "other"}, "ForeignCluster"),
    ],
)
async def test_resolve_rejects_bad_input_with_a_reason(darwin_db: None, kwargs: dict[str, str], reason: str) -> None:
    await darwin.seed_api_serve("fraud", "prod", NS)
    with pytest.raises(InvalidInput) as caught:
        await _resolve(**kwargs)
    assert caught.value.reason == reason
    assert caught.value.message  # says what to fix
    assert await darwin.query("SELECT id FROM deployments") == []


async def test_invalid_env_configs_are_reported_not_raised(darwin_db: None) -> None:
    await darwin.seed_api_serve("fraud", "prod", NS, env_config={"cluster_name": "local"})
    with pytest.raises(InvalidInput) as caught:
        await _resolve()
    assert caught.value.reason == "InvalidEnvConfig"
    assert "namespace" in caught.value.message


async def test_first_deploy_then_new_version_replaces_the_old(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    now = datetime.now(UTC) + timedelta(seconds=1)

    first = await deploy.sync_deployment(await _resolve(), spec_changed_at=now, spec_changed=True, deploy_user="admin")
    assert first.state == "recorded" and first.active is not None

    again = await deploy.sync_deployment(await _resolve(), spec_changed_at=now, spec_changed=True, deploy_user="admin")
    assert again.state == "in_sync" and again.active is not None and again.active.pk == first.active.pk

    second = await deploy.sync_deployment(
        await _resolve(version="v2"), spec_changed_at=now + timedelta(seconds=5), spec_changed=True, deploy_user="admin"
    )
    assert second.state == "recorded" and second.previous_id == first.active.pk
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in rows] == ["ENDED", "ACTIVE"]
    assert rows[0]["ended_at"] is not None
    assert await darwin.active_rows(seed.serve, seed.environment) == [
        {"deployment_id": second.active.pk, "previous_deployment_id": first.active.pk}  # type: ignore[union-attr]
    ]


async def test_a_database_deploy_after_the_mlserve_changed_is_not_reverted(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    await darwin.insert(
        "deployments",
        serve_id=seed.serve,
        artifact_id=seed.artifacts["v2"],
        environment_id=seed.environment,
        created_by_id=seed.user,
        status="ACTIVE",
        created_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    rows = await darwin.deployments(seed.serve, seed.environment)
    await darwin.insert(
        "active_deployments",
        deployment_id=rows[0]["id"],
        environment_id=seed.environment,
        serve_id=seed.serve,
        created_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        updated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    # The MLServe still asks for v1, written an hour before the database's deploy of v2.
    outcome = await deploy.sync_deployment(
        await _resolve(version="v1"), spec_changed_at=long_ago, spec_changed=True, deploy_user="admin"
    )
    assert outcome.state == "db_newer"
    assert outcome.active_artifact is not None and outcome.active_artifact.version == "v2"
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 1


async def test_an_undeploy_in_the_database_is_not_redeployed(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    first = await deploy.sync_deployment(await _resolve(), spec_changed_at=t0, spec_changed=True, deploy_user="admin")
    assert first.active is not None
    assert await deploy.end_deployment("fraud", "prod") == first.active.pk
    outcome = await deploy.sync_deployment(
        await _resolve(), spec_changed_at=t0 - timedelta(minutes=5), spec_changed=True, deploy_user="admin"
    )
    assert outcome.state == "undeployed"
    assert [r["status"] for r in await darwin.deployments(seed.serve, seed.environment)] == ["ENDED"]


async def test_end_deployment_is_idempotent_and_spares_newer_deploys(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    first = await deploy.sync_deployment(await _resolve(), spec_changed_at=t0, spec_changed=True, deploy_user="admin")
    second = await deploy.sync_deployment(
        await _resolve(version="v2"), spec_changed_at=t0 + timedelta(seconds=2), spec_changed=True, deploy_user="admin"
    )
    assert first.active and second.active
    # A pending end for the first deployment must not end the second.
    assert await deploy.end_deployment("fraud", "prod", first.active.pk) is None
    assert await deploy.end_deployment("fraud", "prod") == second.active.pk
    assert await deploy.end_deployment("fraud", "prod") is None
    assert await darwin.active_rows(seed.serve, seed.environment) == []


async def test_rollback_in_database_is_a_new_deployment(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    v1 = await deploy.sync_deployment(await _resolve(), spec_changed_at=t0, spec_changed=True, deploy_user="admin")
    v2 = await deploy.sync_deployment(
        await _resolve(version="v2"), spec_changed_at=t0 + timedelta(seconds=2), spec_changed=True, deploy_user="admin"
    )
    new, rolled_from, artifact = await rollback.rollback_in_database("fraud", "prod", "admin")
    assert artifact.version == "v1" and rolled_from.pk == v2.active.pk  # type: ignore[union-attr]
    assert new.pk not in (v1.active.pk, v2.active.pk)  # type: ignore[union-attr]
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in rows] == ["ENDED", "ENDED", "ACTIVE"]
    assert await darwin.active_rows(seed.serve, seed.environment) == [
        {"deployment_id": new.pk, "previous_deployment_id": v2.active.pk}  # type: ignore[union-attr]
    ]


async def test_rollback_without_a_previous_deployment_says_so(darwin_db: None) -> None:
    await darwin.seed_api_serve("fraud", "prod", NS)
    with pytest.raises(InvalidInput) as caught:
        await rollback.rollback_in_database("fraud", "prod", "admin")
    assert caught.value.reason == "NothingToRollBack"
