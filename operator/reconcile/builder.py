"""The optional artifact builder: PENDING ``artifact_builder_job`` rows built as Kubernetes Jobs.

Off by default (``MLSERVE_BUILDER_ENABLED``). Darwin's ``POST /artifact`` writes a PENDING
job; its own poller then asks Darwin's artifact builder how the task went. With this builder
the operator does the build itself, in the cluster:

1. **Lease** (:func:`mlserve.models.builds.pick`): the oldest PENDING job whose
   ``last_picked_at`` lease lapsed, taken the way Darwin's poller takes it (``FOR UPDATE SKIP
   LOCKED`` on MySQL/MariaDB, a conditional UPDATE of ``last_picked_at`` on both), so two
   operators, or an operator and Darwin's poller, never build one job twice.
2. **Build**: a Kubernetes Job ``mlserve-build-<job id>`` in ``MLSERVE_BUILDER_NAMESPACE``
   (:func:`build_job_manifest`, pure): one container of ``MLSERVE_BUILDER_IMAGE`` with
   ``MLSERVE_BUILDER_ARGS`` and the job's variables (``BUILD_*``), ``backoffLimit`` =
   ``MLSERVE_BUILDER_MAX_RETRIES``, ``activeDeadlineSeconds`` = ``MLSERVE_BUILDER_TIMEOUT``, so
   Kubernetes bounds retries and time. ``task_id`` is set to the Job's name. A Job of that name
   that already exists (a holder whose lease lapsed started it) is adopted, not started again.
3. **Hold**: every quarter of the lease, each held job's lease is renewed and its Job read
   (one GET; no watch: a handful of builds at a time). A lease that could not be renewed
   was taken over: the job is let go (its new holder adopts the Job).
4. **Finish** (:func:`mlserve.models.builds.finish`): Job complete → SUCCESSFUL with an
   ``artifacts`` row whose ``image_url`` is ``MLSERVE_BUILDER_IMAGE_URL``; Job failed (retries
   used up, deadline passed) → FAILED, ``task_id`` saying which Job and why. The sync's
   watermark sees the status change and wakes the MLServes waiting for the version.

Under peering, only the active replica builds. The database being down costs a logged
failure and a later tick; no lease is renewed meanwhile, so another holder may take the job
over and adopt the Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job

from mlserve.models import builds
from mlserve.models.builds import LeasedBuild
from mlserve.operator.settings import BuilderSettings
from mlserve.operator.spec import api
from mlserve.operator.spec.images import image_reference_problem

from .builds import public_url

__all__ = ["Builder", "Outcome", "build_job_manifest", "job_name", "job_outcome", "run_builder_loop"]

log = logging.getLogger("mlserve.operator.builder")

LABEL_BUILD_JOB = f"{api.GROUP}/build-job"
"""The ``artifact_builder_job.id`` a Kubernetes Job builds."""

_TTL_SECONDS = 3600
"""A finished build Job (and its pod's log) is kept an hour, then garbage-collected."""

_TASK_MAX = 1000


def job_name(build_id: int) -> str:
    return f"mlserve-build-{build_id}"


def git_context(repository: str, branch: str | None) -> str:
    """kaniko's Git build context: ``git://host/path#refs/heads/branch``."""
    parts = urlsplit(repository)
    where = f"{parts.netloc}{parts.path}" if parts.netloc else repository
    return f"git://{where}" + (f"#refs/heads/{branch}" if branch else "")


def build_job_manifest(build: LeasedBuild, settings: BuilderSettings) -> dict[str, Any]:
    """The Kubernetes Job that builds ``build`` (pure)."""
    labels = {
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
        api.LABEL_NAME: "mlserve-build",
        LABEL_BUILD_JOB: str(build.id),
    }
    env = [
        {"name": "BUILD_JOB_ID", "value": str(build.id)},
        {"name": "BUILD_SERVE", "value": build.serve},
        {"name": "BUILD_VERSION", "value": build.version},
        {"name": "BUILD_REPOSITORY", "value": build.repository},
        {"name": "BUILD_BRANCH", "value": build.branch or ""},
        {"name": "BUILD_GIT_CONTEXT", "value": git_context(build.repository, build.branch)},
        {"name": "BUILD_IMAGE", "value": settings.image_url_of(build.serve, build.version, build.id)},
    ]
    container: dict[str, Any] = {
        "name": "build",
        "image": settings.image,
        "args": list(settings.args),
        "env": env,
    }
    if settings.secret:
        container["envFrom"] = [{"secretRef": {"name": settings.secret}}]
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(build.id), "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": settings.max_retries,
            "activeDeadlineSeconds": max(1, int(settings.timeout)),
            "ttlSecondsAfterFinished": _TTL_SECONDS,
            "template": {
                "metadata": {"labels": {**dict(settings.pod_labels), **labels}},
                "spec": pod_spec,
            },
        },
    }


@dataclass(frozen=True)
class Outcome:
    """Where a build Job stands: running (``done`` False), succeeded, or failed with a reason."""

    done: bool = False
    succeeded: bool = False
    reason: str = ""


def job_outcome(job: dict[str, Any]) -> Outcome:
    """The Job controller's verdict (its ``Complete`` / ``Failed`` conditions), pure."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return Outcome(done=True, succeeded=True)
        if condition.get("type") == "Failed":
            reason = str(condition.get("reason") or "Failed")
            message = str(condition.get("message") or "").strip()
            return Outcome(done=True, reason=f"{reason}: {message}" if message else reason)
    return Outcome()


def _task(namespace: str, name: str, reason: str = "") -> str:
    task = f"kubernetes job {namespace}/{name}"
    return (f"{task} failed: {reason}" if reason else task)[:_TASK_MAX]


class Builder:
    """The builds one operator holds, advanced one tick at a time (:meth:`tick`)."""

    def __init__(self, settings: BuilderSettings, client: AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.held: dict[int, LeasedBuild] = {}
        self.started: dict[int, float] = {}
        """When this holder took each job (monotonic): a Job that never appears is bounded too."""

    async def tick(self) -> None:
        """Renew and check every held build, then take new ones up to the concurrency."""
        for build_id in list(self.held):
            await self._advance(build_id)
        while len(self.held) < self.settings.concurrency:
            build = await builds.pick(self.settings.lease, exclude=frozenset(self.held))
            if build is None:
                return
            log.info("build job %d (%s %s): lease taken", build.id, build.serve, build.version)
            self.held[build.id] = build
            self.started[build.id] = time.monotonic()
            await self._start(build)

    async def _start(self, build: LeasedBuild) -> None:
        name, namespace = job_name(build.id), self.settings.namespace
        image_url = self.settings.image_url_of(build.serve, build.version, build.id)
        problem = image_reference_problem(image_url)
        if problem:
            await self._finish(
                build, succeeded=False, reason=f"image {image_url!r} {problem} (MLSERVE_BUILDER_IMAGE_URL)"
            )
            return
        renewed = await builds.renew(build, task_id=_task(namespace, name))
        if renewed is None:
            self._let_go(build.id, "lease lost before the build started")
            return
        self.held[build.id] = renewed
        try:
            manifest = build_job_manifest(renewed, self.settings)
            await self.client.create(cast(Job, Job.from_dict(manifest)))
            log.info(
                "build job %d: started Job %s/%s for %s branch %s",
                build.id,
                namespace,
                name,
                public_url(build.repository),
                build.branch,
            )
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            log.info("build job %d: Job %s/%s exists already, adopted", build.id, namespace, name)

    async def _advance(self, build_id: int) -> None:
        build = self.held[build_id]
        renewed = await builds.renew(build)
        if renewed is None:
            self._let_go(build_id, "lease lost (taken over, or the job changed elsewhere)")
            return
        self.held[build_id] = renewed
        try:
            job = await self.client.get(Job, job_name(build_id), namespace=self.settings.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            if time.monotonic() - self.started[build_id] > self.settings.timeout:
                await self._finish(renewed, succeeded=False, reason="its Kubernetes Job was never found")
            else:
                # Deleted by someone, or never created: start it (again).
                await self._start(renewed)
            return
        outcome = job_outcome(job.to_dict())
        if outcome.done:
            await self._finish(renewed, succeeded=outcome.succeeded, reason=outcome.reason)

    async def _finish(self, build: LeasedBuild, *, succeeded: bool, reason: str = "") -> None:
        name, namespace = job_name(build.id), self.settings.namespace
        image_url = self.settings.image_url_of(build.serve, build.version, build.id)
        recorded = await builds.finish(
            build,
            succeeded=succeeded,
            image_url=image_url,
            task_id=_task(namespace, name, "" if succeeded else reason),
        )
        if not recorded:
            self._let_go(build.id, "lease lost before the result was recorded")
            return
        if succeeded:
            log.info("build job %d: SUCCESSFUL, artifact %s %s is %s", build.id, build.serve, build.version, image_url)
        else:
            log.warning("build job %d: FAILED (%s)", build.id, reason)
        self.held.pop(build.id, None)
        self.started.pop(build.id, None)

    def _let_go(self, build_id: int, why: str) -> None:
        log.info("build job %d: let go, %s", build_id, why)
        self.held.pop(build_id, None)
        self.started.pop(build_id, None)


async def run_builder_loop(
    settings: BuilderSettings,
    client: AsyncClient,
    stop: asyncio.Event,
    *,
    active: Callable[[], bool] | None = None,
) -> None:
    """Tick every quarter of the lease until ``stop``; under peering only while active. A
    failed tick (database or API down) is logged and the next one tries again."""
    builder = Builder(settings, client)
    interval = settings.lease / 4
    while not stop.is_set():
        if active is None or active():
            try:
                await builder.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed tick never stops the builder
                log.warning("artifact builder: tick failed: %s: %s", type(exc).__name__, exc)
        elif builder.held:
            builder.held.clear()
            builder.started.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
