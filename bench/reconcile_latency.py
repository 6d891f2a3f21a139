"""Time from ``kubectl apply`` of MLServes to Ready, and API requests per reconcile.

Starts a local control plane (or uses $KUBECONFIG with --kubeconfig), installs the MLServe
CRD, seeds a SQLite database (or --db-url) with N API serves by plain INSERTs, runs the
operator as a process (``mlserve run``), then for each N in --counts applies N MLServes at
once (server-side apply, as ``kubectl apply --server-side``) and measures, per MLServe, the
time from its apply to ``Ready=True``. The operator logs each reconcile's API requests; the
figures per reconcile are read from that log:

    .venv/bin/python bench/reconcile_latency.py --counts 1,100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import FIELD_MANAGER, db_now, install_mlserve_crd, p50_p90_max, start_cluster, wait
from lightkube import Client
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType
from tortoise import Tortoise

from mlserve.operator.dev.cluster import LocalCluster
from mlserve.operator.reconcile.kube import MLServe

NAMESPACE = "bench-apply"
ENVIRONMENT = "bench"
RECONCILED = re.compile(r"reconciled (\S+): (\d+) API requests \((\d+) writes")


async def _insert(table: str, **columns: Any) -> int:
    conn = Tortoise.get_connection("default")
    mark = "%s" if conn.capabilities.dialect == "mysql" else "?"
    values = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})"
    return int(await conn.execute_insert(sql, values))


async def _seed(db_url: str, serves: list[str]) -> None:
    await Tortoise.init(db_url=db_url, modules={"models": ["mlserve.models"]})
    await Tortoise.generate_schemas(safe=True)
    now = db_now()
    conn = Tortoise.get_connection("default")
    _, rows = await conn.execute_query("SELECT user_id FROM users WHERE username = 'admin'")
    user = (
        rows[0]["user_id"]
        if rows
        else await _insert("users", username="admin", token="t", created_at=now, updated_at=now)
    )
    _, rows = await conn.execute_query(f"SELECT id FROM environments WHERE name = '{ENVIRONMENT}'")
    env = (
        rows[0]["id"]
        if rows
        else await _insert(
            "environments",
            name=ENVIRONMENT,
            env_configs={
                "domain_suffix": ".bench.example.com",
                "cluster_name": "local",
                "security_group": "sg-1",
                "namespace": NAMESPACE,
            },
            is_protected=False,
            created_at=now,
            updated_at=now,
        )
    )
    for name in serves:
        serve = await _insert(
            "serves", name=name, type="api", space="bench", created_by=user, created_at=now, updated_at=now
        )
        await _insert(
            "artifacts",
            serve_id=serve,
            version="v1",
            github_repo_url="https://git.example.com/b",
            image_url=f"registry.example.com/{name}:v1",
            created_at=now,
            created_by_id=user,
        )
        await _insert(
            "api_serve_configs",
            serve_id=serve,
            environment_id=env,
            backend_type="fastapi",
            fast_api_config={
                "min_replicas": 1,
                "max_replicas": 2,
                "cores": 0.1,
                "memory": 1,
                "node_capacity_type": "spot",
            },
            created_by_id=user,
            updated_by_id=user,
            created_at=now,
            updated_at=now,
        )
    await Tortoise.close_connections()


def _install(client: Client) -> None:
    install_mlserve_crd(client, NAMESPACE)
    for node in client.list(Node):
        client.patch(Node, node.metadata.name, {"metadata": {"labels": {"karpenter.sh/capacity-type": "spot"}}})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _ready_times(client: Client, started: dict[str, float], timeout: float) -> dict[str, float]:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(started) and time.monotonic() < deadline:
        for item in client.list(MLServe, namespace=NAMESPACE):
            name = item["metadata"]["name"]
            if name not in started or name in seen:
                continue
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                seen[name] = time.monotonic() - started[name]
        time.sleep(0.05)
    return seen


def _reconcile_figures(log_text: str, names: set[str]) -> tuple[list[int], list[int], list[int]]:
    """(requests of reconciles that wrote, requests of no-op reconciles, writes of those that wrote)."""
    writing, idle, writes = [], [], []
    for ref, requests, wrote in RECONCILED.findall(log_text):
        if ref.split("/", 1)[-1] not in names:
            continue
        if int(wrote):
            writing.append(int(requests))
            writes.append(int(wrote))
        else:
            idle.append(int(requests))
    return writing, idle, writes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,100", help="comma-separated numbers of MLServes (default 1,100)")
    parser.add_argument("--kubeconfig", action="store_true", help="use $KUBECONFIG instead of a local control plane")
    parser.add_argument("--db-url", help="a Tortoise URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]

    work = Path(tempfile.mkdtemp(prefix="mlserve-bench-"))
    db_url = args.db_url or f"sqlite://{work / 'darwin.sqlite3'}"
    local: LocalCluster | None = None
    operator: subprocess.Popen[bytes] | None = None
    log_file = work / "operator.log"
    try:
        handle, local = start_cluster(args.kubeconfig, args.nodes, work / "cluster")
        client = handle.client(field_manager=FIELD_MANAGER)
        _install(client)
        runs = [[f"r{run}-s{i}" for i in range(count)] for run, count in enumerate(counts)]
        asyncio.run(_seed(db_url, [name for names in runs for name in names]))
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")},
            "KUBECONFIG": str(handle.kubeconfig),
            "MLSERVE_DB_URL": db_url,
            "MLSERVE_CLUSTER_NAME": "local",
            "MLSERVE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
            "MLSERVE_LOG_LEVEL": "DEBUG",
        }
        with log_file.open("wb") as log:
            operator = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlserve"), "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait(lambda: _healthy(port), 120, "the operator")
        print(f"operator up; database {db_url.split('://')[0]}; log {log_file}")
        print(
            f"{'N':>5} {'p50 s':>7} {'p90 s':>7} {'max s':>7}  {'req/reconcile (writing)':>24} {'req/reconcile (no-op)':>22}"
        )
        for names in runs:
            started: dict[str, float] = {}
            for name in names:
                body = {
                    "apiVersion": "mlserve.darwin.io/v1alpha1",
                    "kind": "MLServe",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"environment": ENVIRONMENT, "type": "api", "artifactVersion": "v1"},
                }
                started[name] = time.monotonic()
                client.patch(
                    MLServe,
                    name,
                    body,
                    namespace=NAMESPACE,
                    patch_type=PatchType.APPLY,
                    field_manager="kubectl",
                    force=True,
                )
            times = _ready_times(client, started, args.timeout)
            if len(times) < len(names):
                print(f"{len(names):>5} only {len(times)} Ready within {args.timeout:g} s (log: {log_file})")
                return 1
            p50, p90, longest = p50_p90_max(list(times.values()))
            writing, idle, _ = _reconcile_figures(log_file.read_text(errors="replace"), set(names))
            w = f"{statistics.median(writing):.0f} (n={len(writing)})" if writing else "-"
            i = f"{statistics.median(idle):.0f} (n={len(idle)})" if idle else "-"
            print(f"{len(names):>5} {p50:>7.2f} {p90:>7.2f} {longest:>7.2f}  {w:>24} {i:>22}")
        return 0
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
