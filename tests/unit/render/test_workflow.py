"""Behaviour of the workflow renderers, one rule per test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from mlserve_testing.render_cases import spec_for, workflow_context

from mlserve.models.errors import InvalidConfig
from mlserve.operator.render import RenderSettings, render_children


def test_unscheduled_runs_one_rayjob_per_deployment() -> None:
    ctx = workflow_context()
    (job,) = render_children(ctx, spec_for(ctx), RenderSettings())
    assert job["kind"] == "RayJob"
    assert job["metadata"]["name"] == "nightly-features-staging-d77"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600


def test_scheduled_without_time_renders_nothing() -> None:
    ctx = workflow_context(schedule="0 3 * * *")
    assert render_children(ctx, spec_for(ctx), RenderSettings()) == []


def test_scheduled_time_names_the_job_in_utc() -> None:
    ctx = workflow_context(schedule="0 3 * * *")
    when = datetime(2025, 1, 2, 8, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    (job,) = render_children(ctx, spec_for(ctx), RenderSettings(), when)
    assert job["metadata"]["name"].endswith("-202501020300")
    assert job["metadata"]["annotations"]["mlserve.darwin.io/scheduled-time"] == "2025-01-02T03:00:00Z"


def test_naive_scheduled_time_is_refused() -> None:
    ctx = workflow_context(schedule="0 3 * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        render_children(ctx, spec_for(ctx), RenderSettings(), datetime(2025, 1, 2, 3))


def test_raycronjob_when_enabled_suspended_when_paused() -> None:
    ctx = workflow_context(schedule="0 3 * * *")
    (cron,) = render_children(ctx, spec_for(ctx, paused=True), RenderSettings(ray_cron_job=True))
    assert cron["kind"] == "RayCronJob"
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["suspend"] is True
    assert cron["spec"]["jobTemplate"]["shutdownAfterJobFinishes"] is True


def test_spec_schedule_overrides_database() -> None:
    ctx = workflow_context(schedule="0 3 * * *")
    (cron,) = render_children(ctx, spec_for(ctx, schedule="@hourly"), RenderSettings(ray_cron_job=True))
    assert cron["spec"]["schedule"] == "@hourly"


def test_autoscaler_only_when_a_group_can_grow() -> None:
    fixed = workflow_context()
    (job,) = render_children(fixed, spec_for(fixed), RenderSettings())
    assert "enableInTreeAutoscaling" not in job["spec"]["rayClusterSpec"]
    growing = spec_for(fixed, workerGroups=[{"cores": 1, "memory": 1, "minReplicas": 0, "maxReplicas": 3}])
    (job,) = render_children(fixed, growing, RenderSettings())
    assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True


def test_head_override_is_field_by_field() -> None:
    ctx = workflow_context(head={"cores": 3, "memory": 6, "node_capacity_type": "spot"})
    (job,) = render_children(ctx, spec_for(ctx, head={"memory": 12}), RenderSettings())
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["resources"]["limits"] == {"cpu": "3", "memory": "12G"}
    assert head["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}


def test_worker_group_name_clash_with_default_name_is_reported() -> None:
    ctx = workflow_context()
    groups = [
        {"name": "wg-1", "cores": 1, "memory": 1, "minReplicas": 1, "maxReplicas": 1},
        {"cores": 1, "memory": 1, "minReplicas": 1, "maxReplicas": 1},
    ]
    with pytest.raises(InvalidConfig, match="appear twice"):
        render_children(ctx, spec_for(ctx, workerGroups=groups), RenderSettings())


def test_missing_worker_config_names_the_field_to_set() -> None:
    ctx = workflow_context(workers=())
    with pytest.raises(InvalidConfig) as info:
        render_children(ctx, spec_for(ctx), RenderSettings())
    assert info.value.field == "spec.workerGroups"


def test_entrypoint_default_from_settings() -> None:
    ctx = workflow_context()
    (job,) = render_children(ctx, spec_for(ctx), RenderSettings(workflow_entrypoint="python run.py"))
    assert job["spec"]["entrypoint"] == "python run.py"
