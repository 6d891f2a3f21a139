"""The verbs the API request metric gives each request, and the MLServes-by-phase gauge."""

from __future__ import annotations

import httpx2
import pytest
from prometheus_client import REGISTRY

from mlserve.operator import metrics


@pytest.mark.parametrize(
    ("method", "url", "verb"),
    [
        ("GET", "/api/v1/namespaces/ns/configmaps", "list"),
        ("GET", "/api/v1/namespaces/ns/configmaps/pending", "get"),
        ("GET", "/apis/apps/v1/namespaces/ns/deployments?watch=true", "watch"),
        ("GET", "/apis/apps/v1/namespaces/ns/deployments/fraud-prod", "get"),
        ("GET", "/apis/mlserve.darwin.io/v1alpha1/mlserves", "list"),
        ("GET", "/apis/mlserve.darwin.io/v1alpha1/namespaces/ns/mlserves/fraud/status", "get"),
        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/fraud-prod", "patch"),
        ("POST", "/apis/mlserve.darwin.io/v1alpha1/namespaces/ns/mlserves", "create"),
        ("DELETE", "/api/v1/namespaces/ns/services/fraud-prod", "delete"),
    ],
)
def test_a_request_is_counted_by_its_verb(method: str, url: str, verb: str) -> None:
    assert metrics._verb(httpx2.Request(method, "https://kube" + url)) == verb


def test_mlserves_are_counted_by_their_last_phase() -> None:
    def count(phase: str) -> float:
        return REGISTRY.get_sample_value("mlserve_operator_mlserves", {"phase": phase}) or 0.0

    before = count("Ready")
    metrics.record_phase("uid-1", "Deploying")
    metrics.record_phase("uid-1", "Ready")
    metrics.record_phase("uid-2", "Ready")
    assert count("Ready") == before + 2
    metrics.forget_mlserve("uid-1")
    metrics.forget_mlserve("uid-2")
    assert count("Ready") == before
