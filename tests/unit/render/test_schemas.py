"""Every rendered object is valid: core kinds strictly against Kubernetes' own schema (unknown
fields fail), RayJob and RayCronJob against the KubeRay v1.7.0 CRDs."""

from __future__ import annotations

import pytest
from mlserve_testing.render_cases import CASES, Case
from mlserve_testing.schemas import OLDEST_K8S_VERSION, RAY_KINDS, validate_core, validate_manifest, validate_ray


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_every_child_is_valid(case: Case) -> None:
    manifests = case.render()
    assert manifests, "a case renders at least one child"
    for manifest in manifests:
        validate_manifest(manifest)


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("api-")], ids=lambda case: case.id)
def test_core_children_valid_on_oldest_supported_kubernetes(case: Case) -> None:
    for manifest in case.render():
        if manifest["kind"] not in RAY_KINDS:
            validate_core(manifest, OLDEST_K8S_VERSION)


def test_strict_validation_rejects_unknown_fields() -> None:
    deployment = CASES[0].render()[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolicyy"):
        validate_core(deployment)


def test_kuberay_validation_rejects_unknown_fields() -> None:
    rayjob = next(case for case in CASES if case.id == "workflow-once").render()[0]
    rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParam"] = {}
    with pytest.raises(AssertionError, match="rayStartParam"):
        validate_ray(rayjob)
