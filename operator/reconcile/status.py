"""The MLServe's status: computed from what one reconcile found, written only when it changed.

:func:`compute_status` is pure (the clock is an argument): it takes the previous status and
an :class:`Observation` and returns the new status with standard conditions whose
``lastTransitionTime`` moves only when their status flips. :func:`write_status` patches the
status subresource with the difference, and makes no request when there is none. Only
fields declared in the CRD's status schema are written (the API server drops the rest).

Conditions (each with a reason and a message saying what to do):

- ``ArtifactResolved``: serve, environment and artifact found and usable in the database
  (False with ``ArtifactBuilding`` while the requested version's build job is PENDING: phase
  ``Building``; ``ArtifactBuildFailed`` when it FAILED: phase ``Failed``).
- ``DatabaseSynced``: the database's active deployment is the one this MLServe asks for.
- ``Synced``: the children are applied as rendered.
- ``Conflict``: True when another MLServe holds the same serve and environment.
- ``Ready``: every desired pod is ready (API), or the workflow's RayJob is in place, or a
  scheduled workflow waits for its next run (reason ``Scheduled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from mlserve.operator.spec import api
from mlserve.operator.spec.api import ConditionType, Phase, Reason
from mlserve.operator.spec.times import format_rfc3339

from .errors import ArtifactPending, ClaimConflict, InvalidInput, ReconcileError
from .kube import MLServe
from .observe import IMAGE_PULL_FAILURE, Observation, Workload

__all__ = ["Observation", "Workload", "compute_status", "status_patch", "waits_for_artifact", "write_status"]

CONDITION_TYPES = tuple(ConditionType)
"""In the order they are listed in the status."""


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
    if workload.failure is not None and not (workload.rolled_out and workload.ready >= desired):
        why, detail = workload.failure
        reason = {
            "ProgressDeadlineExceeded": Reason.ROLLOUT_STALLED,
            IMAGE_PULL_FAILURE: Reason.IMAGE_PULL_ERROR,
        }.get(why, Reason.REPLICA_FAILURE)
        return (
            Phase.FAILED,
            False,
            reason,
            f"Deployment {workload.name}: {detail} ({workload.ready}/{desired} pods of this version ready): "
            "check the pods' events (image, resources, node selectors); a new request retries the rollout",
        )
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


_CARRIED_OVER = (
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
    "children",
    "schedule",
    "lastScheduledTime",
    "nextScheduledTime",
    "activeRayJob",
    "lastRunStatus",
)
"""The status fields kept from the previous status until a reconcile says otherwise."""


@dataclass(frozen=True)
class _Condition:
    """One condition to set: its type, status (None: Unknown), reason and message."""

    type_: ConditionType
    ok: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class _Verdict:
    """The conditions a decision sets and the phase and message it gives the MLServe."""

    conditions: tuple[_Condition, ...]
    phase: Phase
    message: str
    keeps_phase: bool = False
    """Keep the previous phase if there is one (the children still run as before)."""


_NO_CONFLICT = _Condition(
    ConditionType.CONFLICT, False, Reason.NO_CONFLICT, "this MLServe holds its serve and environment"
)

_DB_REASONS = {
    "in_sync": (True, Reason.IN_SYNC),
    "recorded": (True, Reason.DEPLOYMENT_RECORDED),
    "superseded": (True, Reason.SUPERSEDED),
    "followed": (True, Reason.IN_SYNC),
    "paused": (False, Reason.PAUSED),
    "undeployed": (False, Reason.UNDEPLOYED_IN_DATABASE),
}


def compute_status(previous: Mapping[str, Any] | None, obs: Observation, now: datetime) -> dict[str, Any]:
    """The status an MLServe should have after this reconcile."""
    previous = dict(previous or {})
    status: dict[str, Any] = {key: previous[key] for key in _CARRIED_OVER if key in previous}
    conditions = [dict(c) for c in previous.get("conditions") or [] if c.get("type") in CONDITION_TYPES]

    def cond(condition: _Condition | None) -> None:
        if condition is not None:
            set_condition(
                conditions, condition.type_, condition.ok, condition.reason, condition.message, obs.generation, now
            )

    def settle(verdict: _Verdict) -> dict[str, Any]:
        for condition in verdict.conditions:
            cond(condition)
        if verdict.keeps_phase:
            status["message"] = verdict.message
            status.setdefault("phase", verdict.phase)
        else:
            status.update(phase=verdict.phase, message=verdict.message)
        return _finish(status, conditions)

    if obs.serve is not None:
        status["serve"] = obs.serve
    # The generation is observed once the request was checked against the database; while
    # the database is down it is not, so the change is still judged when it is back.
    if not _database_down(obs.error):
        status["observedGeneration"] = obs.generation
    if (conflict := _conflict(obs.error)) is not None:
        return settle(conflict)
    cond(_NO_CONFLICT)
    if (stop := _building(obs.error) or _invalid(obs.error) or _database_unavailable(obs.error)) is not None:
        return settle(stop)

    cond(_artifact_resolved(obs))
    for key, value in _deployment_fields(obs):
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    cond(_database_synced(obs))
    if (failed := _apply_failed(obs.error)) is not None:
        return settle(failed)
    cond(_synced(obs))
    status.update(_workload_fields(obs.workload))
    status.update(obs.schedule_status)
    return settle(_ready(obs, previous.get("phase")))


def _database_down(error: ReconcileError | None) -> bool:
    return error is not None and error.reason == Reason.DATABASE_UNAVAILABLE


def _conflict(error: ReconcileError | None) -> _Verdict | None:
    """Another MLServe holds the pair: this one changes nothing."""
    if not isinstance(error, ClaimConflict):
        return None
    return _Verdict(
        (
            _Condition(ConditionType.CONFLICT, True, error.reason, error.message),
            _Condition(ConditionType.READY, False, Reason.CONFLICT, error.message),
        ),
        Phase.CONFLICT,
        error.message,
    )


def _invalid(error: ReconcileError | None) -> _Verdict | None:
    """The request cannot be served as written (spec, database rows or infra config); a build
    that failed is phase Failed."""
    if not isinstance(error, InvalidInput):
        return None
    return _Verdict(
        (
            _Condition(ConditionType.ARTIFACT_RESOLVED, False, error.reason, error.message),
            _Condition(ConditionType.READY, False, error.reason, error.message),
        ),
        Phase.FAILED if error.reason == Reason.ARTIFACT_BUILD_FAILED else Phase.INVALID,
        error.message,
    )


def _building(error: ReconcileError | None) -> _Verdict | None:
    """The requested version is still being built: the children stay as they are."""
    if not isinstance(error, ArtifactPending):
        return None
    return _Verdict(
        (
            _Condition(ConditionType.ARTIFACT_RESOLVED, False, error.reason, error.message),
            _Condition(ConditionType.READY, False, error.reason, error.message),
        ),
        Phase.BUILDING,
        error.message,
    )


_WAITING_FOR_ARTIFACT = frozenset(
    {Reason.ARTIFACT_BUILDING, Reason.ARTIFACT_BUILD_FAILED, Reason.UNKNOWN_ARTIFACT, Reason.ARTIFACT_NOT_BUILT}
)


def waits_for_artifact(status: Mapping[str, Any] | None) -> bool:
    """The status says the requested version has no usable artifact yet (being built, failed,
    missing or without an image): a change of the builds in the database should wake it."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == ConditionType.ARTIFACT_RESOLVED:
            return condition.get("status") == "False" and condition.get("reason") in _WAITING_FOR_ARTIFACT
    return False


def _database_unavailable(error: ReconcileError | None) -> _Verdict | None:
    """The database could not be asked: everything else stays as the last reconcile left it."""
    if error is None or not _database_down(error):
        return None
    condition = _Condition(ConditionType.DATABASE_SYNCED, False, error.reason, error.message)
    return _Verdict((condition,), Phase.PENDING, error.message, keeps_phase=True)


def _apply_failed(error: ReconcileError | None) -> _Verdict | None:
    """A temporary failure after the database step (applying the children)."""
    if error is None:
        return None
    condition = _Condition(ConditionType.SYNCED, False, error.reason, error.message)
    return _Verdict((condition,), Phase.PENDING, error.message, keeps_phase=True)


def _artifact_resolved(obs: Observation) -> _Condition | None:
    if obs.artifact_version is None:
        return None
    return _Condition(
        ConditionType.ARTIFACT_RESOLVED,
        True,
        Reason.RESOLVED,
        f"artifact {obs.artifact_version} of serve {obs.serve} resolved to image {obs.image}",
    )


def _deployment_fields(obs: Observation) -> list[tuple[str, Any]]:
    """The fields the database step found, in order; None removes the field."""
    fields: list[tuple[str, Any]] = [
        ("deploymentId", obs.deployment_id),
        ("previousDeploymentId", obs.previous_deployment_id),
        ("artifactVersion", obs.artifact_version),
        ("image", obs.image),
        ("lastDeployedAt", _time(obs.last_deployed_at)),
    ]
    if obs.hosts is not None:
        fields.append(("hosts", list(obs.hosts) or None))
    if obs.children is not None:
        fields.append(("children", obs.children))
    return fields


def _database_synced(obs: Observation) -> _Condition | None:
    if obs.db_state not in _DB_REASONS:
        return None
    ok, reason = _DB_REASONS[obs.db_state]
    return _Condition(ConditionType.DATABASE_SYNCED, ok, reason, obs.db_message)


def _synced(obs: Observation) -> _Condition | None:
    if obs.paused:
        return _Condition(
            ConditionType.SYNCED, False, Reason.PAUSED, "spec.paused is true: children are left as they are"
        )
    if obs.applied and obs.ingress_held:
        return _Condition(ConditionType.SYNCED, False, Reason.HOST_CLAIMED, obs.ingress_held)
    if obs.applied:
        return _Condition(ConditionType.SYNCED, True, Reason.APPLIED, "every child is applied as rendered")
    return None


def _workload_fields(workload: Workload | None) -> dict[str, Any]:
    """What the serving child reports: replicas of a Deployment, the run of a RayJob."""
    if workload is not None and workload.kind == api.DEPLOYMENT.kind:
        return {
            "replicas": workload.desired,
            "readyReplicas": workload.ready,
            "ready": f"{workload.ready}/{workload.desired}",
        }
    if workload is not None and workload.kind == api.RAYJOB.kind:
        fields: dict[str, Any] = {"activeRayJob": workload.name}
        if workload.job_status:
            fields["lastRunStatus"] = workload.job_status
        return fields
    return {}


def _ready(obs: Observation, previous_phase: str | None) -> _Verdict:
    """Ready and the phase from the serving child, paused or not."""
    phase, ready, reason, message = _workload_phase(
        obs.workload, previous_phase, obs.schedule_status.get("nextScheduledTime")
    )
    if obs.paused:
        phase = Phase.PAUSED
    if obs.db_state == "superseded" and phase == Phase.READY:
        message = f"{message}; {obs.db_message}"
    if obs.ingress_held and phase == Phase.READY:
        message = f"{message}; {obs.ingress_held}"
    return _Verdict((_Condition(ConditionType.READY, ready, reason, message),), phase, message)


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
