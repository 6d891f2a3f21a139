"""Database rows and settings as untrusted input, checked without I/O: the sync's row checks,
the namespace policy, image references, cron schedules no date matches, the pending list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlserve.models.configs import lenient_json_loads
from mlserve.operator.reconcile.pending import parse_entries
from mlserve.operator.reconcile.sync import SyncState
from mlserve.operator.reconcile.sync_checks import SyncIssue, check_active_row, check_environment
from mlserve.operator.reconcile.sync_plan import ActiveRow, Skip, Snapshot, decide
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.images import image_reference_problem
from mlserve.operator.spec.namespaces import NamespacePolicy
from mlserve.operator.spec.schedule import InvalidSchedule, parse_schedule

ENV = {
    "domain_suffix": ".example.com",
    "cluster_name": "local",
    "security_group": "sg-1",
    "namespace": "serving",
}
SECRET = "hunter2-in-a-json-column"


def _row(**changes: Any) -> dict[str, Any]:
    row = {
        "deployment_id": 7,
        "deployment_status": "ACTIVE",
        "serve_id": 3,
        "serve_name": "iris",
        "serve_type": "api",
        "artifact_id": 5,
        "artifact_version": "v1",
    }
    row.update(changes)
    return row


def test_a_good_environment_and_row_pass() -> None:
    config = check_environment(1, "prod", json.dumps(ENV), "local")
    assert not isinstance(config, SyncIssue) and config is not None and config.namespace == "serving"
    assert check_active_row(_row(), "prod", "serving") == ("api", "v1")
    assert check_active_row(_row(deployment_status="ENDED"), "prod", "serving") is None


def test_another_clusters_environment_is_never_reported() -> None:
    assert check_environment(1, "prod", json.dumps({**ENV, "cluster_name": "other", "namespace": "X"}), "local") is None


@pytest.mark.parametrize(
    ("raw", "column"),
    [
        ('{"cluster_name": "local", "password": "' + SECRET + '"', "env_configs"),
        ("[1, 2]", "env_configs"),
        (json.dumps({**ENV, "namespace": "Bad_NS"}), "env_configs.namespace"),
        (json.dumps({k: v for k, v in ENV.items() if k != "cluster_name"}), "env_configs.cluster_name"),
        (b"\xff\xfe", "env_configs"),
    ],
)
def test_a_bad_env_configs_is_an_issue_naming_the_column_never_its_content(raw: Any, column: str) -> None:
    issue = check_environment(4, "prod", raw, "local")
    assert isinstance(issue, SyncIssue) and issue.reason == Reason.INVALID_ENV_CONFIG
    assert (issue.table, issue.row_id, issue.column) == ("environments", 4, column)
    assert SECRET not in issue.text and "environments row 4" in issue.text


def test_a_refused_namespace_names_the_setting() -> None:
    policy = NamespacePolicy(operator_namespace="mlserve-system")
    for namespace, setting in (("kube-system", "MLSERVE_DENIED_NAMESPACES"), ("mlserve-system", "OPERATOR_NAMESPACE")):
        issue = check_environment(1, "prod", json.dumps({**ENV, "namespace": namespace}), "local", policy.refusal)
        assert isinstance(issue, SyncIssue) and issue.reason == Reason.NAMESPACE_REFUSED
        assert setting in issue.message


@pytest.mark.parametrize(
    ("changes", "table", "column"),
    [
        ({"deployment_status": "PAUSED"}, "deployments", "status"),
        ({"deployment_status": None}, "deployments", "status"),
        ({"serve_type": "batch"}, "serves", "type"),
        ({"serve_name": "Fraud_Score"}, "serves", "name"),
        ({"serve_name": "s" * 51}, "serves", "name"),
        ({"artifact_version": None}, "deployments", "artifact_id"),
        ({"artifact_version": ""}, "artifacts", "version"),
    ],
)
def test_a_bad_active_row_is_an_issue_of_its_pair(changes: dict[str, Any], table: str, column: str) -> None:
    issue = check_active_row(_row(**changes), "prod", "serving")
    assert isinstance(issue, SyncIssue) and issue.reason == Reason.INVALID_DATABASE_ROW
    assert (issue.table, issue.column) == (table, column)
    assert issue.pair == (str(_row(**changes)["serve_name"]), "prod")
    reference = issue.mlserve_reference()
    assert reference is not None and reference["metadata"]["namespace"] == "serving"


def test_a_held_back_pair_is_neither_created_nor_deleted() -> None:
    row = ActiveRow("iris", "api", "prod", "serving", 7, "v1")
    body = {
        "metadata": {
            "name": "iris-prod",
            "namespace": "serving",
            "annotations": {"mlserve.darwin.io/deployment-id": "6"},
            "generation": 1,
        },
        "spec": {"serve": "iris", "environment": "prod", "type": "api", "artifactVersion": "v0"},
    }
    held = {("iris", "prod"): "deployments.status is unknown"}
    for snapshot in (
        Snapshot(rows=[row], environments={"prod": "serving"}, mlserves={"serving": []}, held_back=held),
        # the row left out (unusable) while its MLServe reflects an ended deployment: kept
        Snapshot(environments={"prod": "serving"}, mlserves={"serving": [body]}, ended={6}, held_back=held),
    ):
        assert decide(snapshot) == [Skip(("iris", "prod"), "deployments.status is unknown")]


def test_failing_pairs_back_off_one_by_one() -> None:
    state = SyncState(retry_delay=5, retry_max_delay=40)
    state.backoff(("iris", "prod"), 100, "a write failed")
    assert not state.retry_due(104) and state.retry_due(105)
    assert ("iris", "prod") in state.waiting(104)
    for _ in range(10):
        state.backoff(("iris", "prod"), 100, "a write failed")
    assert state.retries[("iris", "prod")].next_at == 140  # capped


@pytest.mark.parametrize(
    ("env", "refused", "allowed"),
    [
        ({}, ["kube-system", "kube-public", "kube-node-lease"], ["serving"]),
        ({"MLSERVE_OPERATOR_NAMESPACE": "ops"}, ["ops", "kube-system"], ["serving"]),
        ({"MLSERVE_ALLOWED_NAMESPACES": "team-*"}, ["serving", "kube-system"], ["team-a"]),
        ({"MLSERVE_DENIED_NAMESPACES": "none"}, [], ["kube-system"]),
        (
            {"MLSERVE_DENIED_NAMESPACES": "scratch-*,ops", "MLSERVE_OPERATOR_NAMESPACE": "ops"},
            ["scratch-1", "ops"],
            ["kube-system"],
        ),
        # a list given replaces the whole default, the operator's namespace included
        ({"MLSERVE_DENIED_NAMESPACES": "scratch-*", "MLSERVE_OPERATOR_NAMESPACE": "ops"}, ["scratch-1"], ["ops"]),
    ],
)
def test_the_namespace_settings(env: dict[str, str], refused: list[str], allowed: list[str]) -> None:
    settings = OperatorSettings.from_env({"MLSERVE_CLUSTER_NAME": "local", **env})
    for namespace in refused:
        assert settings.namespace_refusal(namespace) is not None, namespace
    for namespace in allowed:
        assert settings.namespace_refusal(namespace) is None, namespace


@pytest.mark.parametrize(
    ("reference", "good"),
    [
        ("registry.example.com/team/model:1.0", True),
        ("nginx", True),
        ("localhost:5000/a/b@sha256:" + "a" * 64, True),
        ("registry.example.com/Team/model:1.0", False),
        ("registry.example.com/model:1.0 ; rm -rf /", False),
        ("https://registry.example.com/model", False),
        ("registry.example.com//model", False),
        ("registry.example.com/model:" + "t" * 200, False),
        ("", False),
    ],
)
def test_image_references(reference: str, good: bool) -> None:
    assert (image_reference_problem(reference) is None) is good


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 11 *"])
def test_a_cron_no_date_matches_is_refused_with_the_reason(expression: str) -> None:
    with pytest.raises(InvalidSchedule, match="never fires"):
        parse_schedule(expression)


def test_a_leap_day_schedule_fires() -> None:
    assert parse_schedule("0 0 29 2 *") == "0 0 29 2 *"


def test_json_columns_decode_leniently() -> None:
    assert lenient_json_loads('{"a": 1}') == {"a": 1}
    assert lenient_json_loads("{not json") == "{not json"


def test_pending_entries_that_cannot_be_read_are_kept_aside() -> None:
    good = {"serve": "iris", "environment": "prod", "deploymentId": 7, "since": "2026-01-01T00:00:00Z"}
    entries, malformed = parse_entries(json.dumps([good, {"serve": "x"}, 5, {**good, "since": "yesterday"}]))
    assert [e.serve for e in entries] == ["iris"] and len(malformed) == 3
    assert parse_entries("{broken") == ([], ["{broken"])
    assert parse_entries('{"a": 1}') == ([], ['{"a": 1}'])


def test_a_number_no_quantity_can_hold_is_invalid_input_not_a_crash() -> None:
    """A config built without its bounds checked (``model_construct``): the renderers' input is
    checked again, or their arithmetic error caught; either way InvalidConfig naming cores,
    which the reconcile reports as InvalidInput, never an OverflowError."""
    from mlserve_testing.render_cases import api_context, spec_for

    from mlserve.models.configs import FastAPIConfig
    from mlserve.models.errors import InvalidConfig
    from mlserve.operator.render import render_children
    from mlserve.operator.render.settings import RenderSettings

    ctx = api_context()
    assert ctx.api_config is not None
    huge = FastAPIConfig.model_construct(**{**ctx.api_config.model_dump(), "cores": 1e308})
    ctx = ctx.model_copy(update={"api_config": huge})
    with pytest.raises(InvalidConfig, match="cores"):
        render_children(ctx, spec_for(ctx), RenderSettings())
