"""The renderers' entry point for the operator: every child of one MLServe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlserve.models.enums import ServeType
from mlserve.operator.spec import MLServeSpec, ServeContext, resolve_api, resolve_workflow

from .api import render_api
from .settings import RenderSettings
from .workflow import render_workflow

__all__ = ["API_CHILD_KINDS", "CHILD_KINDS", "WORKFLOW_CHILD_KINDS", "render_children"]

# (apiVersion, kind) of everything the renderers may produce, so the operator can find and
# prune children it no longer renders (e.g. the HPA once min equals max).
API_CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
)
WORKFLOW_CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("ray.io/v1", "RayJob"),
    ("ray.io/v1", "RayCronJob"),
)
CHILD_KINDS = API_CHILD_KINDS + WORKFLOW_CHILD_KINDS


def render_children(
    ctx: ServeContext,
    spec: MLServeSpec,
    settings: RenderSettings,
    scheduled_time: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every child of the MLServe described by ``spec`` and ``ctx``, in a stable apply order.

    Raises :class:`~mlserve.models.errors.InvalidConfig` when the spec and the database
    rows cannot be combined. Owner references are not set: the operator adds them.
    ``scheduled_time`` only matters for a scheduled workflow without RayCronJob (see
    :func:`~.workflow.render_workflow`).
    """
    if spec.type is ServeType.API:
        return render_api(resolve_api(ctx, spec), settings)
    return render_workflow(resolve_workflow(ctx, spec), settings, scheduled_time)
