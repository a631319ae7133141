"""Append-only record stores: the durable log the coordinator's state is a fold over.

A record is opaque bytes. `append` returns only once the record is durable, so the
coordinator may acknowledge the input it records; `replay` yields every record in the
order appended, which is all a restart needs to rebuild state.

Two backends keep the same contract: MemoryStore for tests and simulations, and
SqliteStore (WAL, synchronous=FULL) for a real market.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Final, Protocol, runtime_checkable

# "PMKT" in ASCII: marks a SQLite file as a proofmarket record store.
APPLICATION_ID: Final = 0x504D4B54
SCHEMA_VERSION: Final = 1
_REPLAY_CHUNK: Final = 512
_FILE_MARK: Final = b"proofmarket-snapshot-file:"
"""A snapshot row's body that names a file in the store's `snapshot_dir` instead."""


class StoreError(Exception):
    """The store cannot be used: not a proofmarket store, wrong schema, or closed."""


class StoreClosedError(StoreError):
    """An operation on a store after close()."""


@runtime_checkable
class RecordStore(Protocol):
    def append(self, record: bytes) -> int:
        """Durably add one record; returns its sequence number (0, 1, 2, ...)."""
        ...

    def append_many(self, records: Sequence[bytes], *, published: int | None = None) -> int:
        """Durably add records all together or not at all; returns the last's number.

        With no records nothing is written and the result is len(store) - 1. `published`,
        when given, moves the published watermark in the same transaction.
        """
        ...

    def published(self) -> int:
        """The watermark: every effect of records up to this number has been sent (-1: none).

        A writer that acknowledges records only after they are durable can crash between
        the two; records past the watermark are the ones whose acknowledgements it must
        send again when it restarts.
        """
        ...

    def mark_published(self, seq: int) -> None:
        """Durably move the published watermark up to `seq` (never down)."""
        ...

    def replay(self, start: int = 0) -> Iterator[bytes]:
        """Every record from number `start` on, in the order appended."""
        ...

    def save_snapshot(self, position: int, body: bytes, *, keep: int = 2) -> None:
        """Durably file a snapshot covering records 0 .. position-1, all of it or nothing.

        Only the newest `keep` snapshots (and the one at `first()` and the pinned ones)
        are kept; filing one at a position already filed replaces it.
        """
        ...

    def snapshots(self) -> list[int]:
        """The positions of the snapshots filed, oldest first."""
        ...

    def read_snapshot(self, position: int) -> bytes:
        """The snapshot filed at `position` (KeyError if there is none)."""
        ...

    def first(self) -> int:
        """The number of the oldest record still held (0 until some were discarded)."""
        ...

    def pin_snapshot(self, position: int, round: int) -> None:
        """Keep the snapshot at `position` (taken in `round`) from pruning."""
        ...

    def pinned(self) -> list[tuple[int, int]]:
        """(position, round) of the pinned snapshots still held, oldest first."""
        ...

    def discard_before(self, position: int) -> None:
        """Durably drop records 0 .. position-1 (archived, or not wanted) and older snapshots.

        Numbering carries on: the next record appended is still number len(store). The
        snapshot at `position`, which a restart now needs, is never dropped by
        `save_snapshot`'s pruning.
        """
        ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def _as_record(record: object) -> bytes:
    # Refuse str and other non-bytes early: a str stored by mistake would replay as bytes
    # of some encoding and corrupt the fold much later.
    if not isinstance(record, bytes | bytearray | memoryview):
        raise TypeError(f"a record must be bytes, not {type(record).__name__}")
    return bytes(record)


def _check_position(position: int, records: int, keep: int) -> None:
    if not 0 <= position <= records:
        raise ValueError(f"a snapshot at {position} covers records the store ({records}) lacks")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")


class MemoryStore:
    """Records in a list; durable only for the life of the process."""

    def __init__(self) -> None:
        self._records: list[bytes] = []  # records from number self._first on
        self._first = 0
        self._published = -1
        self._closed = False
        self._snapshots: dict[int, bytes] = {}
        self._pins: dict[int, int] = {}  # pinned snapshot position -> its round

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the record store is closed")

    def append(self, record: bytes) -> int:
        return self.append_many([record])

    def append_many(self, records: Sequence[bytes], *, published: int | None = None) -> int:
        self._check_open()
        checked = [_as_record(record) for record in records]  # all or nothing
        self._records.extend(checked)
        if published is not None:
            self._published = max(self._published, published)
        return self._first + len(self._records) - 1

    def published(self) -> int:
        self._check_open()
        return self._published

    def mark_published(self, seq: int) -> None:
        self._check_open()
        self._published = max(self._published, seq)

    def replay(self, start: int = 0) -> Iterator[bytes]:
        self._check_open()
        # Index rather than iterate, so records appended while replaying are seen too,
        # as they are with SqliteStore.
        seq = max(self._first, start)
        while seq < self._first + len(self._records):
            yield self._records[seq - self._first]
            seq += 1

    def __len__(self) -> int:
        self._check_open()
        return self._first + len(self._records)

    def save_snapshot(self, position: int, body: bytes, *, keep: int = 2) -> None:
        self._check_open()
        _check_position(position, len(self), keep)
        self._snapshots[position] = _as_record(body)
        for old in sorted(self._snapshots)[:-keep]:
            if old != self._first and old not in self._pins:
                del self._snapshots[old]

    def pin_snapshot(self, position: int, round: int) -> None:
        self._check_open()
        if position not in self._snapshots:
            raise KeyError(position)
        self._pins[position] = round

    def pinned(self) -> list[tuple[int, int]]:
        self._check_open()
        return sorted(self._pins.items())

    def first(self) -> int:
        self._check_open()
        return self._first

    def discard_before(self, position: int) -> None:
        self._check_open()
        if not self._first <= position <= len(self):
            raise ValueError(f"cannot discard before {position}: records run {self._first}..")
        del self._records[: position - self._first]
        self._first = position
        for old in [p for p in self._snapshots if p < position]:
            del self._snapshots[old]
        for old in [p for p in self._pins if p < position]:
            del self._pins[old]

    def snapshots(self) -> list[int]:
        self._check_open()
        return sorted(self._snapshots)

    def read_snapshot(self, position: int) -> bytes:
        self._check_open()
        return self._snapshots[position]

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SqliteStore:
    """Records in one SQLite table, committed with WAL and synchronous=FULL.

    A file that exists but is not a proofmarket store is refused with StoreError rather
    than written to. Appends from several threads are serialised by a lock; several
    processes may read while one writes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: transactions are begun and committed explicitly below.
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open record store {self._path!r}: {exc}") from exc
        try:
            self._open(self._db)
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _open(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self._path!r} is not a proofmarket record store: {exc}") from exc
        if app_id == 0 and tables == 0:
            self._create(db)
        elif app_id != APPLICATION_ID:
            raise StoreError(
                f"{self._path!r} is not a proofmarket record store "
                f"(SQLite application_id {app_id:#x}, expected {APPLICATION_ID:#x})"
            )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self._path!r} has record store schema {version}, this build reads "
                f"{SCHEMA_VERSION}"
            )
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{self._path!r}: SQLite refused WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous = FULL")
        # Added after schema 1 shipped; creating it when missing keeps old files readable.
        db.execute("CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS snapshots "
            "(position INTEGER PRIMARY KEY, body BLOB NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS pins (position INTEGER PRIMARY KEY, round INTEGER NOT NULL)"
        )

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)"
            )
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosedError("the record store is closed")
        return self._db

    def append(self, record: bytes) -> int:
        return self.append_many([record])

    def append_many(self, records: Sequence[bytes], *, published: int | None = None) -> int:
        checked = [_as_record(record) for record in records]
        with self._lock:
            db = self._conn()
            # IMMEDIATE takes the write lock first, so the next sequence number read
            # below cannot be taken by another writer before this commit.
            db.execute("BEGIN IMMEDIATE")
            try:
                last = self._last(db)
                db.executemany(
                    "INSERT INTO records (seq, body) VALUES (?, ?)",
                    ((last + 1 + i, body) for i, body in enumerate(checked)),
                )
                if published is not None:
                    self._raise_mark(db, published)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return last + len(checked)

    @staticmethod
    def _last(db: sqlite3.Connection) -> int:
        """The number of the newest record, counting discarded ones (-1: none ever)."""
        (last,) = db.execute("SELECT coalesce(max(seq), -1) FROM records").fetchone()
        return max(int(last), SqliteStore._first(db) - 1)

    @staticmethod
    def _first(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM marks WHERE name = 'first'").fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _set_mark(db: sqlite3.Connection, name: str, seq: int) -> None:
        db.execute(
            "INSERT INTO marks (name, seq) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
            (name, seq),
        )

    def pin_snapshot(self, position: int, round: int) -> None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                if (
                    db.execute("SELECT 1 FROM snapshots WHERE position = ?", (position,)).fetchone()
                    is None
                ):
                    raise KeyError(position)
                db.execute(
                    "INSERT OR REPLACE INTO pins (position, round) VALUES (?, ?)",
                    (position, round),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def pinned(self) -> list[tuple[int, int]]:
        with self._lock:
            rows = self._conn().execute("SELECT position, round FROM pins ORDER BY position")
            return [(int(p), int(r)) for p, r in rows.fetchall()]

    @staticmethod
    def _raise_mark(db: sqlite3.Connection, seq: int) -> None:
        db.execute(
            "INSERT INTO marks (name, seq) VALUES ('published', ?) "
            "ON CONFLICT(name) DO UPDATE SET seq = max(seq, excluded.seq)",
            (seq,),
        )

    def published(self) -> int:
        with self._lock:
            row = self._conn().execute("SELECT seq FROM marks WHERE name = 'published'").fetchone()
        return -1 if row is None else int(row[0])

    def mark_published(self, seq: int) -> None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._raise_mark(db, seq)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def replay(self, start: int = 0) -> Iterator[bytes]:
        # Reads in chunks by sequence number instead of holding one cursor open, so no
        # read transaction stays open across the caller's work and appends made while
        # replaying are seen.
        after = start - 1
        while True:
            with self._lock:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after, _REPLAY_CHUNK),
                    )
                    .fetchall()
                )
            if not rows:
                return
            for seq, body in rows:
                yield bytes(body)
                after = seq

    def __len__(self) -> int:
        with self._lock:
            return self._last(self._conn()) + 1

    def save_snapshot(self, position: int, body: bytes, *, keep: int = 2) -> None:
        self._file_snapshot(position, _as_record(body), keep)

    @property
    def snapshot_dir(self) -> str:
        """Where snapshots written beside the ledger live (`save_snapshot_file`)."""
        return f"{self._path}.snapshots"

    def save_snapshot_file(self, position: int, name: str, *, keep: int = 2) -> None:
        """File a snapshot whose body another process wrote, durably, to `name` in
        `snapshot_dir`: the store holds only a reference, so filing it costs no write of
        the body. Pruned snapshots' files are removed."""
        if os.sep in name or not os.path.isfile(os.path.join(self.snapshot_dir, name)):
            raise ValueError(f"no snapshot file {name!r} in {self.snapshot_dir}")
        self._file_snapshot(position, _FILE_MARK + name.encode(), keep)

    def _file_snapshot(self, position: int, body: bytes, keep: int) -> None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                _check_position(position, self._last(db) + 1, keep)
                db.execute(
                    "INSERT OR REPLACE INTO snapshots (position, body) VALUES (?, ?)",
                    (position, body),
                )
                pruned = (
                    "FROM snapshots WHERE position != ? "
                    "AND position NOT IN (SELECT position FROM pins) AND position NOT IN "
                    "(SELECT position FROM snapshots ORDER BY position DESC LIMIT ?)"
                )
                args = (self._first(db), keep)
                gone = self._files(db, f"SELECT body {pruned}", args)
                db.execute(f"DELETE {pruned}", args)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._remove(gone)

    def _files(self, db: sqlite3.Connection, query: str, args: tuple[int, ...]) -> list[str]:
        """The snapshot files of the rows `query` selects (their bodies), to remove."""
        bodies = db.execute(
            f"{query} AND substr(body, 1, {len(_FILE_MARK)}) = ?",
            (*args, _FILE_MARK),
        ).fetchall()
        return [bytes(b)[len(_FILE_MARK) :].decode() for (b,) in bodies]

    def _remove(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.snapshot_dir, name))

    def snapshots(self) -> list[int]:
        with self._lock:
            rows = self._conn().execute("SELECT position FROM snapshots ORDER BY position")
            return [int(p) for (p,) in rows.fetchall()]

    def read_snapshot(self, position: int) -> bytes:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT body FROM snapshots WHERE position = ?", (position,))
                .fetchone()
            )
        if row is None:
            raise KeyError(position)
        body = bytes(row[0])
        if not body.startswith(_FILE_MARK):
            return body
        try:
            with open(os.path.join(self.snapshot_dir, body[len(_FILE_MARK) :].decode()), "rb") as f:
                return f.read()
        except OSError:
            return b""  # a lost file reads as a damaged snapshot: refused, an older one used

    def first(self) -> int:
        with self._lock:
            return self._first(self._conn())

    def discard_before(self, position: int) -> None:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                first, last = self._first(db), self._last(db)
                if not first <= position <= last + 1:
                    raise ValueError(f"cannot discard before {position}: records run {first}..")
                db.execute("DELETE FROM records WHERE seq < ?", (position,))
                gone = self._files(db, "SELECT body FROM snapshots WHERE position < ?", (position,))
                db.execute("DELETE FROM snapshots WHERE position < ?", (position,))
                self._set_mark(db, "first", position)
                db.execute("DELETE FROM pins WHERE position < ?", (position,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._remove(gone)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "APPLICATION_ID",
    "MemoryStore",
    "RecordStore",
    "SqliteStore",
    "StoreClosedError",
    "StoreError",
]
