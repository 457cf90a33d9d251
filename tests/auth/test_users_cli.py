"""`fixalloc users add|passwd|totp|roles|disable|enable|list|token`, run in-process through
the real `fixalloc` entry point against a gateway config's database."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyotp
import pytest

from gateway.auth.sessions import LoginRefused, Sessions
from gateway.auth.settings import AuthSettings
from gateway.auth.users import UserStore
from gateway.cli import main
from gateway.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from gateway.persistence.store import Database
from tests.auth.conftest import PASSWORD


@pytest.fixture
def cfg(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'database_url = "{database_url}"\n', encoding="utf-8")
    return str(path)


class Cli:
    def __init__(self, cfg: str, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
        self.cfg, self.monkeypatch, self.capsys = cfg, monkeypatch, capsys

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(["users", *argv, "--config", self.cfg])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(cfg: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setattr("getpass.getuser", lambda: "root")
    return Cli(cfg, monkeypatch, capsys)


def _login(url: str, name: str, password: str, code: str | None = None) -> str:
    db = Database(url)
    try:
        return Sessions(db, UserStore(db), AuthSettings()).login(
            name, password, code, "127.0.0.1")[2].username
    finally:
        db.dispose()


def test_users_through_the_cli(cli: Cli, database_url: str) -> None:
    code, out, _ = cli("add", "alice", "--role", "pm", "--role", "compliance",
                       "--password-stdin", "--reason", "joined", stdin=f"{PASSWORD}\n")
    assert (code, out) == (EXIT_OK, "added user alice with roles compliance, pm\n"
                                    "alice logs in with a password alone (no TOTP)\n")
    assert _login(database_url, "alice", PASSWORD) == "alice"

    code, _, err = cli("add", "alice", "--role", "pm", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert (code, err) == (EXIT_FAILURE, "fixalloc users: user alice exists already\n")
    code, _, err = cli("add", "bob", "--role", "boss", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == EXIT_FAILURE and "unknown role boss" in err
    code, _, err = cli("add", "bob", "--role", "pm", "--password-stdin", stdin="short\n")
    assert code == EXIT_FAILURE and "at least 12 characters" in err
    code, _, err = cli("add", "bob", "--role", "pm")  # no terminal and no --password-stdin
    assert code == EXIT_USAGE and "--password-stdin" in err

    code, out, _ = cli("add", "bob", "--role", "operations", "--totp", "--password-stdin",
                       stdin=f"{PASSWORD}\n")
    assert code == EXIT_OK and "provisioning URI otpauth://totp/fixalloc:bob?secret=" in out
    secret = out.split("secret           ")[1].split()[0]
    with pytest.raises(LoginRefused, match="needs a TOTP code"):
        _login(database_url, "bob", PASSWORD)
    assert _login(database_url, "bob", PASSWORD, pyotp.TOTP(secret).now()) == "bob"

    code, out, _ = cli("passwd", "alice", "--password-stdin", stdin="a brand new secret\n")
    assert code == EXIT_OK and "password changed for alice" in out
    with pytest.raises(LoginRefused, match="wrong username or password"):
        _login(database_url, "alice", PASSWORD)
    assert _login(database_url, "alice", "a brand new secret") == "alice"

    code, out, _ = cli("token", "bob", "--label", "nightly")
    token = out.strip()
    assert code == EXIT_OK and token.startswith("fxt_") and "\n" not in token
    db = Database(database_url)
    try:
        found = UserStore(db).user_for_token(token)
        assert found is not None and found[0].username == "bob"
    finally:
        db.dispose()

    assert cli("roles", "bob", "--role", "viewer")[0] == EXIT_OK
    code, out, _ = cli("disable", "alice", "--reason", "left the firm")
    assert code == EXIT_OK and out.startswith("alice disabled")
    with pytest.raises(LoginRefused, match="user alice is disabled"):
        _login(database_url, "alice", "a brand new secret")

    code, out, _ = cli("list")
    assert code == EXIT_OK
    lines = [ln.split() for ln in out.splitlines()]
    assert lines[0] == ["username", "roles", "state", "totp", "tokens", "created"]
    assert [ln[:5] for ln in lines[1:]] == [
        ["alice", "compliance,pm", "disabled", "no", "0"],
        ["bob", "viewer", "enabled", "yes", "1"]]
    code, out, _ = cli("list", "--json")
    listed = json.loads(out)
    assert [u["username"] for u in listed] == ["alice", "bob"]
    assert all("password_hash" not in u and "totp_secret" not in u for u in listed)

    db = Database(database_url)
    try:
        done = [json.loads(e["detail_json"]) for e in db.events("user_action")]
    finally:
        db.dispose()
    assert [(d["actor"], d["operation"], d["target"]) for d in done] == [
        ("cli:root", "user.add", "user:alice"), ("cli:root", "user.add", "user:bob"),
        ("cli:root", "user.passwd", "user:alice"), ("cli:root", "token.create", "user:bob"),
        ("cli:root", "user.roles", "user:bob"), ("cli:root", "user.disable", "user:alice")]
    assert (done[0]["reason"], done[-1]["reason"]) == ("joined", "left the firm")
    assert token.split(".")[1] not in json.dumps(done)


def test_a_state_dir_without_a_database_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "list", "--state-dir", str(tmp_path / "none")]) == EXIT_CONFIG
    assert "no gateway database" in capsys.readouterr().err
