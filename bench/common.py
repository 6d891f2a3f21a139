"""What the benchmarks share: the cluster they run on, the MLServe CRD, timing helpers.

Imported by the scripts of this folder (run as ``python bench/<script>.py``, which puts
this folder on the import path).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lightkube import ApiError, Client, codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

from mlserve.operator.dev.cluster import ClusterHandle, LocalCluster, ensure_binaries
from mlserve.operator.reconcile.kube import MLServe

ROOT = Path(__file__).resolve().parents[1]
FIELD_MANAGER = "mlserve-bench"


def db_now() -> str:
    """The current UTC time as the database's DATETIME(6) columns take it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Until ``predicate()`` is true; an error it raises counts as not yet (and is shown
    when the time is up)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - e.g. 429 while a new CRD's storage starts
            last_error = exc
        if time.monotonic() > deadline:
            seen = f" (last error: {last_error})" if last_error else ""
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(0.2)


def start_cluster(use_kubeconfig: bool, nodes: int, state_dir: Path) -> tuple[ClusterHandle, LocalCluster | None]:
    """The cluster of $KUBECONFIG, or a local control plane started in ``state_dir`` (the
    second value, to stop at the end)."""
    if use_kubeconfig:
        return ClusterHandle.from_kubeconfig(Path(os.environ["KUBECONFIG"])), None
    local = LocalCluster(ensure_binaries(), nodes=nodes, state_dir=state_dir)
    return local.start(), local


def _established(client: Client, name: str) -> bool:
    status = client.get(CustomResourceDefinition, name).status
    conditions = (status.conditions if status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def install_mlserve_crd(client: Client, namespace: str) -> None:
    """The MLServe CRD, established and listable, and ``namespace``."""
    for crd in codecs.load_all_yaml((ROOT / "crds" / "mlserve.darwin.io_mlserves.yaml").read_text()):
        client.apply(crd, field_manager=FIELD_MANAGER, force=True)
        wait(lambda n=crd.metadata.name: _established(client, n), 60, "the MLServe CRD")
    try:
        client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as exc:
        if exc.status.code != 409:
            raise
    # the new CRD's storage answers 429 for a moment after Established
    wait(lambda: list(client.list(MLServe, namespace=namespace)) is not None, 60, "MLServes to be listable")


def p50_p90_max(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return statistics.median(ordered), p90, ordered[-1]
