"""FreeSWITCH mod_db on sqlite3: realm / key / value rows that survive restarts.

The API strings are mod_db's (``db_api_function``): ``insert`` and ``delete`` answer ``+OK``,
``select`` the value or "" for a missing key, ``exists`` ``true``/``false``, ``count`` the number of
realms (or of keys in one realm), ``list`` the realms (or one realm's keys) comma-separated, and
any syntax error ``!err!``. Arguments split on ``/`` into at most four parts, so a value may
itself contain slashes. Unlike mod_db, select does not cut values at 255 characters.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

ERR = "!err!"
OK = "+OK"
APP_USAGE = "[insert|delete]/<realm>/<key>/<val>"

_SCHEMA = """
create table if not exists db_data (
    realm    text not null,
    data_key text not null,
    data     text not null,
    primary key (realm, data_key)
)
"""


def split_args(text: str, parts: int = 4) -> list[str]:
    """mod_db's switch_separate_string on '/': at most ``parts`` fields, the last keeps the rest."""
    text = text.strip()
    return text.split("/", parts - 1) if text else []


class Db:
    """One sqlite file (or ``:memory:``); every write is committed at once."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit: each statement is durable when it returns (the spymap must survive a power cut)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute(_SCHEMA)

    @classmethod
    def default_path(cls) -> Path:
        from firmware.config import state_dir
        return state_dir() / "db.sqlite"

    def close(self) -> None:
        self._conn.close()

    # --- typed operations --------------------------------------------------------------------------

    def insert(self, realm: str, key: str, value: str) -> None:
        # delete + insert like mod_db, so the row moves to the end of the listing order
        with self._conn:
            self._conn.execute("delete from db_data where realm=? and data_key=?", (realm, key))
            self._conn.execute("insert into db_data (realm, data_key, data) values (?, ?, ?)", (realm, key, value))

    def delete(self, realm: str, key: str) -> None:
        self._conn.execute("delete from db_data where realm=? and data_key=?", (realm, key))

    def select(self, realm: str, key: str) -> str | None:
        row = self._conn.execute("select data from db_data where realm=? and data_key=?", (realm, key)).fetchone()
        return row[0] if row else None

    def exists(self, realm: str, key: str) -> bool:
        return self.select(realm, key) not in (None, "")

    def count(self, realm: str | None = None) -> int:
        if realm is None:
            return self._conn.execute("select count(distinct realm) from db_data").fetchone()[0]
        return self._conn.execute("select count(data_key) from db_data where realm=?", (realm,)).fetchone()[0]

    def list(self, realm: str | None = None) -> list[str]:
        if realm is None:
            rows = self._conn.execute("select realm from db_data group by realm order by min(rowid)")
        else:
            rows = self._conn.execute("select data_key from db_data where realm=? order by rowid", (realm,))
        return [r[0] for r in rows]

    # --- FreeSWITCH's string interfaces ------------------------------------------------------------

    def api(self, args: str) -> str:
        """The ``db`` API (``${db(select/realm/key)}``, ``api db …``): mod_db's exact answers."""
        argv = split_args(args)
        if not argv:
            return ERR
        op, rest = argv[0].lower(), argv[1:]
        if op == "insert":
            if len(rest) < 3:
                return ERR
            self.insert(rest[0], rest[1], rest[2])
            return OK
        if op == "delete":
            if len(rest) < 2:
                return ERR
            self.delete(rest[0], rest[1])
            return OK
        if op == "select":
            if len(rest) < 2:
                return ERR
            return self.select(rest[0], rest[1]) or ""
        if op == "exists":
            if len(rest) < 2:
                return ERR
            return "true" if self.exists(rest[0], rest[1]) else "false"
        if op in ("count", "list"):
            if len(rest) > 1:
                return ERR
            realm = rest[0] if rest else None
            return str(self.count(realm)) if op == "count" else ",".join(self.list(realm))
        return ERR

    def app(self, args: str) -> None:
        """The ``db`` application: only insert/realm/key/value and delete/realm/key (ValueError otherwise)."""
        argv = split_args(args)
        op = argv[0].lower() if argv else ""
        if op == "insert" and len(argv) == 4:
            self.insert(argv[1], argv[2], argv[3])
        elif op == "delete" and len(argv) >= 3:
            self.delete(argv[1], argv[2])
        else:
            raise ValueError(f"usage: db {APP_USAGE} (got {args!r})")
