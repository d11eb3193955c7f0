"""Point-of-sale transactions in (``POST /v1/transactions``), store KPIs out (``GET /v1/kpis``).

KPIs are computed per bucket of the store's own calendar (:mod:`storelens.domain.calendar`:
``store.timezone`` and ``store.opening_hours``) from the entrance crossings, the stored
transactions and the zone exits (:mod:`storelens.domain.kpis`).
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Collection, Literal

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storelens.domain import kpis as K
from storelens.domain import rollup as R
from storelens.domain import pos
from storelens.domain import staff as ST
from storelens.domain.calendar import CALENDAR_MAX_MS
from storelens.domain.privacy import DEFAULT_K, is_suppressed, keep
from storelens.runtime.rollup import republish_advice
from storelens.storage import business as bq
from storelens.storage import rollup as rq
from storelens.storage.kpis import calendar, store_kpis
from storelens.storage.rollup import kpi_now_ms

from ..deps import MAX_TS_MS, ContextDep, EndMs, StartMs, Text, api_router, require_role, resolve_range
from ..models import _Out
from ..security import Principal

router = api_router("business", role='viewer')

#: Most transactions in one POST.
MAX_BATCH = 1000
#: Most buckets in one KPI answer (e.g. 2000 hours: almost 12 weeks).
MAX_BUCKETS = 2000


class TransactionIn(BaseModel):
    """One sale. Give the time as ``ts_ms`` or as ``time`` (ISO 8601 with a UTC offset), not both."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: Annotated[str, Field(pattern=pos.ID_PATTERN, description=(
        "Idempotency key, unique per store (e.g. the receipt id): a transaction id already stored is a "
        "duplicate and changes nothing (a conflict if its copy differs: see replace)."))]
    register_id: Annotated[str, Field(pattern=pos.ID_PATTERN, description="Till / register id.")]
    ts_ms: Annotated[int | None, Field(ge=0, le=MAX_TS_MS, description=(
        "Time of the sale, ms since epoch: from 1973 (a smaller number is seconds) to a day after now "
        "(a larger one is microseconds)."))] = None
    time: Annotated[Text | None, Field(max_length=64, description="Time of the sale, ISO 8601 with offset, "
                                                                 "e.g. 2026-03-29T10:15:00+02:00.")] = None
    amount_minor: Annotated[int, Field(ge=0, le=pos.MAX_AMOUNT_MINOR, description=(
        "Total in minor units of the currency (cents), >= 0."))]
    currency: Annotated[str, Field(pattern=pos.CURRENCY_PATTERN, description="ISO 4217 code.")] = "EUR"
    items_count: Annotated[int, Field(ge=0, le=pos.MAX_ITEMS, description="Number of items.")] = 0

    @field_validator("ts_ms")
    @classmethod
    def _ts_ms(cls, v: int | None) -> int | None:
        return None if v is None else pos.check_sale_ms(v)

    @field_validator("time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            pos.parse_ts(v)
        return v

    @model_validator(mode="after")
    def _one_time(self) -> "TransactionIn":
        if (self.ts_ms is None) == (self.time is None):
            raise ValueError("give exactly one of ts_ms and time")
        return self

    def when_ms(self) -> int:
        return self.ts_ms if self.ts_ms is not None else pos.parse_ts(self.time or "")


class TransactionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: Annotated[list[TransactionIn], Field(min_length=1, max_length=MAX_BATCH,
                                                       description=f"1 to {MAX_BATCH} transactions.")]


class TransactionsOut(_Out):
    received: int
    new: int = Field(description="Transactions stored by this request.")
    duplicates: int = Field(description="Transaction ids already stored (or repeated in the batch) with the same "
                                        "time, amount, currency, register and items: ignored.")
    conflicts: list[str] = Field(default_factory=list, description=(
        "Transaction ids already stored with another time, amount, currency, register or items (or given twice "
        "differently in the batch): not stored; `replace=true` stores the batch's copy in place of the stored one."))
    replaced: int = Field(0, description="Stored transactions replaced by their differing copy (replace=true).")
    older_than_lookback: list[str] = Field(default_factory=list, description=(
        "Replaced transactions whose old or new time lies before the store's KPI look-back (`rollup.lookback_h`, "
        "clipped to the retention): the store does not send their hours to the chain roll-up again by itself."))
    republish_lookback_h: float | None = Field(None, description=(
        "N of `storelens kpis publish --lookback-h N` (run at the store) that sends the hours of "
        "`older_than_lookback` to the chain again; null when none is needed or none can be sent."))
    warning: str | None = Field(None, description=(
        "What `older_than_lookback` means, naming the command, and which hours cannot be sent again (older "
        "than the retention keeps their data)."))


@router.post(
    "/v1/transactions", response_model=TransactionsOut,
    summary="Ingest point-of-sale transactions (idempotent by transaction_id)",
    description="Stores a batch of sales of the configured store. Resending a batch is safe: each "
                "`transaction_id` is stored once, the first copy is kept; a copy that differs is listed in "
                "`conflicts` and changes nothing unless `replace=true`. 422 names the bad field "
                "(e.g. `transactions.3.amount_minor`). Managers, admins, and API keys with one of these "
                "roles (the till integration); `replace=true` needs the admin role (403 otherwise) and leaves an "
                "audit entry (`pos.replace`) with the old and new values of each replaced transaction.",
)
def post_transactions(body: TransactionsIn, ctx: ContextDep, request: Request,
                      principal: Annotated[Principal, Depends(require_role("manager"))],
                      replace: Annotated[bool, Query(description=(
                          "Replace a stored transaction whose copy in the batch differs (a correction; admin "
                          "role, audited); default: a conflict."))] = False) -> TransactionsOut:
    if replace and not principal.may("admin"):
        raise HTTPException(403, "replace=true overwrites stored sales: it needs the admin role")
    items = [pos.transaction(t.transaction_id, ctx.config.store.id, t.register_id, t.when_ms(), t.amount_minor,
                             t.currency, t.items_count) for t in body.transactions]
    r = bq.import_transactions(ctx.storage, items, replace=replace, actor=principal.name,
                               client=request.client.host if request.client else "")
    if ctx.on_transactions is not None:  # every one, duplicates too: a retry may follow a failed publish
        ctx.on_transactions(items)
    late = (republish_advice(ctx.config, r.replaced_ts_ms, kpi_now_ms(ctx.config, ctx.storage))
            if r.replaced_ts_ms else None)
    return TransactionsOut(received=len(items), new=r.new, duplicates=r.duplicates, conflicts=r.conflicts,
                           replaced=r.replaced, older_than_lookback=list(late.ids) if late else [],
                           republish_lookback_h=late.republish_lookback_h if late else None,
                           warning=late.message if late else None)


# -- KPIs --------------------------------------------------------------------------------------


class KpiValues(_Out):
    visitors: int = Field(description="Entrance `in` crossings (lines of store.entrance_lines, default every "
                                      "line) of tracks not recognised as staff (see staff_in).")
    staff_in: int = Field(0, description="Entrance `in` crossings of tracks recognised as staff (a staff_only "
                                         "zone, the uniform cue) within a day of the recognition.")
    buying_units: int | None = Field(None, description="Buying units entering: people who crossed an entrance "
                                                       "line together count once, a person alone is one; groups "
                                                       "of staff only are none. null: groups.enabled is false.")
    transactions: int = Field(description="Sales in `currency` dated in the bucket.")
    sales_minor: int = Field(description="Sum of their amounts, minor units.")
    conversion: float | None = Field(description="transactions / visitors; null without visitors.")
    conversion_per_buying_unit: float | None = Field(
        None, description="transactions / buying_units; null without buying units (or groups disabled).")
    atv_minor: float | None = Field(description="Average transaction value: sales / transactions (minor units).")
    sales_per_visitor_minor: float | None = Field(description="sales / visitors (minor units).")
    median_dwell_s: float | None = Field(description="Median dwell of the visits of `area` zones that ended in "
                                                     "the bucket (zone exits).")
    queue_wait_median_s: float | None = Field(description="Median time spent in `queue` zones by those served "
                                                          "(left through the service edge) in the bucket.")
    queue_served: int = Field(description="Queue visits that ended served.")
    suppressed: bool = Field(False, description="median_dwell_s or queue_wait_median_s was withheld (null): "
                                                "computed from fewer than k_min visits (privacy.k_min).")
    abandonments: int = Field(description="Queue visits that ended another way (left the queue unserved); "
                                          "tracks lost inside are not counted.")
    shopper_to_staff_ratio: float | None = Field(None, description="visitors / staff_in: shoppers per staff "
                                                                   "member who came in (per day or week); null "
                                                                   "without staff_in.")


class KpiBucketOut(KpiValues):
    label: str = Field(description="Local start with its UTC offset (hour), the business day (day) or the ISO "
                                   "week (week).")
    day: str = Field(description="Business day (hour, day) or the week's Monday, local date.")
    start_ms: int
    end_ms: int
    hours: float = Field(description="Open hours in the bucket (23 or 25 on daylight-saving days).")


class KpisOut(_Out):
    store_id: str
    timezone: str
    period: Literal["hour", "day", "week"]
    opening_hours: bool = Field(description="Whether buckets are limited to the configured opening hours.")
    currency: str | None
    staff_excluded: bool = Field(description="Whether a staff cue is configured (staff_only zones with "
                                             "staff.zones, or staff.uniform): staff are excluded from visitors.")
    start_ms: int
    end_ms: int
    buckets: list[KpiBucketOut]
    totals: KpiValues
    source: Literal["history", "rollup"] = Field(
        "history", description="history: computed from this deployment's own history (its store); rollup: "
                               "another store's hours as it published them to the chain roll-up (medians "
                               "from histograms, within one bin; opening_hours and staff_excluded unknown: "
                               "false, and true when staff were counted).")


def _values(b: K.KpiBucket, k_min: int = DEFAULT_K) -> dict:
    """The bucket's figures; the two that describe people (medians of their dwell and wait) are withheld
    below ``k_min`` people (:mod:`storelens.domain.privacy`)."""
    return {"visitors": b.visitors, "transactions": b.transactions, "sales_minor": b.sales_minor,
            "conversion": b.conversion, "atv_minor": b.atv_minor, "sales_per_visitor_minor": b.sales_per_visitor_minor,
            "queue_served": b.queue_served, "abandonments": b.abandonments,
            **_people_medians(b.median_dwell_s, len(b.dwell_ms), b.queue_wait_median_s, b.queue_served, k_min)}


def _people_medians(dwell_s: float | None, n_dwell: int, wait_s: float | None, n_wait: int, k_min: int) -> dict:
    """The two figures that describe people (median dwell of ``n_dwell`` visits, median queue wait of ``n_wait``
    served), each withheld below ``k_min`` people, and whether one was (:mod:`storelens.domain.privacy`)."""
    return {"median_dwell_s": keep(dwell_s, n_dwell, k_min), "queue_wait_median_s": keep(wait_s, n_wait, k_min),
            "suppressed": is_suppressed(n_dwell, k_min) or is_suppressed(n_wait, k_min)}


@router.get(
    "/v1/kpis", response_model=KpisOut,
    summary="Store KPIs per hour, day or week of the store's own calendar",
    description="Buckets follow `store.timezone` and `store.opening_hours`: a day is the business day (local "
                "midnight to midnight, 23 or 25 hours when the clocks change; with opening hours the session "
                "from opening to closing, a closing after midnight belonging to the day it opened), an hour is "
                "a local clock hour (skipped or repeated when the clocks change) within the opening hours, a "
                "week runs Monday to Sunday. Every bucket overlapping [start_ms, end_ms) is reported whole; "
                "events outside the opening hours count nowhere. conversion = transactions / visitors; "
                "atv = sales / transactions; sales per visitor = sales / visitors. k-anonymity: the figures that "
                "describe people, median_dwell_s and queue_wait_median_s, are null with `suppressed: true` when "
                "computed from 1 to k_min-1 visits (privacy.k_min, default 5); counts and sales are reported.",
    responses={404: {"description": "Another store than the configured one."}},
)
def get_kpis(
    ctx: ContextDep,
    start_ms: StartMs,
    end_ms: EndMs = None,
    period: Annotated[Literal["hour", "day", "week"], Query(description="Bucket length.")] = "day",
    store: Annotated[Text | None, Query(max_length=200, description="Store id (default the configured one).")] = None,
    currency: Annotated[str | None, Query(pattern=pos.CURRENCY_PATTERN, description=(
        "Currency of the sales figures; default the most frequent one in the range."))] = None,
) -> KpisOut:
    cfg = ctx.config.store
    if store is not None and store != cfg.id:
        out = _rolled_up(ctx, store, *resolve_range(start_ms, end_ms), period, currency)
        if out is None:
            raise HTTPException(404, f"unknown store {store!r}: neither this deployment's store ({cfg.id!r}) "
                                     f"nor one of the chain roll-up (GET /v1/stores)")
        return out
    start_ms, end_ms = resolve_range(start_ms, end_ms)
    if end_ms > CALENDAR_MAX_MS:  # dates end with the year 9999 (a week of margin for whole buckets)
        raise HTTPException(422, f"end_ms ({end_ms}) is past the calendar's last day (at most {CALENDAR_MAX_MS})")
    cal = calendar(ctx.config)
    _check_span(start_ms, end_ms, period)
    buckets = cal.buckets(period, start_ms, end_ms)
    if len(buckets) > MAX_BUCKETS:
        raise HTTPException(422, f"the range has more than {MAX_BUCKETS} {period} buckets: narrow it")
    if currency is not None:  # the rolled-up store's rule: a currency the store sells, else 422
        sold = bq.currencies_sold(ctx.storage, cfg.id, *_currency_window(start_ms, end_ms))
        _check_currency(cfg.id, currency, sold, None if sold else bq.last_currency(ctx.storage, cfg.id))
    r = store_kpis(ctx.config, ctx.storage, buckets, start_ms, end_ms, currency)
    groups_on = r.groups_on

    def values(k: K.KpiBucket, staff_in: int, units: int) -> dict:
        return {**_values(k, ctx.config.privacy.k_min), "staff_in": staff_in, "buying_units": units if groups_on else None,
                "conversion_per_buying_unit": ST.ratio(k.transactions, units) if groups_on else None,
                "shopper_to_staff_ratio": ST.ratio(k.visitors, staff_in)}

    return KpisOut(
        store_id=cfg.id, timezone=cfg.timezone, period=period, opening_hours=cfg.opening_hours is not None,
        currency=r.currency, staff_excluded=r.staff_excluded, start_ms=start_ms, end_ms=end_ms,
        buckets=[KpiBucketOut(label=b.label, day=b.day.isoformat(), start_ms=b.start_ms, end_ms=b.end_ms,
                              hours=b.hours, **values(k, n_staff, n_units))
                 for b, k, n_staff, n_units in zip(r.buckets, r.per, r.staff_per, r.units_per)],
        totals=KpiValues(**values(r.total, r.staff_total, r.units_total)))



#: Either side of a ``/v1/kpis`` range (whole weeks, and a day more): what its buckets may hold, and where the
#: store must have sold in the ``currency`` asked for (:func:`_check_currency`).
_PAD_MS = 8 * 86_400_000


def _currency_window(start_ms: int, end_ms: int) -> tuple[int, int]:
    return max(0, start_ms - _PAD_MS), end_ms + _PAD_MS


def _check_currency(store: str, currency: str, sold: Collection[str], newest: str | None) -> None:
    """422 when ``store`` does not sell in ``currency``: ``sold`` (its currencies in the range padded by
    :func:`_currency_window`) lacks it while holding others, or is empty and its newest sale (``newest``) is in
    another one. An hour or day without a sale in ``currency`` of a store that sells in it is zeros. The rule of
    the own store and of the rolled-up ones alike."""
    if currency in sold or (not sold and newest in (None, "", currency)):
        return
    raise HTTPException(422, f"store {store!r} reports sales in {', '.join(sorted(sold)) or newest}, "
                             f"not {currency}")


def _check_span(start_ms: int, end_ms: int, period: str) -> None:
    """422 before reading when ``[start_ms, end_ms)`` spans more than :data:`MAX_BUCKETS` buckets of ``period``
    (whole buckets: at most a day more, either side)."""
    if (end_ms - start_ms) / 3_600_000 > MAX_BUCKETS * {"hour": 1, "day": 24, "week": 168}[period] + 24:
        raise HTTPException(422, f"the range has more than {MAX_BUCKETS} {period} buckets: narrow it")


def chain_values(k: R.ChainKpis, k_min: int) -> dict:
    """:class:`KpiValues` of rolled-up store-hours (medians from the histograms, withheld below ``k_min``)."""
    return {"visitors": k.visitors, "staff_in": k.staff_in, "buying_units": k.buying_units,
            "transactions": k.transactions, "sales_minor": k.sales_minor, "conversion": k.conversion,
            "conversion_per_buying_unit": k.conversion_per_buying_unit, "atv_minor": k.atv_minor,
            "sales_per_visitor_minor": k.sales_per_visitor_minor, "queue_served": k.queue_served,
            "abandonments": k.abandonments, "shopper_to_staff_ratio": k.shopper_to_staff_ratio,
            **_people_medians(k.median_dwell_s, k.dwell_visits, k.queue_wait_median_s, k.queue_served, k_min)}


def bucket_label(period: str, key: str) -> str:
    """The label of a rolled-up bucket like the store's own: the day, the ISO week, the local hour."""
    if period == "week":
        iso = dt.date.fromisoformat(key).isocalendar()
        return f"{iso[0]}-W{iso[1]:02d}"
    return key


def _rolled_up(ctx, store: str, start_ms: int, end_ms: int, period: str, currency: str | None) -> KpisOut | None:
    """Another store's KPIs from the chain roll-up (its published hours), ``None`` when it has none.

    A bucket (the store's business day, week, or one hour) is reported whole when one of its hours
    overlaps ``[start_ms, end_ms)``."""
    info = next((s for s in rq.chain_stores(ctx.storage) if s.store_id == store), None)
    if info is None:
        return None
    _check_span(start_ms, end_ms, period)  # before reading its hours
    lo, hi = _currency_window(start_ms, end_ms)  # whole weeks either side
    # the currency of the hours in the range (default the most frequent, like the store's own), not of its newest
    sold = rq.sales_currencies(ctx.storage, stores=[store], start_ms=lo, end_ms=hi)
    if currency is None:
        currency = max(sorted(sold), key=lambda c: sold[c].transactions) if sold else (info.currency or None)
    else:
        _check_currency(store, currency, sold, info.currency)
    rows = rq.hour_rows(ctx.storage, stores=[store], start_ms=lo, end_ms=hi, per="hour" if period == "hour" else "day",
                        currency=currency)
    keyed = [(str(r.start_ms) if period == "hour" else R.period_key(period, r.day, r.label), r) for r in rows]
    wanted = {k for k, r in keyed if r.start_ms < end_ms and r.end_ms > start_ms}
    groups: dict[str, list] = {}
    for k, r in keyed:
        if k in wanted:
            groups.setdefault(k, []).append(r)
    if len(groups) > MAX_BUCKETS:
        raise HTTPException(422, f"the range has more than {MAX_BUCKETS} {period} buckets: narrow it")
    k_min = ctx.config.privacy.k_min
    # whether the store counts visitors: over the whole request, so its quiet hours' sales count in their buckets
    counting = R.with_visitors(r for rs in groups.values() for r in rs)
    buckets, total = [], R.aggregate(counting)
    for k, rs in sorted(groups.items(), key=lambda kv: kv[1][0].start_ms):
        agg = R.aggregate(counting)
        for r in rs:
            agg.add(r.kpis)
        total.add(agg)
        buckets.append(KpiBucketOut(
            label=rs[0].label if period == "hour" else bucket_label(period, k),
            day=rs[0].day if period != "week" else k, start_ms=rs[0].start_ms,
            end_ms=max(r.end_ms for r in rs), hours=agg.hours, **chain_values(agg, k_min)))
    return KpisOut(store_id=store, timezone=info.timezone, period=period, opening_hours=False,
                   currency=currency, staff_excluded=total.staff_in > 0, start_ms=start_ms,
                   end_ms=end_ms, buckets=buckets, totals=KpiValues(**chain_values(total, k_min)), source="rollup")
