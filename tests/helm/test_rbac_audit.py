"""The chart's RBAC proven sufficient and minimal at run time, from the API server's audit log.

The operator's end-to-end tests (``tests/operator``) run ``mlserve run`` as the chart's
ServiceAccount (``helm.identity``); these tests run after them, at the end of the session:

- a short run with peering on, as the same ServiceAccount, covers kopf's peering requests
  (the end-to-end operator runs standalone, as one replica does);
- not one request of the ServiceAccount was refused (sufficient);
- every (group, resource, verb) the chart grants was used by some request (minimal), but
  the rights the table marks as checked by admission only (no request of their own).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.generic_resource import create_global_resource

from helm.identity import (
    ENV_IDENTITY,
    OPERATOR_TESTS,
    ChartIdentity,
    audit_log_of,
    audited_requests,
    operator_runs_as_chart,
)
from mlserve.operator import permissions
from mlserve_testing.operator import OperatorProcess, operator_env
from mlserve_testing.wait import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.rbac_audit]

ClusterKopfPeering = create_global_resource("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings")


@pytest.fixture(autouse=True)
def _operator_as_chart() -> None:
    if not operator_runs_as_chart():
        pytest.skip(f"{ENV_IDENTITY}=admin: the operator's tests did not run as the chart's ServiceAccount")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_peering_works_as_the_chart_service_account(
    cluster: object, chart_identity: ChartIdentity, kube_client: Client, tmp_path: Path
) -> None:
    folder = tmp_path
    port = _free_port()
    env = operator_env(
        chart_identity.kubeconfig,
        f"sqlite://{folder / 'peering.sqlite3'}",
        port,
        MLSERVE_PEERING_NAME=chart_identity.peering_name,
        POD_ID="peering-check",
    )
    process = OperatorProcess(env, folder / "operator.log", port)
    process.start()
    try:
        wait_for(
            lambda: "peering-check" in (kube_client.get(ClusterKopfPeering, chart_identity.peering_name).status or {}),
            timeout=30,
            what=f"the operator's keep-alive in ClusterKopfPeering {chart_identity.peering_name} (log: {process.log_path})",
        )
    finally:
        process.stop()
    assert f'User "{chart_identity.username}" cannot' not in process.log_text(), process.log_tail()


def test_the_service_account_was_never_refused(cluster: object, chart_identity: ChartIdentity) -> None:
    requests = audited_requests(audit_log_of(cluster), chart_identity.username)
    assert requests, f"no request of {chart_identity.username} in the audit log"
    # refused by the authorizer, or by a check inside the request (a create inside an apply)
    refused = sorted({(r.verb, r.uri, r.message) for r in requests if not r.allowed})
    assert not refused, f"the chart's ServiceAccount was refused: {refused}"


def test_every_right_the_chart_grants_was_used(
    cluster: object, chart_identity: ChartIdentity, request: pytest.FixtureRequest
) -> None:
    e2e = request.config.stash.get(OPERATOR_TESTS, 0)
    if not e2e:
        pytest.skip("the operator's end-to-end tests were not part of this session: nothing to compare")
    requests = audited_requests(audit_log_of(cluster), chart_identity.username)
    used = {(r.group, r.resource, r.verb) for r in requests if r.allowed}
    rules = permissions.rules_for(clusterwide=True, peering=True)
    granted = set(permissions.expand(r for r in rules if r.audited))
    unused = sorted(granted - used)
    assert not unused, (
        f"the chart grants rights no request used in {e2e} end-to-end tests "
        f"({request.session.testsfailed} test(s) failed in this session): {unused}; remove them from "
        "operator/permissions.py and the chart, or add the test that exercises them"
    )
    beyond = sorted(used - set(permissions.expand(rules)))
    assert not beyond, f"requests allowed beyond the table (another binding?): {beyond}"
