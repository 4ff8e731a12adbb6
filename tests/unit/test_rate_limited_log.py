"""RateLimitedLog: one line per interval per key, the folded count never lost."""

from __future__ import annotations

import logging

import pytest

from stateengine.server.connections import RateLimitedLog


def test_repeats_are_folded_and_flushed(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.ratelog")
    rate = RateLimitedLog(3600.0, logger)
    with caplog.at_level(logging.INFO, logger="test.ratelog"):
        for i in range(10_000):
            rate.note("drop", logging.WARNING, f"dropped {i + 1}")
        rate.note("other", logging.INFO, "other kind")
        rate.flush()  # the interval is not up: nothing yet
        assert [r.getMessage() for r in caplog.records] == ["dropped 1", "other kind"]
        rate.flush(force=True)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "dropped 10000 (9999 more since the last line)"
    assert len(messages) == 3 and rate.lines == 3


def test_a_quiet_interval_logs_at_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.ratelog2")
    rate = RateLimitedLog(0.0, logger)
    with caplog.at_level(logging.INFO, logger="test.ratelog2"):
        rate.note("k", logging.WARNING, "a")
        rate.note("k", logging.WARNING, "b")
    assert [r.getMessage() for r in caplog.records] == ["a", "b"]
