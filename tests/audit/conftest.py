"""The demo's record, made once per run: the audit commands are tried on what a new user has.

`demo_record` is the state directory of one `fixalloc demo` run (read it, never change it);
`demo_copy` is a private copy of it for a test that edits the database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def demo_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    state = tmp_path_factory.mktemp("demo-record")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--json", "--state-dir", str(state),
         "--fills", "8", "--interval-ms", "20"],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return state, json.loads(result.stdout)


@pytest.fixture
def demo_copy(demo_record: tuple[Path, dict[str, Any]], tmp_path: Path
              ) -> tuple[Path, dict[str, Any]]:
    state, summary = demo_record
    copy = tmp_path / "state"
    shutil.copytree(state, copy, ignore=shutil.ignore_patterns("*.sock", "fix_store"))
    return copy, summary
