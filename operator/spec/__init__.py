"""Typed, validated inputs of the renderers: the MLServe spec and the resolved serve context.

No I/O here: :class:`MLServeSpec` is parsed from an MLServe's ``spec``; :class:`ServeContext`
is built from database rows by the caller (``mlserve.operator.reconcile.context``); the
functions of :mod:`.effective` merge the spec's overrides over the database's infra config,
in one place, into :class:`ApiServe` or :class:`WorkflowServe`, the renderers' inputs.
Every error is a :class:`mlserve.models.errors.InvalidConfig` whose ``field`` names the path
(``spec.replicas.min``) and whose message says how to fix it.

Two more pure modules live here because every layer above ``models`` reads them:
:mod:`.api`, every name the operator shares with the cluster (group, kinds, label and
annotation keys, reasons, the registry of child kinds), and :mod:`.namespaces`, which
namespaces ``MLSERVE_NAMESPACES`` selects.
"""

from __future__ import annotations

from mlserve.models.errors import InvalidConfig

from .context import EnvironmentContext, ServeContext
from .effective import (
    ApiServe,
    WorkerGroup,
    WorkflowServe,
    check_identity,
    effective_api_config,
    effective_head_config,
    effective_worker_groups,
    resolve_api,
    resolve_workflow,
)
from .mlserve import (
    Autoscaling,
    HeadOverride,
    MLServeSpec,
    PodResources,
    ReplicaBounds,
    WorkerGroupOverride,
)

__all__ = [
    "ApiServe",
    "Autoscaling",
    "EnvironmentContext",
    "HeadOverride",
    "InvalidConfig",
    "MLServeSpec",
    "PodResources",
    "ReplicaBounds",
    "ServeContext",
    "WorkerGroup",
    "WorkerGroupOverride",
    "WorkflowServe",
    "check_identity",
    "effective_api_config",
    "effective_head_config",
    "effective_worker_groups",
    "resolve_api",
    "resolve_workflow",
]
