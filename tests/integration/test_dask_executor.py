"""The engine on a Dask cluster (gateway.dask_executor): a real local cluster of two worker
processes on 127.0.0.1, shared by the module. Rebalances and allocation decisions equal the
in-process ones byte for byte; a killed worker is a clear error, not a hang; the daemon's
`[engine] scheduler` picks it; `fixalloc bench rebalance --local-cluster` reports it."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest

import engine
from engine import partition, rebalance_synthetic, synthetic
from engine.rebalance import rebalance
from gateway.cli import main
from gateway.config import load_config
from gateway.dask_executor import DaskExecutor, local_cluster
from gateway.errors import ConfigError
from gateway.node import Node
from gateway.pool import WorkerError


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The scheduler address of a 2-worker cluster (one thread each) for the module."""
    with local_cluster(2) as address:
        yield address


def test_rebalance_equals_in_process(cluster: str) -> None:
    """Each worker computes its partition's trade lists; the run equals the in-process one
    exactly, the first time (accounts sent) and the second (accounts already there)."""
    syn = rebalance_synthetic.build(300, 40, 7)
    local = rebalance(syn.request, syn.rulebook)
    with DaskExecutor(cluster, min_accounts=0) as ex:
        assert ex.partitions == 2 and len(set(ex.workers)) == 2
        assert rebalance(syn.request, syn.rulebook, ex) == local
        assert ex.rulebook_version == syn.rulebook.version
        assert rebalance(syn.request, syn.rulebook, ex) == local
    assert any(p.traded for p in local.accounts)


def test_allocation_is_byte_identical(cluster: str) -> None:
    """Decisions through the cluster's partitions have the in-process canonical bytes,
    across two rulebook/book versions; an engine error in a round reaches the caller as
    itself and leaves the partitions in step for the next decision."""
    book = synthetic.build(3000, 20, seed=11)
    other = synthetic.build(500, 10, seed=12)
    local = engine.allocate(book.request, book.rulebook).to_canonical_json()
    with DaskExecutor(cluster, min_accounts=0) as ex:
        assert engine.allocate(book.request, book.rulebook, ex).to_canonical_json() == local
        assert engine.allocate(other.request, other.rulebook, ex).to_canonical_json() == \
            engine.allocate(other.request, other.rulebook).to_canonical_json()
        assert ex.rulebook_version == other.rulebook.version
        with pytest.raises(engine.AllocationError):
            ex.call_partitions(partition.top, [("nope", 1)] * ex.partitions)
        assert engine.allocate(book.request, book.rulebook, ex).to_canonical_json() == local
    assert '"status":"excluded"' in local and '"status":"capped"' in local


def test_two_executors_on_one_cluster_keep_apart(cluster: str) -> None:
    """Each executor's partitions have their own space on a worker: two of them installing
    the same book version with different slices (2 and 1 partitions) do not mix."""
    book = synthetic.build(2000, 10, seed=5)
    local = engine.allocate(book.request, book.rulebook).to_canonical_json()
    with DaskExecutor(cluster, min_accounts=0) as two, \
            DaskExecutor(cluster, partitions=1, min_accounts=0) as one:
        assert (two.partitions, one.partitions) == (2, 1)
        for _ in range(2):
            assert engine.allocate(book.request, book.rulebook, two).to_canonical_json() \
                == local
            assert engine.allocate(book.request, book.rulebook, one).to_canonical_json() \
                == local


def test_no_scheduler_or_too_few_workers_is_a_clear_error(cluster: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WorkerError, match="cannot reach the dask scheduler"):
        DaskExecutor(f"tcp://127.0.0.1:{port}", timeout=1)
    with pytest.raises(WorkerError, match="fewer than 3 workers"):
        DaskExecutor(cluster, partitions=3, timeout=1)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_names_the_scheduler(cluster: str, tmp_path: Path) -> None:
    """`[engine] scheduler` is validated; when set the daemon's executor is a DaskExecutor
    on it; it is not part of the configuration hash (decisions do not depend on it)."""
    with pytest.raises(ConfigError, match=r"engine\.scheduler: .*not a Dask scheduler address"):
        load_config(_write(tmp_path, '[engine]\nscheduler = "127.0.0.1:8786"\n'))
    with pytest.raises(ConfigError, match=r"gateway\.workers and engine\.scheduler"):
        load_config(_write(tmp_path, '[gateway]\nworkers = 2\n[engine]\nscheduler = '
                                     '"tcp://127.0.0.1:8786"\n'))
    plain = load_config(_write(tmp_path, "[http]\nport = 8080\n"))
    cfg = load_config(_write(tmp_path, f'[http]\nport = 8080\n[engine]\nscheduler = '
                                       f'"{cluster}"\n'))
    assert cfg.engine.scheduler == cluster and plain.engine.scheduler is None
    assert cfg.config_hash() == plain.config_hash()
    ex = Node(cfg)._executor()
    try:
        assert isinstance(ex, DaskExecutor) and ex.partitions == 2
    finally:
        ex.close()


def test_bench_on_a_local_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    """The bench starts its own 2-worker cluster and finds the in-process result again."""
    assert main(["bench", "rebalance", "--local-cluster", "2", "--accounts", "200",
                 "--securities", "50", "--compare", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dask_partitions"] == 2 and out["accounts_differing_dask_vs_in_process"] == 0
    assert out["checks"]["dask_identical_to_in_process"] is True and out["ok"] is True
    assert {"dask_start_s", "dask_prepare_s", "dask_s", "in_process_s"} <= out.keys()


@pytest.mark.timeout(180)
def test_killed_worker_is_a_clear_error_then_recovers(cluster: str) -> None:
    """A worker killed while its partition runs fails the call with WorkerError (not a
    hang); the next decision re-pins to the workers there and equals in-process again."""
    book = synthetic.build(2000, 10, seed=3)
    local = engine.allocate(book.request, book.rulebook).to_canonical_json()
    with DaskExecutor(cluster, min_accounts=0) as ex, \
            distributed.Client(cluster, set_as_default=False) as client:
        assert engine.allocate(book.request, book.rulebook, ex).to_canonical_json() == local
        victim = ex.workers[1]
        pid = client.run(os.getpid, workers=[victim])[victim]
        collect = ex.start_partitions(time.sleep, [2.0] * ex.partitions)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerError, match=f"dask worker {victim}"):
            collect()
        assert engine.allocate(book.request, book.rulebook, ex).to_canonical_json() == local
        assert victim not in ex.workers
