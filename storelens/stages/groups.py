"""Buying units inside the analytics stage: one :class:`~storelens.contract.messages.GroupCrossing` per group.

Per camera, the analyzer feeds every frame's people (anchors and box heights) and the
crossings the stage counted in it (:attr:`FrameView.crossings <storelens.stages.analyzers.FrameView>`)
to a :class:`~storelens.domain.groups.GroupCounter` and returns the groups it closes
(people crossing the same line in the same direction together; a person alone is a group
of one), at most once each; at the end of a finite source every open group closes.
History records only (table ``group_crossings``): ``GET /v1/counts`` reads ``groups_in``
from them and ``GET /v1/kpis`` the conversion per buying unit.
"""
from __future__ import annotations

from storelens.config import CameraConfig, SiteConfig
from storelens.contract import messages as m
from storelens.domain.geometry import anchors_bottom_center
from storelens.domain.groups import Crossing, Group, GroupCounter
from storelens.stages.analyzers import CameraAnalyzer, FrameView

_DIR = {"in": m.DIRECTION_IN, "out": m.DIRECTION_OUT}


def to_proto(g: Group) -> m.GroupCrossing:
    return m.GroupCrossing(event_id=g.event_id, camera_id=g.camera_id, line_id=g.line_id, direction=_DIR[g.direction],
                           ts_ms=g.ts_ms, seq=g.seq, last_ts_ms=g.last_ts_ms, track_ids=list(g.track_ids))


class GroupAnalyzer(CameraAnalyzer):
    """Groups crossing one camera's lines (see the module docstring)."""

    name = "groups"

    def __init__(self, config: SiteConfig, camera: CameraConfig) -> None:
        self.counter = GroupCounter(camera.id, config.groups)

    def update(self, view: FrameView) -> list:
        boxes = view.boxes_xyxy
        crossings = [Crossing(ev.event_id, ev.line_id, ev.track_id, ev.direction, ev.ts_ms, ev.seq)
                     for ev in view.crossings]
        groups = self.counter.update(view.seq, view.ts_ms, view.track_ids, anchors_bottom_center(boxes),
                                     boxes[:, 3] - boxes[:, 1], crossings)
        return [to_proto(g) for g in groups]

    def end(self, seq: int, ts_ms: int, prior: list) -> list:
        return [to_proto(g) for g in self.counter.end()]

    def state(self) -> dict:
        return self.counter.state()

    def load_state(self, state: dict) -> None:
        self.counter.load_state(state)


def group_analyzer(config: SiteConfig, camera: CameraConfig) -> GroupAnalyzer | None:
    """The camera's analyzer, or ``None`` (groups disabled, or the camera has no lines)."""
    if not config.groups.enabled or not camera.lines:
        return None
    return GroupAnalyzer(config, camera)


def groups_from_records(records: list) -> list[Group]:
    """The groups among analytics records (``GroupCrossing``) with their members' crossings (``CrossingEvent``).

    Example:
        >>> from storelens.domain.counting import CrossingEvent
        >>> recs = [CrossingEvent("e1", "c", "door", 1, "in", 0, 0), CrossingEvent("e2", "c", "door", 2, "in", 40, 1),
        ...         m.GroupCrossing(camera_id="c", line_id="door", direction=m.DIRECTION_IN, ts_ms=0, last_ts_ms=40,
        ...                         track_ids=[1, 2])]
        >>> [(g.size, g.track_ids) for g in groups_from_records(recs)]
        [(2, (1, 2))]
    """
    by_key: dict[tuple[str, str, int, str], list[Crossing]] = {}
    for r in records:
        if type(r).__name__ == "CrossingEvent":
            by_key.setdefault((r.camera_id, r.line_id, r.track_id, r.direction), []).append(
                Crossing(r.event_id, r.line_id, r.track_id, r.direction, r.ts_ms, r.seq))
    out = []
    for r in records:
        if isinstance(r, m.GroupCrossing):
            d = m.direction_name(r.direction)
            members = [next(c for c in by_key.get((r.camera_id, r.line_id, t, d), [])
                            if r.ts_ms <= c.ts_ms <= r.last_ts_ms) for t in r.track_ids]
            out.append(Group(r.camera_id, r.line_id, d, tuple(members)))
    return out
