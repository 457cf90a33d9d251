"""Pure pieces of the hardening: wire bytes, secret masking, order checks, limits, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from engine.model import Security
from gateway.config import BookSettings, load_config
from gateway.fix import settings as qf_settings
from gateway.fix.application import RateLimit
from gateway.fix.store_secrets import masked, scrub_sent
from gateway.fix.wire_log import Refusals, describe, wire_bytes
from gateway.order_checks import BlockOrder, check_block_order
from gateway.persistence.records import wire_text
from gateway.redaction import redact_bytes


def _checksum_ok(message: bytes) -> bool:
    body, trailer = message[: message.rindex(b"10=")], message[message.rindex(b"10="):]
    return trailer == b"10=%03d\x01" % (sum(body) % 256)


def _fix(*fields: bytes) -> bytes:
    body = b"".join(f + b"\x01" for f in fields)
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def test_wire_bytes_gives_back_exactly_what_the_peer_sent() -> None:
    latin1 = b"8=FIX.4.4\x0135=D\x0158=caf\xe9\x01"
    # The binding decodes with surrogateescape; encoding back must be lossless.
    as_binding_gives_it = latin1.decode("utf-8", "surrogateescape")
    assert wire_bytes(as_binding_gives_it) == latin1
    assert wire_text(latin1) == "8=FIX.4.4\x0135=D\x0158=caf\\xe9\x01"
    assert wire_text("déjà".encode()) == "déjà"


def test_describe_reads_type_seq_possdup_and_the_id_it_is_about() -> None:
    er = _fix(b"35=8", b"34=17", b"43=Y", b"11=C1", b"17=E9")
    assert describe(er) == ("8", 17, True, "E9")
    j = _fix(b"35=J", b"34=3", b"70=A-J1")
    assert describe(j) == ("J", 3, False, "A-J1")
    assert describe(b"garbage\xff") == ("?", None, False, None)


def test_redaction_of_bytes_keeps_every_other_byte() -> None:
    raw = _fix(b"35=A", b"553=Jos\xe9", b"554=s3cr\xe9t")
    assert redact_bytes(raw) == raw.replace(b"554=s3cr\xe9t", b"554=***")


def test_masking_keeps_length_and_redoes_the_checksum() -> None:
    logon = _fix(b"35=A", b"34=1", b"554=hunter2", b"925=newpass")
    clean = masked(logon)
    assert len(clean) == len(logon) and b"hunter2" not in clean and b"newpass" not in clean
    assert b"554=*******\x01" in clean and _checksum_ok(clean)
    heartbeat = _fix(b"35=0", b"34=2")
    assert masked(heartbeat + logon + heartbeat) == heartbeat + clean + heartbeat


def test_scrub_sent_masks_only_the_message_just_appended(tmp_path: Path) -> None:
    body = tmp_path / "FIX.4.4-FIXALLOC-BRKA.body"
    first, logon = _fix(b"35=D", b"34=2"), _fix(b"35=A", b"34=3", b"554=pw")
    body.write_bytes(first + logon)
    assert scrub_sent(body, logon) is True
    assert body.read_bytes() == first + masked(logon)
    assert scrub_sent(body, _fix(b"35=A", b"554=other")) is False  # not the last message


def test_refusals_are_taken_once_and_bounded() -> None:
    refusals = Refusals(capacity=3)
    for seq in range(5):
        refusals.mark("S", seq, "D", f"r{seq}")
    assert refusals.take("S", 0, "D") is None  # evicted
    assert refusals.take("S", 4, "D") == "r4" and refusals.take("S", 4, "D") is None
    refusals.clear("S")
    assert refusals.take("S", 3, "D") is None


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limit = RateLimit(rate=2, burst=4)
    assert [limit.allow() for _ in range(6)] == [True] * 4 + [False] * 2


SECURITIES = {"AAPL": Security("AAPL", "Apple", "IT", "US", price=Decimal("190.00")),
              "NOPX": Security("NOPX", "NoPrice", "IT", "US")}


class _Acct:
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id


ACCOUNTS = [_Acct("A1"), _Acct("A2")]


def _check(book: BookSettings | None = None, **kw: object) -> str | None:
    fields: dict[str, object] = {"book": "B", "symbol": "AAPL", "side": "buy",
                                 "order_qty": Decimal(1000), "ord_type": "1"}
    fields.update(kw)
    rej = check_block_order(BlockOrder(**fields),  # type: ignore[arg-type]
                            book or BookSettings(name="B", broker="X"), SECURITIES, ACCOUNTS,
                            ["B"])
    return rej.text if rej else None


@pytest.mark.parametrize(("kw", "text"), [
    ({}, None),
    ({"order_qty": Decimal("10000001")}, "OrderQty(38) 10,000,001 exceeds the maximum of "
                                         "10,000,000 for book B"),
    ({"order_qty": Decimal("10.5")}, "OrderQty(38) 10.5 is not a whole number of shares"),
    ({"order_qty": Decimal(0)}, "OrderQty(38) must be positive, was 0"),
    ({"symbol": "NOPX"}, "no reference price for NOPX to check the notional of a market order"),
    ({"ord_type": "2"}, "Price(44) is required for a limit order"),
    ({"ord_type": "2", "price": Decimal("-1")}, "Price(44) must be positive, was -1"),
    ({"time_in_force": "6"}, "TimeInForce(59) 6 (gtd) is not accepted for book B; accepted: "
                             "0 (day), 3 (ioc), 4 (fok), 2 (at_the_open), 7 (at_the_close)"),
    ({"ord_type": "Z"}, "OrdType(40) 'Z' is not accepted for book B; accepted: 1 (market), "
                        "2 (limit)"),
    ({"book": "NOPE"}, "unknown book 'NOPE' in Account(1); known books: B"),
    ({"preallocations": (("A1", Decimal(400)), ("A2", Decimal(600))),
      "preallocation_reason": "PM"}, None),
    ({"preallocations": (("A1", Decimal(400)), ("A1", Decimal(600))),
      "preallocation_reason": "PM"}, "AllocAccount(79) A1 is pre-allocated twice"),
    ({"preallocations": (("A1", Decimal(-400)), ("A2", Decimal(1400))),
      "preallocation_reason": "PM"}, "AllocQty(80) for A1 must be a positive whole number of "
                                     "shares, was -400"),
    ({"preallocations": (("A9", Decimal(1000)),), "preallocation_reason": "PM"},
     "pre-allocation names accounts not in book B: A9"),
])
def test_block_order_checks(kw: dict[str, object], text: str | None) -> None:
    if "book" in kw and kw["book"] == "NOPE":
        rej = check_block_order(BlockOrder(book="NOPE", symbol="AAPL", side="buy",
                                           order_qty=Decimal(1), ord_type="1"), None,
                                SECURITIES, ACCOUNTS, ["B"])
        assert rej is not None and rej.text == text
        return
    assert _check(**kw) == text


def test_notional_is_priced_at_the_limit_else_the_reference_price() -> None:
    book = BookSettings(name="B", broker="X", max_notional=Decimal(1_000_000_000))
    assert _check(book, order_qty=Decimal(5_000_000)) is None  # 950,000,000: within
    assert _check(book, order_qty=Decimal(6_000_000)) == (
        "OrderQty(38) 6,000,000 at the reference price 190.00 is a notional of "
        "1,140,000,000, above the maximum of 1,000,000,000 for book B")
    assert _check(book, order_qty=Decimal(6_000_000), ord_type="2", price=Decimal(100)) is None


def test_stop_and_pegged_need_their_companions_when_the_book_takes_them() -> None:
    book = BookSettings(name="B", broker="X", ord_types=("stop", "stop_limit", "pegged"))
    assert _check(book, ord_type="3") == "StopPx(99) is required for a stop order"
    assert _check(book, ord_type="4", stop_px=Decimal(180)) == \
        "Price(44) is required for a stop limit order"
    assert _check(book, ord_type="P") == "PegOffsetValue(211) is required for a pegged order"
    assert _check(book, ord_type="3", stop_px=Decimal(180)) is None


def test_tls_sessions_get_an_engine_each_with_their_certificates(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[gateway]
state_dir = "{tmp_path}"
[fix]
[[fix.oms]]
name = "OMS1"
target_comp_id = "OMS1"
port = 9000
tls = {{ cert_file = "c.pem", key_file = "k.pem", ca_file = "ca.pem", require_client_cert = true }}
[[fix.oms]]
name = "OMS2"
target_comp_id = "OMS2"
port = 9001
[[fix.brokers]]
name = "B1"
target_comp_id = "B1"
port = 9002
tls = {{ ca_file = "ca.pem" }}
""")
    specs = qf_settings.engine_specs(load_config(cfg))
    by = {(s.side, s.tls): s for s in specs}
    assert by[("acceptor", False)].sessions == ("OMS2",)
    assert by[("acceptor", True)].sessions == ("OMS1",)
    text = by[("acceptor", True)].text
    assert f"ServerCertificateFile={tmp_path / 'c.pem'}" in text
    assert "CertificateVerifyLevel=1" in text and "SSLProtocol=-all +TLSv1_2 +TLSv1_3" in text
    assert f"CertificationAuthoritiesFile={tmp_path / 'ca.pem'}" in by[("initiator", True)].text


def test_utc_time_converts_a_new_york_wall_clock() -> None:
    winter = datetime(2026, 1, 15, 12, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 12, tzinfo=UTC)
    assert qf_settings.utc_time("07:00:00", "America/New_York", winter) == "12:00:00"
    assert qf_settings.utc_time("07:00:00", "America/New_York", summer) == "11:00:00"
    assert qf_settings.utc_time("07:00:00", "UTC", summer) == "07:00:00"


def test_stored_refs_reads_the_ids_quickfix_holds_for_resend(tmp_path: Path) -> None:
    from gateway.fix.store_index import stored_refs

    body = tmp_path / "FIX.4.4-FIXALLOC-OMS1.body"
    body.write_bytes(_fix(b"35=8", b"34=2", b"17=X1") + _fix(b"35=J", b"34=3", b"70=A-J1")
                     + _fix(b"35=J", b"34=4", b"70=A-J1") + _fix(b"35=A", b"34=1", b"554=***"))
    # Two fragments of one J carry its AllocID twice.
    assert stored_refs(body) == {"8": {"X1": 1}, "J": {"A-J1": 2}}
    assert stored_refs(tmp_path / "missing.body") == {}
