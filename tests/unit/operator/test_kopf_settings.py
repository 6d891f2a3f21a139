"""kopf's settings as the startup handler sets them (handlers.configure_kopf)."""

from __future__ import annotations

import kopf
import pytest

from mlserve.operator.handlers import configure_kopf
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec.api import FINALIZER


def _configured(namespaces: tuple[str, ...], peering_name: str | None = None) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    ours = OperatorSettings(
        cluster_name="local", namespaces=namespaces, peering_name=peering_name, render=RenderSettings(), database=None
    )
    configure_kopf(settings, ours)
    return settings


@pytest.mark.parametrize(
    ("namespaces", "scanning_disabled"),
    [
        ((), False),  # the whole cluster: CRDs installed later are picked up
        (("serving",), True),
        (("serving", "workflows"), True),
        (("team-*",), False),  # patterns need the namespace watch
        (("serving", "!kube-*"), False),
    ],
)
def test_scanning_is_off_when_every_namespace_is_a_name(namespaces: tuple[str, ...], scanning_disabled: bool) -> None:
    # kopf's namespace and CRD observers would be refused (no cluster-wide rights) and retried
    # for about a minute before kopf falls back to the same names.
    assert _configured(namespaces).scanning.disabled is scanning_disabled


def test_peering_and_persistence() -> None:
    standalone = _configured(("serving",))
    assert standalone.peering.standalone and standalone.persistence.finalizer == FINALIZER
    peered = _configured(("serving",), "mlserve")
    assert peered.peering.name == "mlserve" and peered.peering.mandatory and not peered.peering.clusterwide
