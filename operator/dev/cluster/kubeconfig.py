"""Kubeconfig files: one for people and tests (admin), one per control-plane component."""

from __future__ import annotations

from pathlib import Path

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
