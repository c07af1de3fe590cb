"""Drivers for real third-party SIP test peers (baresip, SIPp, kamailio) on 127.0.0.1.

Every peer is bounded in time by its own means (baresip -t, sipp -timeout, `timeout` around
kamailio) so that nothing outlives a test run, even when the test process dies.
A missing binary raises PeerMissing (an error, never a skip): the peers are part of the suite.
"""
from __future__ import annotations

import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Any, Protocol, TypeVar


class PeerError(RuntimeError):
    """A peer failed to start, answer or behave; the message carries its log tail."""


class PeerMissing(PeerError):
    """A peer's binary is not installed."""


def require(binary: str, package: str) -> str:
    """Absolute path of `binary`, or PeerMissing naming the Debian package to install."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        raise PeerMissing(f"{binary} not found: apt-get install {package} (./build.sh test does)")
    return path


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def end_process(proc: subprocess.Popen[Any] | None, grace: float = 2.0) -> None:
    """Terminate then kill one process we started (by its pid only) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


class Peer(Protocol):
    name: str
    log_path: Path

    def stop(self) -> None: ...


P = TypeVar("P", bound=Peer)


class PeerGroup:
    """Owns the peers a test starts: stops them all (last started first) and prints their log
    tails, which pytest shows only when the test failed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self._peers: list[Peer] = []

    def add(self, peer: P) -> P:
        """Take ownership of `peer` (add it before starting it) and return it."""
        self._peers.append(peer)
        return peer

    def close(self) -> None:
        errors: list[str] = []
        for peer in reversed(self._peers):
            try:
                peer.stop()
            except Exception as e:  # keep stopping the others
                errors.append(f"{peer.name}: {e!r}")
        for peer in self._peers:
            print(f"----- {peer.name} log ({peer.log_path}) -----")
            print(log_tail(peer.log_path, 80))
        self._peers.clear()
        if errors:
            raise PeerError("stopping peers failed: " + "; ".join(errors))

    def __enter__(self) -> "PeerGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
