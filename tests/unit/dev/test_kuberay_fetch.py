"""KubeRay's CRDs come from KubeRay's Go module at the pinned version, fetched into Go's module
cache; ``MLSERVE_KUBERAY_CRDS`` overrides the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlserve.operator.dev.cluster import DevClusterError, kuberay_crd_dir

VERSIONS = Path(__file__).resolve().parents[3] / "deploy" / "local-cluster" / "versions.json"


def test_the_pinned_module_gives_the_crds_of_every_kuberay_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSERVE_KUBERAY_CRDS", raising=False)
    folder = kuberay_crd_dir()
    version = json.loads(VERSIONS.read_text())["kuberay"]
    # Go's module cache: <GOMODCACHE>/github.com/ray-project/kuberay/ray-operator@<version>/config/crd/bases
    module = folder.parents[2]
    assert module.name == f"ray-operator@{version}"
    assert folder.relative_to(module) == Path("config", "crd", "bases")
    assert {p.name for p in folder.glob("ray.io_*.yaml")} >= {
        "ray.io_rayjobs.yaml",
        "ray.io_raycronjobs.yaml",
        "ray.io_rayclusters.yaml",
        "ray.io_rayservices.yaml",
    }


def test_the_variable_overrides_the_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml"):
        (tmp_path / name).write_text("{}\n")
    monkeypatch.setenv("MLSERVE_KUBERAY_CRDS", str(tmp_path))
    assert kuberay_crd_dir() == tmp_path


def test_a_folder_without_the_crds_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "ray.io_rayjobs.yaml").write_text("{}\n")
    monkeypatch.setenv("MLSERVE_KUBERAY_CRDS", str(tmp_path))
    with pytest.raises(DevClusterError, match="ray.io_raycronjobs.yaml"):
        kuberay_crd_dir()
