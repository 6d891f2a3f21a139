"""What the end-to-end suite runs on: MariaDB and the operator, installed with the Helm chart.

MariaDB (the image built from Debian's mariadb-server) runs in ``mlserve-db`` with two users,
as the README asks of a real installation: ``mlserve_migrate`` changes the schema (the chart's
migration hook Job runs as it) and ``mlserve_operator`` reads and writes rows only (the
operator runs as it). Their passwords are made per cluster and kept in Secrets and in the
work folder (for the tests, which write rows as Darwin does), never printed.

The operator is installed with ``deploy/helm/mlserve-operator``, from its image loaded into
the node (``pullPolicy: Never``), and runs in-cluster as the chart's ServiceAccount.

KubeRay's controller runs in ``kuberay-system`` from the image of the binary the local control
plane runs: KubeRay's CRDs and ClusterRole are read from KubeRay's module (as for the local
control plane, ``operator/dev/cluster/kuberay.py``), bound to a ServiceAccount of ours, and a
Deployment of ours runs it with the same command line, waited for until its ``/readyz`` answers.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from lightkube import Client, KubeConfig
from lightkube.models.rbac_v1 import Subject

from mlserve.operator.dev.cluster import kuberay
from mlserve.operator.dev.cluster.errors import DevClusterError

from . import names

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "mlserve-operator"
DB_NAMESPACE = "mlserve-db"
DB_SERVICE = "mariadb"
DB_NAME = "darwin_ml_serve"
OPERATOR_NAMESPACE = "mlserve-system"
RELEASE = "mlserve-operator"
#: the chart's clusterName: the environments the tests make name it in env_configs.cluster_name
CLUSTER_NAME = "kind"
MIGRATE_USER = "mlserve_migrate"
OPERATOR_USER = "mlserve_operator"
MIGRATE_SECRET = "mlserve-migrate"
OPERATOR_SECRET = "mlserve-database"
CREDENTIALS_FILE = "database.json"
KUBERAY_NAMESPACE = "kuberay-system"
KUBERAY_NAME = "kuberay-operator"
#: the controller's /readyz and /healthz in its pod
KUBERAY_PROBE_PORT = 8082


def _one_pod_deployment(
    name: str, namespace: str, labels: dict[str, str], pod_spec: dict[str, object]
) -> dict[str, object]:
    """A Deployment of one pod, replaced rather than rolled (never two at once)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def mariadb_manifests(image: str, migrate_password: str, operator_password: str) -> list[dict[str, object]]:
    """Namespace, Secret (the init SQL), Deployment and Service of the cluster's MariaDB."""
    init_sql = (
        f"CREATE DATABASE IF NOT EXISTS `{DB_NAME}`;\n"
        f"CREATE USER '{MIGRATE_USER}'@'%' IDENTIFIED BY '{migrate_password}';\n"
        f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, REFERENCES, DROP ON `{DB_NAME}`.* TO '{MIGRATE_USER}'@'%';\n"
        f"CREATE USER '{OPERATOR_USER}'@'%' IDENTIFIED BY '{operator_password}';\n"
        # database-wide (the README's per-table grants need the tables, which the migration makes)
        f"GRANT SELECT, INSERT, UPDATE, DELETE, LOCK TABLES ON `{DB_NAME}`.* TO '{OPERATOR_USER}'@'%';\n"
    )
    labels = {"app.kubernetes.io/name": "mariadb"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DB_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mariadb-init", "namespace": DB_NAMESPACE},
            "stringData": {"init.sql": init_sql},
        },
        _one_pod_deployment(
            DB_SERVICE,
            DB_NAMESPACE,
            labels,
            {
                "containers": [
                    {
                        "name": "mariadb",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "ports": [{"containerPort": 3306, "name": "mysql"}],
                        "volumeMounts": [
                            {"name": "data", "mountPath": "/var/lib/mysql"},
                            {"name": "init", "mountPath": "/etc/mariadb-init", "readOnly": True},
                        ],
                        "readinessProbe": {"tcpSocket": {"port": 3306}, "periodSeconds": 2},
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                    }
                ],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "init", "secret": {"secretName": "mariadb-init"}},
                ],
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": DB_SERVICE, "namespace": DB_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 3306, "targetPort": 3306, "name": "mysql"}]},
        },
    ]


def kuberay_manifests(image: str) -> list[dict[str, object]]:
    """Namespace, ServiceAccount and Deployment of KubeRay's controller (its ClusterRole and
    the binding to this ServiceAccount come with its CRDs: ``kuberay.install_kuberay``)."""
    labels = {"app.kubernetes.io/name": KUBERAY_NAME}
    probe = {"port": KUBERAY_PROBE_PORT}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUBERAY_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": KUBERAY_NAME, "namespace": KUBERAY_NAMESPACE, "labels": labels},
        },
        # one at a time: leader election is off (as beside the local control plane)
        _one_pod_deployment(
            KUBERAY_NAME,
            KUBERAY_NAMESPACE,
            labels,
            {
                "serviceAccountName": KUBERAY_NAME,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": KUBERAY_NAME,
                        "image": image,
                        "imagePullPolicy": "Never",
                        "args": kuberay.operator_args(f":{KUBERAY_PROBE_PORT}"),
                        "ports": [{"containerPort": KUBERAY_PROBE_PORT, "name": "probes"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", **probe},
                            "periodSeconds": 2,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", **probe},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        ),
    ]


def chart_values(image: str) -> dict[str, object]:
    repository, tag = image.rsplit(":", 1)
    return {
        "clusterName": CLUSTER_NAME,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # the Ray release of the Ray image, told to KubeRay (its probes depend on it)
        "operator": {"logFormat": "plain", "logLevel": "INFO", "config": {"MLSERVE_RAY_VERSION": names.RAY_VERSION}},
        "database": {
            "existingSecret": OPERATOR_SECRET,
            "host": f"{DB_SERVICE}.{DB_NAMESPACE}.svc.cluster.local",
            "name": DB_NAME,
        },
        "migration": {"enabled": True, "existingSecret": MIGRATE_SECRET},
    }


@dataclass
class Installer:
    kubectl: Path
    helm: Path
    kubeconfig: Path
    work: Path

    def _env(self) -> dict[str, str]:
        """kubectl's and helm's environment: the cluster's kubeconfig, and the state folder as
        HOME (their caches go there, not into the user's home or the current folder)."""
        return {"KUBECONFIG": str(self.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(self.work)}

    def _run(self, argv: list[str], what: str, input_text: str | None = None, timeout: float = 600) -> str:
        try:
            result = subprocess.run(
                argv,
                input=input_text,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=self._env(),
            )
        except subprocess.TimeoutExpired as exc:
            raise DevClusterError(f"{what} took longer than {timeout:g} s") from exc
        if result.returncode != 0:
            raise DevClusterError(
                f"{what} failed (exit {result.returncode}):\n{(result.stdout + result.stderr).strip()[-3000:]}"
            )
        return result.stdout

    def kubectl_run(self, *args: str, input_text: str | None = None, timeout: float = 600) -> str:
        return self._run([str(self.kubectl), *args], f"kubectl {' '.join(args[:3])}", input_text, timeout)

    def helm_run(self, *args: str, timeout: float = 900) -> str:
        return self._run([str(self.helm), *args], f"helm {' '.join(args[:2])}", None, timeout)

    def apply(self, objects: list[dict[str, object]]) -> None:
        self.kubectl_run("apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(objects))

    def wait_default_service_account(self, timeout: float = 120) -> None:
        """Right after create, pods are refused until the namespace's ServiceAccount exists."""
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                [str(self.kubectl), "get", "serviceaccount", "default", "-n", "default"],
                env=self._env(),
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DevClusterError(f"no ServiceAccount default after {timeout:g} s: {probe.stderr.strip()}")
            time.sleep(1)

    def wait_coredns(self, timeout: float = 240) -> None:
        """CoreDNS ready, one replica: kubeadm's second one adds nothing on one node and holds
        a tenth of its CPU requests, which the Ray pods of the workflow test need."""
        self.kubectl_run("scale", "deployment/coredns", "-n", "kube-system", "--replicas=1")
        self.kubectl_run(
            "rollout",
            "status",
            "deployment/coredns",
            "-n",
            "kube-system",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )

    def credentials(self) -> dict[str, str]:
        """The database users' passwords, made once per cluster (kept in the work folder)."""
        path = self.work / CREDENTIALS_FILE
        if path.is_file():
            return dict(json.loads(path.read_text()))
        made = {MIGRATE_USER: secrets.token_urlsafe(18), OPERATOR_USER: secrets.token_urlsafe(18)}
        path.write_text(json.dumps(made))
        path.chmod(0o600)
        return made

    def install_mariadb(self, image: str, timeout: float = 300) -> None:
        creds = self.credentials()
        self.apply(mariadb_manifests(image, creds[MIGRATE_USER], creds[OPERATOR_USER]))
        self.kubectl_run(
            "rollout",
            "status",
            f"deployment/{DB_SERVICE}",
            "-n",
            DB_NAMESPACE,
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )

    def database_secrets(self) -> list[dict[str, object]]:
        creds = self.credentials()
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": MIGRATE_SECRET, "namespace": OPERATOR_NAMESPACE},
                "stringData": {"MYSQL_USERNAME": MIGRATE_USER, "MYSQL_PASSWORD": creds[MIGRATE_USER]},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": OPERATOR_SECRET, "namespace": OPERATOR_NAMESPACE},
                "stringData": {"MYSQL_USERNAME": OPERATOR_USER, "MYSQL_PASSWORD": creds[OPERATOR_USER]},
            },
        ]

    def values_file(self, image: str) -> Path:
        path = self.work / "operator-values.yaml"
        path.write_text(yaml.safe_dump(chart_values(image), sort_keys=False))
        return path

    def install_operator(self, image: str, timeout: float = 300) -> None:
        self.apply(self.database_secrets())
        values = self.values_file(image)
        self.helm_run(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--values",
            str(values),
            "--wait",
            "--timeout",
            f"{int(timeout)}s",
            timeout=timeout + 60,
        )

    def install_kuberay(self, image: str, crd_dir: Path, timeout: float = 300) -> None:
        """KubeRay's CRDs and ClusterRole (from its module, ``crd_dir``) bound to our
        ServiceAccount, then its controller's Deployment; waits until it is ready."""
        client = Client(config=KubeConfig.from_file(self.kubeconfig), field_manager=kuberay.FIELD_MANAGER)
        try:
            subject = Subject(kind="ServiceAccount", name=KUBERAY_NAME, namespace=KUBERAY_NAMESPACE)
            kuberay.install_kuberay(client, crd_dir, timeout, subject=subject)
        finally:
            client.close()
        self.apply(kuberay_manifests(image))
        self.kubectl_run(
            "rollout",
            "status",
            f"deployment/{KUBERAY_NAME}",
            "-n",
            KUBERAY_NAMESPACE,
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )
