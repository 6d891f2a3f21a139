"""Behaviour of the API renderers, one rule per test."""

from __future__ import annotations

import pytest
from mlserve_testing.render_cases import api_context, environment, spec_for

from mlserve.models.enums import ServeType
from mlserve.models.errors import InvalidConfig
from mlserve.operator.render import RenderSettings, render_children


def _by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


def test_fixed_replicas_set_on_deployment_without_hpa() -> None:
    ctx = api_context(replicas=(3, 3))
    kinds = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))
    assert kinds["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds


def test_hpa_owns_replicas_when_min_below_max() -> None:
    ctx = api_context(replicas=(2, 9))
    kinds = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))
    assert "replicas" not in kinds["Deployment"]["spec"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 9)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 60, "memory": 80}


def test_hpa_targets_from_settings_then_spec() -> None:
    ctx = api_context(replicas=(1, 3))
    settings = RenderSettings(hpa_cpu_utilization=50, hpa_memory_utilization=75)
    hpa = _by_kind(render_children(ctx, spec_for(ctx, autoscaling={"memoryUtilization": 95}), settings))
    metrics = hpa["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert [m["resource"]["target"]["averageUtilization"] for m in metrics] == [50, 95]


@pytest.mark.parametrize(("replicas", "has_pdb"), [((1, 1), False), ((1, 5), False), ((2, 2), True), ((2, 8), True)])
def test_pdb_only_with_two_or_more_pods(replicas: tuple[int, int], has_pdb: bool) -> None:
    ctx = api_context(replicas=replicas)
    kinds = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))
    assert ("PodDisruptionBudget" in kinds) is has_pdb


def test_resources_requests_equal_limits_in_gigabytes() -> None:
    ctx = api_context(cores=1.5, memory=6)
    container = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))["Deployment"]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "1500m", "memory": "6G"}


@pytest.mark.parametrize(
    ("spelling", "label"),
    [("spot", "spot"), ("on_demand", "on-demand"), ("on-demand", "on-demand"), ("ondemand", "on-demand")],
)
def test_capacity_spellings_map_to_karpenter_values(spelling: str, label: str) -> None:
    ctx = api_context(capacity=spelling)
    pod = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"karpenter.sh/capacity-type": label}


def test_probes_and_ports_follow_darwin() -> None:
    ctx = api_context()
    kinds = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 8000
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthcheck", "port": "http"}
    assert kinds["Service"]["spec"]["ports"][0]["port"] == 80


@pytest.mark.parametrize(
    ("protected", "host"), [(False, "fraud-score-staging.ml.example.com"), (True, "fraud-score.ml.example.com")]
)
def test_host_rule(protected: bool, host: str) -> None:
    ctx = api_context(env=environment("staging", protected=protected), hosts=("extra.example.com",))
    ingress = _by_kind(render_children(ctx, spec_for(ctx), RenderSettings()))["Ingress"]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host, "extra.example.com"]


def test_ingress_annotations_configurable() -> None:
    ctx = api_context(env=environment(subnets="subnet-9"))
    settings = RenderSettings(
        ingress_class="nginx",
        security_groups_annotation="example.com/sg",
        subnets_annotation=None,
        ingress_annotations=(),
    )
    ingress = _by_kind(render_children(ctx, spec_for(ctx), settings))["Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {
        "example.com/sg": "sg-0a1b,sg-0c2d",
        "mlserve.darwin.io/artifact-version": "1.4.0",
    }


def test_spec_env_overrides_database_env_sorted() -> None:
    ctx = api_context(env_vars={"B": "db", "A": "db"})
    pod = _by_kind(render_children(ctx, spec_for(ctx, env={"B": "spec", "C": "spec"}), RenderSettings()))
    env = pod["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "A", "value": "db"},
        {"name": "B", "value": "spec"},
        {"name": "C", "value": "spec"},
        {"name": "ENV", "value": "staging"},
        {"name": "SERVICE_NAME", "value": "fraud-score-staging"},
    ]


def test_partial_replica_override_checked_against_database() -> None:
    ctx = api_context(replicas=(1, 3))
    with pytest.raises(InvalidConfig) as info:
        render_children(ctx, spec_for(ctx, replicas={"min": 5}), RenderSettings())
    assert info.value.field == "spec.replicas" and "spec.replicas.max" in str(info.value)


def test_missing_infra_config_names_the_fields_to_set() -> None:
    ctx = api_context(config=False)
    with pytest.raises(InvalidConfig) as info:
        render_children(ctx, spec_for(ctx, replicas={"min": 1, "max": 1}), RenderSettings())
    assert info.value.field == "spec.resources.cores"
    assert "spec.resources.memory" in str(info.value)


def test_type_mismatch_with_database_is_reported() -> None:
    ctx = api_context()
    spec = spec_for(ctx).model_copy(update={"type": ServeType.WORKFLOW})
    with pytest.raises(InvalidConfig, match="set spec.type to api"):
        render_children(ctx, spec, RenderSettings())


def test_invalid_domain_suffix_is_reported_on_the_column() -> None:
    ctx = api_context(env=environment(domain_suffix=".Bad_Domain"))
    with pytest.raises(InvalidConfig) as info:
        render_children(ctx, spec_for(ctx), RenderSettings())
    assert info.value.field == "env_configs.domain_suffix"


def test_no_shared_objects_between_manifests() -> None:
    ctx = api_context(replicas=(2, 4))
    manifests = render_children(ctx, spec_for(ctx), RenderSettings())
    manifests[0]["metadata"]["labels"]["x"] = "y"
    assert all("x" not in m["metadata"]["labels"] for m in manifests[1:])
    assert "x" not in manifests[0]["spec"]["template"]["metadata"]["labels"]
