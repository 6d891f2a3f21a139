"""What the database → cluster sync does in one pass, decided without I/O (``docs/sync.md``).

:func:`decide` takes what the pass read (the active deployments of the bound environments,
the MLServes listed in their namespaces, the pairs held by a pending undeploy, the
deployments that ended or vanished among those the MLServes of undeployed pairs reflect) and
returns typed actions: :class:`Create`, :class:`SetVersion`, :class:`Delete`,
:class:`LeaveToMLServe` and :class:`Skip`. The caller (:mod:`.sync`) reads, decides, then
writes. No clock is read or compared here: an MLServe is judged by the deployment it
reflects (its annotation) against the pair's active deployment.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlserve.operator.render import names
from mlserve.operator.spec import api

from .identity import Pair, pair_of, reflected_id

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
    "set_version_operations",
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
    """The MLServes listed, by namespace (a namespace that could not be listed is absent,
    and nothing is created in it during the pass)."""
    held: Collection[Pair] = frozenset()
    """Pairs whose MLServe was deleted while the database was down (pending undeploys)."""
    ended: Collection[int] = frozenset()
    """Deployments that are not ACTIVE any more (ENDED, or the row is gone). Read for the
    ids :func:`deployments_to_check` names."""
    held_back: Mapping[Pair, str] = field(default_factory=dict)
    """Pairs left alone this pass, with why: a database row the operator cannot use
    (:mod:`.sync_checks`), or a write that failed and waits for its retry time."""


@dataclass(frozen=True)
class Create:
    """No MLServe stands for the pair: create one for its active deployment."""

    row: ActiveRow
    name: str = ""
    """The MLServe's name: ``<serve>-<environment>``, or with a hash of the pair when an
    MLServe of another pair has that name (``fraud-model/prod`` and ``fraud/model-prod``)."""

    @property
    def ref(self) -> str:
        return f"{self.row.namespace}/{self.name or names.mlserve_name(self.row.serve, self.row.environment)}"


@dataclass(frozen=True)
class _OnMLServe:
    mlserve: Mapping[str, Any]
    """The MLServe as listed."""

    @property
    def ref(self) -> str:
        return _ref(self.mlserve)


@dataclass(frozen=True)
class SetVersion(_OnMLServe):
    """The pair's active deployment is not the one the MLServe reflects: set
    spec.artifactVersion and the annotation, conditional on the generation read."""

    row: ActiveRow


@dataclass(frozen=True)
class Delete(_OnMLServe):
    """The pair has no active deployment and the MLServe reflects one that ended (or
    vanished): delete the MLServe."""

    deployment_ids: tuple[int, ...]
    """The ended deployment it reflects."""


@dataclass(frozen=True)
class LeaveToMLServe(_OnMLServe):
    """The MLServe reflects the active deployment but asks for another version: a pending
    request, which its own reconcile records (or finds superseded)."""


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
    """The deployment the MLServe reflects (its annotation), as a set (empty: none)."""
    reflected = reflected_id(body)
    return set() if reflected is None else {reflected}


def mlserve_name_for(row: ActiveRow, taken: Mapping[str, Pair | None]) -> str:
    """The name of the MLServe the sync creates for ``row``: ``<serve>-<environment>``, or,
    when an MLServe of another pair already has that name in the namespace (``taken``: name
    -> its pair), the same with a short hash of the pair (stable, so found again by labels)."""
    name = names.mlserve_name(row.serve, row.environment)
    if name not in taken or taken[name] == row.pair:
        return name
    return names.fit_name(
        f"{row.serve}-{row.environment}", suffix=f"-{names.short_hash(row.serve + '/' + row.environment)}"
    )


def new_mlserve(row: ActiveRow, name: str | None = None) -> dict[str, Any]:
    """The MLServe the sync creates for a pair: labelled, marked, the four spec fields only
    (overrides stay the user's), and held by the operator's finalizer from birth.

    It reflects its deployment (the annotation) from birth, so the reconcile would add the
    finalizer in its first metadata patch anyway (``mlserve._ensure_metadata`` holds every
    MLServe that reflects a deployment): carrying the labels, the annotation and the finalizer
    at creation leaves that patch nothing to write. It also means a deletion before the first
    reconcile ends the deployment like any later one, instead of the sync creating the
    MLServe again next tick for a deployment still active. The sync only creates in watched
    namespaces, so an operator is there to release the finalizer."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": name or names.mlserve_name(row.serve, row.environment),
            "namespace": row.namespace,
            "labels": {
                api.LABEL_SERVE: names.label_value(row.serve),
                api.LABEL_ENVIRONMENT: names.label_value(row.environment),
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
            },
            "annotations": {api.ANNOTATION_DEPLOYMENT_ID: str(row.deployment_id)},
            "finalizers": [api.FINALIZER],
        },
        "spec": {
            "serve": row.serve,
            "environment": row.environment,
            "type": row.serve_type,
            "artifactVersion": row.artifact_version,
        },
    }


def set_version_operations(body: Mapping[str, Any], artifact_version: str, deployment_id: int) -> list[dict[str, Any]]:
    """The JSON Patch that sets ``spec.artifactVersion`` and the annotation to a deployment,
    only if the spec is still the one read.

    A ``test`` of ``metadata.generation`` makes the write conditional on the spec alone (the
    generation moves with spec changes only): a status or label write in between does not
    refuse it, a spec change does (422), and the writer decides again.
    """
    metadata = body["metadata"]
    marker = str(deployment_id)
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/generation", "value": metadata["generation"]},
        {"op": "add", "path": "/spec/artifactVersion", "value": artifact_version},
    ]
    if metadata.get("annotations"):
        key = api.ANNOTATION_DEPLOYMENT_ID.replace("~", "~0").replace("/", "~1")
        operations.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": marker})
    else:
        operations.append(
            {"op": "add", "path": "/metadata/annotations", "value": {api.ANNOTATION_DEPLOYMENT_ID: marker}}
        )
    return operations


@dataclass
class _Found:
    by_pair: dict[Pair, list[Mapping[str, Any]]] = field(default_factory=dict)
    terminating: set[Pair] = field(default_factory=set)
    taken: dict[str, dict[str, Pair | None]] = field(default_factory=dict)
    """namespace -> name -> the pair of the MLServe of that name (every one listed)."""


def _found(snapshot: Snapshot) -> _Found:
    """The listed MLServes of bound environments, by pair; those being deleted apart.

    An MLServe of an environment that is not bound here (another cluster's), or not in its
    environment's namespace, is not the sync's: it is ignored.
    """
    found = _Found()
    for namespace in sorted(snapshot.mlserves):
        taken = found.taken.setdefault(namespace, {})
        for body in snapshot.mlserves[namespace]:
            pair = pair_of(body, by_labels=True)
            taken[str((body.get("metadata") or {}).get("name"))] = pair
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


def decide(snapshot: Snapshot) -> list[Action]:
    """Every action of one pass: the active pairs in order, then the undeployed ones."""
    found = _found(snapshot)
    actions: list[Action] = [Skip(pair, "several active deployments") for pair in sorted(snapshot.duplicates)]
    for row in sorted(snapshot.rows, key=lambda r: r.pair):
        if row.pair in snapshot.held_back:
            actions.append(Skip(row.pair, snapshot.held_back[row.pair]))
        else:
            actions.extend(_for_active(row, snapshot, found))
    for pair, bodies in sorted(_undeployed(snapshot, found).items()):
        if pair in snapshot.held_back:
            # its row is unusable (it may well still be active) or a write waits: never deleted
            actions.append(Skip(pair, snapshot.held_back[pair]))
        else:
            actions.extend(_for_undeployed(pair, bodies, snapshot.ended))
    return actions


def _for_active(row: ActiveRow, snapshot: Snapshot, found: _Found) -> Iterable[Action]:
    """A pair with an active deployment: create its MLServe, or bring it in line."""
    if row.pair in snapshot.held:
        # deleted while the database was down: its deployment is only still active because
        # the undeploy could not be written yet
        return [Skip(row.pair, "its undeploy is pending")]
    if row.namespace not in snapshot.mlserves:
        # not listed: an MLServe of the pair may be there; creating one could duplicate it
        return [Skip(row.pair, f"namespace {row.namespace} could not be listed")]
    if row.pair in found.terminating:
        return [Skip(row.pair, "its MLServe is being deleted")]
    bodies = found.by_pair.get(row.pair, [])
    if not bodies:
        taken = found.taken.setdefault(row.namespace, {})
        name = mlserve_name_for(row, taken)
        taken[name] = row.pair  # two new pairs of one name in one pass: the second gets the hash
        return [Create(row, name)]
    if len(bodies) > 1:
        # a Conflict the MLServes' reconcile reports; no side is picked here
        return [Skip(row.pair, f"{len(bodies)} MLServes claim it")]
    body = bodies[0]
    if reflected_id(body) != row.deployment_id:
        return [SetVersion(body, row)]  # the database moved: the MLServe follows it
    if (body.get("spec") or {}).get("artifactVersion") != row.artifact_version:
        return [LeaveToMLServe(body)]  # a pending request: its reconcile records it
    return []  # in step


def _for_undeployed(pair: Pair, bodies: Iterable[Mapping[str, Any]], ended: Collection[int]) -> Iterable[Action]:
    """MLServes of a pair without an active deployment: delete those that reflect a
    deployment that ended (or vanished); one that reflects nothing has a request pending."""
    actions: list[Action] = []
    for body in bodies:
        reflected = reflected_id(body)
        if reflected is None:
            actions.append(Skip(pair, f"{_ref(body)} reflects no deployment yet"))
        elif reflected not in ended:
            actions.append(Skip(pair, f"{_ref(body)} reflects a deployment still active"))
        else:
            actions.append(Delete(body, (reflected,)))
    return actions
