"""Secret values never leave the operator: a check over the whole suite (a pytest plugin).

Every secret value the suite seeds is registered here (:func:`seeded_secret`): each MariaDB
server's password (which the operator holds in its database URL) and the values tests mark. Every
text the operator produces is then checked for them: each log record of this process (the
operator's code runs in-process in most tiers), the log of each operator subprocess when it stops,
and the MLServes' statuses and the Events of each test namespace, read before it is deleted. A
leak fails the run at its end, naming where it was seen (never the value); the terminal summary
gives the figures either way.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import httpx2
import pytest

__all__ = ["check_namespace", "check_text", "seeded_secret"]

#: shorter values would be found by chance in unrelated text
MIN_LENGTH = 8

_secrets: set[str] = set()
_scanned: Counter[str] = Counter()
_leaks: list[str] = []


def seeded_secret(value: str) -> str:
    """Register ``value`` as a secret the operator must never show; returns it."""
    if len(value) < MIN_LENGTH:
        raise ValueError(f"a seeded secret needs at least {MIN_LENGTH} characters to be found reliably")
    _secrets.add(value)
    return value


def check_text(where: str, kind: str, text: str) -> None:
    """Record a leak when ``text`` (seen at ``where``; ``kind`` names such texts, plural, for the
    summary) holds a seeded secret."""
    _scanned[kind] += 1
    for secret in _secrets:
        if secret in text:
            _leaks.append(f"{kind}: {where} holds a seeded secret ({secret[:2]}…, {len(secret)} characters)")


def check_namespace(client: Any, namespace: str) -> None:
    """Check the MLServes' statuses and the Events of ``namespace`` (before it is deleted)."""
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.core_v1 import Event

    mlserve_kind = create_namespaced_resource("mlserve.darwin.io", "v1alpha1", "MLServe", "mlserves")
    try:
        for item in client.list(mlserve_kind, namespace=namespace):
            name = item["metadata"]["name"]
            check_text(
                f"status of MLServe {namespace}/{name}", "MLServe statuses", json.dumps(item.get("status") or {})
            )
        for event in client.list(Event, namespace=namespace):
            check_text(f"Event {namespace}/{event.metadata.name}", "Events", f"{event.reason} {event.message}")
    except httpx2.HTTPStatusError as exc:  # lightkube's ApiError is one; a 404 of a list may come bare
        if exc.response.status_code != 404:  # the MLServe CRD is not installed in every tier
            raise


def _check_record(record: logging.LogRecord) -> None:
    try:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
    except Exception:  # a record that cannot be formatted is not ours to judge
        return
    check_text(f"log record of {record.name} ({record.pathname}:{record.lineno})", "log records", text)


_make_record = logging.getLogRecordFactory()


def _watching_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every log record, checked as it is made: whatever handlers a test (or `mlserve run`'s
    own logging set-up, which replaces the root's) puts in place, none is missed."""
    record = _make_record(*args, **kwargs)
    _check_record(record)
    return record


def _watch_the_operators_logs() -> None:
    # The operator's own records at every level, as `MLSERVE_LOG_LEVEL=DEBUG` would log them
    # (again before each test: a test that sets up the CLI's logging changes the level).
    logging.getLogger("mlserve").setLevel(logging.DEBUG)


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.setLogRecordFactory(_watching_factory)
    _watch_the_operators_logs()


def pytest_runtest_setup(item: pytest.Item) -> None:
    _watch_the_operators_logs()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.setLogRecordFactory(_make_record)
    if _leaks and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _secrets:
        return
    scanned = ", ".join(f"{count} {kind}" for kind, count in sorted(_scanned.items()))
    terminalreporter.write_sep("-", "seeded secrets")
    terminalreporter.write_line(
        f"{len(_secrets)} secret values seeded; checked {scanned or 'nothing'}; leaks: {len(_leaks)}"
    )
    for leak in sorted(set(_leaks)):
        terminalreporter.write_line(f"LEAK {leak}", red=True)
