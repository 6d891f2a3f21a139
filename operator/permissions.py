"""Every Kubernetes permission the operator needs, with the code path that needs it.

This table is the one place the operator's rights are written down. The Helm chart's RBAC
(``deploy/helm/mlserve-operator/templates/rbac.yaml``) must grant exactly these rules, no
more and no less: ``tests/helm/test_rbac.py`` renders the chart and compares both ways,
and the audited end-to-end run compares them with the requests the operator really sent.
When a code path starts or stops calling the API, change this table, then the chart.

A rule is (API group, resource, verbs). Which rules apply depends on two settings:

- cluster-wide (``MLSERVE_NAMESPACES`` empty) or namespaced (given namespaces): namespaced
  resources are granted by one ClusterRole, or by a Role in each watched namespace;
  cluster-scoped resources always need a ClusterRole;
- peering on (``MLSERVE_PEERING_NAME`` set) or off (standalone).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from .reconcile.kube import API_KINDS, WORKFLOW_KINDS

__all__ = ["Mode", "Rule", "RULES", "child_resources", "expand", "rules_for"]


class Mode(Enum):
    """When a rule applies."""

    ALWAYS = "always"
    CLUSTERWIDE = "cluster-wide only"
    NAMESPACED = "namespaced only"
    CLUSTERWIDE_PEERING = "cluster-wide with peering"
    NAMESPACED_PEERING = "namespaced with peering"


@dataclass(frozen=True)
class Rule:
    """Rights on one resource (``plural`` or ``plural/subresource``) of one API group."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    """The code path that sends these requests."""
    mode: Mode = Mode.ALWAYS
    cluster_scoped: bool = False
    """A cluster-scoped resource: granted by a ClusterRole even for a namespaced operator."""
    audited: bool = True
    """False for a right that no request of the operator uses but an admission check on the
    operator's own requests does; the audit-log comparison cannot see those."""

    def applies(self, *, clusterwide: bool, peering: bool) -> bool:
        return {
            Mode.ALWAYS: True,
            Mode.CLUSTERWIDE: clusterwide,
            Mode.NAMESPACED: not clusterwide,
            Mode.CLUSTERWIDE_PEERING: clusterwide and peering,
            Mode.NAMESPACED_PEERING: not clusterwide and peering,
        }[self.mode]


def child_resources() -> list[tuple[str, str]]:
    """(API group, plural) of every kind the renderers produce, from the reconcile's list."""
    out = []
    for resource in (*API_KINDS, *WORKFLOW_KINDS):
        info = resource._api_info
        out.append((info.resource.group, info.plural))
    return out


_CHILD_VERBS = ("delete", "list", "patch")
_CHILD_WHY = (
    "reconcile.apply.apply_children: list by the MLServe's labels (one list per kind), "
    "server-side apply (PATCH, which also creates), delete of children no longer rendered"
)

RULES: tuple[Rule, ...] = (
    Rule(
        "mlserve.darwin.io",
        "mlserves",
        ("list", "patch", "watch"),
        "kopf watches MLServes (list + watch) and patches its finalizer and progress "
        "annotations onto them",
    ),
    Rule(
        "mlserve.darwin.io",
        "mlserves/status",
        ("patch",),
        "kopf writes the status computed by the reconcile through the status subresource",
    ),
    Rule(
        "mlserve.darwin.io",
        "mlserves/finalizers",
        ("update",),
        "children carry an ownerReference with blockOwnerDeletion (reconcile.apply.Owner); "
        "clusters with the OwnerReferencesPermissionEnforcement admission plugin check this "
        "right on the owner when such a child is applied",
        audited=False,
    ),
    *(
        Rule(group, plural, _CHILD_VERBS, _CHILD_WHY)
        for group, plural in child_resources()
    ),
    Rule(
        "",
        "events",
        ("create",),
        "kopf's event poster (kopf.event/info/warn and handler failures) POSTs core v1 Events",
    ),
    Rule(
        "kopf.dev",
        "clusterkopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, cluster-wide: watches the ClusterKopfPeering and patches its "
        "keep-alive into it",
        mode=Mode.CLUSTERWIDE_PEERING,
        cluster_scoped=True,
    ),
    Rule(
        "kopf.dev",
        "kopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, namespaced: watches the KopfPeering of each watched namespace and "
        "patches its keep-alive into it",
        mode=Mode.NAMESPACED_PEERING,
    ),
)


def rules_for(*, clusterwide: bool, peering: bool) -> list[Rule]:
    """The rules that apply to an operator run with these settings."""
    return [r for r in RULES if r.applies(clusterwide=clusterwide, peering=peering)]


def expand(rules: Iterable[Rule]) -> Iterator[tuple[str, str, str]]:
    """(group, resource, verb) for every verb of every rule."""
    for rule in rules:
        for verb in rule.verbs:
            yield rule.group, rule.resource, verb
