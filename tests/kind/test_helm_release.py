"""The operator's Helm release on kind, as the README and docs/operations.md describe it:
``helm upgrade --reuse-values`` rolls the operator's pod and leaves the serves' pods alone;
``helm uninstall`` removes the operator and keeps the MLServe CRD, the MLServes and their
running pods (nothing written to the database). The uninstall test installs the release
again afterwards, as ``mlserve dev kind up`` did, so the other tests find it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod
from mlserve_testing import darwin
from mlserve_testing.chart import Helm
from mlserve_testing.kind import deployment_ready, http_from_pod, seed_model_serve
from mlserve_testing.mlserves import get, unique, wait_condition
from mlserve_testing.wait import wait_for

from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.kind import install
from mlserve.operator.render import names

TIMEOUT = 300.0
OPERATOR_LABELS = {"app.kubernetes.io/instance": install.RELEASE, "app.kubernetes.io/name": "mlserve-operator"}


def _helm(helm: Helm, kind_state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return helm.run(*args, "--namespace", install.OPERATOR_NAMESPACE, kubeconfig=kind_state / "kubeconfig")


def _operator_pods(client: Client) -> list[Pod]:
    return [
        p
        for p in client.list(Pod, namespace=install.OPERATOR_NAMESPACE, labels=OPERATOR_LABELS)
        if (p.metadata.labels or {}).get("app.kubernetes.io/component") != "migration"
    ]


def _ready_operator(client: Client) -> list[Pod] | None:
    pods = _operator_pods(client)
    ready = [
        p
        for p in pods
        if p.metadata.deletionTimestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]
    return ready if ready and len(ready) == len(pods) else None


def _serve_pod_uids(client: Client, namespace: str) -> set[str]:
    return {
        str(p.metadata.uid)
        for p in client.list(Pod, namespace=namespace)
        if p.metadata.name.startswith(("churn", "fraud"))
    }


def _revision(helm: Helm, kind_state: Path) -> int:
    status = json.loads(_helm(helm, kind_state, "status", install.RELEASE, "--output", "json").stdout)
    assert status["info"]["status"] == "deployed", status["info"]
    return int(status["version"])


async def _running_serve(
    client: Client, namespace: str, images: dict[str, str], prefix: str
) -> tuple[str, str, darwin.Seed]:
    serve, env = unique(prefix), unique("prod")
    seed = await seed_model_serve(serve, env, namespace, images)
    await darwin.deploy(seed, "v1")
    wait_condition(client, names.mlserve_name(serve, env), namespace, "Ready", timeout=TIMEOUT)
    wait_for(
        lambda: deployment_ready(client, names.child_name(serve, env), namespace, ":v1"),
        timeout=TIMEOUT,
        what="v1 pods",
    )
    return serve, env, seed


async def test_helm_upgrade_rolls_the_operator_and_leaves_the_serves_running(
    darwin_db: DatabaseSettings,
    kube_client: Client,
    namespace: str,
    kind_images: dict[str, str],
    helm: Helm,
    kind_state: Path,
) -> None:
    serve, env, seed = await _running_serve(kube_client, namespace, kind_images, "churn")
    serve_pods = _serve_pod_uids(kube_client, namespace)
    before = {str(p.metadata.uid) for p in _operator_pods(kube_client)}
    revision = _revision(helm, kind_state)

    # The README's upgrade, with one setting changed.
    _helm(
        helm,
        kind_state,
        "upgrade",
        install.RELEASE,
        str(install.CHART),
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
        "--wait",
        "--timeout",
        f"{int(TIMEOUT)}s",
    )
    assert _revision(helm, kind_state) == revision + 1
    config = kube_client.get(ConfigMap, install.RELEASE, namespace=install.OPERATOR_NAMESPACE)
    assert (config.data or {}).get("MLSERVE_LOG_LEVEL") == "DEBUG"
    pods = wait_for(lambda: _ready_operator(kube_client), timeout=TIMEOUT, what="the upgraded operator pod ready")
    assert not before & {str(p.metadata.uid) for p in pods}, "the operator's pod was not replaced"
    # in-cluster, as the chart's ServiceAccount, from the image built here
    (pod,) = pods
    assert pod.spec is not None
    assert pod.spec.serviceAccountName == install.RELEASE
    assert pod.spec.containers[0].image == kind_images["operator"]
    # The serve was not touched: same pods, still Ready, still the ACTIVE deployment.
    assert _serve_pod_uids(kube_client, namespace) == serve_pods
    wait_condition(kube_client, names.mlserve_name(serve, env), namespace, "Ready", timeout=60)
    # The upgraded operator acts: a deploy of v2 rolls the serve.
    await darwin.deploy(seed, "v2")
    wait_for(
        lambda: deployment_ready(kube_client, names.child_name(serve, env), namespace, ":v2"),
        timeout=TIMEOUT,
        what="v2 rolled out by the upgraded operator",
    )


async def test_helm_uninstall_keeps_the_crd_and_the_running_serves_and_a_reinstall_takes_them_back(
    darwin_db: DatabaseSettings,
    kube_client: Client,
    namespace: str,
    kind_images: dict[str, str],
    helm: Helm,
    kind_state: Path,
) -> None:
    serve, env, seed = await _running_serve(kube_client, namespace, kind_images, "fraud")
    mls = names.mlserve_name(serve, env)
    serve_pods = _serve_pod_uids(kube_client, namespace)
    rows = await darwin.deployments(seed.serve, seed.environment)

    _helm(helm, kind_state, "uninstall", install.RELEASE, "--wait", "--timeout", f"{int(TIMEOUT)}s")
    try:
        with pytest.raises(ApiError) as gone:
            kube_client.get(Deployment, install.RELEASE, namespace=install.OPERATOR_NAMESPACE)
        assert gone.value.status.code == 404
        wait_for(lambda: not _operator_pods(kube_client), timeout=TIMEOUT, what="the operator's pods gone")
        # docs/operations.md: the CRD stays, the MLServes and their children stay as they are
        kube_client.get(CustomResourceDefinition, "mlserves.mlserve.darwin.io")
        assert get(kube_client, mls, namespace)["spec"]["artifactVersion"] == "v1"
        assert deployment_ready(kube_client, names.child_name(serve, env), namespace, ":v1") is not None
        assert _serve_pod_uids(kube_client, namespace) == serve_pods
        answer = http_from_pod(
            kube_client,
            namespace,
            kind_images["model_v1"],
            f"http://{names.child_name(serve, env)}.{namespace}.svc.cluster.local/predict",
            {"features": [1]},
        )
        assert answer["model"] == "v1"
        # nothing written to the database
        assert await darwin.deployments(seed.serve, seed.environment) == rows
    finally:
        # as `mlserve dev kind up` installed it (the values it wrote), for the other tests
        _helm(
            helm,
            kind_state,
            "install",
            install.RELEASE,
            str(install.CHART),
            "--values",
            str(kind_state / "operator-values.yaml"),
            "--wait",
            "--timeout",
            f"{int(TIMEOUT)}s",
        )
    wait_for(lambda: _ready_operator(kube_client), timeout=TIMEOUT, what="the reinstalled operator ready")
    wait_condition(kube_client, mls, namespace, "Ready", timeout=TIMEOUT)
    assert await darwin.deployments(seed.serve, seed.environment) == rows
