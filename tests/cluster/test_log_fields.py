"""The JSON log of a reconcile carries which MLServe, serve and environment it is about, and the
reason of an error, as fields a log search can filter on (not only inside the message)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from lightkube import Client
from mlserve_testing.mlserves import MLServe, apply, mlserve

from mlserve.operator.cli.run import configure_logging
from mlserve.operator.dev.cluster import ClusterHandle
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("json", "DEBUG")
    root.handlers[0].stream = stream  # type: ignore[attr-defined]
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_reconciles_log_lines_carry_the_mlserve_and_the_reason(
    cluster: ClusterHandle,
    kube_client: Client,
    mlserve_crd: None,
    namespace: str,
    sqlite_darwin_db: None,
    json_log: io.StringIO,
) -> None:
    apply(kube_client, mlserve("ghost", namespace, "prod", "v1"))
    body = kube_client.get(MLServe, "ghost", namespace=namespace).to_dict()
    settings = OperatorSettings(cluster_name="local", render=RenderSettings(), database=None)
    async with cluster.async_client(field_manager="mlserve-operator") as client:
        report = await reconcile(body, Runtime(settings=settings, client=client, events=RecordingEvents()))
    assert report.error is not None and report.error.reason == "UnknownEnvironment"
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    (warning,) = [line for line in lines if line["level"] == "WARNING"]
    assert {k: warning.get(k) for k in ("namespace", "mlserve", "serve", "environment", "reason")} == {
        "namespace": namespace,
        "mlserve": "ghost",
        "serve": "ghost",
        "environment": "prod",
        "reason": "UnknownEnvironment",
    }
    done = [line for line in lines if line["message"].startswith("reconciled")]
    assert done and all(line["mlserve"] == "ghost" for line in done)
