"""The database → cluster sync's decisions (docs/sync.md), without a database or a cluster.

Each case is a snapshot of what one pass read: the active rows, the MLServes listed, the
pending undeploys, the ended deployments; :func:`decide` answers with the actions.
"""

from __future__ import annotations

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

ENVIRONMENTS = {"dev": "ml-dev", "prod": "ml-prod"}
UNLISTED: dict[str, list[dict[str, Any]]] = {"unlisted": []}
"""A marker for the cases: no namespace could be listed."""


def row(deployment_id: int = 2, version: str = "v2", *, env: str = "dev", serve: str = "iris") -> ActiveRow:
    return ActiveRow(serve, "api", env, ENVIRONMENTS[env], deployment_id, version)


def mlserve(
    *,
    env: str = "dev",
    name: str | None = None,
    namespace: str | None = None,
    version: str = "v1",
    reflects: int | None = 1,
    labels_only: bool = False,
    deleting: bool = False,
    serve: str = "iris",
) -> dict[str, Any]:
    """An MLServe as the API server lists it. No time in it counts: the sync compares the
    deployment it reflects with the pair's active one."""
    metadata: dict[str, Any] = {
        "name": name or f"{serve}-{env}",
        "namespace": namespace or ENVIRONMENTS[env],
        "generation": 3,
        "creationTimestamp": "2026-01-01T09:00:00Z",
    }
    if reflects is not None:
        metadata["annotations"] = {ANNOTATION_DEPLOYMENT_ID: str(reflects)}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    spec: dict[str, Any] = {"serve": serve, "environment": env, "type": "api", "artifactVersion": version}
    if labels_only:
        metadata["labels"] = {"mlserve.darwin.io/serve": serve, "mlserve.darwin.io/environment": env}
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
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=2, version="v2"))),
        [],
        id="the MLServe reflects the active deployment: nothing",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=2, version="v3"))),
        [("LeaveToMLServe", "ml-dev/iris-dev")],
        id="reflects the active deployment but asks for another version: a pending request",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=None, version="v2"))),
        [("SetVersion", "ml-dev/iris-dev")],
        id="asks for the artifact but reflects nothing: the annotation is set",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=1))),
        [("SetVersion", "ml-dev/iris-dev")],
        id="the database moved past the reflected deployment: set the version, whatever the clocks",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=listed(mlserve(reflects=1, version="v3"))),
        [("SetVersion", "ml-dev/iris-dev")],
        id="the database moved while a request was pending: the database wins",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1)), ended={1}),
        [("Delete", "ml-dev/iris-dev")],
        id="undeployed, and the reflected deployment ended (or is gone): delete",
    ),
    pytest.param(
        Snapshot(mlserves=listed(mlserve(reflects=1, version="v9")), ended={1}),
        [("Delete", "ml-dev/iris-dev")],
        id="undeployed while a request was pending: the undeploy wins",
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
        Snapshot(duplicates={("iris", "dev")}, mlserves=listed(mlserve(reflects=1)), ended={1}),
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
        Snapshot(
            rows=[row(), row(env="prod")],
            mlserves=listed(mlserve(name="x", labels_only=True, reflects=2, version="v2")),
        ),
        [("Create", "ml-prod/iris-prod")],
        id="an MLServe is found by its labels, not its name",
    ),
    pytest.param(
        Snapshot(rows=[row()], mlserves=UNLISTED),
        [("Skip", "iris/dev")],
        id="its namespace could not be listed: skipped for the pass, never created",
    ),
]


@pytest.mark.parametrize(("snapshot", "expected"), CASES)
def test_decide(snapshot: Snapshot, expected: list[tuple[str, str]]) -> None:
    snapshot = Snapshot(
        rows=snapshot.rows,
        duplicates=snapshot.duplicates,
        environments=snapshot.environments or ENVIRONMENTS,
        mlserves={} if snapshot.mlserves is UNLISTED else (snapshot.mlserves or listed()),
        held=snapshot.held,
        ended=snapshot.ended,
    )
    assert summary(decide(snapshot)) == expected


def test_an_mlserve_of_an_environment_not_bound_here_is_ignored() -> None:
    body = mlserve(reflects=1)
    snapshot = Snapshot(environments={"prod": "ml-prod"}, mlserves=listed(body), ended={1})
    assert decide(snapshot) == []
    assert deployments_to_check(snapshot) == set()


def test_the_actions_carry_what_the_writes_need() -> None:
    body = mlserve()
    actions = decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed(body)))
    assert actions == [SetVersion(body, row())]
    gone = mlserve(reflects=1)
    deletes = decide(Snapshot(environments=ENVIRONMENTS, mlserves=listed(gone), ended={1}))
    assert deletes == [Delete(gone, (1,))]
    assert isinstance(decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed()))[0], Create)


def test_only_the_deployments_of_undeployed_pairs_are_looked_up() -> None:
    snapshot = Snapshot(
        rows=[row(env="prod")],
        environments=ENVIRONMENTS,
        mlserves=listed(mlserve(reflects=1), mlserve(env="prod", reflects=5)),
    )
    assert deployments_to_check(snapshot) == {1}, "prod has an active deployment: nothing to look up"


def test_skips_say_why() -> None:
    snapshot = Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed(), held={("iris", "dev")})
    (skip,) = decide(snapshot)
    assert isinstance(skip, Skip) and "pending" in skip.reason
    pending = mlserve(reflects=2, version="v3")
    left = decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves=listed(pending)))
    assert isinstance(left[0], LeaveToMLServe)
    (unlisted,) = decide(Snapshot(rows=[row()], environments=ENVIRONMENTS, mlserves={"ml-prod": []}))
    assert isinstance(unlisted, Skip) and "could not be listed" in unlisted.reason


def test_a_name_taken_by_another_pair_gets_a_hashed_name() -> None:
    """``fraud-model``/``prod`` and ``fraud``/``model-prod`` share ``fraud-model-prod``: the
    second pair's MLServe is created under a stable hashed name instead of failing each tick."""
    ENVIRONMENTS["model-prod"] = "ml-prod"
    try:
        taken = mlserve(serve="fraud-model", env="prod", reflects=4, version="v4")
        other = ActiveRow("fraud", "api", "model-prod", "ml-prod", 5, "v5")
        mine = ActiveRow("fraud-model", "api", "prod", "ml-prod", 4, "v4")
        actions = decide(Snapshot(rows=[other, mine], environments=ENVIRONMENTS, mlserves=listed(taken)))
        (create,) = actions
        assert isinstance(create, Create) and create.row == other
        assert create.name.startswith("fraud-model-prod-") and create.name != "fraud-model-prod"
        again = decide(Snapshot(rows=[other, mine], environments=ENVIRONMENTS, mlserves=listed(taken)))
        assert again == [create], "the same name every pass"
        free = decide(Snapshot(rows=[other], environments=ENVIRONMENTS, mlserves=listed()))
        assert free == [Create(other, "fraud-model-prod")]
        both = decide(Snapshot(rows=[mine, other], environments=ENVIRONMENTS, mlserves=listed()))
        assert both[0] == Create(other, "fraud-model-prod"), "the pairs in order: fraud/model-prod first"
        assert isinstance(both[1], Create) and both[1].row == mine
        assert both[1].name.startswith("fraud-model-prod-"), "one pass, two names"
    finally:
        del ENVIRONMENTS["model-prod"]
