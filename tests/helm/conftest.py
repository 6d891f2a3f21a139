"""Fixtures of the chart's tests; the helpers are in ``helm.chart``."""

from __future__ import annotations

import pytest
from helm.chart import Helm, project_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The project's helm, with its own empty home (the user's helm settings stay untouched)."""
    return Helm(project_helm(), tmp_path_factory.mktemp("helm-home"))
