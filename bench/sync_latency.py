"""Time from a deployment inserted into the database (as Darwin writes it) to its MLServe Ready.

Starts a local control plane (or uses $KUBECONFIG with --kubeconfig), installs the MLServe
CRD, creates a SQLite database (or uses --db-url), runs the operator as a process (``mlserve
run``), then for each N in --counts inserts N deployments of N API serves in one go and
measures, per MLServe, the time from the insert's commit to ``Ready=True``. Prints the
figures:

    .venv/bin/python bench/sync_latency.py --counts 1,100

The sync interval is a setting (MLSERVE_SYNC_INTERVAL, --sync-interval here): the latency of
one deploy is at most one interval plus one reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from common import FIELD_MANAGER, install_mlserve_crd, p50_p90_max, start_cluster, wait
from lightkube import ApiError, Client

from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.cluster import LocalCluster
from mlserve.operator.dev.darwin import db_now, insert
from mlserve.operator.dev.demo import CLUSTER_NAME, _Operator
from mlserve.operator.reconcile.kube import MLServe

NAMESPACE = "bench"


async def _prepare(db_url: str) -> tuple[int, int]:
    await init_db(DatabaseSettings.from_url(db_url))
    now = db_now()
    user = await insert("users", username="admin", token="t", created_at=now, updated_at=now)
    env = await insert(
        "environments",
        name="bench",
        env_configs={
            "domain_suffix": ".bench.example.com",
            "cluster_name": CLUSTER_NAME,
            "security_group": "sg-1",
            "namespace": NAMESPACE,
        },
        is_protected=False,
        created_at=now,
        updated_at=now,
    )
    return user, env


async def _insert_deployments(run: int, count: int, user: int, env: int) -> tuple[list[str], float]:
    """N serves, each with an artifact, an infra config and an active deployment; returns the
    serve names and the wall-clock time of the last commit."""
    serves: list[str] = []
    for index in range(count):
        now = db_now()
        name = f"b{run}-s{index}"
        serve = await insert(
            "serves", name=name, type="api", space="bench", created_by=user, created_at=now, updated_at=now
        )
        artifact = await insert(
            "artifacts",
            serve_id=serve,
            version="v1",
            github_repo_url="https://git.example.com/b",
            image_url=f"registry.example.com/{name}:v1",
            created_at=now,
            created_by_id=user,
        )
        await insert(
            "api_serve_configs",
            serve_id=serve,
            environment_id=env,
            backend_type="fastapi",
            fast_api_config={"min_replicas": 1, "max_replicas": 1, "cores": 0.1, "memory": 1},
            created_by_id=user,
            updated_by_id=user,
            created_at=now,
            updated_at=now,
        )
        deployment = await insert(
            "deployments",
            serve_id=serve,
            artifact_id=artifact,
            environment_id=env,
            created_by_id=user,
            created_at=now,
            status="ACTIVE",
        )
        await insert(
            "active_deployments",
            deployment_id=deployment,
            environment_id=env,
            serve_id=serve,
            created_at=now,
            updated_at=now,
        )
        serves.append(name)
    return serves, time.monotonic()


def _ready_times(client: Client, wanted: set[str], started: float, timeout: float) -> dict[str, float]:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(wanted) and time.monotonic() < deadline:
        try:
            items = list(client.list(MLServe, namespace=NAMESPACE))
        except ApiError:  # e.g. 429 while the API server (re)initialises the new CRD's storage
            time.sleep(0.2)
            continue
        for item in items:
            serve = (item.get("spec") or {}).get("serve")
            if serve not in wanted or serve in seen:
                continue
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                seen[serve] = time.monotonic() - started
        time.sleep(0.1)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,100", help="comma-separated numbers of deployments (default 1,100)")
    parser.add_argument("--sync-interval", default="1s", help="MLSERVE_SYNC_INTERVAL of the operator (default 1s)")
    parser.add_argument("--kubeconfig", action="store_true", help="use $KUBECONFIG instead of a local control plane")
    parser.add_argument("--db-url", help="a Tortoise URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--log-level", default="WARNING", help="the operator's MLSERVE_LOG_LEVEL (its log is kept)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]

    work = Path(tempfile.mkdtemp(prefix="mlserve-sync-bench-"))
    db_url = args.db_url or f"sqlite://{work / 'darwin.sqlite3'}"
    local: LocalCluster | None = None
    operator: _Operator | None = None
    try:
        handle, local = start_cluster(args.kubeconfig, args.nodes, work / "cluster")
        client = handle.client(field_manager=FIELD_MANAGER)
        install_mlserve_crd(client, NAMESPACE)
        loop = asyncio.new_event_loop()
        user, env = loop.run_until_complete(_prepare(db_url))
        operator = _Operator(
            {**handle.environ(), "MLSERVE_DB_URL": db_url},
            work / "operator.log",
            work / "operator.pid",
            settings={"MLSERVE_SYNC_INTERVAL": args.sync_interval, "MLSERVE_LOG_LEVEL": args.log_level},
        )
        operator.start()
        wait(operator.healthy, 120, "the operator")
        print(
            f"operator up; sync interval {args.sync_interval}; database {db_url.split('://')[0]}; log {operator.log_file}"
        )
        print(f"{'N':>5} {'p50 s':>7} {'p90 s':>7} {'max s':>7} {'all Ready s':>12}")
        for run, count in enumerate(counts):
            serves, committed = loop.run_until_complete(_insert_deployments(run, count, user, env))
            times = _ready_times(client, set(serves), committed, args.timeout)
            if len(times) < count:
                print(
                    f"{count:>5} only {len(times)} of {count} Ready within {args.timeout:g} s (log: {operator.log_file})"
                )
                return 1
            p50, p90, longest = p50_p90_max(list(times.values()))
            print(f"{count:>5} {p50:>7.2f} {p90:>7.2f} {longest:>7.2f} {longest:>12.2f}")
        loop.run_until_complete(close_db())
        return 0
    finally:
        if operator is not None:
            operator.stop()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
