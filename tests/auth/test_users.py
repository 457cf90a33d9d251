"""Users, passwords and API tokens in the database: what is stored, what is recorded, and
that the new tables are part of the tamper-evident record."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select, text

from gateway.audit.chain_seal import seal
from gateway.audit.chain_verify import verify
from gateway.auth import passwords
from gateway.auth.roles import check_roles
from gateway.auth.users import UserError, UserStore
from gateway.persistence import auth_tables as at
from gateway.persistence.store import Database
from tests.auth.conftest import PASSWORD


@pytest.mark.real_argon2
def test_passwords_are_argon2id_hashes_with_the_production_parameters() -> None:
    stored = passwords.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and PASSWORD not in stored
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + "!")
    assert not passwords.verify_password(None, PASSWORD)  # an unknown user
    assert not passwords.verify_password("not a hash", PASSWORD)
    assert not passwords.needs_rehash(stored)
    assert stored != passwords.hash_password(PASSWORD)  # salted
    with pytest.raises(passwords.WeakPassword, match="at least 12 characters"):
        passwords.hash_password("short")
    with pytest.raises(passwords.WeakPassword, match="white space"):
        passwords.hash_password(" padded password ")


def test_roles_and_names_are_checked() -> None:
    assert check_roles(["PM", "viewer", "pm"]) == ("pm", "viewer")
    with pytest.raises(ValueError, match="unknown role boss: the roles are viewer, trader"):
        check_roles(["boss"])
    with pytest.raises(ValueError, match="at least one role"):
        check_roles([])


def test_a_token_is_stored_as_a_hash_and_works_until_revoked(db: Database) -> None:
    users = UserStore(db)
    users.add("sam", PASSWORD, ["operations"], actor="cli:root")
    token = users.create_token("sam", "nightly script", actor="cli:root", reason="cron")
    token_id, secret = token.split(".")
    with db.engine.connect() as conn:
        rows = [tuple(r) for tb in (at.users, at.api_tokens)
                for r in conn.execute(select(tb))]
        chain = conn.execute(text("SELECT row_key FROM audit_pending")).scalars().all()
    assert secret not in repr(rows) and token not in repr(chain)
    stored = next(r for r in rows if r[0] == token_id)
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    found = users.user_for_token(token)
    assert found is not None and found[0].username == "sam" and found[1] == token_id
    assert users.user_for_token(f"{token_id}.{secret[:-1]}x") is None
    assert users.user_for_token(secret) is None
    users.revoke_token("sam", token_id, actor="cli:root", reason="leaked")
    assert users.user_for_token(token) is None
    with pytest.raises(UserError, match="no live token"):
        users.revoke_token("sam", token_id, actor="cli:root")


def test_changes_are_refused_precisely_and_recorded_with_who_and_why(db: Database) -> None:
    users = UserStore(db)
    users.add("Kim", PASSWORD, ["pm"], actor="cli:root", reason="new PM")
    with pytest.raises(UserError, match="user kim exists already"):
        users.add("kim", PASSWORD, ["pm"], actor="cli:root")
    with pytest.raises(UserError, match="not a username"):
        users.add("9lives", PASSWORD, ["pm"], actor="cli:root")
    with pytest.raises(UserError, match="no user nobody"):
        users.set_enabled("nobody", False, actor="cli:root")
    users.set_roles("kim", ["pm", "compliance"], actor="cli:root", reason="covers compliance")
    users.set_password("kim", PASSWORD + "2", actor="cli:root", reason="forgot it")
    users.set_enabled("kim", False, actor="cli:root", reason="on leave")
    records = [json.loads(e["detail_json"]) for e in db.events("user_action")]
    assert [(r["actor"], r["action"], r["operation"], r["target"], r["reason"])
            for r in records] == [
        ("cli:root", "manage_users", "user.add", "user:kim", "new PM"),
        ("cli:root", "manage_users", "user.roles", "user:kim", "covers compliance"),
        ("cli:root", "manage_users", "user.passwd", "user:kim", "forgot it"),
        ("cli:root", "manage_users", "user.disable", "user:kim", "on leave")]
    assert records[1]["roles_before"] == ["pm"] and records[1]["roles"] == ["compliance", "pm"]
    assert all(e["recorded_at"] is not None for e in db.events("user_action"))
    assert PASSWORD not in json.dumps([e["detail_json"] for e in db.events()])


def test_the_users_tables_are_in_the_tamper_evident_record(db: Database) -> None:
    users = UserStore(db)
    users.add("ivy", PASSWORD, ["viewer"], actor="cli:root")
    users.create_token("ivy", "t", actor="cli:root")
    users.set_roles("ivy", ["trader"], actor="cli:root")
    seal(db)
    result = verify(db)
    assert result.ok, result.summary()
    with db.engine.connect() as conn:
        chained = set(conn.execute(text("SELECT table_name FROM audit_chain")).scalars())
    assert {"users", "api_tokens", "audit_events"} <= chained
    # An edit made outside the gateway is found and named.
    _outside(db, "UPDATE users SET roles = 'admin' WHERE username = 'ivy'")
    result = verify(db)
    assert not result.ok
    assert any(p.table == "users" and p.key == "ivy" for p in result.problems)


def _outside(db: Database, sql: str) -> None:
    """Write as the database's owner would with its own client: no audit note."""
    if db.dialect == "sqlite":
        import sqlite3

        with sqlite3.connect(db.url.split("///", 1)[1]) as lite:
            lite.execute(sql)
        return
    from sqlalchemy import create_engine

    engine = create_engine(db.url)  # a connection of its own: not armed, writes no note
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()
