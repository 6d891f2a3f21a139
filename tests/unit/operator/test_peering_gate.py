"""The database sync acts only in the replica kopf lets act (kopf's pause toggles).

kopf exposes its peering pause through no public API: :mod:`mlserve.operator.peering` reads
it from the running operator. These tests run a real kopf operator, so a kopf upgrade that
moves the toggles fails here rather than letting every replica sync.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles

from mlserve.operator.peering import ActiveReplica, KopfInternalsChanged, kopf_pause_toggles


async def test_the_pause_toggles_are_found_from_a_startup_handler() -> None:
    registry = kopf.OperatorRegistry()
    found: dict[str, Any] = {}
    stop = asyncio.Event()

    @kopf.on.login(registry=registry)
    async def nowhere(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="https://127.0.0.1:9")  # never reached: it stops first

    @kopf.on.startup(registry=registry)
    async def capture(**_: Any) -> None:
        found["toggles"] = kopf_pause_toggles()
        stop.set()

    await asyncio.wait_for(
        kopf.operator(registry=registry, standalone=True, clusterwide=True, stop_flag=stop), timeout=60
    )
    toggles = found["toggles"]
    assert isinstance(toggles, aiotoggles.ToggleSet)
    assert toggles.is_off(), "a standalone operator is never paused"


async def test_outside_a_running_operator_it_says_so() -> None:
    with pytest.raises(KopfInternalsChanged, match="update mlserve.operator.peering"):
        kopf_pause_toggles()


async def test_active_only_once_the_peering_is_read_and_nothing_pauses() -> None:
    toggles = aiotoggles.ToggleSet(any)
    active = ActiveReplica(toggles, "mlserve")
    missing = await toggles.make_toggle(False, name="peering CRD is missing")
    assert not active(), "kopf has not read the peering object yet: a lower priority may not know it"
    # kopf's toggle for one peering object starts on (peering is mandatory) ...
    peering = await toggles.make_toggle(True, name="mlserve@team-a")
    assert not active()
    # ... and turns off when no live peer has a higher (or the same) priority.
    await peering.turn_to(False)
    assert active()
    await missing.turn_to(True)
    assert not active()
    await missing.turn_to(False)
    other = await toggles.make_toggle(True, name="mlserve@team-b")
    assert not active(), "paused in favour of a peer in another watched namespace"
    await other.turn_to(False)
    assert active()
