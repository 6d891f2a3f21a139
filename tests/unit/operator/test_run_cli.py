"""``mlserve run`` and ``mlserve rollback`` on the command line, without a cluster."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from mlserve.operator.cli import main
from mlserve.operator.cli.run import _Redact, configure_logging


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "MLSERVE_CLUSTER_NAME"),
        ({"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_LOG_FORMAT": "yaml"}, "MLSERVE_LOG_FORMAT"),
        ({"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DELETION_DB_TIMEOUT": "-3"}, "MLSERVE_DELETION_DB_TIMEOUT"),
        ({"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_HPA_CPU_UTILIZATION": "250"}, "MLSERVE_HPA_CPU_UTILIZATION"),
        (
            {"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_SCHEDULE_HISTORY_LIMIT": "three"},
            "MLSERVE_SCHEDULE_HISTORY_LIMIT",
        ),
        (
            {"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_SCHEDULE_STARTING_DEADLINE": "soon"},
            "MLSERVE_SCHEDULE_STARTING_DEADLINE",
        ),
    ],
)
def test_run_refuses_bad_settings_naming_the_variable(
    env: dict[str, str], variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith(("MLSERVE_", "MYSQL_"))]:
        monkeypatch.delenv(key)
    result = CliRunner().invoke(main, ["run"], env={"MLSERVE_DB_URL": "sqlite://:memory:", **env})
    assert result.exit_code == 1
    assert variable in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("kopf", "httpx2", "tortoise", "asyncmy")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_json_logs_never_carry_the_password(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", ["s3cr3t-pass"])
    root = logging.getLogger()
    handler = root.handlers[0]
    handler.stream = stream  # type: ignore[attr-defined]
    logging.getLogger("mlserve.test").warning("connecting to mysql://u:%s@db/x", "s3cr3t-pass")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["level"] == "WARNING" and line["logger"] == "mlserve.test"
    assert "s3cr3t-pass" not in stream.getvalue() and "***" in line["message"]
    assert any(isinstance(f, _Redact) for f in handler.filters)


def test_rollback_needs_an_environment() -> None:
    result = CliRunner().invoke(main, ["rollback", "fraud"])
    assert result.exit_code == 2 and "--env" in result.output
