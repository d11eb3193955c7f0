"""Staff and buying units in the store KPIs: pure rules over stored crossings, groups and staff tracks.

* A track recognised as staff (a ``staff_only`` zone, the uniform cue) is staff for the business
  day: its entrance ``in`` crossings within ``STAFF_DAY_MS`` of its recognition are not visitors
  but ``staff_in`` (before the recognition too: staff often cross the entrance before they
  reach the back room).
* A buying unit entering counts when at least one member is a visitor (a group of staff only is
  no buying unit).
* ``shopper_to_staff_ratio`` = visitors / ``staff_in`` of the bucket (``None`` without staff):
  shoppers per staff member who came in (meaningful per day or week; an hour with no staff
  entering has no ratio).

Example:
    >>> staff = {("door", 7): 1_000}
    >>> split_entries([(500, "door", 7), (600, "door", 8), (900, "door", 9)], staff)
    ([600, 900], [500])
    >>> unit_entries([(600, "door", [8, 9]), (700, "door", [7])], staff)
    [600]
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from storelens.domain.calendar import Bucket, BucketIndex

#: A staff recognition applies to the track's crossings within a day of it.
STAFF_DAY_MS = 24 * 3_600_000


def _is_staff(staff: Mapping[tuple[str, int], int], camera_id: str, track_id: int, ts_ms: int) -> bool:
    when = staff.get((camera_id, int(track_id)))
    return when is not None and abs(ts_ms - when) < STAFF_DAY_MS


def split_entries(entries: Iterable[tuple[int, str, int]],
                  staff: Mapping[tuple[str, int], int]) -> tuple[list[int], list[int]]:
    """Entrance ``in`` crossings ``(ts_ms, camera_id, track_id)`` -> (visitor times, staff times)."""
    visitors, staff_in = [], []
    for ts, cam, tid in entries:
        (staff_in if _is_staff(staff, cam, tid, ts) else visitors).append(int(ts))
    return visitors, staff_in


def unit_entries(groups: Iterable[tuple[int, str, Sequence[int]]],
                 staff: Mapping[tuple[str, int], int]) -> list[int]:
    """Times of the entering buying units ``(ts_ms, camera_id, member track ids)`` with at least one visitor."""
    return [int(ts) for ts, cam, tids in groups if any(not _is_staff(staff, cam, t, ts) for t in tids)]


def per_bucket(buckets: Sequence[Bucket], times: Iterable[int]) -> tuple[list[int], int]:
    """How many of ``times`` fall in each bucket, and in all of them (closed hours count nowhere).

    Example:
        >>> from storelens.domain.calendar import StoreCalendar
        >>> days = StoreCalendar("UTC").buckets("day", 0, 2 * 86_400_000)
        >>> per_bucket(days, [10, 20, 86_400_000 + 5, -1])
        ([2, 1], 3)
    """
    index = BucketIndex(buckets)
    out = [0] * len(buckets)
    for ts in times:
        i = index.find(ts)
        if i is not None:
            out[i] += 1
    return out, sum(out)


def ratio(a: int, b: int) -> float | None:
    """``a / b``, ``None`` when ``b`` is 0."""
    return a / b if b else None


class UniformVotes:
    """Per track: crops judged by the uniform cue; a track is staff once ``min_crops`` of its judged crops
    were staff and at least ``min_crop_fraction`` of them (reported once).

    Example:
        >>> v = UniformVotes(min_crops=2, min_crop_fraction=0.5)
        >>> [v.add(7, s, "red") for s in (True, False, True, True)]
        [None, None, 'red', None]
        >>> v.add(8, False, None), v.is_staff(7), v.is_staff(8)
        (None, True, False)
    """

    def __init__(self, min_crops: int, min_crop_fraction: float) -> None:
        self.min_crops = min_crops
        self.min_fraction = min_crop_fraction
        #: track id -> [staff crops, judged crops, reported]
        self.votes: dict[int, list[int]] = {}

    def add(self, track_id: int, staff: bool, colour: str | None) -> str | None:
        """One judged crop of ``track_id``; returns the colour when the track has just become staff."""
        v = self.votes.setdefault(int(track_id), [0, 0, 0])
        v[0] += int(staff)
        v[1] += 1
        if not v[2] and v[0] >= self.min_crops and v[0] >= self.min_fraction * v[1]:
            v[2] = 1
            return colour or "uniform"
        return None

    def is_staff(self, track_id: int) -> bool:
        v = self.votes.get(int(track_id))
        return bool(v and v[2])

    def forget(self, track_ids) -> None:
        for t in track_ids:
            self.votes.pop(int(t), None)
