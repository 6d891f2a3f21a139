"""The container environment Darwin's runtime expects (``spec/env.py``), and how it renders."""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing.render_cases import api_context, environment, spec_for, workflow_context

from mlserve.models.configs import parse_environment_variables
from mlserve.models.errors import InvalidConfig
from mlserve.operator.render import RenderSettings, render_children
from mlserve.operator.spec.env import EnvVar, SecretRef, container_environment

SECRET_LOOKING = "s3cr3t-value-never-shown"


def _env(
    database: dict[str, Any] | None = None, spec: dict[str, str] | None = None, *, protected: bool = False
) -> dict[str, EnvVar]:
    variables = container_environment(
        serve="fraud-score",
        environment="prod",
        protected=protected,
        database=parse_environment_variables(database or {}),
        spec=spec,
    )
    assert [v.name for v in variables] == sorted(v.name for v in variables)
    return {v.name: v for v in variables}


def test_env_and_service_name_always_injected_as_darwin_does() -> None:
    env = _env()
    assert env["ENV"].value == "prod"
    assert env["SERVICE_NAME"].value == "fraud-score-prod"
    assert _env(protected=True)["SERVICE_NAME"].value == "fraud-score"


def test_database_names_upper_cased_and_scalars_rendered_as_text() -> None:
    env = _env({"port": 8000, "Debug": True, "ratio": 0.5, "nothing": None, "log_level": "info"})
    assert {name: var.value for name, var in env.items() if name not in ("ENV", "SERVICE_NAME")} == {
        "PORT": "8000",
        "DEBUG": "true",
        "RATIO": "0.5",
        "NOTHING": "",
        "LOG_LEVEL": "info",
    }


def test_database_variable_replaces_injected_one_and_spec_wins_over_all() -> None:
    env = _env({"env": "custom", "service_name": "svc", "level": "db"}, {"LEVEL": "spec", "SERVICE_NAME": "mine"})
    assert (env["ENV"].value, env["SERVICE_NAME"].value, env["LEVEL"].value) == ("custom", "mine", "spec")


def test_names_that_collide_once_upper_cased_are_refused() -> None:
    with pytest.raises(InvalidConfig) as caught:
        _env({"port": "1", "PORT": "2"})
    assert "PORT" in str(caught.value) and "keep one" in str(caught.value)


@pytest.mark.parametrize("name", ["my var", "1st", "a=b", "tab\there", "ünïcode"])
def test_a_name_kubernetes_refuses_names_the_variable_never_the_value(name: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        _env({name: SECRET_LOOKING})
    assert caught.value.field == f"environment_variables.{name}"
    assert "not a name Kubernetes accepts" in caught.value.message
    assert SECRET_LOOKING not in str(caught.value)


def test_secret_reference_becomes_a_secret_key_ref() -> None:
    env = _env({"db_password": "secret://fraud-db/password"}, {"TOKEN": "secret://tokens.v1/api_token"})
    assert env["DB_PASSWORD"].secret == SecretRef(name="fraud-db", key="password")
    assert env["TOKEN"].secret == SecretRef(name="tokens.v1", key="api_token")


@pytest.mark.parametrize(
    "value",
    [
        "secret://",
        "secret://only-a-name",
        "secret:///key",
        "secret://name/",
        "secret://Upper_Case/key",
        "secret://name/key with space",
        "secret://name/a/b",
        "secret://" + "n" * 254 + "/key",
    ],
)
def test_malformed_secret_reference_names_the_variable(value: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        _env({"db_password": value})
    assert caught.value.field == "environment_variables.db_password"
    assert "secret://NAME/KEY" in caught.value.message
    assert value.removeprefix("secret://") not in caught.value.message or value == "secret://"


def test_rendered_deployment_carries_value_from_secret_and_injected_variables() -> None:
    ctx = api_context(env=environment("prod", protected=True), env_vars={"db_password": "secret://fraud-db/password"})
    deployment = render_children(ctx, spec_for(ctx), RenderSettings())[0]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "fraud-db", "key": "password"}}},
        {"name": "ENV", "value": "prod"},
        {"name": "SERVICE_NAME", "value": "fraud-score"},
    ]


def test_workflow_pods_get_the_same_environment() -> None:
    ctx = workflow_context()
    rayjob = render_children(ctx, spec_for(ctx, env={"A": "1"}), RenderSettings())[0]
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        names = [v["name"] for v in template["spec"]["containers"][0]["env"]]
        assert names == ["A", "ENV", "SERVICE_NAME"]
