"""One grammar for durations (trust/durations.py): the API's, and the station's with days."""

from __future__ import annotations

import pytest

from flashgate.trust.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("168h", 168 * 3600),
        ("30m", 1800),
        ("1h30m", 5400),
        ("90s", 90),
        ("1h0m1s", 3601),
        ("2h5s", 7205),
        ("0s", 0),
        ("90m", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "0", "h", "1", "1d", "1.5h", "-1h", "+1h", "1h 30m", "30m1h", "1h1h", "1H", " 1h", "1h\n",
     "\u0661h", "1ms", "9" * 40 + "s"],
)  # fmt: skip
def test_parse_duration_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_api_grammar_has_no_days_and_the_station_flags_do() -> None:
    assert parse_duration("168h") == 7 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration("0s") == 0
    for bad in ("", "h", "7d", "30m1h", "1.5h", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("365d", days=True) == 365 * 86400
    assert parse_duration("1d12h", days=True) == 36 * 3600
    with pytest.raises(ValueError):
        parse_duration("12h1d", days=True)


def test_format_duration_writes_days_as_hours() -> None:
    assert format_duration(7 * 86400) == "168h"
    assert format_duration(5400) == "1h30m"
    assert format_duration(45) == "45s"
    assert format_duration(0) == "0s"
