"""Whether this replica is the one that acts, under kopf peering.

With ``MLSERVE_PEERING_NAME`` set, kopf pauses its watches, handlers and daemons while a live
peer of a higher priority (or of the same priority) is listed in the peering object. Work the
operator runs outside kopf's handlers, the database → cluster sync loop, must pause with them,
or a paused replica would still read the database and write MLServes.

kopf keeps that pause in one toggle set (``operator_paused``, built in ``kopf.spawn_tasks`` and
handed to its root tasks) and exposes it through no public API; daemons and timers would be
paused by it, but kopf puts a finalizer on every object that has one, and no object exists
exactly once per operator that could carry it safely. So :func:`kopf_pause_toggles` finds the
toggle set in the running operator, and it is the only code that knows where it is: if a kopf
upgrade moves it, the function raises (the operator does not start, and
``tests/operator/test_peering_gate.py`` fails), it never silently reports "active".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ActiveReplica", "KopfInternalsChanged", "kopf_pause_toggles"]

DAEMON_KILLER_TASK = "daemon killer"
"""The name of kopf's root task that receives the pause toggles (it stops daemons on pause)."""


class KopfInternalsChanged(RuntimeError):
    """kopf keeps its pause toggles elsewhere than this module expects."""


def kopf_pause_toggles() -> Any:
    """kopf's ``operator_paused`` toggle set of the operator running in this event loop.

    Read from the arguments of kopf's "daemon killer" root task (``kopf._core.engines.daemons.
    daemon_killer(operator_paused=...)``), which kopf creates in ``spawn_tasks`` before any
    startup handler runs. The set is "on" while any of its toggles is on: one per peering
    object kopf watches (named ``<peering name>@<namespace>``, on while a peer of higher or
    equal priority is alive), and one while the peering CRD is missing.

    Call it from inside the operator (a startup handler). Raises
    :class:`KopfInternalsChanged` when it is not found.
    """
    for task in asyncio.all_tasks():
        if task.get_name() != DAEMON_KILLER_TASK:
            continue
        guard_frame = getattr(task.get_coro(), "cr_frame", None)
        inner = guard_frame.f_locals.get("coro") if guard_frame is not None else None
        inner_frame = getattr(inner, "cr_frame", None)
        toggles = inner_frame.f_locals.get("operator_paused") if inner_frame is not None else None
        if toggles is not None and callable(getattr(toggles, "is_on", None)) and isinstance(toggles, Iterable):
            return toggles
    raise KopfInternalsChanged(
        "kopf's operator-paused toggles were not found in the running operator (looked in the "
        f"arguments of its {DAEMON_KILLER_TASK!r} task): this kopf version keeps them elsewhere; "
        "update mlserve.operator.peering before running replicas with MLSERVE_PEERING_NAME"
    )


@dataclass(frozen=True)
class ActiveReplica:
    """Callable: is this replica the one that acts right now?

    True once kopf has created the toggle of at least one of its peering objects (so it has
    started to read them: until then a lower-priority replica does not know yet that it must
    pause) and no toggle of the set is on.
    """

    toggles: Any
    peering_name: str

    def __call__(self) -> bool:
        prefix = f"{self.peering_name}@"
        established = any((toggle.name or "").startswith(prefix) for toggle in self.toggles)
        return established and not self.toggles.is_on()
