"""The bodies Darwin's DCM client sends, parsed and checked; no I/O.

Field names and which are required follow DCM's own validation (``darwin_resource``,
``artifact_id``, ``resource_id``, ``kube_cluster``, ``kube_namespace``: non-empty strings;
``values``: a JSON object). A body that breaks a rule raises :class:`BadRequest` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FASTAPI_SERVE",
    "BadRequest",
    "BuildRequest",
    "ReleaseRequest",
    "StartRequest",
    "ValuesRequest",
    "parse_build",
    "parse_json",
    "parse_release",
    "parse_start",
    "parse_values",
]

FASTAPI_SERVE = "darwin-fastapi-serve"
"""The only ``darwin_resource`` Darwin's ML Serve API deploys through DCM (its FastAPI chart)."""


class BadRequest(ValueError):
    """A body the endpoint refuses: answered 400 with the message, which names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class BuildRequest:
    """``POST /resource-instance/``: pack the chart with these values as ``artifact_id``."""

    darwin_resource: str
    artifact_id: str
    values: Mapping[str, Any]
    version: str


@dataclass(frozen=True)
class ValuesRequest:
    """``PATCH /resource-instance/values``: new infra values for ``artifact_id``."""

    darwin_resource: str
    artifact_id: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class StartRequest:
    """``POST /resource-instance/start``: install or upgrade release ``resource_id`` from ``artifact_id``."""

    resource_id: str
    artifact_id: str
    kube_cluster: str
    kube_namespace: str
    darwin_resource: str


@dataclass(frozen=True)
class ReleaseRequest:
    """``POST /resource-instance/stop`` and ``/status``: one release of one cluster's namespace."""

    resource_id: str
    kube_cluster: str
    kube_namespace: str


def parse_json(raw: bytes) -> Mapping[str, Any]:
    """The body as a JSON object."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("body", f"is not JSON ({exc.__class__.__name__}): send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def _text(body: Mapping[str, Any], field: str, *, required: bool = True) -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise BadRequest(field, f"is {kind}: a non-empty string is required")
    if required and not value.strip():
        raise BadRequest(field, "is empty: a non-empty string is required")
    return value


def _resource(body: Mapping[str, Any]) -> str:
    resource = _text(body, "darwin_resource")
    if resource != FASTAPI_SERVE:
        raise BadRequest(
            "darwin_resource",
            f"{resource[:100]!r} is not served here: the operator runs {FASTAPI_SERVE!r} (API serves) only",
        )
    return resource


def _values(body: Mapping[str, Any]) -> Mapping[str, Any]:
    values = body.get("values")
    if not isinstance(values, dict):
        kind = "missing" if values is None else f"a {type(values).__name__}"
        raise BadRequest("values", f"is {kind}: a JSON object of the chart's values is required")
    return values


def parse_build(body: Mapping[str, Any]) -> BuildRequest:
    return BuildRequest(
        darwin_resource=_resource(body),
        artifact_id=_text(body, "artifact_id"),
        values=_values(body),
        version=_text(body, "version", required=False),
    )


def parse_values(body: Mapping[str, Any]) -> ValuesRequest:
    return ValuesRequest(darwin_resource=_resource(body), artifact_id=_text(body, "artifact_id"), values=_values(body))


def parse_start(body: Mapping[str, Any]) -> StartRequest:
    return StartRequest(
        resource_id=_text(body, "resource_id"),
        artifact_id=_text(body, "artifact_id"),
        kube_cluster=_text(body, "kube_cluster"),
        kube_namespace=_text(body, "kube_namespace"),
        darwin_resource=_resource(body),
    )


def parse_release(body: Mapping[str, Any]) -> ReleaseRequest:
    return ReleaseRequest(
        resource_id=_text(body, "resource_id"),
        kube_cluster=_text(body, "kube_cluster"),
        kube_namespace=_text(body, "kube_namespace"),
    )
