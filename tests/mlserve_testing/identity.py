"""Pytest plugin: the operator's identity in the cluster tests is the chart's ServiceAccount.

``chart_identity`` (session) installs the chart's ServiceAccount and RBAC into the session's
cluster (release ``mlserve-operator`` in ``mlserve-system``, no operator pod) and writes a
kubeconfig holding that ServiceAccount's token from the TokenRequest API. The operator's
end-to-end fixture runs ``mlserve run`` with it, so those tests pass only if the chart's
rights are sufficient; ``MLSERVE_TEST_OPERATOR_IDENTITY=admin`` runs it as the cluster
admin instead.

The local control plane writes an audit log of every request made by a ServiceAccount
outside kube-system. :func:`audited_requests` reads the requests of one user from it, so
``test_rbac_audit.py`` can compare what the operator really used with the chart's rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, ServiceAccountToken

from mlserve.operator.dev.cluster import names
from mlserve.operator.dev.cluster.audit import read_events, when
from mlserve.operator.dev.cluster.kubeconfig import write_token_kubeconfig
from mlserve_testing.chart import CHART, VALUES_DIR, Helm, project_helm

#: "chart" (default): the operator's end-to-end tests run as the chart's ServiceAccount;
#: "admin": as the cluster admin
ENV_IDENTITY = "MLSERVE_TEST_OPERATOR_IDENTITY"
RELEASE = "mlserve-operator"
NAMESPACE = "mlserve-system"
#: the local control plane's audit log, under its state folder (beside the admin kubeconfig)
AUDIT_LOG = names.AUDIT_LOG
TOKEN_SECONDS = 24 * 3600


#: how many of the session's tests use the operator's end-to-end fixture
OPERATOR_TESTS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rbac_audit: compares the audit log with the chart's RBAC; runs after every other test"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The audit comparisons go last, after the end-to-end tests whose requests they check."""
    audit = [item for item in items if item.get_closest_marker("rbac_audit")]
    rest = [item for item in items if not item.get_closest_marker("rbac_audit")]
    items[:] = rest + audit
    config.stash[OPERATOR_TESTS] = sum("operator_process" in getattr(item, "fixturenames", ()) for item in rest)


def operator_runs_as_chart() -> bool:
    value = os.environ.get(ENV_IDENTITY, "chart")
    if value not in ("chart", "admin"):
        raise pytest.UsageError(f"{ENV_IDENTITY}={value!r}: use chart or admin")
    return value == "chart"


@dataclass(frozen=True)
class ChartIdentity:
    """The chart's ServiceAccount, installed in the session's cluster."""

    username: str
    kubeconfig: Path
    release: str
    namespace: str
    namespaces: tuple[str, ...]
    """watchNamespaces of the install (MLSERVE_NAMESPACES of the operator it is for)."""
    peering_name: str | None


def install_identity(
    helm: Helm,
    cluster: Any,
    kube_client: Client,
    folder: Path,
    *,
    release: str,
    namespace: str,
    namespaces: Sequence[str],
    peering: bool,
) -> ChartIdentity:
    """The chart without its operator pod (the operator runs as a local process), and a
    kubeconfig holding a token of its ServiceAccount."""
    try:
        kube_client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as exc:
        if exc.status.code != 409:
            raise
    context = ["--kube-context", cluster.context] if cluster.context else []
    helm.run(
        "upgrade",
        "--install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *context,
        "--values",
        str(VALUES_DIR / "kwok.yaml"),
        "--set",
        "replicaCount=0",
        "--set",
        "crds.install=false",
        "--set",
        f"peering.enabled={str(peering).lower()}",
        "--set-json",
        f"watchNamespaces={json.dumps(list(namespaces))}",
        kubeconfig=cluster.kubeconfig,
    )
    shown = helm.run("get", "manifest", release, "--namespace", namespace, *context, kubeconfig=cluster.kubeconfig)
    manifest = [d for d in yaml.safe_load_all(shown.stdout) if d]
    (account,) = [d["metadata"]["name"] for d in manifest if d["kind"] == "ServiceAccount"]
    peerings = {d["metadata"]["name"] for d in manifest if d["kind"] in ("KopfPeering", "ClusterKopfPeering")}
    token = kube_client.create(
        ServiceAccountToken(
            metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=TOKEN_SECONDS)
        ),
        account,
        namespace=namespace,
    ).status.token
    username = f"system:serviceaccount:{namespace}:{account}"
    kubeconfig = write_token_kubeconfig(cluster.kubeconfig, token, username, folder / f"{release}.kubeconfig")
    peering_name = peerings.pop() if peerings else None
    return ChartIdentity(username, kubeconfig, release, namespace, tuple(namespaces), peering_name)


def uninstall_identity(helm: Helm, cluster: Any, identity: ChartIdentity) -> None:
    context = ["--kube-context", cluster.context] if cluster.context else []
    helm.run(
        "uninstall",
        identity.release,
        "--namespace",
        identity.namespace,
        *context,
        kubeconfig=cluster.kubeconfig,
        check=False,
    )


def session_operator_settings() -> tuple[list[str], bool]:
    """MLSERVE_NAMESPACES (as a list) and whether peering is on, as the operator's
    end-to-end fixture runs ``mlserve run``: the chart is installed to match."""
    from mlserve_testing.operator import operator_env

    env = operator_env(Path("kubeconfig"), "sqlite://:memory:", 0)
    namespaces = [n.strip() for n in env.get("MLSERVE_NAMESPACES", "").split(",") if n.strip()]
    return namespaces, bool(env.get("MLSERVE_PEERING_NAME"))


@pytest.fixture(scope="session")
def chart_helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(project_helm(), tmp_path_factory.mktemp("helm-home-identity"))


@pytest.fixture(scope="session")
def chart_identity(
    cluster: Any, kube_client: Client, chart_helm: Helm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartIdentity]:
    """The chart's ServiceAccount and RBAC, installed as the operator's tests run it
    (same MLSERVE_NAMESPACES, same peering), and a kubeconfig acting as it."""
    namespaces, peering = session_operator_settings()
    identity = install_identity(
        chart_helm,
        cluster,
        kube_client,
        tmp_path_factory.mktemp("chart-identity"),
        release=RELEASE,
        namespace=NAMESPACE,
        namespaces=namespaces,
        peering=peering,
    )
    yield identity
    uninstall_identity(chart_helm, cluster, identity)


# --- the audit log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditedRequest:
    group: str
    resource: str  # "plural" or "plural/subresource"
    verb: str
    namespace: str | None
    allowed: bool
    """Neither the authorizer nor an authorization check inside the request (the create
    check of a server-side apply) refused it; admission refusals (a terminating namespace)
    are not about the operator's rights and count as allowed."""
    code: int | None
    message: str
    uri: str
    at: float
    """When the API server finished it, in seconds since the epoch."""


def audit_log_of(cluster: Any) -> Path:
    path = Path(cluster.kubeconfig).parent / AUDIT_LOG
    if not path.is_file():
        pytest.fail(
            f"no audit log at {path}: the local control plane writes one (kube-apiserver --audit-log-path); "
            "a cluster named by KUBECONFIG cannot be audited from here"
        )
    return path


def audited_requests(log: Path, username: str) -> list[AuditedRequest]:
    """The resource requests of ``username``: one per request (its last stage), non-resource URLs left out.

    A server-side apply that created its object (PATCH answered 201) is also listed as a
    create: the API server checks that right inside the PATCH, with no audit event of its own.
    """
    events, _ = read_events(log, username)
    last = {event["auditID"]: event for event in events}
    out = []
    for event in last.values():
        ref = event["objectRef"]
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource = f"{resource}/{ref['subresource']}"
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        status = event.get("responseStatus") or {}
        code, message = status.get("code"), str(status.get("message") or "")
        refused = decision != "allow" or (code == 403 and f'User "{username}" cannot ' in message)
        verbs = [event["verb"]] + (["create"] if event["verb"] == "patch" and code == 201 else [])
        for verb in verbs:
            out.append(
                AuditedRequest(
                    group=ref.get("apiGroup", ""),
                    resource=resource,
                    verb=verb,
                    namespace=ref.get("namespace"),
                    allowed=not refused,
                    code=code,
                    message=message,
                    uri=event.get("requestURI", ""),
                    at=when(event),
                )
            )
    return out
