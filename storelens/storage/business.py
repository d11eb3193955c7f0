"""Business data in the history store: point-of-sale transactions, and what the KPIs read.

Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) and go
through its connection, so they work on SQLite and PostgreSQL alike. Transactions are
written like every other record (:data:`~storelens.storage.records.RECORDS`, an upsert that
never replaces: the first copy of a ``transaction_id`` is kept).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.storage.schema import audit_log, crossings, pos_transactions, zone_events


def write_transactions(storage: Any, items: Sequence[m.PosTransaction]) -> tuple[int, int]:
    """Store ``items`` in one transaction; return ``(new, duplicates)``.

    A duplicate is a transaction id already stored (or repeated within ``items``); it
    changes nothing (a copy that differs, a conflict, counts as a duplicate here: :func:`import_transactions`
    tells them apart). The write is :meth:`SqlStorage.write_records`' own path.
    """
    r = import_transactions(storage, items)
    return r.new, r.duplicates + len(r.conflicts)


#: What a copy of a transaction id must repeat to be a duplicate (else it is a conflict).
SALE_FIELDS = ("register_id", "ts_ms", "amount_minor", "currency", "items_count")


@dataclass(frozen=True)
class ImportResult:
    new: int
    #: Copies of a transaction id already stored (or repeated within the items) saying the same: nothing changed.
    duplicates: int
    #: Transaction ids whose copy differs from the stored one (time, amount, currency, register or items), or
    #: given twice differently within the items: nothing of them changed.
    conflicts: list[str]
    #: Stored transactions replaced by their differing copy (``replace=True``).
    replaced: int = 0
    #: Each replaced transaction's (old, new) time: the hours the store's KPIs must send again to the chain
    #: (:func:`storelens.runtime.rollup.republish_advice`).
    replaced_ts_ms: dict[str, tuple[int, int]] = field(default_factory=dict)


def _sale(t: Any) -> tuple:
    return tuple(getattr(t, f) for f in SALE_FIELDS)


#: The fields of a replaced sale its audit entry (action ``pos.replace``) holds, old and new.
AUDITED_FIELDS = ("ts_ms", "amount_minor", "currency", "items_count", "register_id")


def import_transactions(storage: Any, items: Sequence[m.PosTransaction], replace: bool = False,
                        actor: str = "", client: str = "", now_ms: int | None = None) -> ImportResult:
    """Store ``items`` in one transaction: the new ids; a stored id whose copy differs (a corrected export) is a
    conflict left as it is, or replaced with ``replace``; an id given twice differently within ``items`` is a
    conflict either way (which copy is right is not known): none of its copies is stored.

    Each replaced sale leaves an audit entry (action ``pos.replace``, target its id, by ``actor``) with its old and
    new time, amount, currency, items and register, written in the same database transaction."""
    if not items:
        return ImportResult(0, 0, [])
    given: dict[str, m.PosTransaction] = {}
    inner: set[str] = set()
    for x in items:
        first = given.setdefault(x.transaction_id, x)
        if _sale(first) != _sale(x):
            inner.add(x.transaction_id)
    ids = sorted(given)
    t = pos_transactions.c

    def write(conn: sa.Connection) -> ImportResult:
        stored: dict[str, tuple] = {}
        for k in range(0, len(ids), 500):
            for row in conn.execute(sa.select(t.transaction_id, *(t[f] for f in SALE_FIELDS))
                                    .where(t.transaction_id.in_(ids[k:k + 500]))):
                stored[row[0]] = tuple(row[1:])
        differ = sorted(i for i in ids if i in stored and i not in inner and stored[i] != _sale(given[i]))
        fresh = [x for x in items if x.transaction_id not in inner and x.transaction_id not in stored]
        for k in range(0, len(fresh), 1000):
            storage._write_records_in(conn, fresh[k:k + 1000])
        if replace:
            ts_ms = int(time.time() * 1000) if now_ms is None else now_ms
            for i in differ:
                conn.execute(sa.update(pos_transactions).where(t.transaction_id == i).values(
                    store_id=given[i].store_id, **{f: getattr(given[i], f) for f in SALE_FIELDS}))
                old = dict(zip(SALE_FIELDS, stored[i]))
                detail = {"old": {f: old[f] for f in AUDITED_FIELDS},
                          "new": {f: getattr(given[i], f) for f in AUDITED_FIELDS}}
                conn.execute(sa.insert(audit_log).values(ts_ms=ts_ms, actor=actor or "unknown", action="pos.replace",
                                                         target=i, client=client,
                                                         detail=json.dumps(detail, sort_keys=True)))
        new = len({x.transaction_id for x in fresh})
        conflicts = sorted(inner) + ([] if replace else differ)
        n_replaced = len(differ) if replace else 0
        clash = set(conflicts)
        dup = len(items) - new - n_replaced - sum(1 for x in items if x.transaction_id in clash)
        moved = {i: (int(stored[i][SALE_FIELDS.index("ts_ms")]), given[i].ts_ms) for i in differ} if replace else {}
        return ImportResult(new, dup, conflicts, n_replaced, moved)

    return storage._write(write)


@dataclass(frozen=True)
class Sale:
    ts_ms: int
    amount_minor: int
    currency: str
    register_id: str


def sales(storage: Any, store_id: str, start_ms: int, end_ms: int) -> list[Sale]:
    """Transactions of ``store_id`` in ``[start_ms, end_ms)``, in time order."""
    t = pos_transactions.c
    stmt = (sa.select(t.ts_ms, t.amount_minor, t.currency, t.register_id)
            .where(t.store_id == store_id, t.ts_ms >= start_ms, t.ts_ms < end_ms).order_by(t.ts_ms, t.transaction_id))
    return [Sale(int(r[0]), int(r[1]), r[2], r[3]) for r in storage._rows(stmt)]


def in_crossings(storage: Any, lines: Iterable[tuple[str, str]] | None, start_ms: int, end_ms: int) -> list[int]:
    """Times of the ``in`` crossings of ``(camera_id, line_id)`` lines (``None``: every line) in the range."""
    c = crossings.c
    stmt = sa.select(c.ts_ms).where(c.direction == "in", c.ts_ms >= start_ms, c.ts_ms < end_ms)
    if lines is not None:
        keys = sorted(set(lines))
        if not keys:
            return []
        stmt = stmt.where(sa.tuple_(c.camera_id, c.line_id).in_(keys))
    return sorted(int(r[0]) for r in storage._rows(stmt))


@dataclass(frozen=True)
class Exit:
    ts_ms: int
    zone_kind: str
    dwell_ms: int | None
    how: str | None
    #: The track that left (``(camera_id, track_id)``, matched against the staff tracks).
    camera_id: str = ""
    track_id: int = -1


def zone_exits(storage: Any, zone_kinds: Iterable[str], start_ms: int, end_ms: int) -> list[Exit]:
    """Exits from zones of the given kinds in the range (time of the exit), in time order, with their track."""
    e = zone_events.c
    stmt = (sa.select(e.ts_ms, e.zone_kind, e.dwell_ms, e.how, e.camera_id, e.track_id)
            .where(e.kind == "exit", e.zone_kind.in_(sorted(set(zone_kinds))), e.ts_ms >= start_ms, e.ts_ms < end_ms)
            .order_by(e.ts_ms))
    return [Exit(int(r[0]), r[1], None if r[2] is None else int(r[2]), r[3], r[4], -1 if r[5] is None else int(r[5]))
            for r in storage._rows(stmt)]


def currencies_sold(storage: Any, store_id: str, start_ms: int, end_ms: int) -> set[str]:
    """The currencies of ``store_id``'s transactions in ``[start_ms, end_ms)`` (one aggregate query)."""
    t = pos_transactions.c
    return {r[0] for r in storage._rows(sa.select(t.currency).where(
        t.store_id == store_id, t.ts_ms >= start_ms, t.ts_ms < end_ms).distinct())}


def last_currency(storage: Any, store_id: str) -> str | None:
    """The currency of the store's newest transaction (``None``: it has none)."""
    t = pos_transactions.c
    rows = storage._rows(sa.select(t.currency).where(t.store_id == store_id)
                         .order_by(t.ts_ms.desc(), t.transaction_id.desc()).limit(1))
    return rows[0][0] if rows else None
