"""Local credentials (``provision``), the CLI's token, ``iceshop token``, and a node's
key directory at start and while it runs."""

from __future__ import annotations

import os
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors import RealClock, VirtualClock
from iceshop.auth import (
    KeyDirectory,
    KeyRing,
    Principal,
    TokenVerifier,
    generate_hs256,
    keys_dir_of,
    mint,
    provision,
    read_admin_token,
    write_key_file,
)
from iceshop.auth.service import NodeAuth
from iceshop.cli import main
from iceshop.cli.client import resolve_token
from iceshop.settings import Settings
from iceshop.wire import NO_HEADERS, ShopError


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_provision_makes_a_key_and_an_admin_token_once(tmp_path: Path) -> None:
    first = provision(tmp_path)
    assert first.created_key and first.minted_token
    keys = keys_dir_of(tmp_path)
    assert Path(first.keys_dir) == keys
    assert [p.name for p in keys.iterdir()] == [f"{first.kid}.key"]
    assert mode(keys / f"{first.kid}.key") == 0o600
    assert mode(keys) == mode(keys.parent) == 0o700
    assert mode(Path(first.admin_token_file)) == 0o600
    ring = KeyRing(KeyDirectory(keys).read())
    verifier = TokenVerifier(ring, RealClock())
    assert verifier.verify(first.admin_token) == Principal("admin", "admin")
    exp = jwt.decode(first.admin_token, options={"verify_signature": False})["exp"]
    assert exp - RealClock().time() > 80 * 86_400

    again = provision(tmp_path)
    assert not again.created_key and not again.minted_token
    assert (again.kid, again.admin_token) == (first.kid, first.admin_token)
    assert read_admin_token(tmp_path) == first.admin_token


def test_provision_mints_again_a_token_that_is_gone_or_stale(tmp_path: Path) -> None:
    first = provision(tmp_path)
    Path(first.admin_token_file).unlink()
    assert read_admin_token(tmp_path) is None
    second = provision(tmp_path)
    assert second.minted_token and not second.created_key and second.kid == first.kid
    ring = KeyRing(KeyDirectory(keys_dir_of(tmp_path)).read())
    key = ring.signing_key()
    assert key is not None
    stale = mint(key, sub="admin", role="admin", ttl_s=3600, now=RealClock().time())
    Path(first.admin_token_file).write_text(stale)
    third = provision(tmp_path)
    assert third.minted_token and third.admin_token != stale
    Path(first.admin_token_file).write_text("garbage")
    assert provision(tmp_path).minted_token


def test_the_client_finds_its_token(tmp_path: Path) -> None:
    assert resolve_token(None, {}, tmp_path) is None
    local = provision(tmp_path / "data")
    assert resolve_token(None, {}, tmp_path) == local.admin_token
    assert resolve_token(None, {"ICESHOP_TOKEN": " env "}, tmp_path) == "env"
    assert resolve_token("given", {"ICESHOP_TOKEN": "env"}, tmp_path) == "given"


def test_token_mint_and_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["token", "keygen", "--keys", str(keys), "--kid", "k2025"]) == 0
    assert "k2025.pub" in capsys.readouterr().out
    assert mode(keys / "k2025.key") == 0o600
    assert main(["token", "keygen", "--keys", str(keys), "--kid", "k2025"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["token", "keygen", "--keys", str(keys), "--alg", "HS256", "--kid", "h1"]) == 0
    capsys.readouterr()

    argv = ["token", "mint", "--keys", str(keys), "--role", "seller", "--sub", "S1"]
    assert main([*argv, "--kid", "h1", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    ring = KeyRing(KeyDirectory(keys).read())
    assert jwt.get_unverified_header(token)["kid"] == "h1"
    assert TokenVerifier(ring, RealClock()).verify(token) == Principal("S1", "seller")
    assert main([*argv, "--kid", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main([*argv, "--ttl", "0"]) == 2
    assert main(["token", "mint", "--keys", str(keys), "--role", "buyer", "--sub", "a b"]) == 2
    assert main(["token", "mint", "--keys", str(tmp_path / "none"), *argv[3:]]) == 2


# -- a node's key directory ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_node_with_auth_on_needs_a_usable_key(tmp_path: Path) -> None:
    clock = VirtualClock()
    settings = Settings(auth="on", data_dir=str(tmp_path))
    with pytest.raises(ShopError, match=r"^invalid_request: auth: on, but there are no token"):
        await NodeAuth.create(settings, tmp_path, clock)
    keys = keys_dir_of(tmp_path)
    keys.mkdir(parents=True)
    (keys / "bad.key").write_text("short")
    with pytest.raises(ShopError, match=r"auth_keys_dir: .*bad\.key"):
        await NodeAuth.create(settings, tmp_path, clock)
    os.unlink(keys / "bad.key")
    write_key_file(keys / "a.key", generate_hs256("a")[1])
    auth = await NodeAuth.create(settings, tmp_path, clock)
    assert auth.required and auth.ring.kids() == ["a"]
    off = await NodeAuth.create(Settings(auth="off"), tmp_path / "none", clock)
    assert not off.required and off.gate.authenticate(NO_HEADERS) is None


@pytest.mark.anyio
async def test_a_running_node_picks_up_added_and_removed_keys(tmp_path: Path) -> None:
    clock = VirtualClock()
    keys = tmp_path / "keys"
    a, a_file = generate_hs256("a")
    write_key_file(keys / "a.key", a_file)
    auth = await NodeAuth.create(Settings(auth_keys_dir=str(keys)), tmp_path, clock)
    assert await auth.reload_keys() is False  # nothing changed
    b, b_file = generate_hs256("b")
    by_b = mint(b, sub="g", role="gateway", ttl_s=60, now=clock.time())
    by_a = mint(a, sub="g", role="gateway", ttl_s=60, now=clock.time())
    with pytest.raises(ShopError, match="does not know"):
        auth.verifier.verify(by_b)
    assert auth.verifier.verify(by_a).sub == "g"
    write_key_file(keys / "b.key", b_file)
    assert await auth.reload_keys() is True
    assert auth.verifier.verify(by_b).sub == "g"
    # A key deleted (say, stolen) while another file is broken: the broken file is
    # skipped and the deletion still applies. (Keeping the whole ring while any file is
    # bad would keep a stolen key working for as long as the bad file stays there.)
    (keys / "a.key").unlink()
    (keys / "bad.key").write_text("short")
    assert await auth.reload_keys() is True
    assert auth.ring.kids() == ["b"]
    assert auth.keys is not None and [p for p in auth.keys.skipped if "bad.key" in p]
    with pytest.raises(ShopError, match="does not know"):
        auth.verifier.verify(by_a)  # removed: refused at once, though it was cached
    assert auth.verifier.verify(by_b).sub == "g"  # the good key still verifies
    # a key id in two files: neither is used (which one is meant is unknown)
    write_key_file(keys / "c.key", generate_hs256("c")[1])
    public = Ed25519PrivateKey.generate().public_key()
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    write_key_file(keys / "b.pub", pem)
    assert await auth.reload_keys() is True
    assert auth.ring.kids() == ["c"]
    (keys / "b.pub").unlink()
    (keys / "bad.key").unlink()
    assert await auth.reload_keys() is True
    assert auth.ring.kids() == ["b", "c"] and auth.keys.skipped == []
