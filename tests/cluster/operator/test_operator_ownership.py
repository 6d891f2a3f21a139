"""The operator never writes a child name it does not control: a hand-made object with that
name, or the children of another MLServe whose (serve, environment) renders the same names.
The MLServe reports ``NameTaken`` and takes the name once it is free."""

from __future__ import annotations

import re
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec, ServicePort, ServiceSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Service
from mlserve_testing import darwin
from mlserve_testing.mlserves import apply, children, condition, events, get, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

pytestmark = [pytest.mark.cluster]

OPERATOR = "mlserve-operator"


def _written(obj: Any) -> tuple[Any, list[str]]:
    """(generation, when the operator's field manager wrote it): the resourceVersion is no
    witness, a Deployment's status moves on as its pods start."""
    ours = [
        str(entry.time)
        for entry in obj.metadata.managedFields or []
        if entry.manager == OPERATOR and not entry.subresource
    ]
    return obj.metadata.generation, ours


async def test_hand_made_objects_are_left_alone_until_they_are_deleted(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    """A Service and a Deployment made by hand with the names of the serve's children: the
    operator knows the names are taken from its watch of other objects' metadata, reads
    them, and writes nothing until they are gone."""
    serve, env = unique("checkout"), unique("prod")
    name = f"{serve}-{env}"
    await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
    hand_made = kube_client.create(
        Service(metadata=ObjectMeta(name=name), spec=ServiceSpec(ports=[ServicePort(port=8000)])), namespace=namespace
    )
    labels = {"app": "by-hand"}
    hand_made_deployment = kube_client.create(
        Deployment(
            metadata=ObjectMeta(name=name),
            spec=DeploymentSpec(
                replicas=0,
                selector=LabelSelector(matchLabels=labels),
                template=PodTemplateSpec(
                    metadata=ObjectMeta(labels=labels),
                    spec=PodSpec(containers=[Container(name="app", image="example.com/by-hand:1")]),
                ),
            ),
        ),
        namespace=namespace,
    )
    apply(kube_client, mlserve(serve, namespace, env, "v1"))

    body = wait_condition(kube_client, serve, namespace, "Synced", status="False", reason="NameTaken", timeout=60)
    assert f"Service/{name}" in body["status"]["message"]
    assert f"Deployment/{name}" in body["status"]["message"]
    deployment = kube_client.get(Deployment, name, namespace=namespace)
    assert _written(deployment) == _written(hand_made_deployment)
    kube_client.delete(Deployment, name, namespace=namespace)
    wait_for(
        lambda: any(e.reason == "NameTaken" and e.type == "Warning" for e in events(kube_client, namespace, serve)),
        timeout=30,
        what="a Warning Event NameTaken on the MLServe",
    )
    service = kube_client.get(Service, name, namespace=namespace)
    assert service.metadata.resourceVersion == hand_made.metadata.resourceVersion
    assert not service.metadata.ownerReferences
    assert children(kube_client, namespace) == {}, "nothing written while the name is taken"

    # The retries take the name once it is free, with no change to the MLServe.
    kube_client.delete(Service, name, namespace=namespace)
    wait_condition(kube_client, serve, namespace, "Ready", timeout=90)
    uid = get(kube_client, serve, namespace)["metadata"]["uid"]
    refs = kube_client.get(Service, name, namespace=namespace).metadata.ownerReferences or []
    assert [ref.uid for ref in refs] == [uid]


async def test_two_mlserves_rendering_the_same_names_keep_to_the_first(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    stem, env = unique("fraud"), unique("prod")
    child = f"{stem}-model-{env}"  # fraud-model/prod and fraud/model-prod render the same names
    await darwin.seed_api_serve(f"{stem}-model", env, namespace, min_replicas=1, max_replicas=1)
    await darwin.seed_api_serve(stem, f"model-{env}", namespace, min_replicas=1, max_replicas=1)
    apply(kube_client, mlserve("first", namespace, env, "v1", serve=f"{stem}-model"))
    wait_condition(kube_client, "first", namespace, "Ready", timeout=90)
    first_uid = get(kube_client, "first", namespace)["metadata"]["uid"]
    held = {key: _written(obj) for key, obj in children(kube_client, namespace).items()}
    assert held and {key.split("/")[1] for key in held} == {child}

    log_start = len(operator_db.log_text())
    apply(kube_client, mlserve("second", namespace, f"model-{env}", "v1", serve=stem))
    body = wait_condition(kube_client, "second", namespace, "Synced", status="False", reason="NameTaken")
    assert f"held by MLServe {namespace}/first" in body["status"]["message"]

    # Retried with backoff: several reconciles of the second, none writing anything.
    quiet = re.compile(rf"reconciled {re.escape(namespace)}/second: \d+ API requests \(0 writes")
    wait_for(
        lambda: len(quiet.findall(operator_db.log_text()[log_start:])) >= 3,
        timeout=60,
        what="three retries of the second MLServe without a write",
    )
    now = children(kube_client, namespace)
    assert {key: _written(obj) for key, obj in now.items()} == held
    assert all([ref.uid for ref in obj.metadata.ownerReferences or []] == [first_uid] for obj in now.values())
    assert (get(kube_client, "first", namespace).get("status") or {}).get("phase") == "Ready"


async def test_two_mlserves_created_at_once_end_with_one_holder(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    stem, env = unique("fraud"), unique("prod")
    await darwin.seed_api_serve(f"{stem}-model", env, namespace, min_replicas=1, max_replicas=1)
    await darwin.seed_api_serve(stem, f"model-{env}", namespace, min_replicas=1, max_replicas=1)
    apply(kube_client, mlserve("left", namespace, env, "v1", serve=f"{stem}-model"))
    apply(kube_client, mlserve("right", namespace, f"model-{env}", "v1", serve=stem))

    def settled() -> tuple[str, str] | None:
        ready = [n for n in ("left", "right") if _synced(kube_client, n, namespace) == ("True", "Applied")]
        taken = [n for n in ("left", "right") if _synced(kube_client, n, namespace) == ("False", "NameTaken")]
        return (ready[0], taken[0]) if len(ready) == 1 and len(taken) == 1 else None

    holder, _ = wait_for(settled, timeout=90, what="one MLServe holding the names, the other NameTaken")
    uid = get(kube_client, holder, namespace)["metadata"]["uid"]
    found = children(kube_client, namespace)
    assert found and all([ref.uid for ref in obj.metadata.ownerReferences or []] == [uid] for obj in found.values())


def _synced(client: Client, name: str, namespace: str) -> tuple[str, str] | None:
    cond = condition(get(client, name, namespace), "Synced")
    return (cond["status"], cond["reason"]) if cond else None
