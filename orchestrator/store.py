"""The SQLite store in the state directory: policy overrides, worker history,
last-synced snapshot metadata.

The supervisor is its only writer (the API asks the supervisor, which writes);
every write is one transaction, so a crash never leaves half a policy. The
schema is versioned with ``PRAGMA user_version`` and migrated forward at open,
one step at a time, from the first version on.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.settings import ContainerPolicy

# Each entry moves the schema from version i to i + 1. Never edit a released step: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE policies (
        container TEXT PRIMARY KEY,
        policy TEXT NOT NULL,          -- ContainerPolicy as JSON (only the keys set)
        updated REAL NOT NULL
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        container TEXT NOT NULL,
        event TEXT NOT NULL,           -- start, stop, exit, resync, pause, resume, policy, error
        code INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX history_container ON history (container, id);
    CREATE TABLE snapshots (
        container TEXT NOT NULL,
        mount TEXT NOT NULL,
        ts REAL NOT NULL,
        meta TEXT NOT NULL,            -- JSON: entries, bytes, latest mtime, file name
        PRIMARY KEY (container, mount)
    );
    """,
)

HISTORY_KEEP = 1000  # rows kept per container


@dataclass(frozen=True)
class HistoryRow:
    ts: float
    container: str
    event: str
    code: int | None
    detail: str


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def close(self) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {current}, newer than this tandem knows ({len(MIGRATIONS)})"
            )
        for version in range(current, len(MIGRATIONS)):
            with self._tx() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- policies ------------------------------------------------------------------

    def policies(self) -> dict[str, ContainerPolicy]:
        rows = self.db.execute("SELECT container, policy FROM policies").fetchall()
        return {name: ContainerPolicy.model_validate_json(text) for name, text in rows}

    def set_policy(self, container: str, policy: ContainerPolicy) -> None:
        text = policy.model_dump_json(exclude_none=True, by_alias=True)
        with self._tx() as db:
            db.execute(
                "INSERT INTO policies (container, policy, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (container) DO UPDATE SET policy = excluded.policy, updated = excluded.updated",
                (container, text, time.time()),
            )
            self._record(db, container, "policy", None, text)

    def delete_policy(self, container: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM policies WHERE container = ?", (container,)).rowcount > 0
            if gone:
                self._record(db, container, "policy", None, "reset to labels and config")
        return gone

    # -- history ---------------------------------------------------------------------

    def record(self, container: str, event: str, code: int | None = None, detail: str = "") -> None:
        with self._tx() as db:
            self._record(db, container, event, code, detail)

    def _record(
        self, db: sqlite3.Connection, container: str, event: str, code: int | None, detail: str
    ) -> None:
        db.execute(
            "INSERT INTO history (ts, container, event, code, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), container, event, code, detail),
        )
        db.execute(
            "DELETE FROM history WHERE container = ? AND id <= "
            "(SELECT id FROM history WHERE container = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (container, container, HISTORY_KEEP),
        )

    def history(self, container: str, limit: int = 50) -> list[HistoryRow]:
        rows = self.db.execute(
            "SELECT ts, container, event, code, detail FROM history WHERE container = ? "
            "ORDER BY id DESC LIMIT ?",
            (container, limit),
        ).fetchall()
        return [HistoryRow(*row) for row in rows]

    # -- snapshots -------------------------------------------------------------------

    def set_snapshot(self, container: str, mount: str, meta: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO snapshots (container, mount, ts, meta) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (container, mount) DO UPDATE SET ts = excluded.ts, meta = excluded.meta",
                (container, mount, time.time(), json.dumps(meta)),
            )

    def snapshot(self, container: str, mount: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT meta FROM snapshots WHERE container = ? AND mount = ?", (container, mount)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))
