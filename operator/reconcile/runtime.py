"""What a reconcile of an MLServe runs with (:class:`Runtime`) and reports (:class:`Report`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient

from mlserve.operator.settings import OperatorSettings

from .cache import ChildCache, IngressHosts
from .errors import ReconcileError
from .events import EventSink
from .kube import RequestCounter
from .pending import PendingUndeploys
from .rows import RowCache

__all__ = ["Report", "Runtime"]


@dataclass
class Runtime:
    """What a reconcile needs from its surroundings."""

    settings: OperatorSettings
    client: AsyncClient
    events: EventSink
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    pending: PendingUndeploys = field(default_factory=PendingUndeploys)
    """Undeploys deletions had to skip (the finalizer adds, the sync loop retries)."""
    rows: RowCache | None = None
    """The rows of this cluster, refreshed by the sync loop (:mod:`.rows`); None: every
    reconcile reads the database."""
    children: ChildCache | None = None
    """The children as the watches hold them (the operator); None: listed on every reconcile."""
    ingress_hosts: IngressHosts | None = None
    """The hosts every Ingress claims, as a watch holds them (the operator); None: the
    namespace's Ingresses are listed when a new Ingress is checked for a taken host."""


@dataclass
class Report:
    """What one reconcile did and what should happen next."""

    status_written: bool = False
    recorded_deployment: int | None = None
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    error: ReconcileError | None = None
    retry_after: float | None = None
    """Seconds until the next attempt (temporary failures); None: wait for a change."""
    body: Mapping[str, Any] | None = None
    """The MLServe as last seen (after any patch this reconcile made)."""
    new_status: dict[str, Any] | None = None
    """The status as this reconcile left it (written or already equal)."""
    requests: RequestCounter = field(default_factory=RequestCounter)
    """The API requests this reconcile sent."""
    requeue_after: float | None = None
    """Seconds until the reconcile must run again although nothing changed (a scheduled run)."""
