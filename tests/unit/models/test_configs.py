"""The typed views of the JSON columns and the enums (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing.factories import env_configs, fast_api, worker

from mlserve.models import (
    BackendType,
    DeploymentStatus,
    EnvConfig,
    FastAPIConfig,
    HeadNodeConfig,
    InvalidConfig,
    JobStatus,
    NodeCapacityType,
    ServeType,
    WorkerNodeConfig,
)
from mlserve.models.configs import parse_environment_variables, parse_worker_node_configs


def test_env_config_reads_every_key_and_splits_lists() -> None:
    config = EnvConfig.parse(env_configs())
    assert config.namespace == "mlserve-dev"
    assert config.cluster_name == "local"
    assert config.security_groups == ("sg-1", "sg-2")
    assert config.subnet_list == ("subnet-a", "subnet-b")
    assert EnvConfig.parse(env_configs(subnets=None)).subnet_list == ()


def test_env_config_keeps_unknown_keys() -> None:
    config = EnvConfig.parse(env_configs(added_by_darwin="x"))
    assert config.model_extra == {"added_by_darwin": "x"}


def test_env_config_is_frozen() -> None:
    config = EnvConfig.parse(env_configs())
    with pytest.raises(ValueError):
        config.namespace = "other"  # type: ignore[misc]


def test_env_config_accepts_a_json_string() -> None:
    assert (
        EnvConfig.parse(
            '{"domain_suffix": ".x", "cluster_name": "c", "security_group": "", "namespace": "ns"}'
        ).namespace
        == "ns"
    )


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (env_configs(namespace=...), "env_configs.namespace", ["required"]),
        (env_configs(cluster_name=7), "env_configs.cluster_name", ["string", "int"]),
        (env_configs(namespace="Not_A_Label"), "env_configs.namespace", ["DNS-1123"]),
        (env_configs(namespace="x" * 64), "env_configs.namespace", ["63"]),
        (None, "env_configs", ["NULL"]),
        ([1, 2], "env_configs", ["object"]),
    ],
    ids=["missing-namespace", "number-for-string", "bad-namespace", "long-namespace", "null", "list"],
)
def test_env_config_errors_name_field_and_rule(raw: Any, field: str, words: list[str]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        EnvConfig.parse(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)
    for word in words:
        assert word in str(caught.value)


def test_fast_api_config_normalises_capacity_and_accepts_int_cores() -> None:
    config = FastAPIConfig.parse(fast_api(cores=2, node_capacity_type="On-Demand"))
    assert config.cores == 2.0
    assert config.node_capacity_type is NodeCapacityType.ON_DEMAND


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"min_replicas": 4, "max_replicas": 3}, "fast_api_config.max_replicas", ["min_replicas <= max_replicas"]),
        ({"min_replicas": 0}, "fast_api_config.min_replicas", ["at least 1"]),
        ({"cores": 0}, "fast_api_config.cores", ["at least 0.1"]),
        ({"cores": -1.5}, "fast_api_config.cores", ["at least 0.1"]),
        ({"memory": 0}, "fast_api_config.memory", ["at least 1"]),
        # the CRD's upper bounds hold for the database's numbers too
        ({"cores": 1e308}, "fast_api_config.cores", ["at most 128"]),
        ({"memory": 4096}, "fast_api_config.memory", ["at most 1024"]),
        ({"min_replicas": 10**8, "max_replicas": 10**8}, "fast_api_config.min_replicas", ["at most 1000"]),
        ({"memory": 1.5}, "fast_api_config.memory", ["whole number"]),
        ({"min_replicas": "1"}, "fast_api_config.min_replicas", ["whole number"]),
        ({"node_capacity_type": "cheap"}, "fast_api_config.node_capacity_type", ["spot", "on_demand"]),
    ],
)
def test_fast_api_config_errors(overrides: dict[str, Any], field: str, words: list[str]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        FastAPIConfig.parse(fast_api(**overrides))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_worker_and_head_node_configs() -> None:
    workers = parse_worker_node_configs([worker(), worker(node_capacity_type="SPOT")])
    assert [w.node_capacity_type for w in workers] == [NodeCapacityType.ON_DEMAND, NodeCapacityType.SPOT]
    assert isinstance(workers[0], WorkerNodeConfig)
    head = HeadNodeConfig.parse({"cores": 1, "memory": 2, "node_capacity_type": "ondemand"})
    assert head.node_capacity_type is NodeCapacityType.ON_DEMAND


def test_worker_errors_name_the_index() -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_worker_node_configs([worker(), worker(min_pods=5, max_pods=2)])
    assert caught.value.field == "worker_node_config.1.max_pods"
    with pytest.raises(InvalidConfig) as caught:
        parse_worker_node_configs([])
    assert caught.value.field == "worker_node_config"
    with pytest.raises(InvalidConfig):
        parse_worker_node_configs(worker())


def test_environment_variables_take_json_scalars_as_darwin_renders_them() -> None:
    assert parse_environment_variables({"A": "1"}) == {"A": "1"}
    assert parse_environment_variables(None) == {}
    assert parse_environment_variables(
        {"PORT": 8000, "ON": True, "OFF": False, "RATIO": 0.25, "WHOLE": 3.0, "NONE": None, "BIG": 12345678901}
    ) == {"PORT": "8000", "ON": "true", "OFF": "false", "RATIO": "0.25", "WHOLE": "3", "NONE": "", "BIG": "12345678901"}
    assert parse_environment_variables('{"port": 8000}') == {"port": "8000"}
    with pytest.raises(InvalidConfig):
        parse_environment_variables(["A=1"])


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"user": "admin", "password": "hunter2-secret"}, "a JSON object"), (["hunter2-secret"], "a JSON list")],
)
def test_environment_variable_errors_name_the_type_never_the_value(value: Any, kind: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        parse_environment_variables({"DB_PASSWORD": value})
    assert caught.value.field == "environment_variables.DB_PASSWORD"
    assert kind in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("spot", NodeCapacityType.SPOT),
        ("SPOT", NodeCapacityType.SPOT),
        ("on_demand", NodeCapacityType.ON_DEMAND),
        ("on-demand", NodeCapacityType.ON_DEMAND),
        ("ondemand", NodeCapacityType.ON_DEMAND),
        ("On-Demand", NodeCapacityType.ON_DEMAND),
        (" OnDemand ", NodeCapacityType.ON_DEMAND),
    ],
)
def test_node_capacity_spellings(spelling: str, expected: NodeCapacityType) -> None:
    assert NodeCapacityType.parse(spelling) is expected
    assert NodeCapacityType(spelling.strip()) is expected


@pytest.mark.parametrize("bad", ["spot-instance", "", None, 1])
def test_node_capacity_rejects_others_naming_the_accepted_values(bad: Any) -> None:
    with pytest.raises(InvalidConfig) as caught:
        NodeCapacityType.parse(bad)
    for accepted in ("spot", "on_demand", "on-demand", "ondemand"):
        assert repr(accepted) in str(caught.value)


def test_enums_are_strings_with_darwins_values() -> None:
    assert [m.value for m in ServeType] == ["api", "workflow"]
    assert [m.value for m in JobStatus] == ["PENDING", "SUCCESSFUL", "FAILED"]
    assert [m.value for m in DeploymentStatus] == ["ACTIVE", "ENDED"]
    assert [m.value for m in BackendType] == ["fastapi", "ray"]
    assert ServeType.API == "api" and f"{ServeType.API}" == "api"
    with pytest.raises(InvalidConfig) as caught:
        ServeType("batch")
    assert caught.value.field == "serves.type"
    assert "'api', 'workflow'" in str(caught.value)


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        ("FastAPIConfig", {"min_replicas": 3, "max_replicas": 2, "cores": 1, "memory": 1}, "replicas"),
        ("WorkerNodeConfig", {"cores_per_pods": 1, "memory_per_pods": 1, "min_pods": 3, "max_pods": 2}, "pods"),
    ],
)
def test_max_below_min_names_both_fields_and_the_fix(model: str, data: dict, field: str) -> None:
    import pydantic

    from mlserve.models import configs

    with pytest.raises(pydantic.ValidationError) as caught:
        getattr(configs, model).model_validate(data)
    assert (
        f"max_{field} (2) is below min_{field} (3): the rule is min_{field} <= max_{field}; "
        f"raise max_{field} or lower min_{field}"
    ) in str(caught.value)
