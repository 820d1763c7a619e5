"""The ``iceshop`` command line: what each verb sends, how replies print, exit statuses,
and ``iceshop up`` / ``iceshop node`` as real processes.

The first half needs no NATS: a parsed command line becomes a subject and a body, and
those are checked against the wire layer (the node's own decoder accepts every body).
The second half runs the real thing: client verbs against a real nats-server (with and
without a node behind it), ``iceshop node`` and ``iceshop up`` as child processes that
are stopped with a signal and must leave nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

import iceshop
from actors.nats import NatsServer, NatsServerNotFound, free_port
from iceshop.auth import provision
from iceshop.cli import build_parser, main
from iceshop.cli.client import (
    DEFAULT_NATS_URL,
    UNAVAILABLE,
    exit_status,
    request_for,
    resolve_nats_url,
    resolve_prefix,
)
from iceshop.cli.errors import CliError
from iceshop.cli.output import format_error, render, render_json, spans
from iceshop.cli.up import find_nats_conf
from iceshop.cli.verbs import VERBS, Request
from iceshop.wire import (
    COMMAND_TYPES,
    ID_PATTERN,
    SUBJECT_IDS,
    CommandKind,
    decode_command,
    parse_subject,
)
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """``main`` configures logging for its process; give the next test the defaults back."""
    yield
    structlog.reset_defaults()


def words(line: str) -> list[str]:
    return shlex.split(line)


def parse(argv: list[str], prefix: str = "iceshop") -> Request:
    args = build_parser().parse_args(argv)
    return request_for(args.verb, args, prefix)


# -- the verb table against the contract ------------------------------------------------


def test_every_command_has_exactly_one_verb() -> None:
    kinds = [verb.kind for verb in VERBS]
    assert sorted(kinds) == sorted(CommandKind)
    assert len({verb.words for verb in VERBS}) == len(VERBS)


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v.words))
def test_verb_arguments_are_the_contracts_fields(verb: Any) -> None:
    subject_ids = set(SUBJECT_IDS[verb.kind])
    fields = msgspec.structs.fields(COMMAND_TYPES[verb.kind])
    body_fields = {f.name for f in fields}
    names = [arg.name for arg in verb.args]
    assert len(names) == len(set(names))
    assert set(names) <= subject_ids | body_fields
    # every id of the subject is asked for, as a positional argument
    assert subject_ids <= {a.name for a in verb.args if a.flag is None}
    # every required body field is required on the command line, or generated
    required = {f.name for f in fields if f.required}
    assert required <= {a.name for a in verb.args if a.required or a.fresh or a.flag is None}


CASES: list[tuple[list[str], str, dict[str, Any]]] = [
    (
        words("buyer register B1 --name Ali --phone +905551234567 --locale en --whatsapp-opt-in"),
        "iceshop.buyers.B1.register",
        {"name": "Ali", "phone": "+905551234567", "locale": "en", "whatsapp_opt_in": True},
    ),
    (
        words("seller register S1 --name Ayşe --max-active-windows 2 --no-auto-approve"),
        "iceshop.sellers.S1.register",
        {"name": "Ayşe", "max_active_windows": 2, "auto_approve": False},
    ),
    (
        words(
            "listing upsert S1 P1 --title 'Kettle 2L' --list-price 100000 --floor-price 80000"
            " --stock 50 --currency EUR"
        ),
        "iceshop.sellers.S1.listings.upsert",
        {
            "product_id": "P1",
            "title": "Kettle 2L",
            "list_price_minor": 100000,
            "floor_price_minor": 80000,
            "stock": 50,
            "currency": "EUR",
        },
    ),
    (
        words("intent submit B1 I1 --product P1 --max-price 900 --quantity 2 --ttl 3600"),
        "iceshop.buyers.B1.intents.submit",
        {"intent_id": "I1", "product_id": "P1", "max_price_minor": 900, "quantity": 2}
        | {"ttl_s": 3600.0},
    ),
    (["intent", "cancel", "B1", "I1"], "iceshop.buyers.B1.intents.I1.cancel", {}),
    (
        ["window", "join", "W1", "--buyer", "B1", "--join", "J1", "--quantity", "2"],
        "iceshop.windows.W1.join",
        {"buyer_id": "B1", "join_id": "J1", "quantity": 2},
    ),
    (
        ["window", "leave", "W1", "--buyer", "B1", "--join", "J1"],
        "iceshop.windows.W1.leave",
        {"buyer_id": "B1", "join_id": "J1"},
    ),
    (["window", "get", "W1"], "iceshop.windows.W1.get", {}),
    (
        ["window", "reservations", "W1", "--limit", "10", "--cursor", "c1"],
        "iceshop.windows.W1.reservations",
        {"limit": 10, "cursor": "c1"},
    ),
    (
        words("windows list --state active --product P1 --seller S1 --limit 5"),
        "iceshop.windows.list",
        {"state": "active", "product_id": "P1", "seller_id": "S1", "limit": 5},
    ),
    (["decision", "get", "D1"], "iceshop.decisions.D1.get", {}),
    (["offer", "approve", "S1", "O1"], "iceshop.sellers.S1.offers.O1.approve", {}),
    (["offer", "reject", "S1", "O1"], "iceshop.sellers.S1.offers.O1.reject", {}),
    (
        ["admin", "window", "cancel", "W1", "--reason", "duplicate listing"],
        "iceshop.admin.windows.W1.cancel",
        {"reason": "duplicate listing"},
    ),
    (["cluster", "status"], "iceshop.cluster.status", {}),
    (
        words("admin apikey create K1 --role seller --principal S1 --note 'ERP sync'"),
        "iceshop.admin.apikeys.K1.create",
        {"role": "seller", "principal": "S1", "note": "ERP sync"},
    ),
    (["admin", "apikey", "revoke", "K1"], "iceshop.admin.apikeys.K1.revoke", {}),
]


def test_the_cases_cover_every_command() -> None:
    assert {parse_subject(subject).kind for _, subject, _ in CASES} == set(CommandKind)


@pytest.mark.parametrize(("argv", "subject", "body"), CASES, ids=lambda c: str(c)[:40])
def test_verb_sends_the_contracts_subject_and_body(
    argv: list[str], subject: str, body: dict[str, Any]
) -> None:
    request = parse(argv)
    assert request.subject == subject
    assert request.body == body
    assert request.generated == {}
    # the node's own router and decoder accept exactly this
    assert parse_subject(subject).kind == request.kind
    decode_command(request.kind, msgspec.json.encode(request.body))


def test_optional_fields_are_left_out_so_the_node_applies_defaults() -> None:
    request = parse(["buyer", "register", "B1", "--name", "Ali", "--phone", "+905551234567"])
    assert request.body == {"name": "Ali", "phone": "+905551234567"}
    listing = parse(
        words("listing upsert S1 P1 --title T --list-price 5 --floor-price 5 --stock 0")
    )
    assert "currency" not in listing.body
    assert parse(["windows", "list"]).body == {}


def test_join_and_intent_ids_are_generated_when_omitted() -> None:
    join = parse(["window", "join", "W1", "--buyer", "B1"])
    join_id = join.body["join_id"]
    assert re.fullmatch(ID_PATTERN, join_id) and join_id.startswith("J")
    assert join.generated == {"join_id": join_id}
    assert parse(["window", "join", "W1", "--buyer", "B1"]).body["join_id"] != join_id
    intent = parse(["intent", "submit", "B1", "--product", "P1", "--max-price", "9"])
    assert intent.generated == {"intent_id": intent.body["intent_id"]}
    assert intent.subject == "iceshop.buyers.B1.intents.submit"


def test_prefix_and_client_options_before_or_after_the_verb() -> None:
    assert parse(["window", "get", "W1"], prefix="shop.eu").subject == "shop.eu.windows.W1.get"
    before = build_parser().parse_args(["--json", "--nats", "nats://a:1", "window", "get", "W1"])
    after = build_parser().parse_args(["window", "get", "W1", "--json", "--timeout", "2.5"])
    neither = build_parser().parse_args(["window", "get", "W1"])
    assert (before.json, before.nats, before.timeout) == (True, "nats://a:1", None)
    assert (after.json, after.nats, after.timeout) == (True, None, 2.5)
    assert (neither.json, neither.nats) == (False, None)


def test_a_bad_id_is_a_usage_error_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CliError) as caught:
        parse(["window", "get", "no.dots"])
    assert caught.value.status == 2
    assert main(["window", "join", "W1", "--buyer", "B 1", "--join", "J1"]) == 2
    assert main(["window", "get", "W*"]) == 2
    err = capsys.readouterr().err
    assert "iceshop window get: invalid_request: window_id: must be" in err


def test_a_missing_required_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["window", "join", "W1"]) == 2
    assert "--buyer" in capsys.readouterr().err
    assert main(["--prefix", "a.*", "cluster", "status"]) == 2
    assert "--prefix" in capsys.readouterr().err


def test_nats_url_and_prefix_resolution(tmp_path: Path) -> None:
    assert resolve_nats_url(None, {}, tmp_path) == DEFAULT_NATS_URL
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nats.url").write_text("nats://127.0.0.1:4999\n")
    assert resolve_nats_url(None, {}, tmp_path) == "nats://127.0.0.1:4999"
    env = {"ICESHOP_NATS_URL": "nats://env:1"}
    assert resolve_nats_url(None, env, tmp_path) == "nats://env:1"
    assert resolve_nats_url("nats://flag:1", env, tmp_path) == "nats://flag:1"
    assert resolve_prefix(None, {}) == "iceshop"
    assert resolve_prefix(None, {"ICESHOP_PREFIX": "eu.shop"}) == "eu.shop"
    assert resolve_prefix("x", {"ICESHOP_PREFIX": "eu.shop"}) == "x"


def test_nats_conf_search_order(tmp_path: Path) -> None:
    given = tmp_path / "given.conf"
    given.write_text("")
    assert find_nats_conf(str(given), tmp_path) == given.resolve()
    with pytest.raises(CliError):
        find_nats_conf(str(tmp_path / "missing.conf"), tmp_path)
    repo_conf = Path(iceshop.__file__).resolve().parent.parent / "nats.conf"
    assert find_nats_conf(None, tmp_path) == (repo_conf if repo_conf.is_file() else None)
    (tmp_path / "nats.conf").write_text("")
    assert find_nats_conf(None, tmp_path) == (tmp_path / "nats.conf").resolve()


# -- output ----------------------------------------------------------------------------

WINDOW = {
    "window_id": "W1",
    "product_id": "P1",
    "seller_id": "S1",
    "state": "active",
    "outcome": None,
    "close_reason": None,
    "unit_price_minor": 95000,
    "currency": "TRY",
    "quantity_total": 10,
    "quantity_reserved": 3,
    "participants": 2,
    "min_participants": 4,
    "max_per_buyer": 2,
    "activates_at": "2026-01-01T10:00:00.000Z",
    "expires_at": "2026-01-01T10:15:00.000Z",
    "decision_id": "D1",
}


def test_render_key_values() -> None:
    text = render({"buyer_id": "B1", "created": True, "note": None})
    assert text.splitlines() == ["buyer_id  B1", "created   yes", "note      -"]
    lines = render(WINDOW).splitlines()
    assert len(lines) == len(WINDOW)
    assert "state              active" in lines
    assert "outcome            -" in lines


def test_render_window_table() -> None:
    text = render({"windows": [WINDOW, WINDOW | {"window_id": "W2"}], "next_cursor": "c9"})
    lines = text.splitlines()
    assert lines[0] == "next_cursor  c9"
    assert lines[1] == "windows:"
    assert lines[2].split() == [
        "window_id",
        "product_id",
        "seller_id",
        "state",
        "outcome",
        "price_minor",
        "reserved",
        "buyers",
        "activates_at",
        "expires_at",
    ]
    assert lines[3].split()[:9] == ["W1", "P1", "S1", "active", "-", "95000", "TRY", "3/10", "2/4"]
    assert lines[4].split()[0] == "W2"


def test_render_cluster_status_summarises_shards() -> None:
    data = {
        "nodes": [{"node_id": "n1", "started_at": "2026-01-01T10:00:00.000Z", "shards": [0, 1]}],
        "shards": [{"shard": i, "owner": "n1", "lease_age_s": 1.5} for i in range(64)]
        + [{"shard": 64, "owner": None, "lease_age_s": None}],
    }
    lines = render(data).splitlines()
    assert lines[1].split() == ["node_id", "started_at", "shards"]
    assert lines[2].split() == ["n1", "2026-01-01T10:00:00.000Z", "0-1"]
    assert lines[3] == "shards:"
    assert lines[4].split() == ["n1", "0-63", "(64", "shards,", "lease", "age", "1.5", "s)"]
    assert lines[5].split() == ["-", "64", "(1", "shard)"]
    assert spans([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


def test_render_wide_rows_as_blocks() -> None:
    reasons = [
        {"code": "demand_sufficient", "text": "x" * 150, "value": 2, "threshold": 2},
        {"code": "window_sized", "text": "short", "value": 2.5, "threshold": None},
    ]
    lines = render({"decision_id": "D1", "reasons": reasons}).splitlines()
    assert lines[:2] == ["decision_id  D1", "reasons:"]
    assert "  code       demand_sufficient" in lines
    assert "  threshold  -" in lines
    assert "" in lines  # blocks are separated
    narrow = render({"reservations": [{"join_id": "J1", "quantity": 1}]}).splitlines()
    assert narrow == ["reservations:", "  join_id  quantity", "  J1       1"]


def test_json_and_error_formats() -> None:
    assert json.loads(render_json(WINDOW)) == WINDOW
    assert "Ayşe" in render_json({"name": "Ayşe"})
    error = {"code": "insufficient_stock", "message": "only 2 left", "details": {"available": 2}}
    assert format_error(error) == 'insufficient_stock: only 2 left {"available":2}'
    assert format_error({"code": "unknown_window", "message": "no W9"}) == "unknown_window: no W9"
    assert exit_status({"ok": True, "data": {}}) == 0
    assert exit_status({"ok": False, "error": {}}) == 1
    assert exit_status(None) == 1


# -- the demo sub-command --------------------------------------------------------------


def test_demo_is_handed_the_rest_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def demo_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    monkeypatch.setitem(sys.modules, "iceshop.demo", types.SimpleNamespace(main=demo_main))
    assert main(["demo", "--fast", "--json"]) == 7
    assert main(["--json", "demo", "--fast"]) == 7  # through the parser as well
    assert seen == [["--fast", "--json"], ["--fast"]]


def test_demo_missing_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "iceshop.demo", None)  # makes the import fail
    assert main(["demo"]) == 1
    assert "iceshop demo: not available" in capsys.readouterr().err


# -- exit statuses against a real NATS server ------------------------------------------


@pytest.mark.integration
def test_no_node_answering_exits_3(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nats", nats_url, "cluster", "status"]) == 3
    assert f"iceshop cluster status: {UNAVAILABLE}" in capsys.readouterr().err


@pytest.mark.integration
def test_unreachable_nats_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    assert main(["--nats", url, "--timeout", "2", "window", "get", "W1"]) == 3
    assert f"unavailable: cannot reach NATS at {url}" in capsys.readouterr().err


@pytest.mark.integration
def test_up_without_nats_server_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> str:
        raise NatsServerNotFound("no 'nats-server' executable next to python or on PATH")

    monkeypatch.setattr("iceshop.cli.up.find_nats_server", missing)
    assert main(["up", "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iceshop up: no 'nats-server' executable")
    assert err.count("\n") == 1


# -- long-lived commands as real processes ---------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICESHOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iceshop.cli", *argv],
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def read_until(proc: subprocess.Popen[bytes], marker: str, within: float = 30.0) -> list[str]:
    """Lines of ``proc``'s stdout up to the first that starts with ``marker`` (read from the
    pipe directly: a buffered reader would hold lines that ``select`` cannot see)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    lines: list[str] = []
    deadline = time.monotonic() + within
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode())
            if lines[-1].startswith(marker):
                return lines
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} line within {within:g}s: {lines}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited ({proc.wait()}) before {marker!r}: {lines}")
            buffer += chunk


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> tuple[int, str]:
    """Signal ``proc``; its exit status and the rest of its stdout."""
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out.decode()


def reap(proc: subprocess.Popen[bytes]) -> None:
    """After a failed test: stop ``proc`` the way a user would (so ``iceshop up`` stops its
    nats-server too), and kill it only if that does not work."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.integration
def test_up_serves_client_verbs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = child_env(ICESHOP_CAMPAIGN_INTERVAL_S="0.5", ICESHOP_WINDOW_LEAD_S="1")
    errors = (tmp_path / "up.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iceshop.cli", "up", "--node-id", "n1", "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    try:
        head = read_until(proc, "ready")
        pid = int(re.search(r"nats-server pid (\d+)", "\n".join(head)).group(1))  # type: ignore[union-attr]
        url = (tmp_path / "data" / "nats.url").read_text().strip()
        assert any(url in line for line in head)
        assert any(line.split()[:2] == ["auth", "on:"] for line in head)
        repo_conf = REPO / "nats.conf"
        if repo_conf.is_file():
            assert any(str(repo_conf) in line for line in head)

        # client verbs run from the same directory find the server through data/nats.url
        seller = cli("seller", "register", "S1", "--name", "Ayşe Tekstil", cwd=tmp_path)
        assert seller.returncode == 0, seller.stderr
        assert seller.stdout.splitlines() == ["seller_id  S1", "created    yes"]

        listing = cli(
            "listing", "upsert", "S1", "P1", "--title", "Kettle", "--list-price", "100000",
            "--floor-price", "80000", "--stock", "50", "--json", cwd=tmp_path,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        assert json.loads(listing.stdout) == {"seller_id": "S1", "product_id": "P1", "stock": 50}

        buyer = cli("buyer", "register", "B1", "--name", "Ali", "--phone", "+905551234567",
                    "--whatsapp-opt-in", cwd=tmp_path)  # fmt: skip
        assert buyer.returncode == 0, buyer.stderr
        intent = cli("--json", "intent", "submit", "B1", "I1", "--product", "P1",
                     "--max-price", "95000", cwd=tmp_path)  # fmt: skip
        assert intent.returncode == 0, intent.stderr
        assert json.loads(intent.stdout)["status"] == "open"

        missing = cli("window", "join", "W404", "--buyer", "B1", "--json", cwd=tmp_path)
        assert missing.returncode == 1
        assert json.loads(missing.stdout)["code"] == "unknown_window"
        assert "iceshop window join" not in missing.stderr  # a refusal, not a CLI failure
        assert "unknown_window: " in missing.stderr
        assert re.search(r"join_id J[0-9a-f]{16} \(generated", missing.stderr)

        status = cli("cluster", "status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert [n["node_id"] for n in json.loads(status.stdout)["nodes"]] == ["n1"]

        code, out = stop(proc, signal.SIGINT)
    finally:
        reap(proc)
        errors.close()
    log = (tmp_path / "up.err").read_text()
    assert code == 0, log
    assert "stopping: the node first, then NATS" in out
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in log
    assert gone(pid)
    assert not (tmp_path / "data" / "nats.url").exists()
    assert (tmp_path / "data" / "node" / "journal.db").is_file()


@pytest.mark.integration
def test_up_on_a_taken_port_fails_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("up", "--port", str(port), "--data", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("iceshop up:")]
    assert lines == [
        f"iceshop up: port {port} on 127.0.0.1 is already in use; choose another with "
        "--port, or leave it out to use a free one"
    ], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_node_refuses_a_bad_setting_naming_its_key(tmp_path: Path) -> None:
    # python -m iceshop.node is the same command as `iceshop node`
    data = tmp_path / "n"
    result = subprocess.run(
        [sys.executable, "-m", "iceshop.node", "--nats", "nats://127.0.0.1:1", "--data", str(data)],
        env=child_env(ICESHOP_SHARDS="0"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("iceshop node: shards: ")
    assert result.stderr.count("\n") == 1
    unknown = cli("node", "--data", str(tmp_path / "n"), cwd=tmp_path,
                  env=child_env(ICESHOP_SHARD="3"))  # fmt: skip
    assert unknown.returncode == 2
    assert "ICESHOP_SHARD" in unknown.stderr


@pytest.mark.integration
def test_node_serves_until_sigterm_and_locks_its_data_dir(
    nats_server: NatsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data/auth/admin.token to find by itself
    monkeypatch.delenv("ICESHOP_TOKEN", raising=False)
    data = tmp_path / "node"
    # Authentication on (the default): keys in <data>/auth/keys, where the node looks.
    admin = ["--token", provision(data).admin_token]
    argv = ["node", "--nats", nats_server.url, "--data", str(data), "--node-id", "solo"]
    errors = (tmp_path / "node.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iceshop.cli", *argv],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=errors,
    )
    try:
        head = read_until(proc, "node solo ready")
        assert head[-1] == "node solo ready"
        assert any(line.split()[:2] == ["auth", "on:"] for line in head), head
        assert main(["--nats", nats_server.url, "cluster", "status"]) == 1  # no token
        assert "unauthorized" in capsys.readouterr().err
        assert main(["--nats", nats_server.url, *admin, "--json", "cluster", "status"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["nodes"][0]["node_id"] == "solo"

        second = cli(*argv, cwd=tmp_path)
        assert second.returncode == 2
        assert f"data directory {data} is in use by another iceshop process" in second.stderr
        code, out = stop(proc, signal.SIGTERM)
    finally:
        reap(proc)
        errors.close()
    assert code == 0, (tmp_path / "node.err").read_text()
    assert "stopping the node" in out
    assert main(["--nats", nats_server.url, *admin, "cluster", "status"]) == 3
