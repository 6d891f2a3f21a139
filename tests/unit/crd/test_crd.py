"""The MLServe CRD, checked offline: a structural schema that documents every field, the
names DESIGN.md fixes, every status field the operator writes, and the examples.

The invalid MLServes of ``invalid_mlserves.py`` are checked here with JSON schema (the
non-CEL ones), with the CEL rules evaluated by cel-python (the CEL ones) and with
MLServeSpec; ``test_crd_cluster.py`` runs the whole table against a real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlserve_testing.cel import cel_errors
from mlserve_testing.invalid_mlserves import INVALID, Invalid
from mlserve_testing.schemas import MLSERVE_CRD, ROOT, mlserve_errors

from mlserve.models.errors import InvalidConfig
from mlserve.operator.spec import MLServeSpec

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD = yaml.safe_load(MLSERVE_CRD.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]

# Every field of status the operator writes (DESIGN.md "Status" and the operator's needs).
STATUS_FIELDS = {
    "observedGeneration", "phase", "message", "conditions", "deploymentId", "previousDeploymentId",
    "artifactVersion", "image", "replicas", "readyReplicas", "ready", "serve", "hosts",
    "lastDeployedAt", "schedule", "lastScheduledTime", "nextScheduledTime",
    "activeRayJob", "lastRunStatus", "children",
}  # fmt: skip
_ALLOWED_KEYS = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum",
    "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
    "maxProperties", "format", "default", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        found.extend(_walk(child, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        found.extend(_walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return found


NODES = _walk(SCHEMA, "")


def test_names_are_designs() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "mlserves.mlserve.darwin.io"
    assert spec["group"] == "mlserve.darwin.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "MLServe" and spec["names"]["plural"] == "mlserves"
    assert spec["names"]["shortNames"] == ["mls"]
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"] and VERSION["subresources"] == {"status": {}}


@pytest.mark.parametrize(("path", "node"), NODES, ids=[path or "<root>" for path, _ in NODES])
def test_structural_node(path: str, node: dict[str, Any]) -> None:
    assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, f"{path}: no type"
    unknown = set(node) - _ALLOWED_KEYS
    assert not unknown, f"{path}: keys a structural schema does not allow here: {unknown}"
    if "properties" in node:
        assert node["type"] == "object" and "additionalProperties" not in node, path
    if node["type"] == "array":
        assert isinstance(node.get("items"), dict), f"{path}: an array needs items"
    for rule in node.get("x-kubernetes-validations", ()):
        assert rule.get("rule") and rule.get("message"), f"{path}: a CEL rule needs a message a user understands"
    for key in node.get("required", ()):
        assert key in node.get("properties", {}), f"{path}: required {key} is not a property"
    # Size bounds keep CEL's cost estimate within budget and stop huge objects.
    if path.startswith((".spec", ".status")) and node["type"] == "array":
        assert "maxItems" in node, f"{path}: arrays need maxItems"


# The API server forbids anything but the type on the root's metadata (kubectl explain
# shows the standard ObjectMeta documentation there).
DOCUMENTED = [(path, node) for path, node in NODES[1:] if path != ".metadata"]


@pytest.mark.parametrize(("path", "node"), DOCUMENTED, ids=[path for path, _ in DOCUMENTED])
def test_every_field_has_a_description(path: str, node: dict[str, Any]) -> None:
    assert len(node.get("description", "")) >= 8, f"{path}: kubectl explain would show nothing"


def test_root_metadata_is_only_typed() -> None:
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


def test_status_declares_every_field_the_operator_writes() -> None:
    status = SCHEMA["properties"]["status"]["properties"]
    assert set(status) >= STATUS_FIELDS, f"undeclared status fields: {STATUS_FIELDS - set(status)}"
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert "observedGeneration" in condition["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns_point_at_declared_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    for wanted in ("Serve", "Environment", "Type", "Version", "Phase", "Ready", "Host", "Message", "Age"):
        assert wanted in columns
    for name, json_path in columns.items():
        if json_path.startswith(".metadata"):
            continue
        node = SCHEMA
        for part in json_path.strip(".").split("."):
            field, _, index = part.partition("[")
            node = node["properties"][field]
            if index:  # .status.hosts[0]: an item of a declared list
                node = node["items"]
        assert node["type"], name


def test_capacity_enums_accept_darwins_spellings() -> None:
    spellings = ["spot", "on_demand", "on-demand", "ondemand"]
    for path, node in NODES:
        if path.endswith("nodeCapacityType"):
            assert node["enum"] == spellings, path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    body = yaml.safe_load(example.read_text())
    assert mlserve_errors(body) == []
    assert cel_errors(SCHEMA, body) == []
    assert cel_errors(SCHEMA, body, old=body) == [], "an unchanged object passes the transition rules"
    MLServeSpec.from_resource(body)


def test_there_are_api_and_workflow_examples() -> None:
    types = {yaml.safe_load(p.read_text())["spec"]["type"] for p in EXAMPLES}
    assert types == {"api", "workflow"}


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 15
    assert len({case.id for case in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", [c for c in INVALID if not c.cel], ids=lambda c: c.id)
def test_schema_rejects_without_cel(case: Invalid) -> None:
    assert mlserve_errors(case.body), f"{case.id}: the schema accepts it; is it CEL-only?"


@pytest.mark.parametrize("case", [c for c in INVALID if c.cel], ids=lambda c: c.id)
def test_cel_only_cases_pass_the_schema(case: Invalid) -> None:
    assert mlserve_errors(case.body) == [], f"{case.id}: the schema rejects it, so it is not CEL-only"


@pytest.mark.parametrize("case", [c for c in INVALID if c.before is None], ids=lambda c: c.id)
def test_mlservespec_rejects_offline(case: Invalid) -> None:
    with pytest.raises(InvalidConfig):
        MLServeSpec.from_resource(case.body)


@pytest.mark.parametrize("case", [c for c in INVALID if c.cel], ids=lambda c: c.id)
def test_cel_rules_reject_with_the_message(case: Invalid) -> None:
    if case.before is not None:
        assert cel_errors(SCHEMA, case.before) == [], f"{case.id}: the object before the update is valid"
        errors = cel_errors(SCHEMA, case.body, old=case.before)
    else:
        errors = cel_errors(SCHEMA, case.body)
    assert any(case.fragment in error for error in errors), f"{case.id}: CEL said {errors}"


@pytest.mark.parametrize("case", [c for c in INVALID if not c.cel], ids=lambda c: c.id)
def test_schema_only_cases_pass_cel(case: Invalid) -> None:
    assert cel_errors(SCHEMA, case.body) == [], f"{case.id}: a CEL rule rejects it too; mark it cel"


def test_serve_may_be_filled_in_later() -> None:
    """An omitted spec.serve may later be set (to the name it defaulted to): the transition rules allow it."""
    before = yaml.safe_load((ROOT / "examples" / "mlserve-workflow.yaml").read_text())
    after = {**before, "spec": {**before["spec"], "serve": before["metadata"]["name"]}}
    assert cel_errors(SCHEMA, after, old=before) == []
