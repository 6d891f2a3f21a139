"""Logging in to MySQL: a refused login is a setting to fix, said at start-up; TLS is never
silently dropped. Against the suite's MariaDB server (real logins, real refusals)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner
from mlserve_testing.mariadb import MariaDBServer
from pydantic import SecretStr

from mlserve.models.db import close_db, init_db
from mlserve.models.errors import DatabaseUnavailable, LoginRefused
from mlserve.operator.cli import main

pytestmark = pytest.mark.mariadb

WRONG = "not-the-password-7f3a"


def _settings(
    server: MariaDBServer, *, user: str | None = None, password: str | None = None, database: str = ""
) -> Any:
    """The server's settings with another user, password or database."""
    settings = server.settings(database)
    return settings.model_copy(
        update={
            "username": user or server.user,
            "password": settings.password if password is None else SecretStr(password),
        }
    )


@pytest.mark.parametrize(
    ("case", "code"),
    [("wrong-password", 1045), ("unknown-user", 1045), ("unknown-database", 1049)],
)
async def test_a_refused_login_names_the_fix_and_never_the_password(
    mariadb_server: MariaDBServer, case: str, code: int
) -> None:
    if case == "wrong-password":
        settings = _settings(mariadb_server, password=WRONG)
    elif case == "unknown-user":
        settings = _settings(mariadb_server, user="nobody_here", password=WRONG)
    else:
        settings = _settings(mariadb_server, database="no_such_database_x")
    with pytest.raises(LoginRefused) as caught:
        await init_db(settings, create_schema=False)
    await close_db()
    message = str(caught.value)
    assert f"MySQL error {code}" in message, message
    assert WRONG not in message and mariadb_server.password not in message


def test_mlserve_run_exits_at_once_on_a_wrong_password(mariadb_server: MariaDBServer) -> None:
    """Instead of retrying forever: exit code 3 (the database), the reason, no password, before kopf starts."""
    url = f"mysql://{mariadb_server.user}:{WRONG}@{mariadb_server.host}:{mariadb_server.port}/darwin_ml_serve"
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["run"],
        env={"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DB_URL": url, "MLSERVE_LIVENESS_ENDPOINT": "off"},
    )
    assert result.exit_code == 3, result.output
    assert "refused the login" in result.output and "MySQL error 1045" in result.output
    assert WRONG not in result.output
    assert time.monotonic() - started < 30


async def test_tls_required_is_never_dropped_for_a_plain_connection(mariadb_server: MariaDBServer) -> None:
    """The suite's server speaks no TLS: ``require`` fails instead of logging in in clear."""
    settings = _settings(mariadb_server).with_tls("require", None, "MLSERVE_DB_TLS")
    with pytest.raises(DatabaseUnavailable) as caught:
        await init_db(settings, create_schema=False)
    await close_db()
    assert mariadb_server.password not in str(caught.value)
