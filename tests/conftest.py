"""Shared fixtures. Keep this file small: helpers live in tests/peers/."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

# `tests.peers` must import however pytest was started (tests/ is not a package).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.peers import PeerGroup  # noqa: E402


@pytest.fixture
def peer_group(tmp_path: Path) -> Iterator[PeerGroup]:
    """Owns the peers a test starts: stops them all afterwards and prints their logs
    (pytest shows them only for a failed test)."""
    with PeerGroup(tmp_path) as group:
        yield group
