"""The audit log: who spied on which call, every mode with its time span (append-only JSON lines).

One JSON object per line, each with ``time`` (UTC ISO 8601) and ``event`` (``start``, ``mode``,
``stop``, ``failed``, ``refused``). The file is opened in append mode for every record, written
in one ``write`` and flushed, so a crash loses at most the record being written and never
rewrites earlier ones. Path: ``[log] audit_file`` of the config, else ``<state dir>/audit.log``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)


def audit_path(config) -> Path:
    """Where the audit log of ``config`` lives (relative paths resolve against the config's dir)."""
    from firmware.config import state_dir
    name = getattr(getattr(config, "log", None), "audit_file", "") or ""
    if not name:
        return state_dir() / "audit.log"
    return Path(config.resolve(name)) if hasattr(config, "resolve") else Path(name)


class AuditLog:
    """Appends records to ``path`` (its directory is created on first use)."""

    def __init__(self, path: str | os.PathLike, wallclock=time.time) -> None:
        self.path = Path(path)
        self._wallclock = wallclock
        self.written = 0

    def record(self, record: dict) -> None:
        """Append one record; ``time`` is added. OSError propagates (the caller logs it)."""
        now = self._wallclock()
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        entry = {"time": stamp.replace("+00:00", "Z")}
        entry.update(record)
        line = json.dumps(entry, separators=(",", ":"), sort_keys=False, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self.written += 1


def read(path: str | os.PathLike) -> Iterator[dict]:
    """The records of an audit log in order; a damaged line is reported and skipped."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                log.warning("%s:%d: not a JSON audit record, skipped", p, n)


def format_record(r: dict) -> str:
    """One line for people: time, event, who, which call, mode, why."""
    mode = r.get("mode")
    parts = [str(r.get("time", "?")), f"{r.get('event', '?'):<7}", f"user={r.get('user', '')}",
             f"spy={r.get('spy_uuid', '')}", f"target={r.get('target_uuid', r.get('target', ''))}"]
    if r.get("target_caller_id"):
        parts.append(f"caller={r['target_caller_id']}")
    if mode is not None:
        parts.append(f"mode={mode}")
    if "previous_mode" in r:
        parts.append(f"after mode {r['previous_mode']} for {r['previous_mode_ms'] / 1000:.1f} s")
    if "duration_ms" in r:
        parts.append(f"lasted {r['duration_ms'] / 1000:.1f} s")
    if r.get("reason"):
        parts.append(f"({r['reason']})")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware.audit [FILE]``: print the audit log (default: the state directory's)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else audit_path(None)
    if not path.exists():
        print(f"no audit log at {path}", file=sys.stderr)
        return 1
    for r in read(path):
        print(format_record(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
