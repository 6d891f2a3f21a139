"""Rollback (annotation and CLI) and faults: the operator SIGKILLed mid-deploy, the database
stopped during a reconcile, and deletion while the database is down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType
from mlserve_testing import darwin
from mlserve_testing.faults import record
from mlserve_testing.mlserves import (
    MLServe,
    apply,
    condition,
    events,
    get,
    gone,
    mlserve,
    ready_at_v1,
    wait_condition,
)
from mlserve_testing.operator import OperatorProcess, StoppableMariaDB
from mlserve_testing.wait import async_wait_for, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]


def _image(client: Client, name: str, namespace: str) -> str:
    return str(client.get(Deployment, name, namespace=namespace).spec.template.spec.containers[0].image)


async def _deployed_v1_then_v2(
    kube_client: Client, namespace: str
) -> tuple[str, str, darwin.Seed, list[dict[str, object]]]:
    serve, env, seed = await ready_at_v1(kube_client, namespace)
    apply(kube_client, mlserve(serve, namespace, env, "v2"))

    async def two_rows() -> list[dict[str, object]] | None:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return rows if [r["status"] for r in rows] == ["ENDED", "ACTIVE"] else None

    rows = await async_wait_for(two_rows, timeout=60, what="v2 recorded")
    return serve, env, seed, rows


async def test_rollback_by_annotation_is_a_new_deployment(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, seed, rows = await _deployed_v1_then_v2(kube_client, namespace)
    kube_client.patch(
        MLServe,
        serve,
        {"metadata": {"annotations": {"mlserve.darwin.io/rollback": "first"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )

    async def three_rows() -> list[dict[str, object]] | None:
        got = await darwin.deployments(seed.serve, seed.environment)
        return got if len(got) == 3 else None

    after = await async_wait_for(three_rows, timeout=60, what="the rollback recorded as a third deployment")
    assert [r["status"] for r in after] == ["ENDED", "ENDED", "ACTIVE"]
    assert after[2]["artifact_id"] == seed.artifacts["v1"]
    assert await darwin.active_rows(seed.serve, seed.environment) == [
        {"deployment_id": after[2]["id"], "previous_deployment_id": rows[1]["id"]}
    ]
    body = get(kube_client, serve, namespace)
    assert body["spec"]["artifactVersion"] == "v1"
    assert body["metadata"]["annotations"]["mlserve.darwin.io/rollback-handled"] == "first"
    wait_for(lambda: _image(kube_client, f"{serve}-{env}", namespace).endswith(":v1"), timeout=30, what="v1 running")
    wait_for(
        lambda: any(e.reason == "RolledBack" for e in events(kube_client, namespace, serve)),
        timeout=30,
        what="a RolledBack Event",
    )
    # Handled once: nothing more happens for the same token.
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 3


async def test_rollback_by_cli_writes_the_database_and_the_cluster_follows(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, seed, _rows = await _deployed_v1_then_v2(kube_client, namespace)
    wait_for(lambda: _image(kube_client, f"{serve}-{env}", namespace).endswith(":v2"), timeout=30, what="v2 running")
    mlserve_cli = str(Path(sys.executable).parent / "mlserve")
    result = subprocess.run(  # noqa: ASYNC221 - the test waits for the CLI on purpose
        [mlserve_cli, "rollback", serve, "--env", env],
        env={"MLSERVE_DB_URL": operator_db.db_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "v1" in result.stdout
    after = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in after] == ["ENDED", "ENDED", "ACTIVE"]
    assert after[2]["artifact_id"] == seed.artifacts["v1"]
    wait_for(lambda: _image(kube_client, f"{serve}-{env}", namespace).endswith(":v1"), timeout=60, what="v1 running")
    # The database sync brings the request in line; no deployment is recorded for it.
    wait_for(
        lambda: get(kube_client, serve, namespace)["spec"]["artifactVersion"] == "v1",
        timeout=60,
        what="spec.artifactVersion updated to v1 by the database sync",
    )
    assert len(await darwin.deployments(seed.serve, seed.environment)) == 3


async def test_sigkill_mid_deploy_converges_with_one_active_deployment(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, seed = await ready_at_v1(kube_client, namespace)

    apply(kube_client, mlserve(serve, namespace, env, "v2"))

    async def v2_row() -> bool:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return any(r["artifact_id"] == seed.artifacts["v2"] for r in rows)

    # Kill as soon as the deploy is in the database, before the children and status follow.
    await async_wait_for(v2_row, timeout=60, what="the v2 deployment written", interval=0.01)
    operator_db.kill()
    killed = time.monotonic()
    operator_db.start()

    wait_for(lambda: _image(kube_client, f"{serve}-{env}", namespace).endswith(":v2"), timeout=60, what="v2 running")
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [r["status"] for r in rows] == ["ENDED", "ACTIVE"]
    assert len(await darwin.active_rows(seed.serve, seed.environment)) == 1
    wait_for(
        lambda: (
            (get(kube_client, serve, namespace).get("status") or {}).get("deploymentId") == rows[1]["id"]
            and (get(kube_client, serve, namespace).get("status") or {}).get("phase") == "Ready"
        ),
        timeout=60,
        what=f"status naming deployment {rows[1]['id']} and Ready",
    )
    record(
        "operator SIGKILLed once the deploy is in the database",
        1,
        survived=True,
        converge_seconds=time.monotonic() - killed,
    )


async def test_database_down_during_reconcile_reports_and_recovers(
    operator_db: OperatorProcess,
    operator_mariadb: StoppableMariaDB,
    kube_client: Client,
    namespace: str,
) -> None:
    serve, env, seed = await ready_at_v1(kube_client, namespace)

    operator_mariadb.stop()
    try:
        apply(kube_client, mlserve(serve, namespace, env, "v2"))
        body = wait_condition(
            kube_client, serve, namespace, "DatabaseSynced", "False", reason="DatabaseUnavailable", timeout=60
        )
        assert operator_db.running
        assert _image(kube_client, f"{serve}-{env}", namespace).endswith(":v1")  # children kept
        message = condition(body, "DatabaseSynced")["message"]  # type: ignore[index]
        assert operator_mariadb.server.password not in message
    finally:
        operator_mariadb.start()

    restarted = time.monotonic()
    wait_condition(kube_client, serve, namespace, "DatabaseSynced", "True", timeout=90)
    wait_for(lambda: _image(kube_client, f"{serve}-{env}", namespace).endswith(":v2"), timeout=60, what="v2 running")
    record(
        "MariaDB stopped during a reconcile, restarted",
        1,
        survived=operator_db.running,
        converge_seconds=time.monotonic() - restarted,
    )
    # This process's pooled connections died with the server: retry until a fresh one answers.
    rows = await async_wait_for(
        lambda: darwin.deployments(seed.serve, seed.environment), timeout=30, what="the database", ignore=(Exception,)
    )
    assert [r["status"] for r in rows] == ["ENDED", "ACTIVE"]
    assert operator_mariadb.server.password not in operator_db.log_text()


async def test_deletion_completes_with_the_database_down(
    operator_db: OperatorProcess,
    operator_mariadb: StoppableMariaDB,
    kube_client: Client,
    namespace: str,
) -> None:
    serve, env, seed = await ready_at_v1(kube_client, namespace)

    operator_mariadb.stop()
    try:
        kube_client.delete(MLServe, serve, namespace=namespace)
        # MLSERVE_DELETION_DB_TIMEOUT is 8 s in the test settings.
        wait_for(lambda: gone(kube_client, MLServe, serve, namespace), timeout=40, what="the MLServe deleted")
        assert operator_db.running
    finally:
        operator_mariadb.start()

    # The skipped write is made once the database is back (by the sync loop's retry).
    async def ended() -> bool:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return bool(rows) and all(r["status"] == "ENDED" for r in rows)

    restarted = time.monotonic()
    await async_wait_for(
        ended, timeout=60, what="the deployment ENDED after the database came back", ignore=(Exception,)
    )
    assert await darwin.active_rows(seed.serve, seed.environment) == []
    record(
        "MariaDB stopped during a deletion, restarted",
        1,
        survived=operator_db.running,
        converge_seconds=time.monotonic() - restarted,
    )
    # The database sync must not bring the deleted pair back (at most transiently: an MLServe it
    # creates from a read made before the pending write is removed on its next pass).
    wait_for(
        lambda: (
            gone(kube_client, MLServe, f"{serve}-{env}", namespace) and gone(kube_client, MLServe, serve, namespace)
        ),
        timeout=30,
        what="no MLServe for the undeployed pair",
    )


async def test_an_undeploy_skipped_with_the_database_down_survives_an_operator_restart(
    operator_db: OperatorProcess,
    operator_mariadb: StoppableMariaDB,
    kube_client: Client,
    namespace: str,
) -> None:
    serve, env, seed = await ready_at_v1(kube_client, namespace)
    own_namespace = operator_db.env["MLSERVE_OPERATOR_NAMESPACE"]
    configmap = "mlserve-operator-pending"

    def kept() -> bool:
        data = kube_client.get(ConfigMap, configmap, namespace=own_namespace).data or {}
        return any(e["serve"] == serve and e["environment"] == env for e in json.loads(data.get("pending.json", "[]")))

    operator_mariadb.stop()
    try:
        kube_client.delete(MLServe, serve, namespace=namespace)
        wait_for(lambda: gone(kube_client, MLServe, serve, namespace), timeout=40, what="the MLServe deleted")
        wait_for(
            kept, timeout=10, what=f"the skipped undeploy in ConfigMap {own_namespace}/{configmap}", ignore=(ApiError,)
        )
        operator_db.kill()  # restarts with the database still down: nothing but the ConfigMap remembers
    finally:
        operator_mariadb.start()
    operator_db.start(**operator_db.extra_env)

    async def ended() -> bool:
        rows = await darwin.deployments(seed.serve, seed.environment)
        return bool(rows) and all(r["status"] == "ENDED" for r in rows)

    await async_wait_for(ended, timeout=60, what="the deployment ENDED after the restart", ignore=(Exception,))
    assert await darwin.active_rows(seed.serve, seed.environment) == []
    wait_for(
        lambda: gone(kube_client, ConfigMap, configmap, own_namespace), timeout=20, what="the ConfigMap gone once empty"
    )
    restarted = operator_db.log_text().rsplit("===== start", 1)[-1]
    assert f"created MLServe {namespace}/{serve}-{env}" not in restarted, "the deleted pair came back after the restart"
    assert gone(kube_client, MLServe, f"{serve}-{env}", namespace)
