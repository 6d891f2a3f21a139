"""The end-to-end suite on kind: the operator in-cluster from its image (installed with the
Helm chart by ``mlserve dev kind up``), MariaDB in the cluster, serves' pods really running.

Run by ``scripts/e2e-kind``, which sets ``MLSERVE_KIND_STATE_DIR`` (the kubeconfig, the
database passwords, the images) and ``MLSERVE_TEST_USE_KUBECONFIG=1``. The default test run
does not descend into this folder (``norecursedirs``); ``pytest tests/kind`` without a
cluster errors with what to run.

The tests write Darwin's rows as Darwin does (plain SQL, ``mlserve_testing.darwin``) through a
``kubectl port-forward`` to the cluster's MariaDB, as the migration user (Darwin's own account).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client

from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.cluster import binary_dir
from mlserve.operator.dev.cluster.process import ManagedProcess, log_tail
from mlserve.operator.dev.kind import install

ENV_STATE = "MLSERVE_KIND_STATE_DIR"
PORT_FORWARD_TIMEOUT = 30.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.kind)
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def kind_state() -> Path:
    value = os.environ.get(ENV_STATE)
    if not value or not (Path(value) / "kubeconfig").is_file():
        pytest.fail(
            f"{ENV_STATE} names no kind cluster's state: run the suite with scripts/e2e-kind "
            '(or `eval "$(mlserve dev kind up)"` first)',
            pytrace=False,
        )
    if os.environ.get("MLSERVE_TEST_USE_KUBECONFIG") != "1":
        pytest.fail("MLSERVE_TEST_USE_KUBECONFIG=1 is needed: the tests run against the kind cluster", pytrace=False)
    return Path(value)


@pytest.fixture(scope="session")
def kind_images(kind_state: Path) -> dict[str, str]:
    return dict(json.loads((kind_state / "images.json").read_text()))


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return binary_dir() / "kubectl"


@pytest.fixture(scope="session")
def database_port(kind_state: Path, kubectl: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A local port forwarded to the cluster's MariaDB Service."""
    log = tmp_path_factory.mktemp("port-forward") / "kubectl.log"
    process = ManagedProcess(
        "kubectl port-forward",
        [
            str(kubectl),
            "--kubeconfig",
            str(kind_state / "kubeconfig"),
            "port-forward",
            "--address",
            "127.0.0.1",
            "-n",
            install.DB_NAMESPACE,
            f"service/{install.DB_SERVICE}",
            ":3306",
        ],
        log,
    ).start()
    deadline = time.monotonic() + PORT_FORWARD_TIMEOUT
    port = None
    while port is None:
        process.check()
        found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", log.read_text() if log.exists() else "")
        if found:
            port = int(found[1])
        elif time.monotonic() > deadline:
            process.stop()
            pytest.fail(f"kubectl port-forward did not start within {PORT_FORWARD_TIMEOUT:g} s:\n{log_tail(log)}")
        else:
            time.sleep(0.2)
    try:
        yield port
    finally:
        process.stop()


@pytest.fixture(scope="session")
def darwin_settings(kind_state: Path, database_port: int) -> DatabaseSettings:
    password = json.loads((kind_state / install.CREDENTIALS_FILE).read_text())[install.MIGRATE_USER]
    return DatabaseSettings.from_env(
        {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(database_port),
            "MYSQL_USERNAME": install.MIGRATE_USER,
            "MYSQL_PASSWORD": password,
            "MYSQL_DATABASE": install.DB_NAME,
        }
    )


@pytest.fixture
async def darwin_db(darwin_settings: DatabaseSettings) -> AsyncIterator[DatabaseSettings]:
    """Tortoise connected to the cluster's database (the schema the chart's migration Job made)."""
    await init_db(darwin_settings, create_schema=False)
    try:
        yield darwin_settings
    finally:
        await close_db()


def env_configs(namespace: str) -> dict[str, Any]:
    """An environment bound to the kind release (its clusterName) in ``namespace``."""
    from mlserve_testing import darwin

    return darwin.env_configs(namespace, cluster=install.CLUSTER_NAME)


@pytest.fixture(scope="session")
def kube(kube_client: Client) -> Client:
    return kube_client
