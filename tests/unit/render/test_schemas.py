"""Every rendered object is valid: core kinds strictly against Kubernetes' own schema (unknown
fields fail), RayJob and RayCronJob against KubeRay's CRDs (see render/schemas.py)."""

from __future__ import annotations

import pytest
from mlserve_testing.render_cases import CASES, CASES_BY_ID, Case
from mlserve_testing.schemas import (
    KUBERAY_ADDED,
    OLDEST_K8S_VERSION,
    RAY_KINDS,
    kuberay_dir,
    validate_core,
    validate_manifest,
    validate_ray,
    version_schema,
)


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


def test_raycronjob_without_time_zone_fits_the_pinned_kuberay_as_it_is() -> None:
    """With ``MLSERVE_SCHEDULE_TIME_ZONE=none`` a RayCronJob uses no field KubeRay added after
    v1.6.1: valid against the pinned release's schema without ``KUBERAY_ADDED``."""
    manifests = CASES_BY_ID["workflow-raycronjob-long-names"].render()
    cron_job = next(m for m in manifests if m["kind"] == "RayCronJob")
    assert "timeZone" not in cron_job["spec"]
    validate_ray(cron_job, exact=True)


def test_added_kuberay_fields_are_as_the_newer_release_declares_them() -> None:
    """Each field of ``KUBERAY_ADDED`` is absent from the CRDs, or declared there as we add it
    (run with ``MLSERVE_KUBERAY_CRDS`` set to a newer release's CRDs to compare)."""
    for kind, fields in KUBERAY_ADDED.items():
        schema = version_schema(kuberay_dir() / RAY_KINDS[kind], "v1")
        for path, name, added in fields:
            node = schema
            for key in path:
                node = node["properties"][key]
            declared = node["properties"].get(name)
            assert declared is None or declared == added, f"{kind} {'.'.join(path)}.{name}: {declared}"
