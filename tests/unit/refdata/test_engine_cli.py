from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import engine_cli

CONFIG = Path(__file__).resolve().parents[3] / "config"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = engine_cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_allocate_demo_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo AAPL buy allocates all 500,000 shares with explained exclusions."""
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"block_id": "DEMO-1", "symbol": "AAPL", "side": "buy",
                                 "qty": 500000, "book": "SMA-CORE", "limit_px": "190.00",
                                 "trade_date": "2024-06-03"}))
    argv = ["allocate", "--config", str(CONFIG), "--order", str(order),
            "--decided-at", "2024-06-03T20:00:00+00:00"]
    rc, out, _ = run(argv, capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["allocated_qty"] == d["executed_qty"] == "500000"
    status = {r["account_id"]: r["status"] for r in d["results"]}
    assert status["SMA0007"] == status["SMA0034"] == status["SMA0077"] == "excluded"
    assert status["SMA0042"] == status["SMA0055"] == "capped"
    assert run(argv, capsys)[1] == out  # byte-identical on a second run


def test_allocate_with_fills_uses_their_average_price(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fills set executed quantity and a Decimal average price rounded once."""
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"block_id": "B2", "symbol": "AAPL", "side": "buy",
                                 "qty": 10000, "book": "SMA-CORE", "trade_date": "2024-06-03"}))
    fills = tmp_path / "fills.json"
    fills.write_text(json.dumps([{"exec_id": "1", "qty": 3000, "px": "190.00"},
                                 {"exec_id": "2", "qty": 1000, "px": "190.25"},
                                 {"exec_id": "2", "qty": 1000, "px": "190.25"}]))
    rc, out, _ = run(["allocate", "--config", str(CONFIG), "--order", str(order),
                      "--fills", str(fills)], capsys)
    assert rc == 0
    d = json.loads(out)
    assert d["executed_qty"] == "4000" and d["avg_px"] == "190.0625"  # 4 places, as on the J


def test_allocate_bad_input_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An order without a price is refused with exit code 2 and a single error line."""
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"block_id": "B", "symbol": "AAPL", "side": "buy", "qty": 1,
                                 "book": "SMA-CORE", "trade_date": "2024-06-03"}))
    rc, out, err = run(["allocate", "--config", str(CONFIG), "--order", str(order)], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "limit_px" in err


def test_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rules check prints the version for a good rulebook and file:line for a bad one."""
    rc, out, _ = run(["rules", "check", str(CONFIG / "rules")], capsys)
    assert rc == 0 and out.startswith("ok ") and "restrictions=10" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemes:\n  core:\n    method: lottery\n")
    rc, _, err = run(["rules", "check", str(bad)], capsys)
    assert rc == 2 and f"{bad}:3: schemes.core.method" in err
