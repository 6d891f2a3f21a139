"""The CRD's CEL rules (``x-kubernetes-validations``) evaluated offline with cel-python.

Walks an object along the schema the way the API server does: each rule runs with
``self`` bound to the value at its node (and ``oldSelf`` to the old value for a transition
rule, only on update when the old value exists). Kubernetes' CEL adds libraries (lists,
regex, ...) beyond standard CEL; the rules of this CRD use only standard macros and
``matches``, which cel-python implements, and the cluster suite checks the same table on a
real API server.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy

_MISSING = object()


@functools.cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _evaluate(rule: str, value: Any, old: Any) -> bool | str:
    activation = {"self": celpy.json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _program(rule).evaluate(activation)
    except celpy.CELEvalError as exc:
        return f"evaluation error: {exc}"
    if isinstance(result, celpy.CELEvalError):
        return f"evaluation error: {result}"
    return bool(result)


def cel_errors(schema: dict[str, Any], value: Any, old: Any = _MISSING, path: str = "") -> list[str]:
    """The messages of every rule ``value`` breaks (``old``: the object being replaced)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", ()):
        transition = "oldSelf" in rule["rule"]
        if transition and old is _MISSING:
            continue
        outcome = _evaluate(rule["rule"], value, old if transition else _MISSING)
        if outcome is not True:
            detail = "" if outcome is False else f" ({outcome})"
            errors.append(f"{path or '<root>'}: {rule['message']}{detail}")
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key in value:
                old_child = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                errors.extend(cel_errors(child, value[key], old_child, f"{path}.{key}"))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, child_value in value.items():
                errors.extend(cel_errors(extra, child_value, _MISSING, f"{path}.{key}"))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors.extend(cel_errors(schema["items"], item, _MISSING, f"{path}[{index}]"))
    return errors
