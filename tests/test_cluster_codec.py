"""The codec of messages between nodes: tags, plain values, runtime errors by name,
application errors and custom encodings, and its refusals."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.cluster.codec import ERROR_TAG, PLAIN_TAG, MessageCodec
from actors.errors import (
    ActorFailed,
    ActorsError,
    AskTimeout,
    CodecError,
    NotLocal,
    Overloaded,
    SequenceConflict,
)


class Add(msgspec.Struct, frozen=True):
    amount: int
    note: str | None = None


class Total(msgspec.Struct, frozen=True):
    value: int
    items: tuple[str, ...] = ()


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Tagged(ActorsError):
    """An ActorsError subclass that is not in actors.errors."""

    retryable = True


def make_codec() -> MessageCodec:
    codec = MessageCodec()
    codec.register(Add, Total)
    codec.register_error(Refused, lambda e: e.reason.encode(), lambda b: Refused(b.decode()))
    return codec


def roundtrip(codec: MessageCodec, value: Any) -> Any:
    tag, data = codec.encode(value)
    assert isinstance(data, bytes)
    return codec.decode(tag, data)


def test_structs_travel_under_their_qualname() -> None:
    codec = make_codec()
    tag, data = codec.encode(Add(3, "x"))
    assert tag == "Add"
    assert data == msgspec.msgpack.encode(Add(3, "x"))
    assert codec.decode(tag, data) == Add(3, "x")
    assert roundtrip(codec, Total(5, ("a", "b"))) == Total(5, ("a", "b"))


def test_an_explicit_tag() -> None:
    codec = MessageCodec()
    codec.register(Add, tag="counter.Add")
    assert codec.encode(Add(1))[0] == "counter.Add"
    assert codec.is_registered("counter.Add")
    assert not codec.is_registered("Add")


@pytest.mark.parametrize("value", [None, "s", 7, 2.5, True, [1, "a"], {"k": [1, 2]}])
def test_plain_values(value: Any) -> None:
    codec = MessageCodec()
    tag, data = codec.encode(value)
    assert tag == PLAIN_TAG
    assert codec.decode(tag, data) == value


@pytest.mark.parametrize("cls", [Overloaded, ActorFailed, AskTimeout, NotLocal, ActorsError])
def test_runtime_errors_cross_by_class_name(cls: type[ActorsError]) -> None:
    codec = MessageCodec()
    tag, data = codec.encode(cls("what happened"))
    assert tag == ERROR_TAG
    error = codec.decode(tag, data)
    assert type(error) is cls
    assert str(error) == "what happened"
    assert error.retryable is cls.retryable


def test_an_error_with_its_own_constructor_keeps_class_and_message() -> None:
    codec = MessageCodec()
    error = roundtrip(codec, SequenceConflict("k", "1", 2, 3))
    assert type(error) is SequenceConflict
    assert str(error) == "k/1: expected sequence 2, found 3"


def test_an_unknown_actors_error_arrives_as_actors_error() -> None:
    codec = MessageCodec()
    error = roundtrip(codec, Tagged("odd"))
    assert type(error) is ActorsError
    assert str(error) == "Tagged: odd"
    assert error.retryable is True


def test_application_errors_use_their_own_functions() -> None:
    codec = make_codec()
    tag, data = codec.encode(Refused("sold out"))
    assert (tag, data) == ("Refused", b"sold out")
    error = codec.decode(tag, data)
    assert isinstance(error, Refused)
    assert error.reason == "sold out"


def test_a_registered_actors_error_uses_its_registration() -> None:
    codec = MessageCodec()
    codec.register_error(Tagged, lambda e: str(e).encode(), lambda b: Tagged(b.decode()))
    tag, data = codec.encode(Tagged("mine"))
    assert tag == "Tagged"
    assert type(codec.decode(tag, data)) is Tagged


def test_register_custom_for_any_type() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    codec = MessageCodec()
    codec.register_custom(
        Point, lambda p: f"{p.x},{p.y}".encode(), lambda b: Point(*map(int, b.split(b",")))
    )
    point = roundtrip(codec, Point(2, 3))
    assert (point.x, point.y) == (2, 3)


def test_an_unregistered_type_is_refused_when_encoding() -> None:
    class Secret(msgspec.Struct, frozen=True):
        value: int

    codec = make_codec()
    with pytest.raises(CodecError, match=r"Secret.*not registered"):
        codec.encode(Secret(1))
    with pytest.raises(CodecError):
        codec.encode((1, 2))  # a tuple is not one of the plain types
    with pytest.raises(CodecError):
        codec.encode(RuntimeError("not an ActorsError"))


def test_duplicate_and_reserved_tags_are_refused() -> None:
    codec = make_codec()

    class Add2(msgspec.Struct, frozen=True):
        amount: int

    with pytest.raises(ValueError, match="already registered"):
        codec.register(Add2, tag="Add")
    with pytest.raises(ValueError, match="already registered"):
        codec.register(Add, tag="Other")
    with pytest.raises(ValueError, match=r"\$"):
        codec.register(Add2, tag="$plain")
    with pytest.raises(ValueError, match="one type"):
        codec.register(Add2, Total, tag="both")
    with pytest.raises(TypeError):
        codec.register(int)  # type: ignore[arg-type]
    codec.register(Add2)  # under its own name it is fine
    assert codec.decode(*codec.encode(Add2(1))) == Add2(1)


def test_decoding_refuses_unknown_tags_and_wrong_bytes() -> None:
    codec = make_codec()
    with pytest.raises(CodecError, match="unknown message tag"):
        codec.decode("Nope", b"\x90")
    with pytest.raises(CodecError, match="Add"):
        codec.decode("Add", msgspec.msgpack.encode({"amount": "three"}))
    with pytest.raises(CodecError):
        codec.decode(PLAIN_TAG, b"\xc1")  # never valid msgpack
    with pytest.raises(CodecError, match="Refused"):
        codec.decode("Refused", b"\xff\xfe")  # the registered decode function fails
