"""The chart offline: lint, render with every value set, validate every object strictly.

Value sets: the chart's defaults and each file of ``tests/helm/values/`` (namespaced, HA,
existing Secret, kwok).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from mlserve_testing.chart import (
    CHART,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    VALUE_SETS,
    Helm,
    kubernetes_version,
    load_values,
    objects_of,
    one,
    values_args,
)

K8S_SCHEMA_VERSION = ".".join(kubernetes_version().lstrip("v").split(".")[:2])
SOURCE_CRD = ROOT / "crds" / "mlserve.darwin.io_mlserves.yaml"
CHART_CRD = CHART / "files" / "crds" / SOURCE_CRD.name
PEERING_CRDS = CHART / "crds" / "kopf.dev_peerings.yaml"
PEERING_KINDS = {"KopfPeering", "ClusterKopfPeering"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterKopfPeering"}


def peering_crds() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in yaml.safe_load_all(PEERING_CRDS.read_text())}


def validate_offline(obj: dict[str, Any]) -> None:
    """Strict schema of the Kubernetes version of the local cluster; kopf's kinds against their CRD."""
    where = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
    if obj["kind"] in PEERING_KINDS:
        crd = peering_crds()[obj["kind"]]
        assert obj["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}", where
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
        assert not errors, f"{where}: {errors}"
        assert set(obj) <= {"apiVersion", "kind", "metadata", "status"}, where
        return
    try:
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(
            f"{where} is invalid for Kubernetes {K8S_SCHEMA_VERSION} at {path}: {exc.message}"
        ) from None


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm: Helm, value_set: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--kube-version", kubernetes_version(), *values_args(value_set))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_valid(helm: Helm, value_set: str) -> None:
    objects = helm.template(value_set=value_set)
    assert {"Deployment", "ServiceAccount", "ConfigMap"} <= {o["kind"] for o in objects}
    for obj in objects:
        validate_offline(obj)
        metadata = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in metadata, f"cluster-scoped {obj['kind']} with a namespace"
        else:
            assert metadata.get("namespace"), f"{obj['kind']} {metadata['name']} has no namespace"
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_typo_in_values_fails_with_the_schemas_message(helm: Helm) -> None:
    result = helm.render("--set", "replicaCont=2", check=False)
    assert result.returncode != 0
    assert "additional properties 'replicaCont' not allowed" in result.stderr, result.stderr


def test_typo_in_a_nested_value_fails(helm: Helm, tmp_path: Any) -> None:
    values = tmp_path / "typo.yaml"
    values.write_text("database:\n  hots: mysql.example\n")
    result = helm.render("--values", str(values), check=False)
    assert result.returncode != 0
    assert "at '/database': additional properties 'hots' not allowed" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=two", "at '/replicaCount': got string, want integer"),
        ("peering.enabled=yes", "at '/peering/enabled': got string, want boolean"),
        ("watchNamespaces[0]=Not_A_Namespace", "at '/watchNamespaces/0'"),
        ("operator.logFormat=xml", "at '/operator/logFormat'"),
        ("operator.syncInterval=soon", "at '/operator/syncInterval'"),
        ("operator.config.INGRESS_CLASS=nginx", "'INGRESS_CLASS' does not match pattern"),
        ("clusterName=", "at '/clusterName'"),
    ],
)
def test_wrong_value_fails_with_the_schemas_message(helm: Helm, setting: str, message: str) -> None:
    result = helm.render("--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_more_than_one_replica_needs_peering(helm: Helm) -> None:
    result = helm.render("--set", "replicaCount=2", "--set", "peering.enabled=false", check=False)
    assert result.returncode != 0
    assert "replicaCount above 1 needs peering.enabled=true" in result.stderr


# Values whose default is a Kubernetes object or map: the comment above the key covers
# what is inside.
OPAQUE_VALUES = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podAnnotations",
    "podLabels",
    "imagePullSecrets",
}


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")
    stack: list[tuple[int, str]] = []
    missing = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if path[0] in OPAQUE_VALUES and len(path) > 1:
            continue
        is_section = not rest and path[0] not in OPAQUE_VALUES
        if is_section:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            missing.append(".".join(path))
    assert not missing, f"values without a comment above them: {missing}"


def _schema_keys(schema: dict[str, Any], path: list[str]) -> set[str]:
    node = schema
    for key in path:
        node = node["properties"][key]
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return set(node["properties"])


@pytest.mark.parametrize(
    "section",
    [
        [],
        ["image"],
        ["operator"],
        ["database"],
        ["crds"],
        ["peering"],
        ["serviceAccount"],
        ["rbac"],
        ["probes"],
        ["probes", "liveness"],
        ["podDisruptionBudget"],
    ],
    ids=lambda p: ".".join(p) or "top",
)
def test_schema_and_values_list_the_same_keys(section: list[str]) -> None:
    """No value the schema allows goes undocumented in values.yaml, and none is unchecked."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values: Any = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in section:
        values = values[key]
    allowed = _schema_keys(schema, section) - ({"global"} if not section else set())
    if section == ["probes", "liveness"]:
        allowed -= {"successThreshold"}  # Kubernetes requires 1 for liveness; left out of values.yaml
    assert set(values) == allowed


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_value_sets_pass_the_schema(value_set: str) -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(load_values(value_set))]
    assert not errors


# --- CRDs -----------------------------------------------------------------------------------


def test_helm_assumes_the_local_clusters_kubernetes_version(helm: Helm, tmp_path: Any) -> None:
    """Without --kube-version, helm renders for the Kubernetes of versions.json (link flags),
    not helm's built-in default (v1.20)."""
    chart = tmp_path / "kube-version"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kube-version\nversion: 0.1.0\n")
    (chart / "templates" / "version.yaml").write_text("kubeVersion: {{ .Capabilities.KubeVersion.Version }}\n")
    rendered = yaml.safe_load(helm.run("template", str(chart)).stdout)
    major, minor, _ = kubernetes_version().lstrip("v").split(".")
    assert rendered == {"kubeVersion": f"v{major}.{minor}.0"}


def test_chart_crd_is_a_copy_of_the_source() -> None:
    assert CHART_CRD.read_bytes() == SOURCE_CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(ROOT)} differs from {SOURCE_CRD.relative_to(ROOT)} (the single source): "
        "run `python deploy/helm/sync_crds.py`"
    )


def test_chart_renders_the_source_crd_with_labels_and_keep(helm: Helm) -> None:
    crd = one(helm.template(), "CustomResourceDefinition")
    source = yaml.safe_load(SOURCE_CRD.read_text())
    metadata = crd.pop("metadata")
    source_metadata = source.pop("metadata")
    assert crd == source
    assert metadata["name"] == source_metadata["name"]
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert metadata["labels"]["app.kubernetes.io/name"] == "mlserve-operator"


def test_crd_keep_off_lets_uninstall_delete_it(helm: Helm) -> None:
    crd = one(helm.template("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]


def test_crd_install_off_renders_no_crd(helm: Helm) -> None:
    assert not objects_of(helm.template(value_set="existing-secret"), "CustomResourceDefinition")


def test_peering_crds_are_kopfs_resources() -> None:
    """Names kopf looks for, and no status subresource: kopf patches the object itself."""
    from kopf._cogs.structs import references

    crds = peering_crds()
    for kind, selector in {
        "ClusterKopfPeering": references.CLUSTER_PEERINGS_K,
        "KopfPeering": references.NAMESPACED_PEERINGS_K,
    }.items():
        crd = crds[kind]
        kubernetes_validate.validate(crd, K8S_SCHEMA_VERSION, strict=True)
        assert (crd["spec"]["group"], crd["spec"]["versions"][0]["name"]) == (selector.group, selector.version)
        assert crd["spec"]["names"]["plural"] == selector.any_name
        assert crd["spec"]["scope"] == ("Cluster" if kind.startswith("Cluster") else "Namespaced")
        assert "subresources" not in crd["spec"]["versions"][0]


# --- the operator's Deployment ---------------------------------------------------------------


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def _settings_env(objects: list[dict[str, Any]], existing_secret: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the operator's container gets from the chart (ConfigMap, Secret, env)."""
    container = _container(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            (config_map,) = [
                o for o in objects_of(objects, "ConfigMap") if o["metadata"]["name"] == source["configMapRef"]["name"]
            ]
            env.update(config_map["data"])
        else:
            secrets = [o for o in objects_of(objects, "Secret") if o["metadata"]["name"] == source["secretRef"]["name"]]
            if secrets:
                env.update(secrets[0]["stringData"])
            else:
                assert existing_secret is not None, (
                    f"envFrom names Secret {source['secretRef']['name']} the chart does not make"
                )
                env.update(existing_secret)
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_runs_non_root_with_a_read_only_root(helm: Helm, value_set: str) -> None:
    objects = helm.template(value_set=value_set)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_user() != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["args"] == ["run"]
    assert (
        pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
        if objects_of(objects, "ServiceAccount")
        else pod["serviceAccountName"]
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_call_the_operators_liveness_endpoint(helm: Helm, value_set: str) -> None:
    objects = helm.template(value_set=value_set)
    container = _container(objects)
    port = next(p for p in container["ports"] if p["name"] == "health")
    env = _settings_env(objects, existing_secret={})
    assert env["MLSERVE_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{port['containerPort']}/healthz"
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": port["name"]}


def test_the_dcm_endpoint_is_off_unless_enabled_and_then_served(helm: Helm) -> None:
    objects = helm.template()
    assert "MLSERVE_DCM_LISTEN" not in _settings_env(objects, existing_secret={})
    assert "dcm" not in [p["name"] for p in _container(objects)["ports"]]
    assert not [s for s in objects_of(objects, "Service") if s["metadata"]["name"].endswith("-dcm")]

    objects = helm.template(value_set="dcm")
    container = _container(objects)
    (port,) = [p for p in container["ports"] if p["name"] == "dcm"]
    assert _settings_env(objects, existing_secret={})["MLSERVE_DCM_LISTEN"] == f"0.0.0.0:{port['containerPort']}"
    (service,) = [s for s in objects_of(objects, "Service") if s["metadata"]["name"].endswith("-dcm")]
    assert service["spec"]["ports"] == [{"name": "dcm", "port": 8090, "targetPort": "dcm", "protocol": "TCP"}]
    pod_labels = objects_of(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_secrets_stay_out_of_the_config_map(helm: Helm) -> None:
    for value_set in ("namespaced", "ha"):
        objects = helm.template(value_set=value_set)
        data = one(objects, "ConfigMap")["data"]
        assert "not-a-real-password" not in yaml.safe_dump(data)
        secret = one(objects, "Secret")
        assert set(secret["stringData"]) <= {"MLSERVE_DB_URL", "MYSQL_USERNAME", "MYSQL_PASSWORD"}
        deployment = one(objects, "Deployment")
        assert "checksum/database" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_existing_secret_is_used_and_none_is_made(helm: Helm) -> None:
    objects = helm.template(value_set="existing-secret")
    assert not objects_of(objects, "Secret")
    assert {"secretRef": {"name": "mlserve-database"}} in _container(objects)["envFrom"]
    data = one(objects, "ConfigMap")["data"]
    assert (data["MYSQL_HOST"], data["MYSQL_PORT"], data["MYSQL_DATABASE"], data["MYSQL_SLAVE_HOST"]) == (
        "mysql.databases.svc",
        "3307",
        "mlserve",
        "mysql-replica.databases.svc",
    )


def test_ha_spreads_pods_and_keeps_one_up(helm: Helm) -> None:
    objects = helm.template(value_set="ha")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert "strategy" not in deployment["spec"]  # rolling: peering keeps one pod acting
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "mlserve-ha"


def test_standalone_single_pod_recreates_on_update(helm: Helm) -> None:
    objects = helm.template(value_set="existing-secret")
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not objects_of(objects, "PodDisruptionBudget")


def test_namespaced_peering_object_in_every_watched_namespace(helm: Helm) -> None:
    objects = helm.template(value_set="namespaced")
    assert {p["metadata"]["namespace"] for p in objects_of(objects, "KopfPeering")} == {"serving", "workflows"}
    assert not objects_of(objects, "ClusterKopfPeering")


# --- the image -------------------------------------------------------------------------------


def image_user() -> int:
    """The numeric user of the Dockerfile's final stage (USER ${UID}:${UID} with ARG UID=…)."""
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text[text.rindex("\nFROM ") :]
    uid = int(re.search(r"^ARG UID=(\d+)$", final_stage, re.M)[1])  # type: ignore[index]
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", final_stage, re.M), "USER must be the numeric ${UID}"
    return uid


def test_dockerfile_builds_the_wheel_then_installs_only_it() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert [name for _, name in stages] == ["build", ""], stages
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    build, final = text.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "pip wheel" in build and "build-essential" in build
    assert "-c requirements.lock" in build  # the locked versions, not whatever is newest
    assert "build-essential" not in final and "apt-get" not in final
    assert "--no-index --find-links=/wheels /wheels/mlserve_operator-*.whl" in final
    assert 'ENTRYPOINT ["mlserve"]' in final and 'CMD ["run"]' in final
    assert image_user() >= 1000


def test_default_image_is_the_charts_app_version_and_the_package_version(helm: Helm) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert _container(helm.template())["image"] == f"mlserve-operator:{chart['appVersion']}"


def test_dockerignore_sends_only_the_package_sources() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {
        "!pyproject.toml",
        "!requirements.lock",
        "!README.md",
        "!models/",
        "!operator/",
    }


def test_release_namespace_is_used(helm: Helm) -> None:
    deployment = one(helm.template(), "Deployment")
    assert deployment["metadata"]["namespace"] == RELEASE_NAMESPACE


def test_the_migration_job_runs_before_install_and_upgrade_as_its_own_user(helm: Helm) -> None:
    objects = helm.template(value_set="existing-secret")
    job = one(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["db", "migrate"] and container["image"] == _container(objects)["image"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlserve-database-migrate"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    config = one(objects, "ConfigMap")["data"]
    assert env == {k: config[k] for k in ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_DATABASE", "MYSQL_SLAVE_HOST")}
    assert pod["automountServiceAccountToken"] is False and container["securityContext"]["readOnlyRootFilesystem"]
    assert not objects_of(helm.template(), "Job")  # off by default


def test_the_migration_job_needs_its_secret(helm: Helm) -> None:
    result = helm.render("--set", "migration.enabled=true", check=False)
    assert result.returncode != 0 and "migration.existingSecret" in result.stderr


def test_metrics_are_served_on_a_port_of_their_own_behind_a_service(helm: Helm) -> None:
    objects = helm.template(
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set-string",
        "metrics.serviceMonitor.additionalLabels.release=prometheus",
    )
    container = _container(objects)
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert _settings_env(objects, existing_secret={})["MLSERVE_METRICS_PORT"] == str(port["containerPort"])
    service = next(s for s in objects_of(objects, "Service") if s["metadata"]["name"].endswith("-metrics"))
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    ]
    off = helm.template("--set", "metrics.enabled=false")
    assert _settings_env(off, existing_secret={})["MLSERVE_METRICS_PORT"] == "0"
    assert not [s for s in objects_of(off, "Service") if s["metadata"]["name"].endswith("-metrics")]
