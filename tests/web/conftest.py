"""One real gateway for the web page tests, and a real headless Chromium to drive it.

`desk` starts, once per run, the daemon in this process with its real quickfix sessions,
the product's broker and OMS simulators, and a four-eyes approval policy (the one of
tests/integration/test_approvals.py) that holds every computed split. The reference data
is the shipped SMA-CORE book (200 accounts) plus SMA-BIG, a generated book of 1,000
accounts. Users: alice and bob (pm), vera (viewer), ada (admin), carol (compliance), and
tess (compliance) who logs in with a TOTP code.

`browser` is a headless Chromium driven by Selenium through the Debian packages'
/usr/bin/chromium and /usr/bin/chromedriver, named explicitly so Selenium Manager never
downloads anything. Browser tests are skipped only when /usr/bin/chromium is missing
(scripts/dev.sh installs it).

The screenshots the tests save and the load times they measure are printed at the end of
the run.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.users import UserStore
from gateway.config import load_config
from gateway.fix.sim.broker import BrokerSimulator, FillPlan
from gateway.fix.sim.oms import BlotterOrder, OmsSimulator
from gateway.persistence.store import Database
from tests.support.approvals import FOUR_EYES
from tests.support.harness import CONFIG, Gateway, Ports, http_get, running, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NO_CHROMIUM = f"{CHROMIUM} is missing: install the Debian packages chromium and " \
              "chromium-driver (bash scripts/dev.sh does)"


BIG_RULES = """
# Restrictions of the generated SMA-BIG book (tests/web).
restrictions:
  - id: BIG-NO-TRANSITION
    version: "2"
    description: Big-book accounts in transition between vehicles take no new purchases
    kind: cel
    exclude_when: "order.side == 'buy' && account.vehicle == 'SMA-TRANSITION'"
    scope: {books: [SMA-BIG]}
"""

BIG_BOOK = "SMA-BIG"
BIG_ACCOUNTS = 1000
USERS = {"alice": ["pm"], "bob": ["pm"], "vera": ["viewer"], "ada": ["admin"],
         "carol": ["compliance"], "tess": ["compliance"]}
REPORT: dict[str, list[str]] = {"screenshots": [], "timings": []}


def password(user: str) -> str:
    return f"{user}-password-1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (Selenium)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=NO_CHROMIUM)
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)  # a pytest-xdist worker
    if out is not None:
        out["web_report"] = REPORT  # printed by the controller (tests/conftest.py)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in REPORT["timings"]:
        terminalreporter.write_line(f"web timing: {line}")
    for path in REPORT["screenshots"]:
        terminalreporter.write_line(f"web screenshot: {path}")


def write_refdata(folder: Path) -> Path:
    """The shipped reference data plus SMA-BIG: 1,000 generated accounts, a few of them
    frozen, short of cash or in transition so that some are excluded or capped."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("securities.csv", "positions.csv"):
        shutil.copy(CONFIG / name, folder / name)
    with (CONFIG / "accounts.csv").open(encoding="utf-8") as fh:
        shipped = list(csv.reader(fh))
    header = shipped[0]
    with (folder / "accounts.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerows(shipped)
        for i in range(1, BIG_ACCOUNTS + 1):
            nav = 2_000_000 + (i * 7919) % 8_000_000
            cash = 19_000 if i % 89 == 0 else nav // 5
            row = {"account_id": f"BIG{i:04d}", "book": BIG_BOOK,
                   "status": "frozen" if i % 131 == 0 else "active",
                   "nav": f"{nav}.00", "cash": f"{cash}.00", "tier": "1",
                   "intended_qty": str(100 + (i * 37) % 50 * 10), "target_weight": "0.001",
                   "custodian": "IRVTUS3NXXX", "prime_broker": f"PB0{1 + i % 3}",
                   "strategy": "CORE",
                   "vehicle": "SMA-TRANSITION" if i % 113 == 0 else "SMA-UMA",
                   "scheme": "core"}
            out.writerow([row[c] for c in header])
    rules = folder / "rules"
    shutil.copytree(CONFIG / "rules", rules)
    (rules / "30-approvals.yaml").write_text(FOUR_EYES, encoding="utf-8")
    (rules / "40-big-book.yaml").write_text(BIG_RULES, encoding="utf-8")
    return folder


@dataclass
class Desk:
    """The running gateway, its counterparties and its users."""

    root: Path
    ports: Ports
    broker: BrokerSimulator
    gateway: Gateway
    oms: OmsSimulator
    tokens: dict[str, str]
    totp_secret: str
    held_blocks: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def db(self) -> Database:
        assert self.gateway.node is not None and self.gateway.node.db is not None
        return self.gateway.node.db

    def api(self, user: str, path: str, body: Any = None, method: str = "GET"
            ) -> tuple[int, Any]:
        return http_get(self.ports.http, path, method=method, body=body,
                        headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def send(self, cl_ord_id: str, *, book: str = "SMA-CORE", qty: int = 20_000) -> None:
        assert self.oms.send_order(BlotterOrder(
            cl_ord_id=cl_ord_id, book=book, symbol="AAPL", side="buy", qty=Decimal(qty),
            price=Decimal(190)))

    def held(self, cl_ord_id: str, *, book: str = "SMA-CORE", qty: int = 20_000,
             timeout: float = 30) -> str:
        """The AllocID of the order's held allocation (the order is sent if it was not)."""
        if cl_ord_id in self.held_blocks:
            return self.held_blocks[cl_ord_id]
        if not any(o["oms_cl_ord_id"] == cl_ord_id for o in self.db.load_orders()):
            self.send(cl_ord_id, book=book, qty=qty)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            order = next((o for o in self.db.load_orders()
                          if o["oms_cl_ord_id"] == cl_ord_id), None)
            if order is not None:
                code, body = self.api("alice", "/approvals?state=pending")
                assert code == 200, body
                for a in body["approvals"]:
                    if a["order_id"] == order["order_id"]:
                        self.held_blocks[cl_ord_id] = a["alloc_id"]
                        return str(a["alloc_id"])
            time.sleep(0.1)
        raise AssertionError(f"order {cl_ord_id} was not held for approval in {timeout} s")


# Package scope, not session: the gateway must be gone before any other test file starts
# one in this process (one sweep scheduler per process; pytest-xdist runs other files after
# these in the same worker).
@pytest.fixture(scope="package")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    root = tmp_path_factory.mktemp("desk")
    refdata = write_refdata(root / "refdata")
    ports = Ports.free()
    cfg = write_config(root, ports, rules=refdata / "rules", refdata_dir=refdata, extra=f"""
[[books]]
name = "{BIG_BOOK}"
broker = "BRKA"

[auth]
cookie_secure = false
""")
    db = Database(load_config(cfg).database_url)
    db.migrate()
    users = UserStore(db)
    tokens = {}
    for name, roles in USERS.items():
        users.add(name, password(name), roles, actor="test")
        tokens[name] = users.create_token(name, "test", actor="test")
    secret = users.set_totp("tess", True, actor="test")
    assert secret is not None
    db.dispose()
    with running(root, ports, cfg, FillPlan(fills=2, interval_ms=10)) as (broker, gw, oms):
        yield Desk(root, ports, broker, gw, oms, tokens, secret)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--no-first-run", "--disable-extensions",
                "--password-store=basic", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, desk: Desk) -> Iterator[Any]:
    """The browser with no session: cookies and the page's storage cleared."""
    browser.get(f"{desk.url}/ui/login")
    browser.delete_all_cookies()
    browser.execute_script("window.sessionStorage.clear()")
    yield browser
