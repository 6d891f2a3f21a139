"""Does a live child still match what was rendered? Pure functions, no I/O.

A reconcile with nothing to change must not write, so before any server-side apply the
live object (read in one list per kind) is compared with the rendered manifest:

* the hash of the rendered manifest, stamped on the child as an annotation when it was
  applied, catches every change of the rendering, including a field the new rendering
  drops (``spec.replicas`` when an HPA takes over), which a comparison of present fields
  alone would miss;
* a comparison of every rendered field with the live value catches edits by hand
  (``kubectl edit``, ``kubectl scale`` of a Deployment without HPA, a changed label).

Fields the server or another controller adds (defaults, status, an HPA's replica count
when the Deployment carries none) are not rendered and so never compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from lightkube.utils.quantity import parse_quantity

__all__ = ["manifest_hash", "matches", "mismatches"]

# Only these parts of metadata are rendered; the rest belongs to the server.
_METADATA_KEYS = ("labels", "annotations", "ownerReferences")


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A stable digest of a rendered manifest (key order does not matter)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, InvalidOperation):
        return None


def _scalar_equal(desired: Any, live: Any) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return bool(desired == live)
    # The server keeps quantities in canonical form ("0.5" reads back "500m", 1 as "1").
    if isinstance(desired, str | int | float) and isinstance(live, str | int | float):
        a, b = _quantity(desired), _quantity(live)
        return a is not None and a == b
    return False


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def mismatches(desired: Any, live: Any, path: str = "") -> list[str]:
    """The paths where ``live`` differs from the fields ``desired`` sets."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [] if _empty(desired) and _empty(live) else [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            here = f"{path}.{key}" if path else str(key)
            if _empty(value) and _empty(live.get(key)):
                continue
            found.extend(mismatches(value, live.get(key), here))
        return found
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        if not isinstance(live, Sequence) or isinstance(live, str) or len(live) != len(desired):
            return [] if _empty(desired) and _empty(live) else [path]
        found = []
        for index, (d, v) in enumerate(zip(desired, live, strict=True)):
            found.extend(mismatches(d, v, f"{path}[{index}]"))
        return found
    return [] if _scalar_equal(desired, live) else [path]


def matches(desired: Mapping[str, Any], live: Mapping[str, Any] | None, hash_annotation: str) -> bool:
    """True when applying ``desired`` (hash already stamped) would change nothing we own."""
    if live is None:
        return False
    desired_meta = desired.get("metadata") or {}
    live_meta = live.get("metadata") or {}
    want_hash = (desired_meta.get("annotations") or {}).get(hash_annotation)
    if want_hash is None or (live_meta.get("annotations") or {}).get(hash_annotation) != want_hash:
        return False
    if live_meta.get("deletionTimestamp"):
        return False
    meta = {key: desired_meta[key] for key in _METADATA_KEYS if key in desired_meta}
    body = {key: value for key, value in desired.items() if key not in ("metadata", "apiVersion", "kind")}
    return not mismatches(meta, live_meta) and not mismatches(body, live)
