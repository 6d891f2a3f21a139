"""What one reconcile learns (:class:`Observation`, the input of the status) and how it reads it.

Pure functions over the live children and the MLServe's last status: the serving child's
state (:func:`workload_of`), and the previous status's verdicts that decide whether a
request still has to be judged against the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlserve.models import ServeType
from mlserve.operator.render import names
from mlserve.operator.spec import MLServeSpec, api
from mlserve.operator.spec.api import ConditionType
from mlserve.operator.spec.times import parse_rfc3339

from .errors import ReconcileError

__all__ = [
    "IMAGE_PULL_FAILURE",
    "Observation",
    "Workload",
    "finished_run",
    "image_pull_failure",
    "not_ready_since",
    "previous_reason",
    "workload_of",
]


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
    failure: tuple[str, str] | None = None
    """(reason, message) when the Deployment controller gave up on the rollout: its
    ``Progressing`` condition says ``ProgressDeadlineExceeded``, or ``ReplicaFailure`` is true
    (pods refused by a quota, a missing service account...)."""
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
    """in_sync | recorded | superseded | followed | paused | undeployed | None (not reached)."""
    db_message: str = ""
    deployment_id: int | None = None
    previous_deployment_id: int | None = None
    artifact_version: str | None = None
    image: str | None = None
    last_deployed_at: datetime | None = None
    hosts: tuple[str, ...] | None = None
    children: list[dict[str, str]] | None = None
    applied: bool = False
    """The children were applied (or already matched) in this reconcile."""
    pods_recheck: bool = False
    """A rollout that is neither Ready nor Failed: look at its pods again soon."""
    cron_recheck_after: float | None = None
    """Seconds until a RayCronJob's RayJobs are looked at again for a duplicate of its last time."""
    ingress_held: str | None = None
    """Why the MLServe's Ingress was not created: another Ingress claims one of its hosts."""
    workload: Workload | None = None
    schedule_status: dict[str, Any] = field(default_factory=dict)
    """Fields owned by the workflow scheduler (lastScheduledTime, ...), passed through."""


def workload_of(spec: MLServeSpec, live: Mapping[tuple[str, str], Mapping[str, Any]]) -> Workload | None:
    """The child that runs the serve, as found among the live children (None: no workflow child)."""
    if spec.type is ServeType.API:
        name = names.child_name(spec.serve, spec.environment)
        obj = live.get((api.DEPLOYMENT.kind, name))
        if obj is None:
            return Workload(api.DEPLOYMENT.kind, name, exists=False)
        st = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        desired = (obj.get("spec") or {}).get("replicas")
        desired = int(desired if desired is not None else st.get("replicas") or 0)
        hpa = live.get((api.HORIZONTAL_POD_AUTOSCALER.kind, name))
        if hpa is not None:
            # The API server defaults a new Deployment to one replica before the HPA has
            # scaled it: the serve is not ready until the HPA's minimum is.
            desired = max(desired, int((hpa.get("spec") or {}).get("minReplicas") or 1))
        updated = int(st.get("updatedReplicas") or 0)
        replicas = int(st.get("replicas") or 0)
        current = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        return Workload(
            api.DEPLOYMENT.kind,
            name,
            desired=desired,
            ready=_ready_of_current_version(int(st.get("readyReplicas") or 0), replicas, updated),
            updated=updated,
            rolled_out=current and updated >= desired and replicas <= desired,
            failure=_rollout_failure(st.get("conditions") or []) if current else None,
        )
    jobs = [obj for (kind, _), obj in live.items() if kind in (api.RAYJOB.kind, api.RAYCRONJOB.kind)]
    if not jobs:
        return None
    newest = max(jobs, key=lambda o: (o.get("metadata") or {}).get("creationTimestamp") or "")
    return Workload(
        str(newest.get("kind")),
        newest["metadata"]["name"],
        job_status=(newest.get("status") or {}).get("jobStatus"),
    )


def _ready_of_current_version(ready: int, replicas: int, updated: int) -> int:
    """Ready pods that run the current pod template. The Deployment counts the ready pods of
    every version (``2/1`` in the middle of a rollout); the pods not updated, old ones, are
    at most ``replicas - updated``, so at least this many ready pods are of the current
    version: exactly that many while every old pod is ready, which is how a rollout goes."""
    return max(0, min(updated, ready - max(0, replicas - updated)))


def _rollout_failure(conditions: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    by_type = {str(c.get("type")): c for c in conditions}
    progressing = by_type.get("Progressing") or {}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return "ProgressDeadlineExceeded", str(progressing.get("message") or "the rollout made no progress")
    failure = by_type.get("ReplicaFailure") or {}
    if failure.get("status") == "True":
        return "ReplicaFailure", str(failure.get("message") or failure.get("reason") or "pods could not be created")
    return None


IMAGE_PULL_FAILURE = "ImagePullError"
"""The :attr:`Workload.failure` reason when the rollout's pods cannot pull their image."""

_IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
)
"""The kubelet's reasons for a container waiting on an image it cannot pull."""


def image_pull_failure(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(IMAGE_PULL_FAILURE, what the kubelet says) for the first pod (by name) with a container
    waiting on an image it cannot pull, or None. Pods being deleted are left out."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason in _IMAGE_PULL_REASONS:
                said = str(waiting.get("message") or "").strip()
                return (
                    IMAGE_PULL_FAILURE,
                    f"pod {meta.get('name')} cannot pull image {container.get('image')!r} of container "
                    f"{container.get('name')!r}: {reason}" + (f" ({said[:500]})" if said else ""),
                )
    return None


def not_ready_since(status: Mapping[str, Any]) -> datetime | None:
    """Since when the previous status's Ready condition has been False (None: it is not)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == ConditionType.READY and condition.get("status") == "False":
            return parse_rfc3339(condition.get("lastTransitionTime"))
    return None


# Ray's terminal job states, as ``status.lastRunStatus`` keeps them.
_FINISHED_RUN = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def finished_run(status: Mapping[str, Any], manifests: Sequence[Mapping[str, Any]]) -> str | None:
    """The RayJob of the current deployment when its run already finished, or None.

    An unscheduled workflow runs once per deployment (the RayJob's name carries the
    deployment id). Once the status recorded that RayJob with a terminal ``lastRunStatus``,
    the run is done: deleting the RayJob (by hand, or KubeRay's ``ttlSecondsAfterFinished``)
    is not drift, and the batch is not run again. A new deployment renders another name.
    """
    name = status.get("activeRayJob")
    if not name or str(status.get("lastRunStatus") or "").upper() not in _FINISHED_RUN:
        return None
    for manifest in manifests:
        if manifest.get("kind") == api.RAYJOB.kind and (manifest.get("metadata") or {}).get("name") == name:
            return str(name)
    return None


def previous_reason(status: Mapping[str, Any], type_: ConditionType) -> str | None:
    """The reason the previous status gave for a failing condition (None: it did not fail)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            if condition.get("status") == "True" and type_ is not ConditionType.CONFLICT:
                return None
            reason = condition.get("reason")
            return None if reason is None else str(reason)
    return None
