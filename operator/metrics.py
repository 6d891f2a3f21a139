"""The operator's Prometheus metrics, served on ``MLSERVE_METRICS_PORT`` (``/metrics``).

Every name starts with ``mlserve_operator_``. The process's own (``process_resident_memory_bytes``,
``process_cpu_seconds_total``, ...) come with prometheus-client's default registry.

==========================================================  =========================================
reconciles_total{result, reason}                            one per reconcile: result ``ok``,
                                                            ``invalid`` (a condition to fix),
                                                            ``retry`` (temporary) or ``error`` (a
                                                            bug, logged); reason the condition's
reconcile_duration_seconds                                  histogram of one reconcile
queue_depth / queue_wait_seconds                            MLServes waiting for a worker, and how
                                                            long they waited (the work queue)
sync_ticks_total{result} / sync_tick_duration_seconds       database → cluster ticks
sync_rows                                                   active deployments the last full pass saw
sync_issues{reason, scope}                                  database rows the sync leaves alone
                                                            now, by reason; scope ``pair`` (one
                                                            serve in one environment) or
                                                            ``environment`` (every serve of one)
db_calls_total{result} / db_call_duration_seconds           database statements and transactions,
                                                            timed from the moment they had a
                                                            connection (pool waits not counted)
api_requests_total{verb, code}                              the operator's own Kubernetes requests
mlserves{phase}                                             MLServes by status.phase, as last reconciled
pending_undeploys                                           deletions whose database write waits
==========================================================  =========================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpx2
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlserve.models import backend

__all__ = [
    "API_REQUESTS",
    "QUEUE_DEPTH",
    "QUEUE_WAIT",
    "RECONCILES",
    "RECONCILE_DURATION",
    "SYNC_ROWS",
    "SYNC_TICKS",
    "SYNC_TICK_DURATION",
    "forget_mlserve",
    "observe_api_response",
    "record_phase",
    "serve",
    "watch_pending",
]

PREFIX = "mlserve_operator_"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RECONCILES = Counter(PREFIX + "reconciles_total", "Reconciles of MLServes.", ["result", "reason"])
RECONCILE_DURATION = Histogram(
    PREFIX + "reconcile_duration_seconds", "Time one reconcile of an MLServe took.", buckets=_SECONDS
)
QUEUE_DEPTH = Gauge(PREFIX + "queue_depth", "MLServes waiting in the work queue for a worker.")
QUEUE_WAIT = Histogram(
    PREFIX + "queue_wait_seconds", "Time an MLServe waited in the work queue before its reconcile.", buckets=_SECONDS
)
SYNC_TICKS = Counter(PREFIX + "sync_ticks_total", "Database to cluster sync ticks.", ["result"])
SYNC_TICK_DURATION = Histogram(
    PREFIX + "sync_tick_duration_seconds", "Time one database to cluster sync tick took.", buckets=_SECONDS
)
SYNC_ROWS = Gauge(PREFIX + "sync_rows", "Active deployments of this cluster's environments the last full pass saw.")
DB_CALLS = Counter(PREFIX + "db_calls_total", "Database statements and transactions.", ["result"])
DB_CALL_DURATION = Histogram(
    PREFIX + "db_call_duration_seconds",
    "Time a database statement or transaction took once it had a connection.",
    buckets=_SECONDS,
)
API_REQUESTS = Counter(PREFIX + "api_requests_total", "The operator's Kubernetes API requests.", ["verb", "code"])

_phases: dict[str, str] = {}
_phases_lock = threading.Lock()


def record_phase(uid: str, phase: str | None) -> None:
    """The MLServe's phase as its last reconcile left it."""
    with _phases_lock:
        if phase:
            _phases[uid] = phase
        else:
            _phases.pop(uid, None)


def forget_mlserve(uid: str) -> None:
    record_phase(uid, None)


class _Phases(Collector):
    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(PREFIX + "mlserves", "MLServes by status.phase.", labels=["phase"])
        with _phases_lock:
            counts: dict[str, int] = {}
            for phase in _phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family


class _Pending(Collector):
    def __init__(self) -> None:
        self.size: Callable[[], int] = lambda: 0

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            PREFIX + "pending_undeploys", "Deletions whose database write waits for the database.", value=self.size()
        )


class _SyncIssues(Collector):
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            PREFIX + "sync_issues",
            "Database rows the sync leaves alone, by reason and by what they hold back (a pair or an environment).",
            labels=["reason", "scope"],
        )
        for (reason, scope), count in sorted(self.counts.items()):
            family.add_metric([reason, scope], count)
        yield family


_pending = _Pending()
_sync_issues = _SyncIssues()
REGISTRY.register(_Phases())
REGISTRY.register(_pending)
REGISTRY.register(_sync_issues)


def record_sync_issues(issues: Iterable[tuple[str, str]]) -> None:
    """The sync's current issues, each as (reason, scope): replaces the last tick's."""
    counts: dict[tuple[str, str], int] = {}
    for key in issues:
        counts[key] = counts.get(key, 0) + 1
    _sync_issues.counts = counts  # one assignment: a scrape sees the old counts or the new


def watch_pending(size: Callable[[], int]) -> None:
    """Where the number of pending undeploys comes from (read at each scrape)."""
    _pending.size = size


def _observe_db_call(seconds: float, failed: bool) -> None:
    DB_CALLS.labels("error" if failed else "ok").inc()
    DB_CALL_DURATION.observe(seconds)


backend.observe_calls(_observe_db_call)


def _verb(request: httpx2.Request) -> str:
    method = request.method.upper()
    if method != "GET":
        return {"PATCH": "patch", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
    if request.url.params.get("watch") in ("true", "1"):
        return "watch"
    # A collection's path ends with the plural (…/namespaces/NS/deployments); an object's with its name.
    parts = [part for part in request.url.path.split("/") if part]
    if parts[-1:] == ["status"]:
        return "get"
    return "list" if len(parts) % 2 == (1 if parts[:1] == ["api"] else 0) else "get"


async def observe_api_response(response: httpx2.Response) -> None:
    """An httpx event hook: count the request by verb and status code."""
    API_REQUESTS.labels(_verb(response.request), str(response.status_code)).inc()


def serve(port: int, address: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``port`` from a thread of its own (answers while the loop is busy)."""
    server, _ = start_http_server(port, addr=address)
    return server
