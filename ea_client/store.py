"""What the EA did with each approval and close command, kept where a restart finds it.

One SQLite file (the standard library's ``sqlite3``; synchronous=FULL, so a
committed row is on disk before the call returns). Per id, in this order:

1. ``begin``: the *intent*, written before the broker is asked (for a close:
   the ticket, the volume, and how many closing fills the ticket had). A
   process that dies after this row and before the next finds it on restart:
   the broker may or may not have carried the order out, and the client asks
   the broker instead of sending the order again (client.py, ``_recover_*``).
2. ``record``: the broker's result, the body of the acknowledgement, written
   before the acknowledgement is sent. From here on a delivery of the same id
   is answered with this body, never with a second order.
3. ``confirm``: the server answered the acknowledgement. Confirmed rows stay
   (a command can be delivered again after its lease) and are pruned after
   ``KEEP_CONFIRMED_SECONDS``.

``ExecutedStore(":memory:")`` keeps the same rows for the life of the process
only (tests, and a user who asks for it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Far longer than the server keeps redelivering a command (CLOSE_MAX_ATTEMPTS leases)
# or offers an approval (its TTL).
KEEP_CONFIRMED_SECONDS = 30 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcome (
    kind TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    intent TEXT NOT NULL,
    result TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, item_id)
)
"""


@dataclass(frozen=True)
class Outcome:
    intent: dict[str, Any]
    result: dict[str, Any] | None  # None: begun, and the process died before the broker's answer was kept
    confirmed: bool


class ExecutedStore:
    """Intent, result and confirmation per (kind, id). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is fsynced before it returns
        self._db.execute(_SCHEMA)
        self._db.execute(
            "DELETE FROM outcome WHERE confirmed = 1 AND updated_at < ?",
            (time.time() - KEEP_CONFIRMED_SECONDS,),
        )

    def get(self, kind: str, item_id: int) -> Outcome | None:
        with self._lock:
            row = self._db.execute(
                "SELECT intent, result, confirmed FROM outcome WHERE kind = ? AND item_id = ?",
                (kind, item_id),
            ).fetchone()
        if row is None:
            return None
        return Outcome(json.loads(row[0]), None if row[1] is None else json.loads(row[1]), bool(row[2]))

    def begin(self, kind: str, item_id: int, intent: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outcome (kind, item_id, intent, updated_at) VALUES (?, ?, ?, ?)",
                (kind, item_id, json.dumps(intent), time.time()),
            )

    def record(self, kind: str, item_id: int, result: dict[str, Any]) -> None:
        with self._lock:
            changed = self._db.execute(
                "UPDATE outcome SET result = ?, confirmed = 0, updated_at = ? "
                "WHERE kind = ? AND item_id = ? AND result IS NULL",
                (json.dumps(result), time.time(), kind, item_id),
            ).rowcount
        if changed != 1:
            raise RuntimeError(f"{kind} {item_id}: a result is recorded only once, after its intent")

    def unconfirm(self, kind: str, item_id: int) -> None:
        self._set_confirmed(kind, item_id, False)

    def confirm(self, kind: str, item_id: int) -> None:
        self._set_confirmed(kind, item_id, True)

    def unconfirmed(self, kind: str) -> list[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT item_id FROM outcome WHERE kind = ? AND result IS NOT NULL AND confirmed = 0 "
                "ORDER BY item_id",
                (kind,),
            ).fetchall()
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _set_confirmed(self, kind: str, item_id: int, confirmed: bool) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outcome SET confirmed = ?, updated_at = ? WHERE kind = ? AND item_id = ?",
                (int(confirmed), time.time(), kind, item_id),
            )
