"""Zone analysis of one camera inside the analytics stage: events, per-bucket statistics, live occupancy.

The rules are :class:`storelens.domain.zones.ZoneTracker` and :class:`~storelens.domain.zones.ZoneBuckets`;
this module turns their results into the wire messages (:class:`~storelens.contract.messages.ZoneEvent`
on ``zone-events``, :class:`~storelens.contract.messages.ZoneStats` on ``zone-stats``,
:class:`~storelens.contract.messages.ZoneOccupancy` on ``zone-occupancy``), which are
also the history records.

A bucket is closed (its statistics published once, final) when the frames have moved
past its end by more than the longest inertia of the camera's zones (entry, exit, or
``lost_after_ms`` for a track lost inside: :attr:`~storelens.domain.zones.ZoneTracker.max_delay_ms`)
plus :data:`CLOSE_GRACE_MS`, since an event is dated up to that much before the frame that
confirms it; at the end of a finite source every open bucket closes. A frame's occupancy
counts in the buckets until the next frame, at most the camera's longest ``lost_after_ms``
(:attr:`~storelens.domain.zones.ZoneTracker.max_lost_ms`): a stalled stream is not presence.
"""
from __future__ import annotations

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.zones import ZoneBuckets, ZoneBucketStats, ZoneEvent, ZoneTracker
from storelens.stages.analyzers import CameraAnalyzer, FrameView

CLOSE_GRACE_MS = 5_000


def zone_event_message(ev: ZoneEvent, zone_kind: str) -> m.ZoneEvent:
    msg = m.ZoneEvent(event_id=ev.event_id, camera_id=ev.camera_id, zone_id=ev.zone_id, zone_kind=zone_kind,
                      track_id=ev.track_id, kind=m.ZONE_EVENT_KINDS[ev.kind], ts_ms=ev.ts_ms, seq=ev.seq,
                      how=ev.how or "")
    if ev.dwell_ms is not None:
        msg.dwell_ms = int(ev.dwell_ms)
    return msg


def zone_stats_message(camera_id: str, s: ZoneBucketStats, bucket_ms: int, queue: bool) -> m.ZoneStats:
    msg = m.ZoneStats(camera_id=camera_id, zone_id=s.zone_id, bucket_start_ms=s.start_ms,
                      bucket_end_ms=s.start_ms + bucket_ms, visits=s.visits, unique_people=s.unique_people,
                      mean_occupancy=s.mean_occupancy, max_occupancy=s.max_occupancy, visits_ended=s.exits,
                      stoppers=s.stoppers or 0, served=s.served, abandoned=s.abandoned if queue else 0, lost=s.lost,
                      covered_ms=s.covered_ms)
    if s.dwell_median_ms is not None:
        msg.dwell_median_s = s.dwell_median_ms / 1000
        msg.dwell_p90_s = (s.dwell_p90_ms or 0) / 1000
    return msg


class ZoneAnalyzer(CameraAnalyzer):
    """The zones of one camera (see the module docstring)."""

    name = "zones"
    topics = {m.ZoneEvent: topics.ZONE_EVENTS, m.ZoneStats: topics.ZONE_STATS,
              m.ZoneOccupancy: topics.ZONE_OCCUPANCY}

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        self.camera_id = camera.id
        self.tracker = ZoneTracker(camera.id, camera.zones, config.zones)
        self.kinds = {z.id: z.kind for z in camera.zones}
        self.buckets = ZoneBuckets(config.zones.bucket_s, self.tracker.stopper_after_ms(),
                                   max_hold_ms=self.tracker.max_lost_ms)
        self.grace_ms = self.tracker.max_delay_ms + CLOSE_GRACE_MS
        self.published: dict[str, int] | None = None

    def update(self, view: FrameView) -> list:
        events = self.tracker.update(view.seq, view.ts_ms, view.track_ids, view.boxes_xyxy)
        return self._after(view.seq, view.ts_ms, events, close_before=view.ts_ms - self.grace_ms)

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        """Every open visit exits and every open bucket closes; nothing of the stream holds on into the next one
        (:meth:`ZoneBuckets.end`: a next stream's frame in the last bucket continues it)."""
        return self._after(seq, ts_ms, self.tracker.close(), close_before=None)

    def _after(self, seq: int, ts_ms: int, events: list[ZoneEvent], close_before: int | None) -> list:
        self.buckets.add(ts_ms, self.tracker.inside(), events)
        out: list = [zone_event_message(e, self.kinds[e.zone_id]) for e in events]
        occ = self.tracker.occupancy()
        if occ != self.published:
            self.published = occ
            out.append(m.ZoneOccupancy(camera_id=self.camera_id, ts_ms=ts_ms, seq=seq, occupancy=occ))
        closed = self.buckets.end() if close_before is None else self.buckets.close(close_before)
        out += [zone_stats_message(self.camera_id, s, self.buckets.bucket_ms, self.kinds[s.zone_id] == "queue")
                for s in closed]
        return out

    def state(self) -> dict:
        return {"tracker": self.tracker.state(), "buckets": self.buckets.state(), "published": self.published}

    def load_state(self, state: dict) -> None:
        """The state of this camera's zones; zones it no longer has (a site edit) are dropped with their buckets."""
        self.tracker.load_state(state.get("tracker", {}))  # keeps the visits of the zones it has
        buckets = state.get("buckets", {})
        last = buckets.get("last")
        self.buckets.load_state({
            "buckets": [b for b in buckets.get("buckets", []) if b[0] in self.kinds],
            "ended": [b for b in buckets.get("ended", []) if b[0] in self.kinds],
            # when the ended stream's last frame was: a next stream going back in time starts its buckets afresh
            "ended_ts": buckets.get("ended_ts"),
            "last": None if last is None else [last[0], {z: n for z, n in last[1].items() if z in self.kinds}]})
        pub = state.get("published")
        self.published = None if pub is None else {k: int(v) for k, v in pub.items()}


def zone_analyzer(config: SiteConfig, camera: CameraConfig) -> ZoneAnalyzer | None:
    """The camera's zone analyzer, or ``None`` when it has no zones (other than ``exclude`` ones)."""
    if not any(z.kind != "exclude" for z in camera.zones):
        return None
    return ZoneAnalyzer(config, camera)
