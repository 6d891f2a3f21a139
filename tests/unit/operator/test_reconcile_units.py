"""Pure parts of the reconcile: apply diffing, status computation, identity, settings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from mlserve.models import ServeType
from mlserve.operator.reconcile import kube
from mlserve.operator.reconcile.apply import Owner, stamp
from mlserve.operator.reconcile.deploy import as_unavailable
from mlserve.operator.reconcile.diff import matches, mismatches
from mlserve.operator.reconcile.errors import ClaimConflict, InvalidInput, TemporaryFailure
from mlserve.operator.reconcile.identity import Claim, holder, reflected_id, rivals
from mlserve.operator.reconcile.observe import workload_of as _workload
from mlserve.operator.reconcile.rollback import pending_rollback, rollback_patch
from mlserve.operator.reconcile.status import Observation, Workload, compute_status, status_patch
from mlserve.operator.settings import OperatorSettings, SettingsError, parse_duration
from mlserve.operator.spec import MLServeSpec, api
from mlserve.operator.spec.namespaces import Scope, matches_pattern, scope_of, watches_namespace

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OWNER = Owner("mlserve.darwin.io/v1alpha1", "MLServe", "fraud", "team-a", "uid-1")


def _deployment(replicas: int | None = 2, cpu: str = "500m", image: str = "img:v1") -> dict:
    spec: dict = {
        "selector": {"matchLabels": {"app": "fraud"}},
        "template": {
            "metadata": {"labels": {"app": "fraud"}},
            "spec": {"containers": [{"name": "app", "image": image, "resources": {"limits": {"cpu": cpu}}}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud", "labels": {"a": "b"}},
        "spec": spec,
    }


def _live(desired: dict, **changes: object) -> dict:
    import copy

    live = copy.deepcopy(desired)
    live["metadata"].update(resourceVersion="7", uid="x", annotations={**live["metadata"]["annotations"], "other": "1"})
    live["spec"]["progressDeadlineSeconds"] = 600  # a server default
    live["status"] = {"readyReplicas": 2}
    for path, value in changes.items():
        target = live
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
    return live


def test_a_live_object_with_server_defaults_matches() -> None:
    desired = stamp(_deployment(), OWNER)
    assert matches(desired, _live(desired), api.ANNOTATION_APPLIED_HASH)


def test_quantities_in_canonical_form_match() -> None:
    desired = stamp(_deployment(cpu="0.5"), OWNER)
    live = _live(desired)
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m"
    assert matches(desired, live, api.ANNOTATION_APPLIED_HASH)


@pytest.mark.parametrize(
    "edit",
    [
        {"spec.replicas": 5},  # kubectl scale without an HPA
        {"spec.template.spec.containers.0.image": "evil"},
        {"metadata.labels": {}},
    ],
)
def test_hand_edits_are_seen(edit: dict) -> None:
    desired = stamp(_deployment(), OWNER)
    live = _live(desired, **edit)
    assert not matches(desired, live, api.ANNOTATION_APPLIED_HASH)
    assert mismatches({"spec": desired["spec"], "metadata": {"labels": desired["metadata"]["labels"]}}, live)


def test_a_field_the_rendering_drops_is_a_change() -> None:
    """With an HPA the Deployment loses spec.replicas: the hash sees it, a field diff cannot."""
    before = stamp(_deployment(replicas=2), OWNER)
    after = stamp(_deployment(replicas=None), OWNER)
    live = _live(before)
    assert not mismatches({"spec": after["spec"]}, live)
    assert not matches(after, live, api.ANNOTATION_APPLIED_HASH)


def test_an_hpa_scaled_deployment_without_rendered_replicas_matches() -> None:
    desired = stamp(_deployment(replicas=None), OWNER)
    assert matches(desired, _live(desired, **{"spec.replicas": 4}), api.ANNOTATION_APPLIED_HASH)


def test_stamp_sets_owner_and_namespace() -> None:
    out = stamp(_deployment(), OWNER)
    assert out["metadata"]["namespace"] == "team-a"
    assert out["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "mlserve.darwin.io/v1alpha1",
            "kind": "MLServe",
            "name": "fraud",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert stamp(_deployment(), OWNER) == out  # deterministic


def _ready_obs(**kw: object) -> Observation:
    base = {
        "generation": 3,
        "serve": "fraud",
        "db_state": "in_sync",
        "db_message": "in sync",
        "deployment_id": 7,
        "artifact_version": "v1",
        "image": "img:v1",
        "applied": True,
        "workload": Workload("Deployment", "fraud-prod", desired=2, ready=2, updated=2, rolled_out=True),
    }
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_ready_status() -> None:
    status = compute_status(None, _ready_obs(), NOW)
    assert status["phase"] == "Ready" and status["ready"] == "2/2" and status["observedGeneration"] == 3
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "ArtifactResolved": "True",
        "DatabaseSynced": "True",
        "Synced": "True",
        "Conflict": "False",
    }


def test_an_unchanged_status_is_not_written_and_keeps_transition_times() -> None:
    first = compute_status(None, _ready_obs(), NOW)
    second = compute_status(first, _ready_obs(), NOW + timedelta(minutes=5))
    assert status_patch(first, second) is None
    degraded = compute_status(
        first,
        _ready_obs(workload=Workload("Deployment", "d", desired=2, ready=1, updated=2, rolled_out=True)),
        NOW + timedelta(minutes=6),
    )
    assert degraded["phase"] == "Degraded"
    assert _cond(degraded, "Ready")["lastTransitionTime"] == "2026-01-02T03:10:05Z"
    assert _cond(degraded, "Synced")["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert status_patch(first, degraded) is not None


@pytest.mark.parametrize(
    ("error", "phase", "type_"),
    [
        (InvalidInput("UnknownServe", "no serve"), "Invalid", "ArtifactResolved"),
        (ClaimConflict("held by x", "ns/x"), "Conflict", "Conflict"),
        (TemporaryFailure("ApplyFailed", "refused"), "Ready", "Synced"),
    ],
)
def test_errors_become_conditions(error: Exception, phase: str, type_: str) -> None:
    previous = compute_status(None, _ready_obs(), NOW)
    status = compute_status(previous, Observation(generation=4, serve="fraud", error=error), NOW)  # type: ignore[arg-type]
    assert status["phase"] == phase
    cond = _cond(status, type_)
    assert cond["reason"] == error.reason  # type: ignore[attr-defined]
    assert cond["status"] == ("True" if type_ == "Conflict" else "False")


def test_database_down_keeps_the_generation_unobserved() -> None:
    previous = compute_status(None, _ready_obs(), NOW)
    status = compute_status(previous, Observation(generation=4, error=as_unavailable(TimeoutError())), NOW)
    assert status["observedGeneration"] == 3
    assert _cond(status, "DatabaseSynced")["reason"] == "DatabaseUnavailable"
    assert status["phase"] == "Ready"  # the children still run
    assert status["deploymentId"] == 7


def test_a_paused_mlserve_is_paused_and_not_synced() -> None:
    status = compute_status(None, _ready_obs(paused=True, applied=False), NOW)
    assert status["phase"] == "Paused"
    synced = _cond(status, "Synced")
    assert (synced["status"], synced["reason"]) == ("False", "Paused")
    assert _cond(status, "Ready")["status"] == "True"  # the pods still serve


def test_a_superseded_request_is_said_in_the_ready_message() -> None:
    obs = _ready_obs(db_state="superseded", db_message="superseded by deployment 8")
    status = compute_status(None, obs, NOW)
    assert status["phase"] == "Ready"
    assert status["message"] == "2/2 pods ready; superseded by deployment 8" == _cond(status, "Ready")["message"]
    synced = _cond(status, "DatabaseSynced")
    assert (synced["status"], synced["reason"]) == ("True", "Superseded"), "in step with the database that won"


def test_undeployed_in_the_database_drops_what_it_no_longer_knows() -> None:
    first = compute_status(None, _ready_obs(hosts=("fraud.example",), previous_deployment_id=6), NOW)
    assert first["hosts"] == ["fraud.example"] and first["previousDeploymentId"] == 6
    obs = _ready_obs(db_state="undeployed", db_message="undeployed", deployment_id=None, hosts=(), applied=False)
    status = compute_status(first, obs, NOW)
    assert "hosts" not in status and "deploymentId" not in status and "previousDeploymentId" not in status
    assert _cond(status, "DatabaseSynced")["reason"] == "UndeployedInDatabase"
    assert _cond(status, "Synced")["reason"] == "Applied"  # kept from the last apply


def test_a_rayjob_child_reports_its_run() -> None:
    obs = _ready_obs(workload=Workload("RayJob", "etl-dev-1", job_status="FAILED"))
    status = compute_status(None, obs, NOW)
    assert (status["phase"], status["activeRayJob"], status["lastRunStatus"]) == ("Failed", "etl-dev-1", "FAILED")
    assert "replicas" not in status and _cond(status, "Ready")["reason"] == "JobFailed"


def test_holder_is_the_oldest_claim() -> None:
    a = Claim("2026-01-01T00:00:00Z", "ns", "b", "1")
    b = Claim("2026-01-01T00:00:00Z", "ns", "a", "2")
    c = Claim("2025-12-31T00:00:00Z", "ns", "z", "3")
    assert holder([a, b]) == b
    assert holder([a, b, c]) == c


def test_an_mlserve_reflects_the_deployment_of_its_annotation_only() -> None:
    annotated = {"metadata": {"annotations": {api.ANNOTATION_DEPLOYMENT_ID: "7"}}, "status": {"deploymentId": 9}}
    assert reflected_id(annotated) == 7, "status.deploymentId is a report, not an input"
    assert reflected_id({"status": {"deploymentId": 9}}) is None
    assert reflected_id({"metadata": {"annotations": {api.ANNOTATION_DEPLOYMENT_ID: "x"}}}) is None


def test_rivals_in_other_namespaces_never_count() -> None:
    mine = Claim("2026-01-01T00:00:05Z", "ml-prod", "iris-prod", "u-mine")
    squatter = Claim("2026-01-01T00:00:00Z", "scratch", "iris-prod", "u-old")
    younger = Claim("2026-01-01T00:00:09Z", "ml-prod", "iris-copy", "u-young")
    older = Claim("2026-01-01T00:00:01Z", "ml-prod", "iris-first", "u-first")
    assert holder([*rivals([squatter, younger, mine], mine), mine]) == mine
    assert holder([*rivals([squatter, older, mine], mine), mine]) == older


def test_rollback_token_is_handled_once() -> None:
    body = {"metadata": {"annotations": {"mlserve.darwin.io/rollback": "t1"}}}
    assert pending_rollback(body) == "t1"
    body["metadata"]["annotations"].update(rollback_patch("t1", "v1")["metadata"]["annotations"])
    assert pending_rollback(body) is None
    assert rollback_patch("t2", "v1")["spec"] == {"artifactVersion": "v1"}


def test_settings_are_validated_with_the_variable_named() -> None:
    env = {"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DB_URL": "sqlite://:memory:"}
    settings = OperatorSettings.from_env({**env, "MLSERVE_NAMESPACES": "a, b", "MLSERVE_SYNC_INTERVAL": "1m"})
    assert settings.namespaces == ("a", "b") and not settings.clusterwide and settings.sync_interval == 60
    with pytest.raises(SettingsError, match="MLSERVE_CLUSTER_NAME"):
        OperatorSettings.from_env({"MLSERVE_DB_URL": "sqlite://:memory:"})
    for name, value in (
        ("MLSERVE_LOG_FORMAT", "xml"),
        ("MLSERVE_NAMESPACES", "Bad_NS"),
        ("MLSERVE_DRIFT_CHECK_INTERVAL", "soon"),
        ("MLSERVE_LIVENESS_ENDPOINT", "nope"),
    ):
        with pytest.raises(SettingsError, match=name):
            OperatorSettings.from_env({**env, name: value})
    assert parse_duration("X", "500ms") == 0.5
    assert OperatorSettings.from_env({**env, "MLSERVE_LIVENESS_ENDPOINT": "off"}).liveness_endpoint is None


def test_schedule_settings_are_composed_into_the_operator_settings() -> None:
    from mlserve.operator.spec.schedule import ScheduleSettings

    env = {"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DB_URL": "sqlite://:memory:"}
    assert OperatorSettings.from_env(env).schedule == ScheduleSettings()
    read = OperatorSettings.from_env(
        {**env, "MLSERVE_SCHEDULE_HISTORY_LIMIT": "5", "MLSERVE_SCHEDULE_STARTING_DEADLINE": "none"}
    )
    assert read.schedule == ScheduleSettings(history_limit=5, starting_deadline=None)
    with pytest.raises(SettingsError, match="MLSERVE_SCHEDULE_STARTING_DEADLINE.*duration"):
        OperatorSettings.from_env({**env, "MLSERVE_SCHEDULE_STARTING_DEADLINE": "soon"})


def test_a_scheduled_workflow_before_its_first_run_is_scheduled() -> None:
    obs = _ready_obs(
        workload=None,
        schedule_status={"schedule": "0 2 * * *", "nextScheduledTime": "2026-01-03T02:00:00Z"},
    )
    status = compute_status(None, obs, NOW)
    ready = _cond(status, "Ready")
    assert status["phase"] == "Scheduled"
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert "2026-01-03T02:00:00Z" in ready["message"] == status["message"]
    assert status["nextScheduledTime"] == "2026-01-03T02:00:00Z"


def test_a_workflow_without_a_schedule_or_child_is_still_deploying() -> None:
    status = compute_status(None, _ready_obs(workload=None), NOW)
    assert status["phase"] == "Deploying" and _cond(status, "Ready")["reason"] == "ChildMissing"


def test_a_raycronjob_child_is_scheduled_with_its_next_run() -> None:
    from mlserve.operator.spec.schedule import cron_job_status

    cron_job = {"status": {"lastScheduleTime": "2026-01-02T02:00:00Z"}}
    schedule_status = cron_job_status("0 2 * * *", cron_job, NOW, "Etc/UTC")
    assert schedule_status == {
        "schedule": "0 2 * * *",
        "nextScheduledTime": "2026-01-03T02:00:00Z",
        "lastScheduledTime": "2026-01-02T02:00:00Z",
    }
    # Read in the RayCronJob's time zone: 02:00 in Berlin (winter) is 01:00 UTC.
    assert cron_job_status("0 2 * * *", None, NOW, "Europe/Berlin")["nextScheduledTime"] == "2026-01-03T01:00:00Z"
    obs = _ready_obs(workload=Workload("RayCronJob", "etl-dev"), schedule_status=schedule_status)
    status = compute_status(None, obs, NOW)
    ready = _cond(status, "Ready")
    assert status["phase"] == "Scheduled"
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert "RayCronJob etl-dev" in ready["message"] and "2026-01-03T02:00:00Z" in ready["message"]
    assert "replicas" not in status and "ready" not in status


def test_a_new_deployment_under_an_hpa_is_not_ready_below_the_hpa_minimum() -> None:
    spec = MLServeSpec.parse({"serve": "fraud", "environment": "prod", "type": "api", "artifactVersion": "1"})
    name = "fraud-prod"
    # The API server defaulted spec.replicas to 1 before the HPA (min 2) scaled it.
    deployment = {
        "metadata": {"name": name, "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1},
    }
    hpa = {"metadata": {"name": name}, "spec": {"minReplicas": 2, "maxReplicas": 4}}
    alone = _workload(spec, {("Deployment", name): deployment})
    under_hpa = _workload(spec, {("Deployment", name): deployment, ("HorizontalPodAutoscaler", name): hpa})
    assert alone is not None and alone.desired == 1
    assert under_hpa is not None and under_hpa.desired == 2


@pytest.mark.parametrize("child", api.CHILD_KINDS, ids=lambda child: child.kind)
def test_every_child_kind_of_the_registry_has_its_resource_class(child: api.ChildKind) -> None:
    resource = kube.resource_class(child)
    assert kube.api_version_kind(resource) == (child.api_version, child.kind)
    assert kube.resource_for({"apiVersion": child.api_version, "kind": child.kind}) is resource
    assert resource._api_info.plural == child.plural
    assert (resource in kube.API_KINDS) is (child.serve_type is ServeType.API)
    assert (resource in kube.WORKFLOW_KINDS) is (child.serve_type is ServeType.WORKFLOW)


def test_reasons_are_distinct_camel_case_words() -> None:
    values = [reason.value for reason in api.Reason]
    assert len(values) == len(set(values)) == len(api.Reason.__members__)
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", value) for value in values)


def test_the_status_stores_reasons_phases_and_types_as_their_plain_strings() -> None:
    status = compute_status(None, Observation(generation=1, error=InvalidInput(api.Reason.UNKNOWN_SERVE, "no")), NOW)
    text = json.dumps(status)
    assert '"phase": "Invalid"' in text and '"reason": "UnknownServe"' in text and '"type": "Ready"' in text
    assert json.loads(text) == status


NAMESPACE_PATTERNS = (
    "team-a",
    "team-*",
    "!kube-*",
    "team-?",
    "team-*, !team-b",
    "!*-pr-*, *pr-1",
    "a*, !*-x, *-x-y",
    "",
)
NAMESPACES = ("team-a", "team-b", "team-cd", "teams", "kube-system", "default", "app-pr-1", "app-pr-2", "a-x", "a-x-y")


@pytest.mark.parametrize("pattern", NAMESPACE_PATTERNS)
def test_a_namespace_pattern_selects_what_kopf_selects(pattern: str) -> None:
    from kopf._cogs.structs.references import NamespaceName, match_namespace

    for namespace in NAMESPACES:
        kopf_says = match_namespace(NamespaceName(namespace), pattern)
        assert matches_pattern(namespace, pattern) is kopf_says, (pattern, namespace)


def test_the_watched_namespaces_and_the_scope() -> None:
    assert watches_namespace((), "anything") and scope_of(()) is Scope.CLUSTER
    assert watches_namespace(("team-a", "team-b"), "team-b") and not watches_namespace(("team-a",), "team-b")
    assert scope_of(("team-a", "team-b")) is Scope.NAMESPACES and not Scope.NAMESPACES.cluster_role
    assert scope_of(("team-a", "!kube-*")) is Scope.PATTERNS and Scope.PATTERNS.cluster_role


def test_database_timeout_pool_size_and_the_sync_loop_s_bounds() -> None:
    env = {"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DB_URL": "mysql://u:p@db:3306/darwin_ml_serve"}
    default = OperatorSettings.from_env(env)
    assert default.sync_interval == 1.0, "a database deploy reaches the cluster within about a second"
    assert default.database is not None and default.database.statement_timeout == default.db_timeout == 10.0
    credentials = default.database.connections()["default"]["credentials"]
    assert credentials["maxsize"] == 5 and credentials["statement_timeout"] == 10.0
    read = OperatorSettings.from_env(
        {
            **env,
            "MLSERVE_DB_POOL_SIZE": "12",
            "MLSERVE_DB_TIMEOUT": "3s",
            "MLSERVE_SYNC_TICK_TIMEOUT": "1m",
            "MLSERVE_SYNC_STALL_TIMEOUT": "2m",
        }
    )
    assert read.database is not None and read.database.pool_size == 12 and read.database.statement_timeout == 3
    assert (read.sync_tick_timeout, read.sync_stall_timeout) == (60, 120)
    for name, value, says in (
        ("MLSERVE_DB_POOL_SIZE", "0", "between 1"),
        ("MLSERVE_DB_POOL_SIZE", "many", "whole number"),
        ("MLSERVE_SYNC_STALL_TIMEOUT", "1s", "twice MLSERVE_SYNC_INTERVAL"),
    ):
        with pytest.raises(SettingsError, match=f"{name}.*{says}"):
            OperatorSettings.from_env({**env, name: value})
