"""Deletion (DESIGN.md data flow 4): end the deployment in the database, then let go.

The children go by garbage collection (their ownerReferences); the finalizer only ends the
deployment the MLServe reflects (its annotation), if that is still the pair's active one
(ENDED, ``ended_at``, its ``active_deployments`` row removed): a deploy the database made
since is never ended. An MLServe that did not hold its pair (another namespace or cluster,
or a younger rival in its namespace) ends nothing. Its phase does not matter. When the
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

from mlserve.operator.spec.api import Reason

from . import deploy
from .identity import Claim, claim_of, holder, reflected_id, rivals
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
    first = holder([*rivals(claims, claim), claim])
    if first is not None and first.uid != claim.uid:
        return FinalizeResult(True, message=f"{first.ref} holds the pair: nothing to end")
    deployment_id = reflected_id(body)
    if deployment_id is None:
        return FinalizeResult(True, message="the MLServe reflects no deployment: nothing to end")
    settings = rt.settings
    budget = max(0.5, min(settings.db_timeout, settings.deletion_db_timeout - waited))
    try:
        async with asyncio.timeout(budget):
            if not await deploy.owns_pair(serve, environment, str(meta.get("namespace")), settings.cluster_name):
                return FinalizeResult(True, message="the MLServe was not bound to its pair: nothing to end")
            ended = await deploy.end_deployment(serve, environment, deployment_id)
    except Exception as exc:
        if not (isinstance(exc, TimeoutError) or deploy.is_database_error(exc)):
            raise
        if waited + budget < settings.deletion_db_timeout:
            return FinalizeResult(
                False,
                retry_after=min(settings.backoff(retry), settings.deletion_db_timeout - waited),
                message=f"the database did not answer ({type(exc).__name__}); retrying",
            )
        if _known_unbound(body):
            return FinalizeResult(True, message="database unreachable, and the MLServe was not bound to its pair")
        rt.pending.add(serve, environment, deployment_id, ref)
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


def _known_unbound(body: Mapping[str, Any]) -> bool:
    """Whether the MLServe's last status says it was outside its environment's namespace or
    cluster (it held nothing, so it has nothing to end even with the database away)."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("reason") in (
            Reason.WRONG_NAMESPACE,
            Reason.FOREIGN_CLUSTER,
        ):
            return True
    return False
