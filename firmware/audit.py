"""The audit log: who spied on which call, every mode with its time span — an append-only sqlite file.

One row per record with ``time`` (UTC ISO 8601), ``event`` (``start``, ``mode``, ``stop``, ``failed``,
``refused``), the spy, user, target and mode as columns, and the whole record as JSON. Triggers refuse
UPDATE and DELETE, so the log can only grow; each record is its own transaction (a crash loses at most
the record being written). Mode records carry how long the previous mode lasted; stop records the
session's length. Path: ``[log] audit_file`` of the config, else ``<state dir>/audit.sqlite``.
``python -m firmware audit [FILE]`` prints it.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    event TEXT NOT NULL,
    spy_uuid TEXT, user TEXT, target_uuid TEXT, mode INTEGER,
    record TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def audit_path(config) -> Path:
    """Where the audit log of ``config`` lives (relative paths resolve against the config's dir)."""
    from firmware.config import state_dir
    name = getattr(getattr(config, "log", None), "audit_file", "") or ""
    if not name:
        return state_dir() / "audit.sqlite"
    return Path(config.resolve(name)) if hasattr(config, "resolve") else Path(name)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: every record its own transaction
    db.executescript(_SCHEMA)
    return db


class AuditLog:
    """Appends records to the sqlite file at ``path`` (its directory is created on first use)."""

    def __init__(self, path: str | os.PathLike, wallclock=time.time) -> None:
        self.path = Path(path)
        self._wallclock = wallclock
        self._db: sqlite3.Connection | None = None
        self.written = 0

    def record(self, record: dict) -> None:
        """Append one record; ``time`` is added. OSError/sqlite3.Error propagate (the caller logs them)."""
        now = self._wallclock()
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
        entry = {"time": stamp.replace("+00:00", "Z")}
        entry.update(record)
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(self.path)
        self._db.execute(
            "INSERT INTO audit (time, event, spy_uuid, user, target_uuid, mode, record) VALUES (?,?,?,?,?,?,?)",
            (entry["time"], str(entry.get("event", "")), entry.get("spy_uuid"), entry.get("user"),
             entry.get("target_uuid", entry.get("target")), entry.get("mode"),
             json.dumps(entry, separators=(",", ":"), default=str)))
        self.written += 1

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def read(path: str | os.PathLike) -> Iterator[dict]:
    """The records of an audit log in order (nothing when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        for (text,) in db.execute("SELECT record FROM audit ORDER BY id"):
            yield json.loads(text)
    finally:
        db.close()


def format_record(r: dict) -> str:
    """One line for people: time, event, supervisor, agent and far party, mode by role, durations,
    why; then the uuids (for matching with the event log)."""
    parts = [str(r.get("time", "?")), f"{r.get('event', '?'):<7}", f"supervisor={r.get('user', '')}"]
    for key, label in (("agent", "agent"), ("far_party", "far")):
        if r.get(key):
            name = r.get(key + "_name") or ""
            parts.append(f"{label}={r[key]}" + (f' "{name}"' if name and name != r[key] else ""))
    if not r.get("agent") and r.get("target_caller_id"):
        parts.append(f"caller={r['target_caller_id']}")
    if r.get("mode_role"):
        parts.append(f"mode={r['mode_role']}")
    elif r.get("mode") is not None:
        parts.append(f"mode={r['mode']}")
    if "target_secure" in r:
        call = r.get("target_secure") and (r.get("peer_secure") or not r.get("peer_uuid"))
        parts.append(f"srtp call={'yes' if call else 'no'} spy={'yes' if r.get('spy_secure') else 'no'}")
    if "previous_mode" in r:
        parts.append(f"after {r.get('previous_mode_role') or 'mode %s' % r['previous_mode']} "
                     f"for {r['previous_mode_ms'] / 1000:.1f} s")
    if "duration_ms" in r:
        parts.append(f"lasted {r['duration_ms'] / 1000:.1f} s")
    if r.get("reason"):
        parts.append(f"({r['reason']})")
    parts.append(f"spy={r.get('spy_uuid', '')} target={r.get('target_uuid', r.get('target', ''))}")
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
