"""The JSON store: the whole state in one human-readable file, ``DATA_DIR/state.json``.

For small states that a person wants to read, diff or edit by hand. Every save rewrites
the whole file (temporary file, fsync, rename, fsync of the directory), so a write costs
O(state): keep it to thousands of records, not millions (use the log backend then).

Values round-trip exactly: bytes as ``{"$b64": ...}`` (as on the wire), maps with
non-string keys as ``{"$map": [[k, v], ...]}``, NaN/inf as ``{"$float": ...}``; ids keep
their type (JSON has int and str).

The store keeps its own copy of the state (a shadow engine fed with the change sets),
because :meth:`write` sees change sets, not the engine. fsync policy: ``always`` saves
(with fsync) on every write; ``everysec`` saves at most once a second (on a write,
:meth:`tick` or :meth:`maybe_snapshot`) and at close; ``no`` saves on every write
without fsync. Not thread-safe; one process per data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from stateengine import defaults
from stateengine.protocol import copy_value
from stateengine.runtime.discovery import write_private_file
from stateengine.server.engine import ChangeSet, Table, TableEngine
from stateengine.server.persist_base import (
    FSYNC_POLICIES,
    CorruptStore,
    FileSystem,
    OsFileSystem,
    PersistenceError,
    Progress,
    RecoveryReport,
    StoreClosed,
    count_records,
    crash_point,
    from_json_value,
    gc_paused,
    lease_in,
    lease_out,
    put_record,
    restore_table,
    space_fault,
    to_json_value,
)

JSON_NAME: Final = "state.json"
FORMAT: Final = "stateengine-json/1"


def dump_json(engine: TableEngine, extra: dict[str, Any]) -> str:
    """The engine as the JSON document this store writes."""
    tables = []
    for name, table in engine.tables.items():
        tables.append(
            {
                "name": name,
                "state": to_json_value(table.state()),
                "records": [
                    [to_json_value(rid), to_json_value(rec), to_json_value(lease_out(lease))]
                    for rid, rec in table.records.items()
                    for lease in (table.leases.get(rid),)
                ],
            }
        )
    doc = {"format": FORMAT, "seq": engine.seq, "extra": to_json_value(extra), "tables": tables}
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False)


def load_json(text: str, engine: TableEngine) -> dict[str, Any]:
    """Fill *engine* from a document; return its ``extra``.

    :raises CorruptStore: not this format, or malformed.
    """
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r:.60}")
        for item in doc["tables"]:
            table = restore_table(engine, item["name"], from_json_value(item["state"]))
            for rid, rec, lease in item["records"]:
                put_record(
                    table,
                    from_json_value(rid),
                    from_json_value(rec),
                    lease_in(from_json_value(lease)),
                )
        engine.seq = int(doc["seq"])
        return dict(from_json_value(doc.get("extra") or {}))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptStore(f"{JSON_NAME} cannot be read: {exc}", JSON_NAME) from None


class JsonStore:
    """See the module docstring.

    :param data_dir: an existing, private directory.
    :param fsync: ``always`` | ``everysec`` | ``no``.
    """

    backend = "json"

    def __init__(
        self, data_dir: Path, fsync: str = defaults.FSYNC, *, fs: FileSystem | None = None
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / JSON_NAME
        self.fsync = fsync
        self.fs = fs or OsFileSystem()
        self._shadow = TableEngine()
        self._extra: dict[str, Any] = {}
        self._dirty = False
        self._last_save = 0.0
        self._closed = False
        self.stats: dict[str, int] = {"writes": 0, "saves": 0}

    @gc_paused
    def recover(self, engine: TableEngine, progress: Progress | None = None) -> RecoveryReport:
        """Load ``state.json`` (if any) into *engine* and the shadow copy.

        :raises CorruptStore: the file is not a valid state document.
        """
        started = time.monotonic()
        report = RecoveryReport("json")
        tmp = self.data_dir / (JSON_NAME + ".tmp")
        if tmp.exists():
            tmp.unlink()
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            report.extra = load_json(text, engine)
            self._extra = dict(report.extra)
            load_json(text, self._shadow)
            report.snapshot_seq = engine.seq
            report.snapshot_records = count_records(engine)
            if progress is not None:
                progress(report.snapshot_records, report.snapshot_records)
        report.records = count_records(engine)
        report.tables = len(engine.tables)
        report.seq = engine.seq
        report.seconds = time.monotonic() - started
        return report

    def write(self, cs: ChangeSet) -> None:
        """Apply *cs* to the shadow state and save per the policy.

        :raises PersistenceError: the file could not be written (disk full, I/O error): the
            pass is not durable and is taken back out of the store's state.
        """
        if self._closed:
            raise StoreClosed("the json store is closed")
        if not cs:
            return
        # What the pass touches, as it was: restored if the save fails (disk full), so
        # that the shadow keeps every earlier pass and none of this one.
        shadow = self._shadow
        saved_tables = dict(shadow.tables)
        saved_seq = shadow.seq
        touched = set(cs.dropped) | set(cs.tables)
        touched.update(t for t, *_ in cs.puts)
        touched.update(t for t, _ in cs.deletes)
        for name in touched:
            old = shadow.tables.get(name)
            if old is not None:
                copy = Table(name)
                copy.restore_meta(old.meta())
                copy.records = dict(old.records)
                copy.leases = dict(old.leases)
                shadow.tables[name] = copy  # the change set mutates the copy
        self._shadow.apply_change_set(
            ChangeSet(
                cs.seq,
                list(cs.dropped),
                copy_value(cs.tables),
                [(t, rid, copy_value(rec), lease) for t, rid, rec, lease in cs.puts],
                list(cs.deletes),
            )
        )
        was_dirty = self._dirty
        self._dirty = True
        if self.fsync != "everysec" or time.monotonic() - self._last_save >= 1.0:
            try:
                self._save()
            except OSError as exc:
                shadow.tables, shadow.seq = saved_tables, saved_seq
                self._dirty = was_dirty
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(self.path) + ".tmp")  # a partial file takes space
                raise PersistenceError(f"json: cannot save {self.path}: {exc}") from exc
        self.stats["writes"] += 1

    def reload(self, engine: TableEngine) -> None:
        """Replace *engine*'s state with the store's (after a failed :meth:`write`): every
        pass written before, none of the failed one. Under ``everysec`` that includes
        passes not saved yet (they were acknowledged; the next save carries them)."""
        engine.tables = {}
        engine.seq = 0
        full = self._shadow.full_change_set()
        engine.apply_change_set(
            ChangeSet(
                full.seq,
                [],
                copy_value(full.tables),
                [(t, rid, copy_value(rec), lease) for t, rid, rec, lease in full.puts],
                [],
            )
        )

    def _save(self) -> None:
        text = dump_json(self._shadow, self._extra)
        tmp = str(self.path) + ".tmp"
        if self.fsync == "no":
            space_fault()
            write_private_file(Path(tmp), text.encode())
            os.replace(tmp, self.path)
        else:
            self.fs.write_file(tmp, _one(text.encode()))
            self.fs.rename(tmp, str(self.path))
            crash_point("json-renamed")
            self.fs.sync_dir(str(self.data_dir))
        self._dirty = False
        self._last_save = time.monotonic()
        self.stats["saves"] += 1

    def tick(self) -> None:
        """Save a pending ``everysec`` change once its second is up."""
        if self._dirty and time.monotonic() - self._last_save >= 1.0:
            self._save()

    def maybe_snapshot(self, engine: TableEngine, extra: dict[str, Any] | None = None) -> bool:
        """No snapshots (the file is one); records *extra* and saves a pending change."""
        if extra is not None and extra != self._extra:
            self._extra = dict(extra)
            self._dirty = True
        self.tick()
        return False

    def close(self) -> None:
        """Save anything pending. Idempotent."""
        if not self._closed:
            if self._dirty:
                self._save()
            self._closed = True


def _one(data: bytes) -> Iterator[bytes]:
    yield data
