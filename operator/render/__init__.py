"""Pure renderers: typed inputs (``mlserve.operator.spec``) to Kubernetes manifests (dicts).

No I/O, no clock, no randomness: the same inputs give the same manifests, byte for byte.
The operator calls :func:`render_children`; ``mlserve render`` prints what it returns.
"""

from __future__ import annotations

from .api import render_api, render_deployment, render_hpa, render_ingress, render_pdb, render_service
from .children import render_children
from .output import dump_yaml
from .settings import RenderSettings
from .workflow import render_raycronjob, render_rayjob, render_rayjob_spec, render_workflow

__all__ = [
    "RenderSettings",
    "dump_yaml",
    "render_api",
    "render_children",
    "render_deployment",
    "render_hpa",
    "render_ingress",
    "render_pdb",
    "render_raycronjob",
    "render_rayjob",
    "render_rayjob_spec",
    "render_service",
    "render_workflow",
]
