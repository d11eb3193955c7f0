"""Record kinds of the history store: which table a stage's record type is written to, and how.

A stage returns records (``Outputs.records``); :class:`~storelens.runtime.sinks.HistorySink`
hands them to :meth:`SqlStorage.write_records <storelens.storage.history.SqlStorage.write_records>`,
which writes every kind of one batch in one transaction. The core kinds (track points,
crossings, occupancy, count windows, face history) are built into the store; a new kind
is one :func:`register_records` call next to its table, e.g. the zone tables below:

    >>> from storelens.contract import messages as m
    >>> RECORDS[m.ZoneEvent].table.name
    'zone_events'

Every kind is an idempotent upsert keyed by the table's primary key (a redelivered or
replayed record replaces itself), optionally only where ``newer(excluded)`` holds (and a column of
``coalesce`` only with a value, one of ``keep_if`` / ``set_as`` kept or set as the kind says); a kind whose
records say which stored rows no longer exist deletes them in the same transaction (``sweep``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from storelens.contract import messages as m
from storelens.storage.schema import zone_events, zone_occupancy, zone_stats

Rows = Callable[[Iterable[Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class RecordKind:
    """How records of ``type`` become rows of ``table``."""

    type: type
    table: sa.Table
    #: Records -> rows (one record may give several rows, or none).
    rows: Rows
    #: Upsert condition on the incoming row (``excluded``): e.g. only a newer timestamp replaces.
    newer: Callable[[Any], Any] | None = None
    #: Time column of a kind derived from the tracks (``None``: latest-state tables, replaced by a
    #: replay's newest row, or records that are not derived): ``storelens replay`` deletes the rows of a
    #: re-derived range by it, then writes what it derived.
    replay_ts: str | None = None
    #: Columns an upsert never overwrites (set by someone else, e.g. the API's acknowledgement of an alert).
    keep: tuple[str, ...] = ()
    #: Run in the same transaction after the upsert, with the rows written (derived tables kept in step).
    after: Callable[[sa.Connection, list[dict[str, Any]]], None] | None = None
    #: Run in the same transaction after the upsert and before ``after``, with the records (in batch order):
    #: deletes the stored rows the records say no longer exist and returns them (``after`` gets them too).
    sweep: Callable[[sa.Connection, list[Any]], list[dict[str, Any]]] | None = None
    #: Columns an upsert overwrites only with a value (a NULL keeps the stored one: ``COALESCE(excluded.c, c)``).
    coalesce: tuple[str, ...] = ()
    #: ``(column, condition on excluded)`` pairs: the column keeps its stored value where the condition holds.
    keep_if: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    #: ``(column, expression of excluded)`` pairs: what the upsert sets the column to (the stored row's columns may
    #: be in the expression), instead of the incoming value.
    set_as: tuple[tuple[str, Callable[[Any], Any]], ...] = ()


#: record type -> kind, in registration order (= write order within a batch).
RECORDS: dict[type, RecordKind] = {}


def register_records(type_: type, table: sa.Table, rows: Rows, newer: Callable[[Any], Any] | None = None,
                     replay_ts: str | None = None, keep: tuple[str, ...] = (),
                     after: Callable[[sa.Connection, list[dict[str, Any]]], None] | None = None,
                     sweep: Callable[[sa.Connection, list[Any]], list[dict[str, Any]]] | None = None,
                     coalesce: tuple[str, ...] = (),
                     keep_if: tuple[tuple[str, Callable[[Any], Any]], ...] = (),
                     set_as: tuple[tuple[str, Callable[[Any], Any]], ...] = ()) -> RecordKind:
    """Register (or replace) the table of a record type."""
    kind = RecordKind(type_, table, rows, newer, replay_ts, keep, after, sweep, coalesce, keep_if, set_as)
    RECORDS[type_] = kind
    return kind


def last_by_key(rows: list[dict[str, Any]], table: sa.Table) -> list[dict[str, Any]]:
    """One row per primary key, the last one given (a multi-row upsert may not touch a key twice)."""
    key = [c.name for c in table.primary_key]
    return list({tuple(r[k] for k in key): r for r in rows}.values())


# -- zones ------------------------------------------------------------------------------------



def zone_event_kind(kind: int) -> str:
    """``enter``, ``exit`` or ``loiter`` of a :class:`~storelens.contract.messages.ZoneEvent`'s kind."""
    return m.ZONE_EVENT_KIND_NAMES[kind]


def _zone_event_rows(items: Iterable[m.ZoneEvent]) -> list[dict[str, Any]]:
    return last_by_key([{
        "event_id": e.event_id, "camera_id": e.camera_id, "zone_id": e.zone_id, "zone_kind": e.zone_kind,
        "track_id": e.track_id, "kind": zone_event_kind(e.kind), "ts_ms": e.ts_ms, "seq": e.seq,
        "dwell_ms": e.dwell_ms if e.HasField("dwell_ms") else None, "how": e.how or None,
    } for e in items], zone_events)


def _zone_stats_rows(items: Iterable[m.ZoneStats]) -> list[dict[str, Any]]:
    return last_by_key([{
        "camera_id": s.camera_id, "zone_id": s.zone_id, "bucket_start_ms": s.bucket_start_ms,
        "bucket_end_ms": s.bucket_end_ms, "visits": s.visits, "unique_people": s.unique_people,
        "mean_occupancy": s.mean_occupancy, "max_occupancy": s.max_occupancy,
        "dwell_median_s": s.dwell_median_s if s.HasField("dwell_median_s") else None,
        "dwell_p90_s": s.dwell_p90_s if s.HasField("dwell_p90_s") else None,
        "visits_ended": s.visits_ended, "stoppers": s.stoppers, "served": s.served, "abandoned": s.abandoned,
        "lost": s.lost,
        # unset (an analytics of before the field): NULL, the whole bucket (storage.zones.zone_buckets)
        "covered_ms": s.covered_ms if s.HasField("covered_ms") else None,
    } for s in items], zone_stats)


def _zone_occupancy_rows(items: Iterable[m.ZoneOccupancy]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for u in items:
        for zone_id, n in u.occupancy.items():
            key = (u.camera_id, zone_id)
            if key not in rows or u.ts_ms >= rows[key]["ts_ms"]:
                rows[key] = {"camera_id": u.camera_id, "zone_id": zone_id, "ts_ms": u.ts_ms, "seq": u.seq,
                             "occupancy": n}
    return list(rows.values())


register_records(m.ZoneEvent, zone_events, _zone_event_rows, replay_ts="ts_ms")
register_records(m.ZoneStats, zone_stats, _zone_stats_rows, replay_ts="bucket_start_ms")
register_records(m.ZoneOccupancy, zone_occupancy, _zone_occupancy_rows,
                 newer=lambda new: new.ts_ms >= zone_occupancy.c.ts_ms)


# -- heatmaps ---------------------------------------------------------------------------------

from storelens.storage.schema import camera_snapshots, heatmap_windows  # noqa: E402


def pack_heatmap_cells(cells: Iterable[m.HeatmapCell]) -> bytes:
    """``heatmap_windows.cells``: little-endian int32 ``(gx, gy, occupancy_ms, dwell_ms)`` rows."""
    import numpy as np

    return np.array([(c.gx, c.gy, c.occupancy_ms, c.dwell_ms) for c in cells], "<i4").reshape(-1, 4).tobytes()


def _heatmap_rows(items: Iterable[m.HeatmapWindow]) -> list[dict[str, Any]]:
    return last_by_key([{
        "camera_id": w.camera_id, "cell_px": w.cell_px, "span_ms": w.window_end_ms - w.window_start_ms,
        "window_start_ms": w.window_start_ms,
        "window_end_ms": w.window_end_ms, "width": w.width, "height": w.height, "n_cells": len(w.cells),
        "occupancy_ms": sum(c.occupancy_ms for c in w.cells), "dwell_ms": sum(c.dwell_ms for c in w.cells),
        "cells": pack_heatmap_cells(w.cells),
    } for w in items], heatmap_windows)


def _snapshot_rows(items: Iterable[m.CameraSnapshot]) -> list[dict[str, Any]]:
    return last_by_key([{
        "camera_id": s.camera_id, "ts_ms": s.ts_ms, "seq": s.seq, "width": s.width, "height": s.height,
        "blurred": s.blurred, "jpeg": s.jpeg,
    } for s in items if s.jpeg], camera_snapshots)


def _rebuild_heatmap_hours(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    from storelens.storage.heatmaps import rebuild_hours

    rebuild_hours(conn, rows)


register_records(m.HeatmapWindow, heatmap_windows, _heatmap_rows, after=_rebuild_heatmap_hours)
register_records(m.CameraSnapshot, camera_snapshots, _snapshot_rows)


# -- journeys ---------------------------------------------------------------------------------

from storelens.storage.schema import track_summaries  # noqa: E402


def _track_summary_rows(items: Iterable[m.TrackSummary]) -> list[dict[str, Any]]:
    import json

    import numpy as np

    # within a batch too, the summary reaching furthest wins (the last of those as far)
    items = sorted(items, key=lambda s: s.last_seq)
    return last_by_key([{
        "camera_id": s.camera_id, "track_id": s.track_id, "first_ts_ms": s.first_ts_ms, "last_ts_ms": s.last_ts_ms,
        "first_seq": s.first_seq, "last_seq": s.last_seq, "n_frames": s.n_frames, "first_x": s.first_x,
        "first_y": s.first_y, "last_x": s.last_x, "last_y": s.last_y,
        "appearance": np.asarray(s.appearance, "<f4").tobytes() if len(s.appearance) else None,
        "zones": json.dumps([[z.zone_id, z.zone_kind, z.enter_ts_ms, z.exit_ts_ms] for z in s.zones]),
        "crossings": json.dumps([[c.line_id, m.direction_name(c.direction), c.ts_ms] for c in s.crossings]),
    } for s in items], track_summaries)


# A summary re-derived by a replay (from the stored track points, which keep no embeddings: no appearance)
# replaces the zones, crossings, times and counts of the stored one, and keeps its appearance (what the
# linker needs): a moved zone then applies to the journeys, flows and paths. A track re-found after its
# summary was sent is sent again whole (storelens.stages.journeys) and replaces it too. A summary ending
# before the stored one (last_seq) never replaces it: the first part of a track a replay saw only until the
# end of its range (re-found after it), or a first part redelivered late, would cut the whole track short.
register_records(m.TrackSummary, track_summaries, _track_summary_rows, coalesce=("appearance",),
                 newer=lambda new: new.last_seq >= track_summaries.c.last_seq)


# -- business ---------------------------------------------------------------------------------

from storelens.storage.schema import pos_transactions  # noqa: E402


def _pos_transaction_rows(items: Iterable[m.PosTransaction]) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for t in items:  # the idempotency key: the first copy of a transaction id wins, also within a batch
        first.setdefault(t.transaction_id, {
            "transaction_id": t.transaction_id, "store_id": t.store_id, "register_id": t.register_id,
            "ts_ms": t.ts_ms, "amount_minor": t.amount_minor, "currency": t.currency, "items_count": t.items_count})
    return list(first.values())


# Never replaced: a resent transaction (same id) is a duplicate, whatever it says now.
register_records(m.PosTransaction, pos_transactions, _pos_transaction_rows, newer=lambda new: sa.false())


# -- alerts -----------------------------------------------------------------------------------

from storelens.storage.schema import alerts  # noqa: E402

#: The API's columns of ``alerts``: the stage's messages never touch them.
ALERT_API_COLUMNS = ("acked_by", "acked_ts_ms", "resolved_by", "resolved_ts_ms")


#: What a resolving message's text says after the firing's (``... - resolved``, maybe ``(why)``).
RESOLVED_MARK = " - resolved"


def resolved_suffix(message: str) -> str:
    """The part of a resolving message's text from :data:`RESOLVED_MARK` on (the firing's text goes before it).

    Example:
        >>> resolved_suffix("c: alert of rule crowd - resolved (rule removed)")
        ' - resolved (rule removed)'
    """
    at = message.find(RESOLVED_MARK)
    return message[at:] if at >= 0 else RESOLVED_MARK


def _alert_rows(items: Iterable[m.Alert]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for a in items:  # within a batch the resolving message wins over the firing one (and the first resolution)
        old = rows.get(a.alert_id)
        if old is not None and old["state"] == "resolved":
            continue
        rows[a.alert_id] = {
            "alert_id": a.alert_id, "rule_id": a.rule_id, "kind": a.kind, "severity": a.severity,
            "camera_id": a.camera_id, "zone_id": a.zone_id, "state": a.state, "fired_ts_ms": a.fired_ts_ms,
            "fired_seq": a.fired_seq, "ts_ms": a.ts_ms,
            "cleared_ts_ms": a.ts_ms if a.state == "resolved" else None, "value": a.value,
            "threshold": a.threshold, "message": a.message}
        if old is not None and old["state"] == "firing" and a.state == "resolved":  # keeps what fired it
            rows[a.alert_id].update(value=old["value"], message=old["message"] + resolved_suffix(a.message))
    return list(rows.values())


class _text_pos(sa.sql.functions.GenericFunction):
    """1-based position of the second argument in the first (0: not in it): SQLite's ``instr``, PostgreSQL's
    ``strpos``."""

    type = sa.Integer()
    name = "text_pos"
    inherit_cache = True


@compiles(_text_pos)
def _text_pos_sqlite(element, compiler, **kw) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(_text_pos, "postgresql")
def _text_pos_postgres(element, compiler, **kw) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def _alert_resolution(column: str) -> Callable[[Any], Any]:
    """The stored ``value`` / ``message`` a resolving message (``excluded``) leaves on a row: a resolution keeps the
    value that fired the alert and its text (the resolution's part after it, e.g. `` - resolved (rule removed)``),
    once (a redelivered resolution, the row cleared already, changes nothing); otherwise the message's own."""
    def value(excluded):
        a = alerts.c
        if column == "value":
            kept: Any = a.value
        else:
            at = _text_pos(excluded.message, RESOLVED_MARK)
            suffix = sa.case((at > 0, sa.func.substr(excluded.message, at)), else_=sa.literal(RESOLVED_MARK))
            kept = sa.case((a.cleared_ts_ms.is_(None), a.message + suffix), else_=a.message)
        return sa.case((excluded.state == "resolved", kept), else_=excluded[column])
    return value


def _unknown_rule(new) -> Any:
    """A message that does not know its rule's kind (a resolution, from a state saved by an older version, of an
    alert whose rule is gone): the stored row's kind, camera, severity and threshold stay."""
    return new.kind == ""


# A redelivered firing message never reopens a resolved alert; the API's columns are kept.
register_records(m.Alert, alerts, _alert_rows, keep=ALERT_API_COLUMNS,
                 newer=lambda new: sa.or_(new.state == "resolved", alerts.c.state == "firing"),
                 keep_if=tuple((c, _unknown_rule) for c in ("kind", "camera_id", "severity", "threshold")),
                 set_as=tuple((c, _alert_resolution(c)) for c in ("value", "message")))


# -- buying units and staff -------------------------------------------------------------------

from storelens.storage.schema import group_crossings, staff_tracks  # noqa: E402


def _group_rows(items: Iterable[m.GroupCrossing]) -> list[dict[str, Any]]:
    import json

    return last_by_key([{
        "event_id": g.event_id, "camera_id": g.camera_id, "line_id": g.line_id,
        "direction": m.direction_name(g.direction), "ts_ms": g.ts_ms, "seq": g.seq, "last_ts_ms": g.last_ts_ms,
        "size": len(g.track_ids), "track_ids": json.dumps(list(g.track_ids)),
    } for g in items], group_crossings)


def _staff_rows(items: Iterable[m.StaffTrack]) -> list[dict[str, Any]]:
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for s in items:  # the first cue that held is kept, also within a batch
        first.setdefault((s.camera_id, s.track_id), {
            "camera_id": s.camera_id, "track_id": s.track_id, "ts_ms": s.ts_ms, "seq": s.seq, "cue": s.cue,
            "detail": s.detail})
    return list(first.values())


register_records(m.GroupCrossing, group_crossings, _group_rows, replay_ts="ts_ms")
# Never replaced: a track is staff from its first cue on (a later cue changes nothing). Not deleted by a
# replay either: the uniform cue is judged on pixels, which the stored track points do not keep.
register_records(m.StaffTrack, staff_tracks, _staff_rows, newer=lambda new: sa.false())


# -- chain roll-up (storelens.storage.rollup) -------------------------------------------------

from storelens.domain.rollup import ChainStore  # noqa: E402
from storelens.storage.schema import (ROLLUP_BINS, ROLLUP_HIST_COLUMNS, chain_kpi_days, chain_kpi_hours,  # noqa: E402
                                      chain_stores as chain_stores_table)


def _bins(kind: str, hist) -> dict[str, int]:
    counts = list(hist)[:ROLLUP_BINS]
    return {f"{kind}_h{i:02d}": (counts[i] if i < len(counts) else 0) for i in range(ROLLUP_BINS)}


def _hour_rows(items: Iterable[m.StoreKpiHour]) -> list[dict[str, Any]]:
    """A row per hour and currency: the hour in ``currency`` with every figure, and one row per entry of
    ``other_sales`` with that currency's sales only (nothing else counts twice; buying units 0 or -1 as
    the hour's, so its transactions count with units when the store counts them)."""
    rows = []
    for h in items:
        if m.window_only(h):  # a window alone (no hour): no row
            continue
        row = {
            "store_id": h.store_id, "start_ms": h.start_ms, "end_ms": h.end_ms, "day": h.day, "label": h.label,
            "hours": h.hours, "visitors": h.visitors, "staff_in": h.staff_in, "buying_units": h.buying_units,
            "transactions": h.transactions, "sales_minor": h.sales_minor, "abandonments": h.abandonments,
            "currency": h.currency, "computed_ms": h.computed_ms, **_bins("dwell", h.dwell_hist),
            **_bins("wait", h.queue_wait_hist),
        }
        rows.append(row)
        for o in h.other_sales:
            rows.append({**row, "hours": 0.0, "visitors": 0, "staff_in": 0, "buying_units": min(h.buying_units, 0),
                         "transactions": o.transactions, "sales_minor": o.sales_minor, "abandonments": 0,
                         "currency": o.currency, **_bins("dwell", ()), **_bins("wait", ())})
    rows.sort(key=lambda r: r["computed_ms"])  # within a batch the newest computation wins
    return last_by_key(rows, chain_kpi_hours)


def _store_rows(items: Iterable[ChainStore]) -> list[dict[str, Any]]:
    rows = sorted((s.__dict__ for s in items), key=lambda r: (r["updated_ms"], r["last_hour_ms"]))
    return last_by_key([dict(r) for r in rows], chain_stores_table)


def _sweep_hours(conn: sa.Connection, items: list[m.StoreKpiHour]) -> list[dict[str, Any]]:
    """Delete the stored hours that the hours' announced windows no longer have, and the rows of the
    batch's hours from an older computation than the hour's newest; their ``(store_id, day)``.

    An hour with a window (``window_start_ms < window_end_ms``) says: the store's hours starting in the
    window are exactly ``window_hour_starts_ms`` as of ``computed_ms``. So the store's stored hours that
    start in the window, are not listed, and were not computed later are deleted -- after this batch's
    upsert, sparing the hours of the batch's later messages (the batch applies in message order). Hours
    without a window delete nothing; a message without an hour (:func:`~storelens.contract.messages.window_only`)
    lists none, so it deletes the store's hours of its window."""
    h = chain_kpi_hours.c
    later: dict[str, set[int]] = {}  # store -> starts of the hours after the one at hand in the batch
    plans: dict[tuple[Any, ...], None] = {}  # the hours of one publication announce the same: one DELETE
    for x in reversed(items):
        if x.window_end_ms > x.window_start_ms:
            keep = frozenset(x.window_hour_starts_ms).union(later.get(x.store_id, ()))
            plans[(x.store_id, x.window_start_ms, x.window_end_ms, x.computed_ms, keep)] = None
        if not m.window_only(x):
            later.setdefault(x.store_id, set()).add(x.start_ms)
    gone: list[dict[str, Any]] = []
    for store, lo, hi, computed_ms, keep in plans:
        stmt = sa.delete(chain_kpi_hours).where(
            h.store_id == store, h.start_ms >= lo, h.start_ms < hi, h.computed_ms <= computed_ms,
            h.start_ms.not_in(sorted(keep))).returning(h.store_id, h.day)
        gone += [{"store_id": sid, "day": day} for sid, day in conn.execute(stmt)]
    # A message is the whole hour, in every currency: the rows of an older computation of the batch's hours
    # (a currency the hour no longer has, or one an older message brought late) go.
    newer = chain_kpi_hours.alias("newer")
    newest = (sa.select(sa.func.max(newer.c.computed_ms))
              .where(newer.c.store_id == h.store_id, newer.c.start_ms == h.start_ms).scalar_subquery())
    hours = sorted({(x.store_id, x.start_ms) for x in items})
    for k in range(0, len(hours), 200):
        stmt = sa.delete(chain_kpi_hours).where(sa.tuple_(h.store_id, h.start_ms).in_(hours[k:k + 200]),
                                                h.computed_ms < newest).returning(h.store_id, h.day)
        gone += [{"store_id": sid, "day": day} for sid, day in conn.execute(stmt)]
    # ... and so do the rows of a currency the hour no longer has from the same computation (a store whose clock
    # is its newest stored frame re-publishes an hour with the same computed_ms: "" before a POS import, EUR after)
    last: dict[tuple[str, int], m.StoreKpiHour] = {}
    for x in sorted((x for x in items if not m.window_only(x)), key=lambda x: x.computed_ms):
        last[(x.store_id, x.start_ms)] = x  # the row the upsert kept: the newest computation, the last of a tie
    same: dict[tuple[int, tuple[str, ...]], list[tuple[str, int]]] = {}
    for key, x in last.items():
        own = tuple(sorted({x.currency, *(o.currency for o in x.other_sales)}))
        same.setdefault((x.computed_ms, own), []).append(key)
    for (computed_ms, own), keys in same.items():
        for k in range(0, len(keys), 200):
            stmt = sa.delete(chain_kpi_hours).where(
                sa.tuple_(h.store_id, h.start_ms).in_(sorted(keys[k:k + 200])), h.currency.not_in(own),
                h.computed_ms <= computed_ms).returning(h.store_id, h.day)
            gone += [{"store_id": sid, "day": day} for sid, day in conn.execute(stmt)]
    return gone


def _refresh_days(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Recompute the ``chain_kpi_days`` rows of the (store, business day)s that ``rows`` touched from their hours."""
    h, d = chain_kpi_hours.c, chain_kpi_days.c
    keys = sorted({(r["store_id"], r["day"]) for r in rows})
    for k in range(0, len(keys), 200):
        part = keys[k:k + 200]
        conn.execute(sa.delete(chain_kpi_days).where(sa.tuple_(d.store_id, d.day).in_(part)))
        summed = ("hours", "visitors", "staff_in", "transactions", "sales_minor", "abandonments", *ROLLUP_HIST_COLUMNS)
        select = sa.select(h.store_id, h.day, sa.func.min(h.start_ms), sa.func.max(h.end_ms), sa.func.min(h.label),
                           sa.func.sum(sa.case((h.buying_units >= 0, h.buying_units))),
                           *(sa.func.sum(h[c]) for c in summed)
                           ).where(sa.tuple_(h.store_id, h.day).in_(part)).group_by(h.store_id, h.day)
        conn.execute(sa.insert(chain_kpi_days).from_select(
            ["store_id", "day", "start_ms", "end_ms", "label", "buying_units", *summed], select))


register_records(m.StoreKpiHour, chain_kpi_hours, _hour_rows,
                 newer=lambda new: new.computed_ms >= chain_kpi_hours.c.computed_ms, after=_refresh_days,
                 sweep=_sweep_hours)
register_records(ChainStore, chain_stores_table, _store_rows,
                 newer=lambda new: new.updated_ms >= chain_stores_table.c.updated_ms)
