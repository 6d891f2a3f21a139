"""RenderSettings read from MLSERVE_* by the one settings reader; the renderers never read it."""

from __future__ import annotations

import pytest

from mlserve.operator.render import RenderSettings
from mlserve.operator.settings import SettingsError, read_render_settings


def test_defaults_without_variables() -> None:
    assert read_render_settings({}) == RenderSettings()


def test_every_variable_is_read() -> None:
    settings = read_render_settings(
        {
            "MLSERVE_INGRESS_CLASS": "nginx",
            "MLSERVE_INGRESS_SECURITY_GROUPS_ANNOTATION": "none",
            "MLSERVE_INGRESS_SUBNETS_ANNOTATION": "example.com/subnets",
            "MLSERVE_INGRESS_ANNOTATIONS": '{"b": "2", "a": "1"}',
            "MLSERVE_CAPACITY_TYPE_LABEL": "none",
            "MLSERVE_IMAGE_PULL_POLICY": "Always",
            "MLSERVE_HPA_CPU_UTILIZATION": "50",
            "MLSERVE_HPA_MEMORY_UTILIZATION": "70",
            "MLSERVE_RAY_CRON_JOB": "true",
            "MLSERVE_RAYJOB_TTL_SECONDS": "600",
            "MLSERVE_RAY_VERSION": "2.40.0",
            "MLSERVE_WORKFLOW_ENTRYPOINT": "python run.py",
            "MLSERVE_SCHEDULE_TIME_ZONE": "Europe/Paris",
        }
    )
    assert settings == RenderSettings(
        ingress_class="nginx",
        security_groups_annotation=None,
        subnets_annotation="example.com/subnets",
        ingress_annotations=(("a", "1"), ("b", "2")),
        capacity_type_label=None,
        image_pull_policy="Always",
        hpa_cpu_utilization=50,
        hpa_memory_utilization=70,
        ray_cron_job=True,
        rayjob_ttl_seconds=600,
        ray_version="2.40.0",
        workflow_entrypoint="python run.py",
        schedule_time_zone="Europe/Paris",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLSERVE_HPA_CPU_UTILIZATION", "sixty"),
        ("MLSERVE_HPA_CPU_UTILIZATION", "0"),
        ("MLSERVE_RAY_CRON_JOB", "maybe"),
        ("MLSERVE_INGRESS_ANNOTATIONS", "a=b"),
        ("MLSERVE_IMAGE_PULL_POLICY", "Sometimes"),
        ("MLSERVE_CAPACITY_TYPE_LABEL", "not a key!"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        read_render_settings({variable: value})
    assert info.value.variable == variable


def test_the_values_are_checked_when_built_directly_too() -> None:
    with pytest.raises(ValueError, match="not an annotation or label key"):
        RenderSettings(capacity_type_label="not a key!")
    with pytest.raises(ValueError, match="not an annotation key"):
        RenderSettings(ingress_annotations=(("bad key", "v"),))
