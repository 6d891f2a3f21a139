"""Which failures mean "the database is down" (retried, DatabaseSynced False) and which are data errors."""

from __future__ import annotations

import sqlite3

import pytest
from tortoise.exceptions import (
    DBConnectionError,
    DoesNotExist,
    IntegrityError,
    MultipleObjectsReturned,
    OperationalError,
    TransactionManagementError,
    ValidationError,
)

from mlserve.models import errors as models_errors
from mlserve.operator.reconcile import errors
from mlserve.operator.reconcile.deploy import as_unavailable, is_database_error


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OSError("network unreachable"),
        DBConnectionError("lost connection"),
        OperationalError("(2013, 'Lost connection to MySQL server during query')"),
        TransactionManagementError("no connection"),
        sqlite3.OperationalError("database is locked"),
        models_errors.DatabaseUnavailable("cannot use the database mysql://u:***@db:3306/x"),
    ],
    ids=type,
)
def test_the_database_not_answering_is_unavailable(exc: BaseException) -> None:
    assert is_database_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        DoesNotExist("Serve has no row with id 7"),
        MultipleObjectsReturned("two rows"),
        IntegrityError("Duplicate entry 'x' for key 'name'"),
        ValidationError("name: too long"),
        sqlite3.IntegrityError("UNIQUE constraint failed: serves.name"),
        sqlite3.ProgrammingError("wrong number of bindings"),
        models_errors.InvalidConfig("env_configs.namespace", "is required"),
        models_errors.ActiveDeploymentConflict("s", "prod", [1, 2]),
        ValueError("not a database error at all"),
        KeyError("x"),
    ],
    ids=type,
)
def test_data_errors_are_not_unavailable(exc: BaseException) -> None:
    assert not is_database_error(exc)


def test_the_database_down_is_a_retried_failure_of_the_database_synced_condition() -> None:
    error = as_unavailable(OSError("secret-host:3306 password=hunter2"))
    assert isinstance(error, errors.TemporaryFailure)
    assert (error.reason, error.condition) == ("DatabaseUnavailable", "DatabaseSynced")
    assert "hunter2" not in str(error) and "OSError" in str(error)
