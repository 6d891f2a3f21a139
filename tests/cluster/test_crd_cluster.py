"""The MLServe CRD on a real API server: it installs (structural, CEL within its cost
budget), the examples are accepted, and every invalid MLServe of the table is rejected with
the message a user needs, CEL rules included. Also the rendered children of every render
case are accepted by the server (dry run)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from mlserve_testing.invalid_mlserves import INVALID, Invalid
from mlserve_testing.render_cases import CASES, Case
from mlserve_testing.schemas import MLSERVE_CRD, RAY_KINDS, ROOT, kuberay_dir
from mlserve_testing.wait import wait_for

pytestmark = pytest.mark.cluster

FIELD_MANAGER = "mlserve-tests"
MLServe = create_namespaced_resource("mlserve.darwin.io", "v1alpha1", "MLServe", "mlserves")
# Registered so that codecs.from_dict knows the KubeRay kinds the renderers produce.
RAY_RESOURCES = [create_namespaced_resource("ray.io", "v1", kind, kind.lower() + "s") for kind in RAY_KINDS]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _established(client: Client, name: str) -> bool:
    crd = client.get(CustomResourceDefinition, name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _install(client: Client, text: str) -> list[str]:
    names = []
    for crd in codecs.load_all_yaml(text):
        client.apply(crd, field_manager=FIELD_MANAGER, force=True)
        names.append(crd.metadata.name)
    for name in names:
        wait_for(lambda name=name: _established(client, name), 60, f"CRD {name} to be Established")
    return names


@pytest.fixture(scope="module")
def mlserve_crd(kube_client: Client) -> Iterator[str]:
    (name,) = _install(kube_client, MLSERVE_CRD.read_text())
    yield name


@pytest.fixture(scope="module")
def kuberay_crds(kube_client: Client) -> Iterator[None]:
    for filename in sorted(set(RAY_KINDS.values())):
        _install(kube_client, (kuberay_dir() / filename).read_text())
    yield


def _in(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body.setdefault("metadata", {})["namespace"] = namespace
    return body


def test_crd_is_established(kube_client: Client, mlserve_crd: str) -> None:
    assert mlserve_crd == "mlserves.mlserve.darwin.io"
    assert _established(kube_client, mlserve_crd)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(kube_client: Client, mlserve_crd: str, namespace: str, example: Any) -> None:
    body = _in(namespace, yaml.safe_load(example.read_text()))
    kube_client.create(MLServe.from_dict(body), namespace=namespace, dry_run=True)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_mlserve_is_rejected(kube_client: Client, mlserve_crd: str, namespace: str, case: Invalid) -> None:
    body = _in(namespace, case.body)
    with pytest.raises(ApiError) as info:
        if case.before is None:
            kube_client.create(MLServe.from_dict(body), namespace=namespace, dry_run=True)
        else:
            created = kube_client.create(MLServe.from_dict(_in(namespace, case.before)), namespace=namespace)
            body["metadata"]["resourceVersion"] = created.metadata.resourceVersion
            kube_client.replace(MLServe.from_dict(body), namespace=namespace)
    message = info.value.status.message or ""
    assert info.value.status.code == 422, message
    assert case.fragment in message, f"{case.id}: the API server said {message!r}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rendered_children_are_accepted(kube_client: Client, kuberay_crds: None, namespace: str, case: Case) -> None:
    for manifest in case.render():
        obj = codecs.from_dict(_in(namespace, manifest))
        kube_client.create(obj, namespace=namespace, dry_run=True)
