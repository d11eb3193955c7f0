"""Point-of-sale transactions in (``POST /v1/transactions``), store KPIs out (``GET /v1/kpis``).

KPIs are computed per bucket of the store's own calendar (:mod:`storelens.domain.calendar`:
``store.timezone`` and ``store.opening_hours``) from the entrance crossings, the stored
transactions and the zone exits (:mod:`storelens.domain.kpis`).
"""
from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storelens.domain import kpis as K
from storelens.domain import pos
from storelens.domain import staff as ST
from storelens.domain.calendar import StoreCalendar
from storelens.domain.privacy import DEFAULT_K, is_suppressed, keep
from storelens.storage import business as bq
from storelens.storage import groups as gq

from ..deps import MAX_TS_MS, ContextDep, EndMs, StartMs, api_router, require_role, resolve_range
from ..models import _Out

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
        "duplicate and changes nothing."))]
    register_id: Annotated[str, Field(pattern=pos.ID_PATTERN, description="Till / register id.")]
    ts_ms: Annotated[int | None, Field(ge=0, le=MAX_TS_MS, description="Time of the sale, ms since epoch.")] = None
    time: Annotated[str | None, Field(max_length=64, description="Time of the sale, ISO 8601 with offset, "
                                                                 "e.g. 2026-03-29T10:15:00+02:00.")] = None
    amount_minor: Annotated[int, Field(ge=0, le=pos.MAX_AMOUNT_MINOR, description=(
        "Total in minor units of the currency (cents), >= 0."))]
    currency: Annotated[str, Field(pattern=pos.CURRENCY_PATTERN, description="ISO 4217 code.")] = "EUR"
    items_count: Annotated[int, Field(ge=0, le=pos.MAX_ITEMS, description="Number of items.")] = 0

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
    duplicates: int = Field(description="Transaction ids already stored (or repeated in the batch): ignored.")


@router.post(
    "/v1/transactions", response_model=TransactionsOut, dependencies=[Depends(require_role("manager"))],
    summary="Ingest point-of-sale transactions (idempotent by transaction_id)",
    description="Stores a batch of sales of the configured store. Resending a batch is safe: each "
                "`transaction_id` is stored once, the first copy is kept. 422 names the bad field "
                "(e.g. `transactions.3.amount_minor`). Managers, admins, and API keys with one of these "
                "roles (the till integration).",
)
def post_transactions(body: TransactionsIn, ctx: ContextDep) -> TransactionsOut:
    items = [pos.transaction(t.transaction_id, ctx.config.store.id, t.register_id, t.when_ms(), t.amount_minor,
                             t.currency, t.items_count) for t in body.transactions]
    new, dup = bq.write_transactions(ctx.storage, items)
    if ctx.on_transactions is not None:  # every one, duplicates too: a retry may follow a failed publish
        ctx.on_transactions(items)
    return TransactionsOut(received=len(items), new=new, duplicates=dup)


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


def _values(b: K.KpiBucket, k_min: int = DEFAULT_K) -> dict:
    """The bucket's figures; the two that describe people (medians of their dwell and wait) are withheld
    below ``k_min`` people (:mod:`storelens.domain.privacy`)."""
    n_dwell, n_wait = len(b.dwell_ms), b.queue_served
    return {"visitors": b.visitors, "transactions": b.transactions, "sales_minor": b.sales_minor,
            "conversion": b.conversion, "atv_minor": b.atv_minor, "sales_per_visitor_minor": b.sales_per_visitor_minor,
            "median_dwell_s": keep(b.median_dwell_s, n_dwell, k_min),
            "queue_wait_median_s": keep(b.queue_wait_median_s, n_wait, k_min),
            "queue_served": b.queue_served, "abandonments": b.abandonments,
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
    store: Annotated[str | None, Query(max_length=200, description="Store id (default the configured one).")] = None,
    currency: Annotated[str | None, Query(pattern=pos.CURRENCY_PATTERN, description=(
        "Currency of the sales figures; default the most frequent one in the range."))] = None,
) -> KpisOut:
    cfg = ctx.config.store
    if store is not None and store != cfg.id:
        raise HTTPException(404, f"unknown store {store!r}")
    start_ms, end_ms = resolve_range(start_ms, end_ms)
    cal = StoreCalendar(cfg.timezone, cfg.opening_minutes())
    # Whole buckets: at most a week either side of the range.
    if (end_ms - start_ms) / 3_600_000 > MAX_BUCKETS * {"hour": 1, "day": 24, "week": 168}[period] + 24:
        raise HTTPException(422, f"the range has more than {MAX_BUCKETS} {period} buckets: narrow it")
    buckets = cal.buckets(period, start_ms, end_ms)
    if len(buckets) > MAX_BUCKETS:
        raise HTTPException(422, f"the range has more than {MAX_BUCKETS} {period} buckets: narrow it")
    lo = min((b.start_ms for b in buckets), default=start_ms)
    hi = max((b.end_ms for b in buckets), default=end_ms)
    lines = None if cfg.entrance_lines is None else [tuple(x.split("/", 1)) for x in cfg.entrance_lines]
    staff = gq.staff_track_ids(ctx.storage, lo - ST.STAFF_DAY_MS, hi + ST.STAFF_DAY_MS)
    visitors, staff_times = ST.split_entries(gq.in_crossings_by_track(ctx.storage, lines, lo, hi), staff)
    sales = bq.sales(ctx.storage, cfg.id, lo, hi)
    if currency is None and sales:
        currency = Counter(s.currency for s in sales).most_common(1)[0][0]
    exits = bq.zone_exits(ctx.storage, (*K.DWELL_ZONE_KINDS, "queue"), lo, hi)
    per, total = K.compute(buckets, visitors, [(s.ts_ms, s.amount_minor) for s in sales if s.currency == currency],
                           [(e.ts_ms, e.zone_kind, e.dwell_ms, e.how) for e in exits])
    staff_per, staff_total = ST.per_bucket(buckets, staff_times)
    groups_on = ctx.config.groups.enabled
    units_per, units_total = ST.per_bucket(
        buckets, ST.unit_entries(gq.unit_entries(ctx.storage, lines, lo, hi), staff) if groups_on else [])

    def values(k: K.KpiBucket, staff_in: int, units: int) -> dict:
        return {**_values(k, ctx.config.privacy.k_min), "staff_in": staff_in, "buying_units": units if groups_on else None,
                "conversion_per_buying_unit": ST.ratio(k.transactions, units) if groups_on else None,
                "shopper_to_staff_ratio": ST.ratio(k.visitors, staff_in)}

    staff_cfg = ctx.config.staff
    staff_excluded = staff_cfg.uniform is not None or (
        staff_cfg.zones and any(z.kind == "staff_only" for c in ctx.config.cameras for z in c.zones))
    return KpisOut(
        store_id=cfg.id, timezone=cfg.timezone, period=period, opening_hours=cfg.opening_hours is not None,
        currency=currency, staff_excluded=staff_excluded, start_ms=start_ms, end_ms=end_ms,
        buckets=[KpiBucketOut(label=b.label, day=b.day.isoformat(), start_ms=b.start_ms, end_ms=b.end_ms,
                              hours=b.hours, **values(k, n_staff, n_units))
                 for b, k, n_staff, n_units in zip(buckets, per, staff_per, units_per)],
        totals=KpiValues(**values(total, staff_total, units_total)))
