"""A hung MariaDB (SIGSTOP: its connections stay open and nothing answers, as a half-open
connection looks) under the operator as it runs (``mlserve run``), on a server of its own.

* With the default arrangement (each database call under MLSERVE_DB_TIMEOUT), the sync loop
  keeps ticking: each tick fails after the timeout, liveness stays green (a restart would not
  bring the database back), and after SIGCONT a deploy reaches the cluster.
* When no timeout can rescue the loop (here: timeouts of an hour), the heartbeat goes stale and
  the liveness endpoint fails, so the kubelet would restart the pod; after SIGCONT the loop
  beats again and liveness recovers.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lightkube import Client
from mlserve_testing import darwin
from mlserve_testing.faults import record
from mlserve_testing.mariadb import MariaDBServer, start_mariadb
from mlserve_testing.mlserves import get, unique, wait_condition
from mlserve_testing.operator import MODELS, OperatorProcess, _free_port, operator_env
from mlserve_testing.wait import wait_for
from tortoise import Tortoise

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]


@pytest.fixture
def hung_server(tmp_path: Path) -> Iterator[MariaDBServer]:
    server = start_mariadb(tmp_path / "mariadb")
    try:
        yield server
    finally:
        server.thaw()
        server.stop()


@pytest.fixture
async def database_url(hung_server: MariaDBServer) -> AsyncIterator[str]:
    url = hung_server.url(await hung_server.create_database("hung"))
    yield url
    await Tortoise.close_connections()


def _operator(cluster: object, url: str, tmp_path: Path, namespace: str, **settings: str) -> OperatorProcess:
    port = _free_port()
    env = operator_env(cluster.kubeconfig, url, port, MLSERVE_NAMESPACES=namespace, **settings)  # type: ignore[attr-defined]
    return OperatorProcess(env, tmp_path / "operator.log", port)


def _health(process: OperatorProcess) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{process.port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def test_a_hung_database_times_out_and_the_sync_recovers(
    cluster: object,
    mlserve_crd: None,
    kube_client: Client,
    namespace: str,
    hung_server: MariaDBServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    process = _operator(cluster, database_url, tmp_path, namespace, MLSERVE_SYNC_INTERVAL="1s", MLSERVE_DB_TIMEOUT="1s")
    process.start()
    try:
        await Tortoise.init(db_url=database_url, modules=MODELS)
        serve, env = unique("hung"), unique("dev")
        seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
        first = await darwin.deploy(seed, "v1")
        name = names.mlserve_name(serve, env)
        wait_condition(kube_client, name, namespace, "Ready", timeout=90)
        await Tortoise.close_connections()

        hung_server.freeze()
        frozen = time.monotonic()
        try:
            wait_for(
                lambda: "database sync: the database did not answer" in process.log_text(),
                timeout=30,
                what="the sync's ticks to time out",
            )
            assert process.running and _health(process) == 200, "a hung database is no reason to restart"
        finally:
            hung_server.thaw()
        thawed = time.monotonic()

        await Tortoise.init(db_url=database_url, modules=MODELS)
        second = await darwin.deploy(seed, "v2")
        wait_for(
            lambda: get(kube_client, name, namespace).get("status", {}).get("deploymentId") == second,
            timeout=60,
            what=f"{name} to follow deployment {second} after the database came back (was {first})",
        )
        assert "database sync recovered" in process.log_text()
        assert _health(process) == 200
        record(
            "MariaDB hung (SIGSTOP) under the sync",
            1,
            survived=process.running,
            converge_seconds=time.monotonic() - thawed,
            note=f"frozen {thawed - frozen:.1f} s",
        )
    finally:
        process.stop()


async def test_a_stuck_sync_loop_fails_liveness_until_it_moves_again(
    cluster: object,
    mlserve_crd: None,
    namespace: str,
    hung_server: MariaDBServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    process = _operator(
        cluster,
        database_url,
        tmp_path,
        namespace,
        MLSERVE_SYNC_INTERVAL="1s",
        MLSERVE_DB_TIMEOUT="1h",
        MLSERVE_SYNC_TICK_TIMEOUT="1h",
        MLSERVE_SYNC_STALL_TIMEOUT="4s",
    )
    process.start()
    try:
        assert _health(process) == 200
        hung_server.freeze()
        try:
            # kopf keeps a probe's result for 10 s: the failure shows within the stall
            # timeout plus that.
            wait_for(lambda: _health(process) == 500, timeout=45, what="the liveness endpoint to fail")
        finally:
            hung_server.thaw()
        wait_for(lambda: _health(process) == 200, timeout=45, what="the liveness endpoint to recover")
    finally:
        process.stop()
