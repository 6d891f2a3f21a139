"""The distribution installs what the repository holds, under ``mlserve.*`` only.

The import packages live in top-level folders mapped by ``package-dir``; setuptools
installs only the packages listed in ``pyproject.toml``, so a sub-package missing from
that list would silently be left out of ``pip install .``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"models": "mlserve.models", "operator": "mlserve.operator"}
IGNORED_DIRS = {"__pycache__", "build", "dist"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    found: set[str] = set()
    for folder, package in FOLDERS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            if any(part in IGNORED_DIRS or part.endswith(".egg-info") for part in relative.parts):
                continue
            found.add(".".join([package, *relative.parts]) if relative.parts else package)
    return found


def test_every_package_folder_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, (
        f"{sorted(missing)} have an __init__.py but are not in [tool.setuptools] packages of "
        "pyproject.toml: add them, or `pip install .` leaves them out"
    )
    stale = {p for p in listed if p.startswith(tuple(FOLDERS.values()))} - _packages_on_disk()
    assert not stale, f"{sorted(stale)} are listed in pyproject.toml but have no folder"


def test_no_top_level_operator_package_is_declared() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    assert set(tool["package-dir"]) == set(FOLDERS.values())
    assert all(p.startswith("mlserve.") for p in tool["packages"])


def _copy_source(target: Path) -> Path:
    """The files a build reads, copied so the build leaves the working tree alone."""
    source = target / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    return source


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees this interpreter's installed dependencies.

    A ``.pth`` file adds the running environment's site-packages, so the dependencies are
    importable offline, while that environment's own (editable) install of this project is
    not: its finder is loaded by a ``.pth`` there, which a plain path entry never runs.
    """
    venv.EnvBuilder(with_pip=False, clear=True).create(path)
    python = path / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site) / "mlserve-test-deps.pth").write_text("\n".join(ours) + "\n")
    return python


CHECK = """
import importlib.util, operator, sys, sysconfig
import mlserve.models, mlserve.models.migrations, mlserve.operator, mlserve.operator.cli
from mlserve.models import Serve, activate
stdlib = sysconfig.get_paths()["stdlib"]
assert operator.__file__.startswith(stdlib), operator.__file__
assert callable(operator.itemgetter)
assert importlib.util.find_spec("models") is None, "a top-level 'models' is importable"
migrations = importlib.util.find_spec("mlserve.models.migrations.0001_initial")
assert migrations is not None, "the initial migration is not installed"
print(mlserve.models.__file__)
print(mlserve.operator.__file__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_pip_install_in_a_fresh_venv(tmp_path: Path, editable: bool) -> None:
    if not (ROOT / "README.md").exists():
        pytest.fail("README.md is missing: pyproject.toml names it as the readme, so the build fails")
    source = _copy_source(tmp_path)
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PIP_REQUIRE_VIRTUALENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # This environment's pip installs into the new one (--python): no pip bootstrap needed.
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    install += ["--no-build-isolation", "--no-index"]
    install += ["-e", str(source)] if editable else [str(source)]
    result = subprocess.run(install, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    # Run from an unrelated folder so nothing is imported from the current directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    models_file, operator_file = check.stdout.split()
    if editable:
        assert models_file.startswith(str(source / "models"))
        assert operator_file.startswith(str(source / "operator"))
    else:
        assert "site-packages" in models_file and "site-packages" in operator_file
    cli = subprocess.run(
        [tmp_path / "venv" / "bin" / "mlserve", "db", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
    )
    assert cli.returncode == 0 and "seed-demo" in cli.stdout, cli.stdout + cli.stderr


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    """requirements.lock (what CI and the image install) pins each dependency pyproject.toml
    declares, extras included, at a version the declared range allows: regenerate it with the
    command in its first lines after changing a dependency."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    project = _pyproject()["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside {requirement.specifier}"
        )


def test_the_mysql_driver_is_aiomysql() -> None:
    """The driver the package declares is the one the tests run on: Tortoise takes asyncmy over
    it whenever asyncmy is installed (``scripts/lib.sh`` removes it from the project's venv)."""
    from mlserve.models.backend_mysql import DRIVER

    assert DRIVER == "aiomysql", f"Tortoise uses {DRIVER}: uninstall it (pip uninstall asyncmy)"
