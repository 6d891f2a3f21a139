"""KubeRay's CRD files for the tests: ``$MLSERVE_KUBERAY_CRDS``, else KubeRay's operator module
at the version of ``deploy/local-cluster/versions.json``, downloaded once into Go's module cache
(``mlserve dev kuberay-crds`` prints the same folder)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_KUBERAY_CRDS = "MLSERVE_KUBERAY_CRDS"
#: the KubeRay release the tests use unless MLSERVE_KUBERAY_CRDS says otherwise
KUBERAY_VERSION: str = json.loads((ROOT / "deploy" / "local-cluster" / "versions.json").read_text())["kuberay"]


@functools.cache
def _lookup(explicit: str | None) -> tuple[Path | None, str]:
    from mlserve.operator.dev.cluster import DevClusterError
    from mlserve.operator.dev.cluster import kuberay_crd_dir as fetch

    try:
        return fetch(), ""
    except DevClusterError as exc:
        return None, str(exc)


def kuberay_crd_dir() -> Path:
    """The folder of KubeRay's CRD files; fails the test, saying why, when it can't be had."""
    folder, error = _lookup(os.environ.get(ENV_KUBERAY_CRDS))
    if folder is None:
        pytest.fail(f"KubeRay's CRDs: {error}")
    return folder


def kuberay_release() -> str:
    """What the tests validate against, for messages: the pinned release or the override."""
    explicit = os.environ.get(ENV_KUBERAY_CRDS)
    return f"the KubeRay CRDs in {explicit}" if explicit else f"KubeRay {KUBERAY_VERSION}"
