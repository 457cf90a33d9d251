"""Every role against every action, over real HTTP: allowed exactly where the matrix in
gateway/auth/roles.py says, refused everywhere else with a 403 that names both."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.auth.roles import ACTIONS, ROLE_ACTIONS, ROLES
from gateway.auth.users import UserStore
from gateway.persistence.store import Database
from tests.auth.conftest import ENDPOINTS, Serve, add_user

DOCS = Path(__file__).resolve().parents[2] / "docs" / "users.md"


def test_every_role_against_every_action(db: Database, serve: Serve) -> None:
    api = serve(db)
    tokens = {}
    for role in ROLES:
        add_user(db, f"u-{role}", role)
        tokens[role] = UserStore(db).create_token(f"u-{role}", "test", actor="test:setup")
    wrong = []
    for role in ROLES:
        for action in ACTIONS:
            method, path, kw, allowed_code = ENDPOINTS[action]
            resp = api.call(method, path, token=tokens[role], **kw)
            if action in ROLE_ACTIONS[role]:
                if resp.status_code != allowed_code:
                    wrong.append(f"{role}/{action}: {resp.status_code} {resp.text[:120]}")
            elif (resp.status_code, resp.json()) != (403, {
                    "detail": f"role {role} may not do action {action}", "action": action,
                    "user": f"u-{role}", "roles": [role]}):
                wrong.append(f"{role}/{action}: {resp.status_code} {resp.text[:120]}")
    assert wrong == []

    # What was done is recorded with the user as actor; what was refused as access_denied.
    done = [json.loads(e["detail_json"]) for e in db.events("user_action")
            if json.loads(e["detail_json"])["via"] == "token"]
    expected = {(f"u-{role}", action) for role in ROLES for action in ROLE_ACTIONS[role]
                if action in ("operate_allocation", "run_sweep", "reload_rules",
                              "reload_refdata", "submit_orders", "push_prices")}
    assert {(d["actor"], d["action"]) for d in done} == expected
    assert all(d["outcome"] == "done" and d["target"] for d in done)
    denied = {(json.loads(e["detail_json"])["actor"], json.loads(e["detail_json"])["action"])
              for e in db.events("access_denied")}
    assert denied == {(f"u-{role}", action) for role in ROLES for action in ACTIONS
                      if action not in ROLE_ACTIONS[role]}
    # The user's own name reaches the dispatcher, not what the request body claims.
    assert {actor for a, _id, actor, _r in api.operated if a != "submit"} == {
        "u-operations", "u-admin"}
    assert {actor for a, _id, actor, _r in api.operated if a == "submit"} == {
        "u-trader", "u-pm", "u-admin"}
    assert api.rulebooks.reloads and set(api.rulebooks.reloads) == {
        "http:u-compliance", "http:u-operations", "http:u-admin"}


def test_a_user_with_several_roles_may_do_what_any_of_them_allows(
        db: Database, serve: Serve) -> None:
    api = serve(db)
    add_user(db, "both", "pm", "operations")
    token = UserStore(db).create_token("both", "t", actor="test:setup")
    me = api.call("GET", "/me", token=token).json()
    assert me["roles"] == ["operations", "pm"] and me["via"] == "token"
    assert set(me["actions"]) == ROLE_ACTIONS["pm"] | ROLE_ACTIONS["operations"]
    assert api.call("POST", "/probe/approve", token=token).status_code == 200
    assert api.call("POST", "/rulebook/reload", token=token).status_code == 200
    resp = api.call("GET", "/users", token=token)
    assert resp.status_code == 403
    assert resp.json()["detail"] == "roles operations, pm may not do action manage_users"


def test_the_documented_matrix_is_the_one_in_force() -> None:
    """docs/users.md's table (one row per role, a mark per allowed action) = ROLE_ACTIONS."""
    lines = [ln for ln in DOCS.read_text(encoding="utf-8").splitlines()
             if ln.startswith("| ")]
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    assert header[1:] == list(ACTIONS)
    documented = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        role = cells[0].strip("`")
        if role in ROLE_ACTIONS:
            documented[role] = frozenset(a for a, c in zip(ACTIONS, cells[1:], strict=True)
                                         if c == "✓")
    assert documented == ROLE_ACTIONS
