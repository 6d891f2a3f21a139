"""Server-side apply behaves as the operator relies on: a repeated apply writes nothing,
and a second field manager cannot take an owned field without forcing."""

from __future__ import annotations

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

pytestmark = pytest.mark.cluster

MANAGER = "mlserve-operator"


def _config_map(namespace: str, value: str) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name="settings", namespace=namespace), data={"mode": value})


def test_applying_the_same_object_twice_changes_nothing(kube_client: Client, namespace: str) -> None:
    first = kube_client.apply(_config_map(namespace, "serve"), field_manager=MANAGER)
    second = kube_client.apply(_config_map(namespace, "serve"), field_manager=MANAGER)

    assert second.metadata.resourceVersion == first.metadata.resourceVersion
    assert second.metadata.managedFields == first.metadata.managedFields


def test_another_manager_changing_an_owned_field_conflicts(kube_client: Client, namespace: str) -> None:
    kube_client.apply(_config_map(namespace, "serve"), field_manager=MANAGER)

    with pytest.raises(ApiError) as conflict:
        kube_client.apply(_config_map(namespace, "batch"), field_manager="someone-else")

    assert conflict.value.status.code == 409
    assert MANAGER in (conflict.value.status.message or "")
    assert kube_client.get(ConfigMap, "settings", namespace=namespace).data == {"mode": "serve"}

    # forcing takes the field over, as the operator does for what it owns
    forced = kube_client.apply(_config_map(namespace, "batch"), field_manager="someone-else", force=True)
    assert forced.data == {"mode": "batch"}
