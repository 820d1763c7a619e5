"""Times on the wire: ``YYYY-MM-DDTHH:MM:SS.sssZ``, always UTC, always milliseconds.

Inside the shop a time is a float of epoch seconds (what clocks and timers hand out);
only the wire sees strings. Formatting is done with ``time.gmtime`` and ``%``-formatting
rather than ``datetime.strftime`` because it sits on every reply and event.

``parse_time`` accepts the same shape (used for the ``Iceshop-Deadline`` header) with
0 to 9 fraction digits, and nothing looser: no offsets, no lowercase ``z``, no spaces.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = ["format_time", "parse_time"]

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)
_MAX_EPOCH = 253402300799.999  # 9999-12-31T23:59:59.999Z


def format_time(epoch_seconds: float) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (rounded to the millisecond)."""
    if not 0 <= epoch_seconds <= _MAX_EPOCH:
        raise ValueError(f"time out of range: {epoch_seconds!r}")
    seconds, millis = divmod(round(epoch_seconds * 1000), 1000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - fastest here
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        millis,
    )


def parse_time(text: str) -> float:
    """``YYYY-MM-DDTHH:MM:SS[.fff]Z`` to epoch seconds; ``ValueError`` otherwise."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"not a time of the form YYYY-MM-DDTHH:MM:SS.sssZ: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (
        year >= 1970
        and 1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        raise ValueError(f"not a valid UTC time: {text!r}")
    whole = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = m.group(7)
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
