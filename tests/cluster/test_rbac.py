"""Authorisation is really on: a ServiceAccount bound to no role is refused."""

from __future__ import annotations

import pytest
from lightkube import ApiError, Client
from lightkube.config.models import User
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, ServiceAccount, ServiceAccountToken

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
