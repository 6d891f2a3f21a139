"""MLServes the API server must reject, each with the fragment of the message a user needs.

``cel`` marks the cases only a CEL rule catches: an offline JSON-schema check accepts them,
so only the cluster test proves them (MLServeSpec, used by the operator and
``mlserve render``, rejects them offline too, except the transitions). ``update`` cases are
transition rules: the first body is created, then replaced by ``body``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


def mlserve(spec: dict[str, Any], name: str = "fraud-score", **top: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": name},
        "spec": spec,
    }
    body.update(top)
    return body


API: dict[str, Any] = {"environment": "prod", "type": "api", "artifactVersion": "1.4.0"}
WORKFLOW: dict[str, Any] = {"environment": "prod", "type": "workflow", "artifactVersion": "2025.01.3"}
GROUP: dict[str, Any] = {"cores": 2, "memory": 4, "minReplicas": 1, "maxReplicas": 2}


@dataclass(frozen=True)
class Invalid:
    id: str
    body: dict[str, Any]
    fragment: str
    """Part of the API server's message."""
    cel: bool = False
    """Caught by a CEL rule only."""
    before: dict[str, Any] | None = None
    """For a transition rule: the object that exists before ``body`` replaces it."""


def _with(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(spec)
    result.update(changes)
    return result


def _without(spec: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != key}


INVALID: tuple[Invalid, ...] = (
    Invalid("missing-spec", {k: v for k, v in mlserve(API).items() if k != "spec"}, "spec: Required value"),
    Invalid("missing-environment", mlserve(_without(API, "environment")), "spec.environment: Required value"),
    Invalid("missing-type", mlserve(_without(API, "type")), "spec.type: Required value"),
    Invalid(
        "missing-artifact-version", mlserve(_without(API, "artifactVersion")), "spec.artifactVersion: Required value"
    ),
    Invalid("unknown-type", mlserve(_with(API, type="batch")), 'supported values: "api", "workflow"'),
    Invalid("uppercase-environment", mlserve(_with(API, environment="Prod")), "spec.environment"),
    Invalid("serve-too-long", mlserve(_with(API, serve="s" * 51)), "spec.serve"),
    Invalid("zero-replicas", mlserve(_with(API, replicas={"min": 0, "max": 2})), "spec.replicas.min"),
    Invalid("cores-as-string", mlserve(_with(API, resources={"cores": "2"})), "spec.resources.cores"),
    Invalid("fractional-memory", mlserve(_with(API, resources={"memory": 1.5})), "spec.resources.memory"),
    Invalid("capacity-type-typo", mlserve(_with(API, nodeCapacityType="spott")), "spec.nodeCapacityType"),
    Invalid(
        "cpu-target-over-100",
        mlserve(_with(API, autoscaling={"cpuUtilization": 120})),
        "spec.autoscaling.cpuUtilization",
    ),
    Invalid("host-with-underscore", mlserve(_with(API, hosts=["fraud_score.example.com"])), "spec.hosts[0]"),
    Invalid("env-value-not-string", mlserve(_with(API, env={"WORKERS": 4})), "spec.env.WORKERS"),
    Invalid("schedule-not-cron", mlserve(_with(WORKFLOW, schedule="every night")), "spec.schedule"),
    Invalid(
        "worker-group-without-memory",
        mlserve(_with(WORKFLOW, workerGroups=[_without(GROUP, "memory")])),
        "spec.workerGroups[0].memory: Required value",
    ),
    Invalid(
        "worker-group-name-uppercase",
        mlserve(_with(WORKFLOW, workerGroups=[{**GROUP, "name": "GPU"}])),
        "spec.workerGroups[0].name",
    ),
    # the same bounds as the database's numbers (mlserve.models.configs)
    Invalid("cores-1e308", mlserve(_with(API, resources={"cores": 1e308})), "spec.resources.cores"),
    Invalid("memory-over-1024", mlserve(_with(API, resources={"memory": 4096})), "spec.resources.memory"),
    Invalid("replicas-over-1000", mlserve(_with(API, replicas={"min": 1, "max": 1001})), "spec.replicas.max"),
    Invalid(
        "worker-group-a-million-pods",
        mlserve(_with(WORKFLOW, workerGroups=[{**GROUP, "maxReplicas": 10**6}])),
        "spec.workerGroups[0].maxReplicas",
    ),
    Invalid("hosts-over-20", mlserve(_with(API, hosts=[f"h{i}.example.com" for i in range(21)])), "spec.hosts"),
    # CEL rules
    Invalid(
        "replicas-min-above-max",
        mlserve(_with(API, replicas={"min": 5, "max": 2})),
        "spec.replicas.min must be less than or equal to spec.replicas.max",
        cel=True,
    ),
    Invalid(
        "workflow-with-replicas",
        mlserve(_with(WORKFLOW, replicas={"min": 1, "max": 1})),
        "apply to API serves only",
        cel=True,
    ),
    Invalid(
        "workflow-with-hosts",
        mlserve(_with(WORKFLOW, hosts=["etl.example.com"])),
        "apply to API serves only",
        cel=True,
    ),
    Invalid(
        "api-with-schedule",
        mlserve(_with(API, schedule="0 3 * * *")),
        "apply to workflow serves only",
        cel=True,
    ),
    Invalid(
        "api-with-worker-groups",
        mlserve(_with(API, workerGroups=[GROUP])),
        "apply to workflow serves only",
        cel=True,
    ),
    Invalid(
        "worker-group-min-above-max",
        mlserve(_with(WORKFLOW, workerGroups=[{**GROUP, "minReplicas": 3}])),
        "minReplicas must be less than or equal to its maxReplicas",
        cel=True,
    ),
    Invalid(
        "worker-group-names-repeat",
        mlserve(_with(WORKFLOW, workerGroups=[{**GROUP, "name": "cpu"}, {**GROUP, "name": "cpu"}])),
        "names must be unique",
        cel=True,
    ),
    Invalid(
        "name-unusable-as-serve",
        mlserve(API, name="fraud.score"),
        "set spec.serve",
        cel=True,
    ),
    # transition rules (CEL, on update)
    Invalid(
        "environment-changed",
        mlserve(_with(API, serve="fraud-score", environment="staging")),
        "spec.environment is immutable",
        cel=True,
        before=mlserve(_with(API, serve="fraud-score")),
    ),
    Invalid(
        "serve-changed",
        mlserve(_with(API, serve="fraud-score-v2")),
        "spec.serve is immutable",
        cel=True,
        before=mlserve(_with(API, serve="fraud-score")),
    ),
    Invalid(
        "serve-removed",
        mlserve(API),
        "spec.serve is immutable",
        cel=True,
        before=mlserve(_with(API, serve="fraud-score")),
    ),
    Invalid(
        "type-changed",
        mlserve(_with(WORKFLOW, serve="fraud-score")),
        "spec.type is immutable",
        cel=True,
        before=mlserve(_with(API, serve="fraud-score")),
    ),
)


@dataclass(frozen=True)
class Refused:
    """An MLServe the API server admits and the operator refuses, with a named condition.

    ``tests/cluster/test_bad_input.py`` applies it next to the rows it seeds: serve ``iris``
    (API; artifacts v1, v2, ``unbuilt`` without an image, ``badimage`` with one that cannot
    be pulled), workflow serve ``etl`` (v1), environments ``prod`` (the test's namespace),
    ``elsewhere`` (another namespace), ``foreign`` (another cluster).
    """

    id: str
    spec: dict[str, Any]
    reason: str
    settings: dict[str, Any] | None = None
    """OperatorSettings fields the case changes."""
    annotations: dict[str, str] | None = None


_IRIS: dict[str, Any] = {"serve": "iris", "environment": "prod", "type": "api", "artifactVersion": "v1"}
_ETL: dict[str, Any] = {"serve": "etl", "environment": "prod", "type": "workflow", "artifactVersion": "v1"}

REFUSED: tuple[Refused, ...] = (
    Refused("unknown-serve", _with(_IRIS, serve="nope"), "UnknownServe"),
    Refused("unknown-environment", _with(_IRIS, environment="nope"), "UnknownEnvironment"),
    Refused("unknown-artifact", _with(_IRIS, artifactVersion="v9"), "UnknownArtifact"),
    Refused("artifact-not-built", _with(_IRIS, artifactVersion="unbuilt"), "ArtifactNotBuilt"),
    Refused("image-cannot-be-pulled", _with(_IRIS, artifactVersion="badimage"), "InvalidImage"),
    Refused("type-not-the-serves", _with(_ETL, type="api"), "ServeTypeMismatch"),
    Refused("environment-of-another-namespace", _with(_IRIS, environment="elsewhere"), "WrongNamespace"),
    Refused("environment-of-another-cluster", _with(_IRIS, environment="foreign"), "ForeignCluster"),
    Refused("namespace-not-allowed", _IRIS, "NamespaceRefused", settings={"allowed": ("team-*",)}),
    Refused("deploy-user-missing", _IRIS, "UnknownUser", settings={"deploy_user": "ghost"}),
    Refused("schedule-never-fires", _with(_ETL, schedule="0 0 31 2 *"), "InvalidSpec"),
    Refused("schedule-april-31st", _with(_ETL, schedule="0 0 31 4 *"), "InvalidSpec"),
    Refused("second-mlserve-of-a-pair", _with(_IRIS, serve="good"), "PairClaimed"),
)
"""Named by the operator, not by admission (the reason of the condition and the Event)."""
