"""Database settings: one typed object, read once from the environment.

Where the settings come from, first match wins:

1. ``MLSERVE_DB_URL``: a Tortoise URL, e.g. ``mysql://user:pass@host:3306/darwin_ml_serve``
   or ``sqlite:///var/lib/mlserve/db.sqlite3``.
2. A Darwin ``connection-<env>.conf`` file: ``MLSERVE_DB_CONFIG_FILE`` names it, or
   ``MLSERVE_ENV=<env>`` picks ``connection-<env>.conf`` in ``MLSERVE_DB_CONFIG_DIR``
   (default ``resources/config/mysql``). Keys ``masterHost``, ``slaveHost``, ``port``,
   ``database``, ``username``, ``password``; ``${VAR}`` is replaced from the environment.
3. Darwin's variables, when ``MYSQL_HOST`` is set: ``MYSQL_HOST``, ``MYSQL_PORT`` (3306),
   ``MYSQL_DATABASE`` (``darwin_ml_serve``), ``MYSQL_USERNAME``, ``MYSQL_PASSWORD``,
   ``MYSQL_SLAVE_HOST`` (a read replica).
4. Otherwise a SQLite file: ``MLSERVE_DB_PATH``, default ``.mlserve/mlserve.sqlite3`` under
   the working directory, so trying the operator needs no server.

The password is a ``SecretStr``: it never appears in a repr, a log line or an error
message; :attr:`DatabaseSettings.display_url` is the form to show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .errors import InvalidConfig

__all__ = ["DEFAULT_DATABASE", "DEFAULT_SQLITE_PATH", "DatabaseSettings"]

DEFAULT_DATABASE = "darwin_ml_serve"
DEFAULT_SQLITE_PATH = Path(".mlserve") / "mlserve.sqlite3"
DEFAULT_CONFIG_DIR = Path("resources") / "config" / "mysql"
MASK = "***"

_VAR = re.compile(r"\$\{(\??)([A-Za-z_][A-Za-z0-9_]*)\}")


class DatabaseSettings(BaseModel):
    """Where the database is and how to log in."""

    model_config = ConfigDict(frozen=True)

    engine: Literal["sqlite", "mysql"]
    """``sqlite`` (embedded, the default) or ``mysql`` (MySQL 8 / MariaDB 10.11)."""
    path: str | None = None
    """SQLite only: the database file, or ``:memory:``."""
    host: str | None = None
    """MySQL only: the primary server, used for every write."""
    port: int = 3306
    database: str = DEFAULT_DATABASE
    username: str | None = None
    password: SecretStr | None = None
    replica_host: str | None = None
    """MySQL only: a read replica for reads that may lag (listings); None means none."""
    options: dict[str, str] = Field(default_factory=dict)
    """Extra connection parameters (MySQL ``charset``, pool sizes, ...)."""
    source: str = "default"
    """Where these settings came from, for messages (never contains the password)."""

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        """Read the settings with the precedence described in the module docstring."""
        env = os.environ if environ is None else environ
        if env.get("MLSERVE_DB_URL"):
            return cls.from_url(env["MLSERVE_DB_URL"], source="MLSERVE_DB_URL")
        conf = _config_file(env)
        if conf is not None:
            return cls.from_conf_file(conf, environ=env)
        if env.get("MYSQL_HOST"):
            return cls._from_darwin_env(env)
        path = env.get("MLSERVE_DB_PATH") or str(DEFAULT_SQLITE_PATH)
        source = "MLSERVE_DB_PATH" if env.get("MLSERVE_DB_PATH") else "default"
        return cls(engine="sqlite", path=path, source=source)

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str]) -> DatabaseSettings:
        return cls(engine="sqlite", path=str(path), source="sqlite")

    @classmethod
    def from_url(cls, url: str, *, source: str = "url") -> DatabaseSettings:
        """Parse a Tortoise URL (``sqlite://PATH`` or ``mysql://user:pass@host:port/db``)."""
        try:
            parts = urlsplit(url)
            scheme = parts.scheme
            if scheme == "sqlite":
                path = url.split("://", 1)[1]
                if not path:
                    raise ValueError("no file")
                return cls(engine="sqlite", path=path, source=source)
            if scheme == "mysql":
                query = dict(parse_qsl(parts.query))
                replica = query.pop("replica_host", None)
                return cls(
                    engine="mysql",
                    host=parts.hostname or "localhost",
                    port=parts.port or 3306,
                    database=unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE,
                    username=unquote(parts.username) if parts.username else None,
                    password=SecretStr(unquote(parts.password)) if parts.password else None,
                    replica_host=replica,
                    options=query,
                    source=source,
                )
        except ValueError:
            pass
        # Never echo the URL: it may hold the password.
        raise InvalidConfig(
            source,
            "is not a database URL this operator understands; the rule is "
            "sqlite://PATH or mysql://USER:PASSWORD@HOST:PORT/DATABASE: fix the value",
        )

    @classmethod
    def from_conf_file(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> DatabaseSettings:
        """Read Darwin's ``connection-<env>.conf`` (``key = value`` lines, ``${VAR}`` expanded)."""
        env = os.environ if environ is None else environ
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(
                "MLSERVE_DB_CONFIG_FILE",
                f"cannot read {file} ({exc.strerror}): point it at an existing connection-<env>.conf",
            ) from None
        values = _parse_conf(text, env, file.name)
        host = values.get("masterHost") or values.get("host")
        if not host:
            raise InvalidConfig(f"{file.name}.masterHost", 'is required: set masterHost = "<mysql host>"')
        replica = values.get("slaveHost") or None
        port_text = values.get("port", "3306")
        if not port_text.isdigit():
            raise InvalidConfig(f"{file.name}.port", f"must be a port number, got {port_text!r}")
        password = values.get("password")
        return cls(
            engine="mysql",
            host=host,
            port=int(port_text),
            database=values.get("database") or DEFAULT_DATABASE,
            username=values.get("username") or None,
            password=SecretStr(password) if password else None,
            replica_host=replica if replica and replica != host else None,
            source=str(file),
        )

    @classmethod
    def _from_darwin_env(cls, env: Mapping[str, str]) -> DatabaseSettings:
        port_text = env.get("MYSQL_PORT") or "3306"
        if not port_text.isdigit():
            raise InvalidConfig("MYSQL_PORT", f"must be a port number, got {port_text!r}")
        host = env["MYSQL_HOST"]
        replica = env.get("MYSQL_SLAVE_HOST") or None
        password = env.get("MYSQL_PASSWORD")
        return cls(
            engine="mysql",
            host=host,
            port=int(port_text),
            database=env.get("MYSQL_DATABASE") or DEFAULT_DATABASE,
            username=env.get("MYSQL_USERNAME") or None,
            password=SecretStr(password) if password else None,
            replica_host=replica if replica and replica != host else None,
            source="MYSQL_* environment variables",
        )

    # ---- use ------------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The URL with the password masked: safe for logs and messages."""
        if self.engine == "sqlite":
            return f"sqlite://{self.path}"
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + MASK
            auth += "@"
        return f"mysql://{auth}{self.host}:{self.port}/{self.database}"

    def redact(self, text: str) -> str:
        """``text`` with the password (plain and URL-quoted) replaced by ``***``."""
        if self.password is None:
            return text
        secret = self.password.get_secret_value()
        if not secret:
            return text
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, MASK)
        return text

    def connections(self) -> dict[str, Any]:
        """Tortoise ``connections`` config: ``default`` (primary) and, if set, ``replica``.

        This holds the password in clear, as the driver needs it: never log it.
        """
        if self.engine == "sqlite":
            if self.path and self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            return {
                "default": {
                    "engine": "tortoise.backends.sqlite",
                    "credentials": {"file_path": self.path, "journal_mode": "WAL"},
                }
            }
        result = {"default": self._mysql(self.host or "localhost")}
        if self.replica_host:
            result["replica"] = self._mysql(self.replica_host)
        return result

    def _mysql(self, host: str) -> dict[str, Any]:
        credentials: dict[str, Any] = {
            "host": host,
            "port": self.port,
            "database": self.database,
            "user": self.username or "root",
            "password": self.password.get_secret_value() if self.password else "",
            "charset": "utf8mb4",
            "minsize": 1,
            "maxsize": 5,
        }
        for key, value in self.options.items():
            credentials[key] = int(value) if value.isdigit() else value
        return {"engine": "tortoise.backends.mysql", "credentials": credentials}

    def __str__(self) -> str:
        return self.display_url


def _config_file(env: Mapping[str, str]) -> Path | None:
    if env.get("MLSERVE_DB_CONFIG_FILE"):
        return Path(env["MLSERVE_DB_CONFIG_FILE"])
    name = env.get("MLSERVE_ENV")
    if name:
        directory = Path(env.get("MLSERVE_DB_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
        return directory / f"connection-{name}.conf"
    return None


def _parse_conf(text: str, env: Mapping[str, str], name: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise InvalidConfig(f"{name}:{number}", "is not a 'key = value' line: fix or remove it")
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]

        def expand(match: re.Match[str], key: str = key) -> str:
            optional, variable = match.group(1), match.group(2)
            if variable in env:
                return env[variable]
            if optional:
                return ""
            raise InvalidConfig(
                f"{name}.{key}",
                f"refers to the environment variable {variable}, which is not set: set it",
            )

        values[key] = _VAR.sub(expand, value)
    return values
