"""What the database → cluster sync does in one pass, decided without I/O (``docs/sync.md``).

:func:`decide` takes what the pass read (the active deployments of the bound environments,
the MLServes listed in their namespaces, the pairs held by a pending undeploy, the ended
deployments the MLServes of undeployed pairs reflect) and returns typed actions:
:class:`Create`, :class:`SetVersion`, :class:`Delete`, :class:`LeaveToMLServe` and
:class:`Skip`. The caller (:mod:`.sync`) reads, decides, then writes. No clock is read here:
every time comes in with the rows and the MLServes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlserve.operator.render import names
from mlserve.operator.spec import api

from .identity import Pair, mlserve_is_newer, pair_of, spec_changed_at

__all__ = [
    "Action",
    "ActiveRow",
    "Create",
    "Delete",
    "LeaveToMLServe",
    "SetVersion",
    "Skip",
    "Snapshot",
    "decide",
    "deployments_to_check",
    "new_mlserve",
    "reflected_deployment_ids",
]


@dataclass(frozen=True)
class ActiveRow:
    """One pair's active deployment, as the MLServe should reflect it."""

    serve: str
    serve_type: str
    environment: str
    namespace: str
    deployment_id: int
    artifact_version: str
    changed_at: datetime
    """When the database last changed the pair (the deployment's created_at)."""

    @property
    def pair(self) -> Pair:
        return self.serve, self.environment

    @property
    def ref(self) -> str:
        """``namespace/name`` of the MLServe the sync creates for the pair."""
        return f"{self.namespace}/{names.mlserve_name(self.serve, self.environment)}"


@dataclass(frozen=True)
class Snapshot:
    """What one pass read, the input of :func:`decide`."""

    rows: Sequence[ActiveRow] = ()
    """The active deployments of the bound environments (pairs with several left out)."""
    duplicates: Collection[Pair] = frozenset()
    """Pairs with more than one active deployment: left alone until all but one are ended."""
    environments: Mapping[str, str] = field(default_factory=dict)
    """The bound environments: name -> ``env_configs.namespace``."""
    mlserves: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    """The MLServes listed, by namespace (a namespace that could not be listed is absent)."""
    held: Collection[Pair] = frozenset()
    """Pairs whose MLServe was deleted while the database was down (pending undeploys)."""
    ended: Mapping[int, datetime | None] = field(default_factory=dict)
    """Deployments that are not ACTIVE: when they ended (None: unknown, or the row is gone).
    Read for the ids :func:`deployments_to_check` names."""


@dataclass(frozen=True)
class Create:
    """No MLServe stands for the pair: create one for its active deployment."""

    row: ActiveRow

    @property
    def ref(self) -> str:
        return self.row.ref


@dataclass(frozen=True)
class _OnMLServe:
    mlserve: Mapping[str, Any]
    """The MLServe as listed."""

    @property
    def ref(self) -> str:
        return _ref(self.mlserve)


@dataclass(frozen=True)
class SetVersion(_OnMLServe):
    """The database deployed after the MLServe's spec last changed: set spec.artifactVersion
    and the marker, conditional on the generation read."""

    row: ActiveRow


@dataclass(frozen=True)
class Delete(_OnMLServe):
    """The pair was undeployed after the MLServe's spec last changed: delete the MLServe."""

    deployment_ids: tuple[int, ...]
    """The ended deployments it reflects."""


@dataclass(frozen=True)
class LeaveToMLServe(_OnMLServe):
    """The MLServe changed after the database did: its own reconcile records a deployment."""


@dataclass(frozen=True)
class Skip:
    """Nothing is written for the pair, for ``reason``."""

    pair: Pair
    reason: str

    @property
    def ref(self) -> str:
        return "/".join(self.pair)


Action = Create | SetVersion | Delete | LeaveToMLServe | Skip


def _ref(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def reflected_deployment_ids(body: Mapping[str, Any]) -> set[int]:
    """The deployment ids the MLServe says it reflects (marker annotation, status)."""
    ids: set[int] = set()
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(api.ANNOTATION_DEPLOYMENT_ID)
    if raw is not None and str(raw).isdigit():
        ids.add(int(raw))
    status_id = (body.get("status") or {}).get("deploymentId")
    if isinstance(status_id, int):
        ids.add(status_id)
    return ids


def new_mlserve(row: ActiveRow) -> dict[str, Any]:
    """The MLServe the sync creates for a pair: labelled, marked, the four spec fields only
    (overrides stay the user's)."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": names.mlserve_name(row.serve, row.environment),
            "namespace": row.namespace,
            "labels": {
                api.LABEL_SERVE: names.label_value(row.serve),
                api.LABEL_ENVIRONMENT: names.label_value(row.environment),
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
            "annotations": {api.ANNOTATION_DEPLOYMENT_ID: str(row.deployment_id)},
        },
        "spec": {
            "serve": row.serve,
            "environment": row.environment,
            "type": row.serve_type,
            "artifactVersion": row.artifact_version,
        },
    }


@dataclass
class _Found:
    by_pair: dict[Pair, list[Mapping[str, Any]]] = field(default_factory=dict)
    terminating: set[Pair] = field(default_factory=set)


def _found(snapshot: Snapshot) -> _Found:
    """The listed MLServes of bound environments, by pair; those being deleted apart.

    An MLServe of an environment that is not bound here (another cluster's), or not in its
    environment's namespace, is not the sync's: it is ignored.
    """
    found = _Found()
    for namespace in sorted(snapshot.mlserves):
        for body in snapshot.mlserves[namespace]:
            pair = pair_of(body, by_labels=True)
            if pair is None or snapshot.environments.get(pair[1]) != namespace:
                continue
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                # being deleted: its finalizer ends the deployment; never re-create meanwhile
                found.terminating.add(pair)
                continue
            found.by_pair.setdefault(pair, []).append(body)
    return found


def _undeployed(snapshot: Snapshot, found: _Found) -> dict[Pair, list[Mapping[str, Any]]]:
    """The MLServes of pairs without an active deployment (duplicates aside)."""
    active = {row.pair for row in snapshot.rows}
    return {
        pair: bodies for pair, bodies in found.by_pair.items() if pair not in active and pair not in snapshot.duplicates
    }


def deployments_to_check(snapshot: Snapshot) -> set[int]:
    """The deployments the MLServes of undeployed pairs reflect: the pass reads whether they
    ended (:attr:`Snapshot.ended`) before it decides."""
    undeployed = _undeployed(snapshot, _found(snapshot))
    return {i for bodies in undeployed.values() for body in bodies for i in reflected_deployment_ids(body)}


def decide(snapshot: Snapshot, field_manager: str) -> list[Action]:
    """Every action of one pass: the active pairs in order, then the undeployed ones.

    ``field_manager`` is the sync's own: its writes are not changes of the MLServe.
    """
    found = _found(snapshot)
    actions: list[Action] = [Skip(pair, "several active deployments") for pair in sorted(snapshot.duplicates)]
    for row in sorted(snapshot.rows, key=lambda r: r.pair):
        actions.extend(_for_active(row, snapshot, found, field_manager))
    for pair, bodies in sorted(_undeployed(snapshot, found).items()):
        actions.extend(_for_undeployed(pair, bodies, snapshot.ended, field_manager))
    return actions


def _for_active(row: ActiveRow, snapshot: Snapshot, found: _Found, field_manager: str) -> Iterable[Action]:
    """A pair with an active deployment: create its MLServe, or bring it in line."""
    if row.pair in snapshot.held:
        # deleted while the database was down: its deployment is only still active because
        # the undeploy could not be written yet
        return [Skip(row.pair, "its undeploy is pending")]
    if row.pair in found.terminating:
        return [Skip(row.pair, "its MLServe is being deleted")]
    bodies = found.by_pair.get(row.pair, [])
    if not bodies:
        return [Create(row)]
    if len(bodies) > 1:
        # a Conflict the MLServes' reconcile reports; no side is picked here
        return [Skip(row.pair, f"{len(bodies)} MLServes claim it")]
    body = bodies[0]
    if row.deployment_id in reflected_deployment_ids(body):
        return []  # in step, or the MLServe changed since and its reconcile records it
    if (body.get("spec") or {}).get("artifactVersion") == row.artifact_version:
        return []  # already asks for that artifact; its reconcile reports the deployment id
    if mlserve_is_newer(spec_changed_at(body, (field_manager,)), row.changed_at):
        return [LeaveToMLServe(body)]
    return [SetVersion(body, row)]


def _for_undeployed(
    pair: Pair, bodies: Iterable[Mapping[str, Any]], ended: Mapping[int, datetime | None], field_manager: str
) -> Iterable[Action]:
    """MLServes of a pair without an active deployment: delete those whose deployment ended
    after their spec last changed."""
    actions: list[Action] = []
    for body in bodies:
        ids = reflected_deployment_ids(body)
        if not ids:
            actions.append(Skip(pair, f"{_ref(body)} reflects no deployment yet"))
            continue
        if not all(i in ended for i in ids):
            actions.append(Skip(pair, f"{_ref(body)} reflects a deployment still active"))
            continue
        ended_at = max((t for t in (ended[i] for i in ids) if t is not None), default=None)
        if ended_at is not None and mlserve_is_newer(spec_changed_at(body, (field_manager,)), ended_at):
            actions.append(LeaveToMLServe(body))  # re-applied after the undeploy: it wins
            continue
        actions.append(Delete(body, tuple(sorted(ids))))
    return actions
