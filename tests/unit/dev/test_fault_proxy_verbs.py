"""The fault proxy names a request's verb as the API server's authorizer does, so a rule for
"list" never catches a watch nor a get (``mlserve_testing.faultproxy``)."""

from __future__ import annotations

import pytest
from mlserve_testing.faultproxy import Rule, request_verb

NS = "/apis/mlserve.darwin.io/v1alpha1/namespaces/prod/mlserves"


@pytest.mark.parametrize(
    ("method", "path", "query", "verb"),
    [
        ("GET", NS, "", "list"),
        ("GET", NS, "watch=true&resourceVersion=5", "watch"),
        ("GET", NS, "watch=1", "watch"),
        ("GET", f"{NS}/iris", "", "get"),
        ("GET", "/apis/mlserve.darwin.io/v1alpha1/mlserves", "", "list"),
        ("GET", "/api/v1/namespaces", "", "list"),
        ("GET", "/api/v1/namespaces/prod", "", "get"),
        ("GET", "/api/v1/namespaces/prod/configmaps", "", "list"),
        ("POST", NS, "", "create"),
        ("PATCH", f"{NS}/iris", "fieldManager=x", "patch"),
        ("PATCH", f"{NS}/iris/status", "", "patch"),
        ("PUT", f"{NS}/iris", "", "update"),
        ("DELETE", f"{NS}/iris", "", "delete"),
        ("DELETE", NS, "", "deletecollection"),
        ("GET", "/version", "", "get"),
    ],
)
def test_request_verb(method: str, path: str, query: str, verb: str) -> None:
    assert request_verb(method, path, query) == verb


def test_a_rule_acts_on_its_first_requests_only() -> None:
    rule = Rule("status", verb="patch", path=r"/mlserves/[^/]+/status$", status=500, times=2)
    assert not rule.matches("patch", f"{NS}/iris")
    assert not rule.matches("get", f"{NS}/iris/status")
    assert rule.matches("patch", f"{NS}/iris/status")
    rule.hits = 2
    assert not rule.matches("patch", f"{NS}/iris/status")
    assert Rule("any", times=None, hits=100).matches("list", NS)
