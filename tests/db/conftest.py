"""Every model test runs twice: on SQLite and on the suite's MariaDB server.

``db`` yields the settings of a fresh, empty database, already connected and with the
schema created by the migrations; the MariaDB runs carry the ``mariadb`` marker.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tortoise import Tortoise

from mlserve.models.db import close_db, init_db, table_names
from mlserve.models.settings import DatabaseSettings

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=BACKENDS)
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseSettings]:
    """Settings of a new, empty database on the parametrised backend (not connected)."""
    if request.param == "sqlite":
        yield DatabaseSettings.sqlite(tmp_path / "mlserve.sqlite3")
        return
    server = request.getfixturevalue("mariadb_server")
    name = await server.create_database("models")
    try:
        yield server.settings(name)
    finally:
        await close_db()
        await server.drop_database(name)


# One database per backend gets the schema (through the migrations) once per session;
# each test then starts from it with every table empty: a copy of the file on SQLite,
# the rows deleted on MariaDB. Schema creation itself is tested on ``empty_db``.
_templates: dict[str, DatabaseSettings] = {}


@pytest.fixture(params=BACKENDS)
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DatabaseSettings]:
    """A connected database with the schema and no rows, on the parametrised backend."""
    backend = request.param
    template = _templates.get(backend)
    if template is None:
        if backend == "sqlite":
            template = DatabaseSettings.sqlite(tmp_path_factory.mktemp("template") / "mlserve.sqlite3")
        else:
            server = request.getfixturevalue("mariadb_server")
            template = server.settings(await server.create_database("models"))
        await init_db(template)
        await close_db()
        _templates[backend] = template
    if backend == "sqlite":
        assert template.path is not None
        source = Path(template.path)
        for file in source.parent.glob(source.name + "*"):
            shutil.copyfile(file, tmp_path / file.name)
        settings = DatabaseSettings.sqlite(tmp_path / source.name)
        await init_db(settings, create_schema=False)
    else:
        settings = template
        await init_db(settings, create_schema=False)
        await _delete_all_rows()
    try:
        yield settings
    finally:
        await close_db()


async def _delete_all_rows() -> None:
    connection = Tortoise.get_connection("default")
    statements = ["SET FOREIGN_KEY_CHECKS = 0"]
    statements += [f"DELETE FROM `{table}`" for table in table_names()]
    statements.append("SET FOREIGN_KEY_CHECKS = 1")
    await connection.execute_script(";".join(statements))
