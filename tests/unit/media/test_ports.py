"""firmware.media.ports: the RTP/RTCP port-pair allocator."""
from __future__ import annotations

import pytest

from firmware.media.ports import PortAllocator, PortsExhausted


def test_pairs_are_even_rtp_ports_with_rtcp_above_within_the_range() -> None:
    ports = PortAllocator(16385, 16395)          # odd low end: first pair is 16386/16387
    got = [ports.allocate() for _ in range(ports.capacity)]
    assert got == [16386, 16388, 16390, 16392, 16394] and ports.capacity == 5
    assert all(p % 2 == 0 and p + 1 <= 16395 for p in got)


def test_exhaustion_is_a_clear_error_and_release_makes_room() -> None:
    ports = PortAllocator(20000, 20003)
    a, b = ports.allocate(), ports.allocate()
    with pytest.raises(PortsExhausted, match="20000-20003.*2 pairs"):
        ports.allocate()
    ports.release(a)
    assert ports.allocate() == a and ports.in_use == 2
    ports.release(a)
    ports.release(b)
    assert ports.available == ports.capacity and ports.in_use == 0


def test_freed_pair_is_reused_last() -> None:
    ports = PortAllocator(20000, 20007)
    first = ports.allocate()
    ports.release(first)
    assert [ports.allocate() for _ in range(4)] == [20002, 20004, 20006, first]


def test_release_of_a_port_not_taken_is_a_value_error() -> None:
    ports = PortAllocator(20000, 20007)
    with pytest.raises(ValueError, match="20002 was not allocated"):
        ports.release(20002)
    p = ports.allocate()
    ports.release(p)
    with pytest.raises(ValueError):
        ports.release(p)                        # twice


@pytest.mark.parametrize("low, high", [(100, 2000), (3000, 3000), (3001, 3002), (60000, 70000)])
def test_bad_ranges_are_value_errors(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator(low, high)


def test_from_config_spec() -> None:
    assert PortAllocator.from_spec("16384-16999").capacity == 308
    with pytest.raises(ValueError, match="16384-16999"):
        PortAllocator.from_spec("16384:16999")
