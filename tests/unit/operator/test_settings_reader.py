"""The one settings reader: every variable it reads is documented in the README, and back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlserve.models.errors import InvalidConfig, SettingsError
from mlserve.models.settings import EnvReader
from mlserve.operator.settings import OperatorSettings, variables

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Running the operator"
SETTING = re.compile(r"`((?:MLSERVE|MYSQL)_[A-Z0-9_]+)`")


def documented() -> set[str]:
    """The variables named in the first column of the settings tables of the README's section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    found: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            found.update(SETTING.findall(cells[1]))
    return found


def read_by_the_operator(tmp_path: Path) -> set[str]:
    """Every variable ``OperatorSettings.from_env`` asks for, over the database's sources."""
    conf = tmp_path / "connection-x.conf"
    conf.write_text('masterHost = "db"\nusername = "serve"\n')
    read: set[str] = set()
    for env in (
        {},
        {"MYSQL_HOST": "db", "MYSQL_USERNAME": "serve"},
        {"MLSERVE_ENV": "x", "MLSERVE_DB_CONFIG_DIR": str(tmp_path)},
        {"MLSERVE_DB_URL": "sqlite://:memory:"},
    ):
        reader = EnvReader({"MLSERVE_CLUSTER_NAME": "local", **env})
        OperatorSettings.from_env(reader)
        read |= reader.read
    return read


def test_the_readme_documents_every_variable_the_reader_reads(tmp_path: Path) -> None:
    assert set(variables()) == read_by_the_operator(tmp_path)
    assert documented() == set(variables())


def test_the_one_error_names_the_variable_and_is_a_models_error() -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env({"MLSERVE_CLUSTER_NAME": "x", "MLSERVE_PEERING_PRIORITY": "high"})
    assert caught.value.variable == "MLSERVE_PEERING_PRIORITY"
    assert isinstance(caught.value, InvalidConfig) and isinstance(caught.value, ValueError)
    for env, variable in (
        ({"MYSQL_HOST": "db", "MYSQL_PORT": "x"}, "MYSQL_PORT"),
        ({"MLSERVE_HPA_CPU_UTILIZATION": "sixty"}, "MLSERVE_HPA_CPU_UTILIZATION"),
        ({"MLSERVE_SCHEDULE_HISTORY_LIMIT": "-1"}, "MLSERVE_SCHEDULE_HISTORY_LIMIT"),
    ):
        with pytest.raises(SettingsError) as caught:
            OperatorSettings.from_env({"MLSERVE_CLUSTER_NAME": "x", **env})
        assert caught.value.variable == variable


def test_sections_are_typed_values() -> None:
    settings = OperatorSettings.from_env(
        {"MLSERVE_CLUSTER_NAME": "x", "MYSQL_HOST": "db", "MYSQL_USERNAME": "u", "MYSQL_PASSWORD": "s3cret!"}
    )
    assert settings.database is not None and settings.database.engine == "mysql"
    assert "s3cret!" not in repr(settings) and "s3cret!" not in repr(settings.database)


def test_the_files_the_settings_point_to_exist() -> None:
    from mlserve.operator import settings
    from mlserve.operator.cli import run

    root = README.parent
    for module in (settings, run):
        text = Path(module.__file__ or "").read_text(encoding="utf-8")
        paths = re.findall(r"(?:deploy|crds)/[\w./-]+\.yaml", text)
        assert paths, module.__name__
        for path in paths:
            assert (root / path).is_file(), f"{module.__name__} points to {path}, which does not exist"
