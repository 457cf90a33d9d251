from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway import refdata
from gateway.rulebook_registry import RulebookRegistry, RulebookVersionRecord
from tests.support.eventually import eventually

CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(CONFIG / "rules", d)
    return d


def test_file_edit_is_live_within_one_second(rules_dir: Path) -> None:
    """Editing a rule file activates the new version within a second and reports it.

    The second is measured from the edit, once the watcher says it is subscribed.
    """
    seen: list[RulebookVersionRecord] = []
    reg = RulebookRegistry(rules_dir, seen.append)
    first = reg.current().version
    reg.start_watching()
    try:
        assert reg.wait_watching(5), "the watcher never subscribed"
        f = rules_dir / "10-book-restrictions.yaml"
        f.write_text(f.read_text().replace("max_pct_nav: 10", "max_pct_nav: 12"))
        eventually(lambda: reg.current().version != first, timeout=1.0,
                   description="the edited rulebook is live")
    finally:
        reg.stop()
    assert [r.actor for r in seen] == ["startup", "file-watch"]
    assert "CORE-ISSUER-10" in seen[-1].diff_summary
    cap = next(r for r in reg.current().restrictions if r.id == "CORE-ISSUER-10")
    assert str(cap.max_pct_nav) == "12"


def test_bad_edit_is_refused_and_previous_version_stays(rules_dir: Path) -> None:
    """A broken file raises file:line and the running rulebook is unchanged."""
    reg = RulebookRegistry(rules_dir)
    before = reg.current()
    f = rules_dir / "20-account-restrictions.yaml"
    f.write_text(f.read_text().replace("max_pct_nav: 3", "max_pct_nav: 300"))
    with pytest.raises(refdata.RefDataError) as err:
        reg.reload("ops")
    assert err.value.file.endswith("20-account-restrictions.yaml")
    assert "must be at most 100" in str(err.value)
    assert reg.current() is before
    assert reg.last_error is not None


def test_bad_edit_seen_by_the_watcher_keeps_the_old_version(rules_dir: Path) -> None:
    """The watcher records the error and does not swap in a broken rulebook."""
    reg = RulebookRegistry(rules_dir)
    before = reg.current()
    reg.start_watching()
    try:
        assert reg.wait_watching(5), "the watcher never subscribed"
        (rules_dir / "30-broken.yaml").write_text("restrictions:\n  - id: X\n    kind: nope\n")
        eventually(lambda: reg.last_error is not None, timeout=1.0,
                   description="the watcher refused the broken file")
    finally:
        reg.stop()
    assert reg.current() is before
    assert "30-broken.yaml:2" in (reg.last_error or "")
