"""The end-to-end environment on kind, step by step, each step timed.

    binaries  kind, kubectl, helm and KubeRay's controller (and, offline, the node's programs)
              from Go modules
    docker    a Docker daemon (the user's, or one started here)
    images    the node image (offline), the operator's, the model server's, MariaDB's,
              KubeRay's controller's and Ray's
    cluster   kind create, the default ServiceAccount, CoreDNS
    load      kind load docker-image (ours, then KubeRay's and Ray's)
    install   MariaDB, KubeRay's controller, then the operator with the Helm chart

``up()`` returns an ``Environment`` whose ``test_env()`` is what the suite under tests/kind
needs (KUBECONFIG, the state folder); ``scripts/e2e-kind`` runs it all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mlserve.operator.dev.cluster.build import binary_dir, ensure_components, kuberay_crd_dir
from mlserve.operator.dev.cluster.errors import DevClusterError

from . import names
from .cluster import KindCluster, kind_config
from .docker import Docker, ensure_daemon, find_daemon, stop_daemon
from .host import HostFacts
from .images import Images, Step, kind_default_node_image, kind_module_dir
from .install import Installer

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[3]
DEFAULT_STATE_DIR = ".mlserve/kind"
KUBECONFIG_FILE = "kubeconfig"
TIMINGS_FILE = "timings.json"
IMAGES_FILE = "images.json"
#: the components every run needs, and those of a locally built node image
COMPONENTS = ["kubernetes", "helm", "kind", "kuberay-operator"]
OFFLINE_COMPONENTS = ["etcd", "kubernetes-node", "containerd", "cri-tools", "coredns"]
#: how long pulling the official node image may take before the machine counts as offline
PULL_PROBE_SECONDS = 600.0
#: the model versions the suite deploys: the model server's image with MODEL_VERSION set
MODEL_VERSIONS = ("v1", "v2")


def cache_root() -> Path:
    explicit = os.environ.get("MLSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlserve"


def docker_dir() -> Path:
    explicit = os.environ.get(names.ENV_DOCKER_DIR)
    return Path(explicit).expanduser() if explicit else cache_root() / "docker"


def offline_choice(value: str | None) -> bool | None:
    """MLSERVE_KIND_OFFLINE: "1" offline, "0" online, unset: decide by pulling."""
    if value in (None, ""):
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise DevClusterError(f"{names.ENV_OFFLINE}={value!r}: expected 1 (build the node image here) or 0 (pull kind's)")


@dataclass
class Environment:
    state_dir: Path
    offline: bool
    images: dict[str, str]
    steps: list[Step] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / KUBECONFIG_FILE

    def test_env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "MLSERVE_TEST_USE_KUBECONFIG": "1",
            "MLSERVE_KIND_STATE_DIR": str(self.state_dir),
        }


def _log(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


class Run:
    """One ``up``: the steps and their times."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.steps: list[Step] = []

    def step(self, name: str, action: Callable[[], T]) -> T:
        _log(f"{name} ...")
        started = time.monotonic()
        result = action()
        seconds = time.monotonic() - started
        self.steps.append(Step(name, seconds, False))
        _log(f"{name}: {seconds:.0f} s")
        return result


def decide_offline(docker: Docker, choice: bool | None, node_image: str) -> bool:
    if choice is not None:
        return choice
    if docker.image_exists(node_image):
        return False
    _log(f"pulling {node_image} (offline when it can't be pulled)")
    result = docker.run("pull", node_image, check=False, timeout=PULL_PROBE_SECONDS)
    if result.returncode == 0:
        return False
    _log(f"{node_image} can't be pulled: building the node image here")
    return True


def up(state_dir: Path, *, offline: bool | None = None) -> Environment:
    """Build what is missing, create the cluster, install MariaDB and the operator."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    run = Run(state_dir)
    facts = HostFacts.detect()
    for note in facts.describe():
        _log(f"this machine: {note}")
    versions = json.loads((ROOT / "deploy" / "local-cluster" / "versions.json").read_text())
    docker = run.step("docker daemon", lambda: ensure_daemon(docker_dir(), facts))
    binaries = run.step("binaries", lambda: ensure_components(COMPONENTS))
    official = kind_default_node_image(kind_module_dir(versions["kind"]))
    is_offline = decide_offline(docker, offline, official)
    if is_offline:
        binaries = run.step("binaries of the node", lambda: ensure_components(OFFLINE_COMPONENTS))
    bins = binaries.folder
    images = Images(docker, state_dir, is_offline, bins, versions)
    kind = bins / "kind"
    # each image is a step of its own (built or reused), recorded by Images
    node = images.node_image(kind)
    operator = images.operator()
    model = images.model_server()
    mariadb = images.mariadb()
    kuberay = images.kuberay()
    ray = images.ray()
    crds = kuberay_crd_dir()  # KubeRay's module, of the controller's version
    models = {version: f"{names.MODEL_SERVER_IMAGE}:{version}" for version in MODEL_VERSIONS}
    for version, ref in models.items():
        docker.build_from_text(f"FROM {model}\nENV MODEL_VERSION={version}\n", ref, state_dir)
    run.steps.extend(images.steps)
    cluster = KindCluster(kind, docker)
    config = kind_config(node, facts, local_node_image=is_offline)
    run.step("kind create", lambda: cluster.create(config, state_dir / KUBECONFIG_FILE, state_dir))
    installer = Installer(bins / "kubectl", bins / "helm", state_dir / KUBECONFIG_FILE, state_dir)
    run.step("default ServiceAccount", installer.wait_default_service_account)
    run.step("CoreDNS ready", installer.wait_coredns)
    run.step("kind load", lambda: cluster.load(operator, mariadb, *models.values()))
    run.step("kind load (KubeRay, Ray)", lambda: cluster.load(kuberay, ray))
    run.step("install MariaDB", lambda: installer.install_mariadb(mariadb))
    run.step("install KubeRay (ready)", lambda: installer.install_kuberay(kuberay, crds))
    run.step("install the operator (helm)", lambda: installer.install_operator(operator))
    refs = {
        "node": node,
        "operator": operator,
        "model_server": model,
        "mariadb": mariadb,
        "kuberay": kuberay,
        "ray": ray,
        **{f"model_{v}": r for v, r in models.items()},
    }
    (state_dir / IMAGES_FILE).write_text(json.dumps(refs, indent=2) + "\n")
    steps = run.steps
    (state_dir / TIMINGS_FILE).write_text(json.dumps([s.__dict__ for s in steps], indent=2) + "\n")
    return Environment(state_dir, is_offline, refs, steps)


def down(state_dir: Path, *, stop_docker: bool = True, export_logs: Path | None = None) -> list[str]:
    """Delete the cluster; stop the Docker daemon if one was started here. Says what it did."""
    done: list[str] = []
    kind = binary_dir() / "kind"
    folder = docker_dir()
    docker = find_daemon(folder)
    if docker is not None and kind.is_file():
        cluster = KindCluster(kind, docker)
        if cluster.exists():
            if export_logs is not None:
                cluster.node_logs(export_logs)
                done.append(f"kind's logs in {export_logs}")
            cluster.delete()
            done.append(f"deleted kind cluster {cluster.name}")
    if stop_docker and stop_daemon(folder):
        done.append(f"stopped the Docker daemon of {folder}")
    return done


def summary(steps: list[Step]) -> str:
    width = max((len(s.name) for s in steps), default=10)
    lines = [f"{s.name:<{width}}  {s.seconds:7.1f} s{'  (reused)' if s.reused else ''}" for s in steps]
    return "\n".join(lines)
