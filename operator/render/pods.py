"""Pieces shared by every pod the renderers build: quantities, node selectors, env lists."""

from __future__ import annotations

from mlserve.models.enums import NodeCapacityType

from .settings import RenderSettings

__all__ = ["container_env", "cpu_quantity", "memory_quantity", "node_selector", "resources"]

# Karpenter's values of the karpenter.sh/capacity-type label.
_CAPACITY_LABEL_VALUES = {
    NodeCapacityType.SPOT: "spot",
    NodeCapacityType.ON_DEMAND: "on-demand",
}


def cpu_quantity(cores: float) -> str:
    """Whole cores as ``"2"``, fractions in millicores (``0.5`` → ``"500m"``)."""
    millis = round(cores * 1000)
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def memory_quantity(gigabytes: int) -> str:
    """Whole gigabytes as Darwin writes them: ``"4G"`` (10^9 bytes, not Gi)."""
    return f"{gigabytes}G"


def resources(cores: float, memory: int) -> dict[str, dict[str, str]]:
    """Requests equal to limits (Guaranteed QoS), as Darwin renders them."""
    amounts = {"cpu": cpu_quantity(cores), "memory": memory_quantity(memory)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def node_selector(capacity: NodeCapacityType, settings: RenderSettings) -> dict[str, str] | None:
    """``{karpenter.sh/capacity-type: spot|on-demand}``, or None when the setting turns it off."""
    if settings.capacity_type_label is None:
        return None
    return {settings.capacity_type_label: _CAPACITY_LABEL_VALUES[capacity]}


def container_env(env: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """A container's ``env`` list, in the (sorted) order given."""
    return [{"name": name, "value": value} for name, value in env]
