"""Every Kubernetes permission the operator needs, with the code path that needs it.

This table is the one place the operator's rights are written down. The Helm chart's RBAC
(``deploy/helm/mlserve-operator/templates/rbac.yaml``) must grant exactly these rules, no
more and no less: ``tests/helm/test_rbac.py`` renders the chart and compares both ways,
and the audited end-to-end run compares them with the requests the operator really sent.
When a code path starts or stops calling the API, change this table, then the chart.

A rule is (API group, resource, verbs). Which rules apply depends on two settings:

- what ``MLSERVE_NAMESPACES`` says (:class:`~.spec.namespaces.Scope`): empty watches the
  whole cluster; exact names watch those namespaces, whose rights a Role in each of them can
  grant; patterns (``team-*``, ``!kube-*``) make kopf list and watch namespaces to match them,
  and the matching namespaces are not known in advance, so their rights come from a ClusterRole;
- peering on (``MLSERVE_PEERING_NAME`` set) or off (standalone);
- the DCM endpoint on (``MLSERVE_DCM_LISTEN`` set, the chart's ``dcm.enabled``) or off;
- the artifact builder on (``MLSERVE_BUILDER_ENABLED``, the chart's ``builder.enabled``) or off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .spec import api
from .spec.namespaces import Scope, scope_of

__all__ = [
    "REFUSED_WHEN_NAMESPACED",
    "RULES",
    "Rule",
    "child_resources",
    "expand",
    "rules_for",
]


ALL = frozenset(Scope)


@dataclass(frozen=True)
class Rule:
    """Rights on one resource (``plural`` or ``plural/subresource``) of one API group."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    """The code path that sends these requests."""
    scopes: frozenset[Scope] = ALL
    """The watch scopes the rule applies to."""
    peering: bool = False
    """Applies only when peering is on."""
    dcm: bool = False
    """Applies only when the DCM endpoint is on."""
    builder: bool = False
    """Applies only when the artifact builder is on."""
    cluster_scoped: bool = False
    """A cluster-scoped resource: granted by a ClusterRole even for a namespaced operator."""
    own_namespace: bool = False
    """Granted in the operator's own namespace only (a Role there), whatever it watches."""
    audited: bool = True
    """False for a right that no request of the operator uses but an admission check on the
    operator's own requests does; the audit-log comparison cannot see those."""
    resource_names_from: str = ""
    """The setting that names the one object the rule is limited to (``resourceNames``);
    empty: every object of the resource."""

    def applies(self, *, scope: Scope, peering: bool, dcm: bool = False, builder: bool = False) -> bool:
        return (
            scope in self.scopes
            and (peering or not self.peering)
            and (dcm or not self.dcm)
            and (builder or not self.builder)
        )


def child_resources() -> list[tuple[str, str]]:
    """(API group, plural) of every kind the renderers produce, from the registry of child kinds."""
    return [(child.group, child.plural) for child in api.CHILD_KINDS]


_CHILD_VERBS = ("create", "delete", "get", "list", "patch", "watch")
_CHILD_WHY = (
    "reconcile.cache.Informer lists and watches each kind (by the managed-by label) into "
    "the cache the reconcile reads, the metadata of the kind's other objects (which names "
    "are taken) and every Ingress's hosts (is another Ingress claiming an MLServe's host?); "
    "reconcile.apply.apply_children: without a cache one list per kind by the MLServe's "
    "labels, a get by name of each rendered child whose name another object holds (or, "
    "without a cache, that the list did not find), server-side apply (a PATCH; when the "
    "child does not exist yet the API server also checks create), delete of children no "
    "longer rendered; reconcile.schedule: server-side apply and delete of scheduled RayJobs, "
    "and a list (by KubeRay's ray.io/cronjob-name label) and delete of a second RayJob "
    "KubeRay's RayCronJob made for one cron time"
)

RULES: tuple[Rule, ...] = (
    Rule(
        api.GROUP,
        api.PLURAL,
        ("create", "delete", "list", "patch", "watch"),
        "reconcile.cache.Informer lists and watches MLServes (the cache, the claims index); "
        "reconcile.mlserve patches labels, annotations and the finalizer (merge patch); "
        "reconcile.controller removes the finalizer after finalize (JSON patch); "
        "reconcile.sync lists an environment's namespace, creates the MLServe of a deploy "
        "made in the database, patches it to follow the database, deletes it when the "
        "deployment ended",
    ),
    Rule(
        api.GROUP,
        f"{api.PLURAL}/status",
        ("patch",),
        "reconcile.status.write_status: merge patch of the status subresource, only when the computed status changed",
    ),
    Rule(
        api.GROUP,
        f"{api.PLURAL}/finalizers",
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
        "reconcile.events.ApiEvents: the reconcile's Events (deploys, rollbacks, repairs, "
        "errors) are POSTed as core v1 Events",
    ),
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf's resource observer: watches CRDs to start watching a kind (e.g. KubeRay's "
        "RayJob) installed after the operator started",
        scopes=frozenset({Scope.CLUSTER, Scope.PATTERNS}),
        cluster_scoped=True,
    ),
    Rule(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf's namespace observer: lists and watches namespaces to serve those matching "
        "the MLSERVE_NAMESPACES patterns, as they come and go",
        scopes=frozenset({Scope.PATTERNS}),
        cluster_scoped=True,
    ),
    Rule(
        "kopf.dev",
        "clusterkopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, cluster-wide (MLSERVE_PEERING_NAME): watches the ClusterKopfPeering "
        "and patches this pod's keep-alive into it",
        scopes=frozenset({Scope.CLUSTER}),
        peering=True,
        cluster_scoped=True,
    ),
    Rule(
        "kopf.dev",
        "kopfpeerings",
        ("list", "patch", "watch"),
        "kopf peering, namespaced (MLSERVE_PEERING_NAME): watches the KopfPeering of each "
        "watched namespace and patches this pod's keep-alive into it",
        scopes=frozenset({Scope.NAMESPACES, Scope.PATTERNS}),
        peering=True,
    ),
    Rule(
        "",
        "configmaps",
        ("create", "delete", "get", "patch"),
        "reconcile.pending.ConfigMapStore (MLSERVE_PENDING_CONFIGMAP): the sync loop reads the "
        "undeploys a deletion had to skip when it starts or becomes the active replica; the "
        "finalizer and the sync's retries write the list with server-side apply when it changes "
        "(a PATCH; the API server checks create when it makes the ConfigMap) and delete the "
        "ConfigMap when the list is empty again; limited to that one ConfigMap",
        own_namespace=True,
        resource_names_from="MLSERVE_PENDING_CONFIGMAP",
    ),
    Rule(
        "",
        "events",
        ("create",),
        "reconcile.sync._report_issues: a Warning Event in the operator's own namespace about an "
        "environment row the sync cannot use (env_configs that does not parse, a refused "
        "namespace), and about unreadable entries of the pending-undeploy ConfigMap; sent only "
        "when the database or the ConfigMap holds such a row, so the audited run may not see it",
        own_namespace=True,
        audited=False,
    ),
    Rule(
        "",
        "pods",
        ("list",),
        "reconcile.children._image_pulls: a rollout not Ready for 10 s lists its serve's pods by the "
        "children's selector (can they pull their image?); dcm.server.kube_pod_lister "
        "(MLSERVE_DCM_LISTEN): Darwin's status call lists a serve's pods the same way",
        audited=False,
    ),
    Rule(
        "batch",
        "jobs",
        ("create", "get"),
        "reconcile.builder.Builder (MLSERVE_BUILDER_ENABLED): creates the Kubernetes Job of each "
        "build job it leases and reads it (one GET per held build and tick) until it completes "
        "or fails; in the builder's namespace, the operator's own in the chart",
        own_namespace=True,
        builder=True,
    ),
)

#: Requests kopf would send for an operator watching namespaces given by name, deliberately
#: NOT granted: they need cluster-wide rights, which a per-namespace install does not give.
#: They are not sent: ``handlers.configure_kopf`` turns kopf's scanning off for such runs
#: (``settings.scanning.disabled``), so kopf takes MLSERVE_NAMESPACES as the exact names they
#: are and serves the kinds found at start-up (a CRD installed later needs a restart). With
#: scanning on, kopf would be refused, retry with backoff for about a minute (delaying the
#: start) and fall back to the same. The audit tests check that none of them is sent.
REFUSED_WHEN_NAMESPACED: tuple[Rule, ...] = (
    Rule(
        "",
        "namespaces",
        ("list", "watch"),
        "kopf's namespace observer: lists and watches namespaces to match MLSERVE_NAMESPACES as patterns",
        scopes=frozenset({Scope.NAMESPACES}),
        cluster_scoped=True,
    ),
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf's resource observer: watches CRDs for kinds installed after the start",
        scopes=frozenset({Scope.NAMESPACES}),
        cluster_scoped=True,
    ),
)


def rules_for(*, namespaces: Sequence[str], peering: bool, dcm: bool = False, builder: bool = False) -> list[Rule]:
    """The rules that apply to an operator run with these settings (``MLSERVE_NAMESPACES``
    as a list, whether ``MLSERVE_PEERING_NAME`` is set, whether ``MLSERVE_DCM_LISTEN`` is,
    whether ``MLSERVE_BUILDER_ENABLED`` is)."""
    scope = scope_of(namespaces)
    return [r for r in RULES if r.applies(scope=scope, peering=peering, dcm=dcm, builder=builder)]


def expand(rules: Iterable[Rule]) -> Iterator[tuple[str, str, str]]:
    """(group, resource, verb) for every verb of every rule."""
    for rule in rules:
        for verb in rule.verbs:
            yield rule.group, rule.resource, verb
