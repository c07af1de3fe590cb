"""RTP port allocation over the configured range: an even RTP port and the odd RTCP port above it.

Pairs are handed out round-robin, so a port just freed is the last to be reused and late packets
of an ended call do not land in a new one.
"""
from __future__ import annotations

from collections import deque


class PortsExhausted(RuntimeError):
    """Every RTP/RTCP port pair of the range is in use."""


class PortAllocator:
    """Even/odd port pairs within ``[low, high]`` (both inclusive, as in ``rtp_ports``)."""

    def __init__(self, low: int, high: int) -> None:
        if not (isinstance(low, int) and isinstance(high, int) and 1024 <= low < high <= 65535):
            raise ValueError(f"RTP port range must be LOW-HIGH within 1024-65535, got {low}-{high}")
        first = low + (low & 1)                      # RTP ports are even
        self.low, self.high = low, high
        self._free: deque[int] = deque(range(first, high, 2))   # p + 1 <= high
        if not self._free:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        self.capacity = len(self._free)
        self._used: set[int] = set()

    @classmethod
    def from_spec(cls, spec: str) -> PortAllocator:
        """From the config's ``"16384-16999"`` form."""
        lo, sep, hi = spec.partition("-")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise ValueError(f"RTP port range must look like 16384-16999, got {spec!r}")
        return cls(int(lo), int(hi))

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        """An RTP port (even; RTCP is the next one up); ``PortsExhausted`` when none is free."""
        if not self._free:
            raise PortsExhausted(f"no free RTP port pair in {self.low}-{self.high}: all "
                                 f"{self.capacity} pairs are in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Return a pair taken by ``allocate`` (``ValueError`` if it was not taken)."""
        if port not in self._used:
            raise ValueError(f"RTP port {port} was not allocated from {self.low}-{self.high}")
        self._used.remove(port)
        self._free.append(port)

    def __repr__(self) -> str:
        return f"PortAllocator({self.low}-{self.high}, {self.in_use}/{self.capacity} in use)"
