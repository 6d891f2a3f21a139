"""Kubernetes Events about an MLServe: deploys, rollbacks, repairs and errors.

The reconcile posts through an :class:`EventSink` so it runs the same in the operator
(``handlers.KopfEvents``: kopf posts the Events, batched, as ``mlserve-operator``) and in
tests (a list); the reconcile does not import kopf. An error is posted when it first
appears, not on every retry, so a waiting MLServe does not flood the namespace with Events
or count as a write per reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
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
    """Posts Events with the operator's own API client, in the background: for the database
    sync, which runs outside kopf's handlers (kopf's event queue is theirs). A failed post is
    logged, never raised: an Event is a report, not a step of the work."""

    COMPONENT = "mlserve-operator"

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, body: Mapping[str, Any], type_: EventType, reason: str, message: str) -> None:
        metadata = body.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        now = datetime.now(UTC)
        event = Event(
            metadata=ObjectMeta(generateName="mlserve-operator-", namespace=namespace),
            involvedObject=ObjectReference(
                apiVersion=body.get("apiVersion"),
                kind=body.get("kind"),
                name=metadata.get("name"),
                namespace=metadata.get("namespace"),
                uid=metadata.get("uid"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            source=EventSource(component=self.COMPONENT),
            reportingComponent=self.COMPONENT,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        task = asyncio.get_running_loop().create_task(self._create(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, event: Event) -> None:
        try:
            await self.client.create(event)
        except Exception as exc:  # noqa: BLE001 - a report that could not be posted is logged, never fatal
            log.warning("could not post Event %s: %s", event.reason, type(exc).__name__)
