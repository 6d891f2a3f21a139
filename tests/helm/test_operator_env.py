"""The environment the chart gives the operator's container is accepted by ``mlserve run``."""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing.chart import VALUE_SETS, Helm, load_values, objects_of, one


def settings_env(objects: list[dict[str, Any]], existing_secret: dict[str, str]) -> dict[str, str]:
    """ConfigMap and Secret (envFrom), then the container's own env, as the kubelet merges them."""
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            (config_map,) = [
                o for o in objects_of(objects, "ConfigMap") if o["metadata"]["name"] == source["configMapRef"]["name"]
            ]
            env.update(config_map["data"])
        else:
            made = [o for o in objects_of(objects, "Secret") if o["metadata"]["name"] == source["secretRef"]["name"]]
            env.update(made[0]["stringData"] if made else existing_secret)
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_operator_accepts_the_charts_settings(helm: Helm, value_set: str) -> None:
    from mlserve.operator.settings import OperatorSettings

    values = load_values(value_set)
    objects = helm.template(value_set=value_set)
    env = settings_env(objects, existing_secret={"MYSQL_USERNAME": "mlserve", "MYSQL_PASSWORD": "from-the-secret"})
    settings = OperatorSettings.from_env(env)
    assert settings.cluster_name == values["clusterName"]
    assert settings.namespaces == tuple(values["watchNamespaces"])
    assert settings.clusterwide == (not values["watchNamespaces"])
    assert settings.log_format == values["operator"]["logFormat"]
    assert settings.log_level == values["operator"]["logLevel"]
    peering = objects_of(objects, "KopfPeering") + objects_of(objects, "ClusterKopfPeering")
    if values["peering"]["enabled"]:
        assert {p["metadata"]["name"] for p in peering} == {settings.peering_name}
    else:
        assert settings.peering_name is None and not peering


@pytest.mark.parametrize(
    ("value_set", "engine", "host"),
    [
        ("default", "sqlite", None),  # nothing configured: a SQLite file in the pod's /tmp
        ("namespaced", "mysql", "mysql.databases.svc"),
        ("ha", "mysql", "mysql.databases.svc"),
        ("existing-secret", "mysql", "mysql.databases.svc"),
    ],
)
def test_database_settings_reach_the_operator(helm: Helm, value_set: str, engine: str, host: str | None) -> None:
    from mlserve.operator.settings import OperatorSettings

    objects = helm.template(value_set=value_set)
    env = settings_env(objects, existing_secret={"MYSQL_USERNAME": "mlserve", "MYSQL_PASSWORD": "from-the-secret"})
    database = OperatorSettings.from_env(env).database
    assert (database.engine, database.host) == (engine, host)
    if engine == "mysql":
        assert database.username == "mlserve"
        assert database.password is not None
