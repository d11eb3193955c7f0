"""The store's own day: hour, day and week buckets in the store's time zone and opening hours.

Pure (``zoneinfo`` only). A :class:`StoreCalendar` turns a UTC millisecond range into the
buckets the business reports in:

* a **day** is a business day: local midnight to local midnight (23 or 25 hours on
  daylight-saving days), or, with opening hours, the day's session from opening to
  closing, where a closing time at or before the opening time is on the next calendar
  day (a bar open Saturday 22:00-02:00: the night belongs to Saturday); a closed day
  has no bucket;
* an **hour** is the time between two instants at which the local clock shows a whole
  hour: on a spring-forward day the hour 02:00-03:00 does not exist (Berlin: 23 hourly
  buckets), on a fall-back day it is there twice, with different UTC offsets (25);
  with opening hours only the hours of the sessions, clipped to them (09:30-10:00);
* a **week** is Monday to Sunday (business days): its sessions, or its 7 local days.

Each bucket is a list of disjoint UTC intervals (a week with opening hours is 7
sessions), so an event belongs to the bucket whose interval holds it.

Example:
    >>> cal = StoreCalendar("Europe/Berlin")
    >>> [(b.label, b.hours) for b in cal.buckets("day", 1774652400000, 1774821600000)]
    [('2026-03-28', 24.0), ('2026-03-29', 23.0)]

The time series of the API (``/v1/counts``, ``/v1/zones/stats``: a width in seconds, not a
period) lay their buckets out with :meth:`StoreCalendar.grid` (a :class:`BucketGrid`): whole
days are local calendar days (whole weeks from Monday, as the ``week`` period), shorter widths multiples
of the width since the epoch.
"""
from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Mapping
from zoneinfo import ZoneInfo

Period = Literal["hour", "day", "week"]
PERIODS: tuple[str, ...] = ("hour", "day", "week")
#: Weekday keys of opening hours, Monday first (``datetime.date.weekday()`` order).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: weekday (0 = Monday) -> (opening, closing) in minutes after local midnight; closing <= opening:
#: on the next calendar day (``24 * 60``: midnight). A weekday without an entry is closed.
OpeningMinutes = Mapping[int, tuple[int, int]]

#: Last instant the store calendar's buckets may reach: 9999-12-25 00:00 UTC (dates end with the year 9999).
CALENDAR_MAX_MS = 253_401_696_000_000
#: What a :class:`BucketGrid`'s edges are aligned on (``aligned_to`` of the API's answers).
Alignment = Literal["epoch", "store_local_hour", "store_local_day"]

_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_DAY = dt.date(1970, 1, 1)
#: The Monday of the ISO week of 1970-01-01 (a Thursday): where buckets of whole weeks count from.
_EPOCH_MONDAY = dt.date(1969, 12, 29)
_HOUR_MS = 3_600_000
#: Most runs of a :class:`BucketGrid` of a zone whose offset changes its sub-hour part (Lord Howe: 4 a year); past
#: them the grid is the epoch's (``aligned_to``: ``epoch``), its SQL and its search stay small.
MAX_GRID_RUNS = 1_000
#: How often :meth:`StoreCalendar._residue_changes` samples the UTC offset (91 days).
_SAMPLE_MS = 91 * 86_400_000
_WEEK_MS = 7 * 86_400_000
#: 1969-12-29 00:00 UTC (:data:`_EPOCH_MONDAY`): where :meth:`BucketGrid.epoch`'s whole weeks count from.
_EPOCH_MONDAY_MS = -3 * 86_400_000


def to_ms(t: dt.datetime) -> int:
    """An aware datetime as ms since the epoch."""
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


def from_ms(ms: int, tz: dt.tzinfo) -> dt.datetime:
    """ms since the epoch as an aware datetime in ``tz``."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).astimezone(tz)


def first_instant_at(wall: dt.datetime, tz: dt.tzinfo) -> int:
    """The first instant (ms) at which the local clock of ``tz`` shows ``wall`` (naive), or, when that
    wall time does not exist (a spring-forward gap), the first instant after the gap.

    Example:
        >>> berlin = ZoneInfo("Europe/Berlin")
        >>> gap, after = dt.datetime(2026, 3, 29, 2, 30), dt.datetime(2026, 3, 29, 3)
        >>> first_instant_at(gap, berlin) == first_instant_at(after, berlin)
        True
        >>> from_ms(first_instant_at(dt.datetime(2026, 10, 25, 2, 30), berlin), berlin).isoformat()
        '2026-10-25T02:30:00+02:00'
    """
    wall = wall.replace(tzinfo=None)
    offset = tz.utcoffset(wall)
    if offset is not None and offset == tz.utcoffset(wall.replace(fold=1)):
        # Neither in a gap nor repeated (the common case): the one instant showing it, without a round trip.
        return to_ms(wall.replace(tzinfo=_UTC)) - offset // dt.timedelta(milliseconds=1)
    candidates = sorted({to_ms(wall.replace(tzinfo=tz, fold=f)) for f in (0, 1)})
    valid = [c for c in candidates if from_ms(c, tz).replace(tzinfo=None) == wall]
    if valid:
        return valid[0]
    # A gap: the transition is between the two readings; find the first instant showing a later time.
    lo, hi = candidates[0], candidates[-1]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if from_ms(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class Bucket:
    """One reporting bucket: ``[start_ms, end_ms)`` spanned by ``intervals`` (disjoint, sorted)."""

    #: ``2026-10-25T02:00+02:00`` (hour: local start with its UTC offset), ``2026-10-25`` (day),
    #: ``2026-W43`` (ISO week).
    label: str
    #: The business day (hour, day) or the week's Monday (week).
    day: dt.date
    start_ms: int
    end_ms: int
    intervals: tuple[tuple[int, int], ...]

    @property
    def hours(self) -> float:
        """Time covered by the bucket's intervals, in hours."""
        return sum(e - s for s, e in self.intervals) / 3_600_000


def _day_origin(days: int) -> dt.date:
    """The local date buckets of ``days`` whole days count from: a Monday for whole weeks (ISO weeks).

    >>> _day_origin(7).weekday(), _day_origin(14).isoformat(), _day_origin(3).isoformat()
    (0, '1969-12-29', '1970-01-01')
    """
    return _EPOCH_MONDAY if days % 7 == 0 else _EPOCH_DAY


@functools.lru_cache(maxsize=256)
def _offsets_on_multiples_of(timezone: str, unit_ms: int) -> bool:
    tz = ZoneInfo(timezone)
    return all((tz.utcoffset(dt.datetime(y, mo, d)) // dt.timedelta(milliseconds=1)) % unit_ms == 0
               for y in range(1970, 2038) for mo in range(1, 13) for d in (1, 15))


@functools.lru_cache(maxsize=256)
def _sub_hour_offsets(timezone: str) -> int:
    """How many sub-hour parts the UTC offsets of ``timezone`` have (1970-2037): 1 but for zones like Lord Howe."""
    tz = ZoneInfo(timezone)
    return len({(tz.utcoffset(dt.datetime(y, mo, d)) // dt.timedelta(milliseconds=1)) % _HOUR_MS
                for y in range(1970, 2038) for mo in range(1, 13) for d in (1, 15)})


class StoreCalendar:
    """Buckets of a store: its IANA time zone and optional opening hours (see the module).

    Args:
        timezone: IANA name, e.g. ``Europe/Berlin`` (``ZoneInfoNotFoundError`` / ``ValueError`` if unknown).
        opening_hours: :data:`OpeningMinutes`; ``None``: the whole day.
    """

    def __init__(self, timezone: str, opening_hours: OpeningMinutes | None = None) -> None:
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        if opening_hours is not None:
            for wd, (o, c) in opening_hours.items():
                if not (0 <= wd <= 6 and 0 <= o < 24 * 60 and 0 <= c <= 24 * 60 and o != c):
                    raise ValueError(f"bad opening hours for weekday {wd}: {o}-{c} minutes")
        self.opening_hours = dict(opening_hours) if opening_hours is not None else None

    # -- days -------------------------------------------------------------------------------

    def local_date(self, ms: int) -> dt.date:
        return from_ms(ms, self.tz).date()

    def midnight(self, day: dt.date) -> int:
        """The start of the local calendar day ``day`` (ms)."""
        return first_instant_at(dt.datetime.combine(day, dt.time()), self.tz)

    def session(self, day: dt.date) -> tuple[int, int] | None:
        """``(start_ms, end_ms)`` of business day ``day``: its opening hours (``None``: closed that day)
        or local midnight to the next local midnight."""
        if self.opening_hours is None:
            return self.midnight(day), self.midnight(day + dt.timedelta(days=1))
        hours = self.opening_hours.get(day.weekday())
        if hours is None:
            return None
        o, c = hours
        base = dt.datetime.combine(day, dt.time())
        start = first_instant_at(base + dt.timedelta(minutes=o), self.tz)
        end_wall = base + dt.timedelta(minutes=c) if c > o else base + dt.timedelta(days=1, minutes=c)
        return start, first_instant_at(end_wall, self.tz)

    def business_days(self, start_ms: int, end_ms: int) -> list[tuple[dt.date, int, int]]:
        """``(day, session start, session end)`` of the business days whose session overlaps the range."""
        out = []
        day = self.local_date(start_ms) - dt.timedelta(days=1)  # a session from the day before may run past midnight
        last = self.local_date(end_ms - 1)
        while day <= last:
            s = self.session(day)
            if s is not None and s[0] < end_ms and s[1] > start_ms:
                out.append((day, *s))
            day += dt.timedelta(days=1)
        return out

    # -- hours ------------------------------------------------------------------------------

    def hour_marks(self, start_ms: int, end_ms: int) -> list[int]:
        """The instants in ``(start_ms, end_ms)`` at which the local clock shows a whole hour (or
        jumps over one), in order: the boundaries of the hourly buckets."""
        marks = []
        t = start_ms
        while True:
            local = from_ms(t, self.tz)
            wall = local.replace(tzinfo=None)
            nxt_wall = wall.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
            # The distance on the local clock, at the current offset: a transition on the way moves the
            # result to the instant the clock shows the next hour (fall-back: the repeated hour; spring-forward:
            # the hour after the gap).
            t = t + (nxt_wall - wall) // dt.timedelta(milliseconds=1)
            if t >= end_ms:
                return marks
            marks.append(t)

    def hour_label(self, ms: int) -> str:
        return from_ms(ms, self.tz).isoformat(timespec="minutes")

    # -- time series (a width in seconds) ---------------------------------------------------

    def grid(self, bucket_s: int, start_ms: int, end_ms: int) -> BucketGrid:
        """The buckets of ``bucket_s`` seconds over ``[start_ms, end_ms)`` (opening hours play no part):

        * whole days (``bucket_s % 86400 == 0``): runs of local calendar days from local midnight
          (``store_local_day``; a DST day has 23 or 25 hours); ``n``-day buckets count days from the
          local 1970-01-01, as epoch-aligned ones did, and whole weeks (``n`` a multiple of 7) from its
          ISO week's Monday (1969-12-29), so a week runs Monday to Sunday as the ``week`` period of
          :meth:`buckets` (a day the clock skipped has no bucket);
        * shorter: multiples of the width since the epoch (``epoch``), moved by the sub-hour part of
          the UTC offset when it has one (``store_local_hour``: India's +05:30 keeps its hours at :00
          local), so local whole hours are edges as in a whole-hour zone; a zone whose offset changes its
          sub-hour part (Lord Howe: +10:30, +11:00 in summer) has a run per change in the range (and within
          a width of it), the bucket at a change cut at it and at the next local edge (a half-hour bucket);
          past :data:`MAX_GRID_RUNS` runs (centuries of Lord Howe), the epoch's (``epoch``).

        Whole days cost a calendar day each (a run per clock change), a zone's sub-hour changes a run each:
        lay them out over the part of a range that holds data (a bucket is the same whichever range holds
        it), and count the range's buckets with :meth:`bucket_count`.

        Example:
            >>> StoreCalendar("Asia/Kolkata").grid(3600, 0, 1).runs, StoreCalendar("Europe/Berlin").grid(3600, 0, 1)
            (((1800000, 3600000),), BucketGrid(aligned_to='epoch', runs=((0, 3600000),)))
        """
        width = bucket_s * 1000
        if width < 1 or end_ms <= start_ms:
            raise ValueError(f"need bucket_s >= 1 and a non-empty range, got {bucket_s}, [{start_ms}, {end_ms})")
        if bucket_s % 86_400:
            return self._hour_grid(width, start_ms, end_ms)
        if end_ms > CALENDAR_MAX_MS:
            raise ValueError(f"end_ms ({end_ms}) is past the calendar's last day (at most {CALENDAR_MAX_MS})")
        days = bucket_s // 86_400
        origin = _day_origin(days)
        day = origin + dt.timedelta(days=(self.local_date(start_ms) - origin).days // days * days)
        edges = [self.midnight(day)]
        while edges[-1] < end_ms:
            day += dt.timedelta(days=days)
            edges.append(self.midnight(day))
        runs: list[tuple[int, int]] = []
        for a, b in zip(edges, edges[1:]):
            if b > a and (not runs or runs[-1][1] != b - a):
                runs.append((a, b - a))
        return BucketGrid("store_local_day", tuple(runs))

    def _hour_grid(self, width: int, start_ms: int, end_ms: int) -> BucketGrid:
        """:meth:`grid` of buckets shorter than a day or not whole days (``width`` ms)."""
        def origin(ms: int) -> int:  # the edges' residue modulo width in force at ms
            offset = from_ms(min(ms, CALENDAR_MAX_MS), self.tz).utcoffset() or dt.timedelta()
            return -(offset // dt.timedelta(milliseconds=1)) % _HOUR_MS % width

        if _sub_hour_offsets(self.timezone) == 1:  # one sub-hour part (1970-2037): one run, as it always was
            first = origin(start_ms)
            return BucketGrid("epoch" if first == 0 else "store_local_hour", ((first, width),))
        # the changes from a width before the range (one there cuts the bucket holding start_ms: the same bucket
        # whichever range holds it) to a width after it (one there cuts the last bucket's end)
        lo, hi = start_ms - width, min(end_ms + width, CALENDAR_MAX_MS)
        first = residue = origin(lo)
        runs = [(lo - (lo - first) % width, width)]
        for t in self._residue_changes(origin, lo, hi):
            new = origin(t)
            # the bucket holding the change ends at it, the next one at the first edge of the new offset
            before, after = t - (t - residue) % width, t + (new - t) % width
            for o, w in ((before, t - before), (t, after - t), (after, width)):
                if w == 0:
                    continue
                if o < runs[-1][0]:  # a change within the bucket cut at the one before: never in 1970-2037
                    return BucketGrid.epoch(width)
                if o == runs[-1][0]:
                    runs[-1] = (o, w)
                else:
                    runs.append((o, w))
            if len(runs) > MAX_GRID_RUNS:  # centuries of changes (Lord Howe: 2 a year): the epoch's, said so
                return BucketGrid.epoch(width)
            residue = new
        if len(runs) == 1:
            return BucketGrid("epoch" if first == 0 else "store_local_hour", ((first, width),))
        return BucketGrid("store_local_hour", tuple(runs))

    @staticmethod
    def _residue_changes(residue: Callable[[int], int], start_ms: int, end_ms: int) -> Iterator[int]:
        """The instants in ``(start_ms, end_ms)`` at which ``residue`` (a function of the UTC offset) changes, in
        order, lazily: sampled every :data:`_SAMPLE_MS` (91 days: 4 a year, some 36,000 over the calendar's
        8,000 years), each change found to the millisecond by bisection (a change and its undoing within 91
        days go unseen: the tz database has none of the sub-hour part)."""
        def bisect_(lo: int, hi: int, r_lo: int, r_hi: int, out: list[int]) -> None:
            while hi - lo > 1:  # r(lo) != r(hi): the first instant of the new residue is in (lo, hi]
                mid = (lo + hi) // 2
                r_mid = residue(mid)
                if r_mid != r_lo:
                    if r_mid != r_hi:  # two changes between lo and hi
                        bisect_(mid, hi, r_mid, r_hi, out)
                    hi, r_hi = mid, r_mid
                else:
                    lo = mid
            out.append(hi)

        t, r = start_ms, residue(start_ms)
        while t < end_ms - 1:
            nxt = min(t + _SAMPLE_MS, end_ms - 1)
            r_nxt = residue(nxt)
            if r_nxt != r:
                found: list[int] = []
                bisect_(t, nxt, r, r_nxt, found)
                yield from sorted(found)
            t, r = nxt, r_nxt

    def offsets_on_multiples_of(self, unit_ms: int) -> bool:
        """Whether every UTC offset of the store's timezone (1970-2037) is a multiple of ``unit_ms``: then
        whether a grid's edges fall on multiples of ``unit_ms`` does not depend on the range it covers.

        Example:
            >>> StoreCalendar("Europe/Berlin").offsets_on_multiples_of(3_600_000), StoreCalendar(
            ...     "Europe/Berlin").offsets_on_multiples_of(7_200_000)
            (True, False)
        """
        return _offsets_on_multiples_of(self.timezone, unit_ms)

    def bucket_count(self, bucket_s: int, start_ms: int, end_ms: int) -> int:
        """How many buckets of :meth:`grid` ``[start_ms, end_ms)`` touches, whole days counted by their
        local dates without laying them out (a day the clock skipped, as Samoa's 2011-12-30, counts here
        though it has no bucket); shorter ones by the grid over the whole range (at most :data:`MAX_GRID_RUNS`
        runs, then the epoch's).

        Example:
            >>> cal = StoreCalendar("Europe/Berlin")
            >>> cal.bucket_count(86_400, 0, 8_640_000_000_000), cal.grid(86_400, 0, 8_640_000_000_000).count(
            ...     0, 8_640_000_000_000)
            (100001, 100001)
        """
        if bucket_s % 86_400:
            return self.grid(bucket_s, start_ms, end_ms).count(start_ms, end_ms)
        days = bucket_s // 86_400
        origin = _day_origin(days)
        first, last = ((self.local_date(t) - origin).days // days for t in (start_ms, end_ms - 1))
        return last - first + 1

    # -- buckets ----------------------------------------------------------------------------

    def buckets(self, period: str, start_ms: int, end_ms: int) -> list[Bucket]:
        """The buckets of ``period`` (``hour``, ``day``, ``week``) overlapping ``[start_ms, end_ms)``,
        whole (not clipped to the range), in time order."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        if end_ms <= start_ms:
            return []
        days = self.business_days(start_ms, end_ms)
        if period == "day":
            return [Bucket(d.isoformat(), d, s, e, ((s, e),)) for d, s, e in days]
        if period == "week":
            # Whole weeks: every business day of the weeks the range touches.
            first = min([self.local_date(start_ms)] + [d for d, _, _ in days[:1]])
            last = max([self.local_date(end_ms - 1)] + [d for d, _, _ in days[-1:]])
            monday = first - dt.timedelta(days=first.weekday())
            sunday = last + dt.timedelta(days=6 - last.weekday())
            by_week: dict[dt.date, list[tuple[int, int]]] = {}
            d = monday
            while d <= sunday:
                s = self.session(d)
                if s is not None:
                    by_week.setdefault(d - dt.timedelta(days=d.weekday()), []).append(s)
                d += dt.timedelta(days=1)
            out = []
            for wk, intervals in sorted(by_week.items()):
                iso = wk.isocalendar()
                b = Bucket(f"{iso[0]}-W{iso[1]:02d}", wk, intervals[0][0], intervals[-1][1], tuple(intervals))
                if b.start_ms < end_ms and b.end_ms > start_ms:
                    out.append(b)
            return out
        out = []
        for d, s, e in days:
            edges = [s, *self.hour_marks(s, e), e]
            for a, b in zip(edges, edges[1:]):
                if a < end_ms and b > start_ms:
                    out.append(Bucket(self.hour_label(a), d, a, b, ((a, b),)))
        return out


@dataclass(frozen=True)
class BucketGrid:
    """Adjacent time buckets as runs of equal widths: run ``i`` is ``(origin_ms, width_ms)``, buckets
    ``[origin + k * width, origin + (k + 1) * width)`` up to the next run's origin (an edge of both). The
    first run also reaches back before its origin, the last one on without end; a grid made for a range
    (:meth:`StoreCalendar.grid`) is exact over that range.

    Example:
        >>> g = StoreCalendar("Europe/Berlin").grid(86_400, 1774652400000, 1774821600000)  # 2026-03-28/29
        >>> g.runs, g.end_of(1774738800000) - 1774738800000, g.count(1774652400000, 1774821600000)
        (((1774652400000, 86400000), (1774738800000, 82800000)), 82800000, 2)
    """

    aligned_to: Alignment
    runs: tuple[tuple[int, int], ...]

    @classmethod
    def epoch(cls, width_ms: int, unit_ms: int = 1) -> BucketGrid:
        """Multiples of ``width_ms`` since the epoch; whole weeks since Monday 1969-12-29 00:00 UTC (Monday to
        Sunday in UTC, as the store's weeks run Monday to Sunday), unless that Monday would cut buckets
        stored ``unit_ms`` wide since the epoch (then since the epoch).

        Example:
            >>> from_ms(BucketGrid.epoch(604_800_000).start_of(0), _UTC).strftime("%a %Y-%m-%d %H:%M")
            'Mon 1969-12-29 00:00'
            >>> BucketGrid.epoch(604_800_000, unit_ms=25_200_000).runs  # stored 7 h buckets: Monday cuts one
            ((0, 604800000),)
        """
        whole_weeks = width_ms % _WEEK_MS == 0 and _EPOCH_MONDAY_MS % unit_ms == 0
        return cls("epoch", ((_EPOCH_MONDAY_MS if whole_weeks else 0, width_ms),))

    @functools.cached_property
    def _origins(self) -> list[int]:
        return [o for o, _ in self.runs]

    def _run(self, ms: int) -> int:
        return max(0, bisect.bisect_right(self._origins, ms) - 1)

    def on_multiples_of(self, unit_ms: int) -> bool:
        """Whether every edge is a multiple of ``unit_ms`` since the epoch (so buckets stored ``unit_ms``
        wide since the epoch fall whole into this grid's).

        Example:
            >>> kolkata = StoreCalendar("Asia/Kolkata").grid(3600, 0, 1)  # hours from :30 UTC
            >>> kolkata.on_multiples_of(60_000), kolkata.on_multiples_of(3_600_000)
            (True, False)
        """
        return all(o % unit_ms == 0 and w % unit_ms == 0 for o, w in self.runs)

    def start_of(self, ms: int) -> int:
        """Start of the bucket holding ``ms``."""
        origin, width = self.runs[self._run(ms)]
        return ms - (ms - origin) % width

    def end_of(self, start_ms: int) -> int:
        """End of the bucket that starts at ``start_ms``."""
        return start_ms + self.runs[self._run(start_ms)][1]

    def index(self, ms: int) -> int:
        """The number of the bucket holding ``ms`` (consecutive buckets: consecutive numbers)."""
        i, base = self._run(ms), 0
        for (o, w), (nxt, _) in zip(self.runs[:i], self.runs[1:i + 1]):
            base += (nxt - o) // w
        origin, width = self.runs[i]
        return base + (ms - origin) // width

    def count(self, start_ms: int, end_ms: int) -> int:
        """Buckets that ``[start_ms, end_ms)`` touches."""
        return self.index(end_ms - 1) - self.index(start_ms) + 1


class BucketIndex:
    """Which of ``buckets`` holds an instant (their intervals are disjoint)."""

    def __init__(self, buckets: Iterable[Bucket]) -> None:
        spans = sorted((s, e, i) for i, b in enumerate(buckets) for s, e in b.intervals)
        self._starts = [s for s, _, _ in spans]
        self._spans = spans

    def find(self, ms: int) -> int | None:
        """Index of the bucket holding ``ms``, or ``None`` (outside every bucket: closed hours)."""
        k = bisect.bisect_right(self._starts, ms) - 1
        if k < 0:
            return None
        s, e, i = self._spans[k]
        return i if s <= ms < e else None

