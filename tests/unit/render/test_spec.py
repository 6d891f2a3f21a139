"""MLServeSpec: the CRD's rules, offline, with errors naming the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from mlserve.models.enums import NodeCapacityType, ServeType
from mlserve.models.errors import InvalidConfig
from mlserve.operator.spec import MLServeSpec

API = {"environment": "prod", "type": "api", "artifactVersion": "1.0.0"}
WORKFLOW = {"environment": "prod", "type": "workflow", "artifactVersion": "1.0.0"}
GROUP = {"cores": 1, "memory": 2, "minReplicas": 1, "maxReplicas": 2}


def test_serve_defaults_to_metadata_name() -> None:
    spec = MLServeSpec.from_resource({"metadata": {"name": "fraud"}, "spec": API})
    assert spec.serve == "fraud" and spec.type is ServeType.API and spec.paused is False


def test_explicit_serve_wins_over_name() -> None:
    spec = MLServeSpec.from_resource({"metadata": {"name": "fraud-prod"}, "spec": {**API, "serve": "fraud"}})
    assert spec.serve == "fraud"


def test_name_unusable_as_serve_asks_for_spec_serve() -> None:
    with pytest.raises(InvalidConfig, match="set spec.serve") as info:
        MLServeSpec.from_resource({"metadata": {"name": "x" * 51}, "spec": API})
    assert info.value.field == "spec.serve"


@pytest.mark.parametrize("spelling", ["spot", "on_demand", "on-demand", "ondemand", "ON-DEMAND"])
def test_capacity_spellings(spelling: str) -> None:
    spec = MLServeSpec.parse({**API, "nodeCapacityType": spelling}, default_serve="s")
    expected = NodeCapacityType.SPOT if spelling == "spot" else NodeCapacityType.ON_DEMAND
    assert spec.node_capacity_type is expected


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({**API, "replicas": {"min": 5, "max": 2}}, "spec.replicas", "less than or equal to spec.replicas.max"),
        ({**API, "replicas": {"min": 0}}, "spec.replicas.min", "at least 1"),
        ({**API, "resources": {"cores": "2"}}, "spec.resources.cores", "JSON number"),
        ({**API, "resources": {"memory": 1.5}}, "spec.resources.memory", "whole number"),
        ({**API, "nodeCapacityType": "reserved"}, "spec.nodeCapacityType", "spot"),
        ({**API, "autoscaling": {"cpuUtilization": 150}}, "spec.autoscaling.cpuUtilization", "at most 100"),
        ({**API, "hosts": ["Bad_Host"]}, "spec.hosts", "not a host name"),
        ({**API, "hosts": ["a.example.com", "a.example.com"]}, "spec.hosts", "twice"),
        ({**API, "env": {"1BAD": "x"}}, "spec.env", "environment variable name"),
        ({**API, "env": {"GOOD": 1}}, "spec.env.GOOD", "JSON string"),
        ({**API, "schedule": "0 3 * * *"}, "spec.schedule", "workflow serves only"),
        ({**API, "replicaz": {"min": 1}}, "spec.replicaz", "not a field"),
        ({**API, "type": "batch"}, "spec.type", "api or workflow"),
        ({**API, "environment": "Prod"}, "spec.environment", "environment name"),
        ({**API, "artifactVersion": ""}, "spec.artifactVersion", ""),
        ({k: v for k, v in API.items() if k != "artifactVersion"}, "spec.artifactVersion", "required"),
        ({**WORKFLOW, "replicas": {"min": 1}}, "spec.replicas", "API serves only"),
        ({**WORKFLOW, "hosts": ["a.example.com"]}, "spec.hosts", "API serves only"),
        ({**WORKFLOW, "schedule": "every night"}, "spec.schedule", "cron schedule"),
        ({**WORKFLOW, "schedule": "0 0 3 * * *"}, "spec.schedule", "five fields"),
        ({**WORKFLOW, "workerGroups": []}, "spec.workerGroups", "at least one"),
        ({**WORKFLOW, "workerGroups": [{**GROUP, "minReplicas": 3}]}, "spec.workerGroups.0", "less than or equal"),
        ({**WORKFLOW, "workerGroups": [{**GROUP, "name": "a"}, {**GROUP, "name": "a"}]}, "spec.workerGroups", "unique"),
        ({**WORKFLOW, "workerGroups": [{**GROUP, "name": "GPU"}]}, "spec.workerGroups.0.name", "worker group name"),
        ({**WORKFLOW, "workerGroups": [{"cores": 1}]}, "spec.workerGroups.0.memory", "required"),
        ({**WORKFLOW, "head": {"cores": 0}}, "spec.head.cores", "at least 0.1"),
    ],
)
def test_invalid_specs_name_field_and_fix(body: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        MLServeSpec.parse(body, default_serve="fraud")
    assert info.value.field == field, str(info.value)
    assert fragment in str(info.value)


def test_round_trip_to_resource_spec() -> None:
    body = {**WORKFLOW, "serve": "etl", "schedule": "@daily", "workerGroups": [{**GROUP, "nodeCapacityType": "spot"}]}
    spec = MLServeSpec.parse(body)
    assert MLServeSpec.parse(spec.to_resource_spec()) == spec
