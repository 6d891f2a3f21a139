"""The renderers' entry point for the operator: every child of one MLServe.

The kinds they may produce are listed once, in :data:`mlserve.operator.spec.api.CHILD_KINDS`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlserve.models.enums import ServeType
from mlserve.models.errors import InvalidConfig
from mlserve.operator.spec import MLServeSpec, ServeContext, resolve_api, resolve_workflow

from .api import render_api
from .settings import RenderSettings
from .workflow import render_workflow

__all__ = ["render_children"]


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
    try:
        if spec.type is ServeType.API:
            return render_api(resolve_api(ctx, spec), settings)
        return render_workflow(resolve_workflow(ctx, spec), settings, scheduled_time)
    except (ArithmeticError, OverflowError) as exc:
        # A number no bound caught (a row written before the bounds, a renderer's product):
        # the input is wrong, not the operator, and retrying cannot help.
        raise InvalidConfig(
            "resources",
            f"a number of serve {ctx.serve!r} in {ctx.environment.name!r} cannot be turned into a "
            f"Kubernetes quantity ({type(exc).__name__}): set cores and memory within the CRD's bounds "
            "(cores 0.1 to 128, memory 1 to 1024 GB)",
        ) from None
