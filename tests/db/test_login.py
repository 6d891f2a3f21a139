"""Logging in to MySQL: a refused login is a setting to fix, said at start-up; TLS is never
silently dropped. Against the suite's MariaDB server (real logins, real refusals)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner
from mlserve_testing.darwin import seed_api_serve
from mlserve_testing.mariadb import MariaDBServer
from pydantic import SecretStr

from mlserve.models import Artifact, Environment, Serve, User, end_active, propose
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
    """Instead of retrying forever: exit status 1, the reason, no password, before kopf starts."""
    url = f"mysql://{mariadb_server.user}:{WRONG}@{mariadb_server.host}:{mariadb_server.port}/darwin_ml_serve"
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["run"],
        env={"MLSERVE_CLUSTER_NAME": "local", "MLSERVE_DB_URL": url, "MLSERVE_LIVENESS_ENDPOINT": "off"},
    )
    assert result.exit_code == 1, result.output
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


GRANTS = (
    "GRANT SELECT, LOCK TABLES ON `{db}`.* TO '{user}'@'{host}'",
    "GRANT INSERT, UPDATE ON `{db}`.deployments TO '{user}'@'{host}'",
    "GRANT INSERT, UPDATE, DELETE ON `{db}`.active_deployments TO '{user}'@'{host}'",
    "GRANT INSERT ON `{db}`.app_layer_deployments TO '{user}'@'{host}'",
    "GRANT INSERT ON `{db}`.scheduled_workflow_deployments TO '{user}'@'{host}'",
)
"""The README's least-privilege grants (its SQL, for one database)."""


async def test_the_readmes_least_privilege_user_deploys_and_undeploys(mariadb_server: MariaDBServer) -> None:
    name = await mariadb_server.create_database("grants")
    user, password = f"op_{name[-8:]}", "op-password-5d1c"
    try:
        await init_db(mariadb_server.settings(name))  # the schema, as an administrator
        seed = await seed_api_serve("iris", "prod", "mlserve-prod")
        await close_db()
        for host in ("127.0.0.1", "localhost"):
            await mariadb_server.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            for grant in GRANTS:
                await mariadb_server.execute(grant.format(db=name, user=user, host=host))

        await init_db(_settings(mariadb_server, user=user, password=password, database=name), create_schema=False)
        serve, environment = await Serve.get(id=seed.serve), await Environment.get(id=seed.environment)
        admin = await User.get(user_id=seed.user)
        first = await propose(serve, environment, await Artifact.get(id=seed.artifacts["v1"]), admin, reflects=None)
        assert first.recorded and first.active is not None
        second = await propose(
            serve, environment, await Artifact.get(id=seed.artifacts["v2"]), admin, reflects=first.active.pk
        )
        assert second.recorded and second.active is not None
        assert await end_active(serve, environment, deployment_id=second.active.pk) == second.active.pk
        # and nothing else: the serves themselves are read-only to it
        with pytest.raises(Exception, match="denied"):
            await Serve.filter(id=seed.serve).update(description="changed")
    finally:
        await close_db()
        for host in ("127.0.0.1", "localhost"):
            await mariadb_server.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        await mariadb_server.drop_database(name)
