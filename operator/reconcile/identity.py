"""Identity rules (DESIGN.md): which MLServe holds a (serve, environment), and when its
request last changed.

- An MLServe is identified by its spec's (serve, environment). When several claim the same
  pair, the oldest (creationTimestamp, then namespace/name) holds it; the others get a
  Conflict condition and change nothing. When the holder goes, the next oldest takes over.
- The time of an MLServe's request is the last write of its spec, which the API server
  records per field manager in ``metadata.managedFields``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Claim", "claim_of", "holder", "parse_time", "spec_changed_at"]


@dataclass(frozen=True, order=True)
class Claim:
    """One MLServe's claim on a (serve, environment); orders oldest first."""

    created: str
    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def claim_of(body: Mapping[str, Any]) -> tuple[tuple[str, str], Claim] | None:
    """The pair an MLServe claims and its claim; None when the spec does not name one."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    serve = spec.get("serve") or meta.get("name")
    environment = spec.get("environment")
    if not serve or not environment:
        return None
    claim = Claim(
        created=str(meta.get("creationTimestamp") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
    )
    return (str(serve), str(environment)), claim


def holder(claims: Iterable[Claim]) -> Claim | None:
    ordered = sorted(claims)
    return ordered[0] if ordered else None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def spec_changed_at(body: Mapping[str, Any], ignore_managers: Iterable[str] = ()) -> datetime | None:
    """The last time a field manager other than ``ignore_managers`` wrote the MLServe's spec.

    Kubernetes records it to the second. The database sync's own writes are ignored (they
    mirror the database and are never newer than it): an MLServe whose spec only the sync
    wrote has no change of its own, and None is returned. Only an object without any
    managedFields falls back to its creationTimestamp.
    """
    meta = body.get("metadata") or {}
    ignored = set(ignore_managers)
    entries = meta.get("managedFields") or []
    if not entries:
        return parse_time(meta.get("creationTimestamp"))
    latest: datetime | None = None
    for entry in entries:
        if entry.get("subresource") or entry.get("manager") in ignored:
            continue
        fields = entry.get("fieldsV1") or {}
        if "f:spec" not in fields:
            continue
        moment = parse_time(entry.get("time"))
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return latest
