"""Manifests of a workflow serve: a KubeRay RayJob, or a RayCronJob for a schedule.

- Unscheduled: one RayJob per deployment (:func:`render_rayjob` without a time).
- Scheduled, ``settings.ray_cron_job`` on (KubeRay 1.6+ with the RayCronJob feature gate):
  one RayCronJob (:func:`render_raycronjob`), KubeRay starts the runs.
- Scheduled, ``ray_cron_job`` off: the operator decides when a run is due and renders the
  RayJob for that time (:func:`render_rayjob` with ``scheduled_time``); the time is an
  input, never read from a clock here.

Every RayJob shuts its cluster down when the job finishes and is deleted
``settings.rayjob_ttl_seconds`` later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from mlserve.models.configs import HeadNodeConfig
from mlserve.operator.spec import WorkerGroup, WorkflowServe, api
from mlserve.operator.spec.times import format_rfc3339

from . import names
from .pods import container_env, node_selector, pod_extras, pod_metadata, pod_spec_extras, resources
from .settings import RenderSettings

__all__ = ["render_raycronjob", "render_rayjob", "render_rayjob_spec", "render_workflow"]


def _pod_template(
    wf: WorkflowServe,
    settings: RenderSettings,
    container_name: str,
    cores: float,
    memory: int,
    node: HeadNodeConfig | WorkerGroup,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": container_name,
        "image": wf.image,
        "imagePullPolicy": settings.image_pull_policy,
        "resources": resources(cores, memory),
    }
    if wf.env:
        container["env"] = container_env(wf.env)
    extras = pod_extras(wf.pod, settings)
    spec: dict[str, Any] = {"containers": [container]}
    spec.update(pod_spec_extras(extras, node_selector(node.node_capacity_type, settings)))
    return {
        "metadata": pod_metadata(extras, names.labels(wf.serve, wf.environment.name, wf.deployment_id), {}),
        "spec": spec,
    }


def _worker_group(wf: WorkflowServe, group: WorkerGroup, settings: RenderSettings) -> dict[str, Any]:
    return {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": {},
        "template": _pod_template(wf, settings, names.RAY_WORKER_CONTAINER, group.cores, group.memory, group),
    }


def render_rayjob_spec(wf: WorkflowServe, settings: RenderSettings) -> dict[str, Any]:
    """The RayJob ``spec``, shared by a RayJob and a RayCronJob's ``jobTemplate``."""
    cluster: dict[str, Any] = {}
    if settings.ray_version:
        cluster["rayVersion"] = settings.ray_version
    if wf.autoscaled:
        cluster["enableInTreeAutoscaling"] = True
    cluster["headGroupSpec"] = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": _pod_template(wf, settings, names.RAY_HEAD_CONTAINER, wf.head.cores, wf.head.memory, wf.head),
    }
    cluster["workerGroupSpecs"] = [_worker_group(wf, group, settings) for group in wf.workers]
    spec: dict[str, Any] = {"entrypoint": wf.entrypoint or settings.workflow_entrypoint}
    if wf.runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(wf.runtime_env, sort_keys=True, default_flow_style=False)
    spec.update(
        {
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": settings.rayjob_ttl_seconds,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": cluster,
        }
    )
    return spec


def _metadata(wf: WorkflowServe, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": wf.namespace,
        "labels": names.labels(wf.serve, wf.environment.name, wf.deployment_id),
        "annotations": {api.ANNOTATION_ARTIFACT_VERSION: wf.artifact_version},
    }


def render_rayjob(
    wf: WorkflowServe, settings: RenderSettings, scheduled_time: datetime | None = None
) -> dict[str, Any]:
    """A RayJob: for the deployment (no time) or for one scheduled time (timezone-aware)."""
    if scheduled_time is None:
        name = names.rayjob_name(wf.serve, wf.environment.name, wf.deployment_id)
        metadata = _metadata(wf, name)
    else:
        if scheduled_time.tzinfo is None:
            raise ValueError("scheduled_time must be timezone-aware (UTC)")
        name = names.scheduled_rayjob_name(wf.serve, wf.environment.name, scheduled_time)
        metadata = _metadata(wf, name)
        metadata["annotations"][api.ANNOTATION_SCHEDULED_TIME] = format_rfc3339(
            scheduled_time.replace(second=0, microsecond=0)
        )
    return {
        "apiVersion": api.RAYJOB.api_version,
        "kind": api.RAYJOB.kind,
        "metadata": metadata,
        "spec": render_rayjob_spec(wf, settings),
    }


def render_raycronjob(wf: WorkflowServe, settings: RenderSettings) -> dict[str, Any]:
    """A RayCronJob running the workflow on its schedule; suspended while the MLServe is paused."""
    if not wf.schedule:
        raise ValueError("a RayCronJob needs a schedule")
    spec: dict[str, Any] = {"schedule": wf.schedule}
    if settings.schedule_time_zone:
        spec["timeZone"] = settings.schedule_time_zone
    spec["suspend"] = wf.paused
    spec["jobTemplate"] = render_rayjob_spec(wf, settings)
    return {
        "apiVersion": api.RAYCRONJOB.api_version,
        "kind": api.RAYCRONJOB.kind,
        "metadata": _metadata(wf, names.raycronjob_name(wf.serve, wf.environment.name)),
        "spec": spec,
    }


def render_workflow(
    wf: WorkflowServe, settings: RenderSettings, scheduled_time: datetime | None = None
) -> list[dict[str, Any]]:
    """The children of a workflow serve.

    - no schedule: ``[RayJob]`` of the deployment (``scheduled_time`` must be None);
    - schedule and ``settings.ray_cron_job``: ``[RayCronJob]``;
    - schedule without it: ``[RayJob]`` for ``scheduled_time``, or ``[]`` when no time is
      given (nothing is due; the operator asks again at the next time).
    """
    if not wf.schedule:
        if scheduled_time is not None:
            raise ValueError("scheduled_time given for a workflow without a schedule")
        return [render_rayjob(wf, settings)]
    if settings.ray_cron_job:
        return [render_raycronjob(wf, settings)]
    if scheduled_time is None:
        return []
    return [render_rayjob(wf, settings, scheduled_time)]
