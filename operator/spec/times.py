"""Times as the operator reads and writes them: aware, UTC, RFC 3339 to the second.

One rule for a time without a zone: it is UTC. The database drivers return naive
datetimes of UTC columns, and Kubernetes writes every time with ``Z``. Nothing here reads
a clock: callers pass ``now``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["as_utc", "format_rfc3339", "parse_rfc3339"]


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_rfc3339(value: Any) -> datetime | None:
    """An RFC 3339 / ISO 8601 text (``2025-01-02T03:04:05Z``) as an aware UTC datetime.

    None for an empty or unreadable value: callers treat "no time" and "a time we cannot
    read" alike (a hand-edited annotation must not crash a reconcile).
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(parsed)


def format_rfc3339(moment: datetime) -> str:
    """``moment`` as Kubernetes writes times: UTC, whole seconds, ``Z``."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
