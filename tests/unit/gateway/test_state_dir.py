"""The state folder made private at start, even while SQLite removes its side files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.fix import store_secrets
from gateway.fix.store_secrets import secure_state_dir


def test_every_file_becomes_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "fix_store").mkdir(parents=True)
    (state / "fix_store" / "body").write_text("x")
    (state / "fixalloc.db").write_text("x")
    os.chmod(state / "fixalloc.db", 0o644)
    secure_state_dir(state)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "fix_store").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "fixalloc.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "fix_store" / "body").st_mode) == 0o600


def test_a_file_that_vanishes_after_the_listing_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart after a kill failed with FileNotFoundError on fixalloc.db-shm: SQLite
    removed it between the folder's listing and its chmod."""
    state = tmp_path / "state"
    state.mkdir()
    for name in ("fixalloc.db", "fixalloc.db-shm", "fixalloc.db-wal"):
        (state / name).write_text("x")
    real_chmod = os.chmod

    def racing_chmod(path: object, mode: int) -> None:
        if str(path).endswith("-shm"):
            Path(str(path)).unlink()  # as SQLite does when its last connection closes
        real_chmod(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(store_secrets.os, "chmod", racing_chmod)
    secure_state_dir(state)
    monkeypatch.undo()
    assert not (state / "fixalloc.db-shm").exists()
    assert stat.S_IMODE(os.stat(state / "fixalloc.db-wal").st_mode) == 0o600
