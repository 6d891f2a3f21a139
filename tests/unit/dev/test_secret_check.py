"""The suite's check for seeded secrets (``mlserve_testing.secrets``) finds what it looks for:
in a log record, with or without a traceback, and in a text it is given; and says where, never
what. Run on lists of its own, so the suite's own tally is untouched."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from mlserve_testing import secrets

SECRET = "hunter2-but-longer-5e1d"


@pytest.fixture(autouse=True)
def own_tally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_secrets", set())
    monkeypatch.setattr(secrets, "_scanned", Counter())
    monkeypatch.setattr(secrets, "_leaks", [])


def test_a_log_record_holding_a_seeded_secret_is_a_leak_named_by_where_not_what() -> None:
    secrets.seeded_secret(SECRET)
    logging.getLogger("mlserve.test").error("connecting with %s", SECRET)
    (leak,) = secrets._leaks
    assert "log records" in leak and "mlserve.test" in leak
    assert SECRET not in leak


def test_a_traceback_is_checked_too() -> None:
    secrets.seeded_secret(SECRET)
    try:
        raise RuntimeError(f"login failed for {SECRET}")
    except RuntimeError:
        logging.getLogger("mlserve.test").warning("the database did not answer", exc_info=True)
    assert len(secrets._leaks) == 1


def test_clean_texts_are_counted_and_not_leaks() -> None:
    secrets.seeded_secret(SECRET)
    secrets.check_text("status of MLServe a/b", "MLServe statuses", '{"message": "the password is wrong"}')
    logging.getLogger("mlserve.test").warning("nothing secret here")
    assert secrets._leaks == []
    assert secrets._scanned["MLServe statuses"] == 1 and secrets._scanned["log records"] == 1


def test_a_short_value_is_refused_as_a_seeded_secret() -> None:
    with pytest.raises(ValueError, match="at least"):
        secrets.seeded_secret("pw")
