"""Record stores: one contract suite for both backends, plus SQLite durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.store import (
    APPLICATION_ID,
    MemoryStore,
    RecordStore,
    SqliteStore,
    StoreClosedError,
    StoreError,
)

Factory = Callable[[], RecordStore]


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of fresh, empty stores of one backend; all are closed afterwards."""
    made: list[RecordStore] = []
    counter = iter(range(1_000_000))

    def make() -> RecordStore:
        store: RecordStore = (
            MemoryStore()
            if request.param == "memory"
            else SqliteStore(tmp_path / f"ledger-{next(counter)}.sqlite")
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


# --- contract, both backends -------------------------------------------------------


def test_empty_store(new_store: Factory) -> None:
    """A new store holds nothing and replays nothing."""
    store = new_store()
    assert 0 == len(store)
    assert [] == list(store.replay())


def test_replay_from_a_position(new_store: Factory) -> None:
    """replay(start) yields the records from number `start` on, and nothing past the end."""
    store = new_store()
    store.append_many([b"a", b"b", b"c", b"d"])
    assert ([b"c", b"d"], []) == (list(store.replay(2)), list(store.replay(4)))


def test_snapshots_keep_only_the_newest(new_store: Factory) -> None:
    """Snapshots are filed by position, the oldest beyond `keep` go, and none past the end."""
    store = new_store()
    store.append_many([b"r"] * 10)
    for position in (2, 4, 6, 8):
        store.save_snapshot(position, b"snap-%d" % position, keep=3)
    store.save_snapshot(8, b"again", keep=3)
    assert ([4, 6, 8], b"again") == (store.snapshots(), store.read_snapshot(8))
    with pytest.raises(ValueError):
        store.save_snapshot(11, b"too far")
    with pytest.raises(KeyError):
        store.read_snapshot(2)


def test_discarding_keeps_the_numbering(new_store: Factory) -> None:
    """After discard_before(n) the next record is still number len(store); older ones are gone."""
    store = new_store()
    store.append_many([b"a", b"b", b"c"])
    store.save_snapshot(1, b"s1")
    store.save_snapshot(2, b"s2")
    store.discard_before(2)
    assert (2, 3, [2]) == (store.first(), len(store), store.snapshots())
    assert (3, [b"c", b"d"]) == (store.append(b"d"), list(store.replay()))
    store.discard_before(4)
    assert (4, 4, []) == (store.first(), len(store), list(store.replay()))
    assert 4 == store.append(b"e")
    with pytest.raises(ValueError):
        store.discard_before(9)


def test_pinned_snapshots_survive_pruning_until_discarded(new_store: Factory) -> None:
    """Pinned snapshots are kept past `keep`; discarding records before them unpins them."""
    store = new_store()
    store.append_many([b"r"] * 10)
    store.save_snapshot(2, b"s2", keep=1)
    store.pin_snapshot(2, round=20)
    store.save_snapshot(4, b"s4", keep=1)
    store.pin_snapshot(4, round=40)
    store.save_snapshot(6, b"s6", keep=1)
    assert ([2, 4, 6], [(2, 20), (4, 40)]) == (store.snapshots(), store.pinned())
    store.discard_before(4)
    assert ([4, 6], [(4, 40)]) == (store.snapshots(), store.pinned())
    with pytest.raises(KeyError):
        store.pin_snapshot(5, round=50)


def test_satisfies_protocol(new_store: Factory) -> None:
    """Each backend is a RecordStore."""
    assert isinstance(new_store(), RecordStore)


def test_append_returns_consecutive_sequence_numbers(new_store: Factory) -> None:
    """append returns 0, 1, 2, ... and len counts the records."""
    store = new_store()
    assert [0, 1, 2] == [store.append(b"a"), store.append(b"b"), store.append(b"c")]
    assert 3 == len(store)


def test_replay_in_append_order(new_store: Factory) -> None:
    """replay yields every record in the order appended, including empty ones."""
    store = new_store()
    records = [b"first", b"", b"\x00\xff", b"last"]
    for record in records:
        store.append(record)
    assert records == list(store.replay())


def test_append_many(new_store: Factory) -> None:
    """append_many adds records in order and returns the last one's number."""
    store = new_store()
    store.append(b"zero")
    assert 3 == store.append_many([b"one", b"two", b"three"])
    assert 4 == store.append(b"four")
    assert [b"zero", b"one", b"two", b"three", b"four"] == list(store.replay())


def test_append_many_empty(new_store: Factory) -> None:
    """append_many of nothing adds nothing and returns len - 1."""
    store = new_store()
    assert -1 == store.append_many([])
    store.append(b"a")
    assert 0 == store.append_many([])
    assert 1 == len(store)


def test_append_many_is_all_or_nothing(new_store: Factory) -> None:
    """A bad record in a batch leaves the store unchanged."""
    store = new_store()
    store.append(b"kept")
    with pytest.raises(TypeError):
        store.append_many([b"ok", "not bytes"])  # type: ignore[list-item]
    assert [b"kept"] == list(store.replay())


def test_refuses_non_bytes(new_store: Factory) -> None:
    """A str record is refused and nothing is stored."""
    store = new_store()
    with pytest.raises(TypeError, match="bytes"):
        store.append("text")  # type: ignore[arg-type]
    assert 0 == len(store)


def test_accepts_bytes_like_and_returns_bytes(new_store: Factory) -> None:
    """bytearray and memoryview records replay as equal bytes."""
    store = new_store()
    store.append(bytearray(b"ba"))  # type: ignore[arg-type]
    store.append(memoryview(b"mv"))  # type: ignore[arg-type]
    replayed = list(store.replay())
    assert [b"ba", b"mv"] == replayed
    assert [bytes, bytes] == [type(record) for record in replayed]


def test_large_records(new_store: Factory) -> None:
    """Records of several MiB replay intact."""
    store = new_store()
    big = [os.urandom(4 * 1024 * 1024), bytes(range(256)) * 8192]
    store.append_many(big)
    assert big == list(store.replay())


def test_many_records_cross_replay_chunks(new_store: Factory) -> None:
    """Thousands of records replay complete and in order."""
    store = new_store()
    records = [i.to_bytes(4, "big") for i in range(3000)]
    store.append_many(records[:1000])
    for record in records[1000:1100]:
        store.append(record)
    store.append_many(records[1100:])
    assert records == list(store.replay())


def test_appends_during_replay_are_seen(new_store: Factory) -> None:
    """A record appended while replaying is yielded by that replay."""
    store = new_store()
    store.append(b"a")
    seen = []
    for record in store.replay():
        seen.append(record)
        if record == b"a":
            store.append(b"b")
    assert [b"a", b"b"] == seen


def test_closed_store_refuses_use(new_store: Factory) -> None:
    """After close, every operation raises StoreClosedError; close twice is harmless."""
    store = new_store()
    store.append(b"a")
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        store.append(b"b")
    with pytest.raises(StoreClosedError):
        store.append_many([b"b"])
    with pytest.raises(StoreClosedError):
        list(store.replay())
    with pytest.raises(StoreClosedError):
        len(store)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.binary(max_size=32), max_size=5), max_size=6))
def test_any_append_sequence_replays_exactly(
    new_store: Factory, batches: list[list[bytes]]
) -> None:
    """Any mix of single and batched appends replays as the concatenation."""
    store = new_store()
    expected: list[bytes] = []
    for batch in batches:
        if len(batch) == 1:
            assert len(expected) == store.append(batch[0])
        else:
            assert len(expected) + len(batch) - 1 == store.append_many(batch)
        expected.extend(batch)
    assert expected == list(store.replay())
    assert len(expected) == len(store)


# --- SQLite durability and file identity -------------------------------------------


def test_sqlite_survives_close_and_reopen(tmp_path: Path) -> None:
    """Records are all there after closing and reopening the file, and numbering goes on."""
    path = tmp_path / "ledger.sqlite"
    with SqliteStore(path) as store:
        store.append(b"a")
        store.append_many([b"b", b"c"])
    with SqliteStore(path) as store:
        assert [b"a", b"b", b"c"] == list(store.replay())
        assert 3 == store.append(b"d")


def test_sqlite_reopen_without_close(tmp_path: Path) -> None:
    """A second store opened while the first was never closed sees every record."""
    path = tmp_path / "ledger.sqlite"
    writer = SqliteStore(path)
    writer.append(b"a")
    writer.append(b"b")
    reader = SqliteStore(path)
    try:
        assert [b"a", b"b"] == list(reader.replay())
    finally:
        reader.close()
        writer.close()


def test_sqlite_reader_after_writer_closes(tmp_path: Path) -> None:
    """A reader open during writing sees everything committed once the writer closes."""
    path = tmp_path / "ledger.sqlite"
    writer = SqliteStore(path)
    reader = SqliteStore(path)
    try:
        writer.append(b"a")
        assert [b"a"] == list(reader.replay())
        writer.append_many([b"b", b"c"])
        writer.close()
        assert [b"a", b"b", b"c"] == list(reader.replay())
        assert 3 == len(reader)
    finally:
        reader.close()


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path) -> None:
    """The file is in WAL mode and stamped with the proofmarket application id."""
    path = tmp_path / "ledger.sqlite"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    try:
        assert "wal" == db.execute("PRAGMA journal_mode").fetchone()[0]
        assert APPLICATION_ID == db.execute("PRAGMA application_id").fetchone()[0]
    finally:
        db.close()
    store = SqliteStore(path)
    try:
        # 2 is FULL; checked on the store's own connection, where it is set.
        assert 2 == store._conn().execute("PRAGMA synchronous").fetchone()[0]
    finally:
        store.close()


def test_threads_appending_get_distinct_numbers(tmp_path: Path) -> None:
    """Appends from several threads on one store never share a sequence number."""
    with SqliteStore(tmp_path / "ledger.sqlite") as store:
        results: list[int] = []
        lock = threading.Lock()

        def work(tag: int) -> None:
            for i in range(25):
                seq = store.append(bytes([tag, i]))
                with lock:
                    results.append(seq)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert list(range(100)) == sorted(results)
        assert 100 == len(list(store.replay()))


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    """A file of other bytes is refused with a clear StoreError and left untouched."""
    path = tmp_path / "notes.txt"
    content = b"these are not the records you are looking for\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a proofmarket record store"):
        SqliteStore(path)
    assert content == path.read_bytes()


def test_refuses_another_applications_database(tmp_path: Path) -> None:
    """A SQLite file belonging to something else is refused and not altered."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE things (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a proofmarket record store"):
        SqliteStore(path)
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    finally:
        db.close()
    assert ["things"] == tables


def test_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    """A proofmarket store of a later schema version is refused by name."""
    path = tmp_path / "ledger.sqlite"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema 99"):
        SqliteStore(path)


_CRASHING_WRITER = """
import os, signal, sys
from coordinator.store import SqliteStore
store = SqliteStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    seq = store.append(b"record-%d" % i)
    print(seq, flush=True)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
os._exit(0)
"""


@pytest.mark.parametrize("death", ["exit", "kill"])
def test_sqlite_record_survives_process_death(tmp_path: Path, death: str) -> None:
    """Every record whose append returned survives the writer dying without close."""
    path = tmp_path / "ledger.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(path), "50", death],
        capture_output=True,
        timeout=60,
        check=False,
    )
    expected_rc = -signal.SIGKILL if death == "kill" else 0
    assert expected_rc == proc.returncode, proc.stderr
    acknowledged = [int(line) for line in proc.stdout.split()]
    assert list(range(50)) == acknowledged
    with SqliteStore(path) as store:
        assert [b"record-%d" % i for i in range(50)] == list(store.replay())
        assert 50 == store.append(b"after the crash")


def test_published_watermark_starts_below_every_record(new_store: Factory) -> None:
    """A new store has published nothing: the watermark is -1."""
    assert -1 == new_store().published()


def test_published_watermark_moves_with_an_append_and_never_down(new_store: Factory) -> None:
    """append_many(published=) and mark_published raise the watermark, never lower it."""
    store = new_store()
    store.append_many([b"a", b"b"])
    store.append_many([b"c"], published=1)
    assert 1 == store.published()
    store.mark_published(0)
    assert 1 == store.published()
    store.mark_published(2)
    assert (2, [b"a", b"b", b"c"]) == (store.published(), list(store.replay()))


def test_sqlite_watermark_survives_reopen(tmp_path: Path) -> None:
    """The watermark is durable with the records it was written with."""
    path = tmp_path / "ledger.sqlite"
    with SqliteStore(path) as store:
        store.append_many([b"a", b"b", b"c"], published=1)
    with SqliteStore(path) as store:
        assert (1, 3) == (store.published(), len(store))
