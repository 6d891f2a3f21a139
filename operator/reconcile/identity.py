"""Identity rules (DESIGN.md, ``docs/sync.md``): which MLServe holds a (serve, environment),
and which deployment it reflects.

- An MLServe stands for the (serve, environment) its spec names (:func:`pair_of`). Only an
  MLServe in its environment's namespace (and cluster) can hold the pair; that is checked
  against the database (:func:`.deploy.check_binding`). Among the MLServes of that
  namespace claiming the same pair, the oldest (creationTimestamp, then name) holds it
  (:func:`holder` over :func:`rivals`); the others get a Conflict condition and change
  nothing. MLServes in other namespaces never count. When the holder goes, the next oldest
  takes over.
- An MLServe reflects the deployment its ``mlserve.darwin.io/deployment-id`` annotation
  names (:func:`reflected_id`), and nothing without one. No clock is ever compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlserve.operator.spec import api

__all__ = ["Claim", "Pair", "claim_of", "holder", "pair_of", "reflected_id", "rivals"]

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


def rivals(claims: Iterable[Claim], mine: Claim) -> list[Claim]:
    """The other claims on the pair that count against ``mine``: those in its namespace."""
    return [c for c in claims if c.uid != mine.uid and c.namespace == mine.namespace]


def reflected_id(body: Mapping[str, Any]) -> int | None:
    """The deployment the MLServe reflects: its annotation (status.deploymentId is a report)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(api.ANNOTATION_DEPLOYMENT_ID)
    if raw is None or not str(raw).strip().isdigit():
        return None
    return int(str(raw).strip())
