"""Durations and ETAs print alike: CLI tables (tenths under a minute) and progress notes."""

from __future__ import annotations

import pytest

from syncflow.cli._output import fmt_duration
from syncflow.reports.sessions import fmt_eta


@pytest.mark.parametrize(
    ("seconds", "duration", "eta"),
    [(None, "-", "-"), (4.24, "4.2s", "4s"), (61, "1m01s", "1m01s"), (3725, "1h02m", "1h02m")],
)
def test_duration_and_eta_share_one_format(seconds: float | None, duration: str, eta: str) -> None:
    assert fmt_duration(seconds) == duration
    assert fmt_eta(seconds) == eta
