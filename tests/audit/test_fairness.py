"""Fairness over time: a favoured account is found, a fair rotation is not, on real decisions.

The histories are made by the real engine (engine.allocate) and stored through
Database.save_allocation exactly as the gateway stores them; the "favoured" history is
the engine with its rotation offset stuck (the bug fairness monitoring exists to catch).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

import engine
from gateway.audit import fairness, fairness_stats
from gateway.audit.fairness_chart import chart_svg, html_page
from gateway.audit.fairness_metrics import FairnessCollector, register_fairness_metrics
from gateway.cli import main
from gateway.persistence import tables as t
from gateway.persistence.store import Database

D = Decimal
START = dt.date(2024, 6, 3)
NOW = dt.datetime(2024, 6, 3, 20, 0, tzinfo=dt.UTC)
REFDATA = "refdata-v1"
SECURITIES = {"XYZ": engine.Security("XYZ", "XYZ Corp", "Technology", "US", frozenset(), 100,
                                     None, D("10"))}
IDS = [f"ACC{i:02d}" for i in range(10)]


def _rulebook(method: str) -> engine.Rulebook:
    return engine.Rulebook.from_mapping(
        {"schemes": {"default": {"method": method, "tie_break": "rotation"}}})


def _accounts(intended: Sequence[int] | None = None) -> tuple[engine.Account, ...]:
    return tuple(engine.Account(
        aid, "BOOK", nav=D(10_000_000), cash=D(10_000_000),
        intended_qty=D(intended[i] if intended else 1000), tier=1 + i % 2,
        custodian="CUSTA" if i < 5 else "CUSTB") for i, aid in enumerate(IDS))


def _database(tmp: Path, accounts: Sequence[engine.Account]) -> Database:
    db = Database(f"sqlite:///{tmp / 'fair.db'}")
    db.migrate()
    text = "account_id,book,status,nav,cash,tier,intended_qty,target_weight,custodian," \
           "prime_broker,strategy,vehicle,scheme\n" + "".join(
               f"{a.account_id},{a.book},active,{a.nav},{a.cash},{a.tier},{a.intended_qty},,"
               f"{a.custodian},PB,S,V,default\n" for a in accounts)
    with db.engine.begin() as conn:
        conn.execute(t.refdata_versions.insert().values(
            version=REFDATA, loaded_at=NOW, actor="test",
            content_json=json.dumps({"/x/accounts.csv": text})))
    return db


def _store(db: Database, n: int, decision: engine.AllocationDecision, *, rotation: int,
           trans: str = "0", alloc_no: int = 1, status: str = "accepted",
           ref: str | None = None) -> str:
    order_id = f"ORD{n:04d}"
    day = decision.trade_date.isoformat()
    if alloc_no == 1:
        db.insert_order({
            "order_id": order_id, "oms_session": "OMS", "oms_cl_ord_id": order_id,
            "book": "BOOK", "symbol": "XYZ", "side": "buy",
            "order_qty": str(decision.executed_qty), "ord_type": "1", "broker": "B1",
            "status": "filled", "trade_date": day, "created_at": NOW, "updated_at": NOW})
    alloc_id = f"{order_id}-J{alloc_no}"
    db.save_allocation(
        {"decision_id": decision.decision_id, "order_id": order_id, "method": decision.method,
         "rulebook_version": decision.rulebook_version, "inputs_hash": decision.inputs_hash,
         "config_hash": "c", "decided_at": NOW, "canonical_json": decision.to_canonical_json(),
         "refdata_version": REFDATA, "rotation_offset": rotation},
        {"alloc_id": alloc_id, "order_id": order_id, "decision_id": decision.decision_id,
         "broker": "B1", "alloc_trans_type": trans, "alloc_type": "1",
         "quantity": str(decision.allocated_qty), "avg_px": str(decision.avg_px),
         "trade_date": day, "settl_date": day, "status": status, "created_at": NOW,
         "ref_alloc_id": ref, "fragments": 1},
        [{"individual_alloc_id": f"{alloc_id}-{i:05d}", "alloc_id": alloc_id,
          "account_id": ln.account_id, "qty": str(ln.qty), "avg_px": str(ln.avg_px),
          "custodian": "CUSTA" if ln.account_id < "ACC05" else "CUSTB"}
         for i, ln in enumerate(decision.lines, start=1)])
    return alloc_id


def _decide(n: int, qty: int, accounts: tuple[engine.Account, ...], rulebook: engine.Rulebook,
            rotation: int) -> engine.AllocationDecision:
    return engine.allocate(engine.AllocationRequest(
        block_id=f"ORD{n:04d}", symbol="XYZ", side=engine.Side.BUY, executed_qty=D(qty),
        avg_px=D("10.25"), trade_date=START + dt.timedelta(days=n // 5), accounts=accounts,
        securities=SECURITIES, decided_at=NOW, rotation_offset=rotation), rulebook)


def _history(db: Database, quantities: Sequence[int], accounts: tuple[engine.Account, ...],
             method: str, *, stuck_at: int | None = None) -> None:
    """One block per quantity, rotation advancing per block unless `stuck_at`."""
    rulebook = _rulebook(method)
    for n, qty in enumerate(quantities):
        rotation = n if stuck_at is None else stuck_at
        _store(db, n, _decide(n, qty, accounts, rulebook, rotation), rotation=rotation)


def _report(db: Database, **kw: Any) -> fairness.FairnessReport:
    return fairness.fairness_report(db, START, START + dt.timedelta(days=400), **kw)


def test_stuck_rotation_flags_the_favoured_account_and_only_it(tmp_path: Path) -> None:
    db = _database(tmp_path, _accounts())
    # Equal split of 10 accounts, one extra lot per block: a stuck offset of 7 gives it
    # to ACC07 every time.
    _history(db, [10 * 100 * 3 + 100] * 60, _accounts(), "equal", stuck_at=7)
    report = _report(db, by="custodian")
    assert [f.key for f in report.accounts if f.flagged] == ["ACC07"]
    x = next(f for f in report.accounts if f.key == "ACC07")
    assert x.direction == "favoured" and x.extra_lots == 60
    assert x.extra_lots_expected == pytest.approx(6.0)
    assert report.blocks == report.blocks_assessed == 60
    # Its custodian's group holds the extra lot every time, so the other one never does.
    assert {f.key: f.direction for f in report.groups if f.flagged} == {
        "CUSTB": "favoured", "CUSTA": "disfavoured"}


def test_advancing_rotation_is_not_flagged(tmp_path: Path) -> None:
    db = _database(tmp_path, _accounts())
    _history(db, [10 * 100 * 3 + 100 * (1 + n % 7) for n in range(60)], _accounts(), "equal")
    report = _report(db, by="tier")
    assert report.flagged() == []
    lots = {f.key: f.extra_lots for f in report.accounts}
    # The offset moves one account per block whatever the number of extra lots, so the
    # spread is close to even, not exact.
    assert max(lots.values()) - min(lots.values()) <= 3
    assert all(f.price_bps_max_abs == 0 for f in report.accounts)
    assert len(report.spread) == 12 and all(s.minimum <= s.median <= s.maximum
                                            for s in report.spread)


def test_intended_is_the_exact_pro_rata_share(tmp_path: Path) -> None:
    """FIX_ALLOCATION 4.3's worked example: 9,950 over 5,000/4,500/3,000, lot 100."""
    accounts = tuple(engine.Account(a, "BOOK", intended_qty=D(q), nav=D(1), cash=D(10**9))
                     for a, q in (("ACC00", 5000), ("ACC01", 4500), ("ACC02", 3000)))
    db = _database(tmp_path, accounts)
    _history(db, [9950], accounts, "pro_rata")
    figures = {f.key: f for f in _report(db).accounts}
    assert figures["ACC00"].intended == "3980.00"  # 9950 * 5000 / 12500
    assert figures["ACC01"].intended == "3582.00"
    assert figures["ACC02"].received == "2400" and figures["ACC02"].intended == "2388.00"
    assert figures["ACC00"].odd_lots == 1 and figures["ACC01"].extra_lots == 1
    # The residual handed out equals the residual due, account by account in sum.
    assert sum(D(f.residual_shares) for f in figures.values()) == \
        sum(D(f.residual_due) for f in figures.values())


def test_a_replaced_allocation_counts_once(tmp_path: Path) -> None:
    db = _database(tmp_path, _accounts())
    rb = _rulebook("equal")
    first = _store(db, 0, _decide(0, 3100, _accounts(), rb, 0), rotation=0,
                   status="replaced")
    _store(db, 0, _decide(0, 3200, _accounts(), rb, 0), rotation=0, trans="1", alloc_no=2,
           ref=first)
    report = _report(db)
    assert report.blocks == 1
    assert sum(D(f.received) for f in report.accounts) == 3200


def test_allocation_in_force() -> None:
    def j(no: int, trans: str, status: str, ref: int | None = None) -> dict[str, Any]:
        return {"order_id": "O", "alloc_id": f"O-J{no}", "alloc_trans_type": trans,
                "status": status, "ref_alloc_id": f"O-J{ref}" if ref else None}

    # A Replace waiting for its P supersedes the accepted J it names.
    assert fairness.in_force([j(1, "0", "accepted"), j(2, "1", "sent", 1)])["O"][
        "alloc_id"] == "O-J2"
    # A refused Replace leaves the original in force; a pending Cancel does not remove it.
    assert fairness.in_force([j(1, "0", "accepted"), j(2, "1", "replace_refused", 1),
                              j(3, "2", "sent", 1)])["O"]["alloc_id"] == "O-J1"
    assert fairness.in_force([j(1, "0", "cancelled"), j(2, "2", "accepted", 1)]) == {}
    assert fairness.in_force([j(1, "0", "block_rejected"), j(2, "0", "accepted")])["O"][
        "alloc_id"] == "O-J2"


def test_statistics_helpers() -> None:
    assert fairness_stats.adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert fairness_stats.adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    # Equal probabilities: exactly the binomial test; unequal: the pmf sums to one.
    assert fairness_stats.poisson_binomial_pvalue(60, [0.1] * 60) < 1e-50
    assert fairness_stats.poisson_binomial_pvalue(6, [0.1] * 60) == pytest.approx(1.0)
    assert 0.05 < fairness_stats.poisson_binomial_pvalue(2, [0.1, 0.5, 0.9, 0.3, 0.2]) <= 1.0
    assert fairness_stats.poisson_binomial_pvalue(0, []) == 1.0


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n_blocks=st.integers(20, 40))
def test_fair_pro_rata_histories_stay_unflagged_and_order_free(
        tmp_path_factory: pytest.TempPathFactory, seed: int, n_blocks: int) -> None:
    rng = random.Random(seed)
    intended = [rng.randrange(1, 80) * 100 for _ in IDS]
    accounts = _accounts(intended)
    db = _database(tmp_path_factory.mktemp("prop"), accounts)
    _history(db, [rng.randrange(1000, 40000) for _ in range(n_blocks)], accounts, "pro_rata")
    history = fairness.load_history(db, START, START + dt.timedelta(days=400))
    report = fairness.analyse(history, by="custodian")
    # At alpha 0.01 with Holm across 20 tests a fair engine should hardly ever be flagged.
    assert len(report.flagged()) <= 1
    shuffled = list(history.receipts)
    rng.shuffle(shuffled)
    again = fairness.analyse(fairness.History(history.start, history.end, shuffled,
                                              history.blocks, history.not_assessed),
                             by="custodian")
    assert again == report


def test_metrics_collector_caches_and_survives_failure(tmp_path: Path) -> None:
    db = _database(tmp_path, _accounts())
    _history(db, [10 * 100 * 3 + 100] * 30, _accounts(), "equal", stuck_at=7)
    registry = CollectorRegistry()
    register_fairness_metrics(db, lambda: START + dt.timedelta(days=10), days=20,
                              registry=registry)
    text = generate_latest(registry).decode()
    assert "fixalloc_fairness_flagged_accounts 1.0" in text
    assert "fixalloc_fairness_blocks 30.0" in text
    assert "fixalloc_fairness_pvalue_min" in text

    clock = [0.0]
    collector = FairnessCollector(db, lambda: START + dt.timedelta(days=10),
                                  monotonic=lambda: clock[0])
    first = collector.refresh()
    assert first is not None and first.blocks == 30
    db.dispose()
    collector.db = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: reads fail
    clock[0] = 30.0
    assert collector.refresh() is first  # within 60 s: not even tried
    clock[0] = 61.0
    assert collector.refresh() is first  # tried, failed, the last figures stand
    assert "fixalloc_fairness_blocks 30.0" in generate_latest(_single(collector)).decode()


def _single(collector: FairnessCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_chart_and_html(tmp_path: Path) -> None:
    db = _database(tmp_path, _accounts())
    _history(db, [3100 + 100 * (n % 3) for n in range(15)], _accounts(), "equal")
    report = _report(db)
    svg = chart_svg(report.spread)
    assert svg.startswith("<svg") and "</svg>" in svg
    page = html_page(report)
    assert "<svg" in page and "ACC07" in page and report.method.split(";")[0] in page


@pytest.mark.fix
def test_cli_on_the_demo_record(demo_record: tuple[Path, dict[str, Any]], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    state, _summary = demo_record
    args = ["audit", "fairness", "--from", "2000-01-01", "--to", "2100-12-31",
            "--state-dir", str(state)]
    assert main([*args, "--by", "custodian"]) == 0
    out = capsys.readouterr().out
    assert "SMA0001" in out and "method:" in out and "groups by custodian" in out
    page, chart = tmp_path / "f.html", tmp_path / "f.png"
    assert main([*args, "--format", "html", "--out", str(page), "--chart", str(chart)]) == 0
    assert "<svg" in page.read_text() and chart.read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["blocks"] >= 1


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2024-02-30", "2024-03-01", "--from '2024-02-30' is not a date (YYYY-MM-DD)"),
    ("2024-03-02", "2024-03-01", "--from 2024-03-02 is after --to 2024-03-01"),
    ("2024-03-01", "yesterday", "--to 'yesterday' is not a date (YYYY-MM-DD)"),
])
def test_cli_bad_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str,
                       end: str, message: str) -> None:
    assert main(["audit", "fairness", "--from", start, "--to", end,
                 "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"fixalloc audit fairness: {message}\n"
