"""The chart grants exactly the operator's permission table (``mlserve.operator.permissions``).

Both directions: a verb or resource the chart grants and the table lacks fails, and so
does one the table needs and the chart lacks. The table itself says which code path uses
each rule; the audited end-to-end run checks it against the requests really sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing.chart import RELEASE_NAMESPACE, VALUE_SETS, Helm, load_values, objects_of

from mlserve.operator import permissions
from mlserve.operator.reconcile.kube import API_KINDS, WORKFLOW_KINDS
from mlserve.operator.spec.namespaces import scope_of

# (namespace or None for cluster-wide, API group, resource, verb, resourceNames or ())
Grant = tuple[str | None, str, str, str, tuple[str, ...]]


def aggregated(role: dict[str, Any]) -> bool:
    """A role for people, added to Kubernetes's default roles: not the operator's."""
    labels = role["metadata"].get("labels") or {}
    return any(key.startswith("rbac.authorization.k8s.io/aggregate-to-") for key in labels)


def granted(objects: list[dict[str, Any]], service_account: str) -> set[Grant]:
    """What the rendered roles bound to the ServiceAccount grant, verb by verb."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole") and not aggregated(o)
    }
    grants: set[Grant] = set()
    bound: set[tuple[str, str | None, str]] = set()
    for binding in objects_of(objects, "RoleBinding") + objects_of(objects, "ClusterRoleBinding"):
        subjects = binding["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": service_account, "namespace": RELEASE_NAMESPACE}]
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        key = (ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{binding['kind']} {binding['metadata']['name']} refers to a role the chart lacks: {key}"
        bound.add(key)
        for rule in roles[key]["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, f"unexpected rule fields: {rule}"
            names = tuple(sorted(rule.get("resourceNames") or ()))
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {key}: {rule}"
                        grants.add((namespace, group, resource, verb, names))
    assert bound == set(roles), f"roles bound to nothing: {set(roles) - bound}"
    return grants


def expected(values: dict[str, Any], settings: dict[str, str]) -> set[Grant]:
    """``settings``: the chart's ConfigMap of MLSERVE_* values (names resourceNames refer to)."""
    namespaces = values["watchNamespaces"]
    rules = permissions.rules_for(
        namespaces=namespaces,
        peering=values["peering"]["enabled"],
        dcm=values.get("dcm", {}).get("enabled", False),
        builder=values.get("builder", {}).get("enabled", False),
    )
    per_namespace = not scope_of(namespaces).cluster_role
    out: set[Grant] = set()
    for rule in rules:
        scopes: list[str | None] = list(namespaces) if per_namespace and not rule.cluster_scoped else [None]
        if rule.own_namespace:
            scopes = [RELEASE_NAMESPACE]
        names = (settings[rule.resource_names_from],) if rule.resource_names_from else ()
        for group, resource, verb in permissions.expand([rule]):
            out.update((scope, group, resource, verb, names) for scope in scopes)
    return out


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_rbac_equals_the_permission_table(helm: Helm, value_set: str) -> None:
    values = load_values(value_set)
    objects = helm.template(value_set=value_set)
    deployment = objects_of(objects, "Deployment")[0]
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    have = granted(objects, service_account)
    settings = objects_of(objects, "ConfigMap")[0]["data"]
    want = expected(values, settings)
    assert not have - want, f"the chart grants what no code path uses: {sorted(have - want, key=str)}"
    assert not want - have, f"the chart lacks what the operator needs: {sorted(want - have, key=str)}"


def test_namespaced_operator_gets_nothing_cluster_wide(helm: Helm) -> None:
    objects = helm.template(value_set="namespaced")
    assert not [r for r in objects_of(objects, "ClusterRole") if not aggregated(r)]
    assert not objects_of(objects, "ClusterRoleBinding")
    # and one Role in its own namespace, for the ConfigMap of pending undeploys
    assert {r["metadata"]["namespace"] for r in objects_of(objects, "Role")} == {
        "serving",
        "workflows",
        RELEASE_NAMESPACE,
    }


def test_namespace_patterns_get_a_cluster_role_that_lists_namespaces(helm: Helm) -> None:
    objects = helm.template(value_set="patterns")
    assert {r["metadata"]["namespace"] for r in objects_of(objects, "Role")} == {RELEASE_NAMESPACE}
    (role,) = [r for r in objects_of(objects, "ClusterRole") if not aggregated(r)]
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in role["rules"]


def test_namespace_patterns_and_peering_are_refused(helm: Helm) -> None:
    result = helm.render("--set", "watchNamespaces={team-*}", check=False)
    assert result.returncode != 0
    assert "cannot make for the patterns in watchNamespaces" in result.stderr


def test_rbac_off_renders_no_rbac(helm: Helm) -> None:
    objects = helm.template("--set", "rbac.create=false")
    assert not {o["kind"] for o in objects} & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_table_covers_every_kind_the_reconcile_applies() -> None:
    """The children's rules come from the reconcile's kind lists, so a new kind needs a rule."""
    children = {(r._api_info.resource.group, r._api_info.plural) for r in (*API_KINDS, *WORKFLOW_KINDS)}
    in_table = {(rule.group, rule.resource) for rule in permissions.RULES}
    assert children <= in_table


def test_table_rules_are_well_formed() -> None:
    seen = set()
    for rule in permissions.RULES:
        assert rule.why.strip(), rule
        assert rule.verbs == tuple(sorted(set(rule.verbs))), f"verbs of {rule.resource} unsorted or repeated"
        assert set(rule.verbs) <= {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
        key = (rule.group, rule.resource, rule.scopes, rule.peering, rule.own_namespace)
        assert key not in seen, f"{key} twice"
        seen.add(key)


def test_mlserve_rights_are_added_to_the_default_roles(helm: Helm) -> None:
    roles = {
        r["metadata"]["name"].rsplit("-", 1)[-1]: r for r in objects_of(helm.template(), "ClusterRole") if aggregated(r)
    }
    assert set(roles) == {"edit", "view"}
    edit_labels = roles["edit"]["metadata"]["labels"]
    assert edit_labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit_labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert roles["view"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    view_verbs = {v for rule in roles["view"]["rules"] for v in rule["verbs"]}
    assert view_verbs == {"get", "list", "watch"}
    off = helm.template("--set", "rbac.aggregateToDefaultRoles=false")
    assert not [r for r in objects_of(off, "ClusterRole") if aggregated(r)]
