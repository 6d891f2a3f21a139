"""The operator as a subprocess (``mlserve run``) against the local control plane.

The operator under test watches the whole cluster, so every test here gets a fresh namespace
of its own: ``namespace`` is the operator's (``op-`` prefix, see ``mlserve_testing.operator``).
"""

from __future__ import annotations

import pytest


@pytest.fixture
def namespace(operator_namespace: str) -> str:
    """A fresh namespace per test (the operator under test watches the whole cluster)."""
    return operator_namespace
