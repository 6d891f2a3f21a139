"""The artifact builder's pure parts: its settings, the Job it renders, the Job's verdict."""

from __future__ import annotations

import pytest

from mlserve.models.builds import LeasedBuild
from mlserve.models.errors import SettingsError
from mlserve.operator.reconcile.builder import build_job_manifest, git_context, job_outcome
from mlserve.operator.settings import BuilderSettings, OperatorSettings

BASE = {"MLSERVE_CLUSTER_NAME": "local"}
ON = {**BASE, "MLSERVE_BUILDER_ENABLED": "true", "MLSERVE_BUILDER_IMAGE_URL": "r.example.com/s:{serve}_{version}"}


def build(**changes: object) -> LeasedBuild:
    values: dict[str, object] = {
        "id": 7,
        "serve_id": 1,
        "serve": "fraud",
        "version": "v2",
        "repository": "https://git.example.com/ml/fraud.git",
        "branch": "main",
        "created_by_id": 1,
        "task_id": None,
        "token": "2026-01-01 00:00:00.000000",
    }
    values.update(changes)
    return LeasedBuild(**values)  # type: ignore[arg-type]


def test_off_by_default_and_nothing_required() -> None:
    settings = OperatorSettings.from_env(BASE).builder
    assert settings == BuilderSettings()
    assert not settings.enabled


def test_on_takes_the_operator_namespace_and_its_values() -> None:
    env = {
        **ON,
        "MLSERVE_OPERATOR_NAMESPACE": "mlserve-system",
        "MLSERVE_BUILDER_ARGS": '["--destination=$(BUILD_IMAGE)"]',
        "MLSERVE_BUILDER_TIMEOUT": "5m",
        "MLSERVE_BUILDER_MAX_RETRIES": "0",
        "MLSERVE_BUILDER_POD_LABELS": '{"team": "ml"}',
    }
    settings = OperatorSettings.from_env(env).builder
    assert settings.enabled and settings.namespace == "mlserve-system"
    assert settings.args == ("--destination=$(BUILD_IMAGE)",)
    assert (settings.timeout, settings.max_retries, settings.lease) == (300.0, 0, 10.0)
    assert settings.pod_labels == (("team", "ml"),)
    assert settings.image_url_of("fraud", "v2", 7) == "r.example.com/s:fraud_v2"


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        (
            {**BASE, "MLSERVE_BUILDER_ENABLED": "true", "MLSERVE_BUILDER_NAMESPACE": "b"},
            "MLSERVE_BUILDER_IMAGE_URL",
            "required",
        ),
        (ON, "MLSERVE_BUILDER_NAMESPACE", "required"),
        ({**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_ARGS": "--x"}, "MLSERVE_BUILDER_ARGS", "JSON list"),
        (
            {**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_IMAGE_URL": "r/{tag}"},
            "MLSERVE_BUILDER_IMAGE_URL",
            "{serve}",
        ),
        (
            {**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_IMAGE_URL": "R/X:{version}"},
            "MLSERVE_BUILDER_IMAGE_URL",
            "image",
        ),
        (
            {**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_LEASE": "1s"},
            "MLSERVE_BUILDER_LEASE",
            "at least 2s",
        ),
        (
            {**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_MAX_RETRIES": "99"},
            "MLSERVE_BUILDER_MAX_RETRIES",
            "between",
        ),
        (
            {**ON, "MLSERVE_BUILDER_NAMESPACE": "b", "MLSERVE_BUILDER_CONCURRENCY": "0"},
            "MLSERVE_BUILDER_CONCURRENCY",
            "between",
        ),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env(env)
    assert caught.value.variable == variable
    assert says in str(caught.value)


def test_the_job_bounds_retries_and_time_and_passes_the_build_as_variables() -> None:
    settings = BuilderSettings(
        enabled=True,
        image_url="r.example.com/s:{serve}_{version}",
        namespace="builds",
        timeout=600,
        max_retries=1,
        secret="registry",
        service_account="pusher",
        pod_labels=(("team", "ml"),),
    )
    job = build_job_manifest(build(), settings)
    assert job["metadata"] == {
        "name": "mlserve-build-7",
        "namespace": "builds",
        "labels": {
            "app.kubernetes.io/managed-by": "mlserve-operator",
            "app.kubernetes.io/name": "mlserve-build",
            "mlserve.darwin.io/build-job": "7",
        },
    }
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (1, 600)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "pusher"
    assert spec["template"]["metadata"]["labels"]["team"] == "ml"
    (container,) = pod["containers"]
    assert container["args"] == ["--context=$(BUILD_GIT_CONTEXT)", "--destination=$(BUILD_IMAGE)"]
    assert container["envFrom"] == [{"secretRef": {"name": "registry"}}]
    env = {v["name"]: v["value"] for v in container["env"]}
    assert env == {
        "BUILD_JOB_ID": "7",
        "BUILD_SERVE": "fraud",
        "BUILD_VERSION": "v2",
        "BUILD_REPOSITORY": "https://git.example.com/ml/fraud.git",
        "BUILD_BRANCH": "main",
        "BUILD_GIT_CONTEXT": "git://git.example.com/ml/fraud.git#refs/heads/main",
        "BUILD_IMAGE": "r.example.com/s:fraud_v2",
    }


def test_git_context_keeps_a_credentialed_host_and_leaves_the_branch_out_when_none() -> None:
    assert git_context("https://github.com/acme/model", None) == "git://github.com/acme/model"
    assert git_context("github.com/acme/model", "dev") == "git://github.com/acme/model#refs/heads/dev"


@pytest.mark.parametrize(
    ("status", "done", "succeeded", "reason"),
    [
        ({}, False, False, ""),
        ({"active": 1}, False, False, ""),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, True, True, ""),
        (
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long"}]},
            True,
            False,
            "DeadlineExceeded: too long",
        ),
        ({"conditions": [{"type": "Failed", "status": "False"}]}, False, False, ""),
    ],
)
def test_job_outcome_reads_the_job_controllers_verdict(
    status: dict[str, object], done: bool, succeeded: bool, reason: str
) -> None:
    outcome = job_outcome({"status": status})
    assert (outcome.done, outcome.succeeded, outcome.reason) == (done, succeeded, reason)
