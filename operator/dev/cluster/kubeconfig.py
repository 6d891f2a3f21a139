"""Kubeconfig files: one for people and tests (admin), one per control-plane component."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .pki import CertPair


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, user: str, client: CertPair, cluster: str) -> Path:
    """A kubeconfig with a single context that reaches ``server`` as ``user`` by certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user, "namespace": "default"}}],
        "current-context": cluster,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def write_token_kubeconfig(source: Path, token: str, username: str, path: Path) -> Path:
    """A kubeconfig that reaches the cluster of ``source``'s current context (server and CA)
    with ``token`` as its only user (e.g. a ServiceAccount's, from the TokenRequest API)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    current = config.get("current-context") or config["contexts"][0]["name"]
    (context,) = [c for c in config["contexts"] if c["name"] == current]
    (cluster,) = [c for c in config["clusters"] if c["name"] == context["context"]["cluster"]]
    cluster_entry = dict(cluster["cluster"])
    ca = cluster_entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        cluster_entry["certificate-authority"] = str((source.parent / ca).resolve())
    out = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster["name"], "cluster": cluster_entry}],
        "users": [{"name": username, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": username}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(out))
    path.chmod(0o600)
    return path
