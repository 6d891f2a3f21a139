"""Database settings: sources, precedence, the conf file, and the password kept secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlserve.models import InvalidConfig
from mlserve.models.db import close_db, init_db, tortoise_config
from mlserve.models.errors import DatabaseUnavailable
from mlserve.models.settings import DEFAULT_SQLITE_PATH, DatabaseSettings

PASSWORD = "Tr0ub4dor&3-secret"

CONF = """\
masterHost = "db-primary"
slaveHost = ${MYSQL_REPLICA}
database= "darwin_ml_serve"
username = ${?DB_USER}
password = ${DB_PASSWORD}
"""


def test_default_is_a_sqlite_file_under_the_working_directory() -> None:
    settings = DatabaseSettings.from_env({})
    assert settings.engine == "sqlite"
    assert settings.path == str(DEFAULT_SQLITE_PATH)
    assert DatabaseSettings.from_env({"MLSERVE_DB_PATH": "/x/y.db"}).path == "/x/y.db"


def test_darwin_variables() -> None:
    settings = DatabaseSettings.from_env(
        {
            "MYSQL_HOST": "db",
            "MYSQL_PORT": "3307",
            "MYSQL_USERNAME": "serve",
            "MYSQL_PASSWORD": PASSWORD,
            "MYSQL_SLAVE_HOST": "replica",
        }
    )
    assert (settings.engine, settings.host, settings.port) == ("mysql", "db", 3307)
    assert settings.database == "darwin_ml_serve"
    assert settings.replica_host == "replica"
    assert set(settings.connections()) == {"default", "replica"}
    assert settings.connections()["replica"]["credentials"]["host"] == "replica"


def test_a_replica_equal_to_the_primary_is_no_replica() -> None:
    settings = DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_USERNAME": "serve", "MYSQL_SLAVE_HOST": "db"})
    assert settings.replica_host is None


def test_url_beats_conf_file_beats_darwin_variables(tmp_path: Path) -> None:
    conf = tmp_path / "connection-test.conf"
    conf.write_text(CONF)
    env = {
        "MYSQL_HOST": "from-vars",
        "MYSQL_USERNAME": "serve",
        "MYSQL_REPLICA": "db-replica",
        "DB_PASSWORD": PASSWORD,
        "DB_USER": "serve",
        "MLSERVE_DB_CONFIG_FILE": str(conf),
        "MLSERVE_DB_URL": "mysql://u:p@from-url:3306/x",
    }
    assert DatabaseSettings.from_env(env).host == "from-url"
    del env["MLSERVE_DB_URL"]
    assert DatabaseSettings.from_env(env).host == "db-primary"
    del env["MLSERVE_DB_CONFIG_FILE"]
    assert DatabaseSettings.from_env(env).host == "from-vars"


def test_conf_file_by_environment_name(tmp_path: Path) -> None:
    (tmp_path / "connection-stag.conf").write_text(CONF)
    settings = DatabaseSettings.from_env(
        {
            "MLSERVE_ENV": "stag",
            "MLSERVE_DB_CONFIG_DIR": str(tmp_path),
            "MYSQL_REPLICA": "db-replica",
            "DB_PASSWORD": PASSWORD,
            "DB_USER": "serve",
        }
    )
    assert settings.host == "db-primary"
    assert settings.replica_host == "db-replica"
    assert settings.username == "serve"
    assert settings.database == "darwin_ml_serve"
    assert settings.password is not None and settings.password.get_secret_value() == PASSWORD


def test_conf_file_missing_variable_names_it(tmp_path: Path) -> None:
    conf = tmp_path / "connection-x.conf"
    conf.write_text(CONF)
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_conf_file(conf, environ={"MYSQL_REPLICA": "r"})
    assert caught.value.field == "connection-x.conf.password"
    assert "DB_PASSWORD" in str(caught.value)


def test_missing_conf_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env({"MLSERVE_ENV": "nope", "MLSERVE_DB_CONFIG_DIR": str(tmp_path)})
    assert "connection-nope.conf" in str(caught.value)


def test_bad_port_and_bad_url() -> None:
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_PORT": "x"})
    assert caught.value.field == "MYSQL_PORT"
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env({"MLSERVE_DB_URL": f"postgres://u:{PASSWORD}@h/db"})
    assert caught.value.field == "MLSERVE_DB_URL"
    assert PASSWORD not in str(caught.value)


def test_password_never_in_repr_str_or_display_url() -> None:
    settings = DatabaseSettings.from_url(f"mysql://serve:{PASSWORD.replace('&', '%26')}@db:3306/darwin")
    assert settings.password is not None and settings.password.get_secret_value() == PASSWORD
    for text in (repr(settings), str(settings), settings.display_url, settings.model_dump_json()):
        assert PASSWORD not in text
        assert "%26" not in text
    assert settings.display_url == "mysql://serve:***@db:3306/darwin"
    assert settings.redact(f"failed for {PASSWORD}") == "failed for ***"


async def test_password_never_in_connection_error_or_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the connection fails, with the password in the config.
    settings = DatabaseSettings.from_env(
        {"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": "1", "MYSQL_USERNAME": "serve", "MYSQL_PASSWORD": PASSWORD}
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseUnavailable) as caught:
        await init_db(settings)
    await close_db()
    message = str(caught.value)
    assert "mysql://serve:***@127.0.0.1:1/darwin_ml_serve" in message
    assert "MYSQL_* environment variables" in message
    # Tortoise's own DEBUG line would print the first third of the password.
    fragment = PASSWORD[: len(PASSWORD) // 3]
    for text in (message, repr(caught.value), caplog.text):
        assert PASSWORD not in text
        assert fragment not in text


def test_tortoise_config_holds_the_password_only_in_credentials() -> None:
    settings = DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_USERNAME": "serve", "MYSQL_PASSWORD": PASSWORD})
    config = tortoise_config(settings)
    assert config["connections"]["default"]["credentials"]["password"] == PASSWORD
    assert PASSWORD not in repr(config["apps"])


# --- no default user, TLS through every settings path ------------------------------------------


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"MYSQL_HOST": "db", "MYSQL_PASSWORD": PASSWORD}, "MYSQL_USERNAME"),
        ({"MLSERVE_DB_URL": "mysql://db:3306/darwin"}, "MLSERVE_DB_URL"),
    ],
)
def test_no_default_mysql_user(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env(env)
    assert caught.value.field == field
    assert "user" in str(caught.value) and PASSWORD not in str(caught.value)


def test_a_conf_file_without_username_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "connection-prod.conf"
    conf.write_text('masterHost = "db"\npassword = "x"\n')
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env({"MLSERVE_DB_CONFIG_FILE": str(conf)})
    assert caught.value.field == "connection-prod.conf.username"


def _ca_file(tmp_path: Path) -> Path:
    import ssl as _ssl

    ca = tmp_path / "ca.pem"
    paths = _ssl.get_default_verify_paths()
    source = Path(paths.cafile) if paths.cafile else None
    ca.write_bytes(source.read_bytes() if source is not None and source.is_file() else b"")
    return ca


def test_tls_through_every_settings_path(tmp_path: Path) -> None:
    import ssl as _ssl

    ca = _ca_file(tmp_path)
    conf = tmp_path / "connection-prod.conf"
    conf.write_text(f'masterHost = "db"\nusername = "serve"\ntls = "verify"\ntlsCa = "{ca}"\n')
    found = [
        DatabaseSettings.from_env({"MLSERVE_DB_URL": f"mysql://serve:x@db/darwin?tls=verify&tls_ca={ca}"}),
        DatabaseSettings.from_env({"MLSERVE_DB_CONFIG_FILE": str(conf)}),
        DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_USERNAME": "serve", "MLSERVE_DB_TLS_CA": str(ca)}),
        DatabaseSettings.from_env({"MLSERVE_DB_URL": "mysql://serve:x@db/darwin", "MLSERVE_DB_TLS": "verify"}),
    ]
    for settings in found:
        assert settings.tls == "verify"
        context = settings.connections()["default"]["credentials"]["ssl"]
        assert context.verify_mode == _ssl.CERT_REQUIRED and context.check_hostname
        assert "tls" not in settings.connections()["default"]["credentials"], "no unknown driver keyword"
    required = DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_USERNAME": "s", "MLSERVE_DB_TLS": "require"})
    context = required.connections()["default"]["credentials"]["ssl"]
    assert context.verify_mode == _ssl.CERT_NONE
    plain = DatabaseSettings.from_env({"MYSQL_HOST": "db", "MYSQL_USERNAME": "s"})
    assert plain.tls == "off" and "ssl" not in plain.connections()["default"]["credentials"]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"MYSQL_HOST": "db", "MYSQL_USERNAME": "s", "MLSERVE_DB_TLS": "maybe"}, "MLSERVE_DB_TLS"),
        ({"MYSQL_HOST": "db", "MYSQL_USERNAME": "s", "MLSERVE_DB_TLS_CA": "/nonexistent/ca.pem"}, "MLSERVE_DB_TLS_CA"),
        (
            {"MYSQL_HOST": "db", "MYSQL_USERNAME": "s", "MLSERVE_DB_TLS": "require", "MLSERVE_DB_TLS_CA": "/x"},
            "MLSERVE_DB_TLS_CA",
        ),
        ({"MLSERVE_DB_PATH": "/tmp/x.sqlite3", "MLSERVE_DB_TLS": "verify"}, "MLSERVE_DB_TLS"),
    ],
)
def test_bad_tls_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        DatabaseSettings.from_env(env)
    assert caught.value.field == field
