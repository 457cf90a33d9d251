"""Free ports: below the ephemeral range, never twice, and within the process's slice."""

from __future__ import annotations

import socket

import pytest

from gateway import ports


def test_slices_are_disjoint_and_ports_come_from_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, set[int]] = {}
    for index in range(3):
        monkeypatch.setenv("FIXALLOC_PORT_SLICE", f"{index}/3")
        low, high = ports._range()
        chosen = {ports.free_port() for _ in range(20)}
        assert all(low <= p <= high for p in chosen)
        seen[index] = chosen
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    bounds = []
    for index in range(3):
        monkeypatch.setenv("FIXALLOC_PORT_SLICE", f"{index}/3")
        bounds.append(ports._range())
    assert bounds[0][1] < bounds[1][0] and bounds[1][1] < bounds[2][0]


def test_a_port_given_is_bindable_and_not_given_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIXALLOC_PORT_SLICE", raising=False)
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == 50
    with socket.socket() as s:
        s.bind(("127.0.0.1", chosen[0]))


@pytest.mark.parametrize("text", ["2", "a/b", "2/2", "-1/2"])
def test_a_bad_slice_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("FIXALLOC_PORT_SLICE", text)
    with pytest.raises(RuntimeError, match="FIXALLOC_PORT_SLICE"):
        ports.free_port()
