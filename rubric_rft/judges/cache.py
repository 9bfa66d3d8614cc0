"""A persistent verdict cache: the same question to the same judge is answered once, across runs.

GRPO regrades identical (prompt, response) pairs often (repeated samples, resumed runs, evaluation
passes), and judge calls are the slow, costly part of a reward. SQLite in WAL mode with a busy timeout lets
several training processes share one file. Calls are synchronous: a lookup takes microseconds.
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
    """sha256 of the canonical JSON of everything that determines a verdict (backend, model, template
    version, request shape, prompt, response, criterion texts in order, ...)."""
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class VerdictCache:
    """Key -> JSON object, stored in the SQLite file at `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the event loop's thread and worker threads; the lock serialises it.
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._connection.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        text = json.dumps(value, sort_keys=True)
        with self._lock:
            self._connection.execute("INSERT OR REPLACE INTO verdicts (key, value) VALUES (?, ?)", (key, text))

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()
