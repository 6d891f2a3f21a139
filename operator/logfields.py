"""Fields that every log line of a unit of work carries: which MLServe, serve, environment and
deployment it is about, and the reason of an error.

Bound with :func:`bound` around a reconcile or a sync action (a context variable: each asyncio
task sees its own), completed with :func:`note` as the work learns more (the deployment id),
and copied onto each record by :class:`FieldsFilter`, so the JSON log (``MLSERVE_LOG_FORMAT=json``)
has them as fields, not only inside the message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["FIELDS", "FieldsFilter", "bound", "note"]

# ``mlserve`` is the MLServe's name (``name`` is the logger's, on every record)
FIELDS = ("namespace", "mlserve", "serve", "environment", "deployment_id", "reason")

_current: ContextVar[dict[str, Any] | None] = ContextVar("mlserve_log_fields", default=None)


def _known(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields {sorted(unknown)}: use {', '.join(FIELDS)}")
    return {key: value for key, value in fields.items() if value is not None}


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Within the block, every log record carries ``fields`` (None values left out)."""
    token = _current.set({**(_current.get() or {}), **_known(fields)})
    try:
        yield
    finally:
        _current.reset(token)


def note(**fields: Any) -> None:
    """Add ``fields`` to the innermost :func:`bound` block (nothing outside one)."""
    current = _current.get()
    if current is not None:
        current.update(_known(fields))


class FieldsFilter(logging.Filter):
    """Copies the bound fields onto each record, unless the call gave its own (``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_current.get() or {}).items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True
