"""The bad-input suite: bad database rows, each refused by name, none stopping anything else.

For every row of ``mlserve_testing.bad_rows`` (on MariaDB, with the local control plane): a
healthy pair is deployed *after* the bad one, then the database sync ticks and every MLServe
it made is reconciled, in-process. Each case asserts:

* the right reason: on a sync issue (the pair or environment is left alone) or on the
  MLServe's condition (its reconcile refuses the rows);
* a Warning Event of that reason;
* no database write (the deployment tables are the same row for row);
* the operator alive: no tick raised, the next tick does not pass again at once (the bad
  pair backs off alone), a later one does, without posting the Event twice;
* the healthy pair served: its MLServe made, reconciled without error, its Deployment applied.

The bad MLServes (rejected at admission) are ``mlserve_testing.invalid_mlserves``, proven on
the API server by ``test_crd_cluster.py``; the ones admission accepts and the operator refuses
by name are at the end of this file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, Client
from lightkube.resources.apps_v1 import Deployment as K8sDeployment
from mlserve_testing import darwin
from mlserve_testing.bad_rows import BAD_ROWS, OPERATOR_NAMESPACE, TEXT_ROWS, BadPair, BadRow
from mlserve_testing.invalid_mlserves import INVALID, REFUSED, Refused
from prometheus_client import REGISTRY

from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile import sync
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.identity import claim_of
from mlserve.operator.reconcile.kube import MLServe
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.reconcile.sync import SyncState
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec.namespaces import NamespacePolicy

TABLES = ("deployments", "active_deployments", "app_layer_deployments", "scheduled_workflow_deployments")


@pytest.fixture
async def kube(cluster: ClusterHandle, mlserve_crd: None) -> AsyncIterator[AsyncClient]:
    client = cluster.async_client(field_manager="mlserve-operator")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def database(mariadb_database: DatabaseSettings) -> AsyncIterator[DatabaseSettings]:
    """A Darwin schema on the suite's MariaDB server, connected."""
    await init_db(mariadb_database)
    try:
        yield mariadb_database
    finally:
        await close_db()


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[DatabaseSettings]:
    """A Darwin schema in a SQLite file, whose JSON columns are plain text."""
    settings = DatabaseSettings.sqlite(tmp_path / "darwin.sqlite3")
    await init_db(settings)
    try:
        yield settings
    finally:
        await close_db()


def operator_settings() -> OperatorSettings:
    """As ``mlserve run`` reads them with MLSERVE_OPERATOR_NAMESPACE set and the namespace
    settings left to their defaults (Kubernetes' own namespaces and the operator's refused)."""
    return OperatorSettings(
        cluster_name="local",
        render=RenderSettings(),
        database=None,
        operator_namespace=OPERATOR_NAMESPACE,
        namespace_policy=NamespacePolicy(operator_namespace=OPERATOR_NAMESPACE),
    )


async def database_rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a deploy or an undeploy writes, to compare before and after."""
    return {table: await darwin.query(f"SELECT * FROM {table} ORDER BY id") for table in TABLES}


async def mlserves(client: AsyncClient, namespace: str) -> dict[str, dict[str, Any]]:
    return {i.metadata.name: i.to_dict() async for i in client.list(MLServe, namespace=namespace)}


def _env_config(case: BadRow, namespace: str) -> Any:
    if case.env_config is None:
        return None
    return json.loads(json.dumps(case.env_config).replace('"{ns}"', json.dumps(namespace)))


async def _seed_bad(case: BadRow, namespace: str) -> BadPair:
    if case.workflow:
        seed = await darwin.seed_workflow_serve(case.serve, case.environment, namespace, schedule=case.schedule)
    else:
        seed = await darwin.seed_api_serve(
            case.serve, case.environment, namespace, versions=("v1",), env_config=_env_config(case, namespace)
        )
    pair = BadPair(seed, await darwin.deploy(seed, "v1"), namespace)
    if case.mutate is not None:
        await case.mutate(pair)
    return pair


@pytest.mark.mariadb
@pytest.mark.parametrize("case", BAD_ROWS, ids=[case.id for case in BAD_ROWS])
async def test_a_bad_row_is_named_and_stops_nothing_else(
    case: BadRow, database: DatabaseSettings, kube: AsyncClient, namespace: str
) -> None:
    await check_bad_row(case, kube, namespace)


@pytest.mark.parametrize("case", TEXT_ROWS, ids=[case.id for case in TEXT_ROWS])
async def test_a_json_column_that_is_not_json_is_named_and_stops_nothing_else(
    case: BadRow, sqlite_database: DatabaseSettings, kube: AsyncClient, namespace: str
) -> None:
    """MySQL's JSON columns refuse text that is not JSON; SQLite's (and a text column of a
    hand-made schema) do not: one such row must not stop the sync for every serve, nor be
    reported as the database not answering."""
    await check_bad_row(case, kube, namespace)


async def check_bad_row(case: BadRow, client: AsyncClient, namespace: str) -> None:
    """One case, end to end (see the module's docstring)."""
    await _seed_bad(case, namespace)
    good = await darwin.seed_api_serve("good", "prod", namespace, versions=("v1",))
    good_deployment = await darwin.deploy(good, "v1")  # deployed after the bad row
    before = await database_rows()

    settings = operator_settings()
    sync_events = RecordingEvents()
    state = SyncState()

    async def tick(at: float) -> sync.SyncResult:
        return await sync.sync_once(
            client,
            "local",
            state,
            clock=lambda: at,
            events=sync_events,
            namespace_refusal=settings.namespace_refusal,
            operator_namespace=OPERATOR_NAMESPACE,
        )

    result = await tick(1000.0)
    assert f"{namespace}/good-prod" in result.created, result
    posted_once = len(sync_events.events)

    # every MLServe the sync made, reconciled as the operator's workers do
    events = RecordingEvents()
    runtime = Runtime(settings=settings, client=client, events=events)
    reports = {name: await reconcile(body, runtime) for name, body in (await mlserves(client, namespace)).items()}
    assert reports["good-prod"].error is None, reports["good-prod"].error
    good_body = (await mlserves(client, namespace))["good-prod"]
    assert good_body["status"]["deploymentId"] == good_deployment
    assert await client.get(K8sDeployment, "good-prod", namespace=namespace)

    if case.where == "sync":
        reasons = {str(issue.reason) for issue in result.issues}
        assert case.reason in reasons, f"sync issues: {[issue.text for issue in result.issues]}"
        posted = [e for e in sync_events.events if e.reason == case.reason]
        assert posted and all(e.type == "Warning" for e in posted), sync_events.events
        issue = next(i for i in result.issues if str(i.reason) == case.reason)
        assert issue.where, "the issue names the row and the column"
        scope = "pair" if issue.pair is not None else "environment"
        shown = REGISTRY.get_sample_value("mlserve_operator_sync_issues", {"reason": case.reason, "scope": scope})
        assert shown is not None and shown >= 1, "the sync_issues metric counts it"
        assert set(reports) == {"good-prod"}, "no MLServe for a pair the sync cannot use"
    else:
        (bad,) = [name for name in reports if name != "good-prod"]
        error = reports[bad].error
        assert error is not None and str(error.reason) == case.reason, error
        assert any(e.name == bad and e.type == "Warning" and e.reason == case.reason for e in events.events)
        conditions = (await mlserves(client, namespace))[bad]["status"]["conditions"]
        assert any(c["reason"] == case.reason and c["status"] == "False" for c in conditions), conditions
        assert not result.issues, [issue.text for issue in result.issues]

    assert await database_rows() == before, "a bad row never makes the operator write the database"

    # alive, and a failing pair backs off on its own: the next tick is idle, a later one
    # tries again without posting the same Event twice
    assert not (await tick(1001.0)).full_pass
    later = await tick(1000.0 + 600.0)
    assert later.full_pass and not later.failed, later
    assert len(sync_events.events) == posted_once, "an issue is posted once, not on every pass"
    assert (await mlserves(client, namespace))["good-prod"]["spec"]["artifactVersion"] == "v1"


def test_the_suite_holds_forty_bad_rows() -> None:
    assert len(BAD_ROWS) + len(TEXT_ROWS) >= 40
    ids = [case.id for case in (*BAD_ROWS, *TEXT_ROWS)]
    assert len(set(ids)) == len(ids)


# --- bad MLServes the API server admits and the operator refuses by name -----------------------


async def _seed_for_mlserves(namespace: str) -> None:
    iris = await darwin.seed_api_serve("iris", "prod", namespace, versions=("v1", "v2", "unbuilt", "badimage"))
    await darwin.query("UPDATE artifacts SET image_url = NULL WHERE id = ?", iris.artifacts["unbuilt"])
    await darwin.query(
        "UPDATE artifacts SET image_url = ? WHERE id = ?", "Registry/Iris:v1 x", iris.artifacts["badimage"]
    )
    await darwin.seed_workflow_serve("etl", "prod", namespace)
    await darwin.seed_api_serve("iris", "elsewhere", "elsewhere-" + namespace[:40], versions=())
    await darwin.seed_api_serve("iris", "foreign", namespace, versions=(), cluster="other")


def _claims(listed: dict[str, dict[str, Any]], name: str) -> list[Any]:
    """The claims on the pair of MLServe ``name`` (what the operator's claims index holds)."""
    mine = claim_of(listed[name])
    assert mine is not None
    return [got[1] for got in map(claim_of, listed.values()) if got is not None and got[0] == mine[0]]


@pytest.mark.mariadb
@pytest.mark.parametrize("case", REFUSED, ids=[case.id for case in REFUSED])
async def test_a_bad_mlserve_is_refused_by_name_and_stops_nothing_else(
    case: Refused, database: DatabaseSettings, kube: AsyncClient, kube_client: Client, namespace: str
) -> None:
    client = kube
    await _seed_for_mlserves(namespace)
    good = await darwin.seed_api_serve("good", "prod", namespace, versions=("v1",))
    await darwin.deploy(good, "v1")
    result = await sync.sync_once(client, "local", SyncState())
    assert result.created == [f"{namespace}/good-prod"], result
    before = await database_rows()

    # after "good-prod" by name: of two claims made in the same second the first name holds
    name = f"refused-{case.id}"[:63].rstrip("-")
    body = {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": name, "namespace": namespace, "annotations": case.annotations or {}},
        "spec": case.spec,
    }
    kube_client.create(MLServe.from_dict(body))  # admitted by the API server

    overrides = dict(case.settings or {})
    settings = operator_settings()
    if "allowed" in overrides:
        policy = NamespacePolicy(allowed=overrides.pop("allowed"), operator_namespace=OPERATOR_NAMESPACE)
        settings = dataclasses.replace(settings, namespace_policy=policy)
    settings = dataclasses.replace(settings, **overrides)
    events = RecordingEvents()
    runtime = Runtime(settings=settings, client=client, events=events)
    listed = await mlserves(client, namespace)
    good_report = await reconcile(
        listed["good-prod"],
        Runtime(settings=operator_settings(), client=client, events=RecordingEvents()),
        _claims(listed, "good-prod"),
    )
    assert good_report.error is None, good_report.error
    report = await reconcile(listed[name], runtime, _claims(listed, name))

    assert report.error is not None and str(report.error.reason) == case.reason, report.error
    assert any(e.name == name and e.type == "Warning" and e.reason == case.reason for e in events.events), events.events
    status = (await mlserves(client, namespace))[name]["status"]
    assert any(c["reason"] == case.reason for c in status["conditions"]), status["conditions"]
    assert await database_rows() == before, "a refused MLServe never writes the database"

    # the operator goes on: the healthy pair deployed after the bad MLServe is served
    newer = await darwin.seed_api_serve("newer", "prod", namespace, versions=("v1",))
    await darwin.deploy(newer, "v1")
    later = await sync.sync_once(client, "local", SyncState())
    assert f"{namespace}/newer-prod" in later.created and not later.failed, later
    newer_report = await reconcile(
        (await mlserves(client, namespace))["newer-prod"],
        Runtime(settings=operator_settings(), client=client, events=RecordingEvents()),
    )
    assert newer_report.error is None, newer_report.error


def test_the_suite_holds_thirty_bad_mlserves() -> None:
    assert len(INVALID) + len(REFUSED) >= 30


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("column", "value"),
    [("deployments.status", "PAUSED"), ("serves.type", "batch")],
)
async def test_a_row_gone_bad_under_a_running_mlserve_is_named_on_it_and_deletes_nothing(
    column: str, value: str, database: DatabaseSettings, kube: AsyncClient, namespace: str
) -> None:
    client = kube
    seed = await darwin.seed_api_serve("iris", "prod", namespace, versions=("v1",))
    deployment = await darwin.deploy(seed, "v1")
    state = SyncState()
    await sync.sync_once(client, "local", state, clock=lambda: 10.0)
    settings = operator_settings()
    report = await reconcile(
        (await mlserves(client, namespace))["iris-prod"], Runtime(settings, client, RecordingEvents())
    )
    assert report.error is None, report.error

    table, name = column.split(".")
    key = deployment if table == "deployments" else seed.serve
    await darwin.query(f"UPDATE {table} SET {name} = ? WHERE id = ?", value, key)
    before = await database_rows()
    sync_events = RecordingEvents()
    result = await sync.sync_once(
        client,
        "local",
        state,
        force_full=True,
        clock=lambda: 20.0,
        events=sync_events,
        operator_namespace=OPERATOR_NAMESPACE,
    )
    assert not result.deleted and not result.updated, "a row the operator cannot read never deletes its MLServe"
    assert [e.name for e in sync_events.events if e.reason == "InvalidDatabaseRow"] == ["iris-prod"]

    events = RecordingEvents()
    report = await reconcile((await mlserves(client, namespace))["iris-prod"], Runtime(settings, client, events))
    assert report.error is not None and report.error.reason == "InvalidDatabaseRow", report.error
    assert column in report.error.message
    assert any(e.reason == "InvalidDatabaseRow" and e.type == "Warning" for e in events.events)
    assert await client.get(K8sDeployment, "iris-prod", namespace=namespace), "the children are kept"
    assert await database_rows() == before
