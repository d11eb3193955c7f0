"""Buying units: people who cross an entrance line together count as one group. Pure logic.

Rule (each clause is a row of ``tests/test_groups.py``; parameters in
:class:`~storelens.config.groups.GroupsConfig`):

* **Same line, same direction, within the window.** Two crossings can only link when they are
  of the same line in the same direction and at most ``window_ms`` apart.
* **Moved together before.** They link only when the two tracks were *together* in at least
  ``together_frames`` of the last ``history_frames`` frames before the later crossing:
  anchors (box bottom centres) at most ``max_gap_heights`` mean box heights apart, and box
  heights within ``max_height_ratio`` of each other (about the same distance from the camera,
  so two people who only overlap in the picture are not a group).
* **Transitive.** Linked crossings form one group (A with B and B with C: A, B, C).
* **Closed when nobody can join.** A group is emitted once ``window_ms`` has passed since its
  last member crossed (or at the end of the source); a person crossing alone is a group of one,
  so the groups of a line and direction are its *buying units*.

A group is dated at its first member's crossing and its id is deterministic (the first
member's camera, line, track and frame), so a redelivered frame gives the same group.

Example:
    >>> from storelens.config.groups import GroupsConfig
    >>> gc = GroupCounter("cam", GroupsConfig(together_frames=2, history_frames=5))
    >>> for seq in range(3):  # two people side by side, 100 px tall, 60 px apart
    ...     _ = gc.update(seq, seq * 40, [1, 2], [(100, 300), (160, 300)], [100, 100], [])
    >>> gc.update(3, 120, [1, 2], [(100, 310), (160, 310)], [100, 100],
    ...           [Crossing("e1", "door", 1, "in", 120, 3), Crossing("e2", "door", 2, "in", 120, 3)])
    []
    >>> [(g.line_id, g.direction, g.track_ids) for g in gc.update(80, 3200, [], [], [], [])]
    [('door', 'in', (1, 2))]
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

from storelens.config.groups import GroupsConfig


@dataclass(frozen=True)
class Crossing:
    """A counted crossing (what :class:`~storelens.domain.counting.CrossingEvent` carries)."""

    event_id: str
    line_id: str
    track_id: int
    direction: str
    ts_ms: int
    seq: int


@dataclass(frozen=True)
class Group:
    """One buying unit crossing a line: its members' crossings in time order."""

    camera_id: str
    line_id: str
    direction: str
    members: tuple[Crossing, ...]

    @property
    def event_id(self) -> str:
        first = self.members[0]
        return group_event_id(self.camera_id, self.line_id, first.track_id, first.seq)

    @property
    def ts_ms(self) -> int:
        return self.members[0].ts_ms

    @property
    def seq(self) -> int:
        return self.members[0].seq

    @property
    def last_ts_ms(self) -> int:
        return self.members[-1].ts_ms

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def track_ids(self) -> tuple[int, ...]:
        return tuple(c.track_id for c in self.members)


def group_event_id(camera_id: str, line_id: str, track_id: int, seq: int) -> str:
    """Deterministic id of a group: its first member's crossing."""
    return f"{camera_id}:{line_id}:group:{track_id}:{seq}"


def together(a: tuple[float, float, float], b: tuple[float, float, float], cfg: GroupsConfig) -> bool:
    """Whether two people ``(anchor_x, anchor_y, box_height)`` are together in one frame.

    Example:
        >>> cfg = GroupsConfig()
        >>> together((100, 300, 100), (180, 300, 110), cfg), together((100, 300, 100), (400, 300, 100), cfg)
        (True, False)
        >>> together((100, 300, 200), (120, 300, 100), cfg)  # overlapping, but one is twice as far away
        False
    """
    ha, hb = max(a[2], 1e-6), max(b[2], 1e-6)
    if max(ha, hb) / min(ha, hb) > cfg.max_height_ratio:
        return False
    return math.hypot(a[0] - b[0], a[1] - b[1]) <= cfg.max_gap_heights * (ha + hb) / 2


class GroupCounter:
    """Per camera: frames (anchors, box heights) and that frame's crossings in; closed groups out."""

    def __init__(self, camera_id: str, cfg: GroupsConfig) -> None:
        self.camera_id = camera_id
        self.cfg = cfg
        #: The last ``history_frames`` frames: ``{track_id: (x, y, h)}``.
        self._history: deque[dict[int, tuple[float, float, float]]] = deque(maxlen=cfg.history_frames)
        #: Open groups (lists of crossings) per (line, direction).
        self._open: list[list[Crossing]] = []

    def together_frames(self, a: int, b: int) -> int:
        """Frames of the kept history in which tracks ``a`` and ``b`` were both seen and together."""
        return sum(1 for f in self._history if a in f and b in f and together(f[a], f[b], self.cfg))

    def update(self, seq: int, ts_ms: int, track_ids: Sequence[int],
               anchors: Sequence[tuple[float, float]] | Iterable, heights: Sequence[float],
               crossings: Iterable[Crossing]) -> list[Group]:
        """One frame: the people in it and the crossings counted in it; returns the groups it closes."""
        ids = [int(t) for t in track_ids]
        pts = [(float(p[0]), float(p[1])) for p in anchors]
        hs = [float(h) for h in heights]
        if not (len(ids) == len(pts) == len(hs)):
            raise ValueError(f"{len(ids)} track ids, {len(pts)} anchors and {len(hs)} heights: they must match")
        self._history.append({t: (p[0], p[1], h) for t, p, h in zip(ids, pts, hs)})
        for c in crossings:
            self._add(c)
        return self._close(ts_ms)

    def end(self) -> list[Group]:
        """The source ended: every open group is closed."""
        return self._close(None)

    def _add(self, c: Crossing) -> None:
        linked = [g for g in self._open
                  if g[0].line_id == c.line_id and g[0].direction == c.direction
                  and any(abs(c.ts_ms - o.ts_ms) <= self.cfg.window_ms and o.track_id != c.track_id
                          and self.together_frames(o.track_id, c.track_id) >= self.cfg.together_frames
                          for o in g)]
        merged = [c]
        for g in linked:
            merged += g
            self._open.remove(g)
        merged.sort(key=lambda x: (x.ts_ms, x.seq, x.track_id))
        self._open.append(merged)

    def _close(self, ts_ms: int | None) -> list[Group]:
        done = [g for g in self._open if ts_ms is None or ts_ms - g[-1].ts_ms > self.cfg.window_ms]
        for g in done:
            self._open.remove(g)
        done.sort(key=lambda g: (g[0].ts_ms, g[0].seq, g[0].track_id))
        return [Group(self.camera_id, g[0].line_id, g[0].direction, tuple(g)) for g in done]

    # -- state ----------------------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-serialisable state; :meth:`load_state` of it continues exactly where this stands."""
        return {"history": [{str(t): list(v) for t, v in f.items()} for f in self._history],
                "open": [[[c.event_id, c.line_id, c.track_id, c.direction, c.ts_ms, c.seq] for c in g]
                         for g in self._open]}

    def load_state(self, state: dict) -> None:
        self._history = deque(({int(t): (float(v[0]), float(v[1]), float(v[2])) for t, v in f.items()}
                               for f in state.get("history", [])), maxlen=self.cfg.history_frames)
        self._open = [[Crossing(str(e), str(ln), int(t), str(d), int(ts), int(s)) for e, ln, t, d, ts, s in g]
                      for g in state.get("open", [])]


def buying_units(groups: Iterable[Group], direction: str = "in") -> tuple[int, int]:
    """``(units, people)`` of the groups in ``direction``.

    Example:
        >>> g = lambda *tids: Group("c", "door", "in", tuple(Crossing(f"e{t}", "door", t, "in", 0, 0) for t in tids))
        >>> buying_units([g(1, 2), g(3), g(4, 5, 6)])
        (3, 6)
    """
    units = people = 0
    for g in groups:
        if g.direction == direction:
            units += 1
            people += g.size
    return units, people


@dataclass(frozen=True)
class GroupScore:
    """How predicted groups compare with expected ones (see :func:`compare_groups`)."""

    #: Crossings: expected, predicted, matched one-to-one.
    crossings_expected: int
    crossings_predicted: int
    crossings_matched: int
    #: Buying units (groups of any size) expected and predicted.
    units_expected: int
    units_predicted: int
    #: "Together" pairs (two crossings in one group): expected, predicted, both.
    pairs_expected: int
    pairs_predicted: int
    pairs_correct: int
    #: Groups of two or more: expected, predicted, and predicted whose members are exactly an expected group's.
    groups_expected: int
    groups_predicted: int
    groups_correct: int

    @property
    def pair_precision(self) -> float | None:
        return self.pairs_correct / self.pairs_predicted if self.pairs_predicted else None

    @property
    def pair_recall(self) -> float | None:
        return self.pairs_correct / self.pairs_expected if self.pairs_expected else None

    @property
    def group_precision(self) -> float | None:
        return self.groups_correct / self.groups_predicted if self.groups_predicted else None

    @property
    def group_recall(self) -> float | None:
        return self.groups_correct / self.groups_expected if self.groups_expected else None


def compare_groups(expected: Sequence[Group], predicted: Sequence[Group], tol_ms: int = 500) -> GroupScore:
    """Score ``predicted`` groups (e.g. from the pipeline's tracks) against ``expected`` ones (the same rule
    on ground-truth trajectories). Track ids differ between the two, so crossings are matched first: same
    line and direction, at most ``tol_ms`` apart, closest pairs first, one-to-one. A predicted pair (two
    crossings in one group) is correct when both are matched and their matches are in one expected group;
    a predicted group of two or more is correct when its members match exactly an expected group's.

    Example:
        >>> c = lambda t, ts: Crossing(f"e{t}", "door", t, "in", ts, ts // 40)
        >>> exp = [Group("c", "door", "in", (c(1, 0), c(2, 400))), Group("c", "door", "in", (c(3, 5000),))]
        >>> pred = [Group("c", "door", "in", (c(11, 40), c(12, 440), c(13, 5000)))]
        >>> s = compare_groups(exp, pred)
        >>> (s.pairs_correct, s.pairs_predicted, s.pairs_expected, s.groups_correct, s.units_expected, s.units_predicted)
        (1, 3, 1, 0, 2, 1)
    """
    def members(groups: Sequence[Group]) -> list[tuple[int, Group, Crossing]]:
        return [(gi, g, c) for gi, g in enumerate(groups) for c in g.members]

    exp, pred = members(expected), members(predicted)
    cand = sorted((abs(pc.ts_ms - ec.ts_ms), i, j) for i, (_, pg, pc) in enumerate(pred)
                  for j, (_, eg, ec) in enumerate(exp)
                  if pg.line_id == eg.line_id and pg.direction == eg.direction and abs(pc.ts_ms - ec.ts_ms) <= tol_ms)
    match: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in cand:
        if i not in match and j not in used:
            match[i] = j
            used.add(j)

    def pairs(items: list[tuple[int, Group, Crossing]]) -> set[tuple[int, int]]:
        return {(a, b) for a in range(len(items)) for b in range(a + 1, len(items)) if items[a][0] == items[b][0]}

    exp_pairs = pairs(exp)
    pred_pairs = pairs(pred)
    correct = sum(1 for a, b in pred_pairs if a in match and b in match
                  and exp[match[a]][0] == exp[match[b]][0])
    exp_sets = {frozenset(j for j, (gi, _, _) in enumerate(exp) if gi == k) for k in range(len(expected))
                if expected[k].size >= 2}
    pred_multi = [k for k in range(len(predicted)) if predicted[k].size >= 2]
    groups_correct = 0
    for k in pred_multi:
        idx = [i for i, (gi, _, _) in enumerate(pred) if gi == k]
        if all(i in match for i in idx) and frozenset(match[i] for i in idx) in exp_sets:
            groups_correct += 1
    return GroupScore(len(exp), len(pred), len(match), len(expected), len(predicted), len(exp_pairs),
                      len(pred_pairs), correct, len(exp_sets), len(pred_multi), groups_correct)
