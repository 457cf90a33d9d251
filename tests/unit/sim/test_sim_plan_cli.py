"""PostTradePlan validation and the `fixalloc sim broker` flags that build one."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fix.sim import cli
from gateway.fix.sim.plans import PostTradePlan
from gateway.ports import free_port
from tests.support.eventually import eventually
from tests.unit.sim.peer import GatewayPeer

ROOT = Path(__file__).resolve().parents[3]


def _plan(*flags: str) -> PostTradePlan:
    parser = argparse.ArgumentParser()
    cli.add_command(parser.add_subparsers())
    plan = cli.post_trade_plan(parser.parse_args(["sim", "broker", "--port", "1", *flags]))
    assert isinstance(plan, PostTradePlan)
    return plan


def test_the_default_plan_is_an_ordinary_broker() -> None:
    plan = _plan()
    assert plan == PostTradePlan()
    assert plan.acks and not plan.reject_block and not plan.send_as
    assert not (plan.bust_after_j or plan.correct_after_j or plan.fix42_corrections)


def test_every_flag_reaches_the_plan() -> None:
    plan = _plan("--no-ak", "--ak-delay-ms", "20", "--commission", "0.01",
                 "--missing-ak", "ACC1", "--missing-ak", "ACC2", "--mismatch", "ACC3",
                 "--mismatch", "ACC4:commission", "--status-confirm", "ACC5:3",
                 "--reject-block", "1:2", "--reject-account", "ACC6:0",
                 "--reject-replace-after-accept", "--reject-cancel-after-accept",
                 "--bust-after-j", "0", "--correct-after-j", "1:190.25",
                 "--correct-after-j", "1:190.30", "--as-move", "ACC1:ACC2:100",
                 "--fix42-corrections", "--withhold-final-p")
    assert not plan.acks and plan.ak_delay_ms == 20
    assert plan.commission_per_share == Decimal("0.01")
    assert plan.missing_ak == {"ACC1", "ACC2"}
    assert dict(plan.mismatch) == {"ACC3": "net_money", "ACC4": "commission"}
    assert dict(plan.status_confirm) == {"ACC5": "3"}
    assert dict(plan.reject_block) == {1: "2"} and dict(plan.reject_account) == {"ACC6": "0"}
    assert plan.reject_replace_after_accept and plan.reject_cancel_after_accept
    assert plan.bust_after_j == (0,)
    assert plan.correct_after_j == ((1, Decimal("190.25")), (1, Decimal("190.30")))
    assert plan.send_as and plan.as_move == ("ACC1", "ACC2", Decimal(100))
    assert plan.fix42_corrections and not plan.fix42_only and plan.withhold_final_p


@pytest.mark.parametrize("flags", [["--mismatch", "ACC1:colour"], ["--status-confirm", "A:9"],
                                   ["--reject-block", "0:1"], ["--reject-account", "ACC1"],
                                   ["--correct-after-j", "x:1"]])
def test_a_bad_flag_is_refused_with_a_reason(flags: list[str]) -> None:
    with pytest.raises(SystemExit, match="error: "):
        _plan(*flags)


def test_plan_mappings_are_read_only_copies() -> None:
    accounts = {"ACC1": "0"}
    plan = PostTradePlan(reject_account=accounts)
    accounts["ACC2"] = "0"
    assert dict(plan.reject_account) == {"ACC1": "0"}
    with pytest.raises(TypeError):
        plan.reject_account["ACC3"] = "0"  # type: ignore[index]


@pytest.mark.fix
def test_the_broker_command_plays_its_plan_and_prints_the_lifecycle(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "broker", "--port", str(port), "--fills", "2",
         "--interval-ms", "5", "--state-dir", str(tmp_path / "b"), "--mismatch", "ACC1",
         "--bust-after-j", "0"],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peer = GatewayPeer(port=port, state_dir=tmp_path / "peer")
    try:
        peer.start()
        eventually(peer.engine.is_logged_on, timeout=30, description="logged on")
        done = peer.filled("B1", Decimal(2000))
        peer.send_j("A1", done, {"ACC1": Decimal(1500), "ACC2": Decimal(500)})
        [ak1, _] = sorted(peer.wait_aks(2, "A1"), key=lambda a: a.account)
        peer.affirm(ak1.confirm_id, "2", "99")
        peer.wait_aks(3, "A1")
        eventually(lambda: any(e.fields.exec_type == "H" for e in peer.executions))
    finally:
        peer.stop()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "P   A1 status=0" in out
    assert f"AU  {ak1.confirm_id} affirm=2 reason=99" in out
    assert f"trans=1 ref={ak1.confirm_id}" in out  # the corrected AK
    assert "ER  B1 bust ref=" in out
