"""A persistent answer cache: the same question to the same model is answered once, across runs.

GRPO regrades identical (prompt, response) pairs often (repeated samples, resumed runs, evaluation passes), and
model calls are the slow, costly part of a reward. SQLite in WAL mode with a busy timeout lets several training
processes share one file. Calls are synchronous: a lookup takes microseconds. The connection opens on first use
and again after `close`, so a caller that closes its clients after every evaluation can keep using them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_S = 30.0


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of everything that determines an answer (backend, model, template version,
    request shape, prompt, response, criterion texts in order, ...)."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerCache:
    """Key -> JSON object, stored in the SQLite file at `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One connection shared by the event loop's thread and worker threads; the lock serialises it.
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._open().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        text = json.dumps(value, sort_keys=True)
        with self._lock:
            self._open().execute("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        with self._lock:
            return self._open().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        """Close the connection; the next lookup opens it again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._connection = connection
        return self._connection
