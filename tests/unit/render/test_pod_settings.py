"""Pod settings from env_configs and MLSERVE_POD_* (``spec/pods.py``), and how they render."""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing.render_cases import api_context, environment, spec_for

from mlserve.models.errors import InvalidConfig, SettingsError
from mlserve.operator.render import RenderSettings, render_children
from mlserve.operator.settings import read_render_settings
from mlserve.operator.spec.pods import PodExtras, merge_pod_extras, pod_extras_from_env_config


def _pod(extra: dict[str, Any], settings: RenderSettings | None = None) -> dict[str, Any]:
    ctx = api_context(env=environment("prod", extra=extra))
    deployment = render_children(ctx, spec_for(ctx), settings or RenderSettings())[0]
    return dict(deployment["spec"]["template"])


def test_no_pod_settings_changes_nothing() -> None:
    template = _pod({})
    assert set(template["spec"]) == {"containers", "nodeSelector"}
    assert "annotations" in template["metadata"]


def test_environment_over_settings_and_operator_labels_win() -> None:
    settings = RenderSettings(
        pod_service_account="platform",
        pod_image_pull_secrets=("platform-registry",),
        pod_labels=(("team", "platform"), ("app.kubernetes.io/name", "hijack")),
        pod_tolerations=(),
        pod_node_selector=(("karpenter.sh/capacity-type", "spot"), ("zone", "a")),
    )
    template = _pod(
        {
            "service_account": "team-sa",
            "image_pull_secrets": ["team-registry", "platform-registry"],
            "pod_labels": {"team": "risk"},
            "node_selector": {"zone": "b"},
        },
        settings,
    )
    spec, labels = template["spec"], template["metadata"]["labels"]
    assert spec["serviceAccountName"] == "team-sa"
    assert spec["imagePullSecrets"] == [{"name": "platform-registry"}, {"name": "team-registry"}]
    assert labels["team"] == "risk" and labels["app.kubernetes.io/name"] == "fraud-score"
    # the infra config's capacity type wins over any configured node selector
    assert spec["nodeSelector"] == {"karpenter.sh/capacity-type": "on-demand", "zone": "b"}


def test_tolerations_are_added_after_the_settings() -> None:
    base = PodExtras.model_validate({"tolerations": [{"key": "a", "operator": "Exists"}]})
    over = PodExtras.model_validate(
        {
            "tolerations": [
                {"key": "b", "operator": "Equal", "value": "x", "effect": "NoExecute", "tolerationSeconds": 30}
            ]
        }
    )
    merged = merge_pod_extras(base, over)
    assert [t.manifest() for t in merged.tolerations] == [
        {"key": "a", "operator": "Exists"},
        {"key": "b", "operator": "Equal", "value": "x", "effect": "NoExecute", "tolerationSeconds": 30},
    ]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"service_account": "Not_Valid"}, "env_configs.service_account"),
        ({"image_pull_secrets": ["ok", "Bad Name"]}, "env_configs.image_pull_secrets"),
        ({"pod_labels": {"team": "has space"}}, "env_configs.pod_labels"),
        ({"pod_annotations": {"bad key!": "x"}}, "env_configs.pod_annotations"),
        ({"tolerations": [{"key": "a", "operator": "Sometimes"}]}, "env_configs.tolerations.0.operator"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]}, "env_configs.tolerations.0"),
        ({"tolerations": [{"effect": "NoSchedule"}]}, "env_configs.tolerations.0"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "tolerationSeconds": 5}]}, "env_configs.tolerations.0"),
        ({"tolerations": {"key": "a"}}, "env_configs.tolerations"),
        ({"node_selector": {"zone": 3}}, "env_configs.node_selector.zone"),
    ],
)
def test_bad_environment_pod_settings_name_the_key(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        pod_extras_from_env_config(environment("prod", extra=extra).config)
    assert caught.value.field == field


def test_settings_read_from_the_environment() -> None:
    settings = read_render_settings(
        {
            "MLSERVE_POD_SERVICE_ACCOUNT": "serving",
            "MLSERVE_POD_IMAGE_PULL_SECRETS": "one, two",
            "MLSERVE_POD_LABELS": '{"team": "ml"}',
            "MLSERVE_POD_ANNOTATIONS": '{"example.com/a": "b c"}',
            "MLSERVE_POD_TOLERATIONS": '[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]',
            "MLSERVE_POD_NODE_SELECTOR": '{"pool": "serving"}',
        }
    )
    extras = settings.pod_extras
    assert extras.service_account == "serving"
    assert extras.image_pull_secrets == ("one", "two")
    assert extras.labels == {"team": "ml"} and extras.annotations == {"example.com/a": "b c"}
    assert extras.tolerations[0].manifest() == {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert extras.node_selector == {"pool": "serving"}


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("MLSERVE_POD_SERVICE_ACCOUNT", "Bad_SA"),
        ("MLSERVE_POD_IMAGE_PULL_SECRETS", "ok,Not OK"),
        ("MLSERVE_POD_LABELS", '{"a": "b c"}'),
        ("MLSERVE_POD_LABELS", "not json"),
        ("MLSERVE_POD_NODE_SELECTOR", '{"bad key!": "x"}'),
        ("MLSERVE_POD_TOLERATIONS", '{"key": "a"}'),
        ("MLSERVE_POD_TOLERATIONS", '[{"operator": "Maybe"}]'),
    ],
)
def test_bad_settings_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        read_render_settings({variable: raw})
    assert caught.value.variable == variable
