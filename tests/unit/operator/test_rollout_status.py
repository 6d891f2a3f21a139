"""A rollout the Deployment controller gave up on is phase Failed with its reason, and READY
counts the ready pods of the current version, not every ready pod mid-rollout."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from mlserve.operator.reconcile.observe import image_pull_failure, not_ready_since, workload_of
from mlserve.operator.reconcile.status import Observation, compute_status
from mlserve.operator.spec import MLServeSpec

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SPEC = MLServeSpec.parse({"serve": "fraud", "environment": "prod", "type": "api", "artifactVersion": "2"})
NAME = "fraud-prod"

DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "fraud-prod-7d9" has timed out progressing.',
}
QUOTA = {
    "type": "ReplicaFailure",
    "status": "True",
    "reason": "FailedCreate",
    "message": 'pods "fraud-prod-7d9-x" is forbidden: exceeded quota: compute',
}


def _status(replicas: int, updated: int, ready: int, *conditions: dict[str, str], desired: int = 2) -> dict[str, Any]:
    deployment = {
        "metadata": {"name": NAME, "generation": 4},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 4,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "conditions": list(conditions),
        },
    }
    obs = Observation(
        generation=3,
        serve="fraud",
        db_state="in_sync",
        deployment_id=7,
        artifact_version="2",
        image="img:2",
        applied=True,
        workload=workload_of(SPEC, {("Deployment", NAME): deployment}),
    )
    return compute_status({"phase": "Deploying"}, obs, NOW)


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


@pytest.mark.parametrize(
    ("condition", "reason", "words"),
    [(DEADLINE, "ProgressDeadlineExceeded", "timed out progressing"), (QUOTA, "ReplicaFailure", "exceeded quota")],
)
def test_a_rollout_the_controller_gave_up_on_is_failed(condition: dict[str, str], reason: str, words: str) -> None:
    status = _status(3, 1, 2, condition)
    ready = _ready(status)
    assert status["phase"] == "Failed"
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert words in ready["message"] and "0/2 pods of this version ready" in ready["message"]


def test_a_failure_condition_left_over_after_a_finished_rollout_is_not_a_failure() -> None:
    status = _status(2, 2, 2, QUOTA)
    assert status["phase"] == "Ready"


def test_ready_counts_the_pods_of_the_current_version() -> None:
    # desired 1, surge 1: the old pod and the new one are both ready
    assert _status(2, 1, 2, desired=1)["ready"] == "1/1"
    # only the old pod is ready: none of this version yet
    assert _status(2, 1, 1, desired=1)["ready"] == "0/1"
    # rolled out: every ready pod is of this version
    assert _status(2, 2, 2)["ready"] == "2/2"


def _pod(name: str, reason: str | None, *, deleting: bool = False, init: bool = False) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": "not found"}} if reason else {"running": {}}
    container = {"name": "app", "image": "img:2", "state": state}
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": meta, "status": {key: [container]}}


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"])
def test_a_pod_waiting_on_an_image_it_cannot_pull_is_the_rollouts_failure(reason: str) -> None:
    failure = image_pull_failure([_pod("b", None), _pod("a", reason)])
    assert failure == ("ImagePullError", f"pod a cannot pull image 'img:2' of container 'app': {reason} (not found)")
    workload = workload_of(SPEC, {})
    assert workload is not None
    obs = Observation(
        generation=3,
        serve="fraud",
        db_state="in_sync",
        applied=True,
        workload=dataclasses.replace(workload, exists=True, desired=2, failure=failure),
    )
    status = compute_status({"phase": "Deploying"}, obs, NOW)
    assert status["phase"] == "Failed" and _ready(status)["reason"] == "ImagePullError"
    assert "pod a cannot pull image 'img:2'" in _ready(status)["message"]


def test_pods_being_deleted_or_waiting_for_other_reasons_are_no_image_pull_failure() -> None:
    pods = [_pod("a", "ErrImagePull", deleting=True), _pod("b", "ContainerCreating"), _pod("c", None)]
    assert image_pull_failure(pods) is None
    assert image_pull_failure([_pod("d", "ErrImagePull", init=True)]) is not None


def test_not_ready_since_reads_the_ready_conditions_transition() -> None:
    status = {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-02T03:04:05Z"}]}
    assert not_ready_since(status) == NOW
    assert not_ready_since({"conditions": [{"type": "Ready", "status": "True"}]}) is None
    assert not_ready_since({}) is None
