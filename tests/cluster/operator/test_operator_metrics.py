"""The operator's /metrics, scraped while it serves: reconciles by result and reason, their
duration, the sync's ticks, the database's calls, the API requests by verb and code, and the
MLServes by phase, with the values a deploy and a bad request leave."""

from __future__ import annotations

import urllib.request

import pytest
from lightkube import Client
from mlserve_testing.mlserves import apply, mlserve, ready_at_v1, unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.cluster]


def scrape(process: OperatorProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(process.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


async def test_the_metrics_count_what_the_operator_did(
    operator_db: OperatorProcess, kube_client: Client, namespace: str
) -> None:
    await ready_at_v1(kube_client, namespace)
    bad = unique("ghost")
    apply(kube_client, mlserve(bad, namespace, "no-such-env", "v1"))
    wait_condition(kube_client, bad, namespace, "Ready", "False", reason="UnknownEnvironment", timeout=60)

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(operator_db)
        seen = total(samples, "mlserve_operator_reconciles_total", result="invalid", reason="UnknownEnvironment")
        ready = total(samples, "mlserve_operator_mlserves", phase="Ready")
        # the sync's first tick may end after the reconciles on a busy machine: wait for it too
        ticked = total(samples, "mlserve_operator_sync_ticks_total", result="ok")
        return samples if seen >= 1 and ready >= 1 and ticked >= 1 else None

    samples = wait_for(counted, timeout=30, what="the reconciles and a sync tick on /metrics")
    assert total(samples, "mlserve_operator_reconciles_total", result="ok") >= 1
    assert total(samples, "mlserve_operator_reconcile_duration_seconds_count") >= 2
    assert total(samples, "mlserve_operator_mlserves", phase="Invalid") >= 1
    assert total(samples, "mlserve_operator_db_calls_total", result="ok") >= 1
    assert total(samples, "mlserve_operator_db_call_duration_seconds_count") >= 1
    assert total(samples, "mlserve_operator_api_requests_total", verb="patch", code="200") >= 1
    assert ("mlserve_operator_pending_undeploys", ()) in samples
    assert total(samples, "process_resident_memory_bytes") > 0
