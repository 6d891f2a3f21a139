"""The MLServe's status: computed from what one reconcile found, written only when it changed.

:func:`compute_status` is pure (the clock is an argument): it takes the previous status and
an :class:`Observation` and returns the new status with standard conditions whose
``lastTransitionTime`` moves only when their status flips. :func:`write_status` patches the
status subresource with the difference, and makes no request when there is none. Only
fields declared in the CRD's status schema are written (the API server drops the rest).

Conditions (each with a reason and a message saying what to do):

- ``ArtifactResolved``: serve, environment and artifact found and usable in the database.
- ``DatabaseSynced``: the database's active deployment is the one this MLServe asks for.
- ``Synced``: the children are applied as rendered.
- ``Conflict``: True when another MLServe holds the same serve and environment.
- ``Ready``: every desired pod is ready (API), or the workflow's RayJob is in place, or a
  scheduled workflow waits for its next run (reason ``Scheduled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from mlserve.operator.spec import api
from mlserve.operator.spec.api import ConditionType, Phase, Reason
from mlserve.operator.spec.times import format_rfc3339

from .errors import ClaimConflict, InvalidInput, ReconcileError
from .kube import MLServe

__all__ = ["Observation", "Workload", "compute_status", "status_patch", "write_status"]

CONDITION_TYPES = tuple(ConditionType)
"""In the order they are listed in the status."""


@dataclass(frozen=True)
class Workload:
    """What the child that runs the serve reports."""

    kind: str  # Deployment, RayJob or RayCronJob
    name: str
    exists: bool = True
    desired: int = 0
    ready: int = 0
    updated: int = 0
    rolled_out: bool = False
    """The Deployment controller has seen the latest spec and updated every pod."""
    job_status: str | None = None
    """A RayJob's ``status.jobStatus``."""


@dataclass
class Observation:
    """Everything one reconcile learned, the input of :func:`compute_status`."""

    generation: int
    serve: str | None = None
    error: ReconcileError | None = None
    paused: bool = False
    db_state: str | None = None
    """in_sync | recorded | db_newer | undeployed | None (not reached)."""
    db_message: str = ""
    deployment_id: int | None = None
    previous_deployment_id: int | None = None
    artifact_version: str | None = None
    image: str | None = None
    last_deployed_at: datetime | None = None
    spec_changed_at: datetime | None = None
    hosts: tuple[str, ...] | None = None
    children: list[dict[str, str]] | None = None
    applied: bool = False
    """The children were applied (or already matched) in this reconcile."""
    workload: Workload | None = None
    schedule_status: dict[str, Any] = field(default_factory=dict)
    """Fields owned by the workflow scheduler (lastScheduledTime, ...), passed through."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_rfc3339(value)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> None:
    """Set one condition in place, keeping lastTransitionTime unless the status flips."""
    text = "Unknown" if status is None else ("True" if status else "False")
    for condition in conditions:
        if condition.get("type") == type_:
            if condition.get("status") != text:
                condition["lastTransitionTime"] = _time(now)
            condition.update(status=text, reason=reason, message=message[:32768], observedGeneration=generation)
            return
    conditions.append(
        {
            "type": type_,
            "status": text,
            "reason": reason,
            "message": message[:32768],
            "observedGeneration": generation,
            "lastTransitionTime": _time(now),
        }
    )


def _workload_phase(
    workload: Workload | None, previous_phase: str | None, next_run: str | None = None
) -> tuple[Phase, bool, Reason, str]:
    """(phase, ready, reason, message) from the serving child.

    ``next_run`` is the next scheduled time of a scheduled workflow (RFC 3339), if any.
    """
    if workload is not None and workload.kind == api.RAYCRONJOB.kind:
        when = f"; next run at {next_run}" if next_run else ""
        return Phase.SCHEDULED, True, Reason.SCHEDULED, f"RayCronJob {workload.name} is in place{when}"
    if (workload is None or not workload.exists) and next_run:
        # One RayJob per cron time, none created (or kept) yet: waiting is the normal state.
        return Phase.SCHEDULED, True, Reason.SCHEDULED, f"no run yet: the next run is at {next_run}"
    if workload is None or not workload.exists:
        return Phase.DEPLOYING, False, Reason.CHILD_MISSING, "the serving child is not created yet"
    if workload.kind == api.RAYJOB.kind:
        job = (workload.job_status or "").upper()
        if job == "SUCCEEDED":
            return Phase.SUCCEEDED, True, Reason.JOB_SUCCEEDED, f"RayJob {workload.name} succeeded"
        if job == "FAILED":
            return Phase.FAILED, False, Reason.JOB_FAILED, f"RayJob {workload.name} failed: see its status and logs"
        if job in ("RUNNING", "STOPPED"):
            return Phase.RUNNING, True, Reason.JOB_RUNNING, f"RayJob {workload.name} is {job.lower()}"
        return Phase.READY, True, Reason.JOB_SUBMITTED, f"RayJob {workload.name} is submitted to KubeRay"
    desired = max(workload.desired, 1)
    if workload.rolled_out and workload.ready >= desired:
        return Phase.READY, True, Reason.PODS_READY, f"{workload.ready}/{desired} pods ready"
    if workload.rolled_out and previous_phase in (Phase.READY, Phase.DEGRADED):
        return (
            Phase.DEGRADED,
            False,
            Reason.PODS_NOT_READY,
            f"{workload.ready}/{desired} pods ready: check the pods' events and logs",
        )
    return (
        Phase.DEPLOYING,
        False,
        Reason.ROLLING_OUT,
        f"rolling out: {workload.updated} updated, {workload.ready}/{desired} pods ready",
    )


def compute_status(previous: Mapping[str, Any] | None, obs: Observation, now: datetime) -> dict[str, Any]:
    """The status an MLServe should have after this reconcile."""
    previous = dict(previous or {})
    status: dict[str, Any] = {
        key: previous[key]
        for key in (
            "observedGeneration",
            "phase",
            "message",
            "ready",
            "serve",
            "deploymentId",
            "previousDeploymentId",
            "artifactVersion",
            "image",
            "replicas",
            "readyReplicas",
            "hosts",
            "lastDeployedAt",
            "specChangedAt",
            "children",
            "schedule",
            "lastScheduledTime",
            "nextScheduledTime",
            "activeRayJob",
            "lastRunStatus",
        )
        if key in previous
    }
    conditions = [dict(c) for c in previous.get("conditions") or [] if c.get("type") in CONDITION_TYPES]
    gen = obs.generation
    error = obs.error
    if obs.serve is not None:
        status["serve"] = obs.serve

    def cond(type_: ConditionType, ok: bool | None, reason: str, message: str) -> None:
        set_condition(conditions, type_, ok, reason, message, gen, now)

    # The generation is observed once the request was checked against the database; while
    # the database is down it is not, so the change is still judged when it is back.
    database_down = error is not None and error.reason == Reason.DATABASE_UNAVAILABLE
    if not database_down:
        status["observedGeneration"] = gen

    if isinstance(error, ClaimConflict):
        cond(ConditionType.CONFLICT, True, error.reason, error.message)
        cond(ConditionType.READY, False, Reason.CONFLICT, error.message)
        status.update(phase=Phase.CONFLICT, message=error.message)
        return _finish(status, conditions)
    cond(ConditionType.CONFLICT, False, Reason.NO_CONFLICT, "this MLServe holds its serve and environment")

    if isinstance(error, InvalidInput):
        cond(ConditionType.ARTIFACT_RESOLVED, False, error.reason, error.message)
        cond(ConditionType.READY, False, error.reason, error.message)
        status.update(phase=Phase.INVALID, message=error.message)
        return _finish(status, conditions)

    if database_down:
        assert error is not None
        cond(ConditionType.DATABASE_SYNCED, False, error.reason, error.message)
        status["message"] = error.message
        status.setdefault("phase", Phase.PENDING)
        return _finish(status, conditions)

    if obs.artifact_version is not None:
        cond(
            ConditionType.ARTIFACT_RESOLVED,
            True,
            Reason.RESOLVED,
            f"artifact {obs.artifact_version} of serve {obs.serve} resolved to image {obs.image}",
        )
    for key, value in (
        ("deploymentId", obs.deployment_id),
        ("previousDeploymentId", obs.previous_deployment_id),
        ("artifactVersion", obs.artifact_version),
        ("image", obs.image),
        ("lastDeployedAt", _time(obs.last_deployed_at)),
        ("specChangedAt", _time(obs.spec_changed_at)),
    ):
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    if obs.hosts is not None:
        status["hosts"] = list(obs.hosts)
        if not obs.hosts:
            status.pop("hosts")
    if obs.children is not None:
        status["children"] = obs.children

    db_reasons = {
        "in_sync": (True, Reason.IN_SYNC),
        "recorded": (True, Reason.DEPLOYMENT_RECORDED),
        "db_newer": (False, Reason.DATABASE_NEWER),
        "superseded": (True, Reason.SUPERSEDED),
        "followed": (True, Reason.IN_SYNC),
        "paused": (False, Reason.PAUSED),
        "undeployed": (False, Reason.UNDEPLOYED_IN_DATABASE),
    }
    if obs.db_state in db_reasons:
        ok, reason = db_reasons[obs.db_state]
        cond(ConditionType.DATABASE_SYNCED, ok, reason, obs.db_message)

    if error is not None:  # a temporary failure while applying
        cond(ConditionType.SYNCED, False, error.reason, error.message)
        status["message"] = error.message
        status.setdefault("phase", Phase.PENDING)
        return _finish(status, conditions)

    if obs.paused:
        cond(ConditionType.SYNCED, False, Reason.PAUSED, "spec.paused is true: children are left as they are")
    elif obs.applied:
        cond(ConditionType.SYNCED, True, Reason.APPLIED, "every child is applied as rendered")

    phase, ready, reason, message = _workload_phase(
        obs.workload, previous.get("phase"), obs.schedule_status.get("nextScheduledTime")
    )
    workload = obs.workload
    if workload is not None and workload.kind == api.DEPLOYMENT.kind:
        status["replicas"] = workload.desired
        status["readyReplicas"] = workload.ready
        status["ready"] = f"{workload.ready}/{workload.desired}"
    if workload is not None and workload.kind == api.RAYJOB.kind:
        status["activeRayJob"] = workload.name
        if workload.job_status:
            status["lastRunStatus"] = workload.job_status
    status.update(obs.schedule_status)
    if obs.paused:
        phase = Phase.PAUSED
    if obs.db_state == "db_newer" and phase == Phase.READY:
        message = f"{message}; {obs.db_message}"
    cond(ConditionType.READY, ready, reason, message)
    status.update(phase=phase, message=message)
    return _finish(status, conditions)


def _finish(status: dict[str, Any], conditions: list[dict[str, Any]]) -> dict[str, Any]:
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    status["conditions"] = sorted(conditions, key=lambda c: order.get(c["type"], 99))
    return status


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch from ``old`` to ``new`` (None when they are equal)."""
    old = dict(old or {})
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch or None


async def write_status(
    client: AsyncClient, name: str, namespace: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> bool:
    """Patch the status subresource when ``new`` differs from ``old``; True when written."""
    patch = status_patch(old, new)
    if patch is None:
        return False
    try:
        await client.patch(MLServe.Status, name, {"status": patch}, namespace=namespace, patch_type=PatchType.MERGE)
    except ApiError as exc:
        if exc.status.code == 404:
            return False  # deleted meanwhile
        raise
    return True
