"""AllocationInstruction (J) against golden messages written by hand from FIX 4.4.

The goldens in tests/data/fix/allocation_instruction_*.fix were written from the FIX 4.4
message layout, not captured from our builder; the arithmetic behind every amount is in
their comments and is re-checked here, so a golden cannot drift into "whatever we emit".

How a built J is compared with a golden (both parsed with simplefix, not quickfix):

* BeginString(8), BodyLength(9), MsgType(35) must be the first three fields in that
  order and CheckSum(10) the last; BodyLength and CheckSum do not depend on field order,
  so they are compared too (the golden's own values are recomputed first).
* Other header fields: compared as a set of (tag, value). SenderCompID(49),
  TargetCompID(56), MsgSeqNum(34) and SendingTime(52) vary per run: the quickfix Session
  stamps them at send time and the builder sets none of them (checked), so the test copies
  the golden's pinned values onto the built message.
* Body fields outside repeating groups: compared as a set of (tag, value), because the
  spec does not fix their order on the wire (quickfix writes them sorted by tag).
  TransactTime(60) varies per run in production; it is a builder input and pinned there.
* Every repeating group (NoOrders, NoAllocs, the NestedParties inside each NoAllocs
  entry): compared entry by entry with the fields in exactly the order FIX 4.4 gives,
  delimiter field first. The order is transcribed below from the spec and checked against
  fix_specs/FIX44.xml.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import simplefix

from gateway.allocation_flow import AllocationFlow
from gateway.clock import settlement_date
from gateway.fix.allocation_codec import JBlock, JLine, build_allocation_instruction
from gateway.ledger import FillLedger
from gateway.orders import Order, make_order_id

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "fix"
SOH = "\x01"
CENT = Decimal("0.01")


# -- FIX 4.4 layout of the J's repeating groups, transcribed from the spec ----------------


@dataclass(frozen=True)
class Grp:
    """A repeating group: its NoXxx tag and its members in spec order (first = delimiter)."""

    count: int
    members: tuple[int | Grp, ...]

    @property
    def delimiter(self) -> int:
        first = self.members[0]
        assert isinstance(first, int)
        return first

    def tags(self) -> list[int]:
        """Tags that can appear directly in an entry, in spec order (sub-groups by NoXxx)."""
        return [m.count if isinstance(m, Grp) else m for m in self.members]

    def sub(self, tag: int) -> Grp | None:
        return next((m for m in self.members if isinstance(m, Grp) and m.count == tag), None)


# NestedParties / NestedParties2 components (NstdPtysSubGrp, NstdPtys2SubGrp inside).
NESTED_PARTIES = Grp(539, (524, 525, 538, Grp(804, (545, 805))))
NESTED_PARTIES2 = Grp(756, (757, 758, 759, Grp(806, (760, 807))))
# OrdAllocGrp: ClOrdID, OrderID, SecondaryOrderID, SecondaryClOrdID, ListID,
# NestedParties2, OrderQty, OrderAvgPx, OrderBookingQty.
ORD_ALLOC_GRP = Grp(73, (11, 37, 198, 526, 66, NESTED_PARTIES2, 38, 799, 800))
# ExecAllocGrp and Parties: the builder sends neither, listed so a stray one parses.
EXEC_ALLOC_GRP = Grp(124, (32, 17, 527, 31, 669, 29))
PARTIES = Grp(453, (448, 447, 452, Grp(802, (523, 803))))
# AllocGrp: AllocAccount, AllocAcctIDSource, MatchStatus, AllocPrice, AllocQty,
# IndividualAllocID, ProcessCode, NestedParties, NotifyBrokerOfCredit, AllocHandlInst,
# AllocText, EncodedAllocTextLen, EncodedAllocText, CommissionData (Commission, CommType,
# CommCurrency, FundRenewWaiv), AllocAvgPx, AllocNetMoney, SettlCurrAmt, AllocSettlCurrAmt,
# SettlCurrency, AllocSettlCurrency, SettlCurrFxRate, SettlCurrFxRateCalc,
# AllocAccruedInterestAmt, AllocInterestAtMaturity, MiscFeesGrp, ClrInstGrp,
# AllocSettlInstType, SettlInstructionsData (SettlDeliveryType, StandInstDbType,
# StandInstDbName, StandInstDbID, DlvyInstGrp) -- then our two bilateral UDFs, last.
UDFS = (20101, 20102)  # AllocStrategy, AllocVehicle (fix_specs/README.md)
ALLOC_GRP = Grp(78, (
    79, 661, 573, 366, 80, 467, 81, NESTED_PARTIES, 208, 209, 161, 360, 361,
    12, 13, 479, 497, 153, 154, 119, 737, 120, 736, 155, 156, 742, 741,
    Grp(136, (137, 138, 139, 891)), Grp(576, (577,)), 780, 172, 169, 170, 171,
    Grp(85, (165, 787, Grp(781, (782, 783, 784, Grp(801, (785, 786)))))),
    *UDFS,
))
J_GROUPS = {g.count: g for g in (ORD_ALLOC_GRP, EXEC_ALLOC_GRP, PARTIES, ALLOC_GRP)}
HEADER_TAGS = {8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129,
               145, 43, 97, 52, 122, 212, 213, 347, 369, 627}
SESSION_STAMPED = (49, 56, 34, 52)  # set by quickfix's Session at send, never by the builder


# -- the dictionary, for names and for checking the transcription -------------------------


def _dictionary(name: str) -> tuple[ET.Element, dict[str, int], dict[str, ET.Element]]:
    root = ET.parse(ROOT / "fix_specs" / name).getroot()
    numbers = {f.get("name", ""): int(f.get("number", "0")) for f in root.iter("field")
               if f.get("number")}
    section = root.find("components")
    components = {c.get("name", ""): c for c in (section if section is not None else [])}
    return root, numbers, components


_ROOT, _NUMBERS, _COMPONENTS = _dictionary("FIX44.xml")
NAMES = {number: name for name, number in _NUMBERS.items()}


def _name(tag: int) -> str:
    return f"{NAMES.get(tag, '?')}({tag})"


def _layout(node: ET.Element, numbers: dict[str, int],
            components: dict[str, ET.Element]) -> list[Any]:
    """A message or component with components expanded: tags, and (NoXxx, [...]) groups."""
    out: list[Any] = []
    for child in node:
        if child.tag == "field":
            out.append(numbers[child.get("name", "")])
        elif child.tag == "component":
            out.extend(_layout(components[child.get("name", "")], numbers, components))
        elif child.tag == "group":
            out.append((numbers[child.get("name", "")], _layout(child, numbers, components)))
    return out


def _as_layout(grp: Grp) -> tuple[int, list[Any]]:
    return grp.count, [_as_layout(m) if isinstance(m, Grp) else m for m in grp.members]


def _j_layout(name: str) -> list[Any]:
    root, numbers, components = _dictionary(name)
    message = next(m for m in root.iter("message") if m.get("msgtype") == "J")
    return _layout(message, numbers, components)


# -- parsing: simplefix for the wire format, the layout above for the structure ------------

Entry = list[tuple[Any, ...]]  # (tag, value) or (NoXxx, value, [entries])


@dataclass
class ParsedJ:
    first: list[tuple[int, str]]  # 8, 9, 35
    header: set[tuple[int, str]]
    body: list[tuple[int, str]]  # outside groups, in wire order
    groups: dict[int, list[Entry]] = field(default_factory=dict)
    checksum: str = ""


def _pairs(raw: str) -> list[tuple[int, str]]:
    parser = simplefix.FixParser()
    parser.append_buffer(raw.encode())
    msg = parser.get_message()
    assert msg is not None, "not a complete FIX message"
    return [(int(t), v.decode()) for t, v in msg.pairs]


def _entries(pairs: Sequence[tuple[int, str]], i: int, grp: Grp,
             declared: int) -> tuple[list[Entry], int]:
    """Read one group the way a dictionary-driven parser does; a new entry per delimiter."""
    members = set(grp.tags())
    entries: list[Entry] = []
    while i < len(pairs) and pairs[i][0] in members:
        tag, value = pairs[i]
        if tag == grp.delimiter:
            entries.append([])
        elif not entries:
            raise AssertionError(f"{_name(grp.count)} entry starts with {_name(tag)}, not "
                                 f"with its delimiter {_name(grp.delimiter)}")
        sub = grp.sub(tag)
        if sub is None:
            entries[-1].append((tag, value))
            i += 1
        else:
            nested, i = _entries(pairs, i + 1, sub, int(value))
            entries[-1].append((tag, value, nested))
    assert len(entries) == declared, (
        f"{_name(grp.count)}={declared} but {len(entries)} entries follow")
    return entries, i


def parse_j(raw: str) -> ParsedJ:
    pairs = _pairs(raw)
    assert [t for t, _ in pairs[:3]] == [8, 9, 35], "8, 9, 35 must open the message"
    assert pairs[-1][0] == 10, "CheckSum(10) must close the message"
    parsed = ParsedJ(first=pairs[:3], header=set(), body=[], checksum=pairs[-1][1])
    i = 3
    while i < len(pairs) - 1:
        tag, value = pairs[i]
        if tag in HEADER_TAGS:
            assert not parsed.body and not parsed.groups, f"header {_name(tag)} inside body"
            parsed.header.add((tag, value))
            i += 1
        elif tag in J_GROUPS:
            assert tag not in parsed.groups, f"{_name(tag)} appears twice"
            parsed.groups[tag], i = _entries(pairs, i + 1, J_GROUPS[tag], int(value))
        else:
            parsed.body.append((tag, value))
            i += 1
    assert i == len(pairs) - 1, "trailing fields after the last group"
    tags = [t for t, _ in parsed.body]
    dupes = sorted({_name(t) for t in tags if tags.count(t) > 1})
    assert not dupes, f"body fields outside any group appear more than once: {dupes}"
    return parsed


def load_golden(name: str) -> str:
    """A golden file: TAG=VALUE per line, '#' comments, indentation ignored -> raw FIX."""
    fields = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        text = line.split(" #", 1)[0].strip()
        if text and not text.startswith("#"):
            tag, value = text.split("=", 1)
            fields.append(f"{int(tag)}={value}")
    return SOH.join(fields) + SOH


def body_length_and_checksum(raw: str) -> tuple[str, str]:
    """Recomputed from the text: BodyLength counts from after 9=...| to before 10=."""
    fields = raw.split(SOH)[:-1]
    assert fields[0].startswith("8=") and fields[1].startswith("9=")
    assert fields[-1].startswith("10=")
    body = "".join(f + SOH for f in fields[2:-1])
    length = len(body.encode())
    head = f"{fields[0]}{SOH}9={length}{SOH}"
    return str(length), f"{sum((head + body).encode()) % 256:03d}"


def spec_order_problems(entries: Iterable[Entry], grp: Grp, where: str = "") -> list[str]:
    """Every place where an entry's fields are not in the spec's order for its group."""
    order = grp.tags()
    problems = []
    for n, entry in enumerate(entries, start=1):
        here = f"{where}{_name(grp.count)}[{n}]"
        tags = [item[0] for item in entry]
        if tags[0] != grp.delimiter:
            problems.append(f"{here} starts with {_name(tags[0])}, not {_name(grp.delimiter)}")
        for a, b in pairwise(tags):
            if order.index(a) >= order.index(b):
                problems.append(f"{here}: {_name(b)} after {_name(a)}")
        for item in entry:
            if len(item) == 3:
                sub = grp.sub(item[0])
                assert sub is not None
                problems += spec_order_problems(item[2], sub, f"{here}.")
    return problems


def _readable(entry: Entry) -> list[str]:
    out = []
    for item in entry:
        out.append(f"{_name(item[0])}={item[1]}")
        if len(item) == 3:
            for n, nested in enumerate(item[2], start=1):
                out += [f"  [{n}] {x}" for x in _readable(nested)]
    return out


def assert_same_j(built_raw: str, golden_raw: str) -> None:
    built, golden = parse_j(built_raw), parse_j(golden_raw)
    # Groups first: their order is what the spec fixes and what a counterparty's parser
    # depends on, so a misplaced field is reported as such.
    assert spec_order_problems(built.groups.get(78, []), ALLOC_GRP) == []
    assert spec_order_problems(built.groups.get(73, []), ORD_ALLOC_GRP) == []
    assert sorted(built.groups) == sorted(golden.groups), "repeating groups present"
    for count, golden_entries in golden.groups.items():
        built_entries = built.groups[count]
        assert len(built_entries) == len(golden_entries), f"{_name(count)} entries"
        for n, (b, g) in enumerate(zip(built_entries, golden_entries, strict=True), 1):
            assert _readable(b) == _readable(g), f"{_name(count)} entry {n}"
    as_names = {f"{_name(t)}={v}" for t, v in built.body}
    expected = {f"{_name(t)}={v}" for t, v in golden.body}
    assert sorted(as_names - expected) == [], "body fields the golden does not have"
    assert sorted(expected - as_names) == [], "golden body fields the builder did not emit"
    assert sorted(built.header) == sorted(golden.header)
    assert built.first == golden.first  # BeginString, BodyLength, MsgType
    assert built.checksum == golden.checksum


# -- the cases: builder inputs, and the fills the golden's arithmetic comes from ----------

TRADE_DATE = "2026-11-20"
OMS_SESSION = "FIX.4.4:FIXALLOC->OMS1"
ORDER_A = make_order_id(OMS_SESSION, "BLK-7", TRADE_DATE)  # FA202611208C7FA42FD7
ORDER_B = make_order_id(OMS_SESSION, "BLK-8", TRADE_DATE)  # FA20261120FF371DF697
ACCOUNTS = {  # as in config/accounts.csv: custodian, prime broker, strategy, vehicle
    "SMA0001": ("IRVTUS3NXXX", "PB02", "DIV", "SMA-WRAP2"),
    "SMA0002": ("SBOSUS33XXX", "PB03", "CORE", "SMA-UMA"),
    "SMA0003": ("CUSTUS33XXX", "PB01", "ESG", "SMA-WRAP1"),
    "SMA0004": ("IRVTUS3NXXX", "PB02", "LCG", "SMA-WRAP2"),
}


@dataclass(frozen=True)
class Case:
    golden: str
    order_id: str
    oms_cl_ord_id: str
    broker_order_id: str
    side: str
    symbol: str
    order_qty: Decimal
    fills: tuple[tuple[str, str], ...]  # (qty, px) as the broker reported them
    split: tuple[tuple[str, int], ...]  # (account, qty)
    transact_time: datetime
    send_udfs: bool
    to_oms: bool = False

    @property
    def avg_px(self) -> Decimal:
        ledger = FillLedger()
        for n, (qty, px) in enumerate(self.fills):
            ledger.apply_fill(f"X{n}", Decimal(qty), Decimal(px))
        return ledger.avg_px

    def block(self) -> JBlock:
        return JBlock(
            alloc_id=f"{self.order_id}-J1", alloc_trans_type="0", alloc_type="1",
            cl_ord_id=self.oms_cl_ord_id if self.to_oms else self.order_id,
            broker_order_id=self.order_id if self.to_oms else self.broker_order_id,
            order_qty=self.order_qty, side=self.side, symbol=self.symbol,
            quantity=Decimal(sum(q for _, q in self.split)), avg_px=self.avg_px,
            trade_date=TRADE_DATE, settl_date="2026-11-23", transact_time=self.transact_time,
            secondary_alloc_id=self.order_id)

    def lines(self) -> list[JLine]:
        return [JLine(f"{self.order_id}-J1-{i:05d}", account, Decimal(qty), self.avg_px,
                      *ACCOUNTS[account])
                for i, (account, qty) in enumerate(self.split, start=1)]


BROKER_UDFS = Case(
    golden="allocation_instruction_broker_udfs.fix", order_id=ORDER_A, oms_cl_ord_id="BLK-7",
    broker_order_id="BRK000001", side="buy", symbol="AAPL", order_qty=Decimal(10_000),
    fills=(("5000", "189.95"), ("4950", "190.05")),
    split=(("SMA0001", 3950), ("SMA0003", 3600), ("SMA0004", 2400)),
    transact_time=datetime(2026, 11, 20, 21, 0, tzinfo=UTC), send_udfs=True)
OMS_COPY = replace(BROKER_UDFS, golden="allocation_instruction_oms_copy.fix", to_oms=True)
BROKER_ALLOC_TEXT = Case(
    golden="allocation_instruction_broker_alloc_text.fix", order_id=ORDER_B,
    oms_cl_ord_id="BLK-8", broker_order_id="BRK000002", side="sell", symbol="MSFT",
    order_qty=Decimal(9000),
    fills=(("3000", "100.00"), ("1000", "100.25"), ("3000", "100.00"), ("2000", "100.50")),
    split=(("SMA0002", 3000), ("SMA0003", 3000), ("SMA0004", 3000)),
    transact_time=datetime(2026, 11, 20, 20, 29, 59, 500_000, tzinfo=UTC), send_udfs=False)
CASES = [BROKER_UDFS, BROKER_ALLOC_TEXT, OMS_COPY]
IDS = [c.golden.removeprefix("allocation_instruction_").removesuffix(".fix") for c in CASES]


def stamp_like_the_session(message: Any, golden: ParsedJ) -> str:
    """Copy the golden's pinned session fields onto a built message and render it."""
    header = message.getHeader()
    for tag in SESSION_STAMPED:
        assert not header.isSetField(tag), f"the builder set {_name(tag)} itself"
        header.setField(tag, dict(golden.header)[tag])
    return str(message.toString())


# -- the tests ---------------------------------------------------------------------------


def test_transcribed_layout_matches_the_dictionary() -> None:
    """The group layouts above are FIX44.xml's J groups; the stock 4.4 one minus the UDFs."""
    ours = _j_layout("FIX44.xml")
    for grp in J_GROUPS.values():
        assert _as_layout(grp) in ours, _name(grp.count)
    stock = _j_layout("FIX44-stock.xml")
    count, members = _as_layout(ALLOC_GRP)
    assert (count, [m for m in members if m not in UDFS]) in stock


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_is_consistent_with_the_spec_and_its_arithmetic(case: Case) -> None:
    """The hand-written golden: well formed, spec order in groups, and every sum right."""
    raw = load_golden(case.golden)
    j = parse_j(raw)
    assert (dict(j.first)[9], j.checksum) == body_length_and_checksum(raw)
    assert dict(j.first)[35] == "J"
    assert spec_order_problems(j.groups[78], ALLOC_GRP) == []
    assert spec_order_problems(j.groups[73], ORD_ALLOC_GRP) == []
    body = dict(j.body)
    quantity, avg_px = Decimal(body[53]), Decimal(body[6])

    # AvgPx: the fills' VWAP rounded once to 4 places (FIX_ALLOCATION §4.3.1).
    fills = [(Decimal(q), Decimal(p)) for q, p in case.fills]
    vwap = sum((q * p for q, p in fills), Decimal(0)) / sum((q for q, _ in fills), Decimal(0))
    assert avg_px == vwap.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    assert quantity == sum(q for q, _ in fills)

    [order] = [{item[0]: item[1] for item in e} for e in j.groups[73]]
    assert Decimal(order[800]) == quantity <= Decimal(order[38])  # Σ OrderBookingQty
    assert Decimal(order[799]) == avg_px

    lines = [{item[0]: item[1] for item in e} for e in j.groups[78]]
    assert sum(Decimal(x[80]) for x in lines) == quantity  # Σ AllocQty = Quantity
    for n, x in enumerate(lines, start=1):
        assert Decimal(x[153]) == avg_px  # average-price allocation
        money = (Decimal(x[80]) * Decimal(x[153])).quantize(CENT, rounding=ROUND_HALF_EVEN)
        assert Decimal(x[154]) == money, x[79]
        assert x[467] == f"{body[70]}-{n:05d}"
        assert (20101 in x, 20102 in x) == (case.send_udfs or case.to_oms,) * 2
        if not (case.send_udfs or case.to_oms):
            _, _, strategy, vehicle = ACCOUNTS[x[79]]
            assert x[161] == f"STRAT={strategy};VEH={vehicle}"
    exact_gross = sum((Decimal(x[80]) * Decimal(x[153]) for x in lines), Decimal(0))
    assert exact_gross == quantity * avg_px
    assert Decimal(body[381]) == exact_gross.quantize(CENT, rounding=ROUND_HALF_EVEN)
    assert Decimal(body[118]) == sum(Decimal(x[154]) for x in lines)  # Calculated J

    assert body[70] == f"{body[793]}-J1"
    trade = date(int(body[75][:4]), int(body[75][4:6]), int(body[75][6:]))
    assert body[64] == settlement_date(trade).strftime("%Y%m%d")  # T+1 on XNYS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_builder_matches_the_golden_field_by_field(case: Case) -> None:
    """build_allocation_instruction: body as a set, every group entry in spec order."""
    golden_raw = load_golden(case.golden)
    built = build_allocation_instruction(case.block(), case.lines(),
                                         send_udfs=case.send_udfs)
    assert_same_j(stamp_like_the_session(built, parse_j(golden_raw)), golden_raw)


class _FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


class _CaptureOutbound:
    """FixOutbound's allocation port, building the real message instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def broker_key(self, broker_name: str) -> str:
        return f"FIX.4.4:FIXALLOC->{broker_name}"

    def send_udfs(self, key: str) -> bool:
        """Per session: BRKB's dictionary lacks the UDFs; BRKA and the OMS declare them."""
        return key != "FIX.4.4:FIXALLOC->BRKB"

    def allocation(self, key: str, block: JBlock, lines: Sequence[JLine], *,
                   send_udfs: bool, fragment: tuple[int, bool] | None = None) -> bool:
        self.sent.append((key, build_allocation_instruction(block, lines, send_udfs=send_udfs,
                                                            fragment=fragment)))
        return True

    def handed_over_count(self, key: str, msg_type: str, ref_id: str) -> int:
        return 0


@pytest.mark.parametrize(("case", "copies"), [
    (BROKER_UDFS, (BROKER_UDFS, OMS_COPY)),
    (BROKER_ALLOC_TEXT, (BROKER_ALLOC_TEXT, None)),
], ids=["BRKA-and-OMS", "BRKB-without-udfs"])
def test_allocation_flow_sends_the_golden_broker_and_oms_copies(
    case: Case, copies: tuple[Case, Case | None]
) -> None:
    """The flow picks ClOrdID/OrderID and UDFs per destination as the goldens say."""
    broker = "BRKA" if case.send_udfs else "BRKB"
    config = SimpleNamespace(config_hash=lambda: "test",
                             broker=lambda name: SimpleNamespace(send_udfs=name == "BRKA",
                                                                 max_lines_per_j=None))
    db = SimpleNamespace(update_allocation=lambda *a, **k: None,
                         sent_message_contains=lambda *a: False,
                         riding_on_wire=lambda *_a: nullcontext(SimpleNamespace(done=False)))
    out = _CaptureOutbound()
    flow = AllocationFlow(config, db, out, None, None, None,  # type: ignore[arg-type]
                          _FixedClock(case.transact_time))
    order = Order(order_id=case.order_id, oms_session=OMS_SESSION,
                  oms_cl_ord_id=case.oms_cl_ord_id, book="SMA-CORE", symbol=case.symbol,
                  side=case.side, order_qty=case.order_qty, ord_type="2", price=None,
                  time_in_force=None, broker=broker, trade_date=TRADE_DATE,
                  broker_order_id=case.broker_order_id, alloc_id=f"{case.order_id}-J1")
    block = case.block()
    alloc = {"alloc_id": block.alloc_id, "alloc_trans_type": "0", "alloc_type": "1",
             "quantity": str(block.quantity), "avg_px": str(block.avg_px),
             "trade_date": TRADE_DATE, "settl_date": block.settl_date}
    rows = [{"individual_alloc_id": ln.individual_alloc_id, "account_id": ln.account_id,
             "qty": str(ln.qty), "avg_px": str(ln.avg_px), "custodian": ln.custodian,
             "prime_broker": ln.prime_broker, "strategy": ln.strategy, "vehicle": ln.vehicle}
            for ln in case.lines()]
    flow.send_pending(order, include_oms=copies[1] is not None, stored=(alloc, rows))

    expected = [c for c in copies if c is not None]
    assert [key for key, _ in out.sent] == (
        [f"FIX.4.4:FIXALLOC->{broker}", OMS_SESSION][:len(expected)])
    for (_, message), copy in zip(out.sent, expected, strict=True):
        golden_raw = load_golden(copy.golden)
        assert_same_j(stamp_like_the_session(message, parse_j(golden_raw)), golden_raw)


def test_a_group_field_out_of_spec_order_is_reported() -> None:
    """The comparison itself: AllocQty moved after IndividualAllocID is caught by name."""
    raw = load_golden(BROKER_UDFS.golden).replace(
        f"80=3950{SOH}467={ORDER_A}-J1-00001{SOH}", f"467={ORDER_A}-J1-00001{SOH}80=3950{SOH}")
    j = parse_j(raw)
    assert spec_order_problems(j.groups[78], ALLOC_GRP) == [
        "NoAllocs(78)[1]: AllocQty(80) after IndividualAllocID(467)"]
    with pytest.raises(AssertionError):
        assert_same_j(raw, load_golden(BROKER_UDFS.golden))
