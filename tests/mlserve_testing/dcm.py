"""Darwin's calls to its cluster manager, replayed from the fixtures in ``tests/fixtures/darwin_dcm``."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

import httpx2 as httpx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "darwin_dcm"


def call(name: str, **names: str) -> dict[str, Any]:
    """The fixture ``name`` (without ``.json``) with ``${ENV}``, ``${SERVE}``, ... filled in."""
    text = Template((FIXTURES / f"{name}.json").read_text()).substitute(
        {key.upper(): value for key, value in names.items()}
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def replay(base_url: str, name: str, **names: str) -> httpx.Response:
    """Send the call as Darwin's aiohttp client does: the method, the path, a JSON body."""
    fixture = call(name, **names)
    return httpx.request(fixture["method"], base_url + fixture["path"], json=fixture["body"], timeout=30)


def send(base_url: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> httpx.Response:
    if raw is not None:
        return httpx.request(method, base_url + path, content=raw, timeout=30)
    return httpx.request(method, base_url + path, json=body, timeout=30)
