"""`fixalloc bench fuzz`: throw mutated FIX at the gateway's sessions, then trade normally.

Everything runs as real processes and sockets on 127.0.0.1: the daemon (`python -m gateway
run`, its own process, so a crash is an exit code), the product's broker and OMS
simulators on the standard sessions (OMS1, BRKA), and two fuzzing peers on extra
sessions of the same gateway: a raw-socket OMS (OMSF, book SMA-FUZZ) and a raw-socket
broker (BRKF, which SMA-FUZZ routes to, so the fuzzing broker receives real child orders
and its fills, busts and acks reach real orders and allocations). Both peers log on
properly and keep their sequence numbers right (`gateway.fuzz_peers`), so most mutated
messages reach the gateway's parsing and application callbacks.

Message i of a peer is decided by (seed, peer, i) alone (`gateway.fuzz_mutate` for the
mutations); the identifiers filled in from the gateway's own traffic depend on timing.
After the fuzz, a normal block (OMS sim -> gateway -> broker sim) must still be allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.fuzz_counterparties import BrokerPeer, OmsPeer, save_frames
from gateway.fuzz_mutate import Mutator
from gateway.fuzz_peers import FuzzPeer
from gateway.fuzz_report import assemble, daemon_log_summary, format_report, passed
from gateway.fuzz_templates import BROKER_TEMPLATES, FUZZ_ACCOUNTS, FUZZ_BOOK, OMS_TEMPLATES
from gateway.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"
FUZZ_MAX_MESSAGE_BYTES = 65_536

def write_config(state: Path, ports: dict[str, int]) -> Path:
    """The gateway's TOML: OMS1/BRKA for the simulators, OMSF/BRKF for the fuzzing peers."""
    refdata = state / "refdata"
    refdata.mkdir(parents=True, exist_ok=True)
    accounts = (CONFIG_DIR / "accounts.csv").read_text(encoding="utf-8").rstrip("\n")
    extra = "\n".join(f"{a},{FUZZ_BOOK},active,10000000.00,2000000.00,1,1000,0.10,IRVTUS3NXXX,"
                      f"PB02,CORE,SMA-UMA,core" for a in FUZZ_ACCOUNTS)
    (refdata / "accounts.csv").write_text(f"{accounts}\n{extra}\n", encoding="utf-8")
    limits = f"max_message_bytes = {FUZZ_MAX_MESSAGE_BYTES}"
    text = f"""
[gateway]
name = "fixalloc-fuzz"
state_dir = "{state / 'gateway'}"
sqlite_synchronous = "NORMAL"

[http]
host = "127.0.0.1"
port = {ports['http']}

[fix]
sender_comp_id = "FIXALLOC"
data_dictionary = "{ROOT / 'fix_specs' / 'FIX44.xml'}"
heartbeat_seconds = 30
reconnect_seconds = 1

[[fix.oms]]
name = "OMS1"
target_comp_id = "OMS1"
port = {ports['oms']}

[[fix.oms]]
name = "OMSF"
target_comp_id = "OMSF"
port = {ports['omsf']}
max_messages_per_second = 0
{limits}

[[fix.brokers]]
name = "BRKA"
target_comp_id = "BRKA"
host = "127.0.0.1"
port = {ports['broker']}

[[fix.brokers]]
name = "BRKF"
target_comp_id = "BRKF"
host = "127.0.0.1"
port = {ports['brkf']}
{limits}

[refdata]
securities = "{CONFIG_DIR / 'securities.csv'}"
accounts = "{refdata / 'accounts.csv'}"
positions = "{CONFIG_DIR / 'positions.csv'}"
rules = "{CONFIG_DIR / 'rules'}"
watch = false

[[books]]
name = "SMA-CORE"
broker = "BRKA"

[[books]]
name = "{FUZZ_BOOK}"
broker = "BRKF"
"""
    path = state / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _http(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:
        return None


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Run:
    """The processes of one fuzz run and what is learnt about the daemon along the way."""

    def __init__(self, state: Path, say: Callable[[str], None]) -> None:
        self.state = state
        self.say = say
        self.ports = {k: free_port() for k in ("http", "oms", "omsf", "broker", "brkf")}
        self.config = write_config(state, self.ports)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.crash: dict[str, Any] | None = None
        self.hang: dict[str, Any] | None = None
        self.rss_peak = 0.0
        self.evidence: list[str] = []

    def start_daemon(self) -> None:
        log = (self.state / "daemon.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("FIXALLOC_FAULT", None)
        self.daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config),
             "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            env=env)
        log.close()

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def rss(self) -> float | None:
        return rss_mb(self.daemon.pid) if self.daemon is not None else None

    def save(self, peers: list[FuzzPeer], label: str) -> None:
        for peer in peers:
            self.evidence.append(str(save_frames(peer, self.state / "evidence", label)))


def _fuzz(run: Run, peers: list[FuzzPeer], counts: list[int], hang_seconds: float) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(n, stop), daemon=True,
                                name=f"fuzz-{p.name}") for p, n in zip(peers, counts, strict=True)]
    for peer in peers:
        peer.stall_hook = run.save
    for thread in threads:
        thread.start()
    last_total, last_change, last_say = -1, time.monotonic(), time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if not run.alive():
            assert run.daemon is not None
            run.crash = {"exit_code": run.daemon.returncode, "during": "fuzz"}
            run.say(f"  daemon exited with {run.daemon.returncode}: saving the last frames")
            stop.set()
            run.save(peers, "crash")
            break
        run.rss_peak = max(run.rss_peak, run.rss() or 0.0)
        total = sum(sum(p.stats.sent.values()) for p in peers)
        now = time.monotonic()
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change > hang_seconds:
            run.hang = {"seconds": round(now - last_change), "messages_sent": total}
            run.say(f"  no progress for {hang_seconds:.0f} s: saving the last frames")
            stop.set()
            run.save(peers, "hang")
            break
        if now - last_say > 10:
            last_say = now
            run.say(f"  {total:,} messages sent; daemon RSS {run.rss()} MB")
    for thread in threads:
        thread.join(30)


def _drain(http_port: int, say: Callable[[str], None], timeout: float = 900,
           patience: float = 60) -> dict[str, Any]:
    """Wait for the dispatcher's inbox to empty, as long as it keeps shrinking."""
    def depth() -> int | None:
        value = (_http(http_port, "/status")[1] or {}).get("inbox_depth")
        return value if isinstance(value, int) else None

    started = time.monotonic()
    first = best = depth()
    best_at = started
    if first:
        say(f"  waiting for the dispatcher: {first:,} events in its inbox")
    current = first
    while current and time.monotonic() - started < timeout:
        time.sleep(0.5)
        current = depth()
        if current is not None and (best is None or current < best):
            best, best_at = current, time.monotonic()
        elif time.monotonic() - best_at > patience:
            break
    return {"inbox_depth_after_fuzz": first, "inbox_depth_before_normal_order": current,
            "drain_seconds": round(time.monotonic() - started, 1)}


def _normal_order(run: Run, oms: Any, broker: Any, qty: int, timeout: float
                  ) -> dict[str, Any]:
    from gateway.fix.sim.oms import BlotterOrder

    order = BlotterOrder(cl_ord_id=f"FUZZ-NORMAL-{int(time.time() * 1000)}", book="SMA-CORE",
                         symbol="AAPL", side="buy", qty=Decimal(qty), ord_type="2",
                         price=Decimal("190.50"))
    out: dict[str, Any] = {"cl_ord_id": order.cl_ord_id, "qty": qty, "allocated": False}
    if not oms.engine.wait_logged_on(30) or not oms.send_order(order):
        out["error"] = "OMS simulator not logged on"
        return out
    done = oms.wait(lambda: oms.allocation_for(order.cl_ord_id) is not None or (
        (e := oms.last_execution(order.cl_ord_id)) is not None and e.ord_status == "8"), timeout)
    j = oms.allocation_for(order.cl_ord_id)
    last = oms.last_execution(order.cl_ord_id)
    if j is None:
        out["error"] = (f"rejected: {last.text}" if last is not None and last.ord_status == "8"
                        else f"no J within {timeout:.0f} s" if not done else "no J")
        return out
    allocated = sum((Decimal(str(line["qty"])) for line in j.lines), Decimal(0))
    filled = last.cum_qty if last is not None else Decimal(0)
    broker_filled = sum((o.cum_qty for o in broker.orders.values()), Decimal(0))
    out.update({"alloc_id": j.alloc_id, "accounts": len(j.lines), "filled": str(filled),
                "broker_filled": str(broker_filled), "allocated_qty": str(allocated),
                "j_quantity": str(j.quantity),
                "allocated": allocated == filled == broker_filled == j.quantity == qty})
    return out


def run_fuzz(*, messages: int, seed: int = 1, state_dir: Path | None = None,
             say: Callable[[str], None] | None = None, normal_qty: int = 20_000,
             hang_seconds: float = 120.0, sync_every: int = 25) -> dict[str, Any]:
    """One fuzz run; the result is what `fixalloc bench fuzz --json` prints.
    """
    from gateway.fix.sim.broker import BrokerSimulator, FillPlan
    from gateway.fix.sim.oms import OmsSimulator

    started = time.monotonic()
    say = say or (lambda text: None)
    state = state_dir or Path(tempfile.mkdtemp(prefix="fixalloc-fuzz-"))
    state.mkdir(parents=True, exist_ok=True)
    run = Run(state, say)
    say(f"fixalloc bench fuzz: {messages:,} messages, seed {seed}, state in {state}")
    broker = BrokerSimulator(port=run.ports["broker"], state_dir=state / "sim-broker",
                             plan=FillPlan(fills=5, interval_ms=50))
    broker.start()
    oms = OmsSimulator(port=run.ports["oms"], state_dir=state / "sim-oms")
    oms_peer = OmsPeer(name="OMSF", comp_id="OMSF", port=run.ports["omsf"], seed=seed,
                       templates={**OMS_TEMPLATES, "garbage": (None, 2)},
                       mutator=Mutator(), seq_low_share=0.0015, sync_every=sync_every)
    broker_peer = BrokerPeer(name="BRKF", comp_id="BRKF", port=run.ports["brkf"], seed=seed,
                             templates={**BROKER_TEMPLATES, "garbage": (None, 2)},
                             mutator=Mutator(header_mutations=False), seq_low_share=0.0003,
                             sync_every=sync_every)
    peers: list[FuzzPeer] = [oms_peer, broker_peer]
    result: dict[str, Any] = {"seed": seed, "messages_requested": messages,
                              "state_dir": str(state)}
    normal: dict[str, Any] = {"allocated": False, "error": "not run"}
    exit_code: int | None = None
    try:
        run.start_daemon()
        if not _wait(lambda: not run.alive() or _http(run.ports["http"], "/healthz")[0] == 200,
                     90):
            raise RuntimeError("the daemon did not serve /healthz within 90 s")
        if not run.alive():
            raise RuntimeError(f"the daemon exited at start-up ({run.daemon.returncode}); "  # type: ignore[union-attr]
                               f"see {state / 'daemon.log'}")
        oms.start()
        stop = threading.Event()
        for peer in peers:
            if not peer.ensure_session(stop, timeout=60):
                raise RuntimeError(f"fuzzing peer {peer.name} could not log on")
        if not _wait(lambda: _http(run.ports["http"], "/readyz")[0] == 200, 60):
            raise RuntimeError("the gateway's sessions did not all log on within 60 s")
        result["rss_mb_before"] = run.rss()
        say(f"  daemon pid {run.daemon.pid} ready, RSS {result['rss_mb_before']} MB")  # type: ignore[union-attr]
        fuzz_started = time.monotonic()
        _fuzz(run, peers, [messages - messages // 2, messages // 2], hang_seconds)
        result["fuzz_seconds"] = round(time.monotonic() - fuzz_started, 1)
        if run.alive():
            # Let the dispatcher catch up (its /status snapshot stops if its thread died).
            dead = daemon_log_summary(state / "daemon.log")["threads_died"]
            if not dead:
                result.update(_drain(run.ports["http"], say))
            result["rss_mb_after_fuzz"] = run.rss()
            say("  fuzz done; sending a normal block through the simulators")
            normal = _normal_order(run, oms, broker, normal_qty, 30 if dead else 120)
            result["rss_mb_after"] = run.rss()
            if not run.alive() and run.crash is None:
                run.crash = {"exit_code": run.daemon.returncode, "during": "normal order"}  # type: ignore[union-attr]
    except RuntimeError as exc:
        result["error"] = str(exc)
    finally:
        for peer in peers:
            peer.close()
        if run.daemon is not None:
            if run.daemon.poll() is None:
                run.daemon.send_signal(signal.SIGTERM)
                try:
                    exit_code = run.daemon.wait(60)
                except subprocess.TimeoutExpired:
                    run.daemon.kill()
                    exit_code = run.daemon.wait(10)
                    run.hang = run.hang or {"during": "shutdown", "seconds": 60}
                if exit_code != 0 and run.crash is None:
                    run.crash = {"exit_code": exit_code, "during": "shutdown (SIGTERM)"}
            else:
                exit_code = run.daemon.returncode
        oms.stop()
        broker.stop()
    result.update(daemon_log_summary(state / "daemon.log"))
    return assemble(result, {p.name: p.stats.as_dict() for p in peers},
                    set().union(*(p.mutator.byte_values for p in peers)), normal=normal,
                    crash=run.crash, hang=run.hang, rss_peak=run.rss_peak,
                    evidence=run.evidence, exit_code=exit_code,
                    seconds=time.monotonic() - started)


def _cmd_fuzz(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)  # noqa: T201

    result = run_fuzz(messages=args.messages, seed=args.seed,
                      state_dir=Path(args.state_dir).resolve() if args.state_dir else None,
                      say=say)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))  # noqa: T201
    else:
        print(format_report(result))  # noqa: T201
    return 0 if passed(result) else 1


def add_command(bench_subparsers: Any) -> None:
    """Register `fixalloc bench fuzz`."""
    p = bench_subparsers.add_parser(
        "fuzz", help="send mutated FIX to the gateway's sessions (daemon, simulators and two "
                     "raw peers on 127.0.0.1), then check a normal block still allocates")
    p.add_argument("--messages", type=int, required=True, help="mutated messages in total")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--state-dir", help="keep the daemon's state, log and evidence here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_fuzz)
