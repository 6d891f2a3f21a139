"""What the benchmarks share: the cluster they run on, the MLServe CRD, the operator as a
process, its MLServes' progress, timing helpers. Darwin's rows are written by
:mod:`mlserve.operator.dev.darwin` (plain SQL).

Imported by the scripts of this folder (run as ``python bench/<script>.py``, which puts
this folder on the import path).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import ApiError, Client, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Node, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from mlserve.operator.dev.cluster import ClusterHandle, LocalCluster, ensure_binaries
from mlserve.operator.dev.cluster.kubeconfig import write_token_kubeconfig
from mlserve.operator.dev.cluster.ports import free_ports
from mlserve.operator.reconcile.kube import MLServe, as_dict

ROOT = Path(__file__).resolve().parents[1]
FIELD_MANAGER = "mlserve-bench"
CAPACITY_LABEL = "karpenter.sh/capacity-type"


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Until ``predicate()`` is true; an error it raises counts as not yet (and is shown
    when the time is up)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - e.g. 429 while a new CRD's storage starts
            last_error = exc
        if time.monotonic() > deadline:
            seen = f" (last error: {last_error})" if last_error else ""
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(0.2)


def start_cluster(use_kubeconfig: bool, nodes: int, state_dir: Path) -> tuple[ClusterHandle, LocalCluster | None]:
    """The cluster of $KUBECONFIG, or a local control plane started in ``state_dir`` (the
    second value, to stop at the end)."""
    if use_kubeconfig:
        return ClusterHandle.from_kubeconfig(Path(os.environ["KUBECONFIG"])), None
    local = LocalCluster(ensure_binaries(), nodes=nodes, state_dir=state_dir)
    return local.start(), local


def _established(client: Client, name: str) -> bool:
    status = client.get(CustomResourceDefinition, name).status
    conditions = (status.conditions if status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def install_mlserve_crd(client: Client, namespace: str) -> None:
    """The MLServe CRD, established and listable, and ``namespace``."""
    for crd in codecs.load_all_yaml((ROOT / "crds" / "mlserve.darwin.io_mlserves.yaml").read_text()):
        client.apply(crd, field_manager=FIELD_MANAGER, force=True)
        wait(lambda n=crd.metadata.name: _established(client, n), 60, "the MLServe CRD")
    ensure_namespace(client, namespace)
    # the new CRD's storage answers 429 for a moment after Established
    wait(lambda: list(client.list(MLServe, namespace=namespace)) is not None, 60, "MLServes to be listable")


def ensure_namespace(client: Client, namespace: str) -> None:
    try:
        client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as exc:
        if exc.status.code != 409:
            raise


def label_nodes(client: Client, value: str = "spot") -> None:
    """Give every node the capacity-type label the serves' node selectors ask for."""
    for node in client.list(Node):
        client.patch(Node, node.metadata.name, {"metadata": {"labels": {CAPACITY_LABEL: value}}})


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` 0.9 for p90)."""
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def p50_p90_max(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), percentile(values, 0.9), max(values)


# --- the operator as a process ------------------------------------------------------------------


def operator_identity(client: Client, admin_kubeconfig: Path, folder: Path, namespace: str) -> tuple[str, Path]:
    """A ServiceAccount with cluster-admin rights and a kubeconfig holding its token: the
    local control plane audits ServiceAccounts (outside kube-system), so the operator's own
    requests can be counted from the audit log. Returns (username, kubeconfig)."""
    ensure_namespace(client, namespace)
    account = "mlserve-operator"
    for obj in (
        ServiceAccount(metadata=ObjectMeta(name=account, namespace=namespace)),
        ClusterRoleBinding(
            metadata=ObjectMeta(name=f"{namespace}:{account}"),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
            subjects=[Subject(kind="ServiceAccount", name=account, namespace=namespace)],
        ),
    ):
        client.apply(obj, field_manager=FIELD_MANAGER, force=True)
    request = ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=86400))
    token = client.create(request, account, namespace=namespace).status.token
    username = f"system:serviceaccount:{namespace}:{account}"
    return username, write_token_kubeconfig(admin_kubeconfig, token, username, folder / "operator.kubeconfig")


@dataclass
class OperatorProcess:
    """``mlserve run`` as a child process with the given environment (every ``MLSERVE_*``
    of this process's left out), logging to a file; ready when its liveness endpoint answers."""

    kubeconfig: Path
    db_url: str
    log_file: Path
    settings: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=lambda: free_ports(1)[0])
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLSERVE_", "MYSQL_"))},
            "KUBECONFIG": str(self.kubeconfig),
            "MLSERVE_DB_URL": self.db_url,
            "MLSERVE_CLUSTER_NAME": "local",
            "MLSERVE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
            "MLSERVE_METRICS_PORT": "0",  # several operators may run on one machine
            **self.settings,
        }

    def start(self, timeout: float = 120) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlserve"), "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait(self.healthy, timeout, f"the operator (log: {self.log_file})")

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise SystemExit(f"the operator exited; its log: {self.log_file}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rss_mib(self) -> float:
        """Resident memory (VmRSS) of the operator's process, in MiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_size(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_file.open("rb") as stream:
            stream.seek(offset)
            return stream.read().decode(errors="replace")


# --- the MLServes' progress, from a watch ---------------------------------------------------------


def synced_deployment(body: Mapping[str, Any]) -> int | None:
    """The deployment id an MLServe's status reflects when ``Synced`` is true for its current
    generation; None otherwise."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation or status.get("deploymentId") is None:
        return None
    conditions = status.get("conditions") or []
    if any(c.get("type") == "Synced" and c.get("status") == "True" for c in conditions):
        return int(status["deploymentId"])
    return None


class MLServeWatch(threading.Thread):
    """Watches the MLServes of a namespace and keeps, per (name, deployment id), the first
    time (``time.monotonic()``) it was seen Synced for that deployment."""

    def __init__(self, handle: ClusterHandle, namespace: str) -> None:
        super().__init__(daemon=True, name=f"watch-{namespace}")
        self.handle = handle
        self.namespace = namespace
        self.synced_at: dict[tuple[str, int], float] = {}
        self.current: dict[str, int | None] = {}
        self.reconciled: set[str] = set()
        """MLServes whose status was written for their current generation."""
        self.lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                with self.handle.client(field_manager=FIELD_MANAGER) as client:
                    for _, obj in client.watch(MLServe, namespace=self.namespace):
                        self._see(as_dict(obj))
            except Exception:  # noqa: BLE001 - the watch ended (expired, dropped): start again
                time.sleep(0.5)

    def _see(self, body: dict[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        deployment = synced_deployment(body)
        now = time.monotonic()
        observed = (body.get("status") or {}).get("observedGeneration")
        with self.lock:
            self.current[name] = deployment
            if observed is not None and observed == body["metadata"].get("generation"):
                self.reconciled.add(name)
            else:
                self.reconciled.discard(name)
            if deployment is not None:
                self.synced_at.setdefault((name, deployment), now)

    def when_synced(self, wanted: Mapping[str, int]) -> dict[str, float]:
        """The names of ``wanted`` (name -> deployment id) seen Synced for it, with the time."""
        with self.lock:
            return {n: self.synced_at[(n, d)] for n, d in wanted.items() if (n, d) in self.synced_at}

    def all_synced(self) -> bool:
        with self.lock:
            return all(d is not None for d in self.current.values())
