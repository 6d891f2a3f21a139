"""The scripts of ``deploy/local-cluster/`` (standard library only, run by ``python3``), loaded
as modules for their tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LOCAL_CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "local-cluster"


def load_script(name: str) -> ModuleType:
    """``deploy/local-cluster/<name>.py`` as a module (its folder on the path while it loads,
    for its ``components`` import)."""
    sys.path.insert(0, str(LOCAL_CLUSTER))
    try:
        spec = importlib.util.spec_from_file_location(f"local_cluster_{name}", LOCAL_CLUSTER / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(LOCAL_CLUSTER))
