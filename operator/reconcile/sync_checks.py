"""The sync's checks of database rows: every row is untrusted input (``docs/sync.md``).

Darwin's tables are written by people and by other programs, so the sync reads their columns
as plain values (:mod:`.sync_reads`) and checks them here, one row at a time, without I/O: a
value the operator does not know (``deployments.status``, ``serves.type``), a JSON column that
does not parse, a name the MLServe CRD refuses, a namespace the settings refuse. A bad row
becomes a :class:`SyncIssue` naming the table, the row, the column and the fix; its pair (or
its environment) is left alone, and every other pair goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlserve.models import EnvConfig, InvalidConfig
from mlserve.models.enums import DeploymentStatus, ServeType
from mlserve.operator.render import names
from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.mlserve import DNS1123_LABEL, ENVIRONMENT_NAME_MAX, SERVE_NAME_MAX

from .identity import Pair

__all__ = [
    "ARTIFACT_VERSION_MAX",
    "SyncIssue",
    "check_active_row",
    "check_environment",
    "decode_json",
]

ARTIFACT_VERSION_MAX = 50
"""The MLServe CRD's ``spec.artifactVersion`` maxLength."""


@dataclass(frozen=True)
class SyncIssue:
    """Why the sync leaves a pair (or a whole environment) alone, for a log line and an Event."""

    reason: Reason
    message: str
    """Names the column, the rule and the fix; never a value of the row's JSON."""
    table: str = ""
    row_id: int | None = None
    column: str = ""
    environment: str | None = None
    namespace: str | None = None
    """Where the pair's MLServe is (or would be); None when unknown or refused: the Event goes
    to the operator's namespace."""
    pair: Pair | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """What makes two issues the same (reported once until it changes or goes)."""
        return (str(self.reason), self.table, str(self.row_id), self.column, self.message)

    @property
    def where(self) -> str:
        """``table row N, column C`` (or what of it is known)."""
        parts = []
        if self.table:
            parts.append(f"{self.table} row {self.row_id}" if self.row_id is not None else self.table)
        if self.column:
            parts.append(f"column {self.column}")
        return ", ".join(parts)

    @property
    def text(self) -> str:
        """The message with where it comes from: a log line or an Event."""
        subject = (
            f"serve {self.pair[0]!r} in environment {self.pair[1]!r}"
            if self.pair
            else (f"environment {self.environment!r}" if self.environment else "the database")
        )
        where = f" ({self.where})" if self.where else ""
        return f"the database sync leaves {subject} alone{where}: {self.message}"

    def mlserve_reference(self) -> dict[str, Any] | None:
        """The MLServe the sync would create for the pair, as an Event's object (None: no pair
        or no usable namespace)."""
        if self.pair is None or self.namespace is None:
            return None
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": names.mlserve_name(*self.pair), "namespace": self.namespace},
        }


def decode_json(raw: Any) -> tuple[Any, str | None]:
    """A JSON column's value, decoded (the drivers return text); an error says where it broke,
    never what the column holds."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None, "is not UTF-8 text: store a JSON object"
    if isinstance(raw, str):
        try:
            return json.loads(raw), None
        except ValueError as exc:
            line, column = getattr(exc, "lineno", "?"), getattr(exc, "colno", "?")
            return None, f"is not valid JSON (line {line}, column {column}): store a JSON object"
    return raw, None


def _name_problem(value: Any, what: str, max_length: int) -> str | None:
    if not isinstance(value, str) or not value or len(value) > max_length or not DNS1123_LABEL.match(value):
        return (
            f"is not a valid {what} for an MLServe (at most {max_length} lower-case letters, digits and "
            "'-', starting and ending with a letter or digit): rename it in Darwin"
        )
    return None


def check_environment(
    row_id: int,
    name: Any,
    raw_env_configs: Any,
    cluster_name: str,
    refusal: Callable[[str], str | None] = lambda _: None,
) -> EnvConfig | SyncIssue | None:
    """An ``environments`` row: its config when it is bound to ``cluster_name`` and usable,
    None when it belongs to another cluster, or the issue that stops the sync from using it.

    ``refusal`` says why a namespace may not hold serves (MLSERVE_ALLOWED_NAMESPACES /
    MLSERVE_DENIED_NAMESPACES), or None.
    """
    env_name = str(name)
    decoded, problem = decode_json(raw_env_configs)
    if problem is None and not isinstance(decoded, Mapping):
        problem = f"must be a JSON object, got {type(decoded).__name__}: store an object with keys"
    if problem is not None:
        return SyncIssue(
            Reason.INVALID_ENV_CONFIG, problem, "environments", row_id, "env_configs", environment=env_name
        )
    assert isinstance(decoded, Mapping)
    bound_to = decoded.get("cluster_name")
    if isinstance(bound_to, str) and bound_to != cluster_name:
        return None  # another cluster's: never read further, never reported here
    try:
        config = EnvConfig.parse(decoded)
    except InvalidConfig as exc:
        return SyncIssue(
            Reason.INVALID_ENV_CONFIG,
            f"{exc}",
            "environments",
            row_id,
            exc.field,
            environment=env_name,
        )
    name_problem = _name_problem(name, "environment name", ENVIRONMENT_NAME_MAX)
    if name_problem is not None:
        return SyncIssue(
            Reason.INVALID_DATABASE_ROW, name_problem, "environments", row_id, "name", environment=env_name
        )
    refused = refusal(config.namespace)
    if refused is not None:
        return SyncIssue(Reason.NAMESPACE_REFUSED, refused, "environments", row_id, "env_configs.namespace", env_name)
    return config


_STATUSES = {str(s.value) for s in DeploymentStatus}
_TYPES = {str(t.value) for t in ServeType}


def _allowed(values: set[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def check_active_row(row: Mapping[str, Any], environment: str, namespace: str) -> tuple[str, str] | SyncIssue | None:
    """One ``active_deployments`` row joined with its deployment, serve and artifact
    (:func:`.sync_reads.active_rows`): ``(serve type, artifact version)`` when the pair is
    deployed and usable, None when the deployment ended (the pair is undeployed), or the issue.

    ``row`` holds ``deployment_id``, ``deployment_status``, ``serve_id``, ``serve_name``,
    ``serve_type``, ``artifact_id`` and ``artifact_version`` (None when the artifact row is gone).
    """
    serve = str(row.get("serve_name"))
    pair = (serve, environment)

    def issue(table: str, row_id: Any, column: str, message: str) -> SyncIssue:
        return SyncIssue(
            Reason.INVALID_DATABASE_ROW,
            message,
            table,
            int(row_id) if row_id is not None else None,
            column,
            environment=environment,
            namespace=namespace,
            pair=pair,
        )

    status = row.get("deployment_status")
    if status not in _STATUSES:
        return issue(
            "deployments",
            row.get("deployment_id"),
            "status",
            f"is not a deployment status the operator knows (the rule is one of {_allowed(_STATUSES)}): "
            "set it to one of them",
        )
    if status != DeploymentStatus.ACTIVE:
        return None  # ended without its pointer removed: the pair is undeployed
    name_problem = _name_problem(row.get("serve_name"), "serve name", SERVE_NAME_MAX)
    if name_problem is not None:
        return issue("serves", row.get("serve_id"), "name", name_problem)
    serve_type = row.get("serve_type")
    if serve_type not in _TYPES:
        return issue(
            "serves",
            row.get("serve_id"),
            "type",
            f"is not a serve type the operator knows (the rule is one of {_allowed(_TYPES)}): set it to one of them",
        )
    version = row.get("artifact_version")
    if version is None:
        return issue(
            "deployments",
            row.get("deployment_id"),
            "artifact_id",
            "names no artifact row (artifacts.id): point it at an artifact of the serve",
        )
    if not isinstance(version, str) or not version or len(version) > ARTIFACT_VERSION_MAX:
        return issue(
            "artifacts",
            row.get("artifact_id"),
            "version",
            f"must be 1 to {ARTIFACT_VERSION_MAX} characters (the MLServe's spec.artifactVersion): "
            "use a shorter version",
        )
    return str(serve_type), version
