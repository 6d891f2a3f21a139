"""A reconcile that finds the pair in step keeps the verdict the status already gives for the
same deployment (recorded, superseded, followed): no status write at the next drift check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlserve.operator.reconcile.deploy import DeployOutcome, kept_verdict


def _status(reason: str, message: str, deployment: int = 7, ok: str = "True") -> dict[str, Any]:
    return {
        "deploymentId": deployment,
        "conditions": [{"type": "DatabaseSynced", "status": ok, "reason": reason, "message": message}],
    }


def _in_sync(deployment: int = 7) -> DeployOutcome:
    active: Any = SimpleNamespace(pk=deployment)
    return DeployOutcome("in_sync", f"deployment {deployment} runs artifact v2", active, None, 6)


@pytest.mark.parametrize(
    ("reason", "state"),
    [("DeploymentRecorded", "recorded"), ("Superseded", "superseded"), ("InSync", "in_sync")],
)
def test_the_verdict_on_the_same_deployment_is_kept(reason: str, state: str) -> None:
    assert kept_verdict(_status(reason, "what happened"), _in_sync()) == (state, "what happened")


def test_a_new_deployment_or_a_failing_condition_is_judged_anew() -> None:
    assert kept_verdict(_status("DeploymentRecorded", "x", deployment=6), _in_sync(7)) is None
    assert kept_verdict(_status("DatabaseUnavailable", "x", ok="False"), _in_sync()) is None
    assert kept_verdict(_status("Paused", "x"), _in_sync()) is None
    moved = DeployOutcome("followed", "m", SimpleNamespace(pk=7), None, 6)  # type: ignore[arg-type]
    assert kept_verdict(_status("InSync", "x"), moved) is None
