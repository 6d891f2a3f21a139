"""Bad input through the operator as it runs (``mlserve run``, as the chart's ServiceAccount):
the Warning Events are real Events in the cluster, posted with the chart's rights; a bad row
never stops the sync for the healthy pair deployed after it; a pending-undeploy ConfigMap that
cannot be read is kept aside, not a stop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Event
from mlserve_testing import darwin
from mlserve_testing.faults import record
from mlserve_testing.mlserves import unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]


def _events(client: Client, namespace: str, reason: str) -> list[Any]:
    return [e for e in client.list(Event, namespace=namespace) if e.reason == reason]


async def test_bad_rows_get_real_events_and_the_healthy_pair_after_them_is_served(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    own_namespace = operator_db.env["MLSERVE_OPERATOR_NAMESPACE"]
    # a serve whose type the operator does not know, in a good environment
    bad_serve, env = unique("batchy"), unique("prod")
    bad = await darwin.seed_api_serve(bad_serve, env, namespace, versions=("v1",))
    await darwin.deploy(bad, "v1")
    await darwin.query("UPDATE serves SET type = 'batch' WHERE id = ?", bad.serve)
    # an environment whose env_configs is JSON of the wrong shape
    broken_env = unique("broken")
    broken = await darwin.seed_api_serve(unique("orphan"), broken_env, namespace, versions=("v1",))
    await darwin.deploy(broken, "v1")
    await darwin.query("UPDATE environments SET env_configs = ? WHERE id = ?", '"not an object"', broken.environment)
    # and a healthy pair, deployed after both
    good_serve = unique("good")
    good = await darwin.seed_api_serve(good_serve, env, namespace, versions=("v1",), min_replicas=1, max_replicas=1)
    try:
        await darwin.deploy(good, "v1")
        wait_condition(kube_client, names.mlserve_name(good_serve, env), namespace, "Ready", timeout=90)

        bad_name = names.mlserve_name(bad_serve, env)
        posted = wait_for(
            lambda: [
                e for e in _events(kube_client, namespace, "InvalidDatabaseRow") if e.involvedObject.name == bad_name
            ],
            timeout=60,
            what=f"a Warning Event InvalidDatabaseRow about {bad_name} in {namespace}",
        )
        assert posted[0].type == "Warning" and "serves row" in posted[0].message and "column type" in posted[0].message
        env_event = wait_for(
            lambda: [e for e in _events(kube_client, own_namespace, "InvalidEnvConfig") if broken_env in e.message],
            timeout=60,
            what=f"a Warning Event InvalidEnvConfig about {broken_env} in the operator's namespace",
        )
        assert "environments row" in env_event[0].message
        assert operator_db.running
        log = operator_db.log_text()
        assert "the database did not answer" not in log.rsplit("===== start", 1)[-1]
        assert "column env_configs" in log and broken_env in log, "a log line names the row, the column and the fix"
    finally:
        # leave the shared database usable by the other tests as it was
        await darwin.query("UPDATE serves SET type = 'api' WHERE id = ?", bad.serve)
        await darwin.query(
            "UPDATE environments SET env_configs = ? WHERE id = ?",
            json.dumps(darwin.env_configs("unused-" + broken_env[:40])),
            broken.environment,
        )


async def test_a_pending_configmap_that_cannot_be_read_is_kept_aside_not_a_stop(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    own_namespace = operator_db.env["MLSERVE_OPERATOR_NAMESPACE"]
    configmap = "mlserve-operator-pending"
    unreadable = [{"serve": "ghost"}, "not an entry"]
    kube_client.apply(
        ConfigMap(
            metadata=ObjectMeta(name=configmap, namespace=own_namespace),
            data={"pending.json": json.dumps(unreadable)},
        ),
        field_manager="a-person",
        force=True,
    )
    operator_db.kill()
    operator_db.start(**operator_db.extra_env)

    serve, env = unique("after"), unique("dev")
    seed = await darwin.seed_api_serve(serve, env, namespace, versions=("v1",), min_replicas=1, max_replicas=1)
    await darwin.deploy(seed, "v1")
    wait_condition(kube_client, names.mlserve_name(serve, env), namespace, "Ready", timeout=90)

    wait_for(
        lambda: _events(kube_client, own_namespace, "PendingListMalformed"),
        timeout=30,
        what="a Warning Event PendingListMalformed in the operator's namespace",
    )

    def moved_aside() -> dict[str, str] | None:
        data = kube_client.get(ConfigMap, configmap, namespace=own_namespace).data or {}
        return data if "malformed.json" in data and json.loads(data.get("pending.json", "[]")) == [] else None

    data = wait_for(moved_aside, timeout=30, what="the unreadable entries moved under malformed.json")
    assert len(json.loads(data["malformed.json"])) == len(unreadable)
    record("pending ConfigMap malformed", len(unreadable), survived=operator_db.running)
    kube_client.delete(ConfigMap, configmap, namespace=own_namespace)
