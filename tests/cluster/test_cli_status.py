"""``mlserve status`` on a real API server: the database's active deployment beside the
MLServe that runs it, in step only when the MLServe is Ready on that deployment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from mlserve.models import Artifact, Environment, Serve, User, activate
from mlserve.models.db import close_db, init_db
from mlserve.models.seed import DEMO_API_SERVE, seed
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.cli import main
from mlserve.operator.dev.cluster import ClusterHandle

pytestmark = pytest.mark.cluster

MLServe = create_namespaced_resource("mlserve.darwin.io", "v1alpha1", "MLServe", "mlserves")


async def _deploy(path: Path) -> int:
    await init_db(DatabaseSettings.sqlite(path))
    try:
        result = await seed(cluster_name="local")
        serve = await Serve.get(name=DEMO_API_SERVE)
        artifact = await Artifact.get(serve_id=serve.pk, version="1.1.0")
        user = await User.get(username=result.user.username)
        return (await activate(serve, await Environment.get(name="dev"), artifact, user)).pk
    finally:
        await close_db()


def _mlserve_object(client: Client, namespace: str, name: str, environment: str, status: dict[str, object]) -> None:
    body = {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"serve": DEMO_API_SERVE, "environment": environment, "type": "api", "artifactVersion": "1.1.0"},
    }
    client.create(MLServe.from_dict(body))  # type: ignore[attr-defined]
    client.patch(  # type: ignore[attr-defined]
        MLServe.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
    )


def test_status_shows_both_sides_and_whether_they_are_in_step(
    cluster: ClusterHandle, kube_client: Client, mlserve_crd: None, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "mlserve.sqlite3"
    deployment = asyncio.run(_deploy(path))
    _mlserve_object(
        kube_client, namespace, "in-dev", "dev", {"phase": "Ready", "ready": "2/2", "deploymentId": deployment}
    )
    _mlserve_object(kube_client, namespace, "in-prod", "prod", {"phase": "Pending"})

    result = CliRunner().invoke(
        main,
        ["status", DEMO_API_SERVE, "-o", "json"],
        env={"MLSERVE_DB_URL": "", "MLSERVE_DB_PATH": str(path), "KUBECONFIG": str(cluster.kubeconfig)},
    )
    assert result.exit_code == 0, result.output
    rows = {row.get("mlserve"): row for row in json.loads(result.stdout)}
    dev = rows[f"{namespace}/in-dev"]
    assert (dev["deploymentId"], dev["phase"], dev["ready"], dev["inStep"]) == (deployment, "Ready", "2/2", True)
    prod = rows[f"{namespace}/in-prod"]
    assert prod["environment"] == "prod" and "deploymentId" not in prod and prod["inStep"] is False
