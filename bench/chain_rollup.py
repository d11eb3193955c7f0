#!/usr/bin/env python
"""The chain roll-up at chain scale (issue 11 item 6): ingest rate and query times on PostgreSQL.

1. **Hours**: ``--stores`` stores in ``--regions`` regions and 3 time zones, each open 09:00-20:00
   every day for ``--days`` days, one ``StoreKpiHour`` per open hour with made-up but plausible
   figures (Poisson visitors, conversion around 0.25, dwell histograms). Synthetic on purpose: no
   footage has months of a chain; what is measured is the roll-up's arithmetic and SQL, which does
   not care where the numbers came from (tests/test_chain_rollup.py checks the figures on real
   footage).
2. **Ingest**: the chain's own path, ``ChainRollupStage`` under the runner core with the history
   sink (decode, check, upsert of the hour and its store), batches of ``--batch`` messages (the
   consumer's fetch batch), into a fresh schema of ``$STORELENS_PG_DSN``: hours per second.
3. **Queries**: the chain API in process (``TestClient``, viewer API key), median of ``--repeat``
   runs per request: ``/v1/stores``, ``/v1/chain/kpis`` by store / region / chain for a week and
   for a quarter (by week), ``/v1/kpis?store=...`` of one store for a quarter.

No open tool rolls people-counting KPIs up across stores (Ultralytics, supervision, Frigate count
per camera; the commercial counters' portals are not runnable here), so the table has no peer
column: the numbers are the cost of the feature.

    python bench/chain_rollup.py --stores 200 --days 92        # needs STORELENS_PG_DSN (scripts/stack.sh env)
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
import uuid
import zoneinfo

from benchlib import cpu_line  # bench/ is on sys.path when run as a script


def hours_for(store: str, region: str, tz: str, days: int, rng: random.Random, computed_ms: int):
    from storelens.contract import messages as m
    from storelens.domain.rollup import histogram

    zone = zoneinfo.ZoneInfo(tz)
    first = dt.date(2026, 9, 1)
    for d in range(days):
        day = first + dt.timedelta(days=d)
        for hour in range(9, 20):
            start = dt.datetime.combine(day, dt.time(hour), zone)
            visitors = rng.randint(5, 60)
            tx = sum(rng.random() < 0.25 for _ in range(visitors))
            dwell = [rng.lognormvariate(5.0, 0.8) * 1000 for _ in range(visitors)]
            waits = [rng.lognormvariate(4.0, 0.6) * 1000 for _ in range(tx)]
            yield m.StoreKpiHour(
                store_id=store, store_name=store.title(), region=region, timezone=tz,
                start_ms=int(start.timestamp() * 1000), end_ms=int(start.timestamp() * 1000) + 3_600_000,
                day=day.isoformat(), label=start.isoformat(timespec="minutes"), hours=1.0, visitors=visitors,
                staff_in=rng.randint(0, 2), buying_units=max(1, int(visitors * 0.7)), transactions=tx,
                sales_minor=sum(rng.randint(500, 9000) for _ in range(tx)), currency="EUR",
                dwell_hist=histogram(dwell), queue_wait_hist=histogram(waits), abandonments=rng.randint(0, 2),
                computed_ms=computed_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stores", type=int, default=200)
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--days", type=int, default=92)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dsn = os.environ.get("STORELENS_PG_DSN")
    if not dsn:
        print("error: set STORELENS_PG_DSN (eval \"$(scripts/stack.sh env)\")", file=sys.stderr)
        return 2

    import psycopg
    from psycopg import sql

    from storelens.api import create_app
    from storelens.api.testing import signed_in_client
    from storelens.config import parse_config
    from storelens.contract import messages as m
    from storelens.contract import topics
    from storelens.runtime.bus import BusMessage
    from storelens.runtime.runner import RunnerCore
    from storelens.runtime.sinks import HistorySink
    from storelens.stages.rollup import ChainRollupStage
    from storelens.storage.history import SqlStorage

    schema = f"bench_chain_{uuid.uuid4().hex[:8]}"
    storage = SqlStorage(dsn, schema=schema)
    config = parse_config({"store": {"id": "chain"}, "cameras": [], "chain": {}})
    try:
        rng = random.Random(7)
        zones = ("Europe/Berlin", "Europe/London", "America/New_York")
        msgs = []
        for i in range(args.stores):
            store = f"store-{i:04d}"
            msgs += [m.encode(h) for h in hours_for(store, f"region-{i % args.regions}", zones[i % 3], args.days,
                                                    rng, 1_800_000_000_000)]
        core = RunnerCore(ChainRollupStage(config))
        sink = HistorySink(storage)
        t0 = time.perf_counter()
        for k in range(0, len(msgs), args.batch):
            records = []
            for j, value in enumerate(msgs[k:k + args.batch]):
                h = core.process(BusMessage("store-x.store-kpis", b"", value, k + j), topics.STORE_KPIS)
                records += h.outputs.records
            sink.write(records)
        ingest_s = time.perf_counter() - t0
        rows = [("ingest (stage + upsert)", f"{len(msgs)} hours", f"{ingest_s:.1f} s",
                 f"{len(msgs) / ingest_s:,.0f} hours/s")]

        week = {"from_day": "2026-11-24", "to_day": "2026-11-30"}
        quarter = {"from_day": "2026-09-01", "to_day": "2026-11-30"}
        requests = [
            ("/v1/stores", {}),
            ("/v1/chain/kpis", {**week, "group_by": "store"}),
            ("/v1/chain/kpis", {**week, "group_by": "region"}),
            ("/v1/chain/kpis", {**week, "group_by": "chain"}),
            ("/v1/chain/kpis", {**quarter, "group_by": "region", "period": "week"}),
            ("/v1/chain/kpis", {**quarter, "group_by": "chain", "period": "day"}),
            ("/v1/kpis", {"store": "store-0001", "period": "day", "start_ms": 1_788_000_000_000,
                          "end_ms": 1_796_000_000_000}),
        ]
        with signed_in_client(create_app(config, storage), role="viewer") as c:
            for path, params in requests:
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = c.get(path, params=params)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                desc = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items() if k != "end_ms") if params else "")
                rows.append((desc, f"{len(r.content) / 1024:.0f} KiB", f"{statistics.median(times) * 1000:.0f} ms",
                             ""))
    finally:
        storage.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(f"# chain roll-up: {args.stores} stores, {args.regions} regions, {args.days} days x 11 open hours, "
          f"PostgreSQL, {os.cpu_count()} cores")
    print(f"# command: python bench/chain_rollup.py --stores {args.stores} --days {args.days} --regions {args.regions}")
    print(f"# {cpu_line()}")
    print("| what | size | median time | rate |\n|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
