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

__all__ = ["REFUSED_WHEN_NAMESPACED", "Mode", "Rule", "RULES", "child_resources", "expand", "rules_for"]


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


_CHILD_VERBS = ("create", "delete", "list", "patch", "watch")
_CHILD_WHY = (
    "handlers._register_child_watch: kopf watches each kind (list + watch, by the "
    "managed-by label) to wake the owner's worker; reconcile.apply.apply_children: one "
    "list per kind by the MLServe's labels, server-side apply (a PATCH; when the child does "
    "not exist yet the API server also checks create), delete of children no longer "
    "rendered; reconcile.schedule: server-side apply and delete of scheduled RayJobs"
)

RULES: tuple[Rule, ...] = (
    Rule(
        "mlserve.darwin.io",
        "mlserves",
        ("create", "delete", "list", "patch", "watch"),
        "kopf watches MLServes (list + watch: the worker daemon, the claims index, the "
        "event handler) and patches its finalizer and annotations onto them; "
        "reconcile.mlserve patches labels and rollback annotations (merge patch); "
        "reconcile.sync lists an environment's namespace, creates the MLServe of a deploy "
        "made in the database, patches it to follow the database, deletes it when the "
        "deployment ended",
    ),
    Rule(
        "mlserve.darwin.io",
        "mlserves/status",
        ("patch",),
        "reconcile.status.write_status: merge patch of the status subresource, only when the "
        "computed status changed",
    ),
    Rule(
        "mlserve.darwin.io",
        "mlserves/finalizers",
        ("update",),
        "children carry an ownerReference with blockOwnerDeletion (reconcile.apply.Owner); "
        "clusters with the OwnerReferencesPermissionEnforcement admission plugin check this "
        "right on the owner when such a child is applied (no request of its own)",
        audited=False,
    ),
    *(Rule(group, plural, _CHILD_VERBS, _CHILD_WHY) for group, plural in child_resources()),
    Rule(
        "",
        "events",
        ("create",),
        "kopf's event poster: reconcile.events.KopfEvents (kopf.event) and kopf's own "
        "per-object log lines are POSTed as core v1 Events",
    ),
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf's resource observer, cluster-wide: watches CRDs to start watching a kind "
        "(e.g. KubeRay's RayJob) installed after the operator started",
        mode=Mode.CLUSTERWIDE,
        cluster_scoped=True,
    ),
    Rule(
        "kopf.dev",
        "clusterkopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, cluster-wide (MLSERVE_PEERING_NAME): watches the ClusterKopfPeering "
        "and patches this pod's keep-alive into it",
        mode=Mode.CLUSTERWIDE_PEERING,
        cluster_scoped=True,
    ),
    Rule(
        "kopf.dev",
        "kopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, namespaced (MLSERVE_PEERING_NAME): watches the KopfPeering of each "
        "watched namespace and patches this pod's keep-alive into it",
        mode=Mode.NAMESPACED_PEERING,
    ),
)

#: Requests a namespaced operator sends that are deliberately NOT granted: they need
#: cluster-wide rights, which a namespaced install does not give. kopf is refused, logs a
#: warning once and falls back: it treats MLSERVE_NAMESPACES as exact names (they are) and
#: keeps the kinds found at start-up (a CRD installed later needs a restart). Setting
#: kopf's ``settings.scanning.disabled`` for namespaced runs would stop these requests.
REFUSED_WHEN_NAMESPACED: tuple[Rule, ...] = (
    Rule(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf's namespace observer (namespaced runs only): lists and watches namespaces to "
        "match MLSERVE_NAMESPACES as patterns",
        mode=Mode.NAMESPACED,
        cluster_scoped=True,
    ),
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf's resource observer: watches CRDs for kinds installed after the start",
        mode=Mode.NAMESPACED,
        cluster_scoped=True,
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
