"""The database → cluster sync's decisions (docs/sync.md), without a database or a cluster.

Each case is a snapshot of what one pass read: the active rows, the MLServes listed, the
pending undeploys, the ended deployments; :func:`decide` answers with the actions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlserve.operator.reconcile.sync_plan import (
    Action,
    ActiveRow,
    Create,
    Delete,
    LeaveToMLServe,
    SetVersion,
    Skip,
    Snapshot,
    decide,
    deployments_to_check,
)
from mlserve.operator.spec.api import ANNOTATION_DEPLOYMENT_ID

SYNC = "mlserve-operator-sync"
T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
ENVIRONMENTS = {"dev": "ml-dev", "prod": "ml-prod"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(deployment_id: int = 2, version: str = "v2", *, changed: float = 0, env: str = "dev") -> ActiveRow:
    return ActiveRow("iris", "api", env, ENVIRONMENTS[env], deployment_id, version, at(changed))


def mlserve(
    *,
    env: str = "dev",
    name: str | None = None,
    namespace: str | None = None,
    version: str = "v1",
    reflects: int | None = 1,
    spec_written: float = -60,
    manager: str = "kubectl-client-side-apply",
    labels_only: bool = False,
    deleting: bool = False,
) -> dict[str, Any]:
    """An MLServe as the API server lists it: its spec last written ``spec_written`` seconds
    after T0 by ``manager``."""
    metadata: dict[str, Any] = {
        "name": name or f"iris-{env}",
        "namespace": namespace or ENVIRONMENTS[env],
        "generation": 3,
        "creationTimestamp": stamp(-3600),
        "managedFields": [
            {"manager": manager, "operation": "Update", "time": stamp(spec_written), "fieldsV1": {"f:spec": {}}}
        ],
    }
    if reflects is not None:
        metadata["annotations"] = {ANNOTATION_DEPLOYMENT_ID: str(reflects)}
    if deleting:
        metadata["deletionTimestamp"] = stamp(0)
    spec: dict[str, Any] = {"serve": "iris", "environment": env, "type": "api", "artifactVersion": version}
    if labels_only:
        metadata["labels"] = {"mlserve.darwin.io/serve": "iris", "mlserve.darwin.io/environment": env}
        spec = {"type": "api", "artifactVersion": version}
    return {"metadata": metadata, "spec": spec}


def listed(*bodies: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_namespace: dict[str, list[dict[str, Any]]] = {namespace: [] for namespace in ENVIRONMENTS.values()}
    for body in bodies:
        by_namespace.setdefault(body["metadata"]["namespace"], []).append(body)
    return by_namespace


def summary(actions: list[Action]) -> list[tuple[str, str]]:
    return [(type(action).__name__, action.ref) for action in actions]


CASES: list[Any] = [
    pytest.param(Snapshot(rows=[row()]), [("Create", "ml-dev/iris-dev")], id="a new pair is created"),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=2))),
        [],
        id="the MLServe already reflects the deployment: nothing",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=None, version="v2"))),
        [],
        id="the MLServe already asks for the artifact: nothing, its reconcile reports the id",
    ),
    pytest.param(
        Snapshot(rows=[row(changed=0)], mlserves=listed(mlserve(spec_written=-60))),
        [("SetVersion", "ml-dev/iris-dev")],
        id="the database deployed after the spec changed: set the version",
    ),
    pytest.param(
        Snapshot(rows=[row(changed=0)], mlserves=listed(mlserve(spec_written=60))),
        [("LeaveToMLServe", "ml-dev/iris-dev")],
        id="the MLServe changed after the database: left to its reconcile",
    ),
    pytest.param(
        Snapshot(rows=[row(changed=0.5)], mlserves=listed(mlserve(spec_written=0))),
        [("LeaveToMLServe", "ml-dev/iris-dev")],
        id="a tie within the second goes to the MLServe",
    ),
    pytest.param(
        Snapshot(rows=[row(changed=0)], mlserves=listed(mlserve(spec_written=60, manager=SYNC))),
        [("SetVersion", "ml-dev/iris-dev")],
        id="the sync's own writes are not changes of the MLServe",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1, spec_written=-60)), ended={1: at(0)}),
        [("Delete", "ml-dev/iris-dev")],
        id="undeployed, and the reflected deployment ended: delete",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1, spec_written=-60)), ended={1: None}),
        [("Delete", "ml-dev/iris-dev")],
        id="undeployed, and the reflected deployment is gone: delete",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1, spec_written=60)), ended={1: at(0)}),
        [("LeaveToMLServe", "ml-dev/iris-dev")],
        id="re-applied after the undeploy: left to its reconcile",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=None))),
        [("Skip", "iris/dev")],
        id="undeployed, but the MLServe reflects no deployment yet: kept",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1))),
        [("Skip", "iris/dev")],
        id="undeployed, but the reflected deployment is not ended: kept",
    ),
    pytest.param(
        Snapshot(duplicates={("iris", "dev")}, mlserves=listed(mlserve(reflects=1)), ended={1: at(0)}),
        [("Skip", "iris/dev")],
        id="several active deployments: the pair is left alone",
    ),
    pytest.param(
        Snapshot(rows=[row()], held={("iris", "dev")}),
        [("Skip", "iris/dev")],
        id="held by a pending undeploy: not re-created",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(deleting=True))),
        [("Skip", "iris/dev")],
        id="the MLServe is being deleted: not re-created",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(), mlserve(name="other"))),
        [("Skip", "iris/dev")],
        id="two MLServes claim the pair: no side is picked",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(namespace="ml-prod", reflects=2))),
        [("Create", "ml-dev/iris-dev")],
        id="an MLServe in the wrong namespace is not the pair's",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(namespace="ml-other", reflects=1))),
        [],
        id="an MLServe of another environment's namespace is ignored",
    ),
    pytest.param(
        Snapshot(rows=[row(), row(env="prod")], mlserves=listed(mlserve(name="x", labels_only=True, reflects=2))),
        [("Create", "ml-prod/iris-prod")],
        id="an MLServe is found by its labels, not its name",
    ),
]


@pytest.mark.parametrize(("snapshot", "expected"), CASES)
def test_decide(snapshot: Snapshot, expected: list[tuple[str, str]]) -> None:
    snapshot = Snapshot(
        rows=snapshot.rows,
        duplicates=snapshot.duplicates,
        environments=snapshot.environments or ENVIRONMENTS,
        mlserves=snapshot.mlserves,
        held=snapshot.held,
        ended=snapshot.ended,
    )
    assert summary(decide(snapshot, SYNC)) == expected


def test_an_mlserve_of_an_environment_not_bound_here_is_ignored() -> None:
    body = mlserve(reflects=1)
    snapshot = Snapshot(environments={"prod": "ml-prod"}, mlserves=listed(body), ended={1: at(0)})
    assert decide(snapshot, SYNC) == []
    assert deployments_to_check(snapshot) == set()


def test_the_actions_carry_what_the_writes_need() -> None:
    body = mlserve(spec_written=-60)
    actions = decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed(body)), SYNC)
    assert actions == [SetVersion(body, row())]
    gone = mlserve(reflects=1)
    deletes = decide(Snapshot(environments=ENVIRONMENTS, mlserves=listed(gone), ended={1: at(0)}), SYNC)
    assert deletes == [Delete(gone, (1,))]
    assert isinstance(decide(Snapshot(rows=[row()], environments=ENVIRONMENTS), SYNC)[0], Create)


def test_only_the_deployments_of_undeployed_pairs_are_looked_up() -> None:
    snapshot = Snapshot(
        rows=[row(env="prod")],
        environments=ENVIRONMENTS,
        mlserves=listed(mlserve(reflects=1), mlserve(env="prod", reflects=5)),
    )
    assert deployments_to_check(snapshot) == {1}, "prod has an active deployment: nothing to look up"


def test_skips_say_why() -> None:
    snapshot = Snapshot(rows=[row()], environments=ENVIRONMENTS, held={("iris", "dev")})
    (skip,) = decide(snapshot, SYNC)
    assert isinstance(skip, Skip) and "pending" in skip.reason
    left = decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed(mlserve(spec_written=60))), SYNC)
    assert isinstance(left[0], LeaveToMLServe)
