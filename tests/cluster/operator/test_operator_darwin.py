"""Darwin parity through the operator as it runs (``mlserve run``): the pod contract Darwin's
serves expect, and artifact builds shown as status. Rows are written as Darwin writes them;
every wait has a deadline."""

from __future__ import annotations

import time
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from mlserve_testing import darwin
from mlserve_testing.mlserves import apply, events, get, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.secrets import seeded_secret
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster]

SEEDED_SECRET = seeded_secret("pa55-never-in-status-9f2c")


async def test_a_darwin_deploy_gets_env_service_name_and_its_variables_as_darwin_sets_them(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("churn"), unique("dev")
    config: dict[str, Any] = {
        **darwin.env_configs(namespace),
        "pod_labels": {"team": "risk"},
        "pod_annotations": {"example.com/owner": "risk@example.com"},
        "tolerations": [{"key": "example.com/dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    }
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1, env_config=config)
    deployment_id = await darwin.deploy(seed, "v1")
    await darwin.insert(
        "app_layer_deployments",
        deployment_id=deployment_id,
        environment_variables={
            "port": 8000,
            "debug": True,
            "ratio": 0.25,
            "unset": None,
            "log_level": "info",
            "db_password": "secret://churn-db/password",
        },
    )
    name = names.mlserve_name(serve, env)

    body = wait_condition(kube_client, name, namespace, "Ready", timeout=90)
    assert body["status"]["deploymentId"] == deployment_id
    deployment = kube_client.get(Deployment, names.child_name(serve, env), namespace=namespace)
    template = deployment.spec.template
    container = template.spec.containers[0]
    plain = {var.name: var.value or "" for var in container.env if var.valueFrom is None}
    assert plain == {
        "DEBUG": "true",
        "ENV": env,
        "LOG_LEVEL": "info",
        "PORT": "8000",
        "RATIO": "0.25",
        "SERVICE_NAME": f"{serve}-{env}",
        "UNSET": "",
    }
    (secret,) = [var for var in container.env if var.valueFrom is not None]
    assert secret.name == "DB_PASSWORD"
    assert (secret.valueFrom.secretKeyRef.name, secret.valueFrom.secretKeyRef.key) == ("churn-db", "password")
    assert template.metadata.labels["team"] == "risk"
    assert template.metadata.annotations["example.com/owner"] == "risk@example.com"
    assert [t.key for t in template.spec.tolerations or []] == ["example.com/dedicated"]
    # Converged: the reconciles the pods' readiness caused found the live Deployment as rendered
    # (an empty value is stored without the field) and applied nothing again.
    reapplied = f"applied ['Deployment/{names.child_name(serve, env)}']"
    assert reapplied not in operator_db.log_path.read_text()


async def test_a_bad_variable_is_named_never_echoed(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env = unique("churn"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    deployment_id = await darwin.deploy(seed, "v1")
    await darwin.insert(
        "app_layer_deployments",
        deployment_id=deployment_id,
        environment_variables={"db password": SEEDED_SECRET, "token": {"value": SEEDED_SECRET}},
    )
    name = names.mlserve_name(serve, env)

    body = wait_condition(
        kube_client, name, namespace, "Ready", status="False", reason="InvalidInfraConfig", timeout=90
    )
    assert body["status"]["phase"] == "Invalid"
    message = body["status"]["message"]
    assert "environment_variables.token" in message and "a JSON object" in message
    assert SEEDED_SECRET not in str(body["status"])
    wait_for(
        lambda: any(e.reason == "InvalidInfraConfig" for e in events(kube_client, namespace, name)),
        timeout=30,
        what="the InvalidInfraConfig Event",
    )
    assert all(SEEDED_SECRET not in (e.message or "") for e in events(kube_client, namespace, name))
    assert SEEDED_SECRET not in operator_db.log_path.read_text()


async def test_building_then_failed_then_ready_as_the_build_jobs_change(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    """Each change of a build job's status wakes the MLServe through the sync's watermark, well
    within the drift check (20 s in these tests)."""
    serve, env = unique("fraud"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=("v1",), min_replicas=1, max_replicas=1)
    first = await darwin.build_job(seed, "v2", task_id="task-1")
    apply(kube_client, mlserve(serve, namespace, env, "v2"))

    body = wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", "ArtifactBuilding", timeout=60)
    assert body["status"]["phase"] == "Building"
    assert f"build job {first}" in body["status"]["message"]
    assert await darwin.deployments(seed.serve, seed.environment) == []
    wait_for(
        lambda: any(
            e.reason == "ArtifactBuilding" and e.type == "Normal" for e in events(kube_client, namespace, serve)
        ),
        timeout=30,
        what="a Normal ArtifactBuilding Event",
    )

    await darwin.finish_build(seed, first, "v2", status="FAILED")
    body = wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", "ArtifactBuildFailed", timeout=15)
    assert body["status"]["phase"] == "Failed" and "task task-1" in body["status"]["message"]

    second = await darwin.build_job(seed, "v2", task_id="task-2")
    wait_condition(kube_client, serve, namespace, "ArtifactResolved", "False", "ArtifactBuilding", timeout=15)

    started = time.monotonic()
    await darwin.finish_build(seed, second, "v2")
    body = wait_condition(kube_client, serve, namespace, "Ready", timeout=60)
    woke_after = time.monotonic() - started
    rows = await darwin.deployments(seed.serve, seed.environment)
    assert [(r["artifact_id"], r["status"]) for r in rows] == [(seed.artifacts["v2"], "ACTIVE")]
    assert body["status"]["phase"] == "Ready" and body["status"]["image"] == "registry.example.com/built:v2"
    print(f"Building -> Ready {woke_after:.1f}s after the build job became SUCCESSFUL")
    assert get(kube_client, serve, namespace)["status"]["deploymentId"] == rows[0]["id"]
