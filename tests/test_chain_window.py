"""A store's calendar changes: the chain keeps exactly the hours the store now has (review finding).

Before the fix a store republished the hours it now has and the chain kept the ones it no longer
produces (hours outside the new opening hours, hours keyed at an old offset), adding them up
forever: a message did not say which window it covered. Now every ``StoreKpiHour`` names its
computation's window and the hours the store has in it; the chain deletes the store's other hours of
that window in the transaction that upserts. The path is the real one: the Berlin store of
tests/test_chain_rollup.py (a pipeline run on CAVIAR footage plus sales), its ``KpiPublisher`` over
its history, the chain's ``ChainRollupStage`` and history sink.
"""
from __future__ import annotations

import pytest

from storelens.contract import messages as m
from storelens.runtime.rollup import KpiPublisher
from storelens.storage import SqliteStorage, open_storage
from storelens.storage.rollup import hour_rows, kpi_hours
from test_chain_rollup import DAY, local_ms, roll_into, stores  # noqa: F401 (stores: the module's fixture)

BERLIN = "Europe/Berlin"


def publisher(config, storage, calendar: dict, sent: list) -> KpiPublisher:
    """The store's publisher over its history with the site config ``calendar["config"]`` (swapped when the
    calendar changes), "now" at the end of the store's Saturday, looking back that whole day."""
    config = config.model_copy(update={"rollup": config.rollup.model_copy(update={"enabled": True,
                                                                                  "lookback_h": 24})})
    calendar.setdefault("config", config)
    end = local_ms(config.store.timezone, "00:00") + 86_400_000
    return KpiPublisher(config, lambda lo, hi, now: kpi_hours(calendar["config"], storage, lo, hi, now),
                        sent.extend, now_ms=lambda: end)


def chain_hours(chain, store: str) -> dict[int, int]:
    """start_ms -> visitors of the chain's stored hours of ``store`` on DAY."""
    return {r.start_ms: r.kpis.visitors for r in hour_rows(chain, stores=[store], from_day=DAY, to_day=DAY)}


def starts(tz: str, *hhmm: str) -> set[int]:
    return {local_ms(tz, t) for t in hhmm}


@pytest.mark.parametrize("restarted", [False, True], ids=["same-publisher", "restarted-publisher"])
def test_a_calendar_change_replaces_the_stores_hours_of_the_window(stores, restarted) -> None:  # noqa: F811
    chain = SqliteStorage(":memory:")
    storages = {s: open_storage(config.storage) for s, (_, config) in stores.items()}
    try:
        calendars: dict[str, dict] = {s: {} for s in stores}
        sent: dict[str, list] = {s: [] for s in stores}
        pubs = {s: publisher(config, storages[s], calendars[s], sent[s]) for s, (_, config) in stores.items()}
        for s, pub in pubs.items():  # both stores open 09:00-20:00 on Saturday
            assert pub.run() == 11
            roll_into(chain, [h for _, h in sent[s]])
        nyc_before = chain_hours(chain, "nyc-01")
        assert set(chain_hours(chain, "berlin-01")) == {local_ms(BERLIN, f"{h:02d}:00") for h in range(9, 20)}
        assert len(nyc_before) == 11

        # Berlin's calendar changes to 10:00-18:00 and the store publishes its window again
        _, config = stores["berlin-01"]
        store = config.store.model_copy(update={"opening_hours": {"sat": ("10:00", "18:00")}})
        calendars["berlin-01"]["config"] = calendars["berlin-01"]["config"].model_copy(update={"store": store})
        pub = pubs["berlin-01"]
        if restarted:  # a restarted service remembers nothing it sent: every hour of the window again
            pub = publisher(config, storages["berlin-01"], calendars["berlin-01"], sent["berlin-01"])
        sent["berlin-01"].clear()
        n = pub.run()
        # the same publisher: no remaining hour changed, but three disappeared, so the window's hours go again
        assert n == 8
        republished = {h.start_ms: h.visitors for _, h in sent["berlin-01"]}
        assert set(republished) == {local_ms(BERLIN, f"{h:02d}:00") for h in range(10, 18)}
        roll_into(chain, [h for _, h in sent["berlin-01"]])

        assert chain_hours(chain, "berlin-01") == republished  # exactly the new hours
        assert not set(chain_hours(chain, "berlin-01")) & starts(BERLIN, "09:00", "18:00", "19:00")
        day = hour_rows(chain, stores=["berlin-01"], from_day=DAY, to_day=DAY, per="day")
        assert [(r.day, r.kpis.hours, r.kpis.visitors) for r in day] == [(DAY, 8.0, sum(republished.values()))]
        assert chain_hours(chain, "nyc-01") == nyc_before  # the other store's hours untouched
        assert pub.run() == 0  # nothing new

        # a store that does not announce its window yet (an older StoreLens): its hours are only upserted
        old = m.StoreKpiHour()
        old.CopyFrom(sent["berlin-01"][-1][1])
        for name in ("window_start_ms", "window_end_ms", "window_hour_starts_ms"):
            old.ClearField(name)
        old.start_ms, old.end_ms = local_ms(BERLIN, "19:00"), local_ms(BERLIN, "20:00")
        old.label, old.visitors, old.computed_ms = old.label.replace("T17:", "T19:"), 7, old.computed_ms + 1
        roll_into(chain, [old])
        assert chain_hours(chain, "berlin-01") == republished | {old.start_ms: 7}
        assert chain_hours(chain, "nyc-01") == nyc_before
    finally:
        for s in storages.values():
            s.close()


H = 3_600_000


def utc_hour(start_ms: int, computed_ms: int, window: tuple[int, int] | None, listed=(), store: str = "s1"):
    h = m.StoreKpiHour(store_id=store, start_ms=start_ms, end_ms=start_ms + H, day="1970-01-01",
                       label=f"1970-01-01T{start_ms // H:02d}:00+00:00", hours=1.0, visitors=1,
                       computed_ms=computed_ms)
    if window is not None:
        h.window_start_ms, h.window_end_ms = window
        h.window_hour_starts_ms[:] = listed
    return h


def publication(computed_ms: int, listed: list[int]) -> list[m.StoreKpiHour]:
    return [utc_hour(s, computed_ms, (0, 4 * H + 1), listed) for s in listed]


@pytest.mark.parametrize("batches, kept", [
    # one write, two publications of the same "now" (recorded video): the later message wins either way
    ([publication(5, [0, H, 2 * H]) + publication(5, [H, 2 * H])], [H, 2 * H]),
    ([publication(5, [H, 2 * H]) + publication(5, [0, H, 2 * H])], [0, H, 2 * H]),
    # a redelivered older publication deletes nothing computed later
    ([publication(5, [H, 2 * H]), publication(4, [0])], [0, H, 2 * H]),
    # hours outside the window, and another store's announcement, are left alone
    ([publication(5, [0, H, 2 * H]) + [utc_hour(6 * H, 5, None)], [utc_hour(0, 6, (0, H), [0])],
      [utc_hour(3 * H, 6, (0, 4 * H + 1), [3 * H], store="s2")]], [0, H, 2 * H, 6 * H]),
])
def test_the_sweep_applies_in_message_order_within_a_batch(batches, kept) -> None:
    from storelens.config import parse_config
    from storelens.contract import topics
    from storelens.stages.rollup import ChainRollupStage
    from test_chain_rollup import CHAIN

    stage = ChainRollupStage(parse_config(CHAIN))
    chain = SqliteStorage(":memory:")
    for batch in batches:  # one write (one transaction) each
        chain.write_records([r for h in batch for r in stage.handle(topics.STORE_KPIS, h).records])
    assert sorted(r.start_ms for r in hour_rows(chain, stores=["s1"])) == kept
    assert sum(r.kpis.hours for r in hour_rows(chain, stores=["s1"], per="day")) == len(kept)


@pytest.mark.parametrize("window, listed, reason", [
    ((4 * H, 0), [], "not a window"),
    ((0, 40 * 24 * H), [0], "not a window"),
    ((0, 4 * H), [H], "does not list the hour itself"),
])
def test_a_malformed_window_is_a_dead_letter(window, listed, reason) -> None:
    from storelens.errors import DecodeError
    from storelens.stages.rollup import check_hour

    with pytest.raises(DecodeError, match=reason):
        check_hour(utc_hour(0, 1, window, listed))
