"""A throwaway MariaDB server for the test suites (a pytest plugin).

``mariadb_server`` (session) starts ``mariadbd`` from the system's package in a
temporary data directory on 127.0.0.1 and a free port, with a real user and password,
and stops it at the end (:mod:`mlserve.operator.dev.mariadb`, which the benchmarks use
too). When ``MLSERVE_TEST_MYSQL_URL`` is set (``mysql://user:password@host:port/``) that
server is used instead and nothing is started. ``mariadb_database`` (function) gives the
settings of a new, empty database on it and drops the database afterwards.

A missing ``mariadbd`` fails the run with the fix (install ``mariadb-server``); these
tests never skip, in CI or elsewhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dev import mariadb as dev_mariadb
from mlserve.operator.dev.mariadb import (
    INSTALL_HINT,
    MariaDBServer,
    MariaDBUnavailable,
    external_server,
    find_mariadbd,
)

from .secrets import MIN_LENGTH, seeded_secret

__all__ = [
    "MariaDBServer",
    "MariaDBUnavailable",
    "find_mariadbd",
    "mariadb_database",
    "mariadb_server",
    "start_mariadb",
]


def start_mariadb(base_dir: Path, **options: Any) -> MariaDBServer:
    """:func:`mlserve.operator.dev.mariadb.start_mariadb`, its password a seeded secret."""
    server = dev_mariadb.start_mariadb(base_dir, **options)
    seeded_secret(server.password)
    return server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """The suite's MariaDB server (started once per session unless a URL is given)."""
    url = os.environ.get("MLSERVE_TEST_MYSQL_URL")
    if url:
        external = external_server(url)
        if len(external.password) >= MIN_LENGTH:
            seeded_secret(external.password)
        try:
            yield external
        finally:
            # Someone else's server: leave no test database behind.
            asyncio.run(external.drop_leftovers())
        return
    if find_mariadbd() is None:
        ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
        pytest.fail(("CI: " if ci else "") + INSTALL_HINT, pytrace=False)
    try:
        server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    except MariaDBUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mariadb_database(mariadb_server: MariaDBServer) -> AsyncIterator[DatabaseSettings]:
    """Settings of a new, empty database on the suite's server, dropped afterwards."""
    name = await mariadb_server.create_database()
    try:
        yield mariadb_server.settings(name)
    finally:
        await mariadb_server.drop_database(name)
