"""Identity rules (DESIGN.md, ``docs/sync.md``): which MLServe holds a (serve, environment),
and who wrote last, the MLServe or the database.

- An MLServe stands for the (serve, environment) its spec names (:func:`pair_of`). When
  several claim the same pair, the oldest (creationTimestamp, then namespace/name) holds it;
  the others get a Conflict condition and change nothing. When the holder goes, the next
  oldest takes over.
- The time of an MLServe's request is the last write of its spec, which the API server
  records per field manager in ``metadata.managedFields`` (:func:`spec_changed_at`).
- Last writer wins (:func:`mlserve_is_newer`): the MLServe's reconcile records a deploy only
  when its spec changed after the database did, and the database sync changes an MLServe
  only when the database changed after its spec did. Both sides ask this one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlserve.operator.spec import api
from mlserve.operator.spec.times import as_utc, parse_rfc3339

__all__ = ["Claim", "Pair", "claim_of", "holder", "mlserve_is_newer", "pair_of", "spec_changed_at"]

Pair = tuple[str, str]
"""(serve, environment)"""


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


def pair_of(body: Mapping[str, Any], *, by_labels: bool = False) -> Pair | None:
    """The (serve, environment) an MLServe stands for; None when it names none.

    ``spec.serve`` (``metadata.name`` when omitted) and ``spec.environment``, as its own
    reconcile reads them. ``by_labels`` (the database sync, which finds MLServes by their
    labels) also takes what the spec omits from the labels ``mlserve.darwin.io/serve`` and
    ``mlserve.darwin.io/environment``, before the name. The spec wins over a label: a label
    value may be cut with a hash, the spec holds the full names.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    labels = (meta.get("labels") or {}) if by_labels else {}
    serve = spec.get("serve") or labels.get(api.LABEL_SERVE) or meta.get("name")
    environment = spec.get("environment") or labels.get(api.LABEL_ENVIRONMENT)
    if not serve or not environment:
        return None
    return str(serve), str(environment)


def claim_of(body: Mapping[str, Any]) -> tuple[Pair, Claim] | None:
    """The pair an MLServe claims and its claim; None when the spec does not name one."""
    pair = pair_of(body)
    if pair is None:
        return None
    meta = body.get("metadata") or {}
    claim = Claim(
        created=str(meta.get("creationTimestamp") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
    )
    return pair, claim


def holder(claims: Iterable[Claim]) -> Claim | None:
    ordered = sorted(claims)
    return ordered[0] if ordered else None


def spec_changed_at(body: Mapping[str, Any], ignore_managers: Iterable[str] = ()) -> datetime | None:
    """The last time a field manager other than ``ignore_managers`` wrote the MLServe's spec.

    The newest time of a ``managedFields`` entry that owns a field under ``spec``; status
    writes are a subresource and never count. Kubernetes records it to the second. The
    database sync's own writes are ignored (they mirror the database and are never newer
    than it): an MLServe whose spec only the sync wrote has no change of its own, and None
    is returned, which :func:`mlserve_is_newer` never lets win. Only an object without any
    managedFields (one that never went through an API server) falls back to its
    creationTimestamp.
    """
    meta = body.get("metadata") or {}
    ignored = set(ignore_managers)
    entries = meta.get("managedFields") or []
    if not entries:
        return parse_rfc3339(meta.get("creationTimestamp"))
    latest: datetime | None = None
    for entry in entries:
        if entry.get("subresource") or entry.get("manager") in ignored:
            continue
        fields = entry.get("fieldsV1") or {}
        if "f:spec" not in fields:
            continue
        moment = parse_rfc3339(entry.get("time"))
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return latest


def mlserve_is_newer(spec_changed_at: datetime | None, db_changed_at: datetime | None) -> bool:
    """Whether the MLServe's last spec write is at or after the database's last change.

    Kubernetes records write times to the second, so the database's time is cut to the
    second too; a tie goes to the MLServe (it was written in the same second or later).
    ``spec_changed_at`` None (only the database sync ever wrote the spec) never wins; a
    database that never changed the pair (``db_changed_at`` None) always loses.
    """
    if db_changed_at is None:
        return True
    if spec_changed_at is None:
        return False
    return as_utc(spec_changed_at) >= as_utc(db_changed_at).replace(microsecond=0)
