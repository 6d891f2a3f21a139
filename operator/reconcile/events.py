"""Kubernetes Events about an MLServe: deploys, rollbacks, repairs and errors.

The reconcile posts through an :class:`EventSink` so it runs the same in the operator
(:class:`ApiEvents`: core v1 Events created by a task of their own, as ``mlserve-operator``)
and in tests (a list); the reconcile does not import kopf. An error is posted when it first
appears, not on every retry, so a waiting MLServe does not flood the namespace with Events
or count as a write per reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Event

__all__ = ["ApiEvents", "EventSink", "EventType", "RecordedEvent", "RecordingEvents"]

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]


class EventSink(Protocol):
    def post(self, body: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class RecordedEvent:
    name: str
    type: EventType
    reason: str
    message: str


@dataclass
class RecordingEvents:
    """Keeps the Events in a list: for tests and dry runs."""

    events: list[RecordedEvent] = field(default_factory=list)

    def post(self, body: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        name = str((body.get("metadata") or {}).get("name"))
        self.events.append(RecordedEvent(name, type_, reason, message))


class ApiEvents:
    """Posts core v1 Events through the API server.

    :meth:`post` only queues the Event (it never waits, and its request is not counted as
    one of the reconcile's); :meth:`run`, a task of its own, creates them one by one. A full
    queue (the API server refusing for long) drops Events with a log line rather than
    holding memory or the reconciles."""

    def __init__(self, client: AsyncClient, component: str, limit: int = 1000) -> None:
        self._client = client
        self._component = component
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit)

    def post(self, body: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = str(meta.get("namespace") or "default")
        event = {
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("Event %s on %s/%s dropped: too many waiting", reason, namespace, meta.get("name"))

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._client.create(cast(Event, Event.from_dict(event)))
            except (ApiError, httpx2.HTTPError) as exc:
                why = exc.status.message if isinstance(exc, ApiError) else type(exc).__name__
                log.warning("Event %s on %s not posted: %s", event["reason"], event["involvedObject"]["name"], why)
