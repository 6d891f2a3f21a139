"""The chart's RBAC proven sufficient and minimal at run time, from the API server's audit log.

The operator's end-to-end tests (``tests/cluster/operator``) run ``mlserve run`` as the chart's
ServiceAccount (``mlserve_testing.identity``), installed with the same watch scope and peering as
those tests run the operator. These tests run after them, at the end of the session:

- not one request of that ServiceAccount was refused (sufficient);
- every (group, resource, verb) the chart grants it was used by some request (minimal),
  but the rights the table marks as checked by admission only (no request of their own);
- a short run of a namespaced operator with peering, as the ServiceAccount of a second
  release with Roles only, covers kopf's peering requests and shows that a namespaced
  operator is refused nothing and does not even try the cluster-wide requests the table
  lists as not granted (kopf's scanning is off), so it starts at once.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.generic_resource import create_namespaced_resource
from mlserve_testing.chart import Helm
from mlserve_testing.faults import API_SERVER_STARTS
from mlserve_testing.identity import (
    ENV_IDENTITY,
    OPERATOR_TESTS,
    AuditedRequest,
    ChartIdentity,
    audit_log_of,
    audited_requests,
    install_identity,
    operator_runs_as_chart,
    uninstall_identity,
)
from mlserve_testing.operator import OperatorProcess, operator_env
from mlserve_testing.wait import wait_for

from mlserve.operator import permissions

pytestmark = [pytest.mark.cluster, pytest.mark.rbac_audit]

KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Rights whose code path exists but which no end-to-end test reaches yet, and why. The
#: comparison accepts them as unused, and fails when one of them is used (drop it here).
NOT_REACHED_END_TO_END: dict[tuple[str, str, str], str] = {
    **{
        (group, plural, "delete"): "reconcile.apply prunes a child that is no longer rendered; "
        "no end-to-end test changes a live MLServe so that one of its kinds goes away"
        for group, plural in permissions.child_resources()
    },
    ("ray.io", "rayjobs", "delete"): "as any child's prune, and reconcile.schedule trims a scheduled "
    "workflow's finished RayJobs beyond its history limit and deletes a second RayJob KubeRay's "
    "RayCronJob made for one cron time: its cluster tests run that code in the test process, "
    "not through the operator",
    **{
        (group, plural, "get"): "reconcile.apply reads a new child by name only when an object the "
        "operator did not make holds that name (its watch of the other objects' metadata says so); "
        "the end-to-end test of that holds a Service's and a Deployment's names, "
        "tests/cluster/test_cache.py the read itself"
        for group, plural in permissions.child_resources()
        if plural not in ("services", "deployments", "raycronjobs")
    },
    ("ray.io", "raycronjobs", "create"): "RayCronJobs are rendered only with MLSERVE_RAY_CRON_JOB=true, "
    "which the end-to-end operator does not set",
    ("ray.io", "raycronjobs", "patch"): "as create",
    (
        "ray.io",
        "raycronjobs",
        "get",
    ): "as create (read by name before its first apply when another object holds the name)",
}


@pytest.fixture
def _operator_as_chart() -> None:
    if not operator_runs_as_chart():
        pytest.skip(f"{ENV_IDENTITY}=admin: the operator's tests did not run as the chart's ServiceAccount")


def _warming_up(refusal: AuditedRequest, requests: list[AuditedRequest]) -> bool:
    """The refusal came after the fault tests started the API server again and before the
    first request it allowed since: its authorizer had not filled its RBAC caches yet."""
    return any(
        started <= refusal.at and not any(r.allowed and started <= r.at <= refusal.at for r in requests)
        for started in API_SERVER_STARTS
    )


@pytest.mark.usefixtures("_operator_as_chart")
def test_the_service_account_was_never_refused(
    cluster: object, chart_identity: ChartIdentity, request: pytest.FixtureRequest
) -> None:
    if not request.config.stash.get(OPERATOR_TESTS, 0):
        pytest.skip("the operator's end-to-end tests were not part of this session: no request to check")
    requests = audited_requests(audit_log_of(cluster), chart_identity.username)
    assert requests, f"no request of {chart_identity.username} in the audit log"
    # refused by the authorizer, or by a check inside the request (a create inside an apply);
    # not while an API server the fault tests started again was still filling its RBAC caches
    refused = sorted({(r.verb, r.uri, r.message) for r in requests if not r.allowed and not _warming_up(r, requests)})
    assert not refused, f"the chart's ServiceAccount was refused: {refused}"


@pytest.mark.usefixtures("_operator_as_chart")
def test_every_right_the_chart_grants_was_used(
    cluster: object, chart_identity: ChartIdentity, request: pytest.FixtureRequest
) -> None:
    e2e = request.config.stash.get(OPERATOR_TESTS, 0)
    if not e2e:
        pytest.skip("the operator's end-to-end tests were not part of this session: nothing to compare")
    requests = audited_requests(audit_log_of(cluster), chart_identity.username)
    used = {(r.group, r.resource, r.verb) for r in requests if r.allowed}
    rules = permissions.rules_for(namespaces=chart_identity.namespaces, peering=chart_identity.peering_name is not None)
    granted = set(permissions.expand(r for r in rules if r.audited))
    stale = sorted(set(NOT_REACHED_END_TO_END) & used)
    assert not stale, f"now used end to end, drop them from NOT_REACHED_END_TO_END: {stale}"
    unused = sorted(granted - used - set(NOT_REACHED_END_TO_END))
    assert not unused, (
        f"the chart grants rights no request used in {e2e} end-to-end tests "
        f"({request.session.testsfailed} test(s) failed in this session): {unused}; remove them from "
        "operator/permissions.py and the chart, or add the test that exercises them"
    )
    beyond = sorted(used - set(permissions.expand(rules)))
    assert not beyond, f"requests allowed beyond the table (another binding?): {beyond}"


# With scanning off, nothing is refused and retried: the keep-alive comes within seconds
# (kopf's retries of refused requests took about a minute).
KEEPALIVE_SECONDS = 30.0


def test_namespaced_operator_with_peering_as_the_charts_service_account(
    cluster: object, kube_client: Client, chart_helm: Helm, mlserve_crd: None, namespace: str, tmp_path: Path
) -> None:
    identity = install_identity(
        chart_helm,
        cluster,
        kube_client,
        tmp_path,
        release="mlserve-peering",
        namespace=namespace,
        namespaces=[namespace],
        peering=True,
    )
    assert identity.peering_name is not None
    try:
        port = _free_port()
        env = operator_env(
            identity.kubeconfig,
            f"sqlite://{tmp_path / 'peering.sqlite3'}",
            port,
            MLSERVE_NAMESPACES=namespace,
            MLSERVE_PEERING_NAME=identity.peering_name,
            POD_ID="peering-check",
        )
        process = OperatorProcess(env, tmp_path / "operator.log", port)
        process.start()
        try:
            wait_for(
                lambda: (
                    "peering-check"
                    in (kube_client.get(KopfPeering, identity.peering_name, namespace=namespace).status or {})
                ),
                timeout=KEEPALIVE_SECONDS,
                what=f"the operator's keep-alive in KopfPeering {namespace}/{identity.peering_name} (log: {process.log_path})",
            )
        finally:
            process.stop()
    finally:
        uninstall_identity(chart_helm, cluster, identity)

    requests = audited_requests(audit_log_of(cluster), identity.username)
    refused = {(r.group, r.resource, r.verb) for r in requests if not r.allowed}
    assert not refused, f"a namespaced operator was refused: {sorted(refused)}"
    not_granted = set(permissions.expand(permissions.REFUSED_WHEN_NAMESPACED))
    tried = {(r.group, r.resource, r.verb) for r in requests} & not_granted
    assert not tried, f"kopf's scanning still sends: {sorted(tried)}"
    used = {(r.group, r.resource, r.verb) for r in requests if r.allowed}
    peering = {("kopf.dev", "kopfpeerings", verb) for verb in ("list", "watch", "patch")}
    assert peering <= used, f"peering requests not seen: {sorted(peering - used)}"
    assert all(r.namespace == namespace for r in requests if r.allowed), "a namespaced operator left its namespace"
