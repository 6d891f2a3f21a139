"""The tests' name for :mod:`mlserve.operator.dev.darwin`: Darwin's writes in plain SQL."""

from __future__ import annotations

from mlserve.operator.dev.darwin import (
    Seed,
    active_rows,
    build_job,
    count,
    deploy,
    deployments,
    env_configs,
    finish_build,
    insert,
    query,
    seed_api_serve,
    seed_workflow_serve,
)
from mlserve.operator.dev.darwin import db_now as _now

__all__ = [
    "Seed",
    "_now",
    "active_rows",
    "build_job",
    "count",
    "deploy",
    "deployments",
    "env_configs",
    "finish_build",
    "insert",
    "query",
    "seed_api_serve",
    "seed_workflow_serve",
]
