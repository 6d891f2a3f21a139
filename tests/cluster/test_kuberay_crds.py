"""The KubeRay CRDs install on the cluster, and the API server validates RayJobs against them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from mlserve_testing.kuberay import kuberay_crd_dir, kuberay_release
from mlserve_testing.wait import wait_for

pytestmark = pytest.mark.cluster

CRD_FILES = ("ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml", "ray.io_rayservices.yaml")
FIELD_MANAGER = "mlserve-tests"

# the CRD files are large (1.4 MB for RayJob): parse them with libyaml when it is there
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

RayJob = create_namespaced_resource("ray.io", "v1", "RayJob", "rayjobs")


def _crd_folder() -> Path:
    folder = kuberay_crd_dir()
    missing = [name for name in CRD_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"KubeRay CRDs missing from {folder}: {', '.join(missing)} ({kuberay_release()})")
    return folder


def _established(crd: CustomResourceDefinition) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="module")
def kuberay_crds(kube_client: Client) -> Iterator[list[str]]:
    folder = _crd_folder()
    names = []
    for filename in CRD_FILES:
        with (folder / filename).open() as stream:
            documents = [d for d in yaml.load_all(stream, Loader=_YAML_LOADER) if d]
        for document in documents:
            crd = codecs.from_dict(document)
            assert isinstance(crd, CustomResourceDefinition)
            # server-side apply: these CRDs are too large for client-side apply's annotation
            kube_client.apply(crd, field_manager=FIELD_MANAGER, force=True)
            names.append(crd.metadata.name)
    for name in names:
        wait_for(
            lambda name=name: _established(kube_client.get(CustomResourceDefinition, name)),
            60,
            f"CRD {name} to be Established",
        )
    yield names


def _ray_job(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": spec,
    }


VALID_SPEC: dict[str, object] = {
    "entrypoint": "python -c 'print(1)'",
    "shutdownAfterJobFinishes": True,
    "rayClusterSpec": {
        "rayVersion": "2.9.0",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.9.0"}]}},
        },
    },
}


def test_kuberay_crds_are_established(kube_client: Client, kuberay_crds: list[str]) -> None:
    assert set(kuberay_crds) == {"rayjobs.ray.io", "raycronjobs.ray.io", "rayservices.ray.io"}
    for name in kuberay_crds:
        assert _established(kube_client.get(CustomResourceDefinition, name))


def test_valid_rayjob_is_accepted(kube_client: Client, kuberay_crds: list[str], namespace: str) -> None:
    created = kube_client.create(codecs.from_dict(_ray_job("valid", **VALID_SPEC)), namespace=namespace)

    stored = kube_client.get(RayJob, "valid", namespace=namespace)
    assert stored.metadata.uid == created.metadata.uid
    assert stored["spec"]["entrypoint"] == VALID_SPEC["entrypoint"]
    assert stored["spec"]["submissionMode"] == "K8sJobMode"  # a default from the schema


def test_rayjob_violating_the_schema_is_rejected(kube_client: Client, kuberay_crds: list[str], namespace: str) -> None:
    invalid = _ray_job(
        "invalid",
        entrypoint="python job.py",
        shutdownAfterJobFinishes="yes",  # must be a boolean
        rayClusterSpec={"rayVersion": "2.9.0"},  # headGroupSpec is required
    )

    with pytest.raises(ApiError) as rejected:
        kube_client.create(codecs.from_dict(invalid), namespace=namespace)

    assert rejected.value.status.code == 422
    message = rejected.value.status.message or ""
    assert "spec.shutdownAfterJobFinishes" in message
    assert "spec.rayClusterSpec.headGroupSpec" in message
