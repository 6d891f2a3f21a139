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
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import FIELD_MANAGER, OperatorProcess, install_mlserve_crd, label_nodes, p50_p90_max, start_cluster
from lightkube import Client
from lightkube.types import PatchType
from tortoise import Tortoise

from mlserve.operator.dev import darwin
from mlserve.operator.dev.cluster import LocalCluster
from mlserve.operator.reconcile.kube import MLServe

NAMESPACE = "bench-apply"
ENVIRONMENT = "bench"
RECONCILED = re.compile(r"reconciled (\S+): (\d+) API requests \((\d+) writes")


async def _seed(db_url: str, serves: list[str]) -> None:
    await Tortoise.init(db_url=db_url, modules={"models": ["mlserve.models"]})
    await Tortoise.generate_schemas(safe=True)
    for name in serves:
        await darwin.seed_api_serve(name, ENVIRONMENT, NAMESPACE, versions=("v1",), min_replicas=1, max_replicas=2)
    await Tortoise.close_connections()


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
    operator: OperatorProcess | None = None
    log_file = work / "operator.log"
    try:
        handle, local = start_cluster(args.kubeconfig, args.nodes, work / "cluster")
        client = handle.client(field_manager=FIELD_MANAGER)
        install_mlserve_crd(client, NAMESPACE)
        label_nodes(client)
        runs = [[f"r{run}-s{i}" for i in range(count)] for run, count in enumerate(counts)]
        asyncio.run(_seed(db_url, [name for names in runs for name in names]))
        operator = OperatorProcess(handle.kubeconfig, db_url, log_file, {"MLSERVE_LOG_LEVEL": "DEBUG"})
        operator.start()
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
        if operator is not None:
            operator.stop()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
