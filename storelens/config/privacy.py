"""The ``privacy:`` section: the smallest group an aggregate may describe, and how long personal data is kept.

* ``k_min`` (k-anonymity): an aggregate over people (a demographics band, an interest row, a
  journey flow or path, a person-derived KPI) computed from fewer than ``k_min`` people is
  withheld (``null`` plus ``suppressed: true``); see :mod:`storelens.domain.privacy`.
* ``retention``: days each kind of personal data is kept (``null``: kept), enforced by the
  scheduled purge of the runner (embedded pipeline and analytics service alike; the API process
  alone on a SQLite history no pipeline runs on: :func:`storelens.runtime.retention.api_retention`); see
  :mod:`storelens.storage.privacy`. Face embeddings and visits keep their own setting,
  ``faces.reid.retention_days``: the recognition service applies it to its gallery. The same purge keeps the
  audit log to ``retention.audit_log_days`` (365).

Example:
    >>> cfg = PrivacyConfig.model_validate({"retention": {"days": {"track_points": 2, "crossings": None}}})
    >>> cfg.k_min, cfg.retention.days.track_points, cfg.retention.days.frames, cfg.retention.days.crossings
    (5, 2.0, 7.0, None)
    >>> sorted(k for k, v in cfg.retention.days.model_dump().items() if v is not None)[:3]
    ['customer_matches', 'frames', 'track_attributes']
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from storelens.config.base import Strict

Days = Annotated[float | None, Field(gt=0, le=36_500)]


class RetentionDays(Strict):
    """Days kept per kind of personal data (by the row's time: its last sighting); ``null`` keeps it."""

    #: Boxes of every tracked person, per frame (``track_points``; ``/v1/tracks``, replay).
    track_points: Days = 7.0
    #: Frame records (time, size, number of people; no image) that ``storelens replay`` feeds (``frames``).
    frames: Days = 7.0
    #: Per-track face attributes: age, gender, emotion, attention (``track_attributes``; demographics).
    track_attributes: Days = 90.0
    #: Track-to-customer links of face recognition (``customer_matches``); customers whose embeddings
    #: expired (``faces.reid.retention_days``) lose theirs too.
    customer_matches: Days = 30.0
    #: Track summaries: a track's path through zones and lines and its appearance vector (``track_summaries``; journeys).
    track_summaries: Days = 30.0
    #: Zone entries, exits and loitering of each track (``zone_events``; dwell, queues, interest).
    zone_events: Days = 90.0
    #: Line crossings (``crossings``; the counts are computed from them). A crossing keeps only the track
    #: number, which links to nothing once the points and summaries of the track are purged.
    crossings: Days = None
    #: Buying units crossing a line, with their members' track numbers (``group_crossings``; KPIs per buying unit).
    group_crossings: Days = None
    #: Tracks recognised as staff and by which cue (``staff_tracks``; staff excluded from the KPIs of their day).
    staff_tracks: Days = None


#: Kinds of :class:`RetentionDays`, in purge order.
RETENTION_KINDS: tuple[str, ...] = tuple(RetentionDays.model_fields)


class RetentionConfig(Strict):
    """``privacy.retention``: what the scheduled purge deletes, and when it runs."""

    days: RetentionDays = Field(default_factory=RetentionDays)
    #: Seconds between purges (the first one runs once the pipeline or service has started).
    every_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    #: What "now" is: ``wall`` the server clock; ``camera`` the newest stored frame (a recorded clip
    #: keeps its history as long as it would have live); ``auto``: ``wall`` when any camera is live
    #: (a stream), else ``camera``.
    clock: Literal["auto", "wall", "camera"] = "auto"
    #: Run the purge at all (``false``: nothing is deleted by age).
    enabled: bool = True
    #: Days the audit log (``audit_log``: sign-ins, every write through the API, with user names and client
    #: addresses) is kept, by the wall clock whatever :attr:`clock` says; ``null``: kept for good.
    audit_log_days: Days = 365.0


class PrivacyConfig(Strict):
    """The ``privacy:`` section of the site file."""

    #: Aggregates over fewer people than this are withheld (k-anonymity); 1 turns suppression off.
    k_min: Annotated[int, Field(ge=1, le=1000)] = 5
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
