"""The pending-undeploy ConfigMap's write refused, while a deletion needs it.

A deletion with the database down lets the MLServe go after MLSERVE_DELETION_DB_TIMEOUT and
keeps the skipped undeploy in the pending list, written to the ConfigMap. Here that write is
refused, three ways:

- ``500``: the fault proxy answers every write of the ConfigMap with a 500;
- ``rbac``: the operator's identity may read the ConfigMap but not write it (a Role of its
  own namespace grants ``get`` only; everything else as the chart grants it);
- ``oversized``: the ConfigMap already holds nearly 1 MiB (unreadable entries a person has
  not cleared yet, which the operator keeps aside), so the API server refuses the write that
  adds the undeploy (more than 1 MiB).

Each time: the operator keeps running, the MLServe goes, and once the database is back the
deployment is ENDED (from the list in memory), the deleted pair is not brought back, no row
lost, none duplicated. (A malformed ConfigMap is ``test_operator_bad_input.py``.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import ConfigMap, Namespace, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding, Role, RoleBinding
from mlserve_testing import darwin
from mlserve_testing.faultproxy import Rule
from mlserve_testing.faults import Ledger, ProxiedOperator, proxied_operator, record
from mlserve_testing.mlserves import MLServe, apply, gone, mlserve, unique, wait_condition
from mlserve_testing.operator import StoppableMariaDB
from mlserve_testing.wait import async_wait_for, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

CONFIGMAP = "mlserve-operator-pending"
LIMIT = 1024 * 1024
"""The API server's limit on a ConfigMap's data (bytes of its values)."""
SHORT = 40
CAUSES = {"500": "500 Internal Server Error", "rbac": "forbidden", "oversized": "Too long"}
"""What the operator's log line says of each refusal."""


def _cleanup_configmap(client: Client, namespace: str) -> None:
    try:
        client.delete(ConfigMap, CONFIGMAP, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


def _read_only_identity(client: Client, chart: Any) -> tuple[str, str]:
    """A ServiceAccount with the chart's cluster-wide rights, in a namespace of its own where
    it may read the pending ConfigMap and post Events, not write the ConfigMap: (token, namespace)."""
    own = f"op-readonly-{uuid.uuid4().hex[:6]}"
    account = "mlserve-readonly-pending"
    client.create(Namespace(metadata=ObjectMeta(name=own)))
    client.create(ServiceAccount(metadata=ObjectMeta(name=account, namespace=own)))
    chart_account = chart.username.rsplit(":", 1)[-1]
    subject = Subject(kind="ServiceAccount", name=account, namespace=own)
    for binding in client.list(ClusterRoleBinding):
        if any(s.kind == "ServiceAccount" and s.name == chart_account for s in binding.subjects or []):
            client.create(
                ClusterRoleBinding(
                    metadata=ObjectMeta(name=f"{own}-{binding.metadata.name}"[:63]),
                    roleRef=binding.roleRef,
                    subjects=[subject],
                )
            )
    client.create(
        Role(
            metadata=ObjectMeta(name="pending-read-only", namespace=own),
            rules=[
                PolicyRule(apiGroups=[""], resources=["configmaps"], resourceNames=[CONFIGMAP], verbs=["get"]),
                PolicyRule(apiGroups=["", "events.k8s.io"], resources=["events"], verbs=["create", "patch"]),
            ],
        )
    )
    client.create(
        RoleBinding(
            metadata=ObjectMeta(name="pending-read-only", namespace=own),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="pending-read-only"),
            subjects=[subject],
        )
    )
    from lightkube.models.authentication_v1 import TokenRequestSpec

    token = client.create(
        ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=3600)),
        account,
        namespace=own,
    ).status.token
    return str(token), own


@pytest.fixture(params=["500", "rbac", "oversized"])
def refusal(request: pytest.FixtureRequest) -> str:
    from mlserve_testing.identity import operator_runs_as_chart

    if request.param == "rbac" and not operator_runs_as_chart():
        pytest.skip("MLSERVE_TEST_OPERATOR_IDENTITY=admin: the RBAC refusal needs the chart's identity")
    return str(request.param)


@pytest.fixture
def proxied(
    cluster: Any,
    kube_client: Client,
    mlserve_crd: None,
    operator_mariadb: StoppableMariaDB,
    namespace: str,
    refusal: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[ProxiedOperator]:
    gen = proxied_operator(
        cluster,
        kube_client,
        request,
        operator_mariadb.url,
        tmp_path,
        [namespace],
        name=f"pending-{refusal}",
        MLSERVE_PENDING_CONFIGMAP=CONFIGMAP,
    )
    running = next(gen)
    own_namespace = running.own_namespace
    if refusal == "rbac":
        token, own_namespace = _read_only_identity(kube_client, request.getfixturevalue("chart_identity"))
        running.proxy.kubeconfig(token, Path(running.operator.env["KUBECONFIG"]))
        running.operator.env["MLSERVE_OPERATOR_NAMESPACE"] = own_namespace
        running = ProxiedOperator(running.proxy, running.operator, own_namespace)
    _cleanup_configmap(kube_client, own_namespace)
    try:
        yield running
    finally:
        for _ in gen:  # the operator stopped first: it would write its list (and what it keeps aside) again
            pass
        _cleanup_configmap(kube_client, own_namespace)
        if refusal == "rbac":
            kube_client.delete(Namespace, own_namespace)


def _near_the_limit(client: Client, namespace: str) -> int:
    """The ConfigMap with unreadable entries kept aside, SHORT bytes short of the limit (less
    than any one pending entry takes)."""
    item = "x" * 1000
    entries = [item] * ((LIMIT - SHORT) // (len(item) + 4))
    text = json.dumps(entries)
    text = json.dumps([*entries, "y" * max(0, LIMIT - SHORT - len(text) - 4)])
    client.create(ConfigMap(metadata=ObjectMeta(name=CONFIGMAP, namespace=namespace), data={"malformed.json": text}))
    return len(text)


async def test_a_refused_pending_write_loses_no_undeploy(
    proxied: ProxiedOperator,
    operator_mariadb: StoppableMariaDB,
    darwin_rows: StoppableMariaDB,
    kube_client: Client,
    namespace: str,
    refusal: str,
) -> None:
    proxy, operator, own = proxied.proxy, proxied.operator, proxied.own_namespace
    rule = None
    if refusal == "oversized":
        size = _near_the_limit(kube_client, own)
        assert size <= LIMIT
    operator.start()
    serve, env = unique("pend"), unique("prod")
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=("v1",), min_replicas=1, max_replicas=1)
    pair = Ledger(seed, serve, env, namespace)
    pair.expected_new = ["v1"]
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    wait_condition(kube_client, serve, namespace, "Ready", timeout=90)
    await pair.snapshot()
    pair.expected_new = []  # recorded before the fault: the deletion asks for nothing new
    if refusal == "500":
        rule = proxy.add(
            Rule("pending-write-500", verb="patch", path=rf"/configmaps/{CONFIGMAP}$", status=500, times=None)
        )
    refused_before = operator.log_text().count("could not keep the pending undeploys")

    operator_mariadb.stop()
    try:
        kube_client.delete(MLServe, serve, namespace=namespace)
        # MLSERVE_DELETION_DB_TIMEOUT is 8 s in the tests' settings.
        wait_for(lambda: gone(kube_client, MLServe, serve, namespace), timeout=60, what="the MLServe deleted")
        wait_for(
            lambda: operator.log_text().count("could not keep the pending undeploys") > refused_before,
            timeout=30,
            what="the pending list's write refused",
        )
        assert operator.running
        refused = [line for line in operator.log_text().splitlines() if "could not keep the pending undeploys" in line]
        assert CAUSES[refusal] in refused[-1], refused[-1]
    finally:
        operator_mariadb.start()
    restarted = time.monotonic()
    injected = (rule.hits if rule is not None else 0) or 1

    async def ended() -> bool:
        rows = await pair.rows()
        return bool(rows) and all(r["status"] == "ENDED" for r in rows) and not await pair.pointers()

    await async_wait_for(ended, timeout=60, what="the deployment ENDED from the list in memory", ignore=(Exception,))
    took = time.monotonic() - restarted
    await pair.converge(kube_client, 30)
    name = f"{serve}-{env}"
    log = operator.log_text()
    assert f"created MLServe {namespace}/{name}" not in log, "the deleted pair came back"
    if rule is not None:
        proxy.remove(rule)
    lost, duplicates, notes = await pair.lost_and_duplicated(kube_client)
    record(
        f"pending ConfigMap write refused ({refusal})",
        injected,
        survived=operator.running and not lost and not duplicates,
        rows_lost=lost,
        duplicates=duplicates,
        converge_seconds=took,
        note="; ".join(notes),
    )
    assert operator.running
    assert (lost, duplicates) == (0, 0), notes
