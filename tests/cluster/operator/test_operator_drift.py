"""Drift and idempotence: children edited or deleted by hand come back, an HPA's scaling is
kept, and a converged MLServe costs no API request (it reads the caches) and no write to the
API server or the database."""

from __future__ import annotations

import re

import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType
from mlserve_testing import darwin
from mlserve_testing.mlserves import MLServe, apply, children, get, mlserve, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

pytestmark = [pytest.mark.cluster]

OPERATOR = "mlserve-operator"


def _ours(obj: object) -> str | None:
    """When our field manager last wrote the object (None: never)."""
    for entry in obj.metadata.managedFields or []:  # type: ignore[attr-defined]
        if entry.manager == OPERATOR and not entry.subresource:
            return str(entry.time)
    return None


async def _ready(kube_client: Client, namespace: str, **seed: int) -> tuple[str, str, darwin.Seed]:
    serve, env = unique("fraud"), unique("prod")
    result = await darwin.seed_api_serve(serve, env, namespace, **seed)
    apply(kube_client, mlserve(serve, namespace, env, "v1"))
    wait_condition(kube_client, serve, namespace, "Ready", timeout=90)
    return serve, env, result


async def test_deleted_and_edited_children_are_put_back(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, _ = await _ready(kube_client, namespace, min_replicas=2, max_replicas=3)
    name = f"{serve}-{env}"
    old_uid = kube_client.get(Service, name, namespace=namespace).metadata.uid

    kube_client.delete(Service, name, namespace=namespace)
    # Well within the drift interval (20 s here): the child watch brings the worker at once.
    wait_for(
        lambda: (
            children(kube_client, namespace).get(f"Service/{name}") is not None
            and kube_client.get(Service, name, namespace=namespace).metadata.uid != old_uid
        ),
        timeout=10,
        what="the deleted Service re-created",
    )

    # kubectl edit / patch by someone else: a different image and a label removed
    kube_client.patch(
        Deployment,
        name,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:latest"}]}}}},
        namespace=namespace,
        patch_type=PatchType.STRATEGIC,
        field_manager="kubectl-edit",
    )
    wait_for(
        lambda: (
            kube_client.get(Deployment, name, namespace=namespace).spec.template.spec.containers[0].image
            == f"registry.example.com/{serve}:v1"
        ),
        timeout=10,
        what="the edited image put back",
    )


async def test_hpa_scaling_is_kept(operator_db: OperatorProcess, kube_client: Client, namespace: str) -> None:
    serve, env, _ = await _ready(kube_client, namespace, min_replicas=2, max_replicas=5)
    name = f"{serve}-{env}"
    # What the HPA controller does: write spec.replicas through the scale subresource.
    kube_client.patch(
        Deployment.Scale, name, {"spec": {"replicas": 4}}, namespace=namespace, patch_type=PatchType.MERGE
    )
    # The status reports 4 ready pods only after a reconcile that saw the scaled Deployment.
    wait_for(
        lambda: (get(kube_client, serve, namespace).get("status") or {}).get("readyReplicas") == 4,
        timeout=60,
        what="the MLServe reporting 4 ready pods",
    )
    assert kube_client.get(Deployment, name, namespace=namespace).spec.replicas == 4


async def test_a_converged_mlserve_makes_no_write(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, seed = await _ready(kube_client, namespace, min_replicas=2, max_replicas=3)
    name = f"{serve}-{env}"
    wait_condition(kube_client, serve, namespace, "Synced")
    # From the caches: a converged reconcile sends no API request at all (no list, no get).
    pattern = re.compile(rf"reconciled {re.escape(namespace)}/{re.escape(serve)}: 0 API requests \(0 writes")

    def poke(token: str) -> None:
        """An unrelated annotation on a child by someone else: a child event, nothing to do."""
        kube_client.patch(
            Service,
            name,
            {"metadata": {"annotations": {"example.com/touched": token}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager="someone-else",
        )

    # Converged: a reconcile has found nothing to write (the last rollout events are in).
    settle_start = len(operator_db.log_text())
    poke("settle")
    wait_for(
        lambda: pattern.search(operator_db.log_text()[settle_start:]),
        timeout=30,
        what="a first reconcile with no write",
    )
    before_mls = get(kube_client, serve, namespace)["metadata"]["resourceVersion"]
    before_children = {
        key: (_ours(obj), obj.metadata.generation) for key, obj in children(kube_client, namespace).items()
    }
    rows_before = await darwin.query("SELECT COUNT(*) AS n FROM deployments WHERE serve_id = ?", seed.serve)
    pointer_before = await darwin.query(
        "SELECT deployment_id, previous_deployment_id, updated_at FROM active_deployments WHERE serve_id = ?",
        seed.serve,
    )
    log_start = len(operator_db.log_text())

    # Wake the MLServe's worker twice without changing anything it owns: an unrelated
    # annotation on a child (a child event), then wait for those reconciles to be logged.
    for round_ in range(2):
        poke(str(round_))
        wait_for(
            lambda round_=round_: len(pattern.findall(operator_db.log_text()[log_start:])) > round_,
            timeout=30,
            what="a reconcile with no write in the operator's log",
        )

    window = operator_db.log_text()[log_start:]
    writes = re.findall(
        rf"reconciled {re.escape(namespace)}/{re.escape(serve)}: \d+ API requests \(([1-9]\d*) writes", window
    )
    assert writes == [], window
    after_mls = get(kube_client, serve, namespace)["metadata"]
    assert after_mls["resourceVersion"] == before_mls, after_mls.get("managedFields")
    after_children = {
        key: (_ours(obj), obj.metadata.generation) for key, obj in children(kube_client, namespace).items()
    }
    assert after_children == before_children
    assert await darwin.query("SELECT COUNT(*) AS n FROM deployments WHERE serve_id = ?", seed.serve) == rows_before
    assert (
        await darwin.query(
            "SELECT deployment_id, previous_deployment_id, updated_at FROM active_deployments WHERE serve_id = ?",
            seed.serve,
        )
        == pointer_before
    )
    assert MLServe  # the kind under test


async def test_a_paused_mlserve_leaves_its_children_alone(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, _ = await _ready(kube_client, namespace, min_replicas=1, max_replicas=1)
    name = f"{serve}-{env}"
    apply(kube_client, mlserve(serve, namespace, env, "v1", paused=True))
    body = wait_condition(kube_client, serve, namespace, "Synced", "False", reason="Paused")
    assert body["status"]["phase"] == "Paused"
    kube_client.patch(
        Deployment,
        name,
        {"metadata": {"labels": {"hand": "edit"}}, "spec": {"replicas": 3}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="kubectl-edit",
    )
    # The status follows the scaled Deployment (a reconcile ran), yet the edit stays.
    wait_for(
        lambda: (get(kube_client, serve, namespace).get("status") or {}).get("replicas") == 3,
        timeout=30,
        what="the paused MLServe reporting the 3 replicas",
    )
    assert kube_client.get(Deployment, name, namespace=namespace).spec.replicas == 3
    apply(kube_client, mlserve(serve, namespace, env, "v1", paused=False))
    wait_for(
        lambda: kube_client.get(Deployment, name, namespace=namespace).spec.replicas == 1,
        timeout=30,
        what="the edit put back once resumed",
    )


async def test_a_restart_among_converged_mlserves_sends_no_request_for_them(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    serve, env, _ = await _ready(kube_client, namespace, min_replicas=2, max_replicas=3)
    wait_condition(kube_client, serve, namespace, "Synced")
    quiet = re.compile(rf"reconciled {re.escape(namespace)}/{re.escape(serve)}: 0 API requests \(0 writes")
    settle_start = len(operator_db.log_text())
    kube_client.patch(
        Service,
        f"{serve}-{env}",
        {"metadata": {"annotations": {"example.com/touched": "settle"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
        field_manager="someone-else",
    )
    wait_for(lambda: quiet.search(operator_db.log_text()[settle_start:]), timeout=30, what="a converged reconcile")
    before_mls = get(kube_client, serve, namespace)["metadata"]["resourceVersion"]
    before_children = {
        key: (_ours(obj), obj.metadata.generation) for key, obj in children(kube_client, namespace).items()
    }

    operator_db.stop()
    log_start = len(operator_db.log_text())
    operator_db.start(**operator_db.extra_env)
    # The workers start once the caches are filled; every MLServe is reconciled once at
    # start-up, from the caches: no list, no get, no write.
    wait_for(
        lambda: quiet.search(operator_db.log_text()[log_start:]),
        timeout=60,
        what="the start-up reconcile of the converged MLServe, with no API request",
    )
    assert get(kube_client, serve, namespace)["metadata"]["resourceVersion"] == before_mls
    after_children = {
        key: (_ours(obj), obj.metadata.generation) for key, obj in children(kube_client, namespace).items()
    }
    assert after_children == before_children
