"""The control plane's build says how far it is: packages compiled of the total, the time
spent and the components left; compiler errors come through as they are."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from mlserve_testing.local_cluster import load_script


@pytest.fixture(scope="module")
def build() -> ModuleType:
    return load_script("build")


def _module(tmp_path: Path, source: str) -> Path:
    tmp_path.mkdir()
    (tmp_path / "go.mod").write_text("module example.invalid/progress\n\ngo 1.22\n")
    (tmp_path / "main.go").write_text(source)
    return tmp_path


def test_a_report_names_the_count_the_time_and_what_is_left(build: ModuleType) -> None:
    progress = build.Progress("kubernetes v1.37.2", 1800, ("etcd", "kwok"))
    for name in ("runtime", "k8s.io/api/core/v1", "sigs.k8s.io/yaml"):
        assert progress.line(name + "\n")
    assert not progress.line("./main.go:3:1: syntax error\n")
    report = progress.report(progress.started + 185)
    assert report == "kubernetes v1.37.2: 3 of 1800 packages compiled, 3m05s; then etcd, kwok"


def test_the_total_counts_every_package_a_component_imports(build: ModuleType) -> None:
    total = build.count_packages(build.COMPONENTS["kwok"])
    assert total is not None and total > 100  # kwok and its dependencies, the standard library's included


def test_a_build_reports_progress_and_passes_errors_through(
    build: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build, "PROGRESS_EVERY", 0.0)  # a report after every line
    good = _module(tmp_path / "good", 'package main\n\nfunc main() { println("hi") }\n')
    progress = build.Progress("example", None, ())
    assert build.run_with_progress(["go", "build", "-v", "-o", str(tmp_path / "out"), "."], good, progress) == 0
    assert progress.compiled >= 1
    assert "example: " in capsys.readouterr().err

    bad = _module(tmp_path / "bad", "package main\n\nfunc main() { undefined() }\n")
    code = build.run_with_progress(["go", "build", "-v", "-o", str(tmp_path / "out"), "."], bad, progress)
    assert code != 0
    assert "undefined: undefined" in capsys.readouterr().err
