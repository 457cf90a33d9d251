"""POST /prices and GET /prices over real HTTP: the gateway's app (build_app) served by
uvicorn on 127.0.0.1 with a `MemoryPrices`, on a real (SQLite) database holding the users
whose API tokens the requests carry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from gateway.auth import passwords
from gateway.auth.roles import ACTIONS, ROLE_ACTIONS
from gateway.auth.users import UserStore
from gateway.http import HttpServer, build_app
from gateway.persistence.store import Database
from gateway.reference_prices import MemoryPrices

MACHINE_TOKEN = "feed-machine-token-123"
ROLES = ("viewer", "trader", "pm", "compliance", "operations", "admin")
T0 = "2026-11-30T15:59:30Z"
AAPL = {"symbol": "AAPL", "last": "190.25", "bid": "190.24", "ask": "190.26", "as_of": T0}


Users = tuple[Database, dict[str, str]]


@dataclass
class Gateway:
    prices: MemoryPrices | None
    db: Database
    http: httpx.Client
    tokens: dict[str, str]

    def push(self, body: Any, *, token: str | None = MACHINE_TOKEN) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post("/prices", content=raw, headers=headers)

    def held(self, *, token: str = MACHINE_TOKEN) -> dict[str, Any]:
        resp = self.http.get("/prices", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


@pytest.fixture(scope="module")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    """One migrated database with a user (and an API token) per role, for the module."""
    path = tmp_path_factory.mktemp("prices") / "fixalloc.db"
    db = Database(f"sqlite:///{path}", sqlite_synchronous="OFF", pool_size=4)
    db.migrate()
    tokens = {}
    with pytest.MonkeyPatch.context() as mp:  # argon2 at its cheapest: these are test users
        mp.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                        parallelism=1))
        store = UserStore(db)
        for role in ROLES:
            store.add(f"u-{role}", "correct horse battery", [role], actor="test:setup")
            tokens[role] = store.create_token(f"u-{role}", "feed", actor="test:setup")
    yield db, tokens
    db.dispose()


def _serve(users_db: Users, prices: MemoryPrices | None) -> Iterator[Gateway]:
    db, tokens = users_db
    app = build_app(status=lambda **_kw: {}, ready=lambda: (True, []), db=db,
                    api_token=MACHINE_TOKEN, prices=prices)
    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30)
    try:
        yield Gateway(prices, db, http, tokens)
    finally:
        http.close()
        server.stop()


@pytest.fixture
def gw(users_db: Users) -> Iterator[Gateway]:
    yield from _serve(users_db, MemoryPrices())


@pytest.fixture
def no_prices(users_db: Users) -> Iterator[Gateway]:
    yield from _serve(users_db, None)


def _push_events(db: Database) -> list[dict[str, Any]]:
    return [d for d in (json.loads(e["detail_json"]) for e in db.events("user_action"))
            if d["action"] == "push_prices"]


def test_pushed_quotes_are_held_exactly_and_shown_by_symbol(gw: Gateway) -> None:
    before = len(_push_events(gw.db))
    # JSON numbers are read as Decimals: 12 decimal places survive (a float keeps ~17
    # significant digits, so this would come back as 123456789.12345679).
    raw = (b'{"source": "feed-a", "quotes": ['
           b'{"symbol": "MSFT", "last": 123456789.123456789012, '
           b'"as_of": "2026-11-30T10:59:30-05:00"},'
           + json.dumps(AAPL).encode() + b"]}")
    resp = gw.push(raw)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 2, "ignored_older": 0, "symbols": ["AAPL", "MSFT"]}

    assert gw.held() == {"count": 2, "quotes": [
        {"symbol": "AAPL", "last": "190.25", "bid": "190.24", "ask": "190.26",
         "as_of": "2026-11-30T15:59:30+00:00", "source": "http:feed-a"},
        {"symbol": "MSFT", "last": "123456789.123456789012", "bid": None, "ask": None,
         "as_of": "2026-11-30T10:59:30-05:00", "source": "http:feed-a"}]}
    assert gw.prices is not None
    msft = gw.prices.quote("MSFT")
    assert msft is not None and msft.last == Decimal("123456789.123456789012")
    assert isinstance(msft.last, Decimal)

    # The default source; prices written with an exponent or trailing zeros are held as
    # the plain numbers they are (the engine's range check reads the exponent).
    resp = gw.push({"quotes": [{"symbol": "BRK.A", "last": "7.2E+5",
                                "bid": 719999.5, "ask": "720000.500000000000000000",
                                "as_of": T0}]})
    assert resp.status_code == 200, resp.text
    brk = gw.prices.quote("BRK.A")
    assert brk is not None and brk.source == "http:push"
    assert (str(brk.last), str(brk.bid), str(brk.ask)) == ("720000", "719999.5", "720000.5")

    # Each push is on record with who made it and what it did.
    events = _push_events(gw.db)[before:]
    assert [(e["actor"], e["outcome"], e["result"]) for e in events] == [
        ("machine", "done", {"source": "http:feed-a", "accepted": 2, "ignored_older": 0}),
        ("machine", "done", {"source": "http:push", "accepted": 1, "ignored_older": 0})]
    assert events[0]["target"] == "prices:MSFT,AAPL"

    # The request's schema is still documented (the route reads its own JSON).
    spec = gw.http.get("/openapi.json").json()
    body_ref = spec["paths"]["/prices"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["$ref"]
    assert body_ref.endswith("/PushRequest")


def test_an_older_quote_is_ignored_and_counted(gw: Gateway) -> None:
    assert gw.push({"quotes": [AAPL]}).json()["accepted"] == 1
    older = {**AAPL, "last": "180", "bid": None, "ask": None, "as_of": "2026-11-30T15:59:00Z"}
    same_time = {**AAPL, "last": "181"}
    msft = {"symbol": "MSFT", "last": "415.5", "as_of": "2026-11-30T15:58:00Z"}
    resp = gw.push({"quotes": [older, msft]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 1, "ignored_older": 1, "symbols": ["MSFT"]}
    # A quote as old as the one held does not replace it either.
    assert gw.push({"quotes": [same_time]}).json() == {
        "accepted": 0, "ignored_older": 1, "symbols": []}
    held = {q["symbol"]: q for q in gw.held()["quotes"]}
    assert held["AAPL"]["last"] == "190.25" and held["AAPL"]["as_of"] == "2026-11-30T15:59:30+00:00"

    newer = {**AAPL, "last": "191", "as_of": "2026-11-30T16:00:00Z"}
    assert gw.push({"quotes": [newer]}).json() == {
        "accepted": 1, "ignored_older": 0, "symbols": ["AAPL"]}
    assert {q["symbol"]: q["last"] for q in gw.held()["quotes"]} == {
        "AAPL": "191", "MSFT": "415.5"}


def _q(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**AAPL, **changes}.items() if v is not None}


BAD: list[tuple[str, Any, tuple[Any, ...], str]] = [
    # (case, body, where the error is (loc), what its message says)
    ("bid without ask", {"quotes": [_q(ask=None)]}, ("body", "quotes", 0),
     "AAPL: give both bid and ask, or neither"),
    ("bid above ask", {"quotes": [_q(bid="190.30")]}, ("body", "quotes", 0),
     "AAPL: bid 190.30 is above ask 190.26"),
    ("naive as_of", {"quotes": [_q(as_of="2026-11-30T15:59:30")]},
     ("body", "quotes", 0, "as_of"), "timezone info"),
    ("as_of as a number", {"quotes": [_q(as_of=1796053170)]},
     ("body", "quotes", 0, "as_of"), "ISO 8601"),
    ("negative price", {"quotes": [_q(last="-190.25")]}, ("body", "quotes", 0, "last"),
     "greater than 0"),
    ("zero bid", {"quotes": [_q(bid=0)]}, ("body", "quotes", 0, "bid"), "greater than 0"),
    ("float-looking digits", b'{"quotes": [{"symbol": "AAPL", "last": 190.1234567890123456789,'
     b' "as_of": "2026-11-30T15:59:30Z"}]}', ("body", "quotes", 0, "last"),
     "no more than 12 decimal places"),
    ("too many places as text", {"quotes": [_q(ask="190.2600000000001")]},
     ("body", "quotes", 0, "ask"), "no more than 12 decimal places"),
    ("price of 10^12", {"quotes": [_q(last=1e12)]}, ("body", "quotes", 0, "last"),
     "less than 1E+12"),
    ("NaN", b'{"quotes": [{"symbol": "AAPL", "last": NaN, "as_of": "2026-11-30T15:59:30Z"}]}',
     ("body", "quotes", 0, "last"), "finite number"),
    ("price as words", {"quotes": [_q(last="190 and a quarter")]},
     ("body", "quotes", 0, "last"), "valid decimal"),
    ("duplicate symbol", {"quotes": [AAPL, _q(last="191")]}, ("body", "quotes"),
     "symbol given twice in one request: ['AAPL']"),
    ("unknown field", {"quotes": [_q(px="190.25")]}, ("body", "quotes", 0, "px"),
     "Extra inputs are not permitted"),
    ("unknown top-level field", {"quotes": [AAPL], "feed": "x"}, ("body", "feed"),
     "Extra inputs are not permitted"),
    ("source not an id", {"quotes": [AAPL], "source": "my feed!"}, ("body", "source"),
     "should match pattern"),
    ("no quotes", {"quotes": []}, ("body", "quotes"), "at least 1 item"),
    ("empty symbol", {"quotes": [_q(symbol="")]}, ("body", "quotes", 0, "symbol"),
     "at least 1 character"),
]


@pytest.mark.parametrize(("body", "loc", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_a_bad_push_is_refused_naming_the_problem(gw: Gateway, body: Any,
                                                  loc: tuple[Any, ...], message: str) -> None:
    # A good quote beside the bad one: a refused request keeps nothing.
    good = {"symbol": "ZZZZ", "last": "1", "as_of": T0}
    if isinstance(body, dict):
        body = {**body, "quotes": [*body["quotes"], good]} if body["quotes"] else body
    resp = gw.push(body)
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]
    assert any(tuple(e["loc"]) == loc and message in e["msg"] for e in errors), errors
    if loc[-1] == "last" and isinstance(body, bytes):
        # The refused input is shown as it was sent, not as the float JSON readers make.
        [error] = errors
        assert error["input"] in ("190.1234567890123456789", "NaN"), error
    assert gw.prices is not None and gw.prices.symbols() == []


def test_only_a_role_with_push_prices_may_push(gw: Gateway) -> None:
    assert gw.prices is not None
    for role in ("viewer", "trader", "pm", "compliance"):
        resp = gw.push({"quotes": [AAPL]}, token=gw.tokens[role])
        assert resp.status_code == 403, resp.text
        assert resp.json()["detail"] == f"role {role} may not do action push_prices"
        assert resp.json()["action"] == "push_prices"
        # Reading them is `view`, which every role has.
        assert gw.held(token=gw.tokens[role]) == {"count": 0, "quotes": []}
    assert gw.prices.symbols() == []
    assert gw.push({"quotes": [AAPL]}, token=None).status_code == 401

    resp = gw.push({"quotes": [AAPL], "source": "ops-feed"}, token=gw.tokens["operations"])
    assert resp.status_code == 200, resp.text
    later = {**AAPL, "as_of": "2026-11-30T16:00:00Z"}
    assert gw.push({"quotes": [later]}, token=gw.tokens["admin"]).json()["accepted"] == 1
    held = gw.prices.quote("AAPL")
    assert held is not None and held.source == "http:push"
    actors = [e["actor"] for e in _push_events(gw.db)[-2:]]
    assert actors == ["u-operations", "u-admin"]


def test_an_oversized_body_is_refused_before_it_is_read(gw: Gateway) -> None:
    resp = gw.push(b'{"quotes": [' + b" " * (9 * 1024 * 1024) + b"]}")
    assert resp.status_code == 413, resp.text
    assert gw.prices is not None and gw.prices.symbols() == []


def test_without_a_price_store_both_answer_503(no_prices: Gateway) -> None:
    resp = no_prices.push({"quotes": [AAPL]})
    assert resp.status_code == 503
    assert resp.json() == {"detail": "reference prices are not kept on this gateway"}
    resp = no_prices.http.get("/prices", headers={"Authorization": f"Bearer {MACHINE_TOKEN}"})
    assert resp.status_code == 503 and "not kept" in resp.json()["detail"]


def test_the_roles_matrix_has_push_prices_for_operations_only() -> None:
    # admin holds every action by construction (roles.py); of the other roles, operations only.
    assert "push_prices" in ACTIONS
    assert {r for r, allowed in ROLE_ACTIONS.items() if "push_prices" in allowed} == {
        "operations", "admin"}


def test_a_quote_stamped_ahead_of_the_gateway_clock_is_refused(gw: Gateway) -> None:
    # Held, it would stay the newest and every real quote after it would be ignored.
    ahead = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    resp = gw.push({"quotes": [{**AAPL, "symbol": "FUT", "as_of": ahead}]})
    assert resp.status_code == 422
    assert "ahead of the gateway's clock for FUT" in resp.text
    assert gw.prices is not None and gw.prices.quote("FUT") is None
    # Within the tolerance (clocks a little apart) it is taken.
    near = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()
    resp = gw.push({"quotes": [{**AAPL, "symbol": "NEAR", "as_of": near}]})
    assert resp.status_code == 200 and resp.json()["accepted"] == 1
