"""Shared fixtures. Keep this file small: helpers live in tests/peers/."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.fixture(scope="session")
def staged_install() -> Iterator[Path]:
    """`./build.sh install --root R` once per run: R is what a Pi gets. R lies in a world-readable
    directory (pytest's own tmp is root-only) so its firmware can also run as an unprivileged user."""
    base = Path(tempfile.mkdtemp(prefix="earshot-staged-"))
    base.chmod(0o755)
    root = base / "root"
    try:
        r = subprocess.run([str(Path(_ROOT) / "build.sh"), "install", "--root", str(root)], cwd=_ROOT,
                           capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                           env=dict(os.environ))
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"installed under {root}" in r.stderr
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)
