"""The audit log is read per user, from an offset, one event per request started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mlserve.operator.dev.cluster.audit import read_events, started_requests, when
from mlserve.operator.dev.cluster.kubeconfig import write_token_kubeconfig

OPERATOR = "system:serviceaccount:ops:operator"


def _event(audit_id: str, verb: str, stage: str, user: str = OPERATOR, **extra: Any) -> dict[str, Any]:
    return {
        "auditID": audit_id,
        "verb": verb,
        "stage": stage,
        "user": {"username": user},
        "objectRef": {"resource": "mlserves", "apiGroup": "mlserve.darwin.io"},
        "stageTimestamp": "2026-01-02T03:04:05.250000Z",
        **extra,
    }


def _write(path: Path, events: list[dict[str, Any]], *, partial: str = "") -> None:
    with path.open("a") as log:
        log.write("".join(json.dumps(e) + "\n" for e in events) + partial)


def test_requests_of_one_user_are_read_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    _write(
        log,
        [
            _event("1", "list", "ResponseComplete"),
            _event("2", "patch", "ResponseComplete", user="someone-else"),
            {"auditID": "3", "verb": "get", "stage": "ResponseComplete", "user": {"username": OPERATOR}},
        ],
    )
    events, offset = read_events(log, OPERATOR)
    assert [e["auditID"] for e in events] == ["1"]  # another user and a non-resource URL left out

    _write(log, [_event("4", "patch", "ResponseComplete")], partial='{"auditID": "5", "ver')
    events, offset_after = read_events(log, OPERATOR, offset)
    assert [e["auditID"] for e in events] == ["4"]  # the line being written waits for next time
    assert offset_after == log.stat().st_size - len('{"auditID": "5", "ver')


def test_a_watch_counts_once_when_it_starts() -> None:
    events = [
        _event("w0", "watch", "ResponseComplete"),  # the end of a watch started before
        _event("w1", "watch", "ResponseStarted"),
        _event("g1", "get", "ResponseComplete"),
        _event("w1", "watch", "ResponseComplete"),
    ]
    assert [(e["auditID"], e["verb"]) for e in started_requests(events)] == [("w1", "watch"), ("g1", "get")]
    assert when(events[0]) == 1767323045.25


def test_a_token_kubeconfig_keeps_the_cluster_and_holds_only_the_token(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("ca")
    admin = tmp_path / "admin.kubeconfig"
    admin.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}
                ],
                "users": [{"name": "admin", "user": {"client-certificate": "admin.crt"}}],
                "contexts": [{"name": "admin", "context": {"cluster": "c", "user": "admin"}}],
                "current-context": "admin",
            }
        )
    )
    written = yaml.safe_load(write_token_kubeconfig(admin, "tok", OPERATOR, tmp_path / "op.kubeconfig").read_text())
    assert written["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert written["users"] == [{"name": OPERATOR, "user": {"token": "tok"}}]
    assert (tmp_path / "op.kubeconfig").stat().st_mode & 0o077 == 0
