"""Pytest plugin and helpers of the fault suite (``tests/cluster/operator/test_faults_*.py``).

- :class:`Ledger`: what a pair's rows and cluster objects must be after a fault. It reads the
  ``deployments`` and ``active_deployments`` rows, the MLServes and the Deployment, checks the
  sync protocol's invariants with the history test's checker
  (:func:`mlserve_testing.history.pair_violations`) and counts rows lost (a deployment seen
  before the fault gone, an ENDED one ACTIVE again, a request that never got its row) and
  duplicates (a request recorded twice, a deployment nobody asked for, two ACTIVE rows, two
  MLServes or two Deployments for the pair).
- :func:`record`: one line of figures per fault (injected, survived, rows lost, duplicates,
  seconds to converge), printed in pytest's terminal summary as the "fault suite" table.
- ``--kill-matrix``: ``sample`` (default, CI) or ``all`` points of the SIGKILL matrix
  (``MLSERVE_TEST_KILL_MATRIX`` sets the default).
- :func:`proxied_operator`: ``mlserve run`` reaching the API server through a
  :class:`~mlserve_testing.faultproxy.FaultProxy`, as the chart's ServiceAccount (or, with
  ``MLSERVE_TEST_OPERATOR_IDENTITY=admin``, a ServiceAccount bound to cluster-admin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from mlserve.operator.render import names
from mlserve.operator.spec.api import LABEL_ENVIRONMENT, LABEL_SERVE
from mlserve_testing import darwin
from mlserve_testing.faultproxy import FaultProxy
from mlserve_testing.history import Violation, pair_violations
from mlserve_testing.mlserves import MLServe, get, unique
from mlserve_testing.operator import OperatorProcess, _free_port, operator_env
from mlserve_testing.wait import WaitTimeout, async_wait_for

ENV_KILL_MATRIX = "MLSERVE_TEST_KILL_MATRIX"
ADMIN_ACCOUNT = ("mlserve-fault-tests", "default")


# --- figures -----------------------------------------------------------------------------------


API_SERVER_STARTS: list[float] = []
"""When this session's fault tests started the API server again (seconds since the epoch). A
starting API server refuses every request until its authorizer's RBAC caches are filled: the
RBAC audit leaves out a ServiceAccount's refusals from such a start until its first request
allowed after it."""


@dataclass
class Figure:
    fault: str
    injected: int
    survived: bool
    rows_lost: int
    duplicates: int
    converge_seconds: float | None
    note: str = ""


_figures: list[Figure] = []


def record(
    fault: str,
    injected: int,
    *,
    survived: bool,
    rows_lost: int = 0,
    duplicates: int = 0,
    converge_seconds: float | None = None,
    note: str = "",
) -> Figure:
    figure = Figure(fault, injected, survived, rows_lost, duplicates, converge_seconds, note)
    _figures.append(figure)
    took = f"{converge_seconds:.1f} s" if converge_seconds is not None else "-"
    print(
        f"fault {fault}: injected {injected}, survived {'yes' if survived else 'NO'}, rows lost {rows_lost}, "
        f"duplicates {duplicates}, converged in {took}{f' ({note})' if note else ''}"
    )
    return figure


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kill-matrix",
        choices=("sample", "all"),
        default=os.environ.get(ENV_KILL_MATRIX, "sample"),
        help=f"points of the operator SIGKILL matrix to run: a sample (CI) or all (default from ${ENV_KILL_MATRIX})",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _figures:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite")
    width = max(len(f.fault) for f in _figures)
    write(f"{'fault':<{width}}  injected  survived  lost  dup  converged")
    for f in _figures:
        took = f"{f.converge_seconds:6.1f} s" if f.converge_seconds is not None else "      -"
        line = f"{f.fault:<{width}}  {f.injected:8d}  {'yes' if f.survived else 'NO':>8}  {f.rows_lost:4d}  {f.duplicates:3d}  {took}"
        write(line + (f"  {f.note}" if f.note else ""))
    faults = len(_figures)
    survived = sum(f.survived for f in _figures)
    injected = sum(f.injected for f in _figures)
    lost = sum(f.rows_lost for f in _figures)
    dups = sum(f.duplicates for f in _figures)
    times = [f.converge_seconds for f in _figures if f.converge_seconds is not None]
    slowest = f", slowest convergence {max(times):.1f} s" if times else ""
    write(
        f"faults: {faults} scenarios, {injected} faults injected, {survived}/{faults} survived; "
        f"rows lost {lost}, duplicates {dups}{slowest}"
    )


# --- the ledger of one pair ---------------------------------------------------------------------


@dataclass
class Ledger:
    """One (serve, environment) through a fault: what was asked for and what must hold after."""

    seed: darwin.Seed
    serve: str
    environment: str
    namespace: str
    seen: dict[int, str] = field(default_factory=dict)
    """deployments.id -> status, at the last look before the fault."""
    expected_new: list[str] = field(default_factory=list)
    """Versions asked for (by an apply) that the operator must record, once each."""
    darwin_ids: set[int] = field(default_factory=set)
    """Deployments Darwin wrote (by SQL): not the operator's to record."""

    @property
    def versions(self) -> dict[int, str]:
        return {artifact: version for version, artifact in self.seed.artifacts.items()}

    async def rows(self) -> list[dict[str, Any]]:
        return await darwin.query(
            "SELECT id, serve_id, environment_id, artifact_id, status FROM deployments "
            "WHERE serve_id = ? AND environment_id = ? ORDER BY id",
            self.seed.serve,
            self.seed.environment,
        )

    async def pointers(self) -> list[dict[str, Any]]:
        return await darwin.query(
            "SELECT id, serve_id, environment_id, deployment_id, previous_deployment_id FROM active_deployments "
            "WHERE serve_id = ? AND environment_id = ?",
            self.seed.serve,
            self.seed.environment,
        )

    async def snapshot(self) -> None:
        """Remember the rows as they are (call before the fault)."""
        self.seen = {int(r["id"]): str(r["status"]) for r in await self.rows()}

    async def darwin_deploy(self, version: str) -> int:
        new = await darwin.deploy(self.seed, version)
        self.darwin_ids.add(new)
        return new

    async def darwin_undeploy(self) -> list[int]:
        ended = []
        for pointer in await self.pointers():
            deployment = int(pointer["deployment_id"])
            await darwin.query(
                "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", darwin._now(), deployment
            )
            await darwin.query("DELETE FROM active_deployments WHERE id = ?", int(pointer["id"]))
            ended.append(deployment)
        return ended

    async def violations(self, client: Client) -> list[Violation]:
        rows = await self.rows()
        pointers = await self.pointers()
        every = _mlserves(client, self.namespace)
        mlserves = [m for m in every if not (m.get("metadata") or {}).get("deletionTimestamp")]
        image = _image(client, self.namespace, self.serve, self.environment)
        found = pair_violations(
            self.serve,
            self.environment,
            self.seed.serve,
            self.seed.environment,
            rows,
            pointers,
            mlserves,
            self.versions,
            image,
        )
        stuck = [
            m["metadata"]["name"]
            for m in every
            if m["metadata"].get("deletionTimestamp") and _labels_pair(m) == (self.serve, self.environment)
        ]
        if stuck:
            found.append(Violation("stuck-deleting", f"{stuck} still being deleted"))
        return found

    async def converge(self, client: Client, timeout: float, *, extra: Any = None) -> float:
        """Seconds until the invariants hold (and ``extra()``, when given, is true); raises on
        the deadline with the violations left."""
        began = time.monotonic()

        async def holds() -> list[Violation] | bool:
            found = await self.violations(client)
            if found:
                return False
            return bool(extra is None or extra())

        try:
            await async_wait_for(
                holds,
                timeout=timeout,
                what=f"the invariants of {self.serve}/{self.environment}",
                ignore=(ApiError, httpx2.HTTPError),
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{await self.describe(client)}") from None
        return time.monotonic() - began

    async def describe(self, client: Client) -> str:
        """What a failed convergence left: the violations, and the statuses of the namespace's
        MLServes, Deployments, ReplicaSets and Pods, so a failure says whether the operator or
        the cluster is behind."""
        lines = [f"violations: {await self.violations(client)}"]
        for body in _mlserves(client, self.namespace):
            status = body.get("status") or {}
            lines.append(
                f"MLServe {body['metadata']['name']}: generation {body['metadata'].get('generation')}, "
                f"spec {body.get('spec', {}).get('artifactVersion')}, status "
                + str({k: status.get(k) for k in ("phase", "observedGeneration", "deploymentId", "message")})
            )
        for deployment in client.list(Deployment, namespace=self.namespace):
            status = deployment.status
            conditions = [(c.type, c.status, c.reason) for c in (status.conditions or [])] if status else []
            lines.append(
                f"Deployment {deployment.metadata.name}: generation {deployment.metadata.generation}, "
                f"observed {status and status.observedGeneration}, replicas {status and status.replicas}, "
                f"updated {status and status.updatedReplicas}, ready {status and status.readyReplicas}, "
                f"conditions {conditions}"
            )
        for replicaset in client.list(ReplicaSet, namespace=self.namespace):
            status = replicaset.status
            lines.append(
                f"ReplicaSet {replicaset.metadata.name} (resourceVersion {replicaset.metadata.resourceVersion}): "
                f"spec {replicaset.spec.replicas if replicaset.spec else None}, replicas {status and status.replicas}, "
                f"ready {status and status.readyReplicas}, observed {status and status.observedGeneration}"
            )
        for pod in client.list(Pod, namespace=self.namespace):
            status = pod.status
            ready = [c.status for c in (status.conditions or []) if c.type == "Ready"] if status else []
            lines.append(
                f"Pod {pod.metadata.name} (resourceVersion {pod.metadata.resourceVersion}): "
                f"phase {status and status.phase}, Ready {ready}, node {pod.spec.nodeName if pod.spec else None}, "
                f"deleting {pod.metadata.deletionTimestamp is not None}"
            )
        return "\n".join(lines)

    async def lost_and_duplicated(self, client: Client) -> tuple[int, int, list[str]]:
        """(rows lost, duplicates, what) now, against :attr:`seen` and :attr:`expected_new`."""
        rows = await self.rows()
        now = {int(r["id"]): r for r in rows}
        notes: list[str] = []
        lost = 0
        for deployment, status in self.seen.items():
            row = now.get(deployment)
            if row is None:
                lost += 1
                notes.append(f"deployment {deployment} gone")
            elif status == "ENDED" and row["status"] == "ACTIVE":
                lost += 1
                notes.append(f"deployment {deployment} ACTIVE again")
        new = [r for i, r in now.items() if i not in self.seen and i not in self.darwin_ids]
        versions = self.versions
        duplicates = 0
        for version in set(self.expected_new):
            recorded = [r for r in new if versions[int(r["artifact_id"])] == version]
            asked = self.expected_new.count(version)
            if len(recorded) < asked:
                lost += asked - len(recorded)
                notes.append(f"{version} asked {asked}, recorded {len(recorded)}")
            if len(recorded) > asked:
                duplicates += len(recorded) - asked
                notes.append(f"{version} recorded {len(recorded)} times")
        unasked = [r for r in new if versions[int(r["artifact_id"])] not in self.expected_new]
        if unasked:
            duplicates += len(unasked)
            notes.append(f"deployments nobody asked for: {[int(r['id']) for r in unasked]}")
        active = [r for r in rows if r["status"] == "ACTIVE"]
        if len(active) > 1:
            duplicates += len(active) - 1
            notes.append(f"ACTIVE {[int(r['id']) for r in active]}")
        held = [m for m in _mlserves(client, self.namespace) if _labels_pair(m) == (self.serve, self.environment)]
        if len(held) > 1:
            duplicates += len(held) - 1
            notes.append(f"{len(held)} MLServes")
        deployments = [
            d
            for d in client.list(Deployment, namespace=self.namespace)
            if (d.metadata.labels or {}).get(LABEL_SERVE) == names.label_value(self.serve)
            and (d.metadata.labels or {}).get(LABEL_ENVIRONMENT) == names.label_value(self.environment)
        ]
        if len(deployments) > 1:
            duplicates += len(deployments) - 1
            notes.append(f"{len(deployments)} Deployments")
        return lost, duplicates, notes


def _labels_pair(body: Mapping[str, Any]) -> tuple[str, str] | None:
    from mlserve.operator.reconcile.identity import pair_of

    return pair_of(body)


def _mlserves(client: Client, namespace: str) -> list[dict[str, Any]]:
    return [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in client.list(MLServe, namespace=namespace)]


def _image(client: Client, namespace: str, serve: str, environment: str) -> str | None:
    try:
        found = client.get(Deployment, names.child_name(serve, environment), namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    if found.metadata is not None and found.metadata.deletionTimestamp is not None:
        return None
    containers = found.spec.template.spec.containers if found.spec and found.spec.template.spec else []
    return str(containers[0].image) if containers else None


# --- the operator behind a fault proxy ------------------------------------------------------------


def ca_file_of(kubeconfig: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    current = config.get("current-context") or config["contexts"][0]["name"]
    (context,) = [c for c in config["contexts"] if c["name"] == current]
    (cluster,) = [c for c in config["clusters"] if c["name"] == context["context"]["cluster"]]
    ca = Path(cluster["cluster"]["certificate-authority"])
    return ca if ca.is_absolute() else (kubeconfig.parent / ca).resolve()


def token_of(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


def admin_token(client: Client) -> str:
    """A token of a ServiceAccount bound to cluster-admin (the admin kubeconfig holds a client
    certificate, which a plain-HTTP proxy cannot pass on)."""
    name, namespace = ADMIN_ACCOUNT
    for obj in (
        ServiceAccount(metadata=ObjectMeta(name=name, namespace=namespace)),
        ClusterRoleBinding(
            metadata=ObjectMeta(name=name),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
            subjects=[Subject(kind="ServiceAccount", name=name, namespace=namespace)],
        ),
    ):
        try:
            client.create(obj)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
    request = ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=86400))
    return str(client.create(request, name, namespace=namespace).status.token)


@dataclass
class ProxiedOperator:
    proxy: FaultProxy
    operator: OperatorProcess
    own_namespace: str


def proxied_operator(
    cluster: Any,
    kube_client: Client,
    request: pytest.FixtureRequest,
    database_url: str,
    folder: Path,
    namespaces: Sequence[str],
    name: str = "operator",
    admin: bool = False,
    **settings: str,
) -> Iterator[ProxiedOperator]:
    """A fault proxy and an operator (not started) that reaches the API server through it;
    ``admin``: as a cluster-admin ServiceAccount whatever the session's identity (the chart
    the session installs has no peering rights)."""
    from mlserve_testing.identity import operator_runs_as_chart

    if operator_runs_as_chart() and not admin:
        identity = request.getfixturevalue("chart_identity")
        token, own_namespace = token_of(identity.kubeconfig), identity.namespace
    else:
        token, own_namespace = admin_token(kube_client), "default"
    proxy = FaultProxy(cluster.server, ca_file_of(cluster.kubeconfig), name=name).start()
    try:
        kubeconfig = proxy.kubeconfig(token, folder / f"{name}.kubeconfig")
        port = _free_port()
        env = operator_env(
            kubeconfig,
            database_url,
            port,
            MLSERVE_NAMESPACES=",".join(namespaces),
            MLSERVE_OPERATOR_NAMESPACE=own_namespace,
            **settings,
        )
        process = OperatorProcess(env, folder / f"{name}.log", port)
        try:
            yield ProxiedOperator(proxy, process, own_namespace)
        finally:
            process.stop()
    finally:
        proxy.stop()


def module_namespace(client: Client, stem: str) -> Iterator[str]:
    """A namespace ``op-<stem>-<random>`` for a test module's fixture: yielded, then deleted."""
    name = f"op-{stem}-{unique('')}"
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    client.delete(Namespace, name)


def _status(client: Client, name: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        body = get(client, name, namespace)
    except ApiError:
        return None
    return body, body.get("status") or {}


def ready_at_version(client: Client, name: str, namespace: str, version: str) -> bool:
    """The MLServe asks for ``version`` and is Ready, its status that of its current generation."""
    found = _status(client, name, namespace)
    if found is None:
        return False
    body, status = found
    return bool(
        body["spec"].get("artifactVersion") == version
        and status.get("phase") == "Ready"
        and status.get("observedGeneration") == body["metadata"].get("generation")
    )


def ready_with_deployment(client: Client, name: str, namespace: str, deployment: int) -> bool:
    """The MLServe is Ready with the database's deployment ``deployment``."""
    found = _status(client, name, namespace)
    return found is not None and found[1].get("deploymentId") == deployment and found[1].get("phase") == "Ready"


def direct_operator(
    cluster: Any,
    request: pytest.FixtureRequest,
    database_url: str,
    folder: Path,
    namespaces: Sequence[str],
    name: str = "operator",
    **settings: str,
) -> OperatorProcess:
    """An operator (not started) that reaches the API server directly, as the chart's
    ServiceAccount (or the admin with ``MLSERVE_TEST_OPERATOR_IDENTITY=admin``)."""
    from mlserve_testing.identity import operator_runs_as_chart

    if operator_runs_as_chart():
        identity = request.getfixturevalue("chart_identity")
        kubeconfig, own_namespace = identity.kubeconfig, identity.namespace
    else:
        kubeconfig, own_namespace = cluster.kubeconfig, "default"
    port = _free_port()
    env = operator_env(
        kubeconfig,
        database_url,
        port,
        MLSERVE_NAMESPACES=",".join(namespaces),
        MLSERVE_OPERATOR_NAMESPACE=own_namespace,
        **settings,
    )
    return OperatorProcess(env, folder / f"{name}.log", port)


def warnings_in(process: OperatorProcess) -> int:
    """How many WARNING and ERROR lines the operator logged so far."""
    return sum(" WARNING " in line or " ERROR " in line for line in process.log_text().splitlines())
