"""How the CLI prints a reply: JSON for scripts, plain text for people.

``--json`` prints the reply's ``data`` (or, on a failure, its ``error``) exactly as the
node sent it, indented, so a script reads the contract's fields and nothing else. The
text form is for a terminal and needs no dependency: scalar fields as aligned
``key  value`` lines, nested objects indented under their key, lists of objects as
tables. Two shapes would drown a terminal and are shortened there only: lists of
integers become ranges (``0-63``), and shard tables (64 rows by default) become one line
per owner. The window table shows the columns that tell windows apart (``window get``
and ``--json`` show every field), and a table too wide for a terminal (a decision's
reasons, with their sentences) prints as one block per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

__all__ = ["format_error", "render", "render_json", "spans"]

#: Width beyond which a list of objects prints as one block per object, not a table.
MAX_TABLE_WIDTH: Final = 132


def _fill(row: Mapping[str, Any], part: str, whole: str) -> str:
    return f"{_scalar(row.get(part))}/{_scalar(row.get(whole))}"


#: Columns of the window table: (header, cell). ``reserved`` and ``buyers`` are
#: quantity_reserved/quantity_total and participants/min_participants.
_WINDOW_COLUMNS: Final[tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...]] = (
    ("window_id", lambda r: _scalar(r.get("window_id"))),
    ("product_id", lambda r: _scalar(r.get("product_id"))),
    ("seller_id", lambda r: _scalar(r.get("seller_id"))),
    ("state", lambda r: _scalar(r.get("state"))),
    ("outcome", lambda r: _scalar(r.get("outcome"))),
    ("price_minor", lambda r: f"{_scalar(r.get('unit_price_minor'))} {_scalar(r.get('currency'))}"),
    ("reserved", lambda r: _fill(r, "quantity_reserved", "quantity_total")),
    ("buyers", lambda r: _fill(r, "participants", "min_participants")),
    ("activates_at", lambda r: _scalar(r.get("activates_at"))),
    ("expires_at", lambda r: _scalar(r.get("expires_at"))),
)


def render_json(value: Any) -> str:
    """``value`` as indented JSON (UTF-8 text, keys in the order the node sent them)."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode("utf-8")


def format_error(error: Mapping[str, Any]) -> str:
    """One line for stderr: ``code: message`` and the details, if any."""
    line = f"{error.get('code', 'internal')}: {error.get('message', '')}"
    details = error.get("details")
    if details:
        line += " " + msgspec.json.encode(details).decode("utf-8")
    return line


def render(data: Any) -> str:
    """A reply's ``data`` as text for a terminal."""
    if isinstance(data, Mapping):
        return "\n".join(_mapping(data, ""))
    if _is_rows(data):
        return "\n".join(_table_or_blocks(data))
    return _scalar(data)


def spans(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``0-2,5,7-8``."""
    parts: list[str] = []
    ordered = sorted(set(numbers))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(_is_int(v) for v in value):
        return spans(value) if value else "none"
    if isinstance(value, list) and all(not isinstance(v, Mapping | list) for v in value):
        return ", ".join(_scalar(v) for v in value) if value else "none"
    return msgspec.json.encode(value).decode("utf-8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _mapping(data: Mapping[str, Any], indent: str) -> list[str]:
    simple = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_rows(v)}
    lines: list[str] = []
    width = max((len(k) for k in simple), default=0)
    for key, value in simple.items():
        lines.append(f"{indent}{key.ljust(width)}  {_scalar(value)}")
    for key, value in data.items():
        if key in simple:
            continue
        lines.append(f"{indent}{key}:")
        if isinstance(value, Mapping):
            lines.extend(_mapping(value, indent + "  ") if value else [f"{indent}  (empty)"])
        else:
            lines.extend(_rows(key, value, indent + "  "))
    return lines


def _rows(key: str, rows: Sequence[Mapping[str, Any]], indent: str) -> list[str]:
    if _is_shards(rows):
        return _shards(rows, indent)
    if key == "windows":
        headers = [h for h, _ in _WINDOW_COLUMNS]
        cells = [[cell(row) for _, cell in _WINDOW_COLUMNS] for row in rows]
        return _table(headers, cells, indent)
    return _table_or_blocks(rows, indent)


def _table_or_blocks(rows: Sequence[Mapping[str, Any]], indent: str = "") -> list[str]:
    """A table, or, when it would be too wide (long texts), one block per row."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = list(seen)
    cells = [[_scalar(row.get(c)) for c in columns] for row in rows]
    lines = _table(columns, cells, indent)
    if max(len(line) for line in lines) <= MAX_TABLE_WIDTH:
        return lines
    blocks: list[str] = []
    for row in rows:
        if blocks:
            blocks.append("")
        blocks.extend(_mapping(row, indent))
    return blocks


def _table(headers: Sequence[str], cells: Sequence[Sequence[str]], indent: str) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = (v.ljust(w) for v, w in zip(values, widths, strict=True))
        return (indent + "  ".join(padded)).rstrip()

    return [line(headers), *(line(r) for r in cells)]


def _is_shards(rows: Sequence[Mapping[str, Any]]) -> bool:
    return all(set(row) >= {"shard", "owner"} for row in rows)


def _shards(rows: Sequence[Mapping[str, Any]], indent: str) -> list[str]:
    """Shard rows grouped by owner: ``n1  0-63  (64 shards, lease age 0.5-1.2 s)``."""
    owners: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        owners.setdefault(_scalar(row.get("owner")), []).append(row)
    width = max(len(owner) for owner in owners)
    lines = []
    for owner, owned in owners.items():
        ages = [
            row["lease_age_s"] for row in owned if isinstance(row.get("lease_age_s"), int | float)
        ]
        age = ""
        if ages:
            low, high = min(ages), max(ages)
            age = f", lease age {low:g} s" if low == high else f", lease age {low:g}-{high:g} s"
        count = f"{len(owned)} shard{'s' if len(owned) != 1 else ''}"
        shards = spans(int(row["shard"]) for row in owned)
        lines.append(f"{indent}{owner.ljust(width)}  {shards}  ({count}{age})")
    return lines
