"""Pytest plugin: a Kubernetes cluster for the session.

By default the session starts the project's local control plane (``mlserve.operator.dev.cluster``:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok nodes), building
its binaries first when they are missing, and stops it at the end. With
``MLSERVE_TEST_USE_KUBECONFIG=1`` the tests use the cluster named by ``KUBECONFIG`` (for
example kind) instead, unchanged. Nothing is skipped: a cluster that cannot be built or
started makes the tests that need it error, with the failing component's log tail.

Fixtures:
    local_cluster session LocalCluster, or None when the tests use $KUBECONFIG's cluster
    cluster      session  ClusterHandle (kubeconfig path, server URL, .client())
    kube_client  session  a lightkube Client with admin rights
    namespace    function a fresh namespace, deleted afterwards
    second_namespace function another one beside it

Tests that use them are marked ``cluster`` (added here when missing), so
``-m "not cluster"`` leaves them out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from mlserve.operator.dev.cluster import ClusterHandle, DevClusterError, LocalCluster, ensure_binaries
from mlserve_testing.secrets import check_namespace

#: "1": use the cluster of $KUBECONFIG instead of starting one
ENV_USE_KUBECONFIG = "MLSERVE_TEST_USE_KUBECONFIG"
#: how many kwok nodes the local cluster gets
ENV_NODES = "MLSERVE_TEST_CLUSTER_NODES"
DEFAULT_NODES = 2
CLUSTER_FIXTURES = frozenset({"cluster", "kube_client", "namespace", "local_cluster"})
#: tests using this fixture (mlserve_testing.kuberay) need KubeRay's controller built
KUBERAY_FIXTURE = "kuberay_operator"
NAMESPACE_LABEL = "mlserve.darwin.io/test-namespace"

_started_in: list[float] = []
"""The session's local control plane, once started (the fault suite stops and starts its programs)."""
_kept_logs: list[Path] = []
"""Where the control plane's logs were kept, when a test of the session failed."""
_binaries_key = pytest.StashKey["Binaries | DevClusterError"]()


def use_external_cluster() -> bool:
    return os.environ.get(ENV_USE_KUBECONFIG) == "1"


def _external_kubeconfig() -> Path:
    value = os.environ.get("KUBECONFIG", "")
    first = next((p for p in value.split(os.pathsep) if p), "")
    path = Path(first).expanduser() if first else Path.home() / ".kube" / "config"
    if not path.is_file():
        raise DevClusterError(
            f"{ENV_USE_KUBECONFIG}=1 but there is no kubeconfig at {path}; set KUBECONFIG "
            f"(e.g. `kind get kubeconfig > kind.yaml`) or unset {ENV_USE_KUBECONFIG} to use the local control plane"
        )
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or reuse) the binaries before any test runs, outside every test's timeout.

    A first build compiles Kubernetes and takes far longer than one test may; later ones
    take a second. A failure is kept for the cluster fixture to raise, so only the tests
    that need a cluster error.
    """
    config = session.config
    if use_external_cluster() or config.option.collectonly:
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    with_kuberay = any(KUBERAY_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items)
    try:
        config.stash[_binaries_key] = ensure_binaries(with_kuberay=with_kuberay)
    except DevClusterError as exc:
        config.stash[_binaries_key] = exc


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _started_in:
        terminalreporter.write_line(f"local control plane: all ready in {_started_in[0]:.1f} s")
    for kept in _kept_logs:
        terminalreporter.write_line(f"local control plane: a test failed; its programs' logs are kept in {kept}")


def _keep_logs(local: LocalCluster, session: pytest.Session, factory: pytest.TempPathFactory) -> None:
    """Copy the programs' logs out of the temporary state folder when a test failed, so a
    failure of the control plane's own (a controller that never catches up) can be read."""
    if not session.testsfailed or local.state_dir is None or not (local.state_dir / "logs").is_dir():
        return
    kept = factory.getbasetemp() / "cluster-logs"
    shutil.copytree(local.state_dir / "logs", kept, dirs_exist_ok=True)
    _kept_logs.append(kept)


@pytest.fixture(scope="session")
def local_cluster(
    pytestconfig: pytest.Config, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster | None]:
    """The session's local control plane, started here; None with $KUBECONFIG's cluster. When
    a test failed, its programs' logs are kept under pytest's base temporary folder."""
    if use_external_cluster():
        yield None
        return
    binaries = pytestconfig.stash.get(_binaries_key, None)
    if binaries is None:  # not built at collection (e.g. the fixture was reached indirectly)
        binaries = ensure_binaries()
    if isinstance(binaries, DevClusterError):
        raise binaries
    nodes = int(os.environ.get(ENV_NODES, DEFAULT_NODES))
    local = LocalCluster(binaries, nodes=nodes)
    try:
        local.start()
        if local.started_in is not None:
            _started_in.append(local.started_in)
        yield local
    finally:
        with contextlib.suppress(OSError):
            _keep_logs(local, request.session, tmp_path_factory)
        local.stop()


@pytest.fixture(scope="session")
def cluster(local_cluster: LocalCluster | None) -> ClusterHandle:
    """The session's cluster: the local control plane, or $KUBECONFIG's when asked for."""
    if local_cluster is None:
        return ClusterHandle.from_kubeconfig(_external_kubeconfig())
    return local_cluster.handle


@pytest.fixture(scope="session")
def kube_client(cluster: ClusterHandle) -> Iterator[Client]:
    with cluster.client(field_manager="mlserve-tests") as client:
        yield client


@pytest.fixture
def namespace(kube_client: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; its deletion is not waited for."""
    stem = request.node.name.lower().replace("_", "-")
    stem = "".join(c for c in stem if c.isalnum() or c == "-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    kube_client.create(Namespace(metadata=ObjectMeta(name=name, labels={NAMESPACE_LABEL: "true"})))
    yield name
    check_namespace(kube_client, name)
    try:
        kube_client.delete(Namespace, name)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


@pytest.fixture
def second_namespace(kube_client: Client, namespace: str) -> Iterator[str]:
    """Another fresh namespace beside ``namespace``, for a test that needs two; deleted afterwards."""
    name = f"{namespace[:50]}-b"
    kube_client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(ApiError):
        kube_client.delete(Namespace, name)
