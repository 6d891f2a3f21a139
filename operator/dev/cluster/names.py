"""Names, environment variables and defaults of the local control plane, in one place."""

from __future__ import annotations

# --- environment variables -------------------------------------------------------------
#: folder holding the Go modules and build.py (default: deploy/local-cluster/ of the checkout)
ENV_LOCAL_CLUSTER_DIR = "MLSERVE_LOCAL_CLUSTER_DIR"
#: folder of the built binaries, used as it is (default: $MLSERVE_CACHE_DIR/k8s-<version>)
ENV_BIN_DIR = "MLSERVE_BIN_DIR"
#: root of the binary cache (default: ${XDG_CACHE_HOME:-~/.cache}/mlserve)
ENV_CACHE_DIR = "MLSERVE_CACHE_DIR"
#: state folder of `mlserve dev cluster up|down|kubeconfig` (default: .mlserve/dev-cluster)
ENV_STATE_DIR = "MLSERVE_DEV_STATE_DIR"
#: folder of KubeRay's CRD files, used as it is (default: KubeRay's operator module at the
#: version of deploy/local-cluster/versions.json, in Go's module cache)
ENV_KUBERAY_CRDS = "MLSERVE_KUBERAY_CRDS"

DEFAULT_STATE_DIR = ".mlserve/dev-cluster"

# --- components (also the names of their log files, <name>.log) ---------------------------
ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KWOK = "kwok"
KWOK_STAGES = "kwok-stages"  # prints the kwok Stages (see deploy/local-cluster/kwok/stages)
KUBECTL = "kubectl"
HELM = "helm"
#: KubeRay's controller (RayCluster, RayJob, RayService, RayCronJob), started when asked for
KUBERAY_OPERATOR = "kuberay-operator"

#: KubeRay's CRDs of the kinds the operator makes (the module has RayCluster's and RayService's too)
KUBERAY_CRD_FILES = ("ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml")
#: every CRD KubeRay's controller watches: it does not start without all four
KUBERAY_CONTROLLER_CRD_FILES = (*KUBERAY_CRD_FILES, "ray.io_rayclusters.yaml", "ray.io_rayservices.yaml")
#: KubeRay's own ClusterRole for its controller, in its module (``config/rbac/``)
KUBERAY_ROLE_FILE = "role.yaml"
#: KubeRay's alpha features the controller runs with: the RayCronJob controller is off by
#: default in KubeRay 1.6 and only starts with its feature gate
KUBERAY_FEATURE_GATES = "RayCronJob=true"

#: programs started by the cluster, in start order
CLUSTER_PROGRAMS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK)
#: programs every build provides (helm and kuberay-operator only when asked for)
DEFAULT_PROGRAMS = (*CLUSTER_PROGRAMS, KWOK_STAGES, KUBECTL)
#: programs a cluster may run beside its own, started after them (and stopped first)
OPTIONAL_PROGRAMS = (KUBERAY_OPERATOR,)

# --- cluster ---------------------------------------------------------------------------
HOST = "127.0.0.1"
CLUSTER_NAME = "mlserve-dev"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: nodes carrying this annotation are the ones kwok plays the kubelet for
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODE_NAME_PREFIX = "kwok-node-"
NODE_LABEL_TYPE = ("type", "kwok")
#: a node whose lease is not renewed within this time goes NotReady
NODE_LEASE_SECONDS = 40

# --- identities (client certificates: CN = user, O = group) --------------------------------
ADMIN_USER = ("mlserve-admin", "system:masters")
CONTROLLER_MANAGER_USER = ("system:kube-controller-manager", None)
SCHEDULER_USER = ("system:kube-scheduler", None)
KWOK_USER = ("system:kwok-controller", None)
#: KubeRay's controller, bound to KubeRay's own ClusterRole
KUBERAY_USER = ("kuberay-operator", None)
KUBERAY_CLUSTER_ROLE_BINDING = "mlserve-dev:kuberay-operator"
FRONT_PROXY_USER = "front-proxy-client"  # the API server, towards aggregated API servers
KWOK_CLUSTER_ROLE_BINDING = "mlserve-dev:kwok-controller"

#: the API server's audit log, under the state folder: the requests of ServiceAccounts
#: outside kube-system (the operator's tests run it as the Helm chart's ServiceAccount and
#: compare what it used with the chart's RBAC)
AUDIT_LOG = "logs/kube-apiserver-audit.log"
AUDIT_POLICY_FILE = "audit-policy.yaml"
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""

KUBECONFIG_FILE = "kubeconfig"
STATE_FILE = "cluster.json"
#: marks a folder as a cluster's state, which the next start may wipe
STATE_MARKER = ".mlserve-dev-cluster"
