"""Helpers of the suite on kind: seeding a serve that runs the test model server, and
talking to it from inside the cluster."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lightkube import ApiError, Client
from lightkube.models.core_v1 import Container, PodSpec, SecurityContext
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice

from mlserve.operator.dev.kind import install
from mlserve_testing import darwin
from mlserve_testing.wait import wait_for

#: the serve's pods: a tenth of a core each, so that a rolling upgrade's extra pod fits the
#: one node beside the control plane, MariaDB and the operator
FAST_API_CONFIG = {"min_replicas": 1, "max_replicas": 1, "cores": 0.1, "memory": 1, "node_capacity_type": "spot"}
POD_READY_TIMEOUT = 180.0
#: how long a client pod retries a call that fails to connect
CALL_RETRY_SECONDS = 60
#: reasons a container waits for ever: fail at once, with the kubelet's message
STUCK_REASONS = frozenset(
    {"ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"}
)


async def seed_model_serve(
    serve: str, environment: str, namespace: str, images: dict[str, str], *, replicas: int = 1
) -> darwin.Seed:
    """An API serve as Darwin writes it, whose artifacts v1 and v2 are the test model server
    (answering with its version), bound to the kind release's cluster name."""
    seed = await darwin.seed_api_serve(
        serve,
        environment,
        namespace,
        env_config=darwin.env_configs(namespace, cluster=install.CLUSTER_NAME),
    )
    config = {**FAST_API_CONFIG, "min_replicas": replicas, "max_replicas": replicas}
    await darwin.query(
        "UPDATE api_serve_configs SET fast_api_config = ? WHERE serve_id = ? AND environment_id = ?",
        json.dumps(config),
        seed.serve,
        seed.environment,
    )
    for version, artifact in seed.artifacts.items():
        await darwin.query("UPDATE artifacts SET image_url = ? WHERE id = ?", images[f"model_{version}"], artifact)
    return seed


#: the Ray pods of the workflow test: with KubeRay's submitter (half a core requested, set by
#: KubeRay) they fit the one core the one node has left beside the control plane, CoreDNS,
#: MariaDB, the operator and KubeRay's controller. Ray's requests are its limits (Guaranteed
#: QoS, as Darwin renders them): a worker held to a tenth of a core can't start its raylet
#: within Ray's start-up timeout, a fifth of a core can
RAY_HEAD_CONFIG = {"cores": 0.25, "memory": 2, "node_capacity_type": "spot"}
RAY_WORKER_CONFIG = {
    "cores_per_pods": 0.2,
    "memory_per_pods": 1,
    "min_pods": 1,
    "max_pods": 1,
    "node_capacity_type": "spot",
}


async def seed_ray_workflow(serve: str, environment: str, namespace: str, images: dict[str, str]) -> darwin.Seed:
    """A workflow serve as Darwin writes it (no schedule: one run per deployment) whose artifact
    v1 is the suite's Ray image (its main.py is what the default entrypoint runs), bound to the
    kind release's cluster name: a small head and one worker group of one small pod."""
    seed = await darwin.seed_api_serve(
        serve,
        environment,
        namespace,
        versions=("v1",),
        serve_type="workflow",
        env_config=darwin.env_configs(namespace, cluster=install.CLUSTER_NAME),
    )
    now = darwin._now()
    await darwin.insert(
        "workflow_serve_configs",
        serve_id=seed.serve,
        environment_id=seed.environment,
        schedule="",
        worker_node_config=[RAY_WORKER_CONFIG],
        head_node_config=RAY_HEAD_CONFIG,
        created_by_id=seed.user,
        updated_by_id=seed.user,
        created_at=now,
        updated_at=now,
    )
    await darwin.query("UPDATE artifacts SET image_url = ? WHERE id = ?", images["ray"], seed.artifacts["v1"])
    return seed


def pod_logs(client: Client, namespace: str, labels: dict[str, str], tail: int = 60) -> str:
    """The last lines of the logs of the pods with ``labels`` (for a failure's message)."""
    parts = []
    for pod in client.list(Pod, namespace=namespace, labels=labels):
        name = pod.metadata.name
        try:
            text = "".join(client.log(name, namespace=namespace, tail_lines=tail))
        except ApiError as exc:
            text = f"(no logs: {exc.status.message})"
        phase = pod.status.phase if pod.status else None
        parts.append(f"--- pod {name} ({phase}):\n{text}")
    return "\n".join(parts) or f"(no pods with {labels})"


def deployment_ready(client: Client, name: str, namespace: str, image_suffix: str) -> Deployment | None:
    """The Deployment once it runs ``image_suffix`` on all its pods, all ready."""
    try:
        dep = client.get(Deployment, name, namespace=namespace)
    except ApiError:
        return None
    status = dep.status
    spec = dep.spec
    if status is None or spec is None or not spec.template.spec.containers[0].image.endswith(image_suffix):
        return None
    want = spec.replicas or 0
    if (
        (status.observedGeneration or 0) >= (dep.metadata.generation or 0)
        and (status.updatedReplicas or 0) == want
        and (status.readyReplicas or 0) == want
        and (status.replicas or 0) == want
        and want > 0
    ):
        return dep
    return None


def ready_endpoints(client: Client, service: str, namespace: str) -> int:
    """Ready addresses behind a Service (its EndpointSlices)."""
    count = 0
    for slice_ in client.list(EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": service}):
        for endpoint in slice_.endpoints or []:
            if endpoint.conditions is not None and endpoint.conditions.ready:
                count += len(endpoint.addresses)
    return count


@dataclass
class ReadyWatch:
    """Samples a Service's ready endpoints in a thread, to catch a moment with none."""

    client: Client
    service: str
    namespace: str
    interval: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReadyWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), ready_endpoints(self.client, self.service, self.namespace)))
            except ApiError as exc:  # counted, not hidden: the test reports them
                self.errors.append(str(exc))
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def minimum(self) -> int:
        return min(n for _, n in self.samples)


def http_from_pod(
    client: Client, namespace: str, image: str, url: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call ``url`` from a pod in the cluster (the model server's image has Python) and
    return the JSON answer: the request goes through the cluster's DNS and the Service."""
    name = f"client-{uuid.uuid4().hex[:6]}"
    data = "None" if body is None else repr(json.dumps(body).encode())
    # retried for a while: right after a roll kube-proxy may still send a connection to a pod
    # that has gone (it follows the EndpointSlices a moment later, longer on a busy node)
    script = (
        "import json, sys, time, urllib.request\n"
        f"req = urllib.request.Request({url!r}, data={data}, headers={{'Content-Type': 'application/json'}})\n"
        f"deadline = time.monotonic() + {CALL_RETRY_SECONDS}\n"
        "while True:\n"
        "    try:\n"
        "        print(urllib.request.urlopen(req, timeout=5).read().decode())\n"
        "        break\n"
        "    except OSError as exc:\n"
        "        if time.monotonic() > deadline:\n"
        "            raise\n"
        "        print(f'retrying: {exc}', file=sys.stderr, flush=True)\n"
        "        time.sleep(1)\n"
    )
    pod = Pod(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=PodSpec(
            restartPolicy="Never",
            containers=[
                Container(
                    name="client",
                    image=image,
                    imagePullPolicy="Never",
                    command=["python3", "-c", script],
                    securityContext=SecurityContext(runAsNonRoot=True, allowPrivilegeEscalation=False),
                )
            ],
        ),
    )
    client.create(pod)

    def finished() -> str | None:
        status = client.get(Pod, name, namespace=namespace).status
        for container in (status.containerStatuses if status else None) or []:
            waiting = container.state.waiting if container.state else None
            if waiting is not None and waiting.reason in STUCK_REASONS:
                raise AssertionError(f"client pod {name} can't start: {waiting.reason}: {waiting.message}")
        phase = status.phase if status else None
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = wait_for(finished, timeout=POD_READY_TIMEOUT, what=f"client pod {name} to finish")
        logs = "".join(client.log(name, namespace=namespace))
        assert phase == "Succeeded", f"the client pod failed calling {url}: {logs[-2000:]}"
        return dict(json.loads(logs.strip().splitlines()[-1]))
    finally:
        client.delete(Pod, name, namespace=namespace)
