from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import pytest

import engine
from engine import partition, synthetic
from engine.executor import account_slices
from gateway.pool import ProcessPoolExecutorAdapter


def test_pool_gives_byte_identical_decisions() -> None:
    """Two forkserver workers produce exactly the in-process decision, across versions."""
    book = synthetic.build(3000, 20, seed=11)
    local = engine.allocate(book.request, book.rulebook).to_canonical_json()
    other = synthetic.build(500, 10, seed=12)
    with ProcessPoolExecutorAdapter(2, min_accounts=0) as pool:
        remote = engine.allocate(book.request, book.rulebook, pool).to_canonical_json()
        assert pool.rulebook_version == book.rulebook.version
        # A second rulebook version is shipped to fresh workers, then back again.
        assert engine.allocate(other.request, other.rulebook, pool).to_canonical_json() == \
            engine.allocate(other.request, other.rulebook).to_canonical_json()
        assert pool.rulebook_version == other.rulebook.version
        again = engine.allocate(book.request, book.rulebook, pool).to_canonical_json()
    assert remote == local == again
    assert '"status":"excluded"' in local and '"status":"capped"' in local


def test_small_books_stay_in_process() -> None:
    """Below the threshold the pool is not used, so its rulebook is never installed."""
    book = synthetic.build(50, 5, seed=3)
    with ProcessPoolExecutorAdapter(1) as pool:
        engine.allocate(book.request, book.rulebook, pool)
        assert pool.rulebook_version is None


def test_engine_imports_no_io_or_gateway_modules() -> None:
    """Importing the engine pulls in none of the daemon's I/O stack."""
    code = ("import sys, engine; bad = [m for m in ('quickfix', 'sqlalchemy', 'structlog', "
            "'apscheduler', 'pydantic', 'gateway', 'yaml') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_hosted_partition_shares_the_process_with_in_process_decisions() -> None:
    """The pool runs partition 0 in this process; its books, caches and errors stay apart
    from the in-process executor's and from another pool's."""
    book = synthetic.build(2000, 10, seed=5)
    local = engine.allocate(book.request, book.rulebook).to_canonical_json()
    with ProcessPoolExecutorAdapter(2, min_accounts=0) as two, \
            ProcessPoolExecutorAdapter(3, min_accounts=0) as three:
        for _ in range(2):
            assert engine.allocate(book.request, book.rulebook, two).to_canonical_json() == local
            assert engine.allocate(book.request, book.rulebook).to_canonical_json() == local
            assert engine.allocate(book.request, book.rulebook, three).to_canonical_json() \
                == local
        # A failing round (no such session) fails in every partition, and the pipes stay in
        # step for the next decision.
        with pytest.raises(engine.AllocationError):
            two.call_partitions(partition.top, [("nope", 1)] * two.partitions)
        assert engine.allocate(book.request, book.rulebook, two).to_canonical_json() == local


def test_account_slices_cover_the_book_in_order() -> None:
    accounts = synthetic.build(101, 1, seed=2).request.accounts
    for parts, first in ((1, None), (2, None), (3, None), (2, (117, 217)), (3, (117, 317)),
                         (2, (0, 1)), (2, (1, 1))):
        slices = account_slices("v", accounts, parts, first)
        assert len(slices) == parts
        assert tuple(a for _v, _lo, part in slices for a in part) == accounts
        assert [lo for _v, lo, _p in slices] == list(itertools.accumulate(
            [0] + [len(p) for _v, _lo, p in slices[:-1]]))
    assert len(account_slices("v", accounts, 2, (117, 217))[0][2]) == 101 * 117 // 217


def test_a_space_is_per_thread() -> None:
    """While a pool runs its hosted partition, other threads still see the default books."""
    partition.run_in_space("probe", partition.install_accounts, ("v-probe", 0, ()))
    seen: list[list[str]] = []

    def probe(_arg: None) -> list[str]:
        t = threading.Thread(target=lambda: seen.append(partition.installed_books()))
        t.start()
        t.join()
        return partition.installed_books()

    try:
        assert partition.run_in_space("probe", probe, None) == ["v-probe"]
        assert seen and "v-probe" not in seen[0]
    finally:
        partition.drop_space("probe")
    assert "v-probe" not in partition.installed_books()
