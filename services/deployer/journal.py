"""What a deployer agent has acted on, kept on its own disk (SQLite, from the standard
library) so that a restart neither repeats a deployment nor forgets to report one.

One row per promotion, written when ``deploy`` has returned and *before* the report is
sent: it holds the report itself (the exact record, id and trace headers included) and
whether Kafka has acknowledged it. So, after a crash:

- a promotion handed over again whose report was acknowledged is skipped (offsets are
  committed after the acknowledgement, so at most the record in flight comes back);
- one whose report was not acknowledged is not deployed again: the kept report is sent as it
  was (the same CloudEvents id, so any inbox that has it already skips it);
- one whose ``deploy`` had not returned is not in the journal and is deployed again
  (``deploy`` must be idempotent: that is the one window it can run twice in).

Each write is a committed SQLite transaction (``synchronous=FULL``): once ``acted`` returns,
the row survives a SIGKILL or a power cut.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from events import KafkaRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acted (
    promotion_id TEXT PRIMARY KEY,
    outcome      TEXT NOT NULL,
    report_id    TEXT NOT NULL,
    topic        TEXT NOT NULL,
    key          BLOB,
    value        BLOB,
    headers      TEXT NOT NULL,
    acted_at     TEXT NOT NULL,
    reported_at  TEXT
)
"""


@dataclass(frozen=True)
class Entry:
    promotion_id: str
    outcome: str  # deployed | rolledback | failed
    report_id: str
    report: KafkaRecord
    reported: bool


class JournalError(RuntimeError):
    """The journal cannot be opened or written; the message names the file and the fix."""


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)  # autocommit; BEGIN below
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"cannot open the deployer's journal {path} ({exc}); give the agent a state "
                "directory it can write (--state-dir, LOCKSTEP_DEPLOYER_STATE_DIR)"
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def find(self, promotion_id: str) -> Entry | None:
        row = self._db.execute(
            "SELECT promotion_id, outcome, report_id, topic, key, value, headers, reported_at "
            "FROM acted WHERE promotion_id = ?",
            (promotion_id,),
        ).fetchone()
        return _entry(row) if row is not None else None

    def acted(self, promotion_id: str, outcome: str, report: KafkaRecord) -> Entry:
        """Keep what was done for ``promotion_id`` and the report that says so (not yet
        acknowledged). If the promotion is there already, the first entry stands."""
        headers = json.dumps(
            [[name, None if value is None else value.hex()] for name, value in report.headers]
        )
        report_id = report.header("ce_id") or ""
        self._write(
            "INSERT OR IGNORE INTO acted (promotion_id, outcome, report_id, topic, key, value, "
            "headers, acted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (promotion_id, outcome, report_id, report.topic, report.key, report.value, headers,
             _now()),
        )  # fmt: skip
        found = self.find(promotion_id)
        assert found is not None
        return found

    def reported(self, promotion_id: str) -> None:
        """Kafka has acknowledged the report of ``promotion_id``."""
        self._write(
            "UPDATE acted SET reported_at = ? WHERE promotion_id = ? AND reported_at IS NULL",
            (_now(), promotion_id),
        )

    def pending(self) -> list[Entry]:
        """Reports kept but not acknowledged, oldest first."""
        rows = self._db.execute(
            "SELECT promotion_id, outcome, report_id, topic, key, value, headers, reported_at "
            "FROM acted WHERE reported_at IS NULL ORDER BY acted_at, rowid"
        ).fetchall()
        return [_entry(r) for r in rows]

    def forget_reported_before(self, age: timedelta) -> int:
        """Drop entries reported longer ago than ``age`` (far beyond any redelivery)."""
        cutoff = (datetime.now(UTC) - age).isoformat()
        cur = self._write(
            "DELETE FROM acted WHERE reported_at IS NOT NULL AND reported_at < ?", (cutoff,)
        )
        return cur.rowcount

    def _write(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return cur
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot write the deployer's journal {self.path} ({exc}); is the disk full "
                "or the file read-only?"
            ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _entry(row: tuple[object, ...]) -> Entry:
    promotion_id, outcome, report_id, topic, key, value, headers, reported_at = row
    assert isinstance(headers, str)
    kept = tuple(
        (str(name), None if v is None else bytes.fromhex(str(v))) for name, v in json.loads(headers)
    )
    return Entry(
        promotion_id=str(promotion_id), outcome=str(outcome), report_id=str(report_id),
        report=KafkaRecord(
            topic=str(topic),
            key=key if isinstance(key, bytes) else None,
            value=value if isinstance(value, bytes) else None,
            headers=kept,
        ),
        reported=reported_at is not None,
    )  # fmt: skip
