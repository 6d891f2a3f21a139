"""``mlserve takeover``: a serve moves from Darwin's Helm release to its MLServe with no moment
without a ready pod, and Darwin's objects (and its Ingress on the host) are gone afterwards.

Darwin's release is faked with the objects its chart (``darwin-fastapi-serve``) makes, labelled
as the chart labels them, plus Helm's release record; kwok makes every pod ready.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec, ServicePort, ServiceSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.networking_v1 import (
    HTTPIngressPath,
    HTTPIngressRuleValue,
    IngressBackend,
    IngressRule,
    IngressServiceBackend,
    IngressSpec,
    ServiceBackendPort,
)
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Pod, Secret, Service
from lightkube.resources.networking_v1 import Ingress
from mlserve_testing import darwin
from mlserve_testing.mlserves import unique, wait_condition
from mlserve_testing.operator import OperatorProcess
from mlserve_testing.wait import wait_for

from mlserve.operator.dcm.takeover import RELEASE_LABEL
from mlserve.operator.render import names

pytestmark = [pytest.mark.cluster]

MLSERVE = Path(sys.executable).parent / "mlserve"


def darwin_release(client: Client, namespace: str, serve: str, env: str, host: str, replicas: int = 2) -> str:
    """The objects Darwin's chart makes for release ``<env>-<serve>`` (values.name ``<serve>-<env>``)."""
    release = f"{env}-{serve}"
    fullname = f"{release}-{serve}-{env}"[:63].rstrip("-")
    labels = {
        "helm.sh/chart": "darwin-fastapi-serve-1.0.0",
        "app.kubernetes.io/name": fullname,
        RELEASE_LABEL: release,
        "app.kubernetes.io/managed-by": "Helm",
    }
    selector = {"app.kubernetes.io/name": fullname}
    meta = ObjectMeta(name=fullname, namespace=namespace, labels=labels)
    client.create(
        Deployment(
            metadata=meta,
            spec=DeploymentSpec(
                replicas=replicas,
                selector=LabelSelector(matchLabels=selector),
                template=PodTemplateSpec(
                    metadata=ObjectMeta(labels=labels),
                    spec=PodSpec(containers=[Container(name="app", image="registry.example.com/darwin:v1")]),
                ),
            ),
        )
    )
    client.create(
        Service(metadata=meta, spec=ServiceSpec(selector=selector, ports=[ServicePort(name="http", port=80)]))
    )
    backend = IngressBackend(service=IngressServiceBackend(name=fullname, port=ServiceBackendPort(number=80)))
    client.create(
        Ingress(
            metadata=ObjectMeta(name=f"{fullname}-{namespace}-internal", namespace=namespace, labels=labels),
            spec=IngressSpec(
                ingressClassName="nginx",
                rules=[
                    IngressRule(
                        host=host,
                        http=HTTPIngressRuleValue(
                            paths=[HTTPIngressPath(path="/", pathType="Prefix", backend=backend)]
                        ),
                    )
                ],
            ),
        )
    )
    client.create(
        Secret(
            metadata=ObjectMeta(
                name=f"sh.helm.release.v1.{release}.v1",
                namespace=namespace,
                labels={"owner": "helm", "name": release, "status": "deployed", "version": "1"},
            ),
            type="helm.sh/release.v1",
            data={"release": base64.b64encode(b"not read by the takeover").decode()},
        )
    )
    return release


def mlserve_takeover(env: dict[str, str], serve: str, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLSERVE), "takeover", serve, "--env", environment, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _ready(pod: Any) -> bool:
    if pod.metadata.deletionTimestamp is not None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class ReadyPods:
    """Samples the ready pods of Darwin's release and of the MLServe until stopped."""

    def __init__(self, client: Client, namespace: str, release: str, ours: dict[str, str]) -> None:
        self.client, self.namespace, self.release, self.ours = client, namespace, release, ours
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def count(self) -> tuple[int, int]:
        theirs = list(self.client.list(Pod, namespace=self.namespace, labels={RELEASE_LABEL: self.release}))
        ours = list(self.client.list(Pod, namespace=self.namespace, labels=self.ours))
        return sum(map(_ready, theirs)), sum(map(_ready, ours))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(self.count())
                self._stop.wait(0.1)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> ReadyPods:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        # The thread's last sample may be older than what the test waited for (it samples
        # every 0.1 s): the last one is taken now, after.
        self.samples.append(self.count())


class IngressClaims:
    """Watches the namespace's Ingresses and records, after every change the API server made,
    which Ingresses claim which host: the watch's events are the API server's changes in
    order, so a moment when two Ingresses claimed one host shows as one recorded state."""

    def __init__(self, client: Client, namespace: str, host: str) -> None:
        self.client, self.namespace, self.host = client, namespace, host
        self.live: dict[str, set[str]] = {}
        self.states: list[list[str]] = []
        """After each event: the Ingresses claiming the host, sorted."""
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def claimants(self) -> list[str]:
        return sorted(name for name, hosts in self.live.items() if self.host in hosts)

    def _run(self) -> None:
        try:
            for kind, obj in self.client.watch(Ingress, namespace=self.namespace, server_timeout=240):
                name = obj.metadata.name
                if kind == "DELETED":
                    self.live.pop(name, None)
                else:
                    self.live[name] = set(_hosts(obj))
                self.states.append(self.claimants())
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> IngressClaims:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        pass  # the watch ends by its server timeout; the thread is a daemon


@pytest.fixture
def kube_env(operator_process: OperatorProcess, cluster: Any) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVE_", "MYSQL_"))}
    env.update(KUBECONFIG=str(cluster.kubeconfig), MLSERVE_DB_URL=operator_process.db_url)
    yield env


async def test_takeover_moves_a_serve_from_darwins_release_with_a_ready_pod_throughout(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, kube_env: dict[str, str]
) -> None:
    serve, env = unique("fraud"), unique("prod")
    host = f"{serve}-{env}.models.example.com"
    release = darwin_release(kube_client, namespace, serve, env, host)
    monitor = ReadyPods(kube_client, namespace, release, names.selector(serve, env))
    wait_for(lambda: monitor.count()[0] == 2, timeout=60, what="Darwin's release's 2 pods ready")
    claims = IngressClaims(kube_client, namespace, host)
    darwins_ingress = next(i.metadata.name for i in kube_client.list(Ingress, namespace=namespace))
    ours = names.child_name(serve, env)

    with monitor, claims:
        wait_for(lambda: claims.states, timeout=30, what="the Ingress watch's first event")
        # Darwin deployed it (its rows); the sync creates the MLServe beside the release.
        seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=2, max_replicas=2)
        deployment_id = await darwin.deploy(seed, "v1")
        await darwin.insert("app_layer_deployments", deployment_id=deployment_id, environment_variables={})
        done = mlserve_takeover(kube_env, serve, env, "--timeout", "120s", "--no-helm")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: monitor.count() == (0, 2), timeout=60, what="only the MLServe's 2 pods ready")
        wait_for(lambda: claims.claimants() == [ours], timeout=30, what="the watch seeing only the MLServe's Ingress")
    assert monitor.error is None, monitor.error
    assert claims.error is None, claims.error

    # Never two Ingresses on the host: Darwin's alone, then (after a gap) the MLServe's alone.
    assert all(len(state) <= 1 for state in claims.states), claims.states
    held = [state for i, state in enumerate(claims.states) if i == 0 or state != claims.states[i - 1]]
    assert held == [[darwins_ingress], [], [ours]], held
    # While Darwin's Ingress stood, the MLServe said why its own was held back.
    events = [e for e in kube_client.list(Event, namespace=namespace) if e.reason == "HostClaimed"]
    assert events and darwins_ingress in (events[0].message or "")

    # Never a moment without a ready pod; both ran side by side, then only ours.
    after_darwin_ready = monitor.samples
    assert after_darwin_ready and min(sum(s) for s in after_darwin_ready) >= 1, after_darwin_ready
    assert any(theirs and ours for theirs, ours in after_darwin_ready), "the two never ran side by side"
    assert after_darwin_ready[-1] == (0, 2)

    assert f"removed Ingress/{release}" in done.stdout
    for kind in (Deployment, Service, Ingress, Secret):
        assert not list(kube_client.list(kind, namespace=namespace, labels={RELEASE_LABEL: release}))
    assert not list(kube_client.list(Secret, namespace=namespace, labels={"owner": "helm", "name": release}))
    claims = [i.metadata.name for i in kube_client.list(Ingress, namespace=namespace) if host in _hosts(i)]
    assert claims == [names.child_name(serve, env)]
    body = wait_condition(kube_client, names.mlserve_name(serve, env), namespace, "Ready")
    assert body["status"]["deploymentId"] == deployment_id
    # The takeover recorded nothing: Darwin's deployment is still the only one.
    assert [r["id"] for r in await darwin.deployments(seed.serve, seed.environment)] == [deployment_id]


def _hosts(ingress: Any) -> list[str]:
    return [rule.host for rule in ingress.spec.rules or [] if rule.host]


async def test_takeover_leaves_darwins_release_when_the_mlserve_never_gets_ready(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, kube_env: dict[str, str]
) -> None:
    serve, env = unique("slow"), unique("prod")
    release = darwin_release(kube_client, namespace, serve, env, f"{serve}-{env}.models.example.com", replicas=1)
    # A serve that cannot schedule: its node selector matches no node.
    seed = await darwin.seed_api_serve(
        serve,
        env,
        namespace,
        min_replicas=1,
        max_replicas=1,
        env_config={**darwin.env_configs(namespace), "node_selector": {"example.com/pool": "none-such"}},
    )
    deployment_id = await darwin.deploy(seed, "v1")
    await darwin.insert("app_layer_deployments", deployment_id=deployment_id, environment_variables={})
    done = mlserve_takeover(kube_env, serve, env, "--timeout", "15s", "--no-helm")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is not Ready on deployment" in done.stderr
    assert "Darwin's release is left as it was" in done.stderr
    assert [d.metadata.name for d in kube_client.list(Deployment, namespace=namespace, labels={RELEASE_LABEL: release})]
    assert list(kube_client.list(Secret, namespace=namespace, labels={"owner": "helm", "name": release}))


DARWIN_LIKE_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: darwin-fastapi-serve\nversion: 1.0.0\n",
    "templates/_helpers.tpl": """{{- define "fullname" -}}
{{- printf "%s-%s" .Release.Name .Values.name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "labels" -}}
helm.sh/chart: darwin-fastapi-serve-1.0.0
app.kubernetes.io/name: {{ include "fullname" . }}
darwin.dream11.com/resource-instance-id: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
""",
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fullname" . }}
  labels: {{- include "labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ include "fullname" . }}
  template:
    metadata:
      labels: {{- include "labels" . | nindent 8 }}
    spec:
      containers:
        - name: app
          image: registry.example.com/darwin:v1
""",
    "templates/service.yaml": """apiVersion: v1
kind: Service
metadata:
  name: {{ include "fullname" . }}
  labels: {{- include "labels" . | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/name: {{ include "fullname" . }}
  ports:
    - name: http
      port: 80
""",
    "templates/ingress.yaml": """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "fullname" . }}-{{ .Release.Namespace }}-internal
  labels: {{- include "labels" . | nindent 4 }}
spec:
  ingressClassName: nginx
  rules:
    - host: {{ .Values.host | quote }}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {{ include "fullname" . }}
                port:
                  number: 80
""",
}


async def test_takeover_uninstalls_a_helm_release_when_helm_is_at_hand(
    operator_db: OperatorProcess,
    kube_client: Client,
    namespace: str,
    kube_env: dict[str, str],
    cluster: Any,
    tmp_path: Path,
) -> None:
    from mlserve_testing.chart import Helm, project_helm

    serve, env = unique("churn"), unique("prod")
    host = f"{serve}-{env}.models.example.com"
    release = f"{env}-{serve}"
    chart = tmp_path / "darwin-fastapi-serve"
    for path, text in DARWIN_LIKE_CHART.items():
        (chart / path).parent.mkdir(parents=True, exist_ok=True)
        (chart / path).write_text(text)
    helm = Helm(project_helm(), tmp_path / "helm-home")
    helm.run(
        "install", release, str(chart), "--namespace", namespace,
        "--set", f"name={serve}-{env}", "--set", "replicaCount=1", "--set", f"host={host}",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    monitor = ReadyPods(kube_client, namespace, release, names.selector(serve, env))
    wait_for(lambda: monitor.count()[0] == 1, timeout=60, what="the Helm release's pod ready")

    with monitor:
        seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
        deployment_id = await darwin.deploy(seed, "v1")
        await darwin.insert("app_layer_deployments", deployment_id=deployment_id, environment_variables={})
        path = f"{helm.binary.parent}{os.pathsep}{kube_env.get('PATH', '')}"
        helm_env = {
            **kube_env,
            "PATH": path,
            "HOME": str(helm.home),
            "HELM_CACHE_HOME": str(helm.home / "cache"),
            "HELM_CONFIG_HOME": str(helm.home / "config"),
            "HELM_DATA_HOME": str(helm.home / "data"),
        }
        done = mlserve_takeover(helm_env, serve, env, "--timeout", "120s")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: monitor.count() == (0, 1), timeout=60, what="only the MLServe's pod ready")
    assert monitor.error is None, monitor.error
    assert min(sum(s) for s in monitor.samples) >= 1, monitor.samples

    assert f"removed helm release {release}" in done.stdout
    listed = helm.run("list", "--namespace", namespace, "--short", kubeconfig=cluster.kubeconfig)
    assert release not in listed.stdout.split()
    claims = [i.metadata.name for i in kube_client.list(Ingress, namespace=namespace) if host in _hosts(i)]
    assert claims == [names.child_name(serve, env)]


async def test_takeover_creates_the_mlserve_the_sync_has_not_made_yet(
    operator_db: OperatorProcess, kube_client: Client, namespace: str, kube_env: dict[str, str]
) -> None:
    """With the operator stopped, the takeover creates the MLServe as the sync would; once the
    operator runs, it is Ready on Darwin's deployment, recorded nothing, and the release goes."""
    serve, env = unique("late"), unique("prod")
    release = darwin_release(kube_client, namespace, serve, env, f"{serve}-{env}.models.example.com", replicas=1)
    monitor = ReadyPods(kube_client, namespace, release, names.selector(serve, env))
    wait_for(lambda: monitor.count()[0] == 1, timeout=60, what="the release's pod ready")
    operator_db.stop()
    try:
        seed = await darwin.seed_api_serve(serve, env, namespace, min_replicas=1, max_replicas=1)
        deployment_id = await darwin.deploy(seed, "v1")
        await darwin.insert("app_layer_deployments", deployment_id=deployment_id, environment_variables={})
        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        runner = threading.Thread(
            target=lambda: outcome.update(done=mlserve_takeover(kube_env, serve, env, "--timeout", "150s", "--no-helm"))
        )
        with monitor:
            runner.start()
            wait_for(
                lambda: not gone_mlserve(kube_client, names.mlserve_name(serve, env), namespace),
                timeout=60,
                what="the MLServe created by the takeover",
            )
            operator_db.start(**operator_db.extra_env)
            runner.join(timeout=200)
            assert not runner.is_alive(), "the takeover did not finish"
        done = outcome["done"]
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"created MLServe {namespace}/{names.mlserve_name(serve, env)} at v1" in done.stdout
        assert monitor.error is None and min(sum(s) for s in monitor.samples) >= 1, monitor.samples
        assert not list(kube_client.list(Deployment, namespace=namespace, labels={RELEASE_LABEL: release}))
        assert [r["id"] for r in await darwin.deployments(seed.serve, seed.environment)] == [deployment_id]
    finally:
        operator_db.ensure_running()


def gone_mlserve(client: Client, name: str, namespace: str) -> bool:
    from mlserve_testing.mlserves import gone

    from mlserve.operator.reconcile.kube import MLServe

    return gone(client, MLServe, name, namespace)
