"""The API server reports the Kubernetes version it was built as."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlserve_testing.cluster import use_external_cluster

from mlserve.operator.dev.cluster import ClusterHandle

pytestmark = pytest.mark.cluster

VERSIONS = Path(__file__).resolve().parents[2] / "deploy" / "local-cluster" / "versions.json"


def test_version_endpoint_reports_the_release(cluster: ClusterHandle) -> None:
    reported = cluster.version()
    git_version = reported["gitVersion"]

    assert re.fullmatch(r"v1\.\d+\.\d+.*", git_version), reported
    assert git_version.startswith(f"v{reported['major']}.{reported['minor'].rstrip('+')}.")
    if not use_external_cluster():
        assert git_version == json.loads(VERSIONS.read_text())["kubernetes"]
        assert reported["gitTreeState"] == "clean"
