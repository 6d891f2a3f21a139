"""Start and stop a local control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok playing the kubelet for N fake nodes; and, when asked for, KubeRay's
controller beside them (``kuberay=True``, or :meth:`LocalCluster.start_kuberay_operator`).

    with LocalCluster(ensure_binaries(), nodes=2) as cluster:
        client = cluster.handle.client()

Every program runs in a process group of its own with its log in ``<state>/logs/``; ports
are picked free at start, so clusters run side by side. ``start()`` returns once the
API server is ready, the controller manager and the scheduler are healthy, every node is
Ready and the ``default`` ServiceAccount exists; when a program dies or a deadline passes
it stops what it started and raises :class:`DevClusterError` naming the program, with the
tail of its log.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx2
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.config.client_adapter import Client as http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import Node, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from . import kuberay as kuberay_controller
from . import names
from .build import Binaries
from .errors import DevClusterError
from .kubeconfig import write_kubeconfig
from .kwok_stages import with_our_stages
from .pki import CertificateAuthority, CertPair, ServiceAccountKeys
from .ports import free_ports
from .process import ManagedProcess, group_alive, stop_group

DEFAULT_START_TIMEOUT = 120.0
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class ClusterHandle:
    """A reachable cluster: the local control plane, or any cluster named by a kubeconfig."""

    kubeconfig: Path
    server: str
    context: str | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> ClusterHandle:
        config = KubeConfig.from_file(path).get(context)
        if config is None:
            raise DevClusterError(f"{path}: no context {context or '(current)'}")
        return cls(kubeconfig=path, server=config.cluster.server, context=context)

    def config(self) -> KubeConfig:
        return KubeConfig.from_file(self.kubeconfig)

    def client(self, **kwargs: Any) -> Client:
        """A synchronous lightkube client (keyword arguments go to ``Client``)."""
        config = self.config()
        return Client(config.get(self.context) if self.context else config, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        config = self.config()
        return AsyncClient(config.get(self.context) if self.context else config, **kwargs)

    def version(self) -> dict[str, str]:
        """What the API server's ``/version`` reports (gitVersion, major, minor, buildDate, ...)."""
        single = self.config().get(self.context)
        if single is None:
            raise DevClusterError(f"{self.kubeconfig}: no context {self.context or '(current)'}")
        with http_client(single, ConnectionParams()) as http:
            response = http.get("/version")
            response.raise_for_status()
            reported: dict[str, str] = response.json()
        return reported

    def environ(self) -> dict[str, str]:
        """Environment for a child process (kubectl, the operator) that should use this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


@dataclass
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> _Ports:
        return cls(*free_ports(5))


@dataclass
class LocalCluster:
    """A control plane of this machine's processes; see the module's docstring."""

    binaries: Binaries
    nodes: int = 1
    #: state folder (certificates, etcd data, logs, kubeconfigs); a temporary one when None
    state_dir: Path | None = None
    #: leave the processes running when this interpreter exits (``mlserve dev cluster up``)
    detach: bool = False
    start_timeout: float = DEFAULT_START_TIMEOUT
    #: also start KubeRay's controller, watching every namespace (needs its binary and its
    #: CRD folder, ``kuberay_crd_dir()``)
    kuberay: bool = False
    kuberay_crds: Path | None = None
    processes: dict[str, ManagedProcess] = field(default_factory=dict, init=False)
    _ca: CertificateAuthority | None = field(default=None, init=False, repr=False)
    _handle: ClusterHandle | None = field(default=None, init=False)
    _temporary: bool = field(default=False, init=False)
    started_in: float | None = field(default=None, init=False)

    # --- public --------------------------------------------------------------------------

    @property
    def handle(self) -> ClusterHandle:
        if self._handle is None:
            raise DevClusterError("the cluster is not started")
        return self._handle

    def start(self) -> ClusterHandle:
        if self.nodes < 0:
            raise DevClusterError("the number of nodes cannot be negative")
        missing = self.binaries.missing(
            (*names.CLUSTER_PROGRAMS, names.KWOK_STAGES, *([names.KUBERAY_OPERATOR] if self.kuberay else []))
        )
        if self.kuberay and self.kuberay_crds is None:
            raise DevClusterError("kuberay=True needs kuberay_crds, the folder of KubeRay's CRDs")
        if missing:
            build = "mlserve dev build" + (" --with-kuberay" if self.kuberay else "")
            raise DevClusterError(f"{self.binaries.folder} lacks {', '.join(missing)}: run `{build}` first")
        began = time.monotonic()
        try:
            self._start(deadline=began + self.start_timeout)
        except BaseException:
            self._temporary = False  # keep the logs the error points at
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self.handle

    def stop(self) -> None:
        """Stop every program, newest first; remove the state folder when it was temporary."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()
        if self._temporary and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def rss_bytes(self) -> int:
        """Resident memory of the running programs and their children, summed."""
        return sum(_group_rss(p.pid) for p in self.processes.values() if p.running())

    # --- start-up ------------------------------------------------------------------------

    def _start(self, deadline: float) -> None:
        state = self._prepare_state_dir()
        pki_dir, logs = state / "pki", state / "logs"
        for folder in (pki_dir, logs, state / "components"):
            folder.mkdir(parents=True, exist_ok=True)
        ports = _Ports.pick()
        server = f"https://{names.HOST}:{ports.apiserver}"

        ca = CertificateAuthority.create(pki_dir, f"{names.CLUSTER_NAME}-ca")
        self._ca = ca
        serving = ca.issue(
            pki_dir,
            "apiserver",
            names.APISERVER,
            server=True,
            hosts=[
                names.HOST,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                _first_service_ip(),
            ],
        )
        sa_keys = ServiceAccountKeys.create(pki_dir)
        # the API server's identity towards aggregated API servers; components read this CA
        # from kube-system/extension-apiserver-authentication to trust what it forwards
        front_proxy_ca = CertificateAuthority.create(
            pki_dir, f"{names.CLUSTER_NAME}-front-proxy-ca", stem="front-proxy-ca"
        )
        front_proxy = front_proxy_ca.issue(pki_dir, "front-proxy-client", names.FRONT_PROXY_USER)

        def identity(stem: str, user: tuple[str, str | None], kubeconfig: Path) -> tuple[CertPair, Path]:
            pair = ca.issue(pki_dir, stem, user[0], organisation=user[1])
            written = write_kubeconfig(
                kubeconfig, server=server, ca_file=ca.pair.cert, user=user[0], client=pair, cluster=names.CLUSTER_NAME
            )
            return pair, written

        components = state / "components"
        admin, admin_kubeconfig = identity("admin", names.ADMIN_USER, state / names.KUBECONFIG_FILE)
        _, kcm_kubeconfig = identity(
            "controller-manager", names.CONTROLLER_MANAGER_USER, components / "controller-manager.kubeconfig"
        )
        _, scheduler_kubeconfig = identity("scheduler", names.SCHEDULER_USER, components / "scheduler.kubeconfig")
        _, kwok_kubeconfig = identity("kwok", names.KWOK_USER, components / "kwok.kubeconfig")
        self._handle = ClusterHandle(kubeconfig=admin_kubeconfig, server=server)

        etcd = self._launch(names.ETCD, self._etcd_args(state / "etcd-data", ports))
        self._wait(etcd, "etcd /health", deadline, _http_ok(f"http://{names.HOST}:{ports.etcd_client}/health"))

        apiserver = self._launch(
            names.APISERVER,
            self._apiserver_args(ports, ca.pair, serving, sa_keys, front_proxy_ca.pair, front_proxy, state),
        )
        admin_tls = _client_tls(ca.pair.cert, admin)
        self._wait(apiserver, "/readyz", deadline, _http_ok(f"{server}/readyz", admin_tls))

        client = self.handle.client()
        try:
            self._bootstrap_objects(client)
            kcm = self._launch(
                names.CONTROLLER_MANAGER,
                self._controller_manager_args(kcm_kubeconfig, ca.pair, sa_keys, ports, state),
            )
            scheduler = self._launch(names.SCHEDULER, self._scheduler_args(scheduler_kubeconfig, ports, state))
            stages = self._kwok_stages(state)
            kwok = self._launch(names.KWOK, self._kwok_args(kwok_kubeconfig, stages))

            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # their serving certificates are self-signed
            kcm_health = f"https://{names.HOST}:{ports.controller_manager}/healthz"
            self._wait(kcm, "/healthz", deadline, _http_ok(kcm_health, insecure))
            scheduler_health = f"https://{names.HOST}:{ports.scheduler}/healthz"
            self._wait(scheduler, "/healthz", deadline, _http_ok(scheduler_health, insecure))
            self._wait(kwok, f"{self.nodes} node(s) Ready", deadline, lambda: _nodes_ready(client, self.nodes))
            self._wait(kcm, "ServiceAccount default/default", deadline, lambda: _default_service_account(client))
        finally:
            client.close()
        if self.kuberay:
            assert self.kuberay_crds is not None
            self.start_kuberay_operator(self.kuberay_crds, timeout=max(1.0, deadline - time.monotonic()))
        self._write_state(state)

    # --- KubeRay's controller --------------------------------------------------------------

    def start_kuberay_operator(
        self,
        crd_dir: Path,
        watch_namespaces: Sequence[str] = (),
        timeout: float = kuberay_controller.START_TIMEOUT,
        *,
        install: bool = True,
    ) -> ManagedProcess:
        """Install KubeRay's CRDs and ClusterRole (unless ``install`` is false: done already)
        and start its controller, watching ``watch_namespaces`` (every namespace when empty);
        returns once it answers /readyz.

        Several may run at once, each for its own namespaces; :meth:`stop_process` (or the
        cluster's stop) stops one. Its log is ``logs/kuberay-operator[-<namespaces>].log``.
        """
        if self._ca is None or self.state_dir is None:
            raise DevClusterError("the cluster is not started")
        if self.binaries.missing([names.KUBERAY_OPERATOR]):
            raise DevClusterError(
                f"{self.binaries.folder} lacks {names.KUBERAY_OPERATOR}: run `mlserve dev build --with-kuberay` first"
            )
        name = kuberay_controller.log_name(watch_namespaces)
        if name in self.processes and self.processes[name].running():
            raise DevClusterError(f"{name} is already running")
        if install:
            with self.handle.client() as client:
                kuberay_controller.install_kuberay(client, crd_dir, timeout)
        components = self.state_dir / "components"
        user = names.KUBERAY_USER
        pair = self._ca.issue(self.state_dir / "pki", names.KUBERAY_OPERATOR, user[0], organisation=user[1])
        kubeconfig = write_kubeconfig(
            components / f"{names.KUBERAY_OPERATOR}.kubeconfig",
            server=self.handle.server,
            ca_file=self._ca.pair.cert,
            user=user[0],
            client=pair,
            cluster=names.CLUSTER_NAME,
        )
        port = kuberay_controller.probe_port()
        process = ManagedProcess(
            name,
            [
                str(self.binaries.path(names.KUBERAY_OPERATOR)),
                *kuberay_controller.operator_args(f"{names.HOST}:{port}", watch_namespaces, kubeconfig),
            ],
            self.state_dir / "logs" / f"{name}.log",
            detach=self.detach,
        )
        self.processes[name] = process.start()
        try:
            kuberay_controller.wait_ready(process, port, timeout)
        except BaseException:
            self.stop_process(name)
            raise
        if self.detach:
            self._write_state(self.state_dir)
        return process

    def stop_process(self, name: str) -> None:
        """Stop one program started beside the control plane (e.g. a KubeRay controller)."""
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop()

    def _prepare_state_dir(self) -> Path:
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="mlserve-cluster-"))
            self._temporary = True
            return self.state_dir
        state = self.state_dir.resolve()
        running = running_pids(state)
        if running:
            raise DevClusterError(
                f"a cluster is already running from {state} (pids {', '.join(map(str, running.values()))}); "
                "stop it first (`mlserve dev cluster down`)"
            )
        if state.exists() and any(state.iterdir()):
            if not (state / names.STATE_MARKER).exists():
                raise DevClusterError(f"{state} is not empty and holds no cluster state: choose an empty or new folder")
            shutil.rmtree(state)  # a fresh cluster every time: no stale etcd data or certificates
        state.mkdir(parents=True, exist_ok=True)
        (state / names.STATE_MARKER).write_text("state of a local control plane; removed by the next start\n")
        self.state_dir = state
        return state

    def _launch(self, name: str, args: list[str]) -> ManagedProcess:
        assert self.state_dir is not None
        process = ManagedProcess(
            name, [str(self.binaries.path(name)), *args], self.state_dir / "logs" / f"{name}.log", detach=self.detach
        )
        self.processes[name] = process.start()
        return process

    def _wait(self, component: ManagedProcess, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until it holds; fail when any program dies or the deadline passes."""
        last_error: Exception | None = None
        while True:
            for process in self.processes.values():
                process.check()
            try:
                if ready():
                    return
                last_error = None
            except (OSError, RuntimeError, ApiError, httpx2.HTTPError) as exc:  # not ready yet: say why later
                last_error = exc
            if time.monotonic() > deadline:
                because = f" (last attempt: {last_error})" if last_error else ""
                raise component.failure(f"not ready within {self.start_timeout:.0f} s: waited for {what}{because}")
            time.sleep(POLL_INTERVAL)

    def _bootstrap_objects(self, client: Client) -> None:
        """What kwok needs to act for the nodes, and the nodes themselves."""
        _create_or_keep(
            client,
            ClusterRoleBinding(
                metadata=ObjectMeta(name=names.KWOK_CLUSTER_ROLE_BINDING),
                roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
                subjects=[Subject(kind="User", name=names.KWOK_USER[0], apiGroup="rbac.authorization.k8s.io")],
            ),
        )
        for index in range(self.nodes):
            _create_or_keep(client, fake_node(f"{names.NODE_NAME_PREFIX}{index}"))

    def _kwok_stages(self, state: Path) -> Path:
        path = state / "components" / "kwok-stages.yaml"
        result = subprocess.run(
            [str(self.binaries.path(names.KWOK_STAGES))], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not result.stdout.strip():
            raise DevClusterError(f"{names.KWOK_STAGES} failed (exit {result.returncode}): {result.stderr.strip()}")
        # kwok's defaults, and ours: a labelled pod fails on demand, a pod is Ready again.
        path.write_text(with_our_stages(result.stdout))
        return path

    # --- command lines -------------------------------------------------------------------

    @staticmethod
    def _etcd_args(data_dir: Path, ports: _Ports) -> list[str]:
        client_url = f"http://{names.HOST}:{ports.etcd_client}"
        peer_url = f"http://{names.HOST}:{ports.etcd_peer}"
        return [
            "--name=default",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # throwaway data: durability buys nothing here
            "--log-level=warn",
        ]

    @staticmethod
    def _apiserver_args(
        ports: _Ports,
        ca: CertPair,
        serving: CertPair,
        sa_keys: ServiceAccountKeys,
        front_proxy_ca: CertPair,
        front_proxy: CertPair,
        state: Path,
    ) -> list[str]:
        return [
            f"--etcd-servers=http://{names.HOST}:{ports.etcd_client}",
            f"--bind-address={names.HOST}",
            f"--advertise-address={names.HOST}",
            # the kubernetes Service's endpoints may not be a loopback address, and nothing in
            # a cluster of fake nodes dials it: do not keep failing to write them
            "--endpoint-reconciler-type=none",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={state / 'pki'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={names.SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_keys.public}",
            f"--service-account-signing-key-file={sa_keys.private}",
            f"--service-cluster-ip-range={names.SERVICE_CLUSTER_IP_RANGE}",
            f"--requestheader-client-ca-file={front_proxy_ca.cert}",
            f"--requestheader-allowed-names={names.FRONT_PROXY_USER}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front_proxy.cert}",
            f"--proxy-client-key-file={front_proxy.key}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            f"--audit-policy-file={_write_audit_policy(state)}",
            f"--audit-log-path={state / names.AUDIT_LOG}",
        ]

    @staticmethod
    def _controller_manager_args(
        kubeconfig: Path, ca: CertPair, sa_keys: ServiceAccountKeys, ports: _Ports, state: Path
    ) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={names.HOST}",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={state / 'components'}",
            "--leader-elect=false",  # one instance: no lease to wait for
            "--controllers=*",
            "--use-service-account-credentials=true",  # each controller under its own RBAC role
            f"--service-account-private-key-file={sa_keys.private}",
            f"--root-ca-file={ca.cert}",
            f"--cluster-signing-cert-file={ca.cert}",
            f"--cluster-signing-key-file={ca.key}",
            f"--cluster-name={names.CLUSTER_NAME}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--profiling=false",
            "--v=1",
        ]

    @staticmethod
    def _scheduler_args(kubeconfig: Path, ports: _Ports, state: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={names.HOST}",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={state / 'components'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _kwok_args(self, kubeconfig: Path, stages: Path) -> list[str]:
        key, value = names.KWOK_NODE_ANNOTATION
        return [
            f"--kubeconfig={kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--node-lease-duration-seconds={names.NODE_LEASE_SECONDS}",
            "--cidr=10.244.0.0/16",
        ]

    # --- state for `mlserve dev cluster down` ----------------------------------------------

    def _write_state(self, state: Path) -> None:
        record = {
            "server": self.handle.server,
            "kubeconfig": str(self.handle.kubeconfig),
            "nodes": self.nodes,
            "pids": {name: p.pid for name, p in self.processes.items()},
        }
        (state / names.STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")


# --- helpers ---------------------------------------------------------------------------------


def _write_audit_policy(state: Path) -> Path:
    path = state / names.AUDIT_POLICY_FILE
    path.write_text(names.AUDIT_POLICY)
    return path


def fake_node(name: str) -> Node:
    """A Node object for kwok to play the kubelet for."""
    annotation_key, annotation_value = names.KWOK_NODE_ANNOTATION
    label_key, label_value = names.NODE_LABEL_TYPE
    return Node(
        metadata=ObjectMeta(
            name=name,
            annotations={annotation_key: annotation_value, "node.alpha.kubernetes.io/ttl": "0"},
            labels={
                label_key: label_value,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        )
    )


def _create_or_keep(client: Client, obj: Any) -> None:
    try:
        client.create(obj)
    except ApiError as exc:
        if exc.status.code != 409:  # already there: keep it
            raise


def _first_service_ip() -> str:
    return str(next(ipaddress.ip_network(names.SERVICE_CLUSTER_IP_RANGE).hosts()))


def _client_tls(ca: Path, client: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"GET {url}: HTTP {exc.code}: {exc.read(300).decode(errors='replace')}") from None

    return probe


def _nodes_ready(client: Client, expected: int) -> bool:
    ready = 0
    for node in client.list(Node, labels={names.NODE_LABEL_TYPE[0]: names.NODE_LABEL_TYPE[1]}):
        conditions = (node.status.conditions if node.status else None) or []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            ready += 1
    return ready >= expected


def _default_service_account(client: Client) -> bool:
    client.get(ServiceAccount, "default", namespace="default")
    return True


def _group_rss(pgid: int) -> int:
    """Resident memory of the processes in a process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state, ppid, pgrp, ...
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


def running_pids(state_dir: Path) -> dict[str, int]:
    """Programs of the cluster recorded in ``state_dir`` whose process group still lives."""
    try:
        record = json.loads((state_dir / names.STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {name: pid for name, pid in record.get("pids", {}).items() if group_alive(pid)}


def stop_recorded(state_dir: Path) -> dict[str, int]:
    """Stop a detached cluster by the process groups recorded in its state folder."""
    pids = running_pids(state_dir)
    for name, pid in pids.items():  # KubeRay's controller first: it talks to the API server
        if name not in names.CLUSTER_PROGRAMS:
            stop_group(pid)
    for name in reversed(names.CLUSTER_PROGRAMS):
        if name in pids:
            stop_group(pids[name])
    (state_dir / names.STATE_FILE).unlink(missing_ok=True)
    return pids
