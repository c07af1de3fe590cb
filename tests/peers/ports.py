"""Free loopback ports for test peers.

Every port handed out is remembered for the life of the process, so peers started one after the
other in the same test run never get the same port, even before they have bound it. Ports are
checked by binding them (UDP and TCP) on 127.0.0.1. The search starts at an offset derived from
the pid, so two pytest processes on one machine rarely probe the same ports. All pools lie below
the kernel's ephemeral range (32768+), so client sockets of other programs do not take them.
"""
from __future__ import annotations

import os
import socket
import threading

HOST = "127.0.0.1"

# Signalling / control ports (SIP, ctrl_tcp, kamailio) and RTP ranges come from separate pools.
SIGNAL_POOL = (20000, 27999)
RTP_POOL = (10000, 19999)

_lock = threading.Lock()
_taken: set[int] = set()


def _can_bind(port: int, kind: int) -> bool:
    s = socket.socket(socket.AF_INET, kind)
    try:
        # No SO_REUSEADDR: a port in TIME_WAIT or held by anyone counts as busy.
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _is_free(port: int, udp: bool, tcp: bool) -> bool:
    if port in _taken:
        return False
    if udp and not _can_bind(port, socket.SOCK_DGRAM):
        return False
    if tcp and not _can_bind(port, socket.SOCK_STREAM):
        return False
    return True


def _search(pool: tuple[int, int], span: int, step: int, udp: bool, tcp: bool) -> int:
    lo, hi = pool
    slots = (hi - lo + 1 - span) // step
    if slots <= 0:
        raise ValueError(f"span {span} does not fit the pool {lo}-{hi}")
    start = (os.getpid() * 7919) % slots
    with _lock:
        for i in range(slots):
            base = lo + ((start + i) % slots) * step
            block = range(base, base + span)
            if all(_is_free(p, udp, tcp) for p in block):
                _taken.update(block)
                return base
    raise RuntimeError(f"no {span} free port(s) left in {lo}-{hi}")


def free_port(span: int = 1, *, udp: bool = True, tcp: bool = True) -> int:
    """First port of `span` consecutive ports free for UDP and TCP on 127.0.0.1.

    baresip needs span=2 (it binds SIP/TLS on port+1). The ports are reserved for this process.
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    # Even bases keep spans of 2 from interleaving with each other.
    return _search(SIGNAL_POOL, span, 2 if span <= 2 else span, udp, tcp)


def rtp_range(count: int = 20) -> tuple[int, int]:
    """An (inclusive) range of `count` UDP ports for RTP/RTCP, e.g. for `rtp_ports lo-hi`."""
    if count < 2 or count % 2:
        raise ValueError(f"RTP range needs an even count >= 2, got {count}")
    base = _search(RTP_POOL, count, count, True, False)
    return base, base + count - 1
