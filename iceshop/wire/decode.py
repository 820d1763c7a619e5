"""Request bodies from bytes to command Structs, or ``invalid_request`` naming the field.

Rules applied here, beyond the Structs' own constraints:

- A body over 64 KiB is rejected before any parsing.
- An empty body counts as ``{}``.
- ``null`` means absent: a ``null`` field takes its default, and a ``null`` for a field
  without a default is a missing required field.

msgspec has no "null is absent" switch, so every command has two decoders, both built
once at import: the command Struct itself, and a twin whose fields also accept
``null``. Every body first goes straight to the command's decoder, at full speed.
Only when that fails with "got `null`" (rare: clients seldom send ``null``) is the
body decoded again by the twin, whose ``None`` values are dropped (the field takes its
default) or rejected (the field is required) before the real Struct is built. Both
decoders apply the same constraints, so both paths accept and reject the same bodies
apart from the nulls. No field that accepts ``null`` directly has a default other than
``None``, so a ``null`` the first decoder accepts already means "absent".

Every failure becomes ``ShopError(invalid_request)``: malformed JSON, invalid UTF-8,
a body that is not an object, wrong types, unknown or missing fields. The message names
the field (``quantity: expected `int` >= 1``) and ``details.field`` carries it.
"""

from __future__ import annotations

from typing import Any, Final, Optional

import msgspec

from iceshop.wire.commands import (
    COMMAND_TYPES,
    CURRENCY_PATTERN,
    ID_PATTERN,
    PHONE_PATTERN,
    Command,
    CommandKind,
)
from iceshop.wire.errors import ShopError
from iceshop.wire.subjects import (
    DEFAULT_PREFIX,
    SUBJECT_IDS,
    Route,
    parse_subject,
    route,
    validate_id,
)

__all__ = [
    "MAX_BODY_BYTES",
    "decode_command",
    "decode_request",
    "parse_subject",
    "route",
    "validate_id",
]

MAX_BODY_BYTES: Final = 64 * 1024
_GOT_NULL: Final = "got `null`"

_PATTERN_RULES: Final = {
    ID_PATTERN: "must be 1-64 characters of A-Z a-z 0-9 _ -",
    PHONE_PATTERN: "must be an E.164 phone number such as +905551234567",
    CURRENCY_PATTERN: "must be an ISO 4217 code of three capital letters",
}


class _Codec:
    """The decoders and field facts of one command type."""

    __slots__ = ("cls", "decoder", "fields", "nullable", "required", "subject_ids")

    def __init__(self, cls: type[Command], subject_ids: tuple[str, ...]) -> None:
        self.cls = cls
        self.decoder = msgspec.json.Decoder(cls)
        infos = msgspec.structs.fields(cls)
        self.fields = tuple(f.name for f in infos)
        self.required = frozenset(f.name for f in infos if f.required)
        twin = msgspec.defstruct(
            f"{cls.__name__}OrNull",
            [
                (f.name, Optional[f.type]) if f.required else (f.name, Optional[f.type], None)  # noqa: UP045 - f.type is a runtime object
                for f in infos
            ],
            kw_only=True,
            forbid_unknown_fields=True,
        )
        self.nullable = msgspec.json.Decoder(twin)
        self.subject_ids = subject_ids

    def decode_nullable(self, payload: bytes) -> Command:
        """The slow path for bodies with ``null``: drop or reject them, then build."""
        raw = self.nullable.decode(payload)
        given: dict[str, Any] = {}
        for name in self.fields:
            value = getattr(raw, name)
            if value is not None:
                given[name] = value
            elif name in self.required:
                raise ShopError.invalid(f"{name}: required, got null", field=name)
        return self.cls(**given)


_CODECS: Final[dict[CommandKind, _Codec]] = {
    kind: _Codec(cls, SUBJECT_IDS[kind]) for kind, cls in COMMAND_TYPES.items()
}


def _describe(message: str) -> str:
    for pattern, rule in _PATTERN_RULES.items():
        if repr(pattern) in message:  # msgspec quotes the pattern with repr()
            return rule
    return message[:1].lower() + message[1:]


def _invalid(message: str, codec: _Codec) -> ShopError:
    """Turn a msgspec validation message into an ``invalid_request`` naming the field."""
    text, sep, path = message.rpartition(" - at `")
    if sep and path.startswith("$."):
        name = path[2:-1].split(".", 1)[0].split("[", 1)[0]
        return ShopError.invalid(f"{name}: {_describe(text)}", field=name)
    if message.startswith("Object contains unknown field `"):
        name = message.split("`")[1]
        hint = " (the subject carries it)" if name in codec.subject_ids else ""
        return ShopError.invalid(f"unknown field `{name}`{hint}", field=name)
    if message.startswith("Object missing required field `"):
        name = message.split("`")[1]
        return ShopError.invalid(f"{name}: required field is missing", field=name)
    if message.startswith("Expected `object`"):
        return ShopError.invalid("request body must be a JSON object")
    head, sep, _ = message.partition(": ")
    if sep and head in codec.fields:
        return ShopError.invalid(message, field=head)
    return ShopError.invalid(f"invalid request body: {_describe(message)}")


def decode_command(kind: CommandKind, payload: bytes) -> Command:
    """Decode the body of a ``kind`` command, raising ``ShopError(invalid_request)``."""
    codec = _CODECS[kind]
    if len(payload) > MAX_BODY_BYTES:
        raise ShopError.invalid(
            f"request body is {len(payload)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    try:
        try:
            result: Command = codec.decoder.decode(payload or b"{}")
            return result
        except msgspec.ValidationError as exc:
            if _GOT_NULL not in str(exc):
                raise
        return codec.decode_nullable(payload)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), codec) from exc
    except msgspec.DecodeError as exc:
        raise ShopError.invalid(f"malformed JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ShopError.invalid("request body is not valid UTF-8") from exc
    except ValueError as exc:  # __post_init__ when the null path builds the Struct
        raise _invalid(str(exc), codec) from exc


def decode_request(
    subject: str, payload: bytes, prefix: str = DEFAULT_PREFIX
) -> tuple[Route, Command]:
    """Route ``subject`` and decode ``payload``; subject errors win over body errors."""
    routed = parse_subject(subject, prefix)
    return routed, decode_command(routed.kind, payload)
