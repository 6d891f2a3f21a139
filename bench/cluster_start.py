#!/usr/bin/env python3
"""Measure the local control plane: warm build check, start to all-ready, memory, version.

    .venv/bin/python bench/cluster_start.py [--nodes 3] [--runs 3]

Each run starts a fresh cluster (new state, new etcd) with the cached binaries and times
it from the first process started to all-ready (API server /readyz, controller manager
and scheduler /healthz, every node Ready, ServiceAccount default/default present), then
sums the resident memory of its processes and stops it.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mlserve.operator.dev.cluster import LocalCluster, ensure_binaries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    began = time.monotonic()
    binaries = ensure_binaries()
    print(f"build check (cached binaries): {time.monotonic() - began:.1f} s")

    starts = []
    for run in range(1, args.runs + 1):
        with LocalCluster(binaries, nodes=args.nodes) as cluster:
            assert cluster.started_in is not None
            starts.append(cluster.started_in)
            rss = cluster.rss_bytes() / 2**20
            version = cluster.handle.version()
            print(
                f"run {run}: all ready in {cluster.started_in:.1f} s with {args.nodes} nodes; "
                f"RSS {rss:.0f} MiB; /version {version['gitVersion']} (built {version['buildDate']})"
            )
    median, worst = statistics.median(starts), max(starts)
    print(f"start to all-ready: median {median:.1f} s, max {worst:.1f} s over {args.runs} run(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
