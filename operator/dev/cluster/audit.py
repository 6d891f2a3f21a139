"""The local control plane's audit log (``names.AUDIT_LOG`` under its state folder).

The API server writes one JSON event per line for every request of a ServiceAccount outside
kube-system (``names.AUDIT_POLICY``): a request gets one event when it completes, a watch
one when it starts and one when it ends. The tests compare what the operator used with the
chart's RBAC; the benchmarks count the operator's requests by verb.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["WRITE_VERBS", "read_events", "started_requests", "when"]

#: the verbs that change something
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def read_events(log: Path, username: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The resource requests' events of ``username`` from byte ``offset`` on (non-resource URLs
    left out), and the offset after the last whole line read (to read on from later)."""
    events = []
    with log.open("rb") as stream:
        stream.seek(offset)
        for line in stream:
            if not line.endswith(b"\n"):
                break  # being written: read it next time
            offset += len(line)
            event = json.loads(line)
            if event.get("user", {}).get("username") == username and "objectRef" in event:
                events.append(event)
    return events, offset


def started_requests(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per request started within ``events``: a watch by its start, any other
    request by its completion (the end of a watch started earlier is left out)."""
    return [
        e
        for e in events
        if e.get("stage") == "ResponseStarted" or (e.get("stage") == "ResponseComplete" and e.get("verb") != "watch")
    ]


def when(event: dict[str, Any]) -> float:
    """The event's time (``stageTimestamp``) as seconds since the epoch."""
    return datetime.fromisoformat(str(event["stageTimestamp"]).replace("Z", "+00:00")).timestamp()
