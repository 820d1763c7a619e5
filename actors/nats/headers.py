"""Message headers: case-insensitive names and the trace context that replies carry back.

NATS header names are case-sensitive on the wire while HTTP-style users (and the W3C
trace-context spec) treat them as case-insensitive. The binding lower-cases names once
when a request arrives (:func:`lower_names`), so routes and actors can look them up with
a plain ``dict.get("traceparent")``; :func:`get_header` works on any mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["TRACE_HEADERS", "get_header", "lower_names", "trace_headers"]

TRACE_HEADERS = ("traceparent", "tracestate")
"""W3C trace-context headers copied from a request to its reply."""


def get_header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """The value of header ``name`` in any letter case, or ``None``."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def lower_names(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A copy with lower-case names (later duplicates in other cases win)."""
    if not headers:
        return {}
    return {key.lower(): value for key, value in headers.items()}


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The trace-context headers of a request (names as in :data:`TRACE_HEADERS`), or
    ``None`` when it has none. ``headers`` must have lower-case names."""
    if not headers:
        return None
    out: dict[str, str] | None = None
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if value is not None:
            if out is None:
                out = {}
            out[name] = value
    return out
