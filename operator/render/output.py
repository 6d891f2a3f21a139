"""Manifests as multi-document YAML, the way ``mlserve render`` prints them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["dump_yaml"]


class _Dumper(yaml.SafeDumper):
    """Never writes anchors and aliases, even when a dict object appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings (runtimeEnvYAML, entrypoints) in block style, readable in a diff.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(manifests: Iterable[dict[str, Any]]) -> str:
    """Each manifest as one YAML document, keys in the order rendered."""
    return yaml.dump_all(list(manifests), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
