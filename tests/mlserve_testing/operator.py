"""Fixtures for the operator's tests: a Darwin database per test, and the operator itself.

- ``darwin_db``: an empty Darwin schema, on SQLite (in memory) and, for tests marked
  ``mariadb``, on the suite's MariaDB server; seed it with :mod:`mlserve_testing.darwin`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tortoise import Tortoise

MODELS = {"models": ["mlserve.models"]}


@pytest.fixture
async def darwin_db() -> AsyncIterator[None]:
    """A fresh SQLite Darwin schema, connected as Tortoise's default connection."""
    await Tortoise.init(db_url="sqlite://:memory:", modules=MODELS)
    await Tortoise.generate_schemas()
    try:
        yield
    finally:
        await Tortoise.close_connections()
