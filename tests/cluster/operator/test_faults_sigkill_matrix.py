"""The SIGKILL matrix: the operator killed at named points of a deploy and of a deletion, then
started again; the sync protocol's invariants hold, nothing is lost, nothing duplicated, and
the pair converges within CONVERGE_WITHIN seconds.

How a point is reached, deterministically and without a test hook in the operator: the
operator talks to the API server through the fault proxy (:mod:`mlserve_testing.faultproxy`),
which *holds* the first request of the point (a verb on a path) and tells the test. Every
write of the operator is an API request, and its database writes come before the request
that follows them (the deployment row is committed before the MLServe's annotation patch,
the finalizer's ENDED row before the finalizer's removal), so holding that request stops
the deploy exactly between two of its steps. While it is held the test SIGKILLs the process:

- ``before``: the request never reaches the API server (the proxy drops it): the operator
  died after everything before it, before this write;
- ``after``: the API server did the write, the operator died before it learnt the answer.

Flows (each point a fresh serve in the matrix's namespace):

- ``apply-new``: a user applies a new MLServe (two to three pods: Deployment, Service, HPA,
  Ingress, PodDisruptionBudget): the reconcile records the deployment, patches the MLServe's
  metadata (annotation, labels, finalizer), applies the five children, writes the status;
- ``apply-upgrade``: a user asks a Ready MLServe for v2: the deployment row, then the patch;
- ``darwin-new`` / ``darwin-upgrade``: Darwin deploys by SQL; the sync creates the MLServe /
  patches its spec;
- ``delete``: a user deletes a Ready MLServe: the finalizer ends the deployment, then its
  removal is patched;
- ``darwin-undeploy``: Darwin undeploys by SQL: the sync deletes the MLServe.

CI runs SAMPLE; ``--kill-matrix=all`` (or ``MLSERVE_TEST_KILL_MATRIX=all``) runs every point.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube import Client
from mlserve_testing import darwin
from mlserve_testing.faultproxy import Rule
from mlserve_testing.faults import Ledger, ProxiedOperator, module_namespace, proxied_operator, ready_at_version, record
from mlserve_testing.mlserves import MLServe, apply, gone, mlserve, unique
from mlserve_testing.operator import StoppableMariaDB
from mlserve_testing.wait import wait_for

from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb]

CONVERGE_WITHIN = 60.0
"""Seconds from the restart (the operator's own start included) to convergence."""
REACH_WITHIN = 60.0


@dataclass(frozen=True)
class Point:
    flow: str
    step: str
    verb: str
    path: str
    """Regular expression on the request's path; ``{mlserve}`` and ``{child}`` are filled in."""
    hold: str

    @property
    def name(self) -> str:
        return f"{self.flow}:{self.step}:{self.hold}"


_STEPS = [
    ("apply-new", "metadata-patch", "patch", r"/mlserves/{mlserve}$"),
    ("apply-new", "deployment-apply", "patch", r"/deployments/{child}$"),
    ("apply-new", "service-apply", "patch", r"/services/{child}$"),
    ("apply-new", "hpa-apply", "patch", r"/horizontalpodautoscalers/{child}$"),
    ("apply-new", "ingress-apply", "patch", r"/ingresses/{child}$"),
    ("apply-new", "pdb-apply", "patch", r"/poddisruptionbudgets/{child}$"),
    ("apply-new", "status-write", "patch", r"/mlserves/{mlserve}/status$"),
    ("apply-upgrade", "metadata-patch", "patch", r"/mlserves/{mlserve}$"),
    ("darwin-new", "mlserve-create", "create", r"/mlserves$"),
    ("darwin-upgrade", "spec-patch", "patch", r"/mlserves/{mlserve}$"),
    ("delete", "finalizer-removal", "patch", r"/mlserves/{mlserve}$"),
    ("darwin-undeploy", "mlserve-delete", "delete", r"/mlserves/{mlserve}$"),
]
POINTS = [Point(flow, step, verb, path, hold) for flow, step, verb, path in _STEPS for hold in ("before", "after")]
SAMPLE = (
    "apply-upgrade:metadata-patch:before",  # the deployment row committed, the annotation not written
    "apply-new:deployment-apply:after",
    "delete:finalizer-removal:before",  # the deployment ENDED, the MLServe still held
    "darwin-new:mlserve-create:after",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "point" in metafunc.fixturenames:
        chosen = (
            POINTS if metafunc.config.getoption("kill_matrix") == "all" else [p for p in POINTS if p.name in SAMPLE]
        )
        metafunc.parametrize("point", chosen, ids=[p.name for p in chosen])


@pytest.fixture(scope="module")
def matrix_namespace(kube_client: Client, mlserve_crd: None) -> Iterator[str]:
    yield from module_namespace(kube_client, "kill-matrix")


@pytest.fixture(scope="module")
def proxied(
    cluster: Any,
    kube_client: Client,
    operator_mariadb: StoppableMariaDB,
    matrix_namespace: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxiedOperator]:
    folder = tmp_path_factory.mktemp("kill-matrix")
    yield from proxied_operator(
        cluster, kube_client, request, operator_mariadb.url, folder, [matrix_namespace], name="kill-matrix"
    )


@pytest.fixture
async def running(proxied: ProxiedOperator, darwin_rows: StoppableMariaDB) -> AsyncIterator[ProxiedOperator]:
    proxied.operator.ensure_running()
    yield proxied
    proxied.proxy.clear()
    proxied.operator.ensure_running()


async def _prepare(point: Point, client: Client, namespace: str) -> tuple[Ledger, str]:
    """A pair in the state the flow starts from; returns it and its MLServe's name."""
    serve, env = unique("k"), unique("prod")
    replicas = (2, 3) if point.flow == "apply-new" else (1, 1)
    seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=replicas[0], max_replicas=replicas[1])
    pair = Ledger(seed, serve, env, namespace)
    if point.flow in ("apply-new",):
        return pair, serve
    if point.flow in ("apply-upgrade", "delete"):
        pair.expected_new = ["v1"]
        apply(client, mlserve(serve, namespace, env, "v1"))
        await pair.converge(client, 90, extra=lambda: ready_at_version(client, serve, namespace, "v1"))
        return pair, serve
    name = names.mlserve_name(serve, env)
    if point.flow in ("darwin-upgrade", "darwin-undeploy"):
        await pair.darwin_deploy("v1")
        await pair.converge(client, 90, extra=lambda: ready_at_version(client, name, namespace, "v1"))
    return pair, name


async def _act(point: Point, pair: Ledger, client: Client, name: str) -> None:
    namespace = pair.namespace
    if point.flow == "apply-new":
        pair.expected_new = ["v1"]
        apply(client, mlserve(name, namespace, pair.environment, "v1"))
    elif point.flow == "apply-upgrade":
        pair.expected_new = ["v2"]
        apply(client, mlserve(name, namespace, pair.environment, "v2"))
    elif point.flow == "darwin-new":
        await pair.darwin_deploy("v1")
    elif point.flow == "darwin-upgrade":
        await pair.darwin_deploy("v2")
    elif point.flow == "delete":
        pair.expected_new = []
        client.delete(MLServe, name, namespace=namespace)
    elif point.flow == "darwin-undeploy":
        await pair.darwin_undeploy()
    else:
        raise AssertionError(point.flow)


def _converged(point: Point, client: Client, name: str, namespace: str) -> Any:
    if point.flow in ("delete", "darwin-undeploy"):
        return lambda: gone(client, MLServe, name, namespace)
    version = "v2" if point.flow in ("apply-upgrade", "darwin-upgrade") else "v1"
    return lambda: ready_at_version(client, name, namespace, version)


async def test_the_operator_killed_at_a_named_point_converges(
    running: ProxiedOperator, kube_client: Client, matrix_namespace: str, point: Point
) -> None:
    proxy, operator, namespace = running.proxy, running.operator, matrix_namespace
    pair, name = await _prepare(point, kube_client, namespace)
    await pair.snapshot()
    child = names.child_name(pair.serve, pair.environment)
    path = point.path.format(mlserve=name, child=child)
    rule = proxy.add(Rule(point.name, verb=point.verb, path=path, hold=point.hold, times=1))
    await _act(point, pair, kube_client, name)
    assert rule.wait_reached(REACH_WITHIN), f"point {point.name} not reached: no {point.verb} of {path}"
    if point.hold == "after":
        # The write is done on the server (its answer is held): wait until it is recorded.
        wait_for(
            lambda: any(r.rule == point.name and r.status is not None for r in proxy.recorded()),
            timeout=30,
            what=f"the API server's answer to {point.verb} {path}",
        )
    operator.kill()
    proxy.release(rule, forward=point.hold == "after")
    proxy.remove(rule)
    killed = time.monotonic()
    operator.start()
    await pair.converge(kube_client, CONVERGE_WITHIN, extra=_converged(point, kube_client, name, namespace))
    took = time.monotonic() - killed
    if point.flow == "delete":
        # The deletion's write happened once: the deployment ENDED, no pointer left.
        rows = await pair.rows()
        assert [r["status"] for r in rows] == ["ENDED"], rows
    lost, duplicates, notes = await pair.lost_and_duplicated(kube_client)
    record(
        f"kill {point.name}",
        1,
        survived=not lost and not duplicates,
        rows_lost=lost,
        duplicates=duplicates,
        converge_seconds=took,
        note="; ".join(notes),
    )
    assert (lost, duplicates) == (0, 0), notes
