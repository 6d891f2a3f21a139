"""Authorisation is really on: a ServiceAccount bound to no role is refused; the chart's
aggregated roles give namespace users MLServe rights through the default roles."""

from __future__ import annotations

import uuid

import pytest
from lightkube import ApiError, Client, codecs
from lightkube.config.models import User
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Pod, ServiceAccount, ServiceAccountToken
from lightkube.resources.rbac_authorization_v1 import ClusterRole, RoleBinding
from mlserve_testing.chart import Helm, objects_of
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster import ClusterHandle

pytestmark = pytest.mark.cluster


def test_service_account_without_role_cannot_list_pods(
    cluster: ClusterHandle, kube_client: Client, namespace: str
) -> None:
    kube_client.create(ServiceAccount(metadata=ObjectMeta(name="nobody")), namespace=namespace)
    token = kube_client.create(
        ServiceAccountToken(metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=600)),
        "nobody",
        namespace=namespace,
    ).status.token

    admin = cluster.config().get()
    assert admin is not None
    with (
        Client(admin._replace(user=User(token=token)), namespace=namespace) as as_service_account,
        pytest.raises(ApiError) as refused,
    ):
        list(as_service_account.list(Pod, namespace=namespace))

    assert refused.value.status.code == 403
    assert f"system:serviceaccount:{namespace}:nobody" in (refused.value.status.message or "")

    # the same request as admin succeeds: the 403 is about the identity, not the request
    assert list(kube_client.list(Pod, namespace=namespace)) == []


def test_the_charts_roles_let_namespace_editors_apply_mlserves_and_viewers_read_them(
    kube_client: Client, namespace: str, helm: Helm
) -> None:
    """Kubernetes's aggregation controller adds the chart's rules to the default roles: a user
    bound to `edit` in a namespace may then create MLServes there, one bound to `view` only read."""
    name = f"aggregate-{uuid.uuid4().hex[:8]}"
    roles = [
        r
        for r in objects_of(helm.template("--set", f"fullnameOverride={name}"), "ClusterRole")
        if r["metadata"]["name"].startswith(f"{name}-")
    ]
    assert {r["metadata"]["name"] for r in roles} == {f"{name}-edit", f"{name}-view"}
    for user, role in (("alice", "edit"), ("bob", "view")):
        kube_client.create(
            RoleBinding(
                metadata=ObjectMeta(name=f"{user}-{role}"),
                roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
                subjects=[Subject(kind="User", name=user, apiGroup="rbac.authorization.k8s.io")],
            ),
            namespace=namespace,
        )

    def may(user: str, verb: str) -> bool:
        review = SubjectAccessReview(
            spec=SubjectAccessReviewSpec(
                user=user,
                resourceAttributes=ResourceAttributes(
                    group="mlserve.darwin.io", resource="mlserves", verb=verb, namespace=namespace
                ),
            )
        )
        return bool(kube_client.create(review).status.allowed)

    # (Another test's chart install may have added the same rules already: the session shares
    # the cluster-wide roles. The checks below hold either way.)
    try:
        for role in roles:
            kube_client.create(codecs.from_dict(role))
        wait_for(lambda: may("alice", "create") and may("bob", "list"), timeout=30, what="the aggregated rights")
        assert may("alice", "delete") and may("bob", "watch")
        edit = kube_client.get(ClusterRole, "edit")
        assert any("mlserve.darwin.io" in (rule.apiGroups or []) for rule in edit.rules or [])
        assert not may("bob", "create") and not may("bob", "delete")
    finally:
        for role in roles:
            kube_client.delete(ClusterRole, role["metadata"]["name"])
