"""Orders that cannot be executed sensibly are refused before routing, naming the field.

Each of these was routed to the broker before (a trillion shares, 1e23, a zero or negative
limit price, a pegged order without peg instructions, a stop without StopPx). Now each
gets an ER 39=8 whose Text names the field, nothing reaches the broker, and every reject's
ExecID is unique for the life of the database, across sequence resets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.harness import Ports, write_config
from tests.support.oms_client import d_fields, raw_oms
from tests.support.raw_fix import RawFixClient

pytestmark = pytest.mark.fix

BOOK = 'ord_types = ["market", "limit", "stop", "pegged"]\n'


# The overrides, not the fields: TransactTime(60) is stamped when the test runs, not when
# it is collected (a run that crossed midnight in New York sent yesterday's orders).
@pytest.mark.parametrize(("overrides", "text"), [
    (dict(T38="1000000000000"),
     "OrderQty(38) 1,000,000,000,000 exceeds the maximum of 10,000,000 for book SMA-CORE"),
    # Beyond what any quantity field may hold: refused where the message is decoded.
    (dict(T38="100000000000000000000000"),
     "OrderQty(38): out of range (|value| >= 10^15): '100000000000000000000000'"),
    (dict(T44="0"), "Price(44) must be positive, was 0"),
    (dict(T44="-190"), "Price(44) must be positive, was -190"),
    (dict(T40="P", T44=None), "PegOffsetValue(211) is required for a pegged order"),
    (dict(T40="3", T44=None), "StopPx(99) is required for a stop order"),
    (dict(T40="4", T99="180"), "OrdType(40) 4 (stop_limit) is not accepted for book "
                                   "SMA-CORE; accepted: 1 (market), 2 (limit), 3 (stop), "
                                   "P (pegged)"),
    (dict(T59="1"), "TimeInForce(59) 1 (gtc) is not accepted for book SMA-CORE; "
                        "accepted: 0 (day), 3 (ioc), 4 (fok), 2 (at_the_open), "
                        "7 (at_the_close)"),
    (dict(T38="5000000", T44="900"),
     "OrderQty(38) 5,000,000 at the limit price 900 is a notional of 4,500,000,000, above "
     "the maximum of 2,000,000,000 for book SMA-CORE"),
    (dict(T40="1", T44="190"), "Price(44) is not allowed on a market order"),
])
def test_absurd_order_is_rejected_naming_the_field_and_never_routed(
    tmp_path: Path, overrides: dict[str, str | None], text: str
) -> None:
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, extra=BOOK)
    with raw_oms(tmp_path, cfg, ports) as (client, broker):
        client.send("D", d_fields(**overrides))
        er = client.receive("8")
        assert (er.get(39), er.get(150)) == (b"8", b"8")
        assert er.get(58).decode() == text
        # A good order after it is routed: proof that the bad one was handled first.
        client.send("D", d_fields("GOOD-1"))
        assert client.receive("8").get(11) == b"GOOD-1"
        assert list(broker.orders) != [] and all(
            o.qty == 1000 for o in broker.orders.values())


def test_reject_exec_ids_are_unique_across_a_sequence_reset(tmp_path: Path) -> None:
    """REJ-<target>-<seq> repeated after a 141=Y logon; now each reject has its own ExecID."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports, oms_extra="reset_on_logon = true")
    with raw_oms(tmp_path, cfg, ports) as (client, _broker):
        client.send("D", d_fields("BAD-1", T1=None))
        first = client.receive("8")
        client.close()
        again = RawFixClient(ports.oms)
        try:
            again.send("A", [(98, "0"), (108, "30"), (141, "Y")], seq=1)
            again.seq = 2
            again.receive("A")
            again.send("D", d_fields("BAD-2", T1=None))
            second = again.receive("8")
        finally:
            again.close()
    assert first.get(34) == second.get(34) == b"2"  # the same sequence number after the reset
    assert first.get(17) != second.get(17)
    assert first.get(17).startswith(b"REJ") and second.get(17).startswith(b"REJ")


@pytest.mark.parametrize("flag", [43, 97])
def test_repeat_of_a_rejected_order_is_recognised_not_rejected_again(
    tmp_path: Path, flag: int
) -> None:
    """A PossDup/PossResend copy of a refused D gets no second reject with a new ExecID."""
    ports = Ports.free()
    cfg = write_config(tmp_path, ports)
    with raw_oms(tmp_path, cfg, ports) as (client, _broker):
        bad = d_fields("BAD-1", T1=None)
        client.send("D", bad)
        first = client.receive("8")
        assert first.get(39) == b"8"
        # The same order again, flagged as a repeat (PossDup needs OrigSendingTime).
        header: list[tuple[int, str | bytes]] = [(flag, "Y")]
        if flag == 43:
            header.append((122, dict(bad)[60]))
        client.send("D", bad, header=header)
        client.send("D", d_fields("GOOD-1"))
        answers = []
        while True:
            er = client.receive("8")
            answers.append(er)
            if er.get(11) == b"GOOD-1":
                break
        assert [a.get(11) for a in answers] == [b"GOOD-1"]
