"""The database reads of the database → cluster sync (``docs/sync.md``).

:func:`read_watermark` is the one query of an idle tick; a full pass reads the bound
environments (:func:`bound_environments`), their active deployments (:func:`active_rows`)
and whether the deployments the MLServes of undeployed pairs reflect have ended
(:func:`ended_deployments`). Nothing here writes, and nothing here talks to the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlserve.models import (
    ActiveDeployment,
    Deployment,
    DeploymentStatus,
    Environment,
)
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.namespaces import watches_namespace

from .identity import Pair
from .sync_checks import SyncIssue, check_active_row, check_environment
from .sync_plan import ActiveRow

__all__ = [
    "BoundEnvironment",
    "Watermark",
    "active_rows",
    "bound_environments",
    "ended_deployments",
    "read_watermark",
]

log = logging.getLogger(__name__)

# --- the watermark: one query per tick ---------------------------------------------------------

_WATERMARK_SQL = (
    "SELECT"
    " (SELECT COUNT(*) FROM active_deployments) AS active_count,"
    " (SELECT MAX(id) FROM active_deployments) AS active_max_id,"
    " (SELECT COALESCE(SUM(deployment_id), 0) FROM active_deployments) AS active_sum,"
    " (SELECT MAX(updated_at) FROM active_deployments) AS active_updated,"
    " (SELECT COUNT(*) FROM deployments WHERE status = 'ACTIVE') AS deployments_active,"
    " (SELECT MAX(ended_at) FROM deployments) AS deployments_ended,"
    " (SELECT COUNT(*) FROM environments) AS environments_count,"
    " (SELECT MAX(updated_at) FROM environments) AS environments_updated,"
    " (SELECT MAX(updated_at) FROM serves) AS serves_updated,"
    " (SELECT COUNT(*) FROM api_serve_configs) AS api_configs_count,"
    " (SELECT MAX(id) FROM api_serve_configs) AS api_configs_max_id,"
    " (SELECT MAX(updated_at) FROM api_serve_configs) AS api_configs_updated,"
    " (SELECT COUNT(*) FROM workflow_serve_configs) AS workflow_configs_count,"
    " (SELECT MAX(id) FROM workflow_serve_configs) AS workflow_configs_max_id,"
    " (SELECT MAX(updated_at) FROM workflow_serve_configs) AS workflow_configs_updated,"
    " (SELECT COUNT(*) FROM artifact_builder_job WHERE status = 'PENDING') AS builds_pending,"
    " (SELECT COALESCE(SUM(id), 0) FROM artifact_builder_job WHERE status = 'PENDING') AS builds_pending_sum,"
    " (SELECT COUNT(*) FROM artifacts WHERE image_url IS NOT NULL AND image_url <> '') AS artifacts_built"
)


@dataclass(frozen=True)
class Watermark:
    """Aggregates that move whenever a deploy, an undeploy, an environment, a serve or an infra
    config (``api_serve_configs``, ``workflow_serve_configs``) changes.

    No clock is needed to see a deploy or an undeploy: a pointer created or deleted changes
    the count, a pointer moved (to a newer deployment, or back to an older one) changes the sum
    of the deployments it points at, and a deployment ended without its pointer changes the
    count of ACTIVE rows; a row written with an older timestamp (another writer's skewed clock,
    a replayed script) is seen as soon as it commits. The times are kept for what has no such
    count: an edit of an environment's or a serve's row, of an infra config (a config added or
    deleted moves its table's count or largest id too), and a full pass runs every
    MLSERVE_FULL_RESYNC_INTERVAL whatever the watermark says.

    Artifact builds move it too, so MLServes waiting for a version wake when its build ends: a
    job that leaves PENDING (SUCCESSFUL or FAILED) or a new PENDING job changes the count or the
    sum of the ids of the PENDING jobs (a new job has a higher id than any before it), and an
    artifact that gets its image changes the count of artifacts with one. Darwin's poller
    rewriting ``last_picked_at`` every few seconds moves none of them.
    """

    active_count: int
    active_max_id: int | None
    active_sum: int
    active_updated: str | None
    deployments_active: int
    deployments_ended: str | None
    environments_updated: str | None
    builds_pending: int = 0
    builds_pending_sum: int = 0
    artifacts_built: int = 0
    environments_count: int = 0
    serves_updated: str | None = None
    api_configs: tuple[int, int | None, str | None] = (0, None, None)
    """Count, largest id and latest ``updated_at`` of ``api_serve_configs``."""
    workflow_configs: tuple[int, int | None, str | None] = (0, None, None)
    """The same of ``workflow_serve_configs``."""


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    # Drivers return datetimes (MySQL) or strings (SQLite): compare their text.
    return None if value is None else str(value)


async def read_watermark() -> Watermark:
    """The watermark, in one SELECT on the models' connection."""
    connection = ActiveDeployment._meta.db
    rows = await connection.execute_query_dict(_WATERMARK_SQL)
    row = rows[0]
    return Watermark(
        active_count=int(row["active_count"] or 0),
        active_max_id=_int(row["active_max_id"]),
        active_sum=int(row["active_sum"] or 0),
        active_updated=_text(row["active_updated"]),
        deployments_active=int(row["deployments_active"] or 0),
        deployments_ended=_text(row["deployments_ended"]),
        environments_updated=_text(row["environments_updated"]),
        environments_count=int(row["environments_count"] or 0),
        serves_updated=_text(row["serves_updated"]),
        api_configs=(
            int(row["api_configs_count"] or 0),
            _int(row["api_configs_max_id"]),
            _text(row["api_configs_updated"]),
        ),
        workflow_configs=(
            int(row["workflow_configs_count"] or 0),
            _int(row["workflow_configs_max_id"]),
            _text(row["workflow_configs_updated"]),
        ),
        builds_pending=int(row["builds_pending"] or 0),
        builds_pending_sum=int(row["builds_pending_sum"] or 0),
        artifacts_built=int(row["artifacts_built"] or 0),
    )


# --- what the database asks for ----------------------------------------------------------------


@dataclass(frozen=True)
class BoundEnvironment:
    name: str
    namespace: str


async def bound_environments(
    cluster_name: str,
    namespaces: Sequence[str] = (),
    unwatched: set[str] | None = None,
    *,
    issues: list[SyncIssue] | None = None,
    refusal: Callable[[str], str | None] = lambda _: None,
) -> dict[int, BoundEnvironment]:
    """The environments of this cluster whose namespace this operator watches.

    An environment in a namespace outside ``namespaces`` (``MLSERVE_NAMESPACES``) is skipped:
    no worker of this operator would reconcile an MLServe there. It is logged once per
    environment (``unwatched`` remembers which, across ticks). An environment whose row cannot
    be used (``env_configs`` that does not parse, a name the CRD refuses, a namespace
    ``refusal`` refuses) is skipped too, and added to ``issues``
    (:func:`.sync_checks.check_environment`): one bad row never stops the others.
    """
    bound: dict[int, BoundEnvironment] = {}
    for raw in await _raw_environments():
        checked = check_environment(int(raw["id"]), raw["name"], raw["env_configs"], cluster_name, refusal)
        if isinstance(checked, SyncIssue):
            if issues is not None:
                issues.append(checked)
            continue
        if checked is None:
            continue  # another cluster's
        config = checked
        name = str(raw["name"])
        if not watches_namespace(namespaces, config.namespace):
            if unwatched is not None and name not in unwatched:
                unwatched.add(name)
                log.info(
                    "environment %s skipped by the database sync: its namespace %s is not among "
                    "the namespaces this operator watches (MLSERVE_NAMESPACES=%s)",
                    name,
                    config.namespace,
                    ",".join(namespaces),
                )
            continue
        bound[int(raw["id"])] = BoundEnvironment(name, config.namespace)
    return bound


async def _raw_environments() -> list[dict[str, Any]]:
    """``environments`` as the columns hold them: no enum or JSON decoded by the models, so one
    malformed row cannot fail the query for every environment."""
    connection = Environment._meta.db
    return list(await connection.execute_query_dict("SELECT id, name, env_configs FROM environments ORDER BY id"))


_ACTIVE_SQL = (
    "SELECT a.environment_id AS environment_id, a.deployment_id AS deployment_id,"
    " d.status AS deployment_status, s.id AS serve_id, s.name AS serve_name, s.type AS serve_type,"
    " d.artifact_id AS artifact_id, ar.version AS artifact_version"
    " FROM active_deployments a"
    " JOIN serves s ON s.id = a.serve_id"
    " JOIN deployments d ON d.id = a.deployment_id"
    " LEFT JOIN artifacts ar ON ar.id = d.artifact_id"
    " WHERE a.environment_id IN ({ids})"
)


async def active_rows(
    bound: Mapping[int, BoundEnvironment], *, issues: list[SyncIssue] | None = None
) -> tuple[list[ActiveRow], set[Pair]]:
    """The active deployments of the bound environments, and the pairs with more than one.

    The columns are read as the database holds them and checked row by row
    (:func:`.sync_checks.check_active_row`): a row the operator cannot use is added to
    ``issues`` and its pair left out of the rows; the other pairs go on.
    """
    if not bound:
        return [], set()
    ids = ",".join(str(int(i)) for i in sorted(bound))  # integers of our own dict: no quoting needed
    raw_rows = await ActiveDeployment._meta.db.execute_query_dict(_ACTIVE_SQL.format(ids=ids))
    by_pair: dict[Pair, list[ActiveRow]] = {}
    for raw in raw_rows:
        environment = bound[int(raw["environment_id"])]
        checked = check_active_row(raw, environment.name, environment.namespace)
        if isinstance(checked, SyncIssue):
            if issues is not None:
                issues.append(checked)
            continue
        if checked is None:
            continue  # ended without its pointer removed: the pair is undeployed
        serve_type, version = checked
        row = ActiveRow(
            serve=str(raw["serve_name"]),
            serve_type=serve_type,
            environment=environment.name,
            namespace=environment.namespace,
            deployment_id=int(raw["deployment_id"]),
            artifact_version=version,
        )
        by_pair.setdefault(row.pair, []).append(row)
    duplicates = {pair for pair, rows in by_pair.items() if len({r.deployment_id for r in rows}) > 1}
    for pair in sorted(duplicates):
        ids_of_pair = sorted({r.deployment_id for r in by_pair[pair]})
        message = (
            f"{len(ids_of_pair)} active deployments (ids {ids_of_pair}); the rule is at most one per serve "
            "and environment: end all but one of them"
        )
        if issues is not None:
            first = by_pair[pair][0]
            issues.append(
                SyncIssue(
                    Reason.DUPLICATE_ACTIVE_DEPLOYMENTS,
                    message,
                    "active_deployments",
                    None,
                    "deployment_id",
                    environment=first.environment,
                    namespace=first.namespace,
                    pair=pair,
                )
            )
        else:
            log.warning("serve %s in %s: %s", pair[0], pair[1], message)
    rows = [rows[0] for pair, rows in by_pair.items() if pair not in duplicates]
    return rows, duplicates


async def ended_deployments(deployment_ids: Iterable[int]) -> set[int]:
    """The ids among ``deployment_ids`` whose pair is undeployed now: the deployment is ENDED
    (or its row is gone) and its pair has no ACTIVE deployment at the time of this read. A
    status the operator does not know is neither.

    An ENDED deployment whose pair has another ACTIVE one was *replaced*, not undeployed: a
    deploy committed while the pass ran, after it read the active rows (a pass that read no
    row for the pair, then listed an MLServe that reflects the pair's first deployment, which a
    second deploy ended before this read). Its MLServe is followed to the new deployment by
    the next pass, never deleted."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return set()
    # The status as the column holds it: one the operator does not know counts as neither
    # (the MLServe is left alone), never as ended.
    rows = await Deployment._meta.db.execute_query_dict(
        "SELECT d.id AS id, d.status AS status, EXISTS ("
        " SELECT 1 FROM active_deployments a JOIN deployments n ON n.id = a.deployment_id"
        " WHERE a.serve_id = d.serve_id AND a.environment_id = d.environment_id AND n.status = 'ACTIVE'"
        f") AS deployed FROM deployments d WHERE d.id IN ({','.join(str(int(i)) for i in ids)})"
    )
    status = {int(row["id"]): (row["status"], bool(row["deployed"])) for row in rows}
    return {i for i in ids if i not in status or (status[i][0] == DeploymentStatus.ENDED.value and not status[i][1])}
