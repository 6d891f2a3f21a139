"""Artifact builds as status: the pure decision (``reconcile/builds.py``) and the status it gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlserve.models import Artifact
from mlserve.operator.reconcile.builds import BuildJob, artifact_unavailable, public_url
from mlserve.operator.reconcile.errors import ArtifactPending, InvalidInput
from mlserve.operator.reconcile.status import Observation, compute_status, waits_for_artifact

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _job(status: str, **kw: object) -> BuildJob:
    values: dict[str, object] = {
        "id": 12,
        "status": status,
        "task_id": "t-7",
        "repository": "https://git.example.com/r",
    }
    values.update(kw)
    return BuildJob(**values)  # type: ignore[arg-type]


def test_pending_build_is_building() -> None:
    error = artifact_unavailable("fraud", "v3", None, _job("PENDING", branch="main"))
    assert isinstance(error, ArtifactPending) and error.reason == "ArtifactBuilding"
    assert "build job 12" in error.message and "task t-7" in error.message and "branch main" in error.message
    assert error.event_type == "Normal"


def test_failed_build_names_the_job() -> None:
    error = artifact_unavailable("fraud", "v3", None, _job("FAILED", updated_at="2026-01-02 03:00:00"))
    assert isinstance(error, InvalidInput) and error.reason == "ArtifactBuildFailed"
    assert "build job 12" in error.message and "2026-01-02 03:00:00" in error.message


@pytest.mark.parametrize(
    ("artifact", "job", "reason", "said"),
    [
        (None, None, "UnknownArtifact", "no artifact version"),
        (None, _job("SUCCESSFUL"), "UnknownArtifact", "succeeded but recorded no image"),
        (Artifact(version="v3", image_url=None), _job("SUCCESSFUL"), "ArtifactNotBuilt", "recorded no image"),
        (Artifact(version="v3", image_url=""), None, "ArtifactNotBuilt", "no image yet"),
        (None, _job("QUEUED"), "UnknownArtifact", "'QUEUED'"),
    ],
)
def test_no_usable_artifact_keeps_the_reasons_of_before(
    artifact: Artifact | None, job: BuildJob | None, reason: str, said: str
) -> None:
    error = artifact_unavailable("fraud", "v3", artifact, job)
    assert isinstance(error, InvalidInput) and error.reason == reason
    assert said in error.message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://git.example.com/ml/repo", "https://git.example.com/ml/repo"),
        ("https://x-access-token:ghp_s3cret@github.com/ml/repo.git", "https://github.com/ml/repo.git"),
        ("https://ghp_s3cret@github.com:8443/ml/repo", "https://github.com:8443/ml/repo"),
        ("git@github.com:ml/repo.git", "git@github.com:ml/repo.git"),
    ],
)
def test_repository_credentials_never_shown(url: str, shown: str) -> None:
    assert public_url(url) == shown
    error = artifact_unavailable("fraud", "v3", None, _job("FAILED", repository=url))
    assert "s3cret" not in error.message


def test_building_status_then_ready_again() -> None:
    building = ArtifactPending("ArtifactBuilding", "artifact 'v3' of serve 'fraud' is being built")
    status = compute_status(None, Observation(generation=2, serve="fraud", error=building), NOW)
    assert status["phase"] == "Building"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["ArtifactResolved"] == ("False", "ArtifactBuilding")
    assert conditions["Ready"] == ("False", "ArtifactBuilding")
    assert waits_for_artifact(status)

    failed = InvalidInput("ArtifactBuildFailed", "the build failed")
    status = compute_status(status, Observation(generation=2, serve="fraud", error=failed), NOW)
    assert status["phase"] == "Failed" and waits_for_artifact(status)

    invalid = InvalidInput("InvalidSpec", "bad")
    assert not waits_for_artifact(compute_status(None, Observation(generation=2, error=invalid), NOW))
    assert not waits_for_artifact(None)
