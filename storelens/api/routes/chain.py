"""The chain: its stores (``GET /v1/stores``) and KPIs by store, region or chain, compared (``GET /v1/chain/kpis``).

Read from the roll-up tables (:mod:`storelens.storage.rollup`): in a chain's deployment every
store's published hours; in a store's own deployment the hours it rolled up itself, if any.
Stores are compared on their own local business days (``from_day``/``to_day``), whatever their
time zones.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import HTTPException, Query
from pydantic import Field

from storelens.domain import pos
from storelens.domain import rollup as R
from storelens.storage import rollup as rq

from ..deps import ContextDep, Text, api_router
from ..models import ErrorOut, _Out
from .business import MAX_BUCKETS, KpiValues, bucket_label, chain_values

router = api_router("chain", role="viewer")

#: Longest range of business days in one answer.
MAX_DAYS = 400
#: Most buckets in one answer, every group's together (each group has at most MAX_BUCKETS, its time axis, as a
#: store's own /v1/kpis): 91 days of a 200-store chain by store (18,200).
MAX_ANSWER_BUCKETS = 20_000
Day = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="Local business day, YYYY-MM-DD.")]


class StoreOut(_Out):
    store_id: str
    name: str
    region: str = Field(description="store.region of the store ('' when none).")
    timezone: str
    currency: str | None = Field(description="Currency of its sales (null before its first sale).")
    updated_ms: int = Field(description="When the store last computed the hours it published (its clock).")
    last_hour_ms: int = Field(description="Start of the newest hour in that publication.")


class StoresOut(_Out):
    stores: list[StoreOut]
    regions: list[str] = Field(description="The distinct regions, sorted.")


@router.get("/v1/stores", response_model=StoresOut, summary="The stores of the chain roll-up",
            description="Every store whose KPI hours reached this deployment's roll-up (the chain's "
                        "`chain-rollup` service, or `storelens kpis publish`), with its region and time zone.")
def get_stores(ctx: ContextDep) -> StoresOut:
    stores = rq.chain_stores(ctx.storage)
    return StoresOut(stores=[StoreOut(store_id=s.store_id, name=s.store_name, region=s.region, timezone=s.timezone,
                                      currency=s.currency or None, updated_ms=s.updated_ms,
                                      last_hour_ms=s.last_hour_ms) for s in stores],
                     regions=sorted({s.region for s in stores}))


class ChainValues(KpiValues):
    hours: float = Field(description="Open store-hours reported (a store open 12 hours on a day adds 12).")
    stores: int = Field(description="Stores with hours in it.")


class ChainBucketOut(ChainValues):
    key: str = Field(description="The business day, the Monday of the ISO week, or the local hour (YYYY-MM-DDTHH:MM; "
                                 "the second of a repeated hour when the clocks go back with its UTC offset, "
                                 "YYYY-MM-DDTHH:MM+HH:MM).")
    label: str


class Comparison(_Out):
    """The group against the whole selection (1.0 = equal to it)."""

    conversion_index: float | None
    atv_index: float | None
    sales_per_visitor_index: float | None
    visitors_share: float | None = Field(description="Share of all visitors of the selection.")
    sales_share: float | None
    rank_conversion: int | None = Field(description="1 = highest conversion among the groups (null: none).")
    rank_sales_per_visitor: int | None


class GroupOut(_Out):
    group: str = Field(description="Store id, region ('' = stores without one), or 'chain'.")
    name: str = Field(description="The store's name; the region or 'chain' otherwise.")
    region: str | None = Field(description="The store's region (group_by=store), else null.")
    store_ids: list[str]
    totals: ChainValues
    comparison: Comparison
    buckets: list[ChainBucketOut]


class CurrencyOut(_Out):
    currency: str
    currency_decimals: int = Field(description="Its ISO 4217 minor unit (sales_minor / 10**currency_decimals).")
    stores: int = Field(description="Stores that sold in it (as their hours' currency or another one).")
    transactions: int
    sales_minor: int


class ChainKpisOut(_Out):
    period: Literal["hour", "day", "week"]
    group_by: Literal["store", "region", "chain"]
    from_day: str = Field(description="First business day covered (period=week: the Monday of from_day's ISO week).")
    to_day: str = Field(description="Last business day covered (period=week: the Sunday of to_day's ISO week).")
    currency: str | None
    currency_decimals: int | None = Field(description=(
        "Decimals of `currency` (ISO 4217 minor unit: 2 for EUR, 0 for JPY, 3 for KWD): every *_minor amount is "
        "amount / 10**currency_decimals in the currency (null: no currency)."))
    currencies: list[CurrencyOut] = Field(description=(
        "Every currency the selected stores sold in over the range, whatever `currency`, with its transactions "
        "and sales (a store's second currency too), by currency."))
    chain: ChainValues = Field(description=(
        "Every selected store together; also the sales in `currency` of the stores whose hours are in another "
        "currency (in transactions, sales and the average basket only: not in conversion, sales per visitor "
        "or `stores`; in a group only when the group has hours of its own in `currency`)."))
    groups: list[GroupOut]
    stores_without_hours: list[str] = Field(default_factory=list, description=(
        "Stores of the selection (`store`, `region`; with `currency=` those selling in it) without an hour in the "
        "range: in no group and no figure (e.g. a store whose roll-up stopped: see `last_hour_ms` of /v1/stores)."))


def whole_weeks(first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    """``first`` back to its ISO week's Monday, ``last`` on to its Sunday (the calendar's last day at most).

    >>> [d.isoformat() for d in whole_weeks(dt.date(2026, 3, 4), dt.date(2026, 3, 10))]
    ['2026-03-02', '2026-03-15']
    >>> whole_weeks(dt.date(9999, 12, 29), dt.date(9999, 12, 31))[1].isoformat()
    '9999-12-31'
    """
    monday = first - dt.timedelta(days=first.weekday())  # 0001-01-01 is a Monday: never before it
    sunday = last + dt.timedelta(days=min(6 - last.weekday(), (dt.date.max - last).days))
    return monday, sunday


def _check_buckets(period: str, total: int, largest: int) -> None:
    """422 for more than :data:`MAX_BUCKETS` buckets in a group or :data:`MAX_ANSWER_BUCKETS` in all."""
    if largest > MAX_BUCKETS:
        raise HTTPException(422, f"more than {MAX_BUCKETS} {period} buckets in a group: narrow the range")
    if total > MAX_ANSWER_BUCKETS:
        raise HTTPException(422, f"more than {MAX_ANSWER_BUCKETS} {period} buckets in all the groups: narrow the "
                                 f"range or the stores")


def _values(k: R.ChainKpis, k_min: int) -> dict:
    return {**chain_values(k, k_min), "hours": k.hours, "stores": len(k.stores)}


def _ranks(groups: dict[str, R.ChainKpis], attr: str) -> dict[str, int]:
    vals = sorted(((getattr(k, attr), g) for g, k in groups.items() if getattr(k, attr) is not None), reverse=True)
    return {g: i + 1 for i, (_, g) in enumerate(vals)}


@router.get(
    "/v1/chain/kpis", response_model=ChainKpisOut,
    summary="KPIs by store, region or the whole chain, compared",
    description="Adds up the stores' published hours per business day (`day`), ISO week (`week`) or local hour "
                "(`hour`, stores compared on their own clocks; `week`: whole weeks, the range widened to the Monday of "
                "`from_day`'s week and the Sunday of `to_day`'s, as `/v1/kpis` reports a week, the answer's "
                "`from_day`/`to_day` the days covered) and per store, region or the chain, with each group "
                "compared to the selection: conversion, average transaction value and sales per visitor as an "
                "index (1.0 = the selection's), share of visitors and sales, ranks. Default range: the 7 business "
                "days up to the newest one reported. Sales are only added up in one currency: stores that sold in "
                "several currencies in the range need `currency=` (`currencies` lists them with their sales), "
                "which keeps the hours of that currency (and the hours without sales of the stores selling in "
                "it). A store's sales in it beside its hours' own currency count in transactions, sales and "
                "the average basket only: never in conversion or sales per visitor (their visitors are in their "
                "own currency's hours), never as a store or a group of their own. Medians from histograms "
                "(within one bin), withheld below privacy.k_min visits like the store's own KPIs. 422: a bad "
                "range, more than 2000 buckets in a group or 20,000 in all, or stores in several currencies "
                "without `currency=`. 404: a `store` or `region` that no store of the roll-up has (each unknown "
                "store named). A store of the selection without an hour in the range is in no group: "
                "`stores_without_hours` names it.",
    responses={404: {"model": ErrorOut, "description": "Unknown store or region."}},
)
def get_chain_kpis(
    ctx: ContextDep,
    period: Annotated[Literal["hour", "day", "week"], Query(description="Bucket.")] = "day",
    group_by: Annotated[Literal["store", "region", "chain"], Query(description="Group.")] = "store",
    from_day: Day = None,
    to_day: Day = None,
    region: Annotated[Text | None, Query(max_length=100, description="Only the stores of this region.")] = None,
    store: Annotated[list[Text] | None, Query(max_length=500, description="Only these stores (repeat the parameter).")
                     ] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description=(
        "Only the hours with sales in it, and the hours without sales of the stores selling in it."))] = None,
) -> ChainKpisOut:
    stores = rq.chain_stores(ctx.storage)
    # a filter that names nothing is a 404, not the zeros of a store without customers
    if unknown := sorted({*(store or ())} - {s.store_id for s in stores}):
        raise HTTPException(404, f"unknown store{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                                 f"not in the chain roll-up (GET /v1/stores)")
    if region is not None and region not in {s.region for s in stores}:
        raise HTTPException(404, f"unknown region {region!r}: no store of the chain roll-up has it (GET /v1/stores)")
    chosen = [s for s in stores if (region is None or s.region == region) and (store is None or s.store_id in store)]
    ids = [s.store_id for s in chosen]
    try:
        # default range: up to the newest day of the stores selling in the currency asked for (if any)
        fits = [s.store_id for s in chosen if currency is None or s.currency in (currency, "")] or ids
        newest = rq.newest_day(ctx.storage, fits) if chosen else None
        last = dt.date.fromisoformat(to_day or newest or dt.date.today().isoformat())
        first = dt.date.fromisoformat(from_day) if from_day else last - dt.timedelta(days=6)
    except ValueError as exc:
        raise HTTPException(422, f"from_day/to_day: {exc}") from None
    except OverflowError:  # to_day in the first days of year 1: its default 7-day range starts before it
        raise HTTPException(422, f"from_day: the default range (the 7 days up to to_day {last.isoformat()}) starts "
                                 f"before 0001-01-01: pass from_day") from None
    if first > last:
        raise HTTPException(422, "from_day is after to_day")
    if (last - first).days + 1 > MAX_DAYS:
        raise HTTPException(422, f"more than {MAX_DAYS} days: narrow the range")
    if period == "week":  # whole ISO weeks, as /v1/kpis reports them: a week's bucket holds its seven days
        first, last = whole_weeks(first, last)
    # the currencies of the hours that would be added up, not of the stores' newest hours
    per_currency = rq.sales_currencies(ctx.storage, stores=ids, from_day=first.isoformat(),
                                       to_day=last.isoformat()) if chosen else {}
    sold = sorted(per_currency)
    if currency is None and len(sold) > 1:
        raise HTTPException(422, f"the stores sell in {', '.join(sold)}: pass currency= to compare the "
                                 f"stores of one currency")
    if chosen:  # before the rows are read: a chain's year of store-hours is millions of them
        _check_buckets(period, *rq.buckets_at_least(ctx.storage, period=period, group_by=group_by, stores=ids,
                                                    from_day=first.isoformat(), to_day=last.isoformat(),
                                                    currency=currency))
    rows = rq.hour_rows(ctx.storage, stores=ids, from_day=first.isoformat(), to_day=last.isoformat(),
                        per="hour" if period == "hour" else "day", currency=currency) if chosen else []
    counting = R.with_visitors(rows)  # over the whole request: each bucket's conversion adds up to the total's
    rolled = R.roll_up(rows, period, group_by, counting)
    _check_buckets(period, sum(len(per) for per, _ in rolled.values()),
                   max((len(per) for per, _ in rolled.values()), default=0))
    k_min = ctx.config.privacy.k_min
    everything = R.aggregate(counting)  # the rows, not the groups: a sales-only row may have none
    for row in rows:
        everything.add(row.kpis)
    totals = {g: tot for g, (_, tot) in rolled.items()}
    rank_conv, rank_spv = _ranks(totals, "conversion"), _ranks(totals, "sales_per_visitor_minor")
    info = {s.store_id: s for s in stores}
    groups = []
    for g, (per, tot) in rolled.items():
        s = info.get(g) if group_by == "store" else None
        groups.append(GroupOut(
            group=g, name=s.store_name if s else g, region=s.region if s else None, store_ids=sorted(tot.stores),
            totals=ChainValues(**_values(tot, k_min)),
            comparison=Comparison(
                conversion_index=R.index(tot.conversion, everything.conversion),
                atv_index=R.index(tot.atv_minor, everything.atv_minor),
                sales_per_visitor_index=R.index(tot.sales_per_visitor_minor, everything.sales_per_visitor_minor),
                visitors_share=R.index(tot.visitors, everything.visitors),
                sales_share=R.index(tot.sales_minor, everything.sales_minor),
                rank_conversion=rank_conv.get(g), rank_sales_per_visitor=rank_spv.get(g)),
            buckets=[ChainBucketOut(key=k, label=bucket_label(period, k) if period != "hour" else k,
                                    **_values(v, k_min)) for k, v in per.items()]))
    cur = currency or (sold[0] if sold else None)
    reported = {row.store_id for row in rows if not row.sales_only}
    absent = sorted(s.store_id for s in chosen if s.store_id not in reported and (currency is None or s.currency in (
        currency, "")))
    return ChainKpisOut(period=period, group_by=group_by, from_day=first.isoformat(), to_day=last.isoformat(),
                        currency=cur, currency_decimals=None if cur is None else pos.currency_decimals(cur),
                        currencies=[CurrencyOut(currency=c, currency_decimals=pos.currency_decimals(c), stores=x.stores,
                                                transactions=x.transactions, sales_minor=x.sales_minor)
                                    for c, x in per_currency.items()],
                        chain=ChainValues(**_values(everything, k_min)), groups=groups, stores_without_hours=absent)
