"""Names, environment variables and defaults of the kind cluster, in one place."""

from __future__ import annotations

# --- environment variables -------------------------------------------------------------
#: "1": build the node image here and never pull (offline); "0": the official node image;
#: unset: the official one when it can be pulled, else the local build
ENV_OFFLINE = "MLSERVE_KIND_OFFLINE"
#: folder of the Docker daemon started here when none answers (default: $MLSERVE_CACHE_DIR/docker)
ENV_DOCKER_DIR = "MLSERVE_KIND_DOCKER_DIR"

# --- names -----------------------------------------------------------------------------
CLUSTER_NAME = "mlserve-e2e"

#: images built here (all tagged with a digest of their inputs, so an unchanged one is reused)
IMAGE_PREFIX = "mlserve.local"
DEBIAN_BASE = f"{IMAGE_PREFIX}/debian"
PYTHON_BASE = f"{IMAGE_PREFIX}/python"
KIND_BASE = f"{IMAGE_PREFIX}/kind-base"
NODE_IMAGE = f"{IMAGE_PREFIX}/kind-node"
OPERATOR_IMAGE = f"{IMAGE_PREFIX}/mlserve-operator"
MODEL_SERVER_IMAGE = f"{IMAGE_PREFIX}/model-server"
MARIADB_IMAGE = f"{IMAGE_PREFIX}/mariadb"
KUBERAY_IMAGE = f"{IMAGE_PREFIX}/kuberay-operator"
RAY_IMAGE = f"{IMAGE_PREFIX}/ray"

#: Ray, from PyPI's wheel (``ray[default]``), in the Ray image; also the ``rayVersion`` the
#: operator tells KubeRay (MLSERVE_RAY_VERSION), so that KubeRay's probes fit this release
RAY_VERSION = "2.60.0"

DEBIAN_SUITE = "bookworm"
#: the images kubeadm asks for that kind's node image build does not carry itself
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
