"""Staff recognition inside the analytics stage: one :class:`~storelens.contract.messages.StaffTrack` per staff track.

Cues (``staff:`` in the site file, :class:`~storelens.config.groups.StaffConfig`):

* ``zones`` (default on): a track the zone analyzer saw *enter* a ``staff_only`` zone (its
  ``ZoneEvent`` in :attr:`FrameView.prior <storelens.stages.analyzers.FrameView>`: this analyzer
  runs after ``zones``, so the zone rules, inertia included, are the zone analyzer's);
* ``uniform``: detect-track judges the torso colour of each track's crops
  (:mod:`storelens.backends.uniform`) and marks the track (``Track.staff_uniform``) once the
  cue held; the first frame with the mark makes the record here.

Each track is reported once (the first cue that held). History records only (table
``staff_tracks``): the KPIs (:mod:`storelens.domain.staff`) exclude the entrance crossings of
staff tracks from the visitors and count them as ``staff_in``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.domain.staff import UniformVotes
from storelens.stages.analyzers import CameraAnalyzer, FrameView

#: Most track ids remembered as reported (oldest forgotten first).
MAX_REMEMBERED = 10_000


class StaffAnalyzer(CameraAnalyzer):
    """Staff tracks of one camera (see the module docstring)."""

    name = "staff"

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        self.camera_id = camera.id
        self.zones = config.staff.zones
        self.staff_zones = {z.id for z in camera.zones if z.kind == "staff_only"}
        #: Track ids already reported, oldest first.
        self.reported: list[int] = []

    def update(self, view: FrameView) -> list:
        out = self._from_zones(view.prior)
        for t in view.tracks:
            if getattr(t, "staff_uniform", "") and t.track_id not in self.reported:
                out.append(self._report(t.track_id, view.ts_ms, view.seq, "uniform", t.staff_uniform))
        return out

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        return self._from_zones(prior)

    def _from_zones(self, prior: list) -> list:
        out = []
        if not self.zones:
            return out
        for ev in prior:
            if (isinstance(ev, m.ZoneEvent) and ev.kind == m.ZONE_EVENT_ENTER and ev.zone_id in self.staff_zones
                    and ev.track_id not in self.reported):
                out.append(self._report(ev.track_id, ev.ts_ms, ev.seq, "zone", ev.zone_id))
        return out

    def _report(self, track_id: int, ts_ms: int, seq: int, cue: str, detail: str) -> m.StaffTrack:
        self.reported.append(int(track_id))
        del self.reported[:-MAX_REMEMBERED]
        return m.StaffTrack(camera_id=self.camera_id, track_id=track_id, ts_ms=ts_ms, seq=seq, cue=cue, detail=detail)

    def state(self) -> dict:
        return {"reported": list(self.reported)}

    def load_state(self, state: dict) -> None:
        self.reported = [int(t) for t in state.get("reported", [])]


def staff_analyzer(config: SiteConfig, camera: CameraConfig) -> StaffAnalyzer | None:
    """The camera's analyzer, or ``None`` (no cue can apply: no staff-only zone and no uniform cue)."""
    has_zone = config.staff.zones and any(z.kind == "staff_only" for z in camera.zones)
    if not has_zone and config.staff.uniform is None:
        return None
    return StaffAnalyzer(config, camera)


class UniformStaffMarker:
    """detect-track's part of the uniform cue: judge track crops, mark the tracks that are staff.

    Per camera, each track's crop (the frame's pixels of its box) is judged by the site's uniform
    backend (:mod:`storelens.backends.uniform`) at most every ``judge_every_n_frames`` frames; the
    votes (:class:`~storelens.domain.staff.UniformVotes`) make a track staff, and from then on every
    frame of it carries ``Track.staff_uniform`` (the colour's name) for the staff analyzer.
    """

    def __init__(self, config: SiteConfig) -> None:
        from storelens.backends.uniform import build_uniform_cue

        assert config.staff.uniform is not None
        self.cfg = config.staff.uniform
        self.cue = build_uniform_cue(self.cfg)
        self.votes: dict[str, UniformVotes] = {}
        #: camera -> {track id: [seq of its last judged crop, colour once staff or ""]}
        self.tracks: dict[str, dict[int, list]] = {}

    def mark(self, camera_id: str, seq: int, image_bgr: np.ndarray, track_ids: Iterable[int],
             boxes_xyxy: np.ndarray, out_tracks: Iterable[m.Track]) -> None:
        """Judge due crops (``boxes_xyxy`` in ``image_bgr``'s pixels) and set ``staff_uniform`` on ``out_tracks``."""
        from storelens.backends.uniform import crop_box

        votes = self.votes.setdefault(camera_id, UniformVotes(self.cfg.min_crops, self.cfg.min_crop_fraction))
        known = self.tracks.setdefault(camera_id, {})
        ids = [int(t) for t in track_ids]
        for tid, box, t in zip(ids, np.asarray(boxes_xyxy).reshape(-1, 4), out_tracks):
            st = known.setdefault(tid, [-10**9, ""])
            if not st[1] and seq - st[0] >= self.cfg.judge_every_n_frames:
                j = self.cue.judge(crop_box(image_bgr, tuple(float(v) for v in box)))
                if j.judged:
                    st[0] = seq
                    colour = votes.add(tid, j.staff, j.colour)
                    if colour:
                        st[1] = colour
            if st[1]:
                t.staff_uniform = st[1]
        present = set(ids)
        for tid in [t for t, st in known.items() if t not in present and seq - st[0] > 10_000]:
            del known[tid]  # long gone
            votes.forget([tid])

    def state(self, camera_id: str) -> dict:
        v = self.votes.get(camera_id)
        return {"tracks": {str(t): st for t, st in self.tracks.get(camera_id, {}).items()},
                "votes": {str(t): x for t, x in (v.votes.items() if v else [])}}

    def load_state(self, camera_id: str, state: dict) -> None:
        self.tracks[camera_id] = {int(t): [int(st[0]), str(st[1])] for t, st in state.get("tracks", {}).items()}
        v = self.votes[camera_id] = UniformVotes(self.cfg.min_crops, self.cfg.min_crop_fraction)
        v.votes = {int(t): [int(a) for a in x] for t, x in state.get("votes", {}).items()}
