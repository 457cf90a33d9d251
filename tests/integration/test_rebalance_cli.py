"""`fixalloc rebalance` end to end, in-process: the shipped config and model, the outputs,
the run record, determinism, and bad input refused with file:line and exit 78."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.errors import EXIT_CONFIG, EXIT_USAGE
from gateway.reference import ReferenceData

CONFIG = Path(__file__).resolve().parents[2] / "config"
ARGS = ["--config", str(CONFIG), "--model", "core-growth", "--trade-date", "2024-06-03"]


def test_shipped_model_writes_trade_list_blocks_and_run_record(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["rebalance", *ARGS, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "blocks.csv", "blocks.json", "run.json", "trades.csv", "trades.json"]
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "core-growth" and len(run["model_version"]) == 64
    assert run["refdata_version"] == ReferenceData.load(
        load_config(CONFIG / "fixalloc.toml")).version
    assert run["accounts"] == 200 and run["trades"] > 0
    trades = json.loads((out / "trades.json").read_text())
    rows = list(csv.DictReader((out / "trades.csv").open()))
    assert len(rows) == len(trades["rows"]) == run["rows"]
    assert all(r["reason_code"] and r["reason"] for r in rows)
    by = {(r["account_id"], r["symbol"]): r for r in rows}
    assert by["SMA0021", "MO"]["reason_code"] == "EXCLUDED_ESG_TAG"   # client no-tobacco
    assert by["SMA0007", "AAPL"]["reason_code"].startswith("ACCOUNT_")
    assert by["SMA0001", "LMT"]["rule_id"] == "CORE-NO-WEAPONS"
    blocks = json.loads((out / "blocks.json").read_text())
    for b in blocks:
        assert sum(int(p["qty"]) for p in b["preallocations"]) == int(b["qty"])
    traded = sum(1 for r in rows if r["status"] == "traded")
    assert traded == sum(len(b["preallocations"]) for b in blocks)


def test_same_inputs_same_bytes_and_account_filter(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    args = [*ARGS, "--accounts", "SMA0003,SMA0001", "SMA0021"]
    assert main(["rebalance", *args, "--out", str(a)]) == 0
    assert main(["rebalance", *args, "--out", str(b), "--workers", "2"]) == 0
    for name in ("trades.json", "trades.csv", "blocks.json", "run.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    run = json.loads((a / "run.json").read_text())
    assert run["accounts"] == 3 and run["accounts_filter"] == ["SMA0001", "SMA0003", "SMA0021"]


def test_bad_model_is_refused_with_file_and_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    text = (CONFIG / "models" / "core-growth.yaml").read_text()
    bad.write_text(text.replace('AAPL: "9.5"', "AAPL: 9.5"))
    assert main(["rebalance", "--config", str(CONFIG), "--model", str(bad), "--out",
                 str(tmp_path / "o")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith("AAPL"))
    assert f"bad.yaml:{line}: targets.AAPL: must be an integer or a quoted decimal" in err
    assert not (tmp_path / "o").exists()


def test_bad_reference_data_and_unknown_account(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(CONFIG, cfg, ignore=shutil.ignore_patterns("*.db*", "state*"))
    lines = (cfg / "securities.csv").read_text().splitlines()
    lines[2] = lines[2].replace("420.00", "abc")
    (cfg / "securities.csv").write_text("\n".join(lines) + "\n")
    assert main(["rebalance", "--config", str(cfg), "--model", "core-growth",
                 "--out", str(tmp_path / "o")]) == EXIT_CONFIG
    assert "securities.csv:3: `price` is not a number" in capsys.readouterr().err
    assert main(["rebalance", *ARGS, "--accounts", "NOPE", "--out",
                 str(tmp_path / "o")]) == EXIT_USAGE
    assert "unknown account 'NOPE'" in capsys.readouterr().err


def test_bench_rebalance_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "rebalance", "--accounts", "40", "--securities", "30",
                 "--workers", "2", "--compare", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checks"]["pool_identical_to_in_process"] is True
    assert out["rows"] >= 40 * 30 * 0.9


def test_send_to_a_gateway_that_is_not_there_fails_with_the_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["rebalance", *ARGS, "--out", str(tmp_path / "out"), "--send", url]) == 1
    err = capsys.readouterr().err
    assert f"--send: {url}: ConnectError" in err
    assert not (tmp_path / "out" / "sent.json").exists()
    assert (tmp_path / "out" / "blocks.json").exists()  # the run itself is written first


CROSSING = """crossing:
  enabled: true
  description: Cross opposite rebalance interest at the last sale
  price_rule: last
  max_price_age_seconds: 300
"""


def _crossing_config(tmp_path: Path, price: str = "190.25") -> tuple[Path, Path]:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "rules" / "40-crossing.yaml").write_text(CROSSING, encoding="utf-8")
    prices = tmp_path / "prices.csv"
    prices.write_text("symbol,last,bid,ask,as_of\n"
                      f"AAPL,{price},190.20,190.30,2024-06-03T14:30:00+00:00\n", encoding="utf-8")
    return config, prices


def _args(config: Path) -> list[str]:
    return ["--config", str(config), "--model", "core-growth", "--trade-date", "2024-06-03"]


def test_opposite_interest_is_crossed_at_the_last_sale_and_only_the_net_is_routed(
        tmp_path: Path) -> None:
    config, prices = _crossing_config(tmp_path)
    plain, crossed = tmp_path / "plain", tmp_path / "crossed"
    assert main(["rebalance", *_args(config), "--out", str(plain)]) == 0
    assert main(["rebalance", *_args(config), "--out", str(crossed), "--prices", str(prices),
                 "--as-of", "2024-06-03T14:31:00+00:00"]) == 0
    before = {b["block_id"].split("-", 2)[2]: b for b in json.loads(
        (plain / "blocks.json").read_text())}
    after = {b["block_id"].split("-", 2)[2]: b for b in json.loads(
        (crossed / "blocks.json").read_text())}
    assert "AAPL-SELL" in before and before["AAPL-SELL"]["qty"] == "200"
    assert "AAPL-SELL" not in after  # the whole sell crossed
    assert int(after["AAPL-BUY"]["qty"]) == int(before["AAPL-BUY"]["qty"]) - 200
    crossing = json.loads((crossed / "crossing.json").read_text())
    [cross] = crossing["crosses"]
    assert (cross["symbol"], cross["qty"], cross["price"], cross["price_rule"]) == (
        "AAPL", "200", "190.25", "last")
    rows = list(csv.DictReader((crossed / "crosses.csv").open()))
    assert sum(int(r["qty"]) for r in rows if r["side"] == "buy") == 200
    assert [(r["account_id"], r["qty"]) for r in rows if r["side"] == "sell"] == [
        (before["AAPL-SELL"]["preallocations"][0]["account_id"], "200")]
    # Per account: what it crossed plus what is routed is what its trade list asked for.
    routed = {p["account_id"]: int(p["qty"]) for p in after["AAPL-BUY"]["preallocations"]}
    for p in before["AAPL-BUY"]["preallocations"]:
        got = routed.get(p["account_id"], 0) + sum(
            int(r["qty"]) for r in rows if r["account_id"] == p["account_id"])
        assert got == int(p["qty"])
    run = json.loads((crossed / "run.json").read_text())
    assert run["crossed_qty"] == "200" and run["prices_version"]["file"] == "prices.csv"
    assert run["prices_version"]["as_of"] == "2024-06-03T14:31:00+00:00"


def test_a_stale_price_refuses_the_cross_and_routes_both_blocks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, prices = _crossing_config(tmp_path)
    out = tmp_path / "out"
    assert main(["rebalance", *_args(config), "--out", str(out), "--prices", str(prices),
                 "--as-of", "2024-06-03T15:30:00+00:00"]) == 0
    assert "not crossed AAPL: STALE_PRICE" in capsys.readouterr().out
    ids = [b["block_id"] for b in json.loads((out / "blocks.json").read_text())]
    assert any(i.endswith("AAPL-SELL") for i in ids) and any(i.endswith("AAPL-BUY") for i in ids)
    [refusal] = json.loads((out / "crossing.json").read_text())["refusals"]
    assert refusal["code"] == "STALE_PRICE"


def test_a_bad_price_file_is_refused_with_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, prices = _crossing_config(tmp_path, price="abc")
    assert main(["rebalance", *_args(config), "--out", str(tmp_path / "o"), "--prices",
                 str(prices), "--as-of", "2024-06-03T14:31:00+00:00"]) == EXIT_CONFIG
    assert f"{prices}:2:" in capsys.readouterr().err
    assert main(["rebalance", *_args(config), "--out", str(tmp_path / "o"), "--prices",
                 str(prices), "--as-of", "yesterday"]) == EXIT_USAGE
