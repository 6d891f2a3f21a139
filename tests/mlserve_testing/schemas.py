"""Offline schema checks: core objects against a pinned Kubernetes version (strict), KubeRay
objects against KubeRay's CRDs, MLServes against our own CRD.

KubeRay's CRDs come from its Go module at the release pinned in
``deploy/local-cluster/versions.json`` (``mlserve_testing.kuberay``); ``MLSERVE_KUBERAY_CRDS``
overrides their folder. ``MLSERVE_K8S_SCHEMA_VERSION`` sets the Kubernetes version (default:
the local cluster's, 1.37).

The renderers follow KubeRay v1.7.0; the pinned release is v1.6.1, the newest the Go module
proxy serves. Of what we render, v1.6.1 lacks only the RayCronJob's ``spec.timeZone`` (new in
v1.7.0; with older releases the operator needs ``MLSERVE_SCHEDULE_TIME_ZONE=none``). So a
schema without a field of ``KUBERAY_ADDED`` gets it, as v1.7.0 declares it; ``exact=True``
validates against the schema as it is.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlserve_testing.kuberay import kuberay_crd_dir, kuberay_release

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = os.environ.get("MLSERVE_K8S_SCHEMA_VERSION", "1.37")
# The oldest Kubernetes the chart supports (its kubeVersion); core children must be valid there too.
OLDEST_K8S_VERSION = "1.25"
MLSERVE_CRD = ROOT / "crds" / "mlserve.darwin.io_mlserves.yaml"

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

RAY_KINDS = {"RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}
RAYJOB_NAME_MAX = 47
RAYCRONJOB_NAME_MAX = 41

#: fields we render that KubeRay added after v1.6.1: kind -> (path of the object that holds
#: the field, the field, its schema in the release that added it)
KUBERAY_ADDED: dict[str, list[tuple[tuple[str, ...], str, dict[str, Any]]]] = {
    "RayCronJob": [(("spec",), "timeZone", {"type": "string", "minLength": 1})],  # v1.7.0
}


def kuberay_dir() -> Path:
    return kuberay_crd_dir()


def _with_added_fields(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    for path, name, field_schema in KUBERAY_ADDED.get(kind, []):
        node = schema
        for key in path:
            node = node["properties"][key]
        node["properties"].setdefault(name, field_schema)
    return schema


def version_schema(crd_path: Path, version: str) -> dict[str, Any]:
    if not crd_path.is_file():
        pytest.fail(f"CRD file {crd_path} is missing")
    crd = yaml.safe_load(crd_path.read_text())
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    pytest.fail(f"{crd_path.name} has no version {version}")


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected, as the API server would prune them.

    An object with ``properties`` and neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@functools.cache
def _validator(crd_path: Path, version: str, added_for: str | None = None) -> jsonschema.Validator:
    schema = copy.deepcopy(version_schema(crd_path, version))
    if added_for is not None:
        schema = _with_added_fields(schema, added_for)
    schema = strict(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def crd_errors(obj: dict[str, Any], crd_path: Path, version: str, added_for: str | None = None) -> list[str]:
    validator = _validator(crd_path, version, added_for)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def mlserve_errors(obj: dict[str, Any]) -> list[str]:
    """Errors of an MLServe against our CRD's schema (CEL rules excluded: they need a server)."""
    return crd_errors(obj, MLSERVE_CRD, "v1alpha1")


def validate_ray(obj: dict[str, Any], *, exact: bool = False) -> None:
    """Valid against KubeRay's CRD, with the fields of ``KUBERAY_ADDED`` unless ``exact``."""
    kind = obj["kind"]
    errors = crd_errors(obj, kuberay_dir() / RAY_KINDS[kind], "v1", None if exact else kind)
    assert not errors, f"{kind} {obj['metadata']['name']} breaks the schema of {kuberay_release()}: {errors}"
    name = obj["metadata"]["name"]
    limit = RAYJOB_NAME_MAX if kind == "RayJob" else RAYCRONJOB_NAME_MAX
    assert len(name) <= limit and DNS1035_LABEL.match(name), f"{kind} name {name!r} breaks KubeRay's rule"


def validate_core(obj: dict[str, Any], version: str = K8S_VERSION) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{obj['kind']} {obj['metadata']['name']} is invalid for Kubernetes {version} at {path}: {exc.message}"
        ) from None


def validate_manifest(obj: dict[str, Any]) -> None:
    """Validate any rendered object, and the metadata rules every child shares."""
    metadata = obj["metadata"]
    assert len(metadata["name"]) <= 63 and DNS1035_LABEL.match(metadata["name"]), metadata["name"]
    assert DNS1123_LABEL.match(metadata["namespace"]), metadata["namespace"]
    for key, value in metadata.get("labels", {}).items():
        assert len(value) <= 63 and LABEL_VALUE.match(value), f"label {key}={value!r}"
    if obj["kind"] in RAY_KINDS:
        validate_ray(obj)
    else:
        validate_core(obj)
