"""How the operator holds up with N serves: one run on the local control plane, a table and JSON.

    nice -n 10 .venv/bin/python bench/scale.py --serves 100 [--db mariadb] [--env MLSERVE_X=...]

Starts a local control plane (3 kwok nodes), a Darwin database (a SQLite file, or a throwaway
MariaDB server with ``--db mariadb``) seeded with N API serves (a serve, two artifacts and an
infra config each), then measures, in this order:

1. floor: server-side apply of the MLServes and children the operator would write, rendered by
   the operator's own renderers from the same rows, with the operator's client (lightkube
   AsyncClient, ``make_client``), 32 serves at once. The deployments are not written yet, so
   each serve's id stands in for its deployment id (one label and one annotation). They go to
   a namespace of their own, deleted (and waited for) before the operator starts.
2. converge: the operator started (``mlserve run``, as a ServiceAccount with cluster-admin
   rights so the API server's audit log sees its requests), then N deploys written to the
   database as Darwin writes them (plain SQL) → every MLServe ``Synced`` for its deployment;
   the ratio to the floor, the operator's RSS, its API requests and the "database did not
   answer" lines of its log meanwhile.
3. latency: with N converged, single deploys (a new version of one serve) at a steady rate →
   ``Synced`` for that deployment (status ``deploymentId`` at the current generation), from
   the database commit: p50, p95, max.
4. idle: over a window (``--idle-seconds``), the operator's API requests by verb (LISTs and
   writes apart) and, on MariaDB, the database statements (the server's ``Questions`` and
   ``Com_*`` counters, less this script's own), per sync tick. SQLite has no server counters:
   not counted.
5. restart: SIGKILL, start again with N converged; writes and LISTs within ``--restart-seconds``,
   and the time to idle: from the start to the last write, and any LIST right after it, that
   10 s without a write or LIST follow (periodic LISTs after that quiet are the idle phase's).
6. memory: the RSS at converge; with ``--memory-points 1000,5000,10000`` the operator is
   restarted with that many MLServes in all (MLServes only: the added ones are paused, so it
   reads the database and writes their status but applies no children) and the RSS and its
   slope per 1,000 MLServes are reported.

``--env KEY=VALUE`` passes a setting to the operator (and to the floor's renderers);
``--skip floor,latency,idle,restart`` leaves phases out. Logs and the JSON stay in the work
folder printed at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common import (
    FIELD_MANAGER,
    MLServeWatch,
    OperatorProcess,
    ensure_namespace,
    install_mlserve_crd,
    label_nodes,
    operator_identity,
    percentile,
    start_cluster,
    wait,
)
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Namespace

from mlserve.models import Artifact, Environment, Serve
from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev import darwin
from mlserve.operator.dev.cluster import LocalCluster, names
from mlserve.operator.dev.cluster.audit import WRITE_VERBS, read_events, started_requests, when
from mlserve.operator.dev.mariadb import MariaDBServer, start_mariadb
from mlserve.operator.reconcile.apply import Owner, stamp
from mlserve.operator.reconcile.context import load_context
from mlserve.operator.reconcile.kube import MLServe, apply_object, make_client, resource_for
from mlserve.operator.reconcile.sync_plan import ActiveRow, new_mlserve
from mlserve.operator.render import render_children
from mlserve.operator.render.names import mlserve_name
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import MLServeSpec, ServeContext
from mlserve.operator.spec import api as spec_api

NAMESPACE = "bench"
FLOOR_NAMESPACE = "bench-floor"
MEMORY_NAMESPACE = "bench-memory"
MEMORY_ENVIRONMENT = "bench-memory"
ENVIRONMENT = "bench"
OPERATOR_NAMESPACE = "mlserve-bench-system"
CONCURRENCY = 32
DB_WARNING = "did not answer"
#: a restarted operator is idle once this long passes without a write or a LIST
QUIET_SECONDS = 10.0
SKIPPABLE = ("floor", "latency", "idle", "restart")

T = TypeVar("T")


@dataclass
class Seeded:
    """The rows of one environment's serves."""

    environment: str
    namespace: str
    serves: dict[str, darwin.Seed] = field(default_factory=dict)


async def seed(prefix: str, count: int, environment: str, namespace: str, versions: tuple[str, ...]) -> Seeded:
    """``count`` API serves with their artifacts and an infra config (1 to 2 replicas: a
    Deployment, a Service, an HPA and an Ingress each) in ``environment``."""
    seeded = Seeded(environment, namespace)
    for index in range(count):
        name = f"{prefix}{index}"
        seeded.serves[name] = await darwin.seed_api_serve(
            name, environment, namespace, versions=versions, min_replicas=1, max_replicas=2
        )
    return seeded


# --- 1. floor ------------------------------------------------------------------------------------


async def _contexts(seeded: Seeded) -> dict[str, ServeContext]:
    """What the renderers get for each serve, read by the operator's own ``load_context``."""
    out = {}
    for name, rows in seeded.serves.items():
        serve = await Serve.get(id=rows.serve)
        environment = await Environment.get(id=rows.environment)
        artifact = await Artifact.get(id=rows.artifacts["v1"])
        context = await load_context(serve, environment, artifact, None)
        out[name] = context.model_copy(update={"deployment_id": rows.serve})  # stand-in, see the docstring
    return out


async def floor(seeded: Seeded, settings: OperatorSettings) -> dict[str, Any]:
    contexts = await _contexts(seeded)
    client = make_client(settings.field_manager)
    gate = asyncio.Semaphore(CONCURRENCY)
    objects = 0

    async def one(name: str, context: ServeContext) -> None:
        nonlocal objects
        row = ActiveRow(name, "api", seeded.environment, FLOOR_NAMESPACE, seeded.serves[name].serve, "v1")
        body = new_mlserve(row)
        # no operator watches the floor's namespace to release a finalizer, and it is deleted
        body["metadata"].pop("finalizers", None)
        async with gate:
            live = await apply_object(
                client, MLServe, body, namespace=FLOOR_NAMESPACE, field_manager=settings.field_manager, what=name
            )
            meta = live["metadata"]
            owner = Owner(spec_api.API_VERSION, spec_api.KIND, meta["name"], FLOOR_NAMESPACE, meta["uid"])
            children = render_children(context, MLServeSpec.from_resource(live), settings.render)
            for manifest in children:
                child = stamp(manifest, owner)
                await apply_object(
                    client,
                    resource_for(child),
                    child,
                    namespace=FLOOR_NAMESPACE,
                    field_manager=settings.field_manager,
                    what=f"{child['kind']}/{child['metadata']['name']}",
                )
            objects += 1 + len(children)

    began = time.monotonic()
    try:
        await asyncio.gather(*(one(name, context) for name, context in contexts.items()))
    finally:
        await client.close()
    seconds = time.monotonic() - began
    return {"seconds": seconds, "objects": objects, "mlserves": len(contexts), "concurrency": CONCURRENCY}


def delete_namespace(client: Client, namespace: str, timeout: float) -> float:
    began = time.monotonic()
    client.delete(Namespace, namespace)

    def gone() -> bool:
        try:
            client.get(Namespace, namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return True
            raise
        return False

    wait(gone, timeout, f"namespace {namespace} to be deleted")
    return time.monotonic() - began


# --- the audit log -------------------------------------------------------------------------------


@dataclass
class Audit:
    """The operator's requests in the API server's audit log, read on from a mark."""

    log: Path
    username: str
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0

    def since_mark(self) -> list[dict[str, Any]]:
        """The requests started since the mark (the mark moves on)."""
        events, self.offset = read_events(self.log, self.username, self.offset)
        return started_requests(events)


def by_verb(requests: Iterable[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(collections.Counter(str(r["verb"]) for r in requests).items()))


def _writes(verbs: Mapping[str, int]) -> int:
    return sum(n for verb, n in verbs.items() if verb in WRITE_VERBS)


# --- database statements (MariaDB) ---------------------------------------------------------------


async def mysql_counters() -> dict[str, int] | None:
    """The server's ``Questions`` and ``Com_*`` counters; None on SQLite."""
    from tortoise import Tortoise

    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect != "mysql":
        return None
    _, rows = await conn.execute_query(
        "SHOW GLOBAL STATUS WHERE Variable_name = 'Questions' OR Variable_name LIKE 'Com\\_%'"
    )
    return {str(r["Variable_name"]): int(r["Value"]) for r in rows}


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """What the operator sent between two readings: the second reading's own SHOW is left out."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    delta["Questions"] -= 1
    delta["Com_show_status"] -= 1
    return {k: v for k, v in sorted(delta.items()) if v}


# --- the run -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="mlserve-scale-"))
        self.loop = asyncio.new_event_loop()
        self.settings_env = dict(_pairs(args.env))
        self.results: dict[str, Any] = {"serves": args.serves, "db": args.db, "settings": self.settings_env}
        self.rows: list[tuple[str, str]] = []
        self.local: LocalCluster | None = None
        self.mariadb: MariaDBServer | None = None
        self.operator: OperatorProcess | None = None
        self.json_path = Path(args.json) if args.json else self.work / "scale.json"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def row(self, phase: str, figure: str) -> None:
        """Print a figure as soon as it is known, and keep the JSON up to date: a run stopped
        part-way keeps what it measured."""
        self.rows.append((phase, figure))
        print(f"  {phase:<9} {figure}", flush=True)
        self.json_path.write_text(json.dumps(self.results, indent=2) + "\n")

    def database_url(self) -> str:
        if self.args.db == "sqlite":
            return f"sqlite://{self.work / 'darwin.sqlite3'}"
        self.mariadb = start_mariadb(self.work / "mariadb")
        return self.mariadb.url(self.run(self.mariadb.create_database("darwin")))

    def main(self) -> int:
        args = self.args
        print(f"work folder {self.work}; {args.serves} serves; database {args.db}", flush=True)
        # SIGTERM stops the run as Ctrl-C does: the operator, the cluster and the database too
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return self._main()
        finally:
            if self.operator is not None:
                self.operator.stop()
            if self.local is not None:
                self.local.stop()
            if self.mariadb is not None:
                self.mariadb.stop()
            self.run(close_db())
            self.loop.close()

    def _main(self) -> int:
        args = self.args
        skip = set(args.skip)
        db_url = self.database_url()
        handle, self.local = start_cluster(False, args.nodes, self.work / "cluster")
        os.environ["KUBECONFIG"] = str(handle.kubeconfig)  # make_client (the floor) reads it
        client = handle.client(field_manager=FIELD_MANAGER)
        install_mlserve_crd(client, NAMESPACE)
        label_nodes(client)
        username, kubeconfig = operator_identity(client, handle.kubeconfig, self.work, OPERATOR_NAMESPACE)
        audit = Audit(handle.kubeconfig.parent / names.AUDIT_LOG, username)
        self.operator = OperatorProcess(kubeconfig, db_url, self.work / "operator.log", self.settings_env)
        settings = OperatorSettings.from_env(self.operator.env)

        self.run(init_db(DatabaseSettings.from_url(db_url)))
        began = time.monotonic()
        seeded = self.run(seed("s", args.serves, ENVIRONMENT, NAMESPACE, ("v1", "v2")))
        self.results["seed_seconds"] = time.monotonic() - began
        print(f"seeded {args.serves} serves in {self.results['seed_seconds']:.1f} s; phases:", flush=True)

        if "floor" not in skip:
            ensure_namespace(client, FLOOR_NAMESPACE)
            result = self.run(floor(seeded, settings))
            result["cleanup_seconds"] = delete_namespace(client, FLOOR_NAMESPACE, args.timeout)
            self.results["floor"] = result
            self.row(
                "floor",
                f"{result['objects']} objects ({result['mlserves']} MLServes + children), "
                f"{CONCURRENCY} at once: {result['seconds']:.1f} s",
            )

        watch = MLServeWatch(handle, NAMESPACE)
        watch.start()
        self.operator.start()
        self.converge(seeded, watch, audit)
        if "latency" not in skip:
            self.latency(seeded, watch)
        if "idle" not in skip:
            self.idle(audit, settings.sync_interval)
        if "restart" not in skip:
            self.restart(audit, watch)
        if args.memory_points:
            self.memory(handle, args.memory_points)

        self.json_path.write_text(json.dumps(self.results, indent=2) + "\n")
        print(f"\n{'phase':<9} figure")
        for phase, figure in self.rows:
            print(f"{phase:<9} {figure}")
        print(f"\nJSON: {self.json_path}")
        return 0

    # --- 2. converge --------------------------------------------------------------------------

    def converge(self, seeded: Seeded, watch: MLServeWatch, audit: Audit) -> None:
        assert self.operator is not None
        audit.mark()
        log_mark = self.operator.log_size()
        wanted: dict[str, int] = {}
        began = time.monotonic()
        for name, rows in seeded.serves.items():
            wanted[mlserve_name(name, seeded.environment)] = self.run(darwin.deploy(rows, "v1"))
        inserted = time.monotonic() - began
        self._wait_synced(watch, wanted, self.args.timeout, "every MLServe Synced")
        seconds = max(watch.when_synced(wanted).values()) - began
        rss = self.operator.rss_mib()
        verbs = by_verb(audit.since_mark())
        warnings = sum(DB_WARNING in line for line in self.operator.log_since(log_mark).splitlines())
        result: dict[str, Any] = {
            "seconds": seconds,
            "insert_seconds": inserted,
            "rss_mib": rss,
            "db_warnings": warnings,
            "api_requests": verbs,
        }
        floor_seconds = (self.results.get("floor") or {}).get("seconds")
        ratio = ""
        if floor_seconds:
            result["ratio_to_floor"] = seconds / floor_seconds
            ratio = f" ({result['ratio_to_floor']:.1f}x the floor)"
        self.results["converge"] = result
        self.row(
            "converge",
            f"{len(wanted)} MLServes Synced in {seconds:.1f} s{ratio} from the first insert "
            f"(inserts took {inserted:.1f} s); RSS {rss:.0f} MiB; "
            f'"database did not answer": {warnings}',
        )
        self.row("", f"API requests meanwhile: {_verbs_text(verbs)}")

    def _wait_synced(
        self, watch: MLServeWatch, wanted: Mapping[str, int], timeout: float, what: str, *, required: bool = True
    ) -> dict[str, float]:
        """When each MLServe of ``wanted`` was seen Synced for its deployment; past ``timeout``
        the run stops (``required``) or the ones seen so far are returned."""
        deadline = time.monotonic() + timeout
        shown = time.monotonic()
        while len(watch.when_synced(wanted)) < len(wanted):
            if time.monotonic() > deadline:
                if not required:
                    break
                done = len(watch.when_synced(wanted))
                raise SystemExit(
                    f"{what}: only {done} of {len(wanted)} within {timeout:g} s (log: {self.work / 'operator.log'})"
                )
            if time.monotonic() - shown > 30:
                print(f"    ... {len(watch.when_synced(wanted))} of {len(wanted)} Synced", flush=True)
                shown = time.monotonic()
            time.sleep(0.1)
        return watch.when_synced(wanted)

    # --- 3. latency ---------------------------------------------------------------------------

    def latency(self, seeded: Seeded, watch: MLServeWatch) -> None:
        args = self.args
        serves = list(seeded.serves)[: args.latency_deploys]  # one deploy per serve
        committed: dict[str, tuple[int, float]] = {}
        began = time.monotonic()
        for index, name in enumerate(serves):
            time.sleep(max(0.0, began + index * args.latency_interval - time.monotonic()))
            deployment = self.run(darwin.deploy(seeded.serves[name], "v2"))
            committed[mlserve_name(name, seeded.environment)] = (deployment, time.monotonic())
        wanted = {name: deployment for name, (deployment, _) in committed.items()}
        timeout = args.latency_timeout
        synced = self._wait_synced(watch, wanted, timeout, "the deploys", required=False)
        latencies = [synced[name] - at for name, (_, at) in committed.items() if name in synced]
        missing = len(committed) - len(latencies)
        result: dict[str, Any] = {
            "deploys": len(committed),
            "interval_seconds": args.latency_interval,
            "not_synced": missing,
            "timeout_seconds": timeout,
        }
        if latencies:
            result.update(p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95), max=max(latencies))
        self.results["latency"] = result
        figures = (
            f"p50 {result['p50']:.2f} s, p95 {result['p95']:.2f} s, max {result['max']:.2f} s" if latencies else "-"
        )
        lost = f"; {missing} not Synced within {timeout:g} s (left out of the figures)" if missing else ""
        self.row(
            "latency",
            f"{len(committed)} deploys, one every {args.latency_interval:g} s, commit -> Synced: {figures}{lost}",
        )

    # --- 4. idle ------------------------------------------------------------------------------

    def idle(self, audit: Audit, sync_interval: float) -> None:
        seconds = self.args.idle_seconds
        time.sleep(5)  # the last status writes of the latency phase
        audit.mark()
        before = self.run(mysql_counters())
        time.sleep(seconds)
        after = self.run(mysql_counters())
        verbs = by_verb(audit.since_mark())
        ticks = seconds / sync_interval
        result: dict[str, Any] = {
            "seconds": seconds,
            "api_requests": verbs,
            "lists": verbs.get("list", 0),
            "writes": _writes(verbs),
            "sync_ticks": ticks,
        }
        if before is not None and after is not None:
            delta = counter_delta(before, after)
            result["db_statements"] = delta.get("Questions", 0)
            result["db_statements_per_tick"] = result["db_statements"] / ticks
            result["db_counters"] = delta
            db = (
                f"DB statements {result['db_statements']} ({result['db_statements_per_tick']:.1f} per sync tick "
                f"of {sync_interval:g} s): {_verbs_text({k: v for k, v in delta.items() if k != 'Questions'})}"
            )
        else:
            db = "DB statements not counted (SQLite has no server counters)"
        self.results["idle"] = result
        self.row(
            "idle",
            f"{seconds:g} s: API requests {sum(verbs.values())}, LISTs {result['lists']}, "
            f"writes {result['writes']} ({_verbs_text(verbs)})",
        )
        self.row("", db)

    # --- 5. restart ---------------------------------------------------------------------------

    def restart(self, audit: Audit, watch: MLServeWatch) -> None:
        assert self.operator is not None
        window = self.args.restart_seconds
        self.operator.kill()
        audit.mark()
        started = time.time()
        self.operator.start()
        healthy = time.time() - started
        time.sleep(max(0.0, started + window - time.time()))
        requests = audit.since_mark()
        verbs = by_verb(requests)
        writes = [r for r in requests if r["verb"] in WRITE_VERBS]
        last_write = max((when(r) for r in writes), default=None)
        since_write = healthy if last_write is None else last_write - started
        idle_after = _quiet_after(
            sorted(
                at
                for at in (when(r) - started for r in requests if r["verb"] in WRITE_VERBS or r["verb"] == "list")
                if at >= since_write
            ),
            since_write,
            window,
        )
        result = {
            "window_seconds": window,
            "writes": len(writes),
            "lists": verbs.get("list", 0),
            "api_requests": verbs,
            "healthy_seconds": healthy,
            "last_write_seconds": None if last_write is None else last_write - started,
            "idle_after_seconds": idle_after,
            "all_still_synced": watch.all_synced(),
        }
        self.results["restart"] = result
        self.row(
            "restart",
            f"SIGKILL + start with {len(watch.current)} converged: writes {len(writes)}, LISTs {result['lists']} "
            f"in {window:g} s; healthy after {healthy:.1f} s; "
            + (
                f"idle after {idle_after:.1f} s (then no write or LIST for {QUIET_SECONDS:g} s)"
                if idle_after is not None
                else f"not idle within the window (last write at {since_write:.1f} s)"
            ),
        )
        self.row("", f"API requests: {_verbs_text(verbs)}")

    # --- 6. memory ----------------------------------------------------------------------------

    def memory(self, handle: Any, points: list[int]) -> None:
        assert self.operator is not None
        client = handle.client(field_manager=FIELD_MANAGER)
        ensure_namespace(client, MEMORY_NAMESPACE)
        watch = MLServeWatch(handle, MEMORY_NAMESPACE)
        watch.start()
        total = self.args.serves
        measured: list[tuple[int, float]] = []
        result: dict[str, Any] = {"points": []}
        self.results["memory"] = result
        for point in points:
            if point < total:
                raise SystemExit(f"--memory-points {point}: fewer than the {total} MLServes already there")
            self.operator.stop()
            rows = self.run(_memory_rows(total - self.args.serves, point - total))
            self.run(_apply_paused(rows))
            total = point
            began = time.monotonic()
            self.operator.start()
            expected = point - self.args.serves
            wait(lambda n=expected: len(watch.reconciled) >= n, self.args.timeout, f"{expected} paused MLServes")
            reconciled = time.monotonic() - began
            time.sleep(10)
            rss = self.operator.rss_mib()
            measured.append((point, rss))
            result["points"].append({"mlserves": point, "rss_mib": rss, "start_to_all_reconciled_seconds": reconciled})
            self.row(
                "memory",
                f"{point} MLServes ({expected} paused, no children): RSS {rss:.0f} MiB "
                f"(start to every status written: {reconciled:.0f} s)",
            )
        if len(measured) >= 2:
            result["slope_mib_per_1000"] = _slope(measured) * 1000
            self.row("", f"slope {result['slope_mib_per_1000']:.0f} MiB per 1,000 MLServes")


async def _memory_rows(start: int, count: int) -> list[ActiveRow]:
    """Serves deployed in the memory environment: the rows the sync would find."""
    rows = []
    for index in range(start, start + count):
        name = f"m{index}"
        seeded = await darwin.seed_api_serve(
            name, MEMORY_ENVIRONMENT, MEMORY_NAMESPACE, versions=("v1",), min_replicas=1, max_replicas=2
        )
        deployment = await darwin.deploy(seeded, "v1")
        rows.append(ActiveRow(name, "api", MEMORY_ENVIRONMENT, MEMORY_NAMESPACE, deployment, "v1"))
    return rows


async def _apply_paused(rows: list[ActiveRow]) -> None:
    """The MLServes the sync would create for ``rows``, paused."""
    client = make_client(FIELD_MANAGER)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(row: ActiveRow) -> None:
        body = new_mlserve(row)
        body["spec"]["paused"] = True
        async with gate:
            await apply_object(
                client, MLServe, body, namespace=row.namespace, field_manager=FIELD_MANAGER, what=row.ref
            )

    try:
        await asyncio.gather(*(one(row) for row in rows))
    finally:
        await client.close()


def _quiet_after(times: list[float], start: float, window: float) -> float | None:
    """The time of the last request before the first ``QUIET_SECONDS`` without any (``times``
    sorted, from the start; the quiet may begin at ``start``); None when none came within
    ``window``."""
    last = start
    for at in times:
        if at - last >= QUIET_SECONDS:
            return last
        last = max(last, at)
    return last if window - last >= QUIET_SECONDS else None


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS over the number of MLServes."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def _verbs_text(verbs: Mapping[str, int]) -> str:
    return ", ".join(f"{verb} {n}" for verb, n in verbs.items()) or "none"


def _pairs(values: Iterable[str]) -> Iterable[tuple[str, str]]:
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.startswith("MLSERVE_"):
            raise SystemExit(f"--env {value!r}: give MLSERVE_NAME=value")
        yield key, setting


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _phases(text: str) -> list[str]:
    phases = [v.strip() for v in text.split(",") if v.strip()]
    unknown = set(phases) - set(SKIPPABLE)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {', '.join(sorted(unknown))}: use {', '.join(SKIPPABLE)}")
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serves", type=int, default=100, help="N, the number of serves (default 100)")
    parser.add_argument("--db", choices=("sqlite", "mariadb"), default="sqlite")
    parser.add_argument("--env", action="append", default=[], metavar="MLSERVE_X=VALUE", help="an operator setting")
    parser.add_argument("--json", help="where to write the figures (default: scale.json in the work folder)")
    parser.add_argument("--nodes", type=int, default=3, help="kwok nodes (default 3)")
    parser.add_argument("--skip", type=_phases, default=[], help=f"phases to leave out: {','.join(SKIPPABLE)}")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--latency-deploys", type=int, default=20)
    parser.add_argument("--latency-interval", type=float, default=2.0, help="seconds between two deploys")
    parser.add_argument("--latency-timeout", type=float, default=300.0, help="the longest wait for the deploys")
    parser.add_argument("--restart-seconds", type=float, default=90.0, help="the window counted after a restart")
    parser.add_argument("--memory-points", type=_ints, default=[], help="e.g. 1000,5000,10000 (MLServes in all)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="the longest wait of any phase")
    args = parser.parse_args()
    if "latency" not in args.skip and args.latency_deploys > args.serves:
        parser.error("--latency-deploys: at most --serves (one deploy per serve)")
    official = [name for name in ("kubernetes", "kubernetes_asyncio") if importlib.util.find_spec(name)]
    if official:
        print(
            f"note: {' and '.join(official)} installed here (the bench extra): kopf imports them when present, "
            "so the operator's RSS is about 45 MiB more than in its image, which has neither; "
            f"`pip uninstall {' '.join(official)}` before measuring memory",
            file=sys.stderr,
        )
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
