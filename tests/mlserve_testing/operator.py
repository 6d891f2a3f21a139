"""Fixtures for the operator's tests: a Darwin database, the CRDs, and the operator itself.

- ``darwin_db``: an empty Darwin schema on SQLite (in memory) and on MariaDB (parametrized),
  connected in this process.
- ``mlserve_crd``: the MLServe CRD (and KubeRay's RayJob CRDs) installed in the cluster.
- ``operator_mariadb``: a MariaDB server of the operator's own (not the models suite's), so
  fault tests can really stop it and start it again on the same data.
- ``operator_process``: ``mlserve run`` started as a real subprocess against the cluster and
  that MariaDB, so tests can SIGKILL and restart it; ready when its liveness endpoint
  answers. Its log is printed when a test fails.
- ``operator_db``: this process's connection to the operator's database, to seed rows the
  way Darwin writes them (:mod:`mlserve_testing.darwin`) and to read what the operator wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client, codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Node
from tortoise import Tortoise

from mlserve_testing.kuberay import kuberay_crd_dir
from mlserve_testing.mariadb import MariaDBServer, start_mariadb
from mlserve_testing.secrets import check_namespace, check_text
from mlserve_testing.wait import wait_for

MODELS = {"models": ["mlserve.models"]}
ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mlserve.darwin.io_mlserves.yaml"
CLUSTER_NAME = "local"
CAPACITY_LABEL = "karpenter.sh/capacity-type"
NAMESPACE_PREFIX = "op-"


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def darwin_db_settings(request: pytest.FixtureRequest) -> Any:
    """SQLite in memory, or a fresh database on the suite's MariaDB server."""
    from mlserve.models.settings import DatabaseSettings

    if request.param == "mariadb":
        return request.getfixturevalue("mariadb_database")
    return DatabaseSettings.sqlite(":memory:")


@pytest.fixture
async def darwin_db(darwin_db_settings: Any) -> AsyncIterator[None]:
    """A fresh Darwin schema as the operator creates it, connected as Tortoise's default
    connection; parametrized over SQLite and MariaDB."""
    from mlserve.models.db import close_db, init_db

    await init_db(darwin_db_settings)
    try:
        yield
    finally:
        await close_db()


@pytest.fixture
async def sqlite_darwin_db(tmp_path: Path) -> AsyncIterator[None]:
    """A fresh Darwin schema in a SQLite file of the test's own, connected as Tortoise's
    default connection (for tests that run the reconcile in the test process)."""
    from mlserve.models.db import close_db, init_db
    from mlserve.models.settings import DatabaseSettings

    await init_db(DatabaseSettings.sqlite(tmp_path / "darwin.sqlite3"))
    try:
        yield
    finally:
        await close_db()


def _install_crd(client: Client, path: Path) -> None:
    """Apply the CRDs of ``path`` and wait until each is established and servable."""
    install_crds(client, codecs.load_all_yaml(path.read_text()))


def install_crds(client: Client, crds: Iterable[Any]) -> None:
    """Apply these CRDs and wait until each is established and servable."""
    for obj in crds:
        client.apply(obj, field_manager="mlserve-tests", force=True)
        name = obj.metadata.name

        def established(name: str = name) -> bool:
            crd = client.get(CustomResourceDefinition, name)
            return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

        wait_for(established, timeout=30, what=f"CRD {name} established")
        # Established is not yet servable: the new storage answers 429 for a moment after it.
        spec = obj.spec
        version = next(v.name for v in spec.versions if v.served)
        if spec.scope == "Namespaced":
            kind: Any = create_namespaced_resource(spec.group, version, spec.names.kind, spec.names.plural)
            listed = {"namespace": "default"}
        else:
            kind = create_global_resource(spec.group, version, spec.names.kind, spec.names.plural)
            listed = {}
        wait_for(
            lambda kind=kind, listed=listed: list(client.list(kind, **listed)) is not None,
            timeout=60,
            what=f"{spec.names.kind} to be listable",
            ignore=(ApiError,),
        )


def _label_nodes(client: Client) -> None:
    """Give the fake nodes the capacity-type label the serves' node selectors ask for:
    alternately spot and on-demand, as a Karpenter-managed cluster would."""
    nodes = sorted(client.list(Node), key=lambda n: n.metadata.name)
    for index, node in enumerate(nodes):
        value = "spot" if index % 2 == 0 else "on-demand"
        if (node.metadata.labels or {}).get(CAPACITY_LABEL) != value:
            client.patch(Node, node.metadata.name, {"metadata": {"labels": {CAPACITY_LABEL: value}}})


PEERING_CRDS = ROOT / "deploy" / "helm" / "mlserve-operator" / "crds" / "kopf.dev_peerings.yaml"
KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")


def namespace_with_peering(client: Client, prefix: str) -> Iterator[str]:
    """A fresh namespace ``<prefix>-<random>`` holding kopf's KopfPeering ``mlserve`` (its CRDs
    installed first), for a fixture to yield from; deleted afterwards."""
    _install_crd(client, PEERING_CRDS)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.create(Namespace(metadata=ObjectMeta(name=name)))
    client.create(KopfPeering(metadata=ObjectMeta(name="mlserve", namespace=name)))
    yield name
    client.delete(Namespace, name)


@pytest.fixture(scope="session")
def mlserve_crd(kube_client: Client) -> None:
    """The MLServe CRD and KubeRay's RayJob and RayCronJob CRDs, established and servable; the
    fake nodes labelled with a capacity type."""
    _label_nodes(kube_client)
    _install_crd(kube_client, CRD_FILE)
    kuberay = kuberay_crd_dir()
    for name in ("ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml"):
        if (kuberay / name).is_file():
            _install_crd(kube_client, kuberay / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OperatorProcess:
    """``mlserve run`` in a subprocess."""

    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MLSERVE_METRICS_PORT']}/metrics"

    @property
    def db_url(self) -> str:
        return self.env["MLSERVE_DB_URL"]

    def start(self, **extra_env: str) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.extra_env = dict(extra_env)
        command = [str(Path(sys.executable).parent / "mlserve"), "run"]
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            self.proc = subprocess.Popen(
                command, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.starts += 1
        wait_for(self._ready, timeout=60, what=f"the operator's liveness endpoint (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self._check_log()

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            self._check_log()

    def _check_log(self) -> None:
        """No seeded secret in what the operator logged (its database password included)."""
        with contextlib.suppress(OSError):
            check_text(f"the log of the operator process ({self.log_path.name})", "operator logs", self.log_text())

    def ensure_running(self) -> None:
        if not self.running:
            self.start(**self.extra_env)

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def operator_env(kubeconfig: Path, db_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLSERVE_", "MYSQL_"))}
    env.update(
        KUBECONFIG=str(kubeconfig),
        MLSERVE_DB_URL=db_url,
        MLSERVE_CLUSTER_NAME=CLUSTER_NAME,
        MLSERVE_LIVENESS_ENDPOINT=f"http://127.0.0.1:{port}/healthz",
        MLSERVE_DRIFT_CHECK_INTERVAL="20s",
        MLSERVE_SYNC_INTERVAL="2s",
        MLSERVE_DELETION_DB_TIMEOUT="8s",
        MLSERVE_DB_TIMEOUT="3s",
        MLSERVE_RETRY_DELAY="1s",
        MLSERVE_RETRY_MAX_DELAY="4s",
        MLSERVE_LOG_LEVEL="DEBUG",
        MLSERVE_METRICS_PORT="0",  # several operators may run at once: a test that scrapes sets one
    )
    env.update(extra)
    return env


@dataclass
class StoppableMariaDB:
    """A MariaDB server that a test may stop and start again (same data, same port)."""

    server: MariaDBServer
    database: str
    command: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url(self.database)

    def stop(self) -> None:
        process = self.server.process
        assert process is not None
        self.command = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        self.server.stop()

    def start(self) -> None:
        assert self.command, "stop() first"
        self.server.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            with socket.socket() as sock:
                sock.settimeout(1)
                return sock.connect_ex((self.server.host, self.server.port)) == 0

        wait_for(accepting, timeout=60, what="the restarted MariaDB accepting connections")

    @property
    def running(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None


@pytest.fixture(scope="session")
def operator_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppableMariaDB]:
    server = start_mariadb(tmp_path_factory.mktemp("operator-mariadb"))
    try:
        database = asyncio.run(server.create_database("darwin"))
        yield StoppableMariaDB(server, database)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator_process(
    cluster: Any,
    mlserve_crd: None,
    operator_mariadb: StoppableMariaDB,
    kube_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The operator, cluster-wide, for one test module; tests that kill it leave it running
    again. Other modules (which reconcile MLServes in-process) never meet it: before it stops,
    it finishes the deletions of its tests' MLServes, so no namespace is left terminating.

    It acts as the Helm chart's ServiceAccount (``mlserve_testing.identity``), so these tests also prove
    the chart's RBAC sufficient; MLSERVE_TEST_OPERATOR_IDENTITY=admin runs it as the admin.
    """
    from mlserve_testing.identity import operator_runs_as_chart

    folder = tmp_path_factory.mktemp("operator")
    port = _free_port()
    db_url = operator_mariadb.url
    if operator_runs_as_chart():
        identity = request.getfixturevalue("chart_identity")
        kubeconfig, own_namespace = identity.kubeconfig, identity.namespace
    else:
        kubeconfig, own_namespace = cluster.kubeconfig, "default"
    env = operator_env(
        kubeconfig, db_url, port, MLSERVE_OPERATOR_NAMESPACE=own_namespace, MLSERVE_METRICS_PORT=str(_free_port())
    )
    process = OperatorProcess(env, folder / "operator.log", port)
    process.start()
    try:
        yield process
    finally:
        if process.running:
            _finish_deletions(kube_client)
        process.stop()


def _finish_deletions(client: Client, timeout: float = 60) -> None:
    """Wait (bounded) until no MLServe of these tests' namespaces is left being deleted."""
    MLServeKind = create_namespaced_resource("mlserve.darwin.io", "v1alpha1", "MLServe", "mlserves")

    def settled() -> bool:
        return not any(
            item["metadata"].get("deletionTimestamp")
            for item in client.list(MLServeKind, namespace="*")
            if str(item["metadata"].get("namespace", "")).startswith(NAMESPACE_PREFIX)
        )

    with contextlib.suppress(AssertionError):  # best effort: the operator stops anyway
        wait_for(settled, timeout=timeout, what="the deletions of the tests' MLServes")


@pytest.fixture
async def operator_db(
    operator_process: OperatorProcess, operator_mariadb: StoppableMariaDB
) -> AsyncIterator[OperatorProcess]:
    """This process connected to the operator's database (the schema is the operator's)."""
    if not operator_mariadb.running:
        operator_mariadb.start()
    operator_process.ensure_running()
    await Tortoise.init(db_url=operator_process.db_url, modules=MODELS)
    try:
        yield operator_process
    finally:
        await Tortoise.close_connections()


@pytest.fixture
async def darwin_rows(operator_mariadb: StoppableMariaDB) -> AsyncIterator[StoppableMariaDB]:
    """This process connected to the operator's database, without an operator running."""
    if not operator_mariadb.running:
        operator_mariadb.start()
    await Tortoise.init(db_url=operator_mariadb.url, modules=MODELS)
    try:
        yield operator_mariadb
    finally:
        await Tortoise.close_connections()


@pytest.fixture
def operator_namespace(kube_client: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one operator test (``op-`` prefix), deleted afterwards."""
    stem = request.node.name.lower().removeprefix("test_").replace("_", "-")
    stem = "".join(c for c in stem if c.isalnum() or c == "-")[:40].strip("-")
    name = f"{NAMESPACE_PREFIX}{stem}-{uuid.uuid4().hex[:6]}"
    kube_client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    check_namespace(kube_client, name)
    try:
        kube_client.delete(Namespace, name)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "operator_process" in getattr(item, "funcargs", {}):
        process: OperatorProcess = item.funcargs["operator_process"]
        report.sections.append(("operator log (tail)", process.log_tail(120)))


def api_error_code(exc: BaseException) -> int | None:
    return exc.status.code if isinstance(exc, ApiError) else None


def monotonic() -> float:
    return time.monotonic()
