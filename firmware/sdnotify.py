"""A minimal sd_notify client: one datagram to $NOTIFY_SOCKET (systemd's protocol, no libsystemd).

Without $NOTIFY_SOCKET (a PC, the tests) every call is a no-op that returns False.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send e.g. ``notify("READY=1", "STATUS=serving")``; True when a socket took it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WatchdogSec (the period to ping at), or None when systemd is not watching us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
