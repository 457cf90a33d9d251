from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from typing import Any

import pytest

import engine
from engine import canonical, rounds, synthetic, table
from gateway.pool import ProcessPoolExecutorAdapter


def _variants() -> list[tuple[str, engine.AllocationRequest, engine.Rulebook]]:
    book = synthetic.build(1500, 12, seed=5)
    req, rb = book.request, book.rulebook

    def with_scheme(scheme: dict[str, Any], extra: tuple[dict[str, Any], ...] = ()
                    ) -> engine.Rulebook:
        return engine.Rulebook.from_mapping(
            {"schemes": {"core": scheme},
             "restrictions": list(rb.content["restrictions"]) + list(extra)}, "t")

    mins = ({"id": "MIN-N", "version": "1", "description": "notional", "kind": "min_allocation",
             "min_notional": "150000.50", "scope": {"books": ["BOOK-001", "BOOK-002"]}},)
    return [
        ("buy", req, rb),
        ("rotation", dataclasses.replace(req, rotation_offset=17),
         with_scheme({"method": "pro_rata", "tie_break": "rotation"})),
        ("sell", dataclasses.replace(req, side=engine.Side.SELL, executed_qty=D(50037)),
         with_scheme({"method": "pro_rata", "lot_relief": "hifo", "wash_sale_days": 400})),
        ("min-notional", dataclasses.replace(req, executed_qty=D(2_000_037)),
         with_scheme({"method": "pro_rata"}, mins)),
        ("target-weight", req, with_scheme({"method": "target_weight"})),
        ("tiered", req, with_scheme({"method": "tiered", "sub_method": "pari_passu"}, mins)),
        ("over-capped", dataclasses.replace(req, executed_qty=D(123_456_789)), rb),
    ]


VARIANTS = _variants()


@pytest.mark.parametrize(("name", "req", "rb"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_distributed_split_matches_the_reference_split(
        name: str, req: engine.AllocationRequest, rb: engine.Rulebook,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The split run over partitions equals engine.split run on all participants at once."""
    distributed = engine.allocate(req, rb).to_canonical_json()
    monkeypatch.setattr(rounds, "MAX_CLIP_ROUNDS", 0)  # every flat split goes serial
    assert engine.allocate(req, rb).to_canonical_json() == distributed


@pytest.mark.parametrize(("name", "req", "rb"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_column_json_equals_the_objects(name: str, req: engine.AllocationRequest,
                                        rb: engine.Rulebook) -> None:
    """Canonical JSON read from the columns equals the JSON of the built objects."""
    decision = engine.allocate(req, rb)
    fast = decision.to_canonical_json()
    assert canonical.dumps(decision.to_json()) == fast
    results = tuple(decision.results)
    assert decision.results == results and len(results) == len(req.accounts)
    assert [r.account_id for r in results] == sorted(a.account_id for a in req.accounts)


def test_check_decision_reads_the_columns() -> None:
    decision = engine.allocate(VARIANTS[0][1], VARIANTS[0][2])
    cols = decision.results.columns  # type: ignore[attr-defined]
    assert isinstance(cols, table.DecisionColumns)
    i = table.line_index(cols)[0]
    bad_qty = list(cols.qty)
    bad_qty[i] += 1
    bad = dataclasses.replace(cols, qty=bad_qty)
    broken = dataclasses.replace(decision, lines=table.lines_table(bad, decision.avg_px),
                                 results=table.results_table(bad))
    with pytest.raises(engine.InvariantViolation):
        engine.check_decision(broken)


def test_pool_matches_in_process_on_every_variant() -> None:
    with ProcessPoolExecutorAdapter(2, min_accounts=0) as pool:
        for _name, req, rb in VARIANTS:
            assert engine.allocate(req, rb, pool).to_canonical_json() == \
                engine.allocate(req, rb).to_canonical_json()
            intent = engine.OrderIntent(req.block_id, req.symbol, req.side, req.executed_qty,
                                        req.avg_px)
            assert engine.evaluate_eligibility(intent, req.accounts, req.securities, rb, pool) \
                == engine.evaluate_eligibility(intent, req.accounts, req.securities, rb)


def test_prepare_accounts_installs_a_book_once() -> None:
    """A book prepared when reference data loads is not sent again by the first block."""
    req, rb = VARIANTS[0][1], VARIANTS[0][2]
    with ProcessPoolExecutorAdapter(2, min_accounts=0) as pool:
        engine.prepare_accounts(req.accounts, pool)
        installed = list(pool._books)
        assert len(installed) == 1
        engine.allocate(req, rb, pool)
        assert list(pool._books) == installed


def test_a_decision_pickles_and_copies_as_tuples() -> None:
    import copy
    import pickle

    decision = engine.allocate(VARIANTS[0][1], VARIANTS[0][2])
    for other in (pickle.loads(pickle.dumps(decision)), copy.deepcopy(decision)):
        assert isinstance(other.results, tuple) and isinstance(other.lines, tuple)
        assert other.to_canonical_json() == decision.to_canonical_json()
