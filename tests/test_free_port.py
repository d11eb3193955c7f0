"""``free_port``: the ports tests give the servers they start never come from the kernel's ephemeral range.

A port from the ephemeral range (bind to port 0, then close) can be taken by an outgoing connection, e.g. a Kafka
client's, before the service binds it: CI once failed with ``Address already in use`` on the analytics service of
tests/test_distributed.py this way.
"""
from __future__ import annotations

import socket

import pytest

from storelens.runtime import localdeploy
from storelens.runtime.localdeploy import free_port


def test_ports_lie_below_the_ephemeral_range_and_differ() -> None:
    low = localdeploy._ephemeral_low()
    if localdeploy._PORT_BASE + 8 * localdeploy._PORT_BLOCK > low:
        pytest.fail(f"this machine's ephemeral range starts at {low}: free_port's blocks need it above 28000")
    ports = [free_port() for _ in range(50)]
    assert all(1024 < p < low for p in ports), ports
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("worker, block", [("", 0), ("gw0", 0), ("gw1", 1), ("gw5", 5)])
def test_each_xdist_worker_has_its_own_block(monkeypatch: pytest.MonkeyPatch, worker: str, block: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    low = localdeploy._PORT_BASE + block * localdeploy._PORT_BLOCK
    assert low <= free_port() < low + localdeploy._PORT_BLOCK


def test_a_port_someone_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localdeploy, "_next_port", [])
    held = free_port()
    monkeypatch.setattr(localdeploy, "_next_port", [held - localdeploy._PORT_BASE])  # ``held`` would come next
    with socket.socket() as s:
        # as the servers bind: ``held`` may still be in TIME_WAIT from an earlier test's server, which a plain bind
        # refuses (CI failed once this way) while free_port's own check, like the servers, accepts it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", held))
        s.listen()
        given = free_port()
    assert held < given < held + localdeploy._PORT_BLOCK
