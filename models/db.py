"""Connecting to the database and keeping its schema current.

``init_db`` connects Tortoise and, unless told not to, makes sure the schema exists:

* an empty database gets the whole schema by applying the migrations in
  ``mlserve.models.migrations`` (Tortoise's own migration framework);
* a database Darwin ML Serve created (its tables, no migration history) is adopted when
  asked (``mlserve db init``, ``mlserve db migrate``): the one column Darwin's tables lack
  (``workflow_serve_configs.head_node_config``) is added and the initial migration is
  recorded as applied, without touching data;
* a database with pending migrations is left alone and a warning says to run
  ``mlserve db migrate``, so an operator start never changes a schema silently.

:func:`inspect_schema` says which of these a database is without writing anything (what
``mlserve run`` checks before it starts), and :func:`migration_sql` prints the statements a
migration would run (``mlserve db migrate --sql``), for a database administrator to review.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget

from .errors import DatabaseUnavailable, LoginRefused, SchemaNotReady
from .settings import DatabaseSettings

__all__ = [
    "APP_LABEL",
    "SchemaState",
    "close_db",
    "database",
    "ensure_schema",
    "init_db",
    "inspect_schema",
    "migrate",
    "migration_sql",
    "prepare_schema",
    "read_connection",
    "table_names",
    "tortoise_config",
    "write_connection",
]

log = logging.getLogger(__name__)

APP_LABEL = "models"
MODELS_MODULE = "mlserve.models"
MIGRATIONS_MODULE = "mlserve.models.migrations"
INITIAL_MIGRATION = "0001_initial"
MIGRATIONS_TABLE = "tortoise_migrations"

_settings: DatabaseSettings | None = None


@dataclass(frozen=True)
class SchemaState:
    """What ``ensure_schema`` / ``migrate`` found and did."""

    action: str
    """``created``, ``adopted``, ``migrated``, ``current``, ``pending`` (migrations to apply),
    ``darwin`` (a schema Darwin created, to adopt) or ``absent`` (no tables of ours)."""
    applied: tuple[str, ...] = ()
    """Migrations applied (or recorded, when adopting) by this call."""
    pending: tuple[str, ...] = ()
    """Migrations still to apply (only when ``action`` is ``pending``)."""


def tortoise_config(settings: DatabaseSettings) -> dict[str, Any]:
    """The Tortoise config dict for ``settings`` (holds the password: never log it)."""
    return {
        "connections": settings.connections(),
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def table_names() -> tuple[str, ...]:
    """The tables of the models, in Darwin's names."""
    from . import __models__

    return tuple(model._meta.db_table for model in __models__)


@contextmanager
def _quiet_tortoise_debug() -> Iterator[None]:
    # Tortoise logs its connection config at DEBUG with the first third of the password
    # visible; keep that line out of any log.
    logger = logging.getLogger("tortoise")
    previous = logger.level
    if logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)


async def init_db(
    settings: DatabaseSettings | None = None, *, create_schema: bool = True, adopt: bool = True
) -> SchemaState | None:
    """Connect Tortoise to ``settings`` (default: from the environment).

    With ``create_schema`` the schema is created (or, with ``adopt``, a Darwin-created one
    adopted) as the module docstring says, and the resulting :class:`SchemaState` is returned. Raises
    :class:`DatabaseUnavailable` (password masked) when the server cannot be used.
    """
    global _settings
    settings = settings or DatabaseSettings.from_env()
    # Tortoise caches each model's INSERT/DELETE SQL by connection *name*, across inits:
    # after a SQLite "default" a MySQL "default" would get SQLite's placeholders.
    EXECUTOR_CACHE.clear()
    try:
        with _quiet_tortoise_debug():
            await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
        _settings = settings
        if not create_schema:
            await write_connection().execute_query("SELECT 1")
            return None
        return await ensure_schema(adopt=adopt)
    except DatabaseUnavailable:
        await close_db()
        raise
    except Exception as exc:  # noqa: BLE001 - every driver error is classified below
        await close_db()
        refused = _login_refusal(exc, encrypted=settings.tls != "off")
        if refused is not None:
            raise LoginRefused(
                f"the database {settings.display_url} (from {settings.source}) refused the login: {refused} "
                f"(the server said: {settings.redact(_error_text(exc))})"
            ) from None
        rejected = _rejected_certificate(exc)
        if rejected is not None:
            raise LoginRefused(
                f"the database {settings.display_url} (from {settings.source}): its TLS certificate was not "
                f"accepted ({rejected}): point MLSERVE_DB_TLS_CA at the CA that signed it, and connect by a "
                "host name or address the certificate names"
            ) from None
        if _is_connection_error(exc):
            raise DatabaseUnavailable(
                f"cannot use the database {settings.display_url} (from {settings.source}): "
                f"{settings.redact(_error_text(exc))}; check that the server runs "
                "and the host, port, user and password are right"
            ) from None
        raise _redacted(exc, settings) from None


async def close_db() -> None:
    """Close every connection opened by :func:`init_db` (safe to call twice)."""
    global _settings
    try:
        await Tortoise.close_connections()
    except Exception:  # closing must not mask the error that led here
        log.debug("closing the database connections failed", exc_info=True)
    _settings = None


@asynccontextmanager
async def database(
    settings: DatabaseSettings | None = None, *, create_schema: bool = True
) -> AsyncIterator[SchemaState | None]:
    """``async with database(settings):`` connects on entry and closes on exit."""
    state = await init_db(settings, create_schema=create_schema)
    try:
        yield state
    finally:
        await close_db()


def write_connection() -> BaseDBAsyncClient:
    """The primary connection: every write and every read that must see them."""
    return Tortoise.get_connection("default")


def read_connection() -> BaseDBAsyncClient:
    """The read replica when one is configured, else the primary.

    Use it for listings that may lag by a moment, never inside a transaction.
    """
    if _settings is not None and _settings.replica_host:
        return Tortoise.get_connection("replica")
    return write_connection()


def _executor(connection: BaseDBAsyncClient) -> MigrationExecutor:
    app = {"models": [MODELS_MODULE], "default_connection": "default", "migrations": MIGRATIONS_MODULE}
    return MigrationExecutor(connection, {APP_LABEL: app})


async def _existing_tables(connection: BaseDBAsyncClient) -> set[str]:
    if connection.capabilities.dialect == "mysql":
        _, rows = await connection.execute_query(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
    else:
        _, rows = await connection.execute_query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(row["name"]) for row in rows}


async def _existing_columns(connection: BaseDBAsyncClient, table: str) -> set[str]:
    if connection.capabilities.dialect == "mysql":
        _, rows = await connection.execute_query(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [table],
        )
    else:
        _, rows = await connection.execute_query(f'PRAGMA table_info("{table}")')
    return {str(row["name"]) for row in rows}


async def _pending(executor: MigrationExecutor) -> list[str]:
    return [step.migration.name for step in await executor.plan() if not step.backward]


async def ensure_schema(*, adopt: bool = True) -> SchemaState:
    """Create the schema when missing, adopt a Darwin-created one (unless not ``adopt``:
    then it is reported as ``darwin``); never migrate silently."""
    connection = write_connection()
    ours = set(table_names())
    existing = await _existing_tables(connection)
    executor = _executor(connection)
    if not ours & existing:
        pending = await _pending(executor)
        await executor.migrate()
        log.info("created the database schema (%s)", ", ".join(pending))
        return SchemaState("created", applied=tuple(pending))
    if not adopt:
        found = await inspect_schema()
        if found.action != "pending":
            return found
    else:
        adopted = await _adopt_if_needed(connection, executor, existing)
        if adopted is not None:
            return adopted
    pending = await _pending(executor)
    if pending:
        log.warning(
            "the database schema is behind this version (%s pending): run `mlserve db migrate`",
            ", ".join(pending),
        )
        return SchemaState("pending", pending=tuple(pending))
    return SchemaState("current")


async def inspect_schema() -> SchemaState:
    """What the database's schema is, writing nothing: ``absent``, ``darwin`` (created by
    Darwin ML Serve, to adopt), ``pending`` (migrations to apply) or ``current``. A database
    with some of our tables and no history is neither: RuntimeError, as :func:`migrate` says."""
    connection = write_connection()
    existing = await _existing_tables(connection)
    if not set(table_names()) & existing:
        return SchemaState("absent", pending=tuple(await _pending(_executor(connection))))
    executor = _executor(connection)
    if await _needs_adoption(connection, executor, existing):
        return SchemaState("darwin", pending=(INITIAL_MIGRATION,))
    pending = await _pending(executor)
    return SchemaState("pending", pending=tuple(pending)) if pending else SchemaState("current")


async def prepare_schema(*, create: bool, migrate_on_start: bool) -> SchemaState:
    """The schema the operator starts on: created in an empty database when ``create``;
    otherwise never changed, unless ``migrate_on_start``. Raises :class:`SchemaNotReady`
    naming the command that fixes it, instead of changing a schema nobody asked to change."""
    state = await inspect_schema()
    if state.action == "absent":
        if create:
            return await ensure_schema(adopt=False)
        raise SchemaNotReady(
            "the database has no ML Serve tables and MLSERVE_DB_CREATE_SCHEMA is false: run "
            "`mlserve db init` with a user that may CREATE tables, or set MLSERVE_DB_CREATE_SCHEMA=true"
        )
    if state.action in ("darwin", "pending"):
        if migrate_on_start:
            return await migrate()
        what = (
            "the schema was created by Darwin ML Serve and needs adopting (one added column, "
            f"{INITIAL_MIGRATION} recorded)"
            if state.action == "darwin"
            else f"migrations are pending ({', '.join(state.pending)})"
        )
        raise SchemaNotReady(
            f"{what}: run `mlserve db migrate` with a user that may ALTER and CREATE tables "
            "(`mlserve db migrate --sql` prints the statements first), or set MLSERVE_DB_MIGRATE_ON_START=true"
        )
    return state


async def migration_sql() -> list[str]:
    """The statements :func:`migrate` would run on this database, in order, run by nobody."""
    connection = write_connection()
    state = await inspect_schema()
    executor = _executor(connection)
    statements: list[str] = []
    if state.action == "darwin":
        if "head_node_config" not in await _existing_columns(connection, "workflow_serve_configs"):
            statements.append(_ADD_HEAD_NODE_CONFIG + ";")
        statements.append(f"-- then {INITIAL_MIGRATION} is recorded as applied in {MIGRATIONS_TABLE}")
        statements.append(f"-- (the table is created when missing: CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ...)")
        return statements
    for name in state.pending:
        statements.append(f"-- {APP_LABEL}.{name}")
        statements.extend(await executor.collect_sql(APP_LABEL, name))
    return statements


async def migrate() -> SchemaState:
    """Apply every pending migration (adopting a Darwin-created schema first)."""
    connection = write_connection()
    existing = await _existing_tables(connection)
    executor = _executor(connection)
    if not set(table_names()) & existing:
        return await ensure_schema()
    adopted = await _adopt_if_needed(connection, executor, existing)
    pending = await _pending(executor)
    if pending:
        await executor.migrate()
        log.info("applied migrations: %s", ", ".join(pending))
    done = (adopted.applied if adopted else ()) + tuple(pending)
    if not done:
        return SchemaState("current")
    return SchemaState("migrated" if pending else "adopted", applied=done)


_ADD_HEAD_NODE_CONFIG = "ALTER TABLE workflow_serve_configs ADD COLUMN head_node_config JSON NULL"


async def _needs_adoption(connection: BaseDBAsyncClient, executor: MigrationExecutor, existing: set[str]) -> bool:
    """Whether this is a schema Darwin created: our tables, no history of the initial
    migration (RuntimeError when only some of our tables are there)."""
    await executor.loader.build_graph()
    applied = {key.name for key in await executor.recorder.applied_migrations() if key.app_label == APP_LABEL}
    if INITIAL_MIGRATION in applied:
        return False
    missing = sorted(set(table_names()) - existing)
    if missing:
        raise RuntimeError(
            "the database has some of the ML Serve tables but not "
            f"{', '.join(missing)}, and no migration history: it is neither empty nor a "
            "Darwin ML Serve schema; point the operator at the right database"
        )
    return True


async def _adopt_if_needed(
    connection: BaseDBAsyncClient, executor: MigrationExecutor, existing: set[str]
) -> SchemaState | None:
    """Record the initial migration on a schema Darwin created (tables but no history)."""
    if not await _needs_adoption(connection, executor, existing):
        return None
    if "head_node_config" not in await _existing_columns(connection, "workflow_serve_configs"):
        await connection.execute_script(_ADD_HEAD_NODE_CONFIG)
    await executor.migrate([MigrationTarget(APP_LABEL, INITIAL_MIGRATION)], fake=True)
    log.info("adopted a schema created by Darwin ML Serve; recorded %s", INITIAL_MIGRATION)
    return SchemaState("adopted", applied=(INITIAL_MIGRATION,))


# MySQL's answers that mean "fix the settings", not "wait": the server is there and said no.
_LOGIN_ERRORS: dict[int, str] = {
    1044: "the user has no rights on this database: grant them (see the README's least-privilege user)",
    1045: "wrong user or password: check MYSQL_USERNAME / MYSQL_PASSWORD (or the URL, or the conf file)",
    1049: "the database does not exist: check its name (MYSQL_DATABASE, the URL's path or the conf file)",
    1698: "the user may not log in with a password: use the operator's own MySQL user",
    3159: "the server requires TLS: set MLSERVE_DB_TLS to require or verify",
}


# MariaDB refuses a plain connection to a user or server that requires TLS with 1045, like a wrong
# password (MySQL says 3159): without TLS, that answer may mean either.
_PLAIN_1045 = " or, if the server requires encrypted connections, set MLSERVE_DB_TLS to require or verify"


def _login_refusal(exc: BaseException, *, encrypted: bool) -> str | None:
    """What to fix when ``exc`` (or an exception it wraps) is the server refusing the login
    (``encrypted``: the connection asked for TLS)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        args = getattr(current, "args", ())
        if args and isinstance(args[0], int) and args[0] in _LOGIN_ERRORS:
            also = _PLAIN_1045 if args[0] == 1045 and not encrypted else ""
            return f"MySQL error {args[0]}, {_LOGIN_ERRORS[args[0]]}{also}"
        current = current.__cause__ or current.__context__
    return None


def _rejected_certificate(exc: BaseException) -> str | None:
    """Why the server's certificate failed the check, when that is what ``exc`` (or an exception
    it wraps) is: a setting to fix, not a server that may answer later."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or "verification failed")
        current = current.__cause__ or current.__context__
    return None


def _is_connection_error(exc: BaseException) -> bool:
    from tortoise.exceptions import DBConnectionError

    if isinstance(exc, DBConnectionError | ConnectionError | OSError):
        return True
    # asyncmy's errors, or PyMySQL's (aiomysql raises those): whichever driver is installed
    for module in ("asyncmy.errors", "pymysql.err"):
        try:
            errors = importlib.import_module(module)
        except ImportError:
            continue
        if isinstance(exc, errors.OperationalError):
            return True
    return False


def _error_text(exc: BaseException) -> str:
    """The error and its cause (Tortoise wraps the driver's "Access denied" in a generic one)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (cause: {cause})"
    return text


def _redacted(exc: Exception, settings: DatabaseSettings) -> Exception:
    text = settings.redact(str(exc))
    if text == str(exc):
        return exc
    return type(exc)(text) if _constructible(exc) else RuntimeError(text)


def _constructible(exc: Exception) -> bool:
    try:
        type(exc)("x")
    except Exception:  # noqa: BLE001 - any failure means the type cannot be rebuilt
        return False
    return True
