"""Journeys inside the analytics stage: one :class:`~storelens.contract.messages.TrackSummary` per ended track.

Per camera, the analyzer keeps a running summary of every track it sees: first and
last time, frame and anchor (box bottom centre), the mean of its appearance
embeddings (``Track.appearance``, filled by the ``bytereid`` tracker), its zone visits
and line crossings, read from the frame's crossings and the zone analyzer's events
(:attr:`FrameView.crossings <storelens.stages.analyzers.FrameView>`, ``prior``: it runs
after ``zones``), so a summary is complete on its own and nothing is computed twice.

A track unseen for ``journeys.track_end_after_s`` has ended: its summary goes to
``track-summaries`` (and the history table ``track_summaries``, one row per camera and track);
at the end of a finite source every open track ends. Tracks seen in fewer than
``journeys.min_track_frames`` frames are dropped. The ``bytereid`` tracker may re-find a lost
track later than that (it keeps it ``track_buffer`` frames: 12 s at ``fps: 5`` and the default 60):
an ended summary is remembered for twice the tracker's re-find window (:func:`reopen_ms`), and a
track re-found meanwhile goes on with it (first time, zone visits, crossings, appearance), so its
next summary is the whole track and replaces the first. An appearance vector that is not finite is left out of the
mean; those of another length than most of the track's are kept apart, per length (:data:`APPEARANCE_LENGTHS` at
most), and the length with the most vectors is the mean (both counted: :data:`BAD_APPEARANCE`). The cross-camera
linking
(:mod:`storelens.domain.journeys`) runs over these summaries (the API links them at
query time, :mod:`storelens.storage.journeys`).
"""
from __future__ import annotations

import logging

import numpy as np

from storelens.config import ByteReidTrackerConfig, CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.geometry import anchors_bottom_center
from storelens.stages.analyzers import CameraAnalyzer, FrameView

_DIR = {"in": m.DIRECTION_IN, "out": m.DIRECTION_OUT}
log = logging.getLogger(__name__)
#: ``storelens_errors_total`` reason of a track's appearance embedding not in its mean as it stands: a value that is
#: not finite (left out), or another length than most of the track's vectors (kept apart: a malformed
#: ``TrackedFrame``, or a producer whose re-id model changed while the track was open).
BAD_APPEARANCE = "bad_appearance"
#: How many lengths of appearance vectors a track sums (apart); a vector of yet another length is left out.
APPEARANCE_LENGTHS = 3


class JourneyAnalyzer(CameraAnalyzer):
    """Per-track summaries of one camera (see the module docstring)."""

    name = "journeys"
    topics = {m.TrackSummary: topics.TRACK_SUMMARIES}

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        self.camera_id = camera.id
        self.cfg = config.journeys
        self.end_after_ms = int(self.cfg.track_end_after_s * 1000)
        self.reopen_ms = reopen_ms(config)
        self.kinds = {z.id: z.kind for z in camera.zones if z.kind != "exclude"}
        #: str(track id) -> running summary (JSON-serialisable but the appearance sum, an array).
        self.open: dict[str, dict] = {}
        #: The ended ones the tracker may still re-find (last frame within :attr:`reopen_ms`), the same way.
        self.closed: dict[str, dict] = {}
        #: Problems found in the frames since the stage last took them (``storelens_errors_total`` reason -> how
        #: many, :data:`BAD_APPEARANCE`); the analytics stage moves them to its output.
        self.errors: dict[str, int] = {}
        self._warned: set[int] = set()

    # -- frames ----------------------------------------------------------------------------

    def update(self, view: FrameView) -> list:
        anchors = anchors_bottom_center(view.boxes_xyxy)
        for i, (tid, t) in enumerate(zip(view.track_ids, view.tracks)):
            x, y = float(anchors[i, 0]), float(anchors[i, 1])
            s = self.open.get(str(tid))
            if s is None:  # a new track, or one re-found after its summary was sent: that summary goes on
                s = self.open[str(tid)] = self.closed.pop(str(tid), None) or {
                    "first_ts": view.ts_ms, "first_seq": view.seq, "first": [x, y], "n": 0, "app": None, "n_app": 0,
                    "zones": [], "inside": {}, "crossings": []}
            s["last_ts"], s["last_seq"], s["last"] = view.ts_ms, view.seq, [x, y]
            s["n"] += 1
            if len(t.appearance):
                a = np.asarray(t.appearance, np.float64)
                if not np.isfinite(a).all():  # one bad vector neither spoils the mean nor fails the frame
                    self._bad_appearance(tid, a, s["app"])
                elif s["app"] is None or len(a) == len(s["app"]):
                    s["app"] = a if s["app"] is None else s["app"] + a
                    s["n_app"] += 1
                else:  # another length (before, every later frame of the track failed)
                    self._other_length(tid, s, a)
        self._zone_events(view.prior)
        for ev in view.crossings:
            s = self.open.get(str(ev.track_id))
            if s is not None:
                s["crossings"].append([ev.line_id, ev.direction, ev.ts_ms])
        ended = [k for k, s in self.open.items() if view.ts_ms - s["last_ts"] > self.end_after_ms]
        out = self._close(ended)
        if self.closed:
            self.closed = {k: s for k, s in self.closed.items() if view.ts_ms - s["last_ts"] <= self.reopen_ms}
        return out

    def _other_length(self, track_id: int, s: dict, a: np.ndarray) -> None:
        """An appearance vector of another length than the track's mean: summed apart, per length (``alt``:
        ``{str(length): [sum, n]}``, :data:`APPEARANCE_LENGTHS` lengths in all at most; replaced, never changed in
        place: a state taken keeps its own); the length with the most vectors is the track's mean."""
        self._bad_appearance(track_id, a, s["app"])
        alt = s.get("alt") or {}
        key = str(len(a))
        if key in alt:
            got = [(np.asarray(alt[key][0]) + a).tolist(), alt[key][1] + 1]
        elif len(alt) + 1 < APPEARANCE_LENGTHS:
            got = [a.tolist(), 1]
        else:  # yet another length: left out
            return
        alt = {**alt, key: got}
        if got[1] > s["n_app"]:  # most of the track's vectors have this length (a bad first one, a model changed)
            del alt[key]
            alt[str(len(s["app"]))] = [s["app"].tolist(), s["n_app"]]
            s["app"], s["n_app"] = np.asarray(got[0], np.float64), got[1]
        s["alt"] = alt

    def _bad_appearance(self, track_id: int, a: np.ndarray, mean_sum: np.ndarray | None) -> None:
        self.errors[BAD_APPEARANCE] = self.errors.get(BAD_APPEARANCE, 0) + 1
        if track_id not in self._warned:  # logged once per track, counted every time
            self._warned.add(track_id)
            log.warning("track appearance embedding not in its mean (not finite: left out; or another length "
                        "than most of the track's: kept apart)",
                        extra={"camera": self.camera_id, "track_id": int(track_id), "length": len(a),
                               "expected": None if mean_sum is None else len(mean_sum)})

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        self._zone_events(prior)
        out = self._close(list(self.open))
        self.closed = {}  # the source ended: nothing is re-found
        return out

    def _zone_events(self, messages: list) -> None:
        for ev in messages:
            if isinstance(ev, m.ZoneEvent):
                self._zone_event(ev.track_id, ev.zone_id, m.ZONE_EVENT_KIND_NAMES[ev.kind], ev.ts_ms)

    def _zone_event(self, track_id: int, zone_id: str, kind: str, ts_ms: int) -> None:
        s = self.open.get(str(track_id)) or self.closed.get(str(track_id))
        if s is None:
            return  # the track has ended already (its open visits were closed at its last frame)
        if kind == "enter":
            s["inside"][zone_id] = ts_ms
        elif kind == "exit" and zone_id in s["inside"]:
            s["zones"].append([zone_id, s["inside"].pop(zone_id), ts_ms])

    def _close(self, keys: list[str]) -> list[m.TrackSummary]:
        out = []
        for k in sorted(keys, key=lambda k: (self.open[k]["last_ts"], int(k))):
            s = self.open.pop(k)
            self._warned.discard(int(k))
            if self.reopen_ms > self.end_after_ms:
                self.closed[k] = s
            if s["n"] < self.cfg.min_track_frames:
                continue
            visits = s["zones"] + [[z, t, max(t, s["last_ts"])] for z, t in s["inside"].items()]
            msg = m.TrackSummary(
                camera_id=self.camera_id, track_id=int(k), first_ts_ms=s["first_ts"], last_ts_ms=s["last_ts"],
                first_seq=s["first_seq"], last_seq=s["last_seq"], n_frames=s["n"], first_x=s["first"][0],
                first_y=s["first"][1], last_x=s["last"][0], last_y=s["last"][1])
            if s["app"] is not None:
                a = np.asarray(s["app"])
                norm = float(np.linalg.norm(a))
                if norm > 0:
                    msg.appearance.extend((a / norm).tolist())
            for z, t0, t1 in sorted(visits, key=lambda v: (v[1], v[0])):
                msg.zones.add(zone_id=z, zone_kind=self.kinds.get(z, "area"), enter_ts_ms=t0, exit_ts_ms=t1)
            for line, d, ts in s["crossings"]:
                msg.crossings.add(line_id=line, direction=_DIR[d], ts_ms=ts)
            out.append(msg)
        return out

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict:
        return {part: {k: _summary_copy(s, None if s["app"] is None else s["app"].tolist())
                       for k, s in getattr(self, part).items()} for part in ("open", "closed")}

    def load_state(self, state: dict) -> None:
        for part in ("open", "closed"):
            setattr(self, part, {str(k): _summary_copy(v, None if v.get("app") is None
                                                       else np.asarray(v["app"], np.float64))
                                 for k, v in state.get(part, {}).items()})


def _summary_copy(s: dict, app) -> dict:
    """A running summary with its own containers (the ones :meth:`JourneyAnalyzer.update` grows in place): a state
    taken, or loaded, never changes with the analyzer's later frames. The runtime keeps the state it loads a frame
    from, and loads it again when the frame is not acknowledged: a shared list would replay that frame's zone
    visits and crossings twice."""
    return {**s, "zones": list(s.get("zones", [])), "inside": dict(s.get("inside", {})),
            "crossings": list(s.get("crossings", [])), "app": app}


def reopen_ms(config: SiteConfig) -> int:
    """How long after its last frame an ended track's summary may still go on: twice the ``bytereid`` tracker's
    re-find window (:attr:`~storelens.config.tracker_bytereid.ByteReidTrackerConfig.refind_ms`, the window
    ``zones.lost_after_ms`` follows; counted in frames at the rate the tracker measured, so twice for a camera
    that slows down); 0 with another tracker.

    Example:
        >>> from storelens.config import parse_config
        >>> site = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}
        >>> reopen_ms(parse_config(site)), reopen_ms(parse_config({**site, "tracker": {"fps": 5}}))
        (4800, 24000)
    """
    tracker = config.tracker
    return 2 * tracker.refind_ms if isinstance(tracker, ByteReidTrackerConfig) else 0


def journey_analyzer(config: SiteConfig, camera: CameraConfig) -> JourneyAnalyzer | None:
    """The camera's track summaries, or ``None`` when ``journeys.enabled`` is off."""
    return JourneyAnalyzer(config, camera) if config.journeys.enabled else None
