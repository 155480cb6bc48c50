"""Free ports for stacks started at the same time: below the ephemeral range, and reserved
so that another process does not choose them before their service binds them."""

from __future__ import annotations

import json
import multiprocessing
import socket
from dataclasses import fields
from pathlib import Path

import pytest

from omni_trace.stack import ports
from omni_trace.stack.ports import Ports, free_port, free_ports


@pytest.fixture(autouse=True)
def own_reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(ports.tempfile, "gettempdir", lambda: str(tmp_path))
    return tmp_path


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    chosen = free_ports(40)
    assert len(set(chosen)) == 40
    assert all(ports.LOWEST_PORT <= p < ports._ephemeral_start() for p in chosen)
    for port in chosen:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # released again: nothing holds it


def test_a_released_choice_is_not_chosen_again_while_reserved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The smallest range used: 16 ports per port chosen. Without the reservation two choices
    # of a stack's N ports would share about N / 16 of them.
    count = len(fields(Ports))
    monkeypatch.setattr(ports, "LOWEST_PORT", ports._ephemeral_start() - count * 16)
    first = set(Ports.free().__dict__.values())
    second = set(free_ports(count))
    assert len(first) == len(second) == count and not first & second


def test_an_ended_reservation_is_dropped() -> None:
    port = free_port()
    with ports._reservations() as held:
        held[port] = 0.0  # as if made RESERVE_S ago
    free_port()
    with ports._reservations() as held:
        assert held.get(port) != 0.0  # gone (or chosen again, now)


def test_a_damaged_reservation_file_is_read_as_none(own_reservations: Path) -> None:
    for content in ("not json", "[1, 2]", json.dumps({"x": "y"})):
        path = next(own_reservations.glob("omni-trace-ports-*.json"), None)
        if path is None:
            free_port()
            path = next(own_reservations.glob("omni-trace-ports-*.json"))
        path.write_text(content)
        assert isinstance(free_port(), int)
        assert json.loads(path.read_text())  # written back whole


def _choose(tmp: str, count: int) -> list[int]:
    ports.tempfile.gettempdir = lambda: tmp
    return free_ports(count)


def test_processes_choosing_at_once_never_share_a_port(own_reservations: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_choose, [(str(own_reservations), 48)] * 8)
    every = [p for chosen in results for p in chosen]
    assert len(every) == len(set(every)) == 8 * 48


def test_a_link_in_place_of_the_file_is_not_followed(own_reservations: Path) -> None:
    target = own_reservations / "elsewhere"
    target.write_text("{}")
    link = own_reservations / f"omni-trace-ports-{ports.os.getuid()}.json"
    link.symlink_to(target)
    with pytest.raises(OSError):
        free_port()
    assert target.read_text() == "{}"
