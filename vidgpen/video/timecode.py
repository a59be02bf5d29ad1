"""Reading and printing times given by users (``--start``, ``--end``) and shown by ``vidgpen probe``."""

from __future__ import annotations

import math
import re

from vidgpen.errors import OptionError

# [[HH:]MM:]SS[.fff] -- hours and minutes optional, fraction optional, a comma also accepted as decimal mark.
_CLOCK = re.compile(r"^(?:(?:(?P<h>\d+):)?(?P<m>\d+):)?(?P<s>\d+(?:[.,]\d*)?|[.,]\d+)$")


def parse_time(value: str | float | int) -> float:
    """Seconds from ``"62.5"``, ``"1:02.5"``, ``"00:01:02.5"`` or a number.

    Raises :class:`OptionError` for text that is not a time, for negative times and for nan/inf.
    In the colon forms minutes and seconds must be below 60 (``"1:75"`` is a typo, not 135 s).
    """
    if isinstance(value, bool):
        raise OptionError(f"cannot read time {value!r}: use seconds (12.5) or HH:MM:SS.ms (00:01:02.5)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        match = _CLOCK.match(text)
        if not match:
            raise OptionError(
                f"cannot read time {value!r}: use seconds (12.5) or HH:MM:SS.ms (00:01:02.5)"
            )
        hours = int(match["h"] or 0)
        minutes = int(match["m"] or 0)
        secs = float(match["s"].replace(",", "."))
        if match["m"] is not None and (secs >= 60 or (match["h"] is not None and minutes >= 60)):
            raise OptionError(f"cannot read time {value!r}: minutes and seconds must be below 60")
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds < 0:
        raise OptionError(f"time {value!r} must be a finite number of seconds >= 0")
    return seconds


def format_time(seconds: float | None) -> str:
    """``3723.5 -> "1:02:03.500"``; ``None -> "unknown"``."""
    if seconds is None:
        return "unknown"
    sign = "-" if seconds < 0 else ""
    millis = round(abs(seconds) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}.{millis:03d}"
