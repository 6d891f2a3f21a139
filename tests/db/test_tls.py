"""TLS to MySQL against a MariaDB server of its own that speaks TLS and refuses plain connections.

Through the settings a user writes (``MLSERVE_DB_TLS`` and ``MLSERVE_DB_TLS_CA``, the URL's
``?tls=``): ``verify`` checks the server's certificate against the CA given, ``require`` only
encrypts, and the session really is encrypted (the server's own ``Ssl_version``). A certificate
signed by another CA, or no TLS at all, is refused with the setting to fix and never the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlserve_testing.mariadb import start_mariadb
from tortoise import Tortoise

from mlserve.models import User
from mlserve.models.db import close_db, init_db
from mlserve.models.errors import LoginRefused
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev.cluster.pki import CertificateAuthority
from mlserve.operator.dev.mariadb import MariaDBServer, ServerTLS

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MariaDBServer, Path]]:
    """A MariaDB server that requires TLS, with a certificate for 127.0.0.1; and its CA file."""
    folder = tmp_path_factory.mktemp("mariadb-tls")
    ca = CertificateAuthority.create(folder, "mlserve test database CA")
    pair = ca.issue(folder, "server", "mariadb", server=True, hosts=["127.0.0.1", "localhost"])
    server = start_mariadb(folder, tls=ServerTLS(ca=ca.pair.cert, cert=pair.cert, key=pair.key))
    try:
        yield server, ca.pair.cert
    finally:
        server.stop()


async def _tls_version() -> str:
    rows = await Tortoise.get_connection("default").execute_query_dict("SHOW SESSION STATUS LIKE 'Ssl_version'")
    return str(rows[0]["Value"]) if rows else ""


async def test_verify_against_the_ca_from_the_environment_encrypts(tls_server: tuple[MariaDBServer, Path]) -> None:
    server, ca = tls_server
    database = await server.create_database("tls")
    settings = DatabaseSettings.from_env(
        {"MLSERVE_DB_URL": server.url(database), "MLSERVE_DB_TLS": "verify", "MLSERVE_DB_TLS_CA": str(ca)}
    )
    try:
        await init_db(settings)
        assert (await _tls_version()).startswith("TLS"), "the session is encrypted"
        await User.create(username="over-tls", token="t")
        assert await User.filter(username="over-tls").count() == 1
    finally:
        await close_db()


async def test_require_in_the_url_encrypts_without_a_ca(tls_server: tuple[MariaDBServer, Path]) -> None:
    server, _ = tls_server
    database = await server.create_database("tls")
    settings = DatabaseSettings.from_env({"MLSERVE_DB_URL": server.url(database) + "?tls=require"})
    try:
        await init_db(settings)
        assert (await _tls_version()).startswith("TLS")
    finally:
        await close_db()


async def test_a_certificate_from_another_ca_is_refused(tls_server: tuple[MariaDBServer, Path], tmp_path: Path) -> None:
    server, _ = tls_server
    other = CertificateAuthority.create(tmp_path, "someone else's CA")
    settings = server.settings("").with_tls("verify", str(other.pair.cert), "MLSERVE_DB_TLS")
    with pytest.raises(LoginRefused) as caught:  # a setting to fix: `mlserve run` exits instead of waiting
        await init_db(settings, create_schema=False)
    await close_db()
    message = str(caught.value)
    assert "certificate was not accepted" in message and "MLSERVE_DB_TLS_CA" in message, message
    assert server.password not in message


async def test_no_tls_is_refused_with_the_setting_to_fix(tls_server: tuple[MariaDBServer, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(LoginRefused) as caught:
        await init_db(server.settings(""), create_schema=False)
    await close_db()
    message = str(caught.value)
    assert "MLSERVE_DB_TLS" in message, message
    assert server.password not in message
