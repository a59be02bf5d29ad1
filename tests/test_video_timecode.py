"""parse_time / format_time: the user-facing time syntax of --start/--end."""

import pytest

from vidgpen.errors import OptionError
from vidgpen.video import format_time, parse_time


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0),
    ("62.5", 62.5),
    ("90", 90.0),
    (".5", 0.5),
    ("1:02.5", 62.5),
    ("00:01:02.5", 62.5),
    ("01:00:00", 3600.0),
    ("1:02:03.250", 3723.25),
    ("100:00:00", 360000.0),
    ("00:00:07,5", 7.5),
    ("  12  ", 12.0),
])
def test_parse_time_accepts_seconds_and_clock_forms(text, seconds):
    assert parse_time(text) == pytest.approx(seconds, abs=1e-12)


def test_parse_time_accepts_numbers():
    assert parse_time(3) == 3.0
    assert parse_time(2.25) == 2.25


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1:75", "1:60:00", "12s", "1::2", "nan", "inf", -0.5,
                                 float("nan"), float("inf"), True])
def test_parse_time_rejects_what_is_not_a_time(bad):
    with pytest.raises(OptionError) as info:
        parse_time(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 59.999, 62.5, 3723.25, 86399.5])
def test_format_then_parse_round_trips_to_the_millisecond(seconds):
    assert parse_time(format_time(seconds)) == pytest.approx(seconds, abs=5e-4)


def test_format_time_shape():
    assert format_time(3723.5) == "1:02:03.500"
    assert format_time(None) == "unknown"
