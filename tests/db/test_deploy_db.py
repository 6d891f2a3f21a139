"""MLServe → database on a real schema: resolve errors, recording deploys, deletion's end.

Runs on SQLite (always) and on MariaDB (``-m mariadb``, the server the suite starts).
"""

from __future__ import annotations

import pytest
from mlserve_testing import darwin

from mlserve.operator.reconcile import deploy, rollback
from mlserve.operator.reconcile.errors import ArtifactPending, InvalidInput

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


async def test_a_version_being_built_is_pending_then_resolves(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS, versions=("v1",))
    job = await darwin.build_job(seed, "v3", repository="https://user:tok3n@git.example.com/ml/repo")
    with pytest.raises(ArtifactPending) as building:
        await _resolve(version="v3")
    assert building.value.reason == "ArtifactBuilding"
    assert f"build job {job}" in building.value.message and "task task-1" in building.value.message
    assert "tok3n" not in building.value.message and "git.example.com/ml/repo" in building.value.message

    await darwin.finish_build(seed, job, "v3")
    resolved = await _resolve(version="v3")
    assert resolved.artifact.image_url == "registry.example.com/built:v3"


async def test_a_failed_build_is_reported_with_the_jobs_details(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS, versions=("v1",))
    failed = await darwin.build_job(seed, "v3", task_id="task-9")
    await darwin.finish_build(seed, failed, "v3", status="FAILED")
    with pytest.raises(InvalidInput) as caught:
        await _resolve(version="v3")
    assert caught.value.reason == "ArtifactBuildFailed"
    assert f"build job {failed}" in caught.value.message and "task task-9" in caught.value.message

    # Built again (Darwin allows a new job after a failure): the newest job decides.
    await darwin.build_job(seed, "v3", task_id="task-10")
    with pytest.raises(ArtifactPending):
        await _resolve(version="v3")


async def test_an_unknown_build_status_is_reported_not_raised(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS, versions=("v1",))
    await darwin.build_job(seed, "v3", status="QUEUED")
    with pytest.raises(InvalidInput) as caught:
        await _resolve(version="v3")
    assert caught.value.reason == "UnknownArtifact"
    assert "'QUEUED'" in caught.value.message


async def _sync(version: str = "v1", *, reflects: int | None, paused: bool = False) -> deploy.DeployOutcome:
    return await deploy.sync_deployment(
        await _resolve(version=version), reflects=reflects, paused=paused, deploy_user="admin"
    )


async def test_first_deploy_then_new_version_replaces_the_old(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)

    first = await _sync(reflects=None)
    assert first.state == "recorded" and first.active is not None

    again = await _sync(reflects=first.active.pk)
    assert again.state == "in_sync" and again.active is not None and again.active.pk == first.active.pk

    second = await _sync("v2", reflects=first.active.pk)
    assert second.state == "recorded" and second.previous_id == first.active.pk
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in rows] == ["ENDED", "ACTIVE"]
    assert rows[0]["ended_at"] is not None
    assert await darwin.active_rows(seed.serve, seed.environment) == [
        {"deployment_id": second.active.pk, "previous_deployment_id": first.active.pk}  # type: ignore[union-attr]
    ]


async def test_a_request_the_database_moved_past_is_superseded_not_recorded(darwin_db: None) -> None:
    """Compare-and-swap: the MLServe reflects deployment 1 and asks for v3; Darwin deployed v2
    first. Nothing is written and the outcome names the deployment that won, whatever the times."""
    seed = await darwin.seed_api_serve("fraud", "prod", NS, versions=("v1", "v2", "v3"))
    first = await _sync(reflects=None)
    assert first.active is not None
    darwin_id = await darwin.deploy(seed, "v2")
    outcome = await _sync("v3", reflects=first.active.pk)
    assert outcome.state == "superseded" and outcome.moved
    assert outcome.active is not None and outcome.active.pk == darwin_id
    assert outcome.active_artifact is not None and outcome.active_artifact.version == "v2"
    assert "superseded by deployment" in outcome.message
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 2
    # Asking for nothing new (still the reflected v1): the MLServe just follows.
    followed = await _sync("v1", reflects=first.active.pk)
    assert followed.state == "followed" and followed.active is not None and followed.active.pk == darwin_id


async def test_an_mlserve_that_reflects_nothing_does_not_replace_a_database_deploy(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    darwin_id = await darwin.deploy(seed, "v2")
    # A fresh MLServe (no annotation) asks for v1: the pair already has a deployment.
    outcome = await _sync("v1", reflects=None)
    assert outcome.state == "superseded" and outcome.active is not None and outcome.active.pk == darwin_id
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 1
    adopted = await _sync("v2", reflects=None)
    assert adopted.state == "in_sync" and adopted.active is not None and adopted.active.pk == darwin_id


async def test_a_paused_mlserve_records_nothing(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    first = await _sync(reflects=None)
    assert first.active is not None
    outcome = await _sync("v2", reflects=first.active.pk, paused=True)
    assert outcome.state == "paused" and outcome.active is not None and outcome.active.pk == first.active.pk
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 1
    assert (await _sync("v2", reflects=first.active.pk)).state == "recorded"


async def test_an_undeploy_in_the_database_is_not_redeployed(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    first = await _sync(reflects=None)
    assert first.active is not None
    assert await deploy.end_deployment("fraud", "prod") == first.active.pk
    for version in ("v1", "v2"):  # as it was, or with a request pending: the undeploy wins
        outcome = await _sync(version, reflects=first.active.pk)
        assert outcome.state == "undeployed"
    assert [r["status"] for r in await darwin.deployments(seed.serve, seed.environment)] == ["ENDED"]


async def test_end_deployment_is_idempotent_and_spares_newer_deploys(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    first = await _sync(reflects=None)
    assert first.active is not None
    second = await _sync("v2", reflects=first.active.pk)
    assert first.active and second.active
    # A pending end for the first deployment must not end the second.
    assert await deploy.end_deployment("fraud", "prod", first.active.pk) is None
    assert await deploy.end_deployment("fraud", "prod") == second.active.pk
    assert await deploy.end_deployment("fraud", "prod") is None
    assert await darwin.active_rows(seed.serve, seed.environment) == []


async def test_rollback_in_database_is_a_new_deployment(darwin_db: None) -> None:
    seed = await darwin.seed_api_serve("fraud", "prod", NS)
    v1 = await _sync(reflects=None)
    assert v1.active is not None
    v2 = await _sync("v2", reflects=v1.active.pk)
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
