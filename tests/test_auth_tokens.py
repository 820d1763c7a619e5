"""Bearer JWTs: what verifies, what does not, and the key ring behind them."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors import VirtualClock
from iceshop.auth import (
    KeyDirectory,
    KeyRing,
    KeyRingError,
    Principal,
    TokenKey,
    TokenVerifier,
    generate_ed25519,
    generate_hs256,
    load_key,
    mint,
    write_key_file,
)
from iceshop.wire import ErrorCode, ShopError

SECRET = b"s" * 32


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=0.0, epoch=1_800_000_000.0)


@pytest.fixture
def ed() -> TokenKey:
    return generate_ed25519("ed1")[0]


@pytest.fixture
def hs() -> TokenKey:
    return TokenKey.hs256("hs1", SECRET)


def refused(verifier: TokenVerifier, token: str) -> str:
    """The message of the ``unauthorized`` a token gets (and it never shows the token)."""
    with pytest.raises(ShopError) as info:
        verifier.verify(token)
    assert info.value.code is ErrorCode.UNAUTHORIZED
    assert not info.value.retryable
    assert token not in info.value.message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in info.value.message
    return info.value.message


def raw_token(key: TokenKey, claims: dict[str, object], **headers: object) -> str:
    assert key.sign_key is not None
    return jwt.encode(claims, key.sign_key, algorithm=key.alg, headers={"kid": key.kid, **headers})  # type: ignore[arg-type]


def claims(clock: VirtualClock, **over: object) -> dict[str, object]:
    now = clock.time()
    base: dict[str, object] = {"sub": "B1", "role": "buyer", "aud": "iceshop", "exp": now + 60}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


# -- what verifies ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ed", "hs"])
def test_minted_tokens_verify_for_both_algorithms(
    which: str, clock: VirtualClock, request: pytest.FixtureRequest
) -> None:
    key: TokenKey = request.getfixturevalue(which)
    verifier = TokenVerifier(KeyRing([key]), clock)
    token = mint(key, sub="S-7", role="seller", ttl_s=300, now=clock.time())
    assert verifier.verify(token) == Principal("S-7", "seller")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": key.alg, "kid": key.kid, "typ": "JWT"}


def test_audience_may_be_a_list_that_holds_iceshop(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    token = raw_token(hs, claims(clock, aud=["other", "iceshop"], role="gateway", sub="gw1"))
    assert verifier.verify(token) == Principal("gw1", "gateway")


def test_rotated_keys_are_both_valid(clock: VirtualClock) -> None:
    old, new = generate_ed25519("2024a")[0], generate_hs256("2025b")[0]
    verifier = TokenVerifier(KeyRing([old, new]), clock)
    by_old = mint(old, sub="A1", role="admin", ttl_s=60, now=clock.time())
    by_new = mint(new, sub="A2", role="admin", ttl_s=60, now=clock.time())
    assert verifier.verify(by_old).sub == "A1"
    assert verifier.verify(by_new).sub == "A2"
    # the old key leaves the ring: its tokens stop at once, cached or not
    verifier.ring.replace([new])
    assert "does not know" in refused(verifier, by_old)
    assert verifier.verify(by_new).sub == "A2"


# -- what does not ------------------------------------------------------------------------


def test_forged_signature_is_unauthorized(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    forged = jwt.encode(
        claims(clock, role="admin"), b"f" * 32, algorithm="HS256", headers={"kid": "hs1"}
    )
    assert "signature" in refused(verifier, forged)
    # a good token with its payload swapped for an admin's keeps a signature that fails
    good = mint(hs, sub="B1", role="buyer", ttl_s=60, now=clock.time())
    head, _, sig = good.split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims(clock, role="admin")).encode()).rstrip(b"=")
    assert "signature" in refused(verifier, f"{head}.{body.decode()}.{sig}")


def test_forged_eddsa_signature_is_unauthorized(ed: TokenKey, clock: VirtualClock) -> None:
    impostor = generate_ed25519("ed1")[0]  # same kid, other key
    verifier = TokenVerifier(KeyRing([ed]), clock)
    assert "signature" in refused(
        verifier, mint(impostor, sub="X", role="admin", ttl_s=60, now=clock.time())
    )


def test_expiry_has_thirty_seconds_of_leeway(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    token = raw_token(hs, claims(clock, exp=clock.time() - 29))
    assert verifier.verify(token).sub == "B1"  # within the leeway
    expired = raw_token(hs, claims(clock, exp=clock.time() - 31))
    assert refused(verifier, expired) == "the token has expired"


def test_a_cached_token_still_expires_on_the_clock(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    token = mint(hs, sub="B1", role="buyer", ttl_s=60, now=clock.time())
    assert verifier.verify(token).sub == "B1"
    assert verifier.cached() == 1
    clock.set(60 + 29)
    assert verifier.verify(token).sub == "B1"
    clock.set(60 + 31)
    assert refused(verifier, token) == "the token has expired"


def test_not_before_is_honoured_with_leeway(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    assert "not valid yet" in refused(verifier, raw_token(hs, claims(clock, nbf=clock.time() + 31)))
    assert verifier.verify(raw_token(hs, claims(clock, nbf=clock.time() + 29))).sub == "B1"


@pytest.mark.parametrize(
    ("over", "phrase"),
    [
        ({"aud": "other"}, "not meant for iceshop"),
        ({"aud": None}, "no aud claim"),
        ({"exp": None}, "no exp claim"),
        ({"sub": None}, "no sub claim"),
        ({"exp": "tomorrow"}, "not a time"),
        ({"exp": True}, "not a time"),
        ({"role": None}, "role"),
        ({"role": "root"}, "role"),
        ({"sub": "a.b"}, "sub"),
        ({"sub": "x" * 65}, "sub"),
        ({"sub": "B*"}, "sub"),
    ],
)
def test_bad_claims_are_unauthorized(
    over: dict[str, object], phrase: str, hs: TokenKey, clock: VirtualClock
) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    assert phrase in refused(verifier, raw_token(hs, claims(clock, **over)))


def test_unknown_kid_missing_kid_and_wrong_algorithm(
    hs: TokenKey, ed: TokenKey, clock: VirtualClock
) -> None:
    verifier = TokenVerifier(KeyRing([hs, ed]), clock)
    other = TokenKey.hs256("nope", b"n" * 32)
    assert "does not know" in refused(
        verifier, mint(other, sub="B1", role="buyer", ttl_s=60, now=clock.time())
    )
    no_kid = jwt.encode(claims(clock), SECRET, algorithm="HS256")
    assert "kid" in refused(verifier, no_kid)
    # an HS256 token naming the EdDSA key: never checked with the public key as a secret
    confused = jwt.encode(claims(clock), SECRET, algorithm="HS256", headers={"kid": "ed1"})
    assert "algorithm" in refused(verifier, confused)
    unsigned = jwt.encode(claims(clock), None, algorithm="none", headers={"kid": "hs1"})  # type: ignore[arg-type]
    assert "algorithm" in refused(verifier, unsigned)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "e30.e30.", "x" * 9000, "ü.ö.ä"])
def test_garbage_is_unauthorized(garbage: str, hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock)
    with pytest.raises(ShopError) as info:
        verifier.verify(garbage)
    assert info.value.code is ErrorCode.UNAUTHORIZED


def test_the_cache_is_bounded(hs: TokenKey, clock: VirtualClock) -> None:
    verifier = TokenVerifier(KeyRing([hs]), clock, cache_size=3)
    tokens = [mint(hs, sub=f"B{i}", role="buyer", ttl_s=60, now=clock.time()) for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert verifier.cached() == 3
    assert [verifier.verify(t).sub for t in tokens] == [f"B{i}" for i in range(5)]


def test_mint_refuses_what_would_not_verify(ed: TokenKey, clock: VirtualClock) -> None:
    public_only = TokenKey.ed25519("pub", ed.verify_key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only verify"):
        mint(public_only, sub="B1", role="buyer", ttl_s=60, now=clock.time())
    with pytest.raises(ValueError, match="principal"):
        mint(ed, sub="B 1", role="buyer", ttl_s=60, now=clock.time())
    with pytest.raises(ValueError, match="principal"):
        mint(ed, sub="B1", role="superuser", ttl_s=60, now=clock.time())
    with pytest.raises(ValueError, match="ttl"):
        mint(ed, sub="B1", role="buyer", ttl_s=0, now=clock.time())


# -- key files -------------------------------------------------------------------------------


def test_key_directory_reads_every_kind_of_key(tmp_path: Path, clock: VirtualClock) -> None:
    ed_key, pem = generate_ed25519("ed-1")
    write_key_file(tmp_path / "ed-1.key", pem)
    _, secret = generate_hs256("hs-1")
    write_key_file(tmp_path / "hs-1.key", secret)
    assert isinstance(ed_key.verify_key, Ed25519PublicKey)
    public = ed_key.verify_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ed-pub.pub").write_bytes(public)
    (tmp_path / "README").write_text("ignored")
    (tmp_path / ".hidden.key").write_text("ignored too")
    assert (tmp_path / "ed-1.key").stat().st_mode & 0o777 == 0o600

    ring = KeyRing(KeyDirectory(tmp_path).read())
    assert ring.kids() == ["ed-1", "ed-pub", "hs-1"]
    verify_only = ring.get("ed-pub")
    assert verify_only is not None and not verify_only.can_sign
    assert ring.signing_key("ed-pub") is None
    first = ring.signing_key()
    assert first is not None and first.kid == "ed-1"
    # the private key's holder signs as "ed-pub"; a node holding only the .pub verifies
    signer = TokenKey("ed-pub", "EdDSA", ed_key.verify_key, ed_key.sign_key)
    verifier = TokenVerifier(ring, clock)
    token = mint(signer, sub="S1", role="seller", ttl_s=60, now=clock.time())
    assert verifier.verify(token) == Principal("S1", "seller")
    hs_token = mint(ring.get("hs-1"), sub="g", role="gateway", ttl_s=60, now=clock.time())  # type: ignore[arg-type]
    assert verifier.verify(hs_token).role == "gateway"


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("short.key", b"too short", "32 bytes"),
        ("bad id.key", b"x" * 40, "key id"),
        (
            "pem.key",
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "Ed25519",
        ),
        (
            "broken.key",
            b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
            "usable",
        ),
        ("secret.pub", b"x" * 40, "public key"),
    ],
)
def test_bad_key_files_are_refused_naming_the_file(
    tmp_path: Path, name: str, content: bytes, phrase: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(KeyRingError) as info:
        load_key(tmp_path / name)
    assert name in str(info.value) and phrase in str(info.value)
    assert content.decode(errors="replace") not in str(info.value)


def test_directory_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    assert directory.read() == []  # missing: no keys
    write_key_file(tmp_path / "keys" / "a.key", generate_hs256("a")[1])
    found = directory.read_if_changed()
    assert found is not None and [k.kid for k in found] == ["a"]
    assert directory.read_if_changed() is None
    write_key_file(tmp_path / "keys" / "b.key", generate_hs256("b")[1])
    assert sorted(k.kid for k in directory.read_if_changed() or []) == ["a", "b"]
    os.unlink(tmp_path / "keys" / "a.key")
    assert [k.kid for k in directory.read_if_changed() or []] == ["b"]


def test_ring_version_moves_only_when_keys_change() -> None:
    a = TokenKey.hs256("a", SECRET)
    ring = KeyRing([a])
    version = ring.version
    ring.replace([TokenKey.hs256("a", SECRET)])  # the same key read again
    assert ring.version == version
    ring.replace([TokenKey.hs256("a", b"t" * 32)])  # same id, other secret
    assert ring.version == version + 1
    assert "s" * 32 not in repr(ring) and "s" * 32 not in repr(a)
