#!/usr/bin/env python3
"""lightkube against the official Kubernetes clients: the operator's calls, on one control plane.

    python bench/kube_clients.py [--objects 200] [--concurrency 32] [--lists 50]
                                 [--watch 1000] [--nodes 1] [--json out.json]

Why: the operator talks to the API server through lightkube's AsyncClient (async, typed,
generic resources for the CRDs); the design names the official ``kubernetes`` client. This
runs the same calls through

* ``lightkube``: :func:`mlserve.operator.reconcile.kube.make_client`, as the operator does;
* ``kubernetes``: the official client, each call in a thread (``asyncio.to_thread`` on a
  pool of ``--concurrency`` threads, urllib3 pool of the same size);
* ``kubernetes_asyncio``: its asyncio port (aiohttp, pool of ``--concurrency``).

The calls, ``--objects`` of each, ``--concurrency`` at once:

* ``apply``: server-side apply of a Deployment (``application/apply-patch+yaml``, a field
  manager, ``force``), as :func:`~mlserve.operator.reconcile.kube.apply_object` does;
* ``get``: GET of each Deployment;
* ``list``: ``--lists`` LISTs of the client's Deployments by label selector;
* ``status``: a merge PATCH of an MLServe's status subresource (the CRD of ``crds/``).

Then a watch of ``--watch`` Deployments (by label selector, from the start: one ADDED event
each), kept in a dict as the operator's cache keeps them. Before the timed calls, each client
makes ``--concurrency`` LISTs at once (not timed) to open its connections. Each client runs in its own
process, twice: once timed (wall time, p50/p95 per call, resident memory: after import and
client, after the calls, after the watch), once under ``tracemalloc`` (its peak for the
calls and for the watch; tracemalloc slows Python down, so that run is not timed). Ratios
are to lightkube (above 1: lightkube is faster or smaller). The watch's RSS delta can be
negative: memory the calls freed is given back during the watch. A shared machine makes single
figures noisy; the ratios, measured in one run, are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CLIENTS = ("lightkube", "kubernetes", "kubernetes_asyncio")
FIELD_MANAGER = "mlserve-bench"
SERVE_NS = "bench-serves"
WATCH_NS = "bench-watch"
SET_LABEL = "bench.mlserve.darwin.io/set"
GROUP, VERSION, PLURAL = "mlserve.darwin.io", "v1alpha1", "mlserves"


def deployment(name: str, namespace: str, label: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, SET_LABEL: label}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "image": "registry.invalid/serve:1",
                            "ports": [{"containerPort": 8000, "name": "http"}],
                            "env": [{"name": "SERVE", "value": name}, {"name": "ENVIRONMENT", "value": "bench"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ]
                },
            },
        },
    }


def status_patch(client: str, i: int) -> dict[str, Any]:
    return {"status": {"observedGeneration": 1, "phase": "Ready" if i % 2 else "Deploying", "message": client}}


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (as bench/common.py's, which the workers do not import:
    it imports lightkube, whose memory counts for the lightkube worker only)."""
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the three clients, each behind the same five calls ---------------------------------------


class Calls:
    namespace: str

    async def apply(self, body: dict[str, Any]) -> None: ...
    async def get(self, name: str) -> None: ...
    async def list(self) -> int: ...
    async def status(self, name: str, body: dict[str, Any]) -> None: ...
    async def watch(self, namespace: str, count: int) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class Lightkube(Calls):
    async def setup(self, concurrency: int) -> None:
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.types import PatchType

        from mlserve.operator.reconcile.kube import MLServe, make_client

        self.Deployment, self.MLServe, self.PatchType = Deployment, MLServe, PatchType
        self.client = make_client(FIELD_MANAGER)

    async def apply(self, body: dict[str, Any]) -> None:
        await self.client.patch(
            self.Deployment,
            body["metadata"]["name"],
            body,
            namespace=self.namespace,
            patch_type=self.PatchType.APPLY,
            force=True,
        )

    async def get(self, name: str) -> None:
        await self.client.get(self.Deployment, name, namespace=self.namespace)

    async def list(self) -> int:
        labels = {SET_LABEL: self.namespace}
        return len([d async for d in self.client.list(self.Deployment, namespace=self.namespace, labels=labels)])

    async def status(self, name: str, body: dict[str, Any]) -> None:
        # as the operator writes an MLServe's status (reconcile/status.py)
        await self.client.patch(self.MLServe.Status, name, body, namespace=SERVE_NS, patch_type=self.PatchType.MERGE)

    async def watch(self, namespace: str, count: int) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async for _, item in self.client.watch(self.Deployment, namespace=namespace, labels={SET_LABEL: namespace}):
            seen[item.metadata.name] = item
            if len(seen) >= count:
                break
        return seen

    async def close(self) -> None:
        await self.client.close()


class Official(Calls):
    """The official client; its blocking calls run on a pool of ``concurrency`` threads."""

    async def setup(self, concurrency: int) -> None:
        import kubernetes

        self.k = kubernetes
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=config)
        config.connection_pool_maxsize = concurrency
        self.api_client = kubernetes.client.ApiClient(config)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.pool = ThreadPoolExecutor(concurrency)
        asyncio.get_running_loop().set_default_executor(self.pool)

    async def apply(self, body: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.apps.patch_namespaced_deployment,
            body["metadata"]["name"],
            self.namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def get(self, name: str) -> None:
        await asyncio.to_thread(self.apps.read_namespaced_deployment, name, self.namespace)

    async def list(self) -> int:
        listing = await asyncio.to_thread(
            self.apps.list_namespaced_deployment, self.namespace, label_selector=f"{SET_LABEL}={self.namespace}"
        )
        return len(listing.items)

    async def status(self, name: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            SERVE_NS,
            PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    async def watch(self, namespace: str, count: int) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            watch = self.k.watch.Watch()
            for event in watch.stream(
                self.apps.list_namespaced_deployment, namespace, label_selector=f"{SET_LABEL}={namespace}"
            ):
                item = event["object"]
                seen[item.metadata.name] = item
                if len(seen) >= count:
                    watch.stop()
                    break
            return seen

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        self.api_client.close()
        self.pool.shutdown()


class OfficialAsyncio(Calls):
    async def setup(self, concurrency: int) -> None:
        import kubernetes_asyncio

        self.k = kubernetes_asyncio
        config = kubernetes_asyncio.client.Configuration()
        await kubernetes_asyncio.config.load_kube_config(
            config_file=os.environ["KUBECONFIG"], client_configuration=config
        )
        config.connection_pool_maxsize = concurrency
        self.api_client = kubernetes_asyncio.client.ApiClient(config)
        self.apps = kubernetes_asyncio.client.AppsV1Api(self.api_client)
        self.custom = kubernetes_asyncio.client.CustomObjectsApi(self.api_client)

    async def apply(self, body: dict[str, Any]) -> None:
        await self.apps.patch_namespaced_deployment(
            body["metadata"]["name"],
            self.namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def get(self, name: str) -> None:
        await self.apps.read_namespaced_deployment(name, self.namespace)

    async def list(self) -> int:
        listing = await self.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"{SET_LABEL}={self.namespace}"
        )
        return len(listing.items)

    async def status(self, name: str, body: dict[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, SERVE_NS, PLURAL, name, body, _content_type="application/merge-patch+json"
        )

    async def watch(self, namespace: str, count: int) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        watch = self.k.watch.Watch()
        stream = watch.stream(
            self.apps.list_namespaced_deployment, namespace, label_selector=f"{SET_LABEL}={namespace}"
        )
        async with stream:
            async for event in stream:
                item = event["object"]
                seen[item.metadata.name] = item
                if len(seen) >= count:
                    watch.stop()
                    break
        return seen

    async def close(self) -> None:
        await self.api_client.close()


IMPLEMENTATIONS: dict[str, type[Lightkube | Official | OfficialAsyncio]] = {
    "lightkube": Lightkube,
    "kubernetes": Official,
    "kubernetes_asyncio": OfficialAsyncio,
}


# --- one client in its own process ----------------------------------------------------------------


async def _timed(count: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    """``count`` calls, ``concurrency`` at once: wall time and per-call latencies (ms)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            began = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - began
    return {"wall_s": wall, "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95)}


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    traced = args.tracemalloc
    # What make_client's module imports besides lightkube, httpx2 and its own small modules is
    # loaded before the baseline in every worker, so the memory measured is the client library's.
    import prometheus_client  # noqa: F401

    import mlserve.models.backend
    import mlserve.operator.spec.api  # noqa: F401

    if traced:
        tracemalloc.start()
    base = rss_mib()
    client = IMPLEMENTATIONS[args.worker]()
    await client.setup(args.concurrency)
    client.namespace = args.namespace
    result: dict[str, Any] = {"rss_client_mib": rss_mib() - base}
    bodies = [deployment(f"serve-{i}", args.namespace, args.namespace) for i in range(args.objects)]
    names = [body["metadata"]["name"] for body in bodies]
    # warm-up, not timed: the connections opened, the first (de)serialisations done
    await _timed(args.concurrency, args.concurrency, lambda i: client.list())
    if traced:
        tracemalloc.reset_peak()
        start_traced = tracemalloc.get_traced_memory()[0]
    calls = {
        "apply": _timed(args.objects, args.concurrency, lambda i: client.apply(bodies[i])),
        "get": _timed(args.objects, args.concurrency, lambda i: client.get(names[i])),
        "list": _timed(args.lists, args.concurrency, lambda i: client.list()),
        "status": _timed(
            args.objects, args.concurrency, lambda i: client.status(f"serve-{i}", status_patch(args.worker, i))
        ),
    }
    for call, timing in calls.items():
        result[call] = await timing
    listed = await client.list()
    if listed != args.objects:
        raise SystemExit(f"{args.worker}: listed {listed} Deployments, expected {args.objects}")
    result["rss_calls_mib"] = rss_mib() - base
    if traced:
        result["tracemalloc_calls_mib"] = (tracemalloc.get_traced_memory()[1] - start_traced) / 2**20
        tracemalloc.reset_peak()
        start_traced = tracemalloc.get_traced_memory()[0]
    if args.watch:
        before = rss_mib()
        began = time.perf_counter()
        seen = await client.watch(WATCH_NS, args.watch)
        result["watch_s"] = time.perf_counter() - began
        result["rss_watch_mib"] = rss_mib() - before
        if traced:
            result["tracemalloc_watch_mib"] = (tracemalloc.get_traced_memory()[1] - start_traced) / 2**20
        if len(seen) != args.watch:
            raise SystemExit(f"{args.worker}: the watch gave {len(seen)} objects, expected {args.watch}")
        del seen
    await client.close()
    return result


def run_worker(name: str, args: argparse.Namespace, kubeconfig: Path, traced: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--namespace",
        f"bench-{name.replace('_', '-')}",
        "--objects",
        str(args.objects),
        "--concurrency",
        str(args.concurrency),
        "--lists",
        str(args.lists),
        "--watch",
        str(args.watch),
    ]
    if traced:
        command.append("--tracemalloc")
    done = subprocess.run(
        command, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the control plane and the report -----------------------------------------------------------


def _seed(handle: Any, args: argparse.Namespace, clients: list[str]) -> None:
    """The MLServe CRD, the MLServes whose status the clients patch, the Deployments they watch."""
    from common import ensure_namespace, install_mlserve_crd
    from lightkube import codecs
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.types import PatchType

    from mlserve.operator.reconcile.kube import MLServe

    client = handle.client(field_manager=FIELD_MANAGER)
    install_mlserve_crd(client, SERVE_NS)
    for name in clients:
        ensure_namespace(client, f"bench-{name.replace('_', '-')}")
    ensure_namespace(client, WATCH_NS)

    def serve(i: int) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MLServe",
            "metadata": {"name": f"serve-{i}", "namespace": SERVE_NS},
            "spec": {"environment": "bench", "type": "api", "artifactVersion": "v1"},
        }
        client.patch(MLServe, f"serve-{i}", body, namespace=SERVE_NS, patch_type=PatchType.APPLY, force=True)

    def watched(i: int) -> None:
        obj = codecs.from_dict(deployment(f"watched-{i}", WATCH_NS, WATCH_NS))
        client.patch(Deployment, f"watched-{i}", obj, namespace=WATCH_NS, patch_type=PatchType.APPLY, force=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(serve, range(args.objects)))
        list(pool.map(watched, range(args.watch)))


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def report(results: dict[str, dict[str, Any]]) -> None:
    ref = results["lightkube"]
    print(f"\n{'client':<19} {'call':<7} {'wall s':>7} {'p50 ms':>7} {'p95 ms':>7} {'wall/lightkube':>15}")
    for name, result in results.items():
        for call in ("apply", "get", "list", "status"):
            t = result[call]
            ratio = _ratio(t["wall_s"], ref[call]["wall_s"])
            print(f"{name:<19} {call:<7} {t['wall_s']:>7.2f} {t['p50_ms']:>7.1f} {t['p95_ms']:>7.1f} {ratio:>15}")
    print(
        f"\n{'client':<19} {'RSS client':>11} {'RSS +calls':>11} {'tracemalloc':>12} "
        f"{'watch s':>8} {'RSS watch':>10} {'tracemalloc':>12}"
    )
    print(f"{'':<19} {'MiB':>11} {'MiB':>11} {'calls MiB':>12} {'':>8} {'MiB':>10} {'watch MiB':>12}")
    for name, r in results.items():
        print(
            f"{name:<19} {r['rss_client_mib']:>11.1f} {r['rss_calls_mib']:>11.1f} "
            f"{r.get('tracemalloc_calls_mib', 0):>12.1f} {r.get('watch_s', 0):>8.2f} "
            f"{r.get('rss_watch_mib', 0):>10.1f} {r.get('tracemalloc_watch_mib', 0):>12.1f}"
        )
    print("\nratio to lightkube (above 1: lightkube is faster or smaller)")
    keys = ("rss_client_mib", "rss_calls_mib", "tracemalloc_calls_mib", "watch_s", "tracemalloc_watch_mib")
    for name, r in results.items():
        if name == "lightkube":
            continue
        walls = " ".join(f"{c} {_ratio(r[c]['wall_s'], ref[c]['wall_s'])}" for c in ("apply", "get", "list", "status"))
        memory = " ".join(f"{k.removesuffix('_mib')} {_ratio(r.get(k, 0), ref.get(k, 0))}" for k in keys)
        print(f"{name:<19} wall: {walls}; {memory}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lists", type=int, default=50, help="LISTs of the client's Deployments")
    parser.add_argument("--watch", type=int, default=1000, help="Deployments watched (0: no watch)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, lightkube first")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--kubeconfig", action="store_true", help="use the cluster of $KUBECONFIG")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(args))))
        return 0

    from common import start_cluster

    clients = args.clients.split(",")
    if clients[0] != "lightkube" or any(c not in CLIENTS for c in clients):
        parser.error(f"--clients: lightkube first, then any of {', '.join(CLIENTS[1:])}")
    with tempfile.TemporaryDirectory(prefix="mlserve-bench-") as folder:
        handle, local = start_cluster(args.kubeconfig, args.nodes, Path(folder) / "cluster")
        try:
            began = time.monotonic()
            _seed(handle, args, clients)
            print(
                f"seeded {args.objects} MLServes and {args.watch} watched Deployments in {time.monotonic() - began:.1f} s"
            )
            results: dict[str, dict[str, Any]] = {}
            for name in clients:
                results[name] = run_worker(name, args, handle.kubeconfig, traced=False)
                traced = run_worker(name, args, handle.kubeconfig, traced=True)
                results[name].update({k: v for k, v in traced.items() if k.startswith("tracemalloc")})
                print(f"{name}: done")
        finally:
            if local is not None:
                local.stop()
    report(results)
    if args.json:
        settings = {k: getattr(args, k) for k in ("objects", "concurrency", "lists", "watch")}
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
