"""Business data in the history store: point-of-sale transactions, and what the KPIs read.

Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) and go
through its connection, so they work on SQLite and PostgreSQL alike. Transactions are
written like every other record (:data:`~storelens.storage.records.RECORDS`, an upsert that
never replaces: the first copy of a ``transaction_id`` is kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.storage.schema import crossings, pos_transactions, zone_events


def write_transactions(storage: Any, items: Sequence[m.PosTransaction]) -> tuple[int, int]:
    """Store ``items`` in one transaction; return ``(new, duplicates)``.

    A duplicate is a transaction id already stored (or repeated within ``items``); it
    changes nothing. The write is :meth:`SqlStorage.write_records`' own path.
    """
    if not items:
        return 0, 0
    ids = sorted({t.transaction_id for t in items})
    t = pos_transactions.c

    def write(conn: sa.Connection) -> int:
        known = 0
        for k in range(0, len(ids), 500):
            known += conn.execute(sa.select(sa.func.count()).select_from(pos_transactions)
                                  .where(t.transaction_id.in_(ids[k:k + 500]))).scalar_one()
        storage._write_records_in(conn, list(items))
        return len(ids) - known

    new = storage._write(write)
    return new, len(items) - new


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
