"""The gateway's real HTTP app (build_app) served by uvicorn on 127.0.0.1, on a real
database (SQLite and PostgreSQL), with the dispatcher's and the registries' parts played
by small stand-ins that answer at once.

argon2 is slowed down on purpose (64 MiB, 3 passes); the tests hash with the same
algorithm at its cheapest, except those marked `real_argon2`, so the set stays fast.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import Depends
from sqlalchemy import create_engine, text

from gateway.auth import passwords
from gateway.auth.roles import ACTIONS
from gateway.auth.settings import AuthSettings
from gateway.auth.users import UserStore
from gateway.http import HttpServer, build_app
from gateway.persistence.store import Database
from gateway.reference_prices import MemoryPrices
from tests.support.postgres import create_database

PASSWORD = "correct horse battery"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_argon2: hash with the production parameters")


@pytest.fixture(autouse=True)
def fast_argon2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("real_argon2"):
        return
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", cheap)
    monkeypatch.setattr(passwords, "_DUMMY", cheap.hash("dummy"))


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Per backend, a database migrated once (made on first use) that each test copies:
    running the twelve migrations per test cost about 0.4 s each."""
    return {"sqlite_dir": str(tmp_path_factory.mktemp("auth-template"))}


def _copy_of_migrated(url: str, templates: dict[str, str],
                      request: pytest.FixtureRequest) -> None:
    if url.startswith("sqlite"):
        template = Path(templates["sqlite_dir"]) / "template.db"
        if not template.exists():
            made = Database(f"sqlite:///{template}")
            made.migrate()
            made.dispose()  # the last connection closed: everything is in the main file
        shutil.copyfile(template, url.split("///", 1)[1])
        return
    admin = request.getfixturevalue("pg_admin_url")
    name = url.rsplit("/", 1)[1]
    if "pg" not in templates:
        templates["pg"] = f"{name}_template"
        made = Database(create_database(admin, templates["pg"]))
        made.migrate()
        made.dispose()
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{templates["pg"]}"'))
    engine.dispose()


@pytest.fixture
def db(database_url: str, migrated: dict[str, str],
       request: pytest.FixtureRequest) -> Iterator[Database]:
    _copy_of_migrated(database_url, migrated, request)
    database = Database(database_url, sqlite_synchronous="OFF", pool_size=4)
    database.migrate()  # at head already: checks the copy, changes nothing
    yield database
    database.dispose()


class Refused(Exception):
    pass


@dataclass
class FakeRegistry:
    """A live file set's registry: reload always succeeds with a new version."""

    name: str
    reloads: list[str] = field(default_factory=list)
    refused: type[Exception] = Refused
    history: tuple[Any, ...] = ()
    last_error: str | None = None
    activation: str = "staged"
    staged: Any = None
    securities: tuple[str, ...] = ()
    accounts_by_book: dict[str, Any] = field(default_factory=dict)

    def current(self) -> Any:
        return SimpleNamespace(version=f"{self.name}-v{len(self.reloads)}", securities=(),
                               accounts_by_book={})

    def reload(self, actor: str) -> Any:
        self.reloads.append(actor)
        return SimpleNamespace(version=f"{self.name}-v{len(self.reloads)}",
                               diff_summary="changed")


@dataclass
class Api:
    """One served app and a client of it; `as_user` etc. make requests as someone."""

    port: int
    db: Database
    server: HttpServer
    operated: list[tuple[str, str, str, str]]
    rulebooks: FakeRegistry
    refdata: FakeRegistry
    sweeps: list[Any]
    http: httpx.Client  # no cookies kept: a test that logs in keeps its own (browser)

    def browser(self) -> httpx.Client:
        """A client that keeps cookies, as a browser would (closed with the server)."""
        client = httpx.Client(base_url=self.http.base_url, timeout=10)
        self.server_clients.append(client)
        return client

    server_clients: list[httpx.Client] = field(default_factory=list)

    def call(self, method: str, path: str, *, token: str | None = None,
             **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self.http.cookies.clear()
        return self.http.request(method, path, headers=headers, **kw)


Serve = Callable[..., Api]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """serve(db, api_token=None, **auth settings) -> Api; every server stops at teardown."""
    servers: list[HttpServer] = []
    apis: list[Api] = []

    def start(db: Database, *, api_token: str | None = None, **settings: Any) -> Api:
        operated: list[tuple[str, str, str, str]] = []
        sweeps: list[Any] = []
        rulebooks, refdata = FakeRegistry("rules"), FakeRegistry("refdata")

        def operate(action: str, alloc_id: str, actor: str, reason: str) -> dict[str, Any]:
            operated.append((action, alloc_id, actor, reason))
            return {"result": action, "actor": actor}

        def submit(orders: Any, actor: str) -> list[dict[str, Any]]:
            operated.extend(("submit", o["cl_ord_id"], actor, "") for o in orders)
            return [{"cl_ord_id": o["cl_ord_id"], "status": "pending_new"} for o in orders]

        def run_sweep(checkpoint: str, day: Any) -> dict[str, Any]:
            sweeps.append((checkpoint, day))
            return {"ran_at": datetime.now(UTC).isoformat()}

        app = build_app(status=lambda **_kw: {"status": "ok"}, ready=lambda: (True, []),
                        db=db, rulebooks=rulebooks, refdata=refdata, api_token=api_token,
                        run_sweep=run_sweep, operate=operate, submit_orders=submit,
                        prices=MemoryPrices(),
                        auth=AuthSettings(**{"cookie_secure": False, **settings}))
        guard = app.state.guard
        # The approval gate's actions have no endpoint of their own yet: stand-ins that
        # need exactly that action, through the same dependency.
        for action in ("approve", "reject", "override"):
            app.post(f"/probe/{action}", dependencies=[Depends(guard.needs(action))])(
                lambda: {"ok": True})
        server = HttpServer(app, "127.0.0.1", 0)
        server.start()
        servers.append(server)
        # One client per server: making an httpx.Client costs about 50 ms (its TLS context).
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10)
        apis.append(Api(server.port, db, server, operated, rulebooks, refdata, sweeps, http))
        return apis[-1]

    yield start
    for api in apis:
        for client in (api.http, *api.server_clients):
            client.close()
    for server in servers:
        server.stop()


# Per action: a request that needs it, and the answer it gets when allowed.
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "view": ("GET", "/status", {}, 200),
    "whatif": ("GET", "/rulebook/staged/whatif", {}, 404),  # allowed: nothing is staged
    "approve": ("POST", "/probe/approve", {}, 200),
    "reject": ("POST", "/probe/reject", {}, 200),
    "override": ("POST", "/probe/override", {}, 200),
    "submit_orders": ("POST", "/orders", {"json": {"orders": [{
        "cl_ord_id": "B1", "book": "SMA-CORE", "symbol": "AAPL", "side": "buy", "qty": "100"}]}},
        200),
    "operate_allocation": ("POST", "/allocations/A1/resend",
                           {"json": {"reason": "broker asked"}}, 200),
    "run_sweep": ("POST", "/sweep/run", {"json": {"at": "19:00", "date": "2026-11-20"}}, 200),
    "reload_rules": ("POST", "/rulebook/reload", {}, 200),
    "reload_refdata": ("POST", "/refdata/reload", {}, 200),
    "push_prices": ("POST", "/prices", {"json": {"quotes": [{
        "symbol": "AAPL", "last": "190.25", "as_of": "2026-11-30T15:59:30Z"}]}}, 200),
    "manage_users": ("GET", "/users", {}, 200),
}
assert set(ENDPOINTS) == set(ACTIONS), "every action needs a request in the table"


def add_user(db: Database, name: str, *roles: str, totp: bool = False) -> str | None:
    return UserStore(db).add(name, PASSWORD, roles, actor="test:setup", totp=totp)
