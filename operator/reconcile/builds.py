"""Artifact builds as status: why a requested version has no image yet.

Darwin's ``POST /artifact`` writes an ``artifact_builder_job`` row (PENDING) and its poller
later marks it SUCCESSFUL, with the ``artifacts`` row and its ``image_url``, or FAILED. When an
MLServe asks for a version that has no artifact with an image, :func:`latest_build` reads that
version's newest job (one small query, kept apart so a batched read can take it over) and
:func:`artifact_unavailable` says why, purely:

- PENDING: :class:`~.errors.ArtifactPending` (phase ``Building``, reason ``ArtifactBuilding``);
  the reconcile waits, and the sync's watermark sees the job's status change and wakes it;
- FAILED: :class:`~.errors.InvalidInput` ``ArtifactBuildFailed`` with the job's details;
- SUCCESSFUL without an artifact or image, no job, or a status Darwin never writes: the reasons
  of before (``UnknownArtifact``, ``ArtifactNotBuilt``), the message saying what was found.

The repository URL is shown without any credentials it may carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlserve.models import Artifact
from mlserve.models.artifacts import ArtifactBuilderJob
from mlserve.models.enums import JobStatus
from mlserve.operator.spec.api import Reason

from .errors import ArtifactPending, InvalidInput, ReconcileError

__all__ = ["BuildJob", "artifact_unavailable", "latest_build", "public_url"]

_LATEST_JOB_SQL = (
    "SELECT id, status, task_id, github_repo_url, branch, status_last_updated_at "
    "FROM artifact_builder_job WHERE serve_id = {mark} AND version = {mark} ORDER BY id DESC LIMIT 1"
)


@dataclass(frozen=True)
class BuildJob:
    """The newest ``artifact_builder_job`` row of one serve's version, as stored."""

    id: int
    status: str
    """As stored: PENDING, SUCCESSFUL, FAILED, or anything another writer put there."""
    task_id: str | None = None
    repository: str = ""
    branch: str | None = None
    updated_at: str | None = None
    """``status_last_updated_at``, as text."""


async def latest_build(serve_id: int, version: str) -> BuildJob | None:
    """The newest build job of ``version`` of the serve, or None. Read as plain SQL so a status
    no enum knows is reported, not raised."""
    connection = ArtifactBuilderJob._meta.db
    mark = "%s" if connection.capabilities.dialect == "mysql" else "?"
    rows = await connection.execute_query_dict(_LATEST_JOB_SQL.format(mark=mark), [serve_id, version])
    if not rows:
        return None
    row: dict[str, Any] = rows[0]
    updated = row.get("status_last_updated_at")
    return BuildJob(
        id=int(row["id"]),
        status=str(row.get("status") or ""),
        task_id=None if row.get("task_id") is None else str(row["task_id"]),
        repository=str(row.get("github_repo_url") or ""),
        branch=None if row.get("branch") is None else str(row["branch"]),
        updated_at=None if updated is None else str(updated),
    )


def public_url(url: str) -> str:
    """``url`` without a user name or password (``https://token@host/x`` → ``https://host/x``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unreadable URL)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _details(job: BuildJob) -> str:
    details = [f"build job {job.id}"]
    if job.task_id:
        details.append(f"task {job.task_id}")
    if job.repository:
        source = public_url(job.repository)
        details.append(f"from {source}" + (f" branch {job.branch}" if job.branch else ""))
    if job.updated_at:
        details.append(f"status since {job.updated_at}")
    return ", ".join(details)


def artifact_unavailable(serve: str, version: str, artifact: Artifact | None, job: BuildJob | None) -> ReconcileError:
    """Why version ``version`` of ``serve`` cannot run: ``artifact`` is None or has no image."""
    where = f"artifact {version!r} of serve {serve!r}"
    if job is not None and job.status == JobStatus.PENDING.value:
        return ArtifactPending(
            Reason.ARTIFACT_BUILDING,
            f"{where} is being built ({_details(job)}): the MLServe deploys it when the build succeeds",
        )
    if job is not None and job.status == JobStatus.FAILED.value:
        return InvalidInput(
            Reason.ARTIFACT_BUILD_FAILED,
            f"the build of {where} failed ({_details(job)}): see the builder's logs for the task, "
            "then build the version again, or set spec.artifactVersion to a version that was built",
        )
    found = ""
    if job is not None and job.status == JobStatus.SUCCESSFUL.value:
        found = f"; its {_details(job)} succeeded but recorded no image"
    elif job is not None:
        found = f"; its {_details(job)} has status {job.status[:50]!r}, which is none of PENDING, SUCCESSFUL, FAILED"
    if artifact is None:
        return InvalidInput(
            Reason.UNKNOWN_ARTIFACT,
            f"serve {serve!r} has no artifact version {version!r} (artifacts.version){found}: "
            "build it first, or fix spec.artifactVersion",
        )
    return InvalidInput(
        Reason.ARTIFACT_NOT_BUILT,
        f"{where} has no image yet (artifacts.image_url is empty){found}: wait for its build to succeed",
    )
