"""Kubernetes Events about an MLServe: deploys, rollbacks, repairs and errors.

The reconcile posts through an :class:`EventSink` so it runs the same in the operator
(``handlers.KopfEvents``: kopf posts the Events, batched, as ``mlserve-operator``) and in
tests (a list); the reconcile does not import kopf. An error is posted when it first
appears, not on every retry, so a waiting MLServe does not flood the namespace with Events
or count as a write per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["EventSink", "EventType", "RecordedEvent", "RecordingEvents"]

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
