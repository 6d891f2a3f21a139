"""Database → cluster sync: the watermark and the rows on SQLite, the pure rules without I/O.

Rows are written the way Darwin writes them: plain INSERT and UPDATE statements, not the
operator's models (:class:`DarwinSQL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import Deployment as K8sDeployment
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile import deploy, sync, sync_reads
from mlserve.operator.reconcile.cache import Informer, MLServeCache
from mlserve.operator.reconcile.controller import CachedMLServes
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.finalize import finalize
from mlserve.operator.reconcile.identity import claim_of, pair_of
from mlserve.operator.reconcile.kube import MLServe, RequestCounter
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.reconcile.pending import PendingEnd, PendingUndeploys
from mlserve.operator.reconcile.rows import RowCache
from mlserve.operator.reconcile.sync import SyncState
from mlserve.operator.reconcile.sync_plan import ActiveRow, new_mlserve, reflected_deployment_ids
from mlserve.operator.reconcile.sync_reads import read_watermark
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec.api import ANNOTATION_DEPLOYMENT_ID, ANNOTATION_ROLLBACK, ANNOTATION_ROLLBACK_HANDLED
from mlserve.operator.spec.namespaces import watches_namespace

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


class DarwinSQL:
    """Writes Darwin ML Serve's rows with plain SQL, as the Darwin service does."""

    def __init__(self, connection: BaseDBAsyncClient) -> None:
        self.connection = connection
        self.mysql = connection.capabilities.dialect == "mysql"
        self.clock = T0

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.mysql else text

    def tick(self, seconds: float = 1.0) -> str:
        self.clock += timedelta(seconds=seconds)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S.%f")

    async def insert(self, table: str, **values: Any) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        _, _rows = await self.connection.execute_query(
            self._sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})"), list(values.values())
        )
        return await self._last_id(table)

    async def _last_id(self, table: str) -> int:
        key = "user_id" if table == "users" else "id"
        rows = await self.connection.execute_query_dict(f"SELECT MAX({key}) AS id FROM {table}")
        return int(rows[0]["id"])

    async def execute(self, text: str, *values: Any) -> None:
        await self.connection.execute_query(self._sql(text), list(values))

    async def user(self, name: str = "admin") -> int:
        now = self.tick(0)
        return await self.insert("users", username=name, token="t", created_at=now, updated_at=now)

    async def environment(self, name: str, cluster: str, namespace: str, protected: bool = False) -> int:
        now = self.tick()
        config = {
            "domain_suffix": ".example.com",
            "cluster_name": cluster,
            "security_group": "sg-1",
            "subnets": "",
            "ft_redis_url": "",
            "workflow_url": "",
            "namespace": namespace,
        }
        return await self.insert(
            "environments",
            name=name,
            env_configs=json.dumps(config),
            is_protected=protected,
            created_at=now,
            updated_at=now,
        )

    async def serve(self, name: str, user: int, type_: str = "api") -> int:
        now = self.tick()
        return await self.insert(
            "serves", name=name, type=type_, space="ml", created_by=user, created_at=now, updated_at=now
        )

    async def artifact(self, serve: int, version: str, user: int) -> int:
        return await self.insert(
            "artifacts",
            serve_id=serve,
            version=version,
            github_repo_url="https://git.example.com/x",
            image_url=f"registry.example.com/x:{version}",
            created_at=self.tick(),
            created_by_id=user,
        )

    async def deploy(self, serve: int, environment: int, artifact: int, user: int) -> int:
        """Darwin's deploy: a new ACTIVE row, the old one ENDED, the pointer moved."""
        now = self.tick()
        rows = await self.connection.execute_query_dict(
            self._sql("SELECT id, deployment_id FROM active_deployments WHERE serve_id = ? AND environment_id = ?"),
            [serve, environment],
        )
        new = await self.insert(
            "deployments",
            serve_id=serve,
            artifact_id=artifact,
            environment_id=environment,
            created_by_id=user,
            created_at=now,
            status="ACTIVE",
        )
        if rows:
            old = int(rows[0]["deployment_id"])
            await self.execute("UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", now, old)
            await self.execute(
                "UPDATE active_deployments SET deployment_id = ?, previous_deployment_id = ?, updated_at = ? "
                "WHERE id = ?",
                new,
                old,
                now,
                int(rows[0]["id"]),
            )
        else:
            await self.insert(
                "active_deployments",
                deployment_id=new,
                environment_id=environment,
                serve_id=serve,
                created_at=now,
                updated_at=now,
            )
        return new

    async def undeploy(self, serve: int, environment: int) -> None:
        """Darwin's undeploy: the deployment ENDED, the pointer deleted."""
        now = self.tick()
        rows = await self.connection.execute_query_dict(
            self._sql("SELECT id, deployment_id FROM active_deployments WHERE serve_id = ? AND environment_id = ?"),
            [serve, environment],
        )
        for row in rows:
            await self.execute(
                "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", now, int(row["deployment_id"])
            )
            await self.execute("DELETE FROM active_deployments WHERE id = ?", int(row["id"]))


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[DarwinSQL]:
    await Tortoise.init(db_url=f"sqlite://{tmp_path / 'darwin.sqlite3'}", modules={"models": ["mlserve.models"]})
    await Tortoise.generate_schemas()
    try:
        yield DarwinSQL(Tortoise.get_connection("default"))
    finally:
        await Tortoise.close_connections()


# --- the watermark -----------------------------------------------------------------------------


async def test_watermark_of_an_empty_database(sqlite_db: DarwinSQL) -> None:
    mark = await read_watermark()
    assert mark.active_count == 0
    assert mark.active_max_id is None
    assert await read_watermark() == mark


async def test_watermark_moves_on_deploy_redeploy_undeploy_and_environment_change(sqlite_db: DarwinSQL) -> None:
    db = sqlite_db
    user = await db.user()
    env = await db.environment("dev", "local", "ml-dev")
    serve = await db.serve("iris", user)
    v1 = await db.artifact(serve, "v1", user)
    v2 = await db.artifact(serve, "v2", user)
    seen = [await read_watermark()]

    await db.deploy(serve, env, v1, user)
    seen.append(await read_watermark())
    await db.deploy(serve, env, v2, user)  # same pointer row, moved
    seen.append(await read_watermark())
    await db.undeploy(serve, env)  # pointer deleted, deployment ended
    seen.append(await read_watermark())
    await db.execute("UPDATE environments SET updated_at = ? WHERE id = ?", db.tick(), env)
    seen.append(await read_watermark())

    assert len(set(seen)) == len(seen), seen
    assert await read_watermark() == seen[-1], "an idle database keeps its watermark"


async def test_watermark_moves_when_a_build_ends_or_starts_not_when_it_is_polled(sqlite_db: DarwinSQL) -> None:
    """An MLServe waiting for a version wakes when its build job leaves PENDING; Darwin's poller
    bumping last_picked_at every few seconds is not a change."""
    db = sqlite_db
    user = await db.user()
    serve = await db.serve("iris", user)

    async def job(version: str) -> int:
        return await db.insert(
            "artifact_builder_job",
            serve_id=serve,
            version=version,
            github_repo_url="https://git.example.com/ml/iris",
            status="PENDING",
            created_at=db.tick(),
            last_picked_at=db.tick(),
            created_by_id=user,
        )

    seen = [await read_watermark()]
    first = await job("v1")
    seen.append(await read_watermark())  # a build starts
    await job("v2")
    seen.append(await read_watermark())  # another one
    await db.execute("UPDATE artifact_builder_job SET last_picked_at = ? WHERE id = ?", db.tick(), first)
    assert await read_watermark() == seen[-1], "the poller's lease is not a change"
    await db.execute("UPDATE artifact_builder_job SET status = 'FAILED' WHERE id = ?", first)
    seen.append(await read_watermark())  # v1's build failed
    await job("v1")
    seen.append(await read_watermark())  # v1 built again
    await db.execute("UPDATE artifact_builder_job SET status = 'SUCCESSFUL' WHERE status = 'PENDING'")
    seen.append(await read_watermark())  # both succeed at once
    await db.artifact(serve, "v1", user)
    seen.append(await read_watermark())  # the poller's artifacts row with its image

    # The sync compares each tick with the one before (the first and the sixth are equal: no
    # job pending, no image, as at the start).
    assert all(before != after for before, after in itertools.pairwise(seen)), seen


async def test_watermark_moves_on_writes_stamped_with_an_older_clock(sqlite_db: DarwinSQL) -> None:
    """No clock decides: a pointer moved back, or a deployment ended, by a writer whose clock is
    behind (every timestamp older than the ones already there) still moves the watermark."""
    db = sqlite_db
    user = await db.user()
    env = await db.environment("dev", "local", "ml-dev")
    serve = await db.serve("iris", user)
    v1 = await db.artifact(serve, "v1", user)
    v2 = await db.artifact(serve, "v2", user)
    first = await db.deploy(serve, env, v1, user)
    second = await db.deploy(serve, env, v2, user)
    seen = [await read_watermark()]

    past = "2000-01-01 00:00:00"
    await db.execute("UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", past, second)
    await db.execute("UPDATE deployments SET status = 'ACTIVE', ended_at = NULL WHERE id = ?", first)
    await db.execute(
        "UPDATE active_deployments SET deployment_id = ?, updated_at = ? WHERE deployment_id = ?", first, past, second
    )
    seen.append(await read_watermark())  # a rollback by pointer, stamped in the past
    await db.execute("UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", past, first)
    seen.append(await read_watermark())  # ended, pointer left in place, stamped in the past

    assert len(set(seen)) == len(seen), seen


async def test_an_idle_tick_is_one_query_and_no_api_call(sqlite_db: DarwinSQL, monkeypatch: pytest.MonkeyPatch) -> None:
    db = sqlite_db
    user = await db.user()
    env = await db.environment("dev", "local", "ml-dev")
    await db.serve("iris", user)
    state = SyncState()
    passes: list[str] = []

    async def fake_full_pass(*args: Any, **kwargs: Any) -> None:
        passes.append("full")

    monkeypatch.setattr(sync, "_full_pass", fake_full_pass)
    connection = Tortoise.get_connection("default")
    statements: list[str] = []
    original = type(connection).execute_query_dict

    async def counting(self: Any, query: str, values: Any = None) -> Any:
        statements.append(query)
        return await original(self, query, values)

    monkeypatch.setattr(type(connection), "execute_query_dict", counting)
    clock = iter(range(0, 10_000, 10)).__next__

    first = await sync.sync_once(None, "local", state, clock=clock)  # type: ignore[arg-type]
    assert first.full_pass
    statements.clear()
    for _ in range(5):
        result = await sync.sync_once(None, "local", state, clock=clock)  # type: ignore[arg-type]
        assert not result.full_pass
    assert statements == [sync_reads._WATERMARK_SQL] * 5
    assert passes == ["full"]

    await db.execute("UPDATE environments SET updated_at = ? WHERE id = ?", db.tick(), env)
    assert (await sync.sync_once(None, "local", state, clock=clock)).full_pass  # type: ignore[arg-type]


async def test_a_full_pass_is_due_after_the_resync_interval(
    sqlite_db: DarwinSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_full_pass(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(sync, "_full_pass", fake_full_pass)
    state = SyncState()
    now = [0.0]
    assert (await sync.sync_once(None, "local", state, clock=lambda: now[0], full_resync_interval=60)).full_pass  # type: ignore[arg-type]
    now[0] = 59
    assert not (await sync.sync_once(None, "local", state, clock=lambda: now[0], full_resync_interval=60)).full_pass  # type: ignore[arg-type]
    now[0] = 60
    assert (await sync.sync_once(None, "local", state, clock=lambda: now[0], full_resync_interval=60)).full_pass  # type: ignore[arg-type]


# --- which rows -------------------------------------------------------------------------------


async def test_active_rows_of_the_bound_environments_only(sqlite_db: DarwinSQL) -> None:
    db = sqlite_db
    user = await db.user()
    dev = await db.environment("dev", "local", "ml-dev")
    stage = await db.environment("stage", "local", "ml-stage")
    prod = await db.environment("prod", "elsewhere", "ml-prod")
    broken = await db.insert(
        "environments",
        name="broken",
        env_configs=json.dumps({"cluster_name": "local"}),
        is_protected=False,
        created_at=db.tick(),
        updated_at=db.tick(),
    )
    iris = await db.serve("iris", user)
    v1 = await db.artifact(iris, "v1", user)
    v2 = await db.artifact(iris, "v2", user)
    for env in (dev, stage, prod, broken):
        await db.deploy(iris, env, v1, user)
    latest = await db.deploy(iris, stage, v2, user)

    bound = await sync_reads.bound_environments("local")
    assert sorted(e.name for e in bound.values()) == ["dev", "stage"]
    rows, duplicates = await sync_reads.active_rows(bound)
    assert not duplicates
    by_env = {row.environment: row for row in rows}
    assert sorted(by_env) == ["dev", "stage"]
    assert by_env["stage"].deployment_id == latest
    assert by_env["stage"].artifact_version == "v2"
    assert by_env["stage"].namespace == "ml-stage"
    assert by_env["dev"].serve_type == "api"


async def test_an_ended_deployment_whose_pointer_stayed_counts_as_undeployed(sqlite_db: DarwinSQL) -> None:
    db = sqlite_db
    user = await db.user()
    dev = await db.environment("dev", "local", "ml-dev")
    iris = await db.serve("iris", user)
    deployment = await db.deploy(iris, dev, await db.artifact(iris, "v1", user), user)
    await db.execute("UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", db.tick(), deployment)
    rows, _ = await sync_reads.active_rows(await sync_reads.bound_environments("local"))
    assert rows == []


async def test_a_deployment_replaced_while_the_pass_ran_is_not_an_undeploy(sqlite_db: DarwinSQL) -> None:
    """A pass that read no row for a pair, then listed its MLServe reflecting the pair's first
    deployment, which a second deploy ended before the pass checked it: replaced, not undeployed,
    so the MLServe is not deleted (the next pass follows it to the second deployment)."""
    db = sqlite_db
    user = await db.user()
    dev = await db.environment("dev", "local", "ml-dev")
    iris = await db.serve("iris", user)
    first = await db.deploy(iris, dev, await db.artifact(iris, "v1", user), user)
    second = await db.deploy(iris, dev, await db.artifact(iris, "v2", user), user)
    assert await sync_reads.ended_deployments([first]) == set()
    await db.undeploy(iris, dev)
    assert await sync_reads.ended_deployments([first, second]) == {first, second}
    assert await sync_reads.ended_deployments([first + second + 100]) == {first + second + 100}  # gone


async def test_two_active_pointers_for_one_pair_are_left_alone(sqlite_db: DarwinSQL) -> None:
    db = sqlite_db
    user = await db.user()
    dev = await db.environment("dev", "local", "ml-dev")
    iris = await db.serve("iris", user)
    first = await db.deploy(iris, dev, await db.artifact(iris, "v1", user), user)
    other = await db.insert(
        "deployments",
        serve_id=iris,
        artifact_id=first,
        environment_id=dev,
        created_by_id=user,
        created_at=db.tick(),
        status="ACTIVE",
    )
    # Darwin's schema has no unique key on the pair (ours adds one): rebuild the table without it.
    await db.execute("CREATE TABLE darwin_active AS SELECT * FROM active_deployments")
    await db.execute("DROP TABLE active_deployments")
    await db.execute("ALTER TABLE darwin_active RENAME TO active_deployments")
    await db.insert(
        "active_deployments",
        id=99,
        deployment_id=other,
        environment_id=dev,
        serve_id=iris,
        created_at=db.tick(),
        updated_at=db.tick(),
    )
    rows, duplicates = await sync_reads.active_rows(await sync_reads.bound_environments("local"))
    assert rows == []
    assert duplicates == {("iris", "dev")}


# --- the pure rules --------------------------------------------------------------------------------


def test_an_mlserve_reflects_its_annotation_only() -> None:
    assert reflected_deployment_ids({}) == set()
    body = {"metadata": {"annotations": {ANNOTATION_DEPLOYMENT_ID: "7"}}, "status": {"deploymentId": 9}}
    assert reflected_deployment_ids(body) == {7}, "status.deploymentId is a report, not an input"
    assert reflected_deployment_ids({"metadata": {"annotations": {ANNOTATION_DEPLOYMENT_ID: "x"}}}) == set()


@pytest.mark.parametrize(
    ("body", "pair"),
    [
        ({"metadata": {"name": "iris"}, "spec": {"environment": "dev"}}, ("iris", "dev")),
        ({"metadata": {"name": "x"}, "spec": {"serve": "iris", "environment": "dev"}}, ("iris", "dev")),
        (
            {
                "metadata": {
                    "name": "x",
                    "labels": {"mlserve.darwin.io/serve": "iris", "mlserve.darwin.io/environment": "dev"},
                },
                "spec": {},
            },
            ("iris", "dev"),
        ),
        ({"metadata": {"name": "x"}, "spec": {}}, None),
    ],
)
def test_an_mlserve_is_found_by_its_pair_not_its_name(body: dict[str, Any], pair: tuple[str, str] | None) -> None:
    assert pair_of(body, by_labels=True) == pair


def test_a_new_mlserve_is_named_by_the_rule_and_carries_the_marker() -> None:
    row = ActiveRow("iris", "api", "dev", "ml-dev", 12, "v3")
    body = new_mlserve(row)
    assert body["metadata"]["name"] == "iris-dev"
    assert body["metadata"]["namespace"] == "ml-dev"
    assert body["metadata"]["annotations"] == {ANNOTATION_DEPLOYMENT_ID: "12"}
    assert body["metadata"]["labels"]["mlserve.darwin.io/serve"] == "iris"
    # held from birth: it reflects deployment 12, so the first reconcile has no metadata to patch
    assert body["metadata"]["finalizers"] == ["mlserve.darwin.io/finalizer"]
    assert body["spec"] == {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v3"}


# --- against the real API server (the local control plane) ----------------------------------------
#
# The sync runs in-process (sync_once), the MLServe's reconcile too (mlserve.reconcile), so each
# step is observed between ticks; the operator as a process is exercised by the demo's test.

SYNC_MANAGER = "mlserve-operator-sync"


@pytest.fixture
async def kube(cluster: ClusterHandle, mlserve_crd: None) -> AsyncIterator[tuple[AsyncClient, RequestCounter]]:
    counter = RequestCounter()
    client = cluster.async_client(field_manager="mlserve-operator")
    client._client._client.event_hooks["request"].append(counter)
    try:
        yield client, counter
    finally:
        await client.close()


async def _mlserves(client: AsyncClient, namespace: str) -> dict[str, dict[str, Any]]:
    items = [item.to_dict() async for item in client.list(MLServe, namespace=namespace)]
    return {i["metadata"]["name"]: i for i in items}


def _runtime(client: AsyncClient) -> Runtime:
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None)
    return Runtime(settings=settings, client=client, events=RecordingEvents())


async def _reconcile_all(client: AsyncClient, namespace: str) -> dict[str, Any]:
    """Run the MLServes' own reconcile once each (what the operator's workers do)."""
    reports = {}
    for name, body in (await _mlserves(client, namespace)).items():
        reports[name] = await reconcile(body, _runtime(client))
    return reports


async def _seed(db: DarwinSQL, environments: dict[str, tuple[str, str]]) -> dict[str, int]:
    """A user, an API serve 'iris' with v1 and v2, and the environments (name -> (cluster, namespace))."""
    ids = {"user": await db.user()}
    ids["iris"] = await db.serve("iris", ids["user"])
    ids["v1"] = await db.artifact(ids["iris"], "v1", ids["user"])
    ids["v2"] = await db.artifact(ids["iris"], "v2", ids["user"])
    for name, (cluster_name, namespace) in environments.items():
        ids[name] = await db.environment(name, cluster_name, namespace)
        await db.insert(
            "api_serve_configs",
            serve_id=ids["iris"],
            environment_id=ids[name],
            backend_type="fastapi",
            fast_api_config=json.dumps({"min_replicas": 1, "max_replicas": 1, "cores": 1, "memory": 1}),
            created_by_id=ids["user"],
            updated_by_id=ids["user"],
            created_at=db.tick(),
            updated_at=db.tick(),
        )
    return ids


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    if request.param == "mariadb":
        return request.getfixturevalue("mariadb_database")  # type: ignore[no-any-return]
    return DatabaseSettings.sqlite(tmp_path / "darwin.sqlite3")


@pytest.fixture
async def file_db(db_settings: DatabaseSettings) -> AsyncIterator[DarwinSQL]:
    """A Darwin schema on a SQLite file or on the suite's MariaDB (the operator's own schema)."""
    await init_db(db_settings)
    try:
        writer = DarwinSQL(Tortoise.get_connection("default"))
        writer.clock = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        yield writer
    finally:
        await close_db()


async def test_a_deployment_inserted_by_darwin_appears_with_its_children(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    deployment = await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])

    result = await sync.sync_once(client, "local", SyncState())
    assert result.created == [f"{namespace}/iris-dev"]
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(deployment)
    assert body["metadata"]["labels"]["mlserve.darwin.io/serve"] == "iris"
    assert body["spec"]["artifactVersion"] == "v1"

    report = (await _reconcile_all(client, namespace))["iris-dev"]
    assert report.error is None, report.error
    assert report.recorded_deployment is None, "the MLServe mirrors the database: nothing to record"
    deployments = {d.metadata.name async for d in client.list(K8sDeployment, namespace=namespace)}
    services = {s.metadata.name async for s in client.list(Service, namespace=namespace)}
    assert deployments == {"iris-dev"} and services == {"iris-dev"}
    status = (await _mlserves(client, namespace))["iris-dev"]["status"]
    assert status["deploymentId"] == deployment


async def test_a_new_version_in_the_database_updates_the_mlserve_without_ping_pong(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await sync.sync_once(client, "local", state)
    await _reconcile_all(client, namespace)

    file_db.clock = datetime.now(UTC) + timedelta(seconds=2)  # Darwin deploys after the MLServe was written
    second = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])
    result = await sync.sync_once(client, "local", state)
    assert result.updated == [f"{namespace}/iris-dev"]
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["spec"]["artifactVersion"] == "v2"
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(second)

    report = (await _reconcile_all(client, namespace))["iris-dev"]
    assert report.error is None, report.error
    assert report.recorded_deployment is None
    rows = await file_db.connection.execute_query_dict("SELECT COUNT(*) AS n FROM deployments")
    assert rows[0]["n"] == 2, "the sync's spec change was recorded as a deployment (ping-pong)"
    again = await sync.sync_once(client, "local", state, force_full=True)
    assert again.writes == 0


async def test_an_mlserve_changed_after_the_database_is_left_to_its_reconcile(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await sync.sync_once(client, "local", state)
    await _reconcile_all(client, namespace)

    # a user edits the MLServe (kubectl apply), after the database's last deploy
    await client.patch(
        MLServe,
        "iris-dev",
        {"spec": {"artifactVersion": "v2"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-client-side-apply",
    )
    result = await sync.sync_once(client, "local", state, force_full=True)
    assert result.writes == 0
    report = (await _reconcile_all(client, namespace))["iris-dev"]
    assert report.recorded_deployment is not None, "the MLServe's change was not recorded"
    result = await sync.sync_once(client, "local", state)
    assert result.writes == 0 and not result.left_to_mlserve
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["spec"]["artifactVersion"] == "v2"


async def test_an_ended_deployment_deletes_its_mlserve_and_a_new_one_is_kept(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await sync.sync_once(client, "local", state)
    # an MLServe a user just applied for a pair the database does not know yet: never deleted
    fresh = MLServe.from_dict(
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "metadata": {"name": "iris-stage", "namespace": namespace},
            "spec": {"serve": "iris", "environment": "stage", "type": "api", "artifactVersion": "v1"},
        }
    )
    await client.create(fresh, field_manager="kubectl-client-side-apply")

    file_db.clock = datetime.now(UTC) + timedelta(seconds=2)
    await file_db.undeploy(ids["iris"], ids["dev"])
    result = await sync.sync_once(client, "local", state)
    assert result.deleted == [f"{namespace}/iris-dev"]
    wait_for_async = [name async for name in _names(client, namespace)]
    assert "iris-stage" in wait_for_async


async def _names(client: AsyncClient, namespace: str) -> AsyncIterator[str]:
    async for item in client.list(MLServe, namespace=namespace):
        body = item.to_dict()
        if not body["metadata"].get("deletionTimestamp"):
            yield body["metadata"]["name"]


async def test_two_environments_on_one_cluster_and_another_clusters_left_alone(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, second_namespace: str
) -> None:
    client, _ = kube
    envs = {
        "dev": ("local", namespace),
        "stage": ("local", namespace),  # two environments sharing one namespace
        "prod": ("local", second_namespace),
        "far": ("elsewhere", second_namespace),  # bound to another cluster
    }
    ids = await _seed(file_db, envs)
    for env in envs:
        await file_db.deploy(ids["iris"], ids[env], ids["v1"], ids["user"])
    # someone applied an MLServe for the other cluster's environment here: not the sync's business
    foreign = MLServe.from_dict(
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "metadata": {
                "name": "iris-far",
                "namespace": second_namespace,
                "annotations": {ANNOTATION_DEPLOYMENT_ID: "999999"},
            },
            "spec": {"serve": "iris", "environment": "far", "type": "api", "artifactVersion": "v2"},
        }
    )
    await client.create(foreign, field_manager="kubectl-client-side-apply")

    result = await sync.sync_once(client, "local", SyncState())
    assert sorted(result.created) == sorted(
        [f"{namespace}/iris-dev", f"{namespace}/iris-stage", f"{second_namespace}/iris-prod"]
    )
    assert result.deleted == [] and result.updated == []
    assert sorted(await _mlserves(client, namespace)) == ["iris-dev", "iris-stage"]
    far = (await _mlserves(client, second_namespace))["iris-far"]
    assert far["spec"]["artifactVersion"] == "v2", "another cluster's MLServe was changed"


async def test_environments_outside_the_watched_namespaces_are_left_alone(
    file_db: DarwinSQL,
    kube: tuple[AsyncClient, RequestCounter],
    namespace: str,
    second_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _ = kube
    envs = {"dev": ("local", namespace), "prod": ("local", second_namespace)}
    ids = await _seed(file_db, envs)
    for env in envs:
        await file_db.deploy(ids["iris"], ids[env], ids["v1"], ids["user"])
    state = SyncState()
    with caplog.at_level(logging.INFO, logger=sync_reads.__name__):
        result = await sync.sync_once(client, "local", state, namespaces=(namespace,))
        assert result.created == [f"{namespace}/iris-dev"]
        assert result.failed == []
        await sync.sync_once(client, "local", state, namespaces=(namespace,), force_full=True)
    assert sorted([name async for name in _names(client, second_namespace)]) == [], "created where nobody reconciles"
    skipped = [
        r.getMessage() for r in caplog.records if "not among the namespaces this operator watches" in r.getMessage()
    ]
    assert len(skipped) == 1, "logged once per environment, not on every pass"
    assert "environment prod" in skipped[0] and second_namespace in skipped[0]

    # patterns as kopf reads MLSERVE_NAMESPACES: an exclusion serves every other namespace
    result = await sync.sync_once(client, "local", SyncState(), namespaces=(f"!{namespace}",))
    assert result.created == [f"{second_namespace}/iris-prod"]


@pytest.mark.parametrize(
    ("namespaces", "namespace", "watched"),
    [
        ((), "anything", True),
        (("team-a", "team-b"), "team-b", True),
        (("team-a", "team-b"), "team-c", False),
        (("team-*",), "team-c", True),
        (("team-*",), "teams", False),
        (("!kube-*",), "kube-system", False),
        (("!kube-*",), "default", True),
        (("team-?",), "team-cd", False),
    ],
)
def test_the_watched_namespaces_match_as_kopf_matches_them(
    namespaces: tuple[str, ...], namespace: str, watched: bool
) -> None:
    assert watches_namespace(namespaces, namespace) is watched


async def test_an_idle_tick_costs_one_query_and_no_api_request(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, counter = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await sync.sync_once(client, "local", state)
    counter.reset()
    for _ in range(5):
        assert not (await sync.sync_once(client, "local", state)).full_pass
    assert counter.total == 0


@pytest.mark.mariadb
async def test_idle_ticks_are_one_select_each_as_mariadb_counts_them(
    mariadb_database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await init_db(mariadb_database)
    try:
        db = DarwinSQL(Tortoise.get_connection("default"))
        ids = await _seed(db, {"dev": ("local", "ml-dev")})
        await db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])

        async def no_cluster_pass(*args: Any, **kwargs: Any) -> None:
            return None

        monkeypatch.setattr(sync, "_full_pass", no_cluster_pass)
        state = SyncState()
        await sync.sync_once(None, "local", state)  # type: ignore[arg-type]

        async def selects() -> int:
            rows = await db.connection.execute_query_dict("SHOW GLOBAL STATUS LIKE 'Com_select'")
            return int(rows[0]["Value"])

        before = await selects()
        for _ in range(10):
            assert not (await sync.sync_once(None, "local", state)).full_pass  # type: ignore[arg-type]
        assert await selects() - before == 10, "an idle tick must cost exactly one SELECT"

        await db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])
        assert (await sync.sync_once(None, "local", state)).full_pass  # type: ignore[arg-type]
    finally:
        await close_db()


async def test_an_mlserve_being_deleted_is_not_recreated_while_its_finalizer_runs(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    # a user's MLServe under another name than the sync's, held by a finalizer as the operator's is
    held = MLServe.from_dict(
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "metadata": {"name": "iris", "namespace": namespace, "finalizers": ["mlserve.darwin.io/finalizer"]},
            "spec": {"environment": "dev", "type": "api", "artifactVersion": "v1"},
        }
    )
    await client.create(held, field_manager="kubectl-client-side-apply")
    await client.delete(MLServe, "iris", namespace=namespace)
    try:
        result = await sync.sync_once(client, "local", SyncState())
        assert result.created == [], "re-created an MLServe whose deletion is in progress"
    finally:
        await client.patch(
            MLServe, "iris", {"metadata": {"finalizers": None}}, namespace=namespace, patch_type=PatchType.MERGE
        )


async def test_an_undeploy_deletion_had_to_skip_is_written_and_its_mlserve_not_recreated(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    deployment = await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    # the MLServe was deleted while the database was down: its finalizer left the end pending
    undeploys = PendingUndeploys()
    undeploys.add("iris", "dev", deployment, f"{namespace}/iris-dev")
    original = sync.end_deployment

    async def database_down(*args: Any, **kwargs: Any) -> int | None:
        raise ConnectionError("database down")

    monkeypatch.setattr(sync, "end_deployment", database_down)
    state = SyncState()
    result = await sync.sync_once(client, "local", state, pending=undeploys)
    assert result.created == [], "re-created the MLServe a user deleted"
    assert result.failed == ["undeploy iris/dev"]
    assert undeploys.is_pending("iris", "dev")

    monkeypatch.setattr(sync, "end_deployment", original)  # the database is back
    result = await sync.sync_once(client, "local", state, pending=undeploys)
    assert result.pending_written == [("iris", "dev")]
    assert result.created == []
    assert not undeploys.is_pending("iris", "dev")
    rows = await file_db.connection.execute_query_dict("SELECT status FROM deployments")
    assert [r["status"] for r in rows] == ["ENDED"]
    assert (await file_db.connection.execute_query_dict("SELECT COUNT(*) AS n FROM active_deployments"))[0]["n"] == 0
    await sync.sync_once(client, "local", state, pending=undeploys)  # the write moved the watermark: one more pass
    assert not (await sync.sync_once(client, "local", state, pending=undeploys)).full_pass, (
        "nothing pending: idle again"
    )


async def test_the_loop_outlives_a_database_outage_and_stops_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def flaky(*args: Any, **kwargs: Any) -> sync.SyncResult:
        calls.append("tick")
        if len(calls) <= 2:
            raise ConnectionError("database down")
        return sync.SyncResult()

    monkeypatch.setattr(sync, "sync_once", flaky)
    settings = OperatorSettings(cluster_name="local", sync_interval=0.01, render=RenderSettings(), database=None)
    stop = asyncio.Event()
    results: list[sync.SyncResult] = []
    task = asyncio.create_task(sync.run_sync_loop(settings, None, stop, on_result=results.append))  # type: ignore[arg-type]
    await wait_for_async(lambda: len(results) >= 2, 10, "two good ticks after two failed ones")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert calls[:3] == ["tick", "tick", "tick"]


async def wait_for_async(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_the_loop_does_nothing_while_another_replica_acts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    acting = False

    async def tick(*args: Any, **kwargs: Any) -> sync.SyncResult:
        calls.append(acting)
        return sync.SyncResult(full_pass=True)

    monkeypatch.setattr(sync, "sync_once", tick)
    settings = OperatorSettings(cluster_name="local", sync_interval=0.01, render=RenderSettings(), database=None)
    stop = asyncio.Event()
    checks: list[bool] = []

    def active() -> bool:
        checks.append(acting)
        return acting

    task = asyncio.create_task(sync.run_sync_loop(settings, None, stop, active=active))  # type: ignore[arg-type]
    try:
        await wait_for_async(lambda: len(checks) >= 3, 10, "the loop to ask three times")
        assert calls == [], "ticked while another replica was the active one"
        acting = True
        await wait_for_async(lambda: len(calls) >= 2, 10, "ticks once this replica acts")
        assert all(calls)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


class MemoryStore:
    """A pending store that only remembers what was last saved (the ConfigMap's stand-in)."""

    def __init__(self) -> None:
        self.saved: list[PendingEnd] = []
        self.fail = False

    async def load(self) -> list[PendingEnd]:
        return list(self.saved)

    async def save(self, entries: list[PendingEnd]) -> None:
        if self.fail:
            raise ConnectionError("API server down")
        self.saved = list(entries)


async def test_pending_undeploys_are_written_through_and_read_back_after_a_restart() -> None:
    store = MemoryStore()
    undeploys = PendingUndeploys(store)
    undeploys.add("iris", "dev", 7, "ns/iris-dev")
    assert await undeploys.flush()
    assert [(e.serve, e.environment, e.deployment_id) for e in store.saved] == [("iris", "dev", 7)]
    undeploys = PendingUndeploys(store)  # a restart: the memory is gone ...
    assert not undeploys.is_pending("iris", "dev")
    assert await undeploys.restore() == 1  # ... and read back before the first tick
    assert undeploys.is_pending("iris", "dev")
    assert undeploys.entries()[0] == store.saved[0], "the entry survives its JSON round trip"

    store.fail = True  # a failed write is retried by the next flush
    ended: list[tuple[str, str, int | None]] = []

    async def end(serve: str, environment: str, deployment_id: int | None) -> int | None:
        ended.append((serve, environment, deployment_id))
        return deployment_id

    assert [e.serve for e in await undeploys.retry(end)] == ["iris"]
    assert ended == [("iris", "dev", 7)]
    assert store.saved, "the write failed: the store still lists it"
    store.fail = False
    assert await undeploys.flush()
    assert store.saved == []


def test_a_pending_undeploy_survives_its_json_round_trip() -> None:
    entry = PendingEnd("iris", "dev", 7, "ns/iris-dev", datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC))
    assert PendingEnd.from_json(json.loads(json.dumps(entry.to_json()))) == entry


# --- the protocol (docs/sync.md): no clock decides, the database wins when it moved first ----------


async def _deployment_count(db: DarwinSQL) -> int:
    rows = await db.connection.execute_query_dict("SELECT COUNT(*) AS n FROM deployments")
    return int(rows[0]["n"])


async def _apply_by_hand(client: AsyncClient, namespace: str) -> None:
    """A user's ``kubectl apply`` of a new MLServe: that field manager owns its spec."""
    body = {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": "iris-dev", "namespace": namespace},
        "spec": {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v1"},
    }
    await client.create(MLServe.from_dict(body), field_manager="kubectl-client-side-apply")


async def _label_only_apply(client: AsyncClient, namespace: str, name: str) -> datetime:
    """What ``kubectl apply`` of a manifest whose labels alone changed sends: the spec as it
    was, the labels new. Returns the time the API server recorded for that manager, whose
    entry owns the spec (it created the MLServe)."""
    body = (await _mlserves(client, namespace))[name]
    patched = await client.patch(
        MLServe,
        name,
        {"metadata": {"labels": {"team": "fraud"}}, "spec": {"artifactVersion": body["spec"]["artifactVersion"]}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-client-side-apply",
    )
    entries = patched.to_dict()["metadata"]["managedFields"]
    times = [e["time"] for e in entries if e["manager"] == "kubectl-client-side-apply"]
    return datetime.strptime(times[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def _settle(client: AsyncClient, namespace: str, state: SyncState) -> dict[str, Any]:
    """Sync and reconcile a few rounds, as the operator's loop and workers would."""
    reports: dict[str, Any] = {}
    for _ in range(3):
        await sync.sync_once(client, "local", state, force_full=True)
        reports = await _reconcile_all(client, namespace)
    return reports


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


async def test_a_deploy_in_the_same_second_as_a_label_only_apply_converges_to_the_database(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """Was stuck for good (``DatabaseNewer``): the apply's managedFields time tied with (or,
    with a clock a second behind, followed) Darwin's deploy, so each side waited on the other."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await _apply_by_hand(client, namespace)
    state = SyncState()
    reports = await _settle(client, namespace, state)
    assert reports["iris-dev"].error is None and await _deployment_count(file_db) == 1

    applied_at = await _label_only_apply(client, namespace, "iris-dev")
    file_db.clock = applied_at - timedelta(seconds=2)  # Darwin's clock a second behind the API server's
    second = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])

    reports = await _settle(client, namespace, state)
    assert reports["iris-dev"].error is None, reports["iris-dev"].error
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["spec"]["artifactVersion"] == "v2"
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(second)
    assert body["status"]["deploymentId"] == second
    assert _condition(body, "DatabaseSynced")["status"] == "True"
    assert await _deployment_count(file_db) == 2, "nothing but Darwin's two deploys is recorded"


@pytest.mark.parametrize(
    "edit",
    [{"replicas": {"min": 2, "max": 2}}, {"paused": True}, {"env": {"LOG_LEVEL": "debug"}}],
    ids=["replicas", "paused", "env"],
)
async def test_editing_other_fields_after_a_darwin_deploy_records_nothing(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, edit: dict[str, Any]
) -> None:
    """Was a silent revert (v2 -> v1 ACTIVE again): a spec edit made after Darwin's deploy of v2,
    before the sync updated the MLServe, recorded the old artifactVersion as a new deploy."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await _settle(client, namespace, state)

    second = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])
    await client.patch(
        MLServe,
        "iris-dev",
        {"spec": edit},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-edit",
    )
    report = (await _reconcile_all(client, namespace))["iris-dev"]  # before the sync saw the deploy
    assert report.error is None, report.error
    assert report.recorded_deployment is None, "an edit of another field recorded a deployment"
    assert await _deployment_count(file_db) == 2
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["spec"]["artifactVersion"] == "v2", "the MLServe follows the database's deploy"
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(second)
    for key, value in edit.items():
        assert body["spec"][key] == value, "the user's edit is kept"
    await _settle(client, namespace, state)
    assert await _deployment_count(file_db) == 2


async def test_an_mlserve_of_the_pair_in_another_namespace_blocks_nothing(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, second_namespace: str
) -> None:
    """Was squatting: the oldest MLServe of the pair anywhere held it, so the sync-created one
    stayed ``PairClaimed`` for good."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    squatter = MLServe.from_dict(
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "metadata": {"name": "iris-dev", "namespace": second_namespace},
            "spec": {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v2"},
        }
    )
    await client.create(squatter, field_manager="kubectl-client-side-apply")
    first = await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    assert (await sync.sync_once(client, "local", SyncState())).created == [f"{namespace}/iris-dev"]

    bodies = [*(await _mlserves(client, namespace)).values(), *(await _mlserves(client, second_namespace)).values()]
    claims = [got[1] for got in map(claim_of, bodies) if got is not None]
    for body in bodies:
        report = await reconcile(body, _runtime(client), claims)
        if body["metadata"]["namespace"] == namespace:
            assert report.error is None, report.error
        else:
            assert report.error is not None and report.error.reason == "WrongNamespace"
            assert report.recorded_deployment is None
    real = (await _mlserves(client, namespace))["iris-dev"]
    assert real["status"]["deploymentId"] == first
    assert _condition(real, "Conflict")["status"] == "False"
    assert await _deployment_count(file_db) == 1, "the squatter wrote to the database"
    assert [d.metadata.name async for d in client.list(K8sDeployment, namespace=second_namespace)] == []


async def test_an_undeploy_in_the_same_second_as_an_apply_deletes_the_mlserve(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """Was an ENDED serve left running: an apply in the same second as Darwin's undeploy made
    the MLServe look newer, and its reconcile never recorded it either."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await _apply_by_hand(client, namespace)
    state = SyncState()
    reports = await _settle(client, namespace, state)
    assert reports["iris-dev"].error is None and await _deployment_count(file_db) == 1

    applied_at = await _label_only_apply(client, namespace, "iris-dev")
    file_db.clock = applied_at - timedelta(seconds=2)
    await file_db.undeploy(ids["iris"], ids["dev"])
    report = (await _reconcile_all(client, namespace))["iris-dev"]
    assert report.recorded_deployment is None
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert _condition(body, "DatabaseSynced")["reason"] == "UndeployedInDatabase"
    result = await sync.sync_once(client, "local", state, force_full=True)
    assert result.deleted == [f"{namespace}/iris-dev"]
    assert await _deployment_count(file_db) == 1
    assert (await file_db.connection.execute_query_dict("SELECT COUNT(*) AS n FROM active_deployments"))[0]["n"] == 0


class _ListFails:
    """An API client whose list of MLServes in one namespace fails (RBAC, a timeout)."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self._client, self._namespace = client, namespace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list(self, resource: Any, *, namespace: str | None = None, **kw: Any) -> Any:
        if namespace == self._namespace:
            request = httpx.Request("GET", f"https://api/namespaces/{namespace}/mlserves")
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 503}
            raise ApiError(request=request, response=httpx.Response(503, json={**status, "message": "unavailable"}))
        return self._client.list(resource, namespace=namespace, **kw)


async def test_a_namespace_that_could_not_be_listed_is_skipped_for_the_pass(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, second_namespace: str
) -> None:
    """Was duplicates: a failed list looked like "no MLServe there", so the sync created
    ``<serve>-<env>`` next to the MLServe that already stood for the pair."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace), "prod": ("local", second_namespace)})
    for env in ("dev", "prod"):
        await file_db.deploy(ids["iris"], ids[env], ids["v1"], ids["user"])
    state = SyncState()
    result = await sync.sync_once(_ListFails(client, second_namespace), "local", state)  # type: ignore[arg-type]
    assert result.created == [f"{namespace}/iris-dev"]
    assert any(second_namespace in failure for failure in result.failed)
    assert await _mlserves(client, second_namespace) == {}, "created in a namespace it could not list"
    result = await sync.sync_once(client, "local", state)  # the list works again: the pass is repeated
    assert result.created == [f"{second_namespace}/iris-prod"]


@contextlib.asynccontextmanager
async def _cached_mlserves(
    cluster: ClusterHandle, namespace: str, *, watch: bool = True
) -> AsyncIterator[tuple[CachedMLServes, list[str]]]:
    """The operator's view of the MLServes for the sync: a real informer of ``namespace`` into
    an MLServeCache. ``watch`` False: the informer lists once and stops, so the cache never
    sees what is written after (the watch's delay, stretched for good)."""
    enqueued: list[str] = []
    cache = MLServeCache(enqueued.extend)
    watch_client = cluster.async_client(field_manager="mlserve-operator")
    informer = Informer(
        watch_client,
        MLServe,
        namespace,
        put=cache.put,
        remove=lambda _ns, _name, uid: cache.remove(uid),
    )
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(30):
            await informer.synced.wait()
        if not watch:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        yield CachedMLServes(cache, [informer], enqueued.extend), enqueued
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watch_client.close()


async def test_a_pass_reads_the_mlserves_from_the_cache_and_lists_nothing(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, cluster: ClusterHandle
) -> None:
    """The operator's passes (a deploy, the periodic full pass) read the controller's cache:
    the sync's own client sends the writes and nothing else."""
    client, counter = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    async with _cached_mlserves(cluster, namespace) as (source, _):
        state = SyncState()
        counter.reset()
        result = await sync.sync_once(client, "local", state, mlserves=source)
        assert result.created == [f"{namespace}/iris-dev"] and not result.failed
        assert dict(counter.by_method) == {"POST": 1}, "a pass from the cache lists nothing"
        await wait_for_async(lambda: len(source.cache) == 1, 20, "the watch to deliver the MLServe")
        counter.reset()
        again = await sync.sync_once(client, "local", state, mlserves=source, force_full=True)
        assert again.writes == 0 and not again.failed
        assert counter.total == 0, f"an in-step full pass sent {dict(counter.by_method)}"


async def test_a_pass_before_the_watch_delivers_its_create_does_not_create_again(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, cluster: ClusterHandle
) -> None:
    """The interleaving of a stale cache: a pass creates the pair's MLServe, the next pass
    runs before the watch delivered it (here: never). The created MLServe is expected, so
    the pass neither creates it again (a 409 and a backoff) nor under another name; a
    version change to it is kept as the server answered it, so the pass after that is in step."""
    client, counter = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    async with _cached_mlserves(cluster, namespace, watch=False) as (source, enqueued):
        state = SyncState()
        assert (await sync.sync_once(client, "local", state, mlserves=source)).created == [f"{namespace}/iris-dev"]
        assert len(source.cache) == 0, "the watch is stopped: the cache never sees the create"
        counter.reset()
        again = await sync.sync_once(client, "local", state, mlserves=source, force_full=True)
        assert again.writes == 0 and not again.failed, again.failed
        assert counter.total == 0
        assert state.retries == {}

        file_db.clock = datetime.now(UTC) + timedelta(seconds=2)
        second = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])
        moved = await sync.sync_once(client, "local", state, mlserves=source)
        assert moved.updated == [f"{namespace}/iris-dev"] and not moved.failed
        after = await sync.sync_once(client, "local", state, mlserves=source, force_full=True)
        assert after.writes == 0 and not after.failed, "the pass read the MLServe as it was before its change"
        assert enqueued, "a changed MLServe is enqueued: the watch's event would change nothing the cache compares"
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(second)
    assert list(await _mlserves(client, namespace)) == ["iris-dev"]


async def test_a_namespace_the_cache_has_not_listed_is_skipped_for_the_pass(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    informer = Informer(client, MLServe, namespace, put=lambda _: None, remove=lambda *_: None)  # never run
    source = CachedMLServes(MLServeCache(lambda _: None), [informer], lambda _: None)
    state = SyncState()
    result = await sync.sync_once(client, "local", state, mlserves=source)
    assert result.created == [] and any("not listed yet" in failure for failure in result.failed)
    assert result.blocking_failures, "the watermark waits: the next tick makes the pass again"
    assert await _mlserves(client, namespace) == {}


async def test_an_invalid_mlserve_deleted_while_the_database_is_down_is_not_resurrected(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was resurrection: the finalizer skipped the pending end when the phase was Invalid (or
    Conflict), so the sync re-created the MLServe a user had deleted."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    deployment = await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await _settle(client, namespace, state)
    body = (await _mlserves(client, namespace))["iris-dev"]
    body["status"]["phase"] = "Invalid"  # e.g. an artifact version that does not exist, applied last

    async def database_down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("database down")

    runtime = _runtime(client)
    monkeypatch.setattr(deploy, "owns_pair", database_down)
    result = await finalize(body, runtime, [], waited=runtime.settings.deletion_db_timeout)
    monkeypatch.undo()
    assert result.done and result.pending, result.message
    await client.delete(MLServe, "iris-dev", namespace=namespace)

    passed = await sync.sync_once(client, "local", state, force_full=True, pending=runtime.pending)
    assert passed.created == [], "re-created the MLServe a user deleted"
    assert passed.pending_written == [("iris", "dev")]
    rows = await file_db.connection.execute_query_dict("SELECT id, status FROM deployments")
    assert [(r["id"], r["status"]) for r in rows] == [(deployment, "ENDED")]
    assert (await sync.sync_once(client, "local", state, force_full=True, pending=runtime.pending)).created == []


async def test_a_request_the_database_moved_past_is_superseded_and_said_so(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """Compare-and-swap: Darwin deployed v2 before the MLServe's request for v3 was recorded.
    The database wins; the MLServe follows it, and an Event and the condition say so."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.artifact(ids["iris"], "v3", ids["user"])
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    state = SyncState()
    await _settle(client, namespace, state)

    second = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])
    await client.patch(
        MLServe,
        "iris-dev",
        {"spec": {"artifactVersion": "v3"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-client-side-apply",
    )
    runtime = _runtime(client)
    body = (await _mlserves(client, namespace))["iris-dev"]
    report = await reconcile(body, runtime)
    assert report.error is None and report.recorded_deployment is None
    assert [(e.type, e.reason) for e in runtime.events.events if e.reason == "Superseded"] == [
        ("Warning", "Superseded")
    ]  # type: ignore[attr-defined]
    for _ in range(2):  # the next reconciles keep the condition until the next request
        body = (await _mlserves(client, namespace))["iris-dev"]
        assert body["spec"]["artifactVersion"] == "v2"
        assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(second)
        synced = _condition(body, "DatabaseSynced")
        assert synced["reason"] == "Superseded" and f"deployment {second}" in synced["message"], synced
        await reconcile(body, _runtime(client))
    assert await _deployment_count(file_db) == 2, "only Darwin's two deploys"
    assert (await sync.sync_once(client, "local", state, force_full=True)).writes == 0

    # asked again, now against the deployment it reflects: recorded
    await client.patch(
        MLServe, "iris-dev", {"spec": {"artifactVersion": "v3"}}, namespace=namespace, patch_type=PatchType.MERGE
    )
    report = (await _reconcile_all(client, namespace))["iris-dev"]
    assert report.recorded_deployment is not None
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert _condition(body, "DatabaseSynced")["reason"] == "DeploymentRecorded"


async def test_a_rollback_token_on_an_mlserve_that_does_not_hold_its_pair_is_answered(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, second_namespace: str
) -> None:
    client, _ = kube
    await _seed(file_db, {"dev": ("local", namespace)})
    elsewhere = MLServe.from_dict(
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "metadata": {"name": "iris-dev", "namespace": second_namespace, "annotations": {ANNOTATION_ROLLBACK: "t1"}},
            "spec": {"serve": "iris", "environment": "dev", "type": "api", "artifactVersion": "v1"},
        }
    )
    await client.create(elsewhere, field_manager="kubectl-client-side-apply")
    runtime = _runtime(client)
    report = await reconcile((await _mlserves(client, second_namespace))["iris-dev"], runtime)
    assert report.error is not None and report.error.reason == "WrongNamespace"
    body = (await _mlserves(client, second_namespace))["iris-dev"]
    assert body["metadata"]["annotations"][ANNOTATION_ROLLBACK_HANDLED] == "t1", "kept for later"
    assert "RollbackNotHeld" in [e.reason for e in runtime.events.events]  # type: ignore[attr-defined]
    assert await _deployment_count(file_db) == 0


async def test_a_name_another_pair_has_is_not_fought_over(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """``fraud-model``/``prod`` and ``fraud``/``model-prod`` share ``fraud-model-prod``: the second
    pair's MLServe was refused (409) on every tick; now it gets the name with a hash of its pair."""
    client, _ = kube
    db = file_db
    user = await db.user()
    prod = await db.environment("prod", "local", namespace)
    model_prod = await db.environment("model-prod", "local", namespace)
    fraud_model = await db.serve("fraud-model", user)
    fraud = await db.serve("fraud", user)
    await db.deploy(fraud_model, prod, await db.artifact(fraud_model, "v1", user), user)
    state = SyncState()
    assert (await sync.sync_once(client, "local", state)).created == [f"{namespace}/fraud-model-prod"]
    await db.deploy(fraud, model_prod, await db.artifact(fraud, "v1", user), user)
    result = await sync.sync_once(client, "local", state)
    assert result.failed == []
    (created,) = result.created
    assert created.startswith(f"{namespace}/fraud-model-prod-")
    body = (await _mlserves(client, namespace))[created.split("/")[1]]
    assert (body["spec"]["serve"], body["spec"]["environment"]) == ("fraud", "model-prod")
    again = await sync.sync_once(client, "local", state, force_full=True)
    assert again.writes == 0 and again.failed == []


# --- the reconciles read the cluster's rows from the sync's snapshot ------------------------------


class StatementCounter:
    """Database calls sent through the models' connection: every statement outside a
    transaction, and every transaction (once), counted where the client takes a connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        client = type(Tortoise.get_connection("default"))
        acquire, transaction = client.acquire_connection, client._in_transaction

        def counting_acquire(this: Any) -> Any:
            self.calls += 1
            return acquire(this)

        def counting_transaction(this: Any) -> Any:
            self.calls += 1
            return transaction(this)

        monkeypatch.setattr(client, "acquire_connection", counting_acquire)
        monkeypatch.setattr(client, "_in_transaction", counting_transaction)


async def _questions(db: DarwinSQL) -> int:
    """MariaDB's own count of the statements clients sent (the SHOW itself included)."""
    rows = await db.connection.execute_query_dict("SHOW GLOBAL STATUS LIKE 'Questions'")
    return int(rows[0]["Value"])


async def test_a_converged_reconcile_sends_no_statement_and_an_idle_tick_one(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures of the issue, counted by the client (both databases) and, on MariaDB, by the
    server itself ('Questions'): the same reconcile without the snapshot shows what it saves."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    rows = RowCache("local")
    runtime = _runtime(client)
    runtime.rows = rows
    state = SyncState()
    await sync.sync_once(client, "local", state, rows=rows)
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert (await reconcile(body, runtime)).error is None
    body = (await _mlserves(client, namespace))["iris-dev"]
    mariadb = file_db.mysql
    counter = StatementCounter(monkeypatch)

    async def measure(step: Any) -> tuple[int, int | None]:
        counter.calls = 0
        before = await _questions(file_db) if mariadb else 0
        overhead = 1 if mariadb else 0  # the SHOW of ``before``
        counter.calls = 0
        await step()
        calls = counter.calls
        server = (await _questions(file_db) - before - overhead) if mariadb else None
        return calls, server

    async def converged(with_rows: bool) -> None:
        runtime.rows = rows if with_rows else None
        report = await reconcile(body, runtime)
        assert report.error is None and report.recorded_deployment is None and not report.requests.writes

    async def idle_tick() -> None:
        assert not (await sync.sync_once(client, "local", state, rows=rows)).full_pass

    cached = await measure(lambda: converged(True))
    uncached = await measure(lambda: converged(False))
    idle = await measure(idle_tick)
    print(
        f"\nstatements ({'mariadb' if mariadb else 'sqlite'}; client count, server count): converged reconcile "
        f"with the snapshot {cached}, without {uncached}; idle tick {idle}"
    )
    assert cached == (0, 0 if mariadb else None), "a converged reconcile reads the snapshot, not the database"
    assert idle == (1, 1 if mariadb else None), "an idle tick is one statement"
    assert uncached[0] >= 5, "the snapshot saves the per-pair queries"


async def test_a_config_edit_reaches_the_children_at_the_next_tick(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """An infra config edited in the database moves the watermark: the next tick refreshes the
    snapshot, names the pair, and its reconcile renders the new config (no drift timer)."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    rows = RowCache("local")
    woken: list[set[tuple[str, str]]] = []
    rows.subscribe(woken.append)
    runtime = _runtime(client)
    runtime.rows = rows
    state = SyncState()
    await sync.sync_once(client, "local", state, rows=rows)
    await _reconcile_all(client, namespace)
    assert not (await sync.sync_once(client, "local", state, rows=rows)).full_pass

    config = {"min_replicas": 1, "max_replicas": 1, "cores": 2, "memory": 3}
    # An edit in place: the table's row count and largest id stay; its updated_at moves.
    await file_db.execute(
        "UPDATE api_serve_configs SET fast_api_config = ?, updated_at = ? WHERE serve_id = ?",
        json.dumps(config),
        file_db.tick(60),
        ids["iris"],
    )
    assert (await sync.sync_once(client, "local", state, rows=rows)).full_pass
    assert woken == [{("iris", "dev")}]
    body = (await _mlserves(client, namespace))["iris-dev"]
    report = await reconcile(body, runtime)
    assert report.error is None and report.applied
    live = await client.get(K8sDeployment, "iris-dev", namespace=namespace)
    assert live.spec is not None and live.spec.template.spec is not None
    limits = live.spec.template.spec.containers[0].resources.limits  # type: ignore[union-attr]
    assert limits is not None and limits["cpu"] == "2" and limits["memory"] == "3G", limits


async def test_a_request_never_trusts_the_snapshot(
    file_db: DarwinSQL, kube: tuple[AsyncClient, RequestCounter], namespace: str
) -> None:
    """Darwin deploys v2 after the snapshot was read; the MLServe then asks for v3 (it still
    reflects v1): the request goes to the database, whose compare-and-swap refuses it."""
    client, _ = kube
    ids = await _seed(file_db, {"dev": ("local", namespace)})
    v3 = await file_db.artifact(ids["iris"], "v3", ids["user"])
    first = await file_db.deploy(ids["iris"], ids["dev"], ids["v1"], ids["user"])
    rows = RowCache("local", max_age=float("inf"))
    runtime = _runtime(client)
    runtime.rows = rows
    await sync.sync_once(client, "local", SyncState(), rows=rows)
    await _reconcile_all(client, namespace)
    darwin = await file_db.deploy(ids["iris"], ids["dev"], ids["v2"], ids["user"])  # the snapshot is stale now
    assert rows.current() is not None and rows.current().pairs[("iris", "dev")].deployment_id == first  # type: ignore[union-attr]
    patched = await client.patch(
        MLServe,
        "iris-dev",
        {"spec": {"artifactVersion": "v3"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    report = await reconcile(patched.to_dict() if hasattr(patched, "to_dict") else dict(patched), runtime)
    assert report.recorded_deployment is None
    assert (
        await file_db.connection.execute_query_dict(
            file_db._sql("SELECT id FROM deployments WHERE artifact_id = ?"), [v3]
        )
        == []
    )
    body = (await _mlserves(client, namespace))["iris-dev"]
    assert body["spec"]["artifactVersion"] == "v2"
    assert body["metadata"]["annotations"][ANNOTATION_DEPLOYMENT_ID] == str(darwin)
