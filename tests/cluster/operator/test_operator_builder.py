"""The artifact builder inside ``mlserve run``: two operators with the builder on, against one
MariaDB, started before the build job is written: the job is built once (each operator runs
its builds in a namespace of its own, so a second build would be a second Kubernetes Job), the
MLServe waiting for the version goes from Building to Ready on the built image."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace
from mlserve_testing import darwin
from mlserve_testing.mlserves import apply, events, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess, StoppableMariaDB, _free_port, operator_env
from mlserve_testing.wait import wait_for

from mlserve.operator.reconcile.builder import LABEL_BUILD_JOB
from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

IMAGE_URL = "registry.example.com/serves:{serve}_{version}"


@pytest.fixture
def two_namespaces(kube_client: Client) -> Iterator[tuple[str, str]]:
    made = []
    for role in ("serves", "other"):
        name = f"op-builder-{role}-{uuid.uuid4().hex[:6]}"
        kube_client.create(Namespace(metadata=ObjectMeta(name=name)))
        made.append(name)
    yield made[0], made[1]
    for name in made:
        with contextlib.suppress(ApiError):
            kube_client.delete(Namespace, name)


@pytest.fixture
def two_builders(
    cluster: object,
    mlserve_crd: None,
    operator_mariadb: StoppableMariaDB,
    two_namespaces: tuple[str, str],
    tmp_path: Path,
) -> Iterator[list[OperatorProcess]]:
    """Two operators, each watching its namespace and building there, one database."""
    operators = []
    for index, namespace in enumerate(two_namespaces):
        port = _free_port()
        env = operator_env(
            cluster.kubeconfig,  # type: ignore[attr-defined]
            operator_mariadb.url,
            port,
            MLSERVE_NAMESPACES=namespace,
            MLSERVE_BUILDER_ENABLED="true",
            MLSERVE_BUILDER_NAMESPACE=namespace,
            MLSERVE_BUILDER_IMAGE_URL=IMAGE_URL,
            MLSERVE_BUILDER_LEASE="2s",
        )
        operators.append(OperatorProcess(env, tmp_path / f"operator-{index}.log", port))
    try:
        for operator in operators:
            operator.start()
        yield operators
    finally:
        for operator in operators:
            operator.stop()


async def test_two_operators_build_a_job_once_and_the_mlserve_goes_from_building_to_ready(
    darwin_rows: StoppableMariaDB,
    two_builders: list[OperatorProcess],
    two_namespaces: tuple[str, str],
    kube_client: Client,
) -> None:
    namespace, other = two_namespaces
    serve, env = unique("fraud"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=("v1",), min_replicas=1, max_replicas=1)
    job = await darwin.build_job(seed, "v2")
    apply(kube_client, mlserve(serve, namespace, env, "v2"))

    body = wait_condition(kube_client, serve, namespace, "Ready", timeout=90)

    # It waited for the build first: phase Building has its Event.
    assert any(e.reason == "ArtifactBuilding" for e in events(kube_client, namespace, serve))

    assert body["status"]["image"] == f"registry.example.com/serves:{serve}_v2"
    (row,) = await darwin.query("SELECT status, task_id FROM artifact_builder_job WHERE id = ?", job)
    assert row["status"] == "SUCCESSFUL"
    built = [
        (ns, j.metadata.name)
        for ns in (namespace, other)
        for j in kube_client.list(Job, namespace=ns, labels={LABEL_BUILD_JOB: str(job)})
    ]
    assert len(built) == 1, built
    assert row["task_id"] == f"kubernetes job {built[0][0]}/{built[0][1]}"
    (artifact,) = await darwin.query(
        "SELECT image_url FROM artifacts WHERE serve_id = ? AND version = ?", seed.serve, "v2"
    )
    assert artifact["image_url"] == f"registry.example.com/serves:{serve}_v2"
    deployment = kube_client.get(Deployment, names.child_name(serve, env), namespace=namespace)
    assert deployment.spec.template.spec.containers[0].image == artifact["image_url"]
    took = [op for op in two_builders if f"build job {job} (" in op.log_text()]
    assert len(took) == 1, "both operators took the lease"
    wait_for(lambda: all(op.running for op in two_builders), timeout=1, what="both operators still running")
