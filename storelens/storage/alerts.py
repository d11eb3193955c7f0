"""Alerts in the history store: the list the API pages through, and acknowledging / resolving one.

The ``alerts`` rows come from the analytics stage's :class:`~storelens.contract.messages.Alert`
messages (:mod:`storelens.storage.records`); the API writes only its own columns
(``acked_*``, ``resolved_*``, and ``state`` when a person resolves an alert).
Functions take the history store and work on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa

from storelens.config.alerts import ALERT_KINDS
from storelens.storage.schema import alerts
from storelens.storage.site import has_rows

AlertFilter = Literal["firing", "resolved", "acked", "unacked", "all"]


def _row(r: sa.Row[Any]) -> dict[str, Any]:
    d = dict(r._mapping)
    d["zone_id"] = d["zone_id"] or None
    return d


def _where(state: AlertFilter, start_ms: int | None, end_ms: int | None, camera_id: str | None) -> list[Any]:
    a = alerts.c
    where: list[Any] = []
    if state == "firing":
        where.append(a.state == "firing")
    elif state == "resolved":
        where.append(a.state == "resolved")
    elif state == "acked":
        where.append(a.acked_ts_ms.is_not(None))
    elif state == "unacked":
        where.append(a.acked_ts_ms.is_(None))
    if start_ms is not None:
        where.append(a.fired_ts_ms >= start_ms)
    if end_ms is not None:
        where.append(a.fired_ts_ms < end_ms)
    if camera_id is not None:
        where.append(a.camera_id == camera_id)
    return where


def count_alerts(storage: Any, state: AlertFilter = "all", start_ms: int | None = None, end_ms: int | None = None,
                 camera_id: str | None = None) -> int:
    """How many alerts :func:`list_alerts` would page through (``state="firing"``: the open ones)."""
    where = _where(state, start_ms, end_ms, camera_id)
    return int(storage._rows(sa.select(sa.func.count()).select_from(alerts).where(*where))[0][0])


def camera_has_alerts(storage: Any, camera_id: str) -> bool:
    """Whether any stored alert is of ``camera_id`` (a camera a site version removed keeps its alerts)."""
    return has_rows(storage, [alerts], camera_id=camera_id)


def list_alerts(storage: Any, state: AlertFilter = "all", start_ms: int | None = None, end_ms: int | None = None,
                camera_id: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Alerts that fired in ``[start_ms, end_ms)``, newest first: ``(page, total matching)``.

    ``state``: ``firing`` (open: neither the stage nor a person resolved it), ``resolved``,
    ``acked`` / ``unacked`` (acknowledged or not, whatever the state), ``all``.
    """
    a = alerts.c
    where = _where(state, start_ms, end_ms, camera_id)
    total = count_alerts(storage, state, start_ms, end_ms, camera_id)
    stmt = (sa.select(alerts).where(*where).order_by(a.fired_ts_ms.desc(), a.alert_id).limit(limit).offset(offset))
    return [_row(r) for r in storage._rows(stmt)], total


def firing_alerts(storage: Any) -> list[dict[str, Any]]:
    """Every alert of the rules (:data:`~storelens.config.alerts.ALERT_KINDS`) whose condition the stage has not
    seen end (``cleared_ts_ms`` unset: ``state`` firing, or resolved by a person while it went on), oldest first:
    what the embedded pipeline takes over at its start
    (:meth:`~storelens.stages.analytics.AnalyticsStage.adopt_alerts`), so an incident closed by hand does not fire
    a second alert while it lasts. Other kinds (``count_accuracy`` of an audit) are no rule's: never taken over."""
    a = alerts.c
    stmt = sa.select(alerts).where(a.cleared_ts_ms.is_(None), a.kind.in_(ALERT_KINDS)).order_by(a.fired_ts_ms,
                                                                                                 a.alert_id)
    return [_row(r) for r in storage._rows(stmt)]


def get_alert(storage: Any, alert_id: str) -> dict[str, Any] | None:
    rows = storage._rows(sa.select(alerts).where(alerts.c.alert_id == alert_id))
    return _row(rows[0]) if rows else None


def acknowledge(storage: Any, alert_id: str, by: str, ts_ms: int) -> dict[str, Any] | None:
    """Mark the alert acknowledged (the first acknowledgement is kept); ``None`` when unknown."""
    a = alerts.c
    storage._write(lambda c: c.execute(sa.update(alerts).where(a.alert_id == alert_id, a.acked_ts_ms.is_(None))
                                       .values(acked_by=by, acked_ts_ms=ts_ms)))
    return get_alert(storage, alert_id)


def resolve(storage: Any, alert_id: str, by: str, ts_ms: int) -> dict[str, Any] | None:
    """Close the alert by hand (kept when already closed by hand); ``None`` when unknown.

    The stage's own resolution (when the condition ends) still arrives later and sets
    ``cleared_ts_ms``; a redelivered firing message never reopens it.
    """
    a = alerts.c
    storage._write(lambda c: c.execute(sa.update(alerts).where(a.alert_id == alert_id, a.resolved_ts_ms.is_(None))
                                       .values(state="resolved", resolved_by=by, resolved_ts_ms=ts_ms)))
    return get_alert(storage, alert_id)
