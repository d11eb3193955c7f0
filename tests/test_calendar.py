"""The store's own day (storelens.domain.calendar): DST days, opening hours past midnight, weeks."""
from __future__ import annotations

import datetime as dt

import pytest

from storelens.config import parse_config
from storelens.domain.calendar import BucketIndex, StoreCalendar, first_instant_at, from_ms, to_ms
from storelens.errors import ConfigError


def ms(iso: str) -> int:
    return to_ms(dt.datetime.fromisoformat(iso))


# (zone, day, hours in the day, the local hour labels around the change, UTC start of the day)
DST_DAYS = [
    ("Europe/Berlin", "2026-03-29", 23, ["00:00+01:00", "01:00+01:00", "03:00+02:00", "04:00+02:00"],
     "2026-03-28T23:00:00+00:00"),
    ("Europe/Berlin", "2026-10-25", 25, ["00:00+02:00", "01:00+02:00", "02:00+02:00", "02:00+01:00", "03:00+01:00"],
     "2026-10-24T22:00:00+00:00"),
    ("America/New_York", "2026-03-08", 23, ["00:00-05:00", "01:00-05:00", "03:00-04:00", "04:00-04:00"],
     "2026-03-08T05:00:00+00:00"),
    ("America/New_York", "2026-11-01", 25, ["00:00-04:00", "01:00-04:00", "01:00-05:00", "02:00-05:00"],
     "2026-11-01T04:00:00+00:00"),
    ("Europe/Berlin", "2026-03-30", 24, ["00:00+02:00", "01:00+02:00", "02:00+02:00", "03:00+02:00"],
     "2026-03-29T22:00:00+00:00"),
]


@pytest.mark.parametrize("tz,day,hours,labels,utc_start", DST_DAYS)
def test_dst_day_has_23_or_25_hours(tz: str, day: str, hours: int, labels: list[str], utc_start: str) -> None:
    cal = StoreCalendar(tz)
    d = dt.date.fromisoformat(day)
    start, end = cal.session(d)
    assert start == ms(utc_start)
    assert (end - start) == hours * 3_600_000
    days = cal.buckets("day", start, end)
    assert [(b.label, b.hours) for b in days] == [(day, hours)]
    hourly = cal.buckets("hour", start, end)
    assert len(hourly) == hours
    assert all(b.end_ms - b.start_ms == 3_600_000 for b in hourly)  # every hour is a real hour
    assert [b.label[11:] for b in hourly[:len(labels)]] == labels
    assert hourly[0].start_ms == start and hourly[-1].end_ms == end
    assert all(a.end_ms == b.start_ms for a, b in zip(hourly, hourly[1:]))


def test_day_buckets_of_a_range_across_the_change() -> None:
    cal = StoreCalendar("America/New_York")
    b = cal.buckets("day", ms("2026-10-31T12:00:00-04:00"), ms("2026-11-02T12:00:00-05:00"))
    assert [(x.label, x.hours) for x in b] == [("2026-10-31", 24), ("2026-11-01", 25), ("2026-11-02", 24)]


# A store open 18:00-03:00 every day: the night belongs to the day it opened.
NIGHT = {wd: (18 * 60, 3 * 60) for wd in range(7)}


@pytest.mark.parametrize("tz,instant,day", [
    ("Europe/Berlin", "2026-06-13T19:00:00+02:00", "2026-06-13"),
    ("Europe/Berlin", "2026-06-14T01:30:00+02:00", "2026-06-13"),   # after midnight: still Saturday's night
    ("Europe/Berlin", "2026-06-14T02:59:59+02:00", "2026-06-13"),
    ("Europe/Berlin", "2026-06-14T03:00:00+02:00", None),            # closed
    ("Europe/Berlin", "2026-06-14T12:00:00+02:00", None),
    ("Europe/Berlin", "2026-06-14T18:00:00+02:00", "2026-06-14"),
    # the night of the fall-back change is 10 hours long, the spring-forward night 8
    ("Europe/Berlin", "2026-10-25T02:30:00+01:00", "2026-10-24"),
    ("America/New_York", "2026-03-08T02:30:00-04:00", "2026-03-07"),
])
def test_night_store_day_runs_past_midnight(tz: str, instant: str, day: str | None) -> None:
    cal = StoreCalendar(tz, NIGHT)
    t = ms(instant)
    buckets = cal.buckets("day", t - 2 * 86_400_000, t + 2 * 86_400_000)
    i = BucketIndex(buckets).find(t)
    assert (None if i is None else buckets[i].label) == day


@pytest.mark.parametrize("tz,day,hours", [
    ("Europe/Berlin", "2026-10-24", 10), ("Europe/Berlin", "2026-03-28", 8), ("Europe/Berlin", "2026-06-13", 9),
    ("America/New_York", "2026-10-31", 10), ("America/New_York", "2026-03-07", 8),
])
def test_night_session_lengths_on_dst_nights(tz: str, day: str, hours: int) -> None:
    cal = StoreCalendar(tz, NIGHT)
    s, e = cal.session(dt.date.fromisoformat(day))
    assert (e - s) / 3_600_000 == hours
    hourly = cal.buckets("hour", s, e)
    assert len(hourly) == hours and all(b.day == dt.date.fromisoformat(day) for b in hourly)


def test_opening_hours_clip_hours_and_skip_closed_days() -> None:
    # Mon-Sat 09:30-20:00, Sunday closed
    cal = StoreCalendar("Europe/Berlin", {wd: (9 * 60 + 30, 20 * 60) for wd in range(6)})
    sat, sun = ms("2026-06-13T00:00:00+02:00"), ms("2026-06-15T00:00:00+02:00")
    days = cal.buckets("day", sat, sun)
    assert [(b.label, b.hours) for b in days] == [("2026-06-13", 10.5)]  # Sunday closed: no bucket
    hours = cal.buckets("hour", sat, sun)
    assert hours[0].label == "2026-06-13T09:30+02:00" and hours[0].hours == 0.5
    assert hours[-1].label == "2026-06-13T19:00+02:00" and len(hours) == 11


def test_weeks_start_monday_and_hold_the_sessions() -> None:
    cal = StoreCalendar("Europe/Berlin", NIGHT)
    weeks = cal.buckets("week", ms("2026-10-21T12:00:00+02:00"), ms("2026-10-22T12:00:00+02:00"))
    assert [w.label for w in weeks] == ["2026-W43"]
    w = weeks[0]
    assert w.day == dt.date(2026, 10, 19)  # Monday
    assert w.start_ms == ms("2026-10-19T18:00:00+02:00")
    assert w.end_ms == ms("2026-10-26T03:00:00+01:00")  # Sunday's night ends Monday 03:00
    assert w.hours == 7 * 9 + 1  # Saturday's night has the extra hour
    full = StoreCalendar("America/New_York").buckets("week", ms("2026-11-04T00:00:00-05:00"),
                                                     ms("2026-11-04T01:00:00-05:00"))
    assert [(x.label, x.hours) for x in full] == [("2026-W45", 7 * 24)]
    assert StoreCalendar("America/New_York").buckets("week", ms("2026-11-01T00:00:00-04:00"),
                                                     ms("2026-11-01T01:00:00-04:00"))[0].hours == 7 * 24 + 1


def test_first_instant_at_a_gap_is_the_end_of_the_gap() -> None:
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    assert from_ms(first_instant_at(dt.datetime(2026, 3, 8, 2, 15), ny), ny).isoformat() == "2026-03-08T03:00:00-04:00"
    # A zone whose clocks jump at midnight (Asia/Beirut, 2026-03-29): the day starts at 01:00.
    beirut = StoreCalendar("Asia/Beirut")
    s, e = beirut.session(dt.date(2026, 3, 29))
    assert from_ms(s, beirut.tz).isoformat() == "2026-03-29T01:00:00+03:00" and (e - s) == 23 * 3_600_000


def test_half_hour_zone_hours() -> None:
    cal = StoreCalendar("Asia/Kolkata")
    s, e = cal.session(dt.date(2026, 6, 1))
    hourly = cal.buckets("hour", s, e)
    assert len(hourly) == 24 and hourly[1].label == "2026-06-01T01:00+05:30"


@pytest.mark.parametrize("store,msg", [
    ({"id": "s", "timezone": "Europe/Berlinn"}, "store.timezone: unknown IANA time zone 'Europe/Berlinn'"),
    ({"id": "s", "opening_hours": {"mon": ["9:00", "20:00"]}}, "store.opening_hours: mon: '9:00' is not a time"),
    ({"id": "s", "opening_hours": {"mon": ["09:00", "09:00"]}}, "opening and closing time are the same"),
    ({"id": "s", "opening_hours": {"mon": ["25:00", "09:00"]}}, "not a time between 00:00 and 23:59"),
    ({"id": "s", "opening_hours": {"monday": ["09:00", "18:00"]}}, "store.opening_hours.monday"),
    ({"id": "s", "entrance_lines": ["cam/nope"]}, "store.entrance_lines: no such camera line"),
])
def test_store_config_is_validated_naming_the_field(store: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_config({"store": store, "cameras": [{"id": "cam", "source": "x.mp4"}]})


def test_store_config_opening_minutes() -> None:
    cfg = parse_config({"store": {"id": "s", "timezone": "America/New_York",
                                  "opening_hours": {"mon": ["09:00", "20:00"], "sat": ["22:00", "02:00"],
                                                    "sun": None, "fri": ["08:00", "24:00"]}},
                        "cameras": [{"id": "cam", "source": "x.mp4"}]})
    assert cfg.store.opening_minutes() == {0: (540, 1200), 5: (1320, 120), 4: (480, 1440)}
    cal = StoreCalendar(cfg.store.timezone, cfg.store.opening_minutes())
    s, e = cal.session(dt.date(2026, 6, 12))  # a Friday until midnight
    assert (e - s) == 16 * 3_600_000
