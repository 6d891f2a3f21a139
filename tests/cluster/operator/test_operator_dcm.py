"""Darwin's calls to its cluster manager, answered by the operator (``MLSERVE_DCM_LISTEN``).

The calls are Darwin's own, replayed from ``tests/fixtures/darwin_dcm``; between them the test
writes the rows Darwin's API writes once DCM has answered (plain SQL, as Darwin does). The
endpoint must write nothing itself; the MLServes follow from Darwin's rows through the sync.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from mlserve_testing import darwin, dcm
from mlserve_testing.mlserves import get, gone, unique, wait_condition
from mlserve_testing.operator import CLUSTER_NAME, OperatorProcess
from mlserve_testing.wait import wait_for

from mlserve.operator.reconcile.kube import MLServe
from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dcm_url(operator_process: OperatorProcess, cluster: Any) -> Iterator[str]:
    """The module's operator, restarted with the endpoint on. It runs as the cluster's admin:
    the chart grants the right to list pods only with ``dcm.enabled`` (tests/helm checks it)."""
    port = _free_port()
    operator_process.stop()
    operator_process.start(MLSERVE_DCM_LISTEN=f"127.0.0.1:{port}", KUBECONFIG=str(cluster.kubeconfig))
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return bool(dcm.send(url, "GET", "/healthcheck").status_code == 200)
        except OSError:
            return False

    wait_for(answering, timeout=30, what="the DCM endpoint answering")
    yield url
    operator_process.stop()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Each table's rows of one serve (the operator serves other tests' MLServes meanwhile: a
# deletion they left may still end its deployment while this test counts).
_OF_SERVE = {
    "deployments": "SELECT COUNT(*) AS n FROM deployments WHERE serve_id = ?",
    "active_deployments": "SELECT COUNT(*) AS n FROM active_deployments WHERE serve_id = ?",
    "app_layer_deployments": (
        "SELECT COUNT(*) AS n FROM app_layer_deployments l JOIN deployments d ON d.id = l.deployment_id"
        " WHERE d.serve_id = ?"
    ),
    "api_serve_configs": "SELECT COUNT(*) AS n FROM api_serve_configs WHERE serve_id = ?",
    "artifacts": "SELECT COUNT(*) AS n FROM artifacts WHERE serve_id = ?",
}


async def _counts(serve: str) -> dict[str, int]:
    """The rows of ``serve`` in each table Darwin's calls could make the operator write."""
    (row,) = await darwin.query("SELECT id FROM serves WHERE name = ?", serve)
    return {table: int((await darwin.query(sql, row["id"]))[0]["n"]) for table, sql in _OF_SERVE.items()}


async def _darwin_records_deploy(seed: darwin.Seed, version: str, variables: dict[str, Any] | None) -> int:
    """What Darwin's deploy writes once DCM answered start: the deployment, the pointer, and the
    app_layer_deployments row with the request's variables."""
    deployment = await darwin.deploy(seed, version)
    await darwin.insert("app_layer_deployments", deployment_id=deployment, environment_variables=variables)
    return deployment


async def _darwin_records_undeploy(seed: darwin.Seed) -> None:
    """What Darwin's undeploy writes once DCM answered stop: the row ENDED, the pointer deleted."""
    (pointer,) = await darwin.active_rows(seed.serve, seed.environment)
    await darwin.query(
        "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", _now(), pointer["deployment_id"]
    )
    await darwin.query(
        "DELETE FROM active_deployments WHERE serve_id = ? AND environment_id = ?", seed.serve, seed.environment
    )


def _running_pods(url: str, names_: dict[str, str], count: int) -> list[dict[str, Any]]:
    def enough() -> tuple[list[dict[str, Any]]] | None:
        answer = dcm.replay(url, "status", **names_)
        assert answer.status_code == 200, answer.text
        pods: list[dict[str, Any]] = answer.json()["data"]["status"]["pods"]
        running = [p for p in pods if p["status"] == "Running"]
        return (pods,) if len(running) == count == len(pods) else None

    return wait_for(enough, timeout=90, what=f"{count} Running pods in the DCM status answer")[0]


async def test_darwin_deploy_infra_update_redeploy_and_undeploy_replayed(
    operator_db: OperatorProcess, dcm_url: str, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("churn"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    fill = {
        "env": env,
        "serve": serve,
        "version": "v1",
        "namespace": namespace,
        "cluster": CLUSTER_NAME,
        "host": f"{serve}-{env}.models.example.com",
    }
    mls_name = names.mlserve_name(serve, env)
    before = await _counts(serve)

    # Deploy: Darwin packs the values, then starts the release; both accepted as DCM does.
    built = dcm.replay(dcm_url, "deploy_build", **fill)
    assert built.status_code == 201, built.text
    assert built.json() == {
        "status": "SUCCESS",
        "message": "Artifact Creation Success",
        "data": {"artifact_id": f"{env}-{serve}-v1"},
    }
    assert "s3cr3t-in-values" not in operator_db.log_text()
    started = dcm.replay(dcm_url, "deploy_start", **fill)
    assert started.status_code == 202, started.text
    assert started.json()["data"] == {"resource_id": f"{env}-{serve}"}
    # One writer per fact: the endpoint recorded nothing, and created nothing.
    assert await _counts(serve) == before
    assert gone(kube_client, MLServe, mls_name, namespace)

    deployment_id = await _darwin_records_deploy(seed, "v1", {"log_level": "info"})
    body = wait_condition(kube_client, mls_name, namespace, "Ready", timeout=90)
    assert body["spec"]["artifactVersion"] == "v1"
    assert body["status"]["deploymentId"] == deployment_id
    (pod,) = _running_pods(dcm_url, fill, 1)
    assert pod["name"].startswith(names.child_name(serve, env))

    # Infra update: Darwin saves api_serve_configs first, then sends the values and starts again.
    await darwin.query(
        "UPDATE api_serve_configs SET fast_api_config = ?, updated_at = ? WHERE serve_id = ? AND environment_id = ?",
        '{"min_replicas": 2, "max_replicas": 2, "cores": 1, "memory": 2, "node_capacity_type": "spot"}',
        _now(),
        seed.serve,
        seed.environment,
    )
    updated = dcm.replay(dcm_url, "infra_values", **fill)
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"] == {"artifact_id": f"{env}-{serve}-v1"}
    assert dcm.replay(dcm_url, "deploy_start", **fill).status_code == 202
    wait_for(
        lambda: kube_client.get(Deployment, names.child_name(serve, env), namespace=namespace).spec.replicas == 2,
        timeout=60,
        what="the Deployment scaled to the new min_replicas",
    )
    assert len(_running_pods(dcm_url, fill, 2)) == 2

    # Redeploy v2: accepted, then Darwin's rows move the MLServe.
    fill_v2 = {**fill, "version": "v2"}
    assert dcm.replay(dcm_url, "deploy_build", **fill_v2).status_code == 201
    assert dcm.replay(dcm_url, "deploy_start", **fill_v2).status_code == 202
    second = await _darwin_records_deploy(seed, "v2", None)

    def at_v2() -> bool:
        status = get(kube_client, mls_name, namespace).get("status") or {}
        return bool(status.get("deploymentId") == second)

    wait_for(at_v2, timeout=60, what="the MLServe following Darwin's v2 deployment")
    assert get(kube_client, mls_name, namespace)["spec"]["artifactVersion"] == "v2"
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [(r["id"], r["status"]) for r in rows] == [(deployment_id, "ENDED"), (second, "ACTIVE")]

    # Undeploy: status first (Darwin stops only a release DCM reports), stop, then Darwin's rows.
    assert dcm.replay(dcm_url, "status", **fill).status_code == 200
    stopped = dcm.replay(dcm_url, "stop", **fill)
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["data"] == {"resource_id": f"{env}-{serve}"}
    assert not gone(kube_client, MLServe, mls_name, namespace)
    await _darwin_records_undeploy(seed)
    wait_for(
        lambda: gone(kube_client, MLServe, mls_name, namespace),
        timeout=60,
        what="the MLServe deleted after Darwin's undeploy",
        ignore=(ApiError,),
    )
    assert _running_pods(dcm_url, fill, 0) == []
    assert [r["status"] for r in await darwin.deployments(seed.serve, seed.environment)] == ["ENDED", "ENDED"]


@pytest.mark.parametrize(
    ("fixture", "change", "code", "field"),
    [
        ("deploy_start", {"kube_namespace": None}, 400, "kube_namespace"),
        ("deploy_start", {"resource_id": ""}, 400, "resource_id"),
        ("deploy_start", {"kube_cluster": 7}, 400, "kube_cluster"),
        ("deploy_start", {"kube_namespace": "elsewhere"}, 400, "kube_namespace"),
        ("deploy_start", {"kube_cluster": "other-cluster"}, 400, "kube_cluster"),
        ("deploy_start", {"darwin_resource": "RayService"}, 400, "darwin_resource"),
        ("deploy_build", {"values": ["not", "an", "object"]}, 400, "values"),
        ("deploy_build", {"artifact_id": "nowhere-nothing-v1"}, 404, "artifact_id"),
        ("infra_values", {"artifact_id": None}, 400, "artifact_id"),
        ("stop", {"resource_id": "no-such-release"}, 404, "resource_id"),
        ("status", {"kube_cluster": ""}, 400, "kube_cluster"),
    ],
)
async def test_a_bad_call_gets_its_code_and_a_message_naming_the_field(
    operator_db: OperatorProcess,
    dcm_url: str,
    namespace: str,
    fixture: str,
    change: dict[str, Any],
    code: int,
    field: str,
) -> None:
    serve, env = unique("bad"), unique("dev")
    await darwin.seed_api_serve(serve, env, namespace)
    call = dcm.call(fixture, env=env, serve=serve, version="v1", namespace=namespace, cluster=CLUSTER_NAME, host="h")
    body = {**call["body"], **change}
    before = await _counts(serve)
    answer = dcm.send(dcm_url, call["method"], call["path"], body)
    assert answer.status_code == code, answer.text
    payload = answer.json()
    assert payload["status"] == "ERROR"
    assert payload["field"] == field
    assert payload["message"].startswith(f"{field}: ")
    assert "s3cr3t-in-values" not in answer.text
    assert await _counts(serve) == before


async def test_not_json_an_unbuilt_version_and_a_one_click_release_are_refused(
    operator_db: OperatorProcess, dcm_url: str, namespace: str
) -> None:
    serve, env = unique("odd"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace)
    await darwin.insert(
        "artifacts",
        serve_id=seed.serve,
        version="v3",
        github_repo_url="https://git.example.com/ml/repo",
        created_at=_now(),
        created_by_id=seed.user,
    )
    fill = {"env": env, "serve": serve, "namespace": namespace, "cluster": CLUSTER_NAME, "host": "h"}

    answer = dcm.send(dcm_url, "POST", "/resource-instance/start", raw=b"{not json")
    assert (answer.status_code, answer.json()["field"]) == (400, "body")

    unbuilt = dcm.replay(dcm_url, "deploy_build", **fill, version="v3")
    assert unbuilt.status_code == 409, unbuilt.text
    assert "has no image yet" in unbuilt.json()["message"]

    # Darwin's one-click deploy names the release by the serve alone: not a release of ours.
    one_click = dcm.call("deploy_start", **fill, version="v1")["body"]
    one_click["resource_id"] = serve
    refused = dcm.send(dcm_url, "POST", "/resource-instance/start", one_click)
    assert (refused.status_code, refused.json()["field"]) == (404, "resource_id")

    # An artifact of another release than the one started.
    other = dcm.call("deploy_start", **fill, version="v1")["body"]
    other_serve = unique("oth")
    await darwin.seed_api_serve(other_serve, env, namespace)
    other["artifact_id"] = f"{env}-{other_serve}-v1"
    mixed = dcm.send(dcm_url, "POST", "/resource-instance/start", other)
    assert (mixed.status_code, mixed.json()["field"]) == (400, "artifact_id")
