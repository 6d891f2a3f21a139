"""Test support of the chart's tests: the project's helm, and rendering the chart with a value set.

Also a pytest plugin: the session's ``helm`` fixture, for the offline chart tests
(``tests/helm``) and the installs on the control plane (``tests/e2e``).

helm comes from the project's own build (``deploy/local-cluster/build.py helm``, the same
as ``mlserve dev build --with-helm``): built from the Go module proxy into the binary
cache on first use, reused afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlserve.operator.dev.cluster import names
from mlserve.operator.dev.cluster.build import binary_dir, local_cluster_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mlserve-operator"
VALUES_DIR = ROOT / "tests" / "helm" / "values"
RELEASE = "mlserve"
RELEASE_NAMESPACE = "mlserve-system"

#: the value sets every offline test renders: "default" is the chart's own values.yaml
VALUE_SETS = ["default", *sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))]


def kubernetes_version() -> str:
    """The local control plane's Kubernetes version, for helm's capabilities (vMAJOR.MINOR.PATCH)."""
    versions = json.loads((ROOT / "deploy" / "local-cluster" / "versions.json").read_text())
    return str(versions["kubernetes"])


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["--values", str(VALUES_DIR / f"{value_set}.yaml")]


@dataclass(frozen=True)
class Helm:
    """The project's helm binary, run without touching the user's helm settings."""

    binary: Path
    home: Path

    def run(self, *args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        result = subprocess.run(
            [str(self.binary), *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout[-2000:]}"
            )
        return result

    def render(self, *args: str, value_set: str = "default", check: bool = True) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart as the release, for the local cluster's Kubernetes version."""
        return self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--kube-version",
            kubernetes_version(),
            *values_args(value_set),
            *args,
            check=check,
        )

    def template(self, *args: str, value_set: str = "default") -> list[dict[str, Any]]:
        """The chart rendered offline, as a list of objects (empty documents dropped)."""
        return [doc for doc in yaml.safe_load_all(self.render(*args, value_set=value_set).stdout) if doc]


def project_helm() -> Path:
    """helm from the project's binary cache, built there when missing or built with other
    flags (the build compares its stamp and returns in a second when it matches)."""
    helm = binary_dir() / names.HELM
    build = local_cluster_dir() / "build.py"
    if shutil.which("go") is not None or not os.access(helm, os.X_OK):
        result = subprocess.run([sys.executable, str(build), "helm"], stdout=subprocess.PIPE, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"building helm with {build} failed (exit {result.returncode}); its output above says why")
        helm = Path(result.stdout.strip().splitlines()[-1]) / names.HELM
    if not os.access(helm, os.X_OK):
        pytest.fail(f"the project's build left no helm at {helm}")
    return helm


def objects_of(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects_of(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def load_values(value_set: str) -> dict[str, Any]:
    """The chart's defaults merged with a value set, as helm merges them (maps deep, the rest replaced)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if value_set != "default":
        values = merge(values, yaml.safe_load((VALUES_DIR / f"{value_set}.yaml").read_text()))
    return values


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The project's helm, with its own empty home (the user's helm settings stay untouched)."""
    return Helm(project_helm(), tmp_path_factory.mktemp("helm-home"))
