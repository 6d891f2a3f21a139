"""Darwin's DCM bodies parsed without I/O: the fixtures Darwin's client sends pass, every broken
field is refused naming it, and MLSERVE_DCM_LISTEN is read as HOST:PORT or off."""

from __future__ import annotations

from typing import Any

import pytest
from mlserve_testing import dcm

from mlserve.models.errors import SettingsError
from mlserve.operator.dcm.bodies import (
    FASTAPI_SERVE,
    BadRequest,
    parse_build,
    parse_json,
    parse_release,
    parse_start,
    parse_values,
)
from mlserve.operator.settings import OperatorSettings

NAMES = {"env": "prod", "serve": "fraud", "version": "1.2.0", "namespace": "serving", "cluster": "eks", "host": "h"}
PARSERS = {
    "deploy_build": parse_build,
    "deploy_start": parse_start,
    "infra_values": parse_values,
    "status": parse_release,
    "stop": parse_release,
}


@pytest.mark.parametrize("fixture", sorted(PARSERS))
def test_darwins_own_bodies_parse(fixture: str) -> None:
    body = dcm.call(fixture, **NAMES)["body"]
    parsed = PARSERS[fixture](body)
    for field in ("artifact_id", "resource_id", "kube_cluster", "kube_namespace"):
        if field in body:
            assert getattr(parsed, field) == body[field]


def test_the_build_keeps_the_values_and_names_the_artifact() -> None:
    parsed = parse_build(dcm.call("deploy_build", **NAMES)["body"])
    assert parsed.darwin_resource == FASTAPI_SERVE
    assert parsed.artifact_id == "prod-fraud-1.2.0"
    assert parsed.values["envs"]["ENV"] == "prod"


@pytest.mark.parametrize("fixture", sorted(PARSERS))
@pytest.mark.parametrize("bad", [None, "", "   ", 3, ["x"]])
def test_every_required_text_field_is_checked(fixture: str, bad: Any) -> None:
    body = dcm.call(fixture, **NAMES)["body"]
    for field in ("resource_id", "artifact_id", "kube_cluster", "kube_namespace", "darwin_resource"):
        if field not in body:
            continue
        with pytest.raises(BadRequest) as caught:
            PARSERS[fixture]({**body, field: bad})
        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}: ")


def test_values_must_be_an_object_and_are_never_echoed() -> None:
    body = dcm.call("deploy_build", **NAMES)["body"]
    for bad in (None, "replicaCount: 2", [1]):
        with pytest.raises(BadRequest) as caught:
            parse_build({**body, "values": bad})
        assert caught.value.field == "values"
        assert "replicaCount" not in str(caught.value)


def test_only_the_fastapi_chart_is_served() -> None:
    body = dcm.call("deploy_start", **NAMES)["body"]
    with pytest.raises(BadRequest, match="darwin_resource: 'RayService' is not served here"):
        parse_start({**body, "darwin_resource": "RayService"})


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(raw)
    assert caught.value.field == "body"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (None, None),
        ("off", None),
        ("0.0.0.0:8090", ("0.0.0.0", 8090)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::]:8090", ("::", 8090)),
    ],
)
def test_dcm_listen_is_host_and_port_or_off(raw: str | None, want: tuple[str, int] | None) -> None:
    env = {"MLSERVE_CLUSTER_NAME": "local", **({"MLSERVE_DCM_LISTEN": raw} if raw is not None else {})}
    assert OperatorSettings.from_env(env).dcm_listen == want


@pytest.mark.parametrize("raw", ["8090", ":8090", "host:", "host:http", "host:70000", "host:0"])
def test_a_bad_dcm_listen_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="MLSERVE_DCM_LISTEN"):
        OperatorSettings.from_env({"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DCM_LISTEN": raw})
