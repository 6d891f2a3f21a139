"""Each case's manifests against the committed YAML in tests/unit/render/golden/.

Regenerate after an intended change, then review the diff:

    MLSERVE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/render/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlserve_testing.render_cases import CASES, Case

from mlserve.operator.render import dump_yaml

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MLSERVE_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_matches_golden(case: Case) -> None:
    rendered = dump_yaml(case.render())
    path = GOLDEN / f"{case.id}.yaml"
    if UPDATE:
        path.write_text(rendered)
    assert path.exists(), (
        f"{path.name} is missing: run MLSERVE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/render/test_golden.py"
    )
    assert rendered == path.read_text(), (
        f"{case.id} renders differently from {path.name}; if intended, regenerate with "
        "MLSERVE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/render/test_golden.py and review the diff"
    )


def test_no_stale_golden_files() -> None:
    expected = {f"{case.id}.yaml" for case in CASES}
    present = {path.name for path in GOLDEN.glob("*.yaml")}
    assert present <= expected, f"golden files without a case: {sorted(present - expected)}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_rendering_is_deterministic(case: Case) -> None:
    assert dump_yaml(case.render()) == dump_yaml(case.render())
