"""Server-side apply behaves as the operator relies on: a repeated apply writes nothing,
a second field manager cannot take an owned field without forcing, and an object created
by POST keeps a field a later apply drops (why the operator creates children by apply)."""

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


def test_an_object_created_by_post_keeps_a_field_a_later_apply_drops(kube_client: Client, namespace: str) -> None:
    """Why the operator creates its children by apply, never by POST (apply.py): a POST with
    the operator's field manager records its fields under operation Update, a separate owner
    from the same manager's Apply, so a later apply that drops a field (a changed rendering)
    leaves it in place instead of removing it."""
    created = kube_client.create(
        ConfigMap(metadata=ObjectMeta(name="settings", namespace=namespace), data={"mode": "serve", "extra": "1"}),
        field_manager=MANAGER,
    )
    assert [(m.manager, m.operation) for m in created.metadata.managedFields or []] == [(MANAGER, "Update")]

    applied = kube_client.apply(_config_map(namespace, "serve"), field_manager=MANAGER, force=True)

    assert applied.data == {"mode": "serve", "extra": "1"}  # not pruned
    owners = {(m.manager, m.operation) for m in applied.metadata.managedFields or []}
    assert owners == {(MANAGER, "Update"), (MANAGER, "Apply")}

    # created by apply, the same drop removes the field
    kube_client.delete(ConfigMap, "settings", namespace=namespace)
    kube_client.apply(
        ConfigMap(metadata=ObjectMeta(name="settings", namespace=namespace), data={"mode": "serve", "extra": "1"}),
        field_manager=MANAGER,
    )
    assert kube_client.apply(_config_map(namespace, "serve"), field_manager=MANAGER, force=True).data == {
        "mode": "serve"
    }
