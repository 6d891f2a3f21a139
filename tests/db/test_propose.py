"""propose() (compare-and-swap), end_active() and Darwin's side rows, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import random

import pytest
from mlserve_testing import factories as f
from mlserve_testing.darwin import count
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError, OperationalError

from mlserve.models import (
    ActiveDeployment,
    AppLayerDeployment,
    Artifact,
    Deployment,
    DeploymentStatus,
    Environment,
    InvalidConfig,
    ScheduledWorkflowDeployment,
    Serve,
    ServeType,
    User,
    activate,
    end_active,
    propose,
)
from mlserve.models import deployments as deployments_module
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.reconcile import deploy


class DriverOperationalError(Exception):
    """A MySQL driver's error as asyncmy and PyMySQL raise them: ``(code, message)``."""


async def _pair() -> tuple[User, Serve, Environment, list[Artifact]]:
    owner = await f.user()
    serve, env = await f.serve(owner), await f.environment()
    artifacts = [await f.artifact(owner, serve, str(n)) for n in range(1, 4)]
    return owner, serve, env, artifacts


async def _pointer(serve: Serve) -> ActiveDeployment:
    return await ActiveDeployment.get(serve_id=serve.pk)


async def test_propose_records_when_the_pair_has_not_moved(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, _) = await _pair()
    first = await propose(serve, env, a1, owner, reflects=None)
    assert first.recorded and first.active is not None and first.previous_id is None
    assert (await _pointer(serve)).deployment_id == first.active.pk

    second = await propose(serve, env, a2, owner, reflects=first.active.pk)
    assert second.recorded and second.active is not None
    assert second.previous_id == first.active.pk
    assert (await Deployment.get(pk=first.active.pk)).status is DeploymentStatus.ENDED
    pointer = await _pointer(serve)
    assert (pointer.deployment_id, pointer.previous_deployment_id) == (second.active.pk, first.active.pk)


async def test_propose_writes_nothing_when_another_writer_moved_first(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, a3) = await _pair()
    seen = await activate(serve, env, a1, owner)
    winner = await activate(serve, env, a2, owner)  # e.g. Darwin deployed after the MLServe looked

    stale = await propose(serve, env, a3, owner, reflects=seen.pk)
    assert not stale.recorded and stale.previous_id is None
    assert stale.active is not None and stale.active.pk == winner.pk
    never_looked = await propose(serve, env, a3, owner, reflects=None)
    assert not never_looked.recorded and never_looked.active is not None
    assert never_looked.active.pk == winner.pk
    assert await count("deployments") == 2
    assert await count("app_layer_deployments") == 2
    assert (await _pointer(serve)).deployment_id == winner.pk


async def test_propose_after_an_undeploy_returns_no_active_deployment(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, _) = await _pair()
    seen = await activate(serve, env, a1, owner)
    assert await end_active(serve, env, deployment_id=None) == seen.pk

    proposal = await propose(serve, env, a2, owner, reflects=seen.pk)
    assert (proposal.recorded, proposal.active, proposal.previous_id) == (False, None, None)
    assert await count("deployments") == 1
    assert await count("active_deployments") == 0


async def test_propose_is_idempotent(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, _, _) = await _pair()
    first = await propose(serve, env, a1, owner, reflects=None)
    assert first.active is not None
    pointer = await _pointer(serve)

    # The caller recorded it and reflects it now: asking again writes nothing.
    again = await propose(serve, env, a1, owner, reflects=first.active.pk)
    assert not again.recorded and again.active is not None and again.active.pk == first.active.pk
    # A retry of the first call (the caller crashed before it could reflect the new id):
    # the pair moved, to the deployment that runs what it asks for.
    retry = await propose(serve, env, a1, owner, reflects=None)
    assert not retry.recorded and retry.active is not None
    assert (retry.active.pk, retry.active.artifact_id) == (first.active.pk, a1.pk)
    assert await count("deployments") == 1
    assert (await _pointer(serve)).updated_at == pointer.updated_at


async def test_propose_refuses_an_artifact_of_another_serve(db: DatabaseSettings) -> None:
    owner, serve, env, _ = await _pair()
    other = await f.serve(owner, "other")
    with pytest.raises(InvalidConfig) as caught:
        await propose(serve, env, await f.artifact(owner, other), owner, reflects=None)
    assert caught.value.field == "artifact"
    assert await count("deployments") == 0


async def test_end_active_ends_only_the_given_deployment(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, _) = await _pair()
    old = await activate(serve, env, a1, owner)
    new = await activate(serve, env, a2, owner)

    assert await end_active(serve, env, deployment_id=old.pk) is None  # a newer deploy is never ended
    assert (await Deployment.get(pk=new.pk)).status is DeploymentStatus.ACTIVE
    assert (await _pointer(serve)).deployment_id == new.pk

    assert await end_active(serve, env, deployment_id=new.pk) == new.pk
    ended = await Deployment.get(pk=new.pk)
    assert ended.status is DeploymentStatus.ENDED and ended.ended_at is not None
    assert await count("active_deployments") == 0
    assert await end_active(serve, env, deployment_id=new.pk) is None  # idempotent
    assert await end_active(serve, env, deployment_id=None) is None


async def test_end_deployment_by_names_is_end_active(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, _, _) = await _pair()
    deployment = await activate(serve, env, a1, owner)
    assert await deploy.end_deployment(serve.name, env.name, deployment.pk + 1) is None
    assert await deploy.end_deployment("no-such-serve", env.name) is None
    assert await deploy.end_deployment(serve.name, env.name) == deployment.pk
    assert await Deployment.filter(status=DeploymentStatus.ACTIVE).count() == 0


async def test_side_rows_carry_the_environment_variables(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, a3) = await _pair()
    first = await activate(serve, env, a1, owner, environment_variables={"MODEL": "iris"})
    await AppLayerDeployment.filter(deployment_id=first.pk).update(deployment_strategy="rolling")

    carried = await propose(serve, env, a2, owner, reflects=first.pk)
    assert carried.active is not None
    layer = await AppLayerDeployment.get(deployment_id=carried.active.pk)
    assert (layer.env, layer.deployment_strategy) == ({"MODEL": "iris"}, "rolling")

    given = await activate(serve, env, a3, owner, environment_variables={"MODEL": "iris-v3"})
    assert (await AppLayerDeployment.get(deployment_id=given.pk)).env == {"MODEL": "iris-v3"}

    # After an undeploy the history still carries them (Darwin's next deploy reads the row).
    await end_active(serve, env, deployment_id=given.pk)
    redeploy = await propose(serve, env, a1, owner, reflects=None)
    assert redeploy.recorded and redeploy.active is not None
    assert (await AppLayerDeployment.get(deployment_id=redeploy.active.pk)).env == {"MODEL": "iris-v3"}
    assert await count("app_layer_deployments") == await count("deployments") == 4
    assert await count("scheduled_workflow_deployments") == 0


async def test_a_first_deploy_gets_a_side_row_without_variables(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, _, _) = await _pair()
    deployment = await activate(serve, env, a1, owner)
    layer = await AppLayerDeployment.get(deployment_id=deployment.pk)
    assert (layer.environment_variables, layer.deployment_strategy, layer.deployment_params) == (None, None, None)


async def test_invalid_environment_variables_write_nothing(db: DatabaseSettings) -> None:
    owner, serve, env, (a1, a2, _) = await _pair()
    first = await activate(serve, env, a1, owner)
    with pytest.raises(InvalidConfig) as caught:
        await propose(serve, env, a2, owner, reflects=first.pk, environment_variables={"PORT": [8000]})
    assert caught.value.field == "environment_variables.PORT"
    assert await count("deployments") == 1
    assert (await _pointer(serve)).deployment_id == first.pk
    assert (await Deployment.get(pk=first.pk)).status is DeploymentStatus.ACTIVE


async def test_a_workflow_serve_gets_its_scheduled_workflow_row(db: DatabaseSettings) -> None:
    owner = await f.user()
    serve, env = await f.serve(owner, "nightly", ServeType.WORKFLOW), await f.environment()
    first = await activate(serve, env, await f.artifact(owner, serve, "1"), owner)
    row = await ScheduledWorkflowDeployment.get(deployment_id=first.pk)
    assert (row.workflow_id, row.job_cluster_id, row.input_params) == ("nightly", "", None)
    await ScheduledWorkflowDeployment.filter(pk=row.pk).update(input_params={"day": "today"})

    second = await propose(serve, env, await f.artifact(owner, serve, "2"), owner, reflects=first.pk)
    assert second.active is not None
    carried = await ScheduledWorkflowDeployment.get(deployment_id=second.active.pk)
    assert (carried.workflow_id, carried.input_params) == ("nightly", {"day": "today"})
    assert await count("app_layer_deployments") == 0

    with pytest.raises(InvalidConfig) as caught:
        await activate(serve, env, await f.artifact(owner, serve, "3"), owner, environment_variables={"A": "1"})
    assert caught.value.field == "environment_variables"
    assert await count("deployments") == 2


async def test_lock_conflicts_are_retried_and_other_errors_are_not(
    db: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployments_module, "_BACKOFF", 0.001)
    failures = [OperationalError(DriverOperationalError(1213, "Deadlock found")), None]

    async def deadlocks_once(conn: BaseDBAsyncClient) -> str:
        failure = failures.pop(0)
        if failure is not None:
            raise failure
        return "done"

    assert await deployments_module._in_locked_transaction(None, deadlocks_once) == "done"
    assert not failures

    calls = 0

    async def always_times_out(conn: BaseDBAsyncClient) -> None:
        nonlocal calls
        calls += 1
        raise OperationalError(DriverOperationalError(1205, "Lock wait timeout exceeded"))

    with pytest.raises(OperationalError):
        await deployments_module._in_locked_transaction(None, always_times_out)
    assert calls == deployments_module._ATTEMPTS

    async def duplicate(conn: BaseDBAsyncClient) -> None:
        nonlocal calls
        calls += 1
        raise IntegrityError(DriverOperationalError(1062, "Duplicate entry"))

    calls = 0
    with pytest.raises(IntegrityError) as caught:
        await deployments_module._in_locked_transaction(None, duplicate)
    assert calls == 1
    assert not deploy.is_database_error(caught.value)  # a data error, never "database unavailable"


async def _check_pair(serve: Serve, env: Environment, written: set[int]) -> None:
    """The invariants every writer keeps, whatever ran concurrently."""
    active = await Deployment.filter(serve_id=serve.pk, environment_id=env.pk, status=DeploymentStatus.ACTIVE)
    pointers = await ActiveDeployment.filter(serve_id=serve.pk, environment_id=env.pk)
    assert len(active) <= 1 and len(pointers) <= 1, (active, pointers)
    assert [d.pk for d in active] == [p.deployment_id for p in pointers], "the pointer and the ACTIVE row disagree"
    rows = await Deployment.filter(serve_id=serve.pk, environment_id=env.pk)
    assert {d.pk for d in rows} == written, "a deployment was lost, or one nobody reported was written"
    assert all(d.ended_at is not None for d in rows if d.status is DeploymentStatus.ENDED)
    assert await count("app_layer_deployments") == len(rows)


async def test_concurrent_writers_keep_one_active_deployment_and_its_pointer(db: DatabaseSettings) -> None:
    """Deploys, compare-and-swap deploys and undeploys of one pair at once, from separate
    connections (each transaction takes its own connection of the pool on MariaDB)."""
    owner, serve, env, _ = await _pair()
    artifacts = [await f.artifact(owner, serve, f"c{n}") for n in range(6)]
    rng = random.Random(10)
    written: set[int] = set()

    async def do_activate(artifact: Artifact) -> None:
        written.add((await activate(serve, env, artifact, owner)).pk)

    async def do_propose(artifact: Artifact, reflects: int | None) -> None:
        proposal = await propose(serve, env, artifact, owner, reflects=reflects)
        if proposal.recorded:
            assert proposal.active is not None
            written.add(proposal.active.pk)

    async def do_end(deployment_id: int | None) -> None:
        await deploy.end_deployment(serve.name, env.name, deployment_id)

    # Small rounds, checked after each: an undeploy that loses a concurrent deploy's pointer
    # is not hidden by a later deploy of the same round (a deploy ends every ACTIVE row).
    for _ in range(40):
        pointer = await ActiveDeployment.get_or_none(serve_id=serve.pk, environment_id=env.pk)
        seen = pointer.deployment_id if pointer is not None else None
        operations = [
            do_activate(rng.choice(artifacts)),
            do_propose(rng.choice(artifacts), seen),
            do_end(seen),
            do_end(seen),
        ]
        rng.shuffle(operations)
        await asyncio.gather(*operations)
        await _check_pair(serve, env, written)

    await do_activate(artifacts[0])
    await _check_pair(serve, env, written)
    assert await Deployment.filter(status=DeploymentStatus.ACTIVE).count() == 1
    assert await count("active_deployments") == 1
