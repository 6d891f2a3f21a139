"""Deletion (DESIGN.md data flow 4): end the deployment in the database, then let go.

The children go by garbage collection (their ownerReferences); the finalizer only ends the
pair's deployment (ENDED, ``ended_at``) and removes its ``active_deployments`` row. When the
database does not answer, the caller retries until ``MLSERVE_DELETION_DB_TIMEOUT`` has passed
since the deletion started; then the MLServe is released anyway and the skipped write is
recorded in :mod:`.pending` for the sync loop (and written to its store, so a restart keeps
it): no MLServe can get stuck.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlserve.operator.spec.api import Phase, Reason

from . import deploy
from .identity import Claim, claim_of, holder
from .mlserve import Runtime

__all__ = ["FinalizeResult", "finalize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalizeResult:
    done: bool
    """True: the finalizer may be removed."""
    ended_deployment: int | None = None
    pending: bool = False
    """The database write was skipped and left to the sync loop."""
    retry_after: float | None = None
    message: str = ""


async def finalize(
    body: Mapping[str, Any], rt: Runtime, claims: Sequence[Claim], waited: float, retry: int = 0
) -> FinalizeResult:
    """One attempt at the deletion's database write; ``waited``: seconds since it began."""
    meta = body.get("metadata") or {}
    ref = f"{meta.get('namespace')}/{meta.get('name')}"
    mine = claim_of(body)
    if mine is None:
        return FinalizeResult(True, message="the MLServe names no serve and environment")
    (serve, environment), claim = mine
    first = holder([*(c for c in claims if c.uid != claim.uid), claim])
    if first is not None and first.uid != claim.uid:
        return FinalizeResult(True, message=f"{first.ref} holds the pair: nothing to end")
    status = body.get("status") or {}
    settings = rt.settings
    budget = max(0.5, min(settings.db_timeout, settings.deletion_db_timeout - waited))
    try:
        async with asyncio.timeout(budget):
            if not await deploy.owns_pair(serve, environment, str(meta.get("namespace")), settings.cluster_name):
                return FinalizeResult(True, message="the MLServe was not bound to its pair: nothing to end")
            ended = await deploy.end_deployment(serve, environment)
    except Exception as exc:
        if not (isinstance(exc, TimeoutError) or deploy.is_database_error(exc)):
            raise
        if waited + budget < settings.deletion_db_timeout:
            return FinalizeResult(
                False,
                retry_after=min(settings.backoff(retry), settings.deletion_db_timeout - waited),
                message=f"the database did not answer ({type(exc).__name__}); retrying",
            )
        deployment_id = status.get("deploymentId")
        if status.get("phase") in (Phase.INVALID, Phase.CONFLICT) or deployment_id is None:
            return FinalizeResult(True, message="database unreachable, and no deployment was recorded")
        rt.pending.add(serve, environment, int(deployment_id), ref)
        await rt.pending.flush()  # kept across a restart before the MLServe goes (best effort: never stuck)
        rt.events.post(
            body,
            "Warning",
            Reason.DATABASE_UNAVAILABLE,
            f"deleted without ending deployment {deployment_id} in the database (unreachable for "
            f"{settings.deletion_db_timeout:g}s): it is ended when the database answers",
        )
        return FinalizeResult(True, pending=True, message="database write left to the sync loop")
    rt.pending.discard(serve, environment)
    await rt.pending.flush()
    if ended is not None:
        log.info("%s deleted: ended deployment %s of %s in %s", ref, ended, serve, environment)
        rt.events.post(body, "Normal", Reason.UNDEPLOYED, f"ended deployment {ended} of {serve} in {environment}")
    return FinalizeResult(True, ended_deployment=ended, message="deployment ended")
