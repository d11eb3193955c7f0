"""The chain roll-up stage: every store's ``StoreKpiHour`` in, records for the chain's history out.

Runs in the chain's deployment (``services/chain-rollup``, a regex subscription on every store's
``<prefix>store-kpis`` topic). Each hour becomes two records: the hour (table ``chain_kpi_hours``, a
row per currency of its sales; a newer computation of the same store-hour replaces the older, every
currency's row) and its store's name, region and time zone (table ``chain_stores``). An hour that
announces its computation's window (``window_*``) also deletes the store's stored hours of that window
it does not list, in the same transaction (:mod:`storelens.storage.records`); a message without an hour
(:func:`~storelens.contract.messages.window_only`, a store with no hour in its window) only deletes the
store's hours of its window. A malformed hour is a
dead letter; nothing is published.

Example:
    >>> from storelens.config import parse_config
    >>> stage = ChainRollupStage(parse_config({"store": {"id": "chain"}, "cameras": [], "chain": {}}))
    >>> out = stage.handle(topics.STORE_KPIS, m.StoreKpiHour(store_id="berlin-01", start_ms=0, end_ms=3_600_000,
    ...                    day="1970-01-01", label="1970-01-01T01:00+01:00", hours=1.0, visitors=12, computed_ms=5))
    >>> [type(r).__name__ for r in out.records]
    ['StoreKpiHour', 'ChainStore']
"""
from __future__ import annotations

import datetime as dt
import re

from storelens.config import SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.pos import CURRENCY_PATTERN
from storelens.domain.rollup import N_BINS, ChainStore
from storelens.errors import DecodeError
from storelens.stages.base import Outputs

_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: Most hours in a bucket of the store's calendar (an hour bucket lasts one hour or less).
_MAX_HOUR_MS = 3_600_000
#: Longest window a store announces: ``rollup.lookback_h``'s ceiling (31 days) plus the 1 ms past "now".
_MAX_WINDOW_MS = 31 * 86_400_000 + 1
#: Most other currencies one hour's sales are in (``other_sales``).
_MAX_OTHER_CURRENCIES = 16


def store_record(h: m.StoreKpiHour) -> ChainStore:
    """The ``chain_stores`` record of an hour message (its store as that message describes it)."""
    return ChainStore(h.store_id, h.store_name or h.store_id, h.region, h.timezone, h.currency, h.computed_ms,
                      h.start_ms)


def check_hour(h: m.StoreKpiHour) -> None:
    """Raise :class:`~storelens.errors.DecodeError` naming the first bad field of a received hour."""
    if not _ID.match(h.store_id):
        raise DecodeError(f"store_id: not a store id: {h.store_id[:80]!r}")
    if h.computed_ms < 0:
        raise DecodeError("computed_ms: negative")
    if m.window_only(h):  # no hour: the announcement of a window in which the store has none
        if h.window_hour_starts_ms:
            raise DecodeError("window_hour_starts_ms: a message without an hour lists hours")
        _check_window(h)
        return
    if not 0 < h.end_ms - h.start_ms <= _MAX_HOUR_MS:
        raise DecodeError(f"start_ms/end_ms: not an hour bucket ({h.start_ms}, {h.end_ms})")
    try:
        dt.date.fromisoformat(h.day)
    except ValueError:
        raise DecodeError(f"day: not a date: {h.day[:40]!r}") from None
    if not h.label or len(h.label) > 40:
        raise DecodeError("label: missing or too long")
    if not 0 <= h.hours <= 1:
        raise DecodeError(f"hours: {h.hours} is not in [0, 1]")
    for name in ("visitors", "staff_in", "transactions", "sales_minor", "abandonments"):
        if getattr(h, name) < 0:
            raise DecodeError(f"{name}: negative")
    if h.buying_units < -1:
        raise DecodeError("buying_units: below -1")
    if len(h.other_sales) > _MAX_OTHER_CURRENCIES:
        raise DecodeError(f"other_sales: more than {_MAX_OTHER_CURRENCIES} currencies")
    seen = {h.currency}
    for o in h.other_sales:
        if not re.fullmatch(CURRENCY_PATTERN, o.currency) or o.currency in seen:
            raise DecodeError(f"other_sales: not another currency: {o.currency[:10]!r}")
        if o.transactions < 0 or o.sales_minor < 0:
            raise DecodeError("other_sales: negative")
        seen.add(o.currency)
    for name in ("dwell_hist", "queue_wait_hist"):
        if len(getattr(h, name)) > N_BINS:
            raise DecodeError(f"{name}: more than {N_BINS} bins")
    if h.window_start_ms or h.window_end_ms or h.window_hour_starts_ms:  # else: no window, upsert only
        _check_window(h)
        if h.window_start_ms <= h.start_ms < h.window_end_ms and h.start_ms not in h.window_hour_starts_ms:
            raise DecodeError("window_hour_starts_ms: does not list the hour itself")


def _check_window(h: m.StoreKpiHour) -> None:
    if not 0 < h.window_end_ms - h.window_start_ms <= _MAX_WINDOW_MS:
        raise DecodeError(f"window_start_ms/window_end_ms: not a window ({h.window_start_ms}, {h.window_end_ms})")


class ChainRollupStage:
    name = "chain-rollup"
    inputs = {topics.STORE_KPIS: m.StoreKpiHour}
    outputs: tuple[str, ...] = ()
    #: A malformed hour is that message's fault; a failing database is retried by the runner's sink policy.
    on_error = "dead_letter"

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.cameras: set[str] = set()

    def decode(self, topic: str, value: bytes) -> m.StoreKpiHour:
        if topic != topics.STORE_KPIS:
            raise DecodeError(f"stage {self.name!r} does not consume topic {topic!r}")
        h = m.decode(self.inputs[topic], value)
        check_hour(h)
        return h

    def handle(self, topic: str, h: m.StoreKpiHour) -> Outputs:
        records = [h] if m.window_only(h) else [h, store_record(h)]  # no hour: the window's sweep only
        return Outputs(records=records, info={"store_id": h.store_id})
