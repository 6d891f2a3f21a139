"""Settings from the environment: the one reader, its one error, and the database's settings.

Every setting of the project is an environment variable (``MLSERVE_*``, and Darwin's
``MYSQL_*`` for the database). :class:`EnvReader` is the only code that reads them: it trims
values, treats an empty value as unset, and turns every bad value into a
:class:`~mlserve.models.errors.SettingsError` that names the variable and the fix. The
operator's settings (``mlserve.operator.settings``) build on it.

The reader and the database's settings live here, in the models layer, because the models
are used without the operator (``mlserve db``, migrations, the models' own tests) and must
not import it (a checked import rule); the operator composes :meth:`DatabaseSettings.from_env`
into its own settings, so each variable still has exactly one reader.

Where the database settings come from, first match wins:

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
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .errors import SettingsError

TLSMode = Literal["off", "require", "verify"]
TLS_MODES: tuple[str, ...] = ("off", "require", "verify")

__all__ = [
    "DATABASE_VARIABLES",
    "DEFAULT_DATABASE",
    "DEFAULT_SQLITE_PATH",
    "DatabaseSettings",
    "EnvReader",
    "SettingsError",
    "parse_duration",
]

DEFAULT_DATABASE = "darwin_ml_serve"
DEFAULT_SQLITE_PATH = Path(".mlserve") / "mlserve.sqlite3"
DEFAULT_CONFIG_DIR = Path("resources") / "config" / "mysql"
DEFAULT_POOL_SIZE = 5
MAX_POOL_SIZE = 1000
ENGINE = "mlserve.models.backend"
"""Tortoise's engine module: its clients time each call from the moment it has a connection."""
MASK = "***"

_VAR = re.compile(r"\$\{(\??)([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

DATABASE_VARIABLES = (
    "MLSERVE_DB_URL",
    "MLSERVE_DB_CONFIG_FILE",
    "MLSERVE_ENV",
    "MLSERVE_DB_CONFIG_DIR",
    "MYSQL_HOST",
    "MYSQL_PORT",
    "MYSQL_DATABASE",
    "MYSQL_USERNAME",
    "MYSQL_PASSWORD",
    "MYSQL_SLAVE_HOST",
    "MLSERVE_DB_PATH",
    "MLSERVE_DB_POOL_SIZE",
    "MLSERVE_DB_TLS",
    "MLSERVE_DB_TLS_CA",
)
"""Every variable :meth:`DatabaseSettings.from_env` reads."""


def parse_duration(variable: str, raw: str) -> float:
    """Seconds from ``30``, ``30s``, ``1.5m``, ``500ms`` or ``2h``."""
    match = _DURATION.match(raw)
    if match is None:
        raise SettingsError(variable, f"{raw!r} is not a duration: write seconds (30), or 30s, 5m, 500ms, 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise SettingsError(variable, f"{raw!r} must be more than zero")
    return seconds


class EnvReader:
    """The one reader of settings: typed values of environment variables, or SettingsError.

    A value is trimmed and an empty one counts as unset (``None``), so a chart that renders
    ``FOO: ""`` means "the default". Every read is remembered in :attr:`read`, so a test can
    check that the documented variables are the ones read.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.read: set[str] = set()

    def text(self, name: str) -> str | None:
        """The trimmed value; None when unset or empty."""
        self.read.add(name)
        value = self.environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def secret(self, name: str) -> SecretStr | None:
        """The value exactly as set (a password may start or end with a space); None when empty."""
        self.read.add(name)
        value = self.environ.get(name)
        return SecretStr(value) if value else None

    def optional(self, name: str, default: str | None) -> str | None:
        """The value, ``default`` when unset, None when set to ``none``."""
        raw = self.text(name)
        if raw is None:
            return default
        return None if raw.lower() == "none" else raw

    def integer(self, name: str, fix: str = "") -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(name, f"{raw!r} is not a whole number{fix}") from None

    def port(self, name: str) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise SettingsError(name, f"must be a port number, got {raw!r}")
        return int(raw)

    def boolean(self, name: str) -> bool | None:
        raw = self.text(name)
        if raw is None:
            return None
        if raw.lower() not in _TRUE | _FALSE:
            raise SettingsError(name, f"{raw!r} is not a boolean: write true or false")
        return raw.lower() in _TRUE

    def duration(self, name: str) -> float | None:
        """Seconds (see :func:`parse_duration`); None when unset."""
        raw = self.text(name)
        return None if raw is None else parse_duration(name, raw)


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
    """Extra connection parameters (MySQL ``charset``, ...)."""
    pool_size: int = DEFAULT_POOL_SIZE
    """MySQL only: the most connections open at once (``MLSERVE_DB_POOL_SIZE``). SQLite has one."""
    statement_timeout: float | None = None
    """The longest one statement or transaction may run once it has a connection (the wait for
    a pooled connection is not counted): :mod:`mlserve.models.backend`. None: no limit."""
    tls: TLSMode = "off"
    """MySQL only: ``off`` (plain TCP), ``require`` (encrypted, the server's certificate not
    checked) or ``verify`` (encrypted, the certificate checked against :attr:`tls_ca`, or the
    system's CAs, and the host name)."""
    tls_ca: str | None = None
    """MySQL only: a PEM file of the CA(s) that signed the server's certificate."""
    source: str = "default"
    """Where these settings came from, for messages (never contains the password)."""

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | EnvReader | None = None) -> DatabaseSettings:
        """Read the settings with the precedence described in the module docstring."""
        env = environ if isinstance(environ, EnvReader) else EnvReader(environ)
        settings = cls._from_env(env)
        pool_size = env.integer("MLSERVE_DB_POOL_SIZE", ": write how many connections to open at most, e.g. 5")
        if pool_size is not None:
            if not 1 <= pool_size <= MAX_POOL_SIZE:
                raise SettingsError(
                    "MLSERVE_DB_POOL_SIZE", f"must be between 1 and {MAX_POOL_SIZE}, got {pool_size}: e.g. 5"
                )
            settings = settings.model_copy(update={"pool_size": pool_size})
        return settings

    @classmethod
    def _from_env(cls, env: EnvReader) -> DatabaseSettings:
        url = env.text("MLSERVE_DB_URL")
        tls = env.text("MLSERVE_DB_TLS")
        tls_ca = env.text("MLSERVE_DB_TLS_CA")
        if url is not None:
            found = cls.from_url(url, source="MLSERVE_DB_URL")
        elif (conf := _config_file(env)) is not None:
            found = cls.from_conf_file(conf, environ=env.environ)
        elif env.text("MYSQL_HOST") is not None:
            found = cls._from_darwin_env(env)
        else:
            path = env.text("MLSERVE_DB_PATH")
            found = cls(
                engine="sqlite", path=path or str(DEFAULT_SQLITE_PATH), source="MLSERVE_DB_PATH" if path else "default"
            )
        return found.with_tls(tls, tls_ca, "MLSERVE_DB_TLS") if tls or tls_ca else found

    def with_tls(self, mode: str | None, ca: str | None, variable: str) -> DatabaseSettings:
        """These settings with TLS ``mode`` (off, require, verify; a CA alone means verify)
        and ``ca``, checked: ``variable`` names the setting in errors."""
        chosen = (mode or ("verify" if ca else "off")).strip().lower()
        if chosen not in TLS_MODES:
            raise SettingsError(variable, f"{mode!r} is not a TLS mode: write off, require or verify")
        if self.engine != "mysql" and chosen != "off":
            raise SettingsError(variable, "applies to MySQL only: remove it, or point the operator at a MySQL server")
        if ca is not None:
            if chosen != "verify":
                raise SettingsError(
                    variable + "_CA" if variable.isupper() else variable,
                    f"a CA file is only used with TLS mode verify, not {chosen}: set the mode to verify",
                )
            try:
                Path(ca).expanduser().read_bytes()
            except OSError as exc:
                raise SettingsError(
                    variable + "_CA" if variable.isupper() else variable,
                    f"cannot read the CA file {ca} ({exc.strerror}): point it at a PEM file",
                ) from None
        return self.model_copy(update={"tls": chosen, "tls_ca": ca})

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
                tls, tls_ca = query.pop("tls", None), query.pop("tls_ca", None)
                if not parts.username:
                    raise SettingsError(
                        source,
                        "names no user: write mysql://USER:PASSWORD@HOST:PORT/DATABASE with the "
                        "operator's own MySQL user (the README says which grants it needs)",
                    )
                found = cls(
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
                return found.with_tls(tls, tls_ca, f"{source} (?tls=, ?tls_ca=)") if tls or tls_ca else found
        except SettingsError:
            raise
        except ValueError:
            pass
        # Never echo the URL: it may hold the password.
        raise SettingsError(
            source,
            "is not a database URL this operator understands; the rule is "
            "sqlite://PATH or mysql://USER:PASSWORD@HOST:PORT/DATABASE: fix the value",
        )

    @classmethod
    def from_conf_file(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> DatabaseSettings:
        """Read Darwin's ``connection-<env>.conf`` (``key = value`` lines, ``${VAR}`` expanded)."""
        env = EnvReader(environ).environ
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                "MLSERVE_DB_CONFIG_FILE",
                f"cannot read {file} ({exc.strerror}): point it at an existing connection-<env>.conf",
            ) from None
        values = _parse_conf(text, env, file.name)
        host = values.get("masterHost") or values.get("host")
        if not host:
            raise SettingsError(f"{file.name}.masterHost", 'is required: set masterHost = "<mysql host>"')
        replica = values.get("slaveHost") or None
        port_text = values.get("port", "3306")
        if not port_text.isdigit():
            raise SettingsError(f"{file.name}.port", f"must be a port number, got {port_text!r}")
        password = values.get("password")
        username = values.get("username")
        if not username:
            raise SettingsError(
                f"{file.name}.username",
                'is required: set username = "<the operator\'s MySQL user>" (the README says which grants it needs)',
            )
        found = cls(
            engine="mysql",
            host=host,
            port=int(port_text),
            database=values.get("database") or DEFAULT_DATABASE,
            username=username,
            password=SecretStr(password) if password else None,
            replica_host=replica if replica and replica != host else None,
            source=str(file),
        )
        tls, tls_ca = values.get("tls"), values.get("tlsCa")
        return found.with_tls(tls, tls_ca, f"{file.name}.tls") if tls or tls_ca else found

    @classmethod
    def _from_darwin_env(cls, env: EnvReader) -> DatabaseSettings:
        port = env.port("MYSQL_PORT")
        host = env.text("MYSQL_HOST") or "localhost"
        replica = env.text("MYSQL_SLAVE_HOST")
        if env.text("MYSQL_USERNAME") is None:
            raise SettingsError(
                "MYSQL_USERNAME",
                "is required with MYSQL_HOST: set it to the operator's own MySQL user (there is no "
                "default user; the README says which grants it needs)",
            )
        return cls(
            engine="mysql",
            host=host,
            port=3306 if port is None else port,
            database=env.text("MYSQL_DATABASE") or DEFAULT_DATABASE,
            username=env.text("MYSQL_USERNAME"),
            password=env.secret("MYSQL_PASSWORD"),
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
            credentials: dict[str, Any] = {"file_path": self.path, "journal_mode": "WAL"}
            if self.statement_timeout is not None:
                credentials["statement_timeout"] = self.statement_timeout
            return {"default": {"engine": ENGINE, "credentials": credentials}}
        result = {"default": self._mysql(self.host or "localhost")}
        if self.replica_host:
            result["replica"] = self._mysql(self.replica_host)
        return result

    def _mysql(self, host: str) -> dict[str, Any]:
        if not self.username:
            raise SettingsError(self.source, "names no MySQL user: set one (there is no default user)")
        credentials: dict[str, Any] = {
            "host": host,
            "port": self.port,
            "database": self.database,
            "user": self.username,
            "password": self.password.get_secret_value() if self.password else "",
            "charset": "utf8mb4",
            "minsize": 1,
            "maxsize": self.pool_size,
        }
        if self.statement_timeout is not None:
            credentials["statement_timeout"] = self.statement_timeout
        for key, value in self.options.items():
            credentials[key] = int(value) if value.isdigit() else value
        if self.tls != "off":
            credentials["ssl"] = self.ssl_context()
        return {"engine": ENGINE, "credentials": credentials}

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of :attr:`tls`: ``verify`` checks the certificate (against
        :attr:`tls_ca`, else the system's CAs) and the host name; ``require`` only encrypts."""
        if self.tls == "verify":
            context = ssl.create_default_context(cafile=str(Path(self.tls_ca).expanduser()) if self.tls_ca else None)
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
            return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:
        return self.display_url


def _config_file(env: EnvReader) -> Path | None:
    named = env.text("MLSERVE_DB_CONFIG_FILE")
    if named is not None:
        return Path(named)
    name = env.text("MLSERVE_ENV")
    if name:
        directory = Path(env.text("MLSERVE_DB_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
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
            raise SettingsError(f"{name}:{number}", "is not a 'key = value' line: fix or remove it")
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
            raise SettingsError(
                f"{name}.{key}",
                f"refers to the environment variable {variable}, which is not set: set it",
            )

        values[key] = _VAR.sub(expand, value)
    return values
