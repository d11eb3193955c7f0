"""Journeys: one person's tracks linked across cameras into store visits, and what the visits add up to.

Input: one :class:`TrackInfo` per ended track (its camera, times, mean appearance
embedding, zone visits, line crossings, and the face-identified customer id when
there is one). Rules:

* **Candidates.** Track ``b`` may follow track ``a`` when the site's ``journeys.links``
  list ``a``'s camera -> ``b``'s camera (:class:`~storelens.config.behaviour.JourneyLinkConfig`),
  ``b`` starts after ``a`` does, and the transit time ``b.first - a.last`` lies in that
  link's ``[min_s, max_s]`` window (negative when two views overlap).
* **Evidence.** When both tracks are face-identified (``face_identity``): the same
  customer links them whatever their appearance (score 2), two customers never.
  Otherwise the cosine similarity of their mean appearance embeddings must reach
  ``min_similarity``; that similarity is the score.
* **One-to-one.** A track has at most one successor and one predecessor: the pairs are
  assigned by maximum total score (Hungarian, :func:`scipy.optimize.linear_sum_assignment`),
  per connected group of candidates so the matrices stay small.
* **Journeys.** Links form chains (each track is in exactly one). A chain is cut after a
  track that left the store (an entrance line crossed ``out``, or its last zone an ``entrance``):
  a store visit runs from an entrance ``in`` to the matching exit. The entrance lines are
  ``store.entrance_lines`` when the site sets them (:attr:`TrackInfo.entrances`): a department
  line crossed ``out`` inside the store ends no visit; without them every line is one.
  A journey's id is its first track's ``"<track_id>@<camera_id>"``.

Deterministic: the same tracks give the same journeys and ids, whatever their order.

Example (two cameras, one person walking from ``a`` to ``b``)::

    >>> from storelens.config.behaviour import JourneysConfig
    >>> cfg = JourneysConfig.model_validate({"links": [{"from": "a", "to": "b", "max_s": 30}]})
    >>> e = np.ones(4) / 2
    >>> ts = [TrackInfo("a", 1, 0, 5_000, e), TrackInfo("b", 7, 9_000, 20_000, e)]
    >>> [(j.journey_id, [t.camera_id for t in j.tracks]) for j in build_journeys(ts, link_tracks(ts, cfg))]
    [('1@a', ['a', 'b'])]
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from storelens.config.behaviour import JourneysConfig

#: Score of a link made by the face identity (above any cosine similarity).
FACE_SCORE = 2.0


class Visit(NamedTuple):
    """A stay of a track in a zone (a named tuple: a day's summaries hold many, and tuples are cheap to make).

        >>> Visit("fruit", "area", 1_000, 4_000).exit_ms
        4000
    """

    zone_id: str
    zone_kind: str
    enter_ms: int
    exit_ms: int


@dataclass(frozen=True)
class TrackInfo:
    """One ended track, as the linker sees it."""

    camera_id: str
    track_id: int
    first_ms: int
    last_ms: int
    #: Mean appearance embedding (any length; compared by cosine), ``None`` when the tracker has none.
    appearance: np.ndarray | None = None
    zones: tuple[Visit, ...] = ()
    #: ``(line_id, "in" | "out", ts_ms)`` in time order.
    crossings: tuple[tuple[str, str, int], ...] = ()
    customer_id: str | None = None
    #: Demographics of the track (``age_years``, ``gender``, ...), when known.
    attributes: dict = field(default_factory=dict)
    #: The ids of the camera's lines that are store entrances (``store.entrance_lines``, :func:`entrances`);
    #: ``None``: every line is one (the site sets no entrance lines).
    entrances: frozenset[str] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.camera_id, self.track_id

    @property
    def nodes(self) -> tuple[str, ...]:
        """The flow-graph nodes of the track's path steps (:attr:`Journey.path`), repeats collapsed.

            >>> TrackInfo("cam", 1, 0, 9, zones=(Visit("b", "area", 5, 9), Visit("a", "area", 0, 5))).nodes
            ('cam/a', 'cam/b')
        """
        cam = self.camera_id
        if not self.zones:
            return (cam,)
        zones = self.zones if len(self.zones) == 1 else sorted(self.zones, key=lambda v: (v.enter_ms, v.zone_id))
        return tuple(collapse(f"{cam}/{v.zone_id}" if v.zone_id else cam for v in zones))

    @property
    def door_crossings(self) -> tuple[tuple[str, str, int], ...]:
        """The crossings of entrance lines (:attr:`entrances`): the ones that say whether it came in or left.

            >>> walk = (("door", "in", 1), ("dept", "out", 5))
            >>> TrackInfo("cam", 1, 0, 9, crossings=walk).exited, TrackInfo("cam", 1, 0, 9, crossings=walk,
            ...                                                        entrances=frozenset({"door"})).door_crossings
            (True, (('door', 'in', 1),))
        """
        if self.entrances is None:
            return self.crossings
        return tuple(c for c in self.crossings if c[0] in self.entrances)

    @property
    def entered(self) -> bool:
        """The track came into the store: its first entrance-line crossing is ``in``, or (none) its first zone is
        an entrance."""
        door = self.door_crossings
        if door:
            return door[0][1] == "in"
        return bool(self.zones) and self.zones[0].zone_kind == "entrance"

    @property
    def exited(self) -> bool:
        """The track left the store: its last entrance-line crossing is ``out``, or (none) it ended in an entrance
        zone after being somewhere else first."""
        door = self.door_crossings
        if door:
            return door[-1][1] == "out"
        return len(self.zones) > 1 and self.zones[-1].zone_kind == "entrance"


@dataclass(frozen=True)
class Link:
    """Track ``a`` continued as track ``b``."""

    a: tuple[str, int]
    b: tuple[str, int]
    #: Cosine similarity, or :data:`FACE_SCORE` for a face-identity link.
    score: float
    transit_ms: int
    how: str  # "appearance" | "face"


@dataclass(frozen=True)
class Step:
    """One element of a journey's path: a zone visit, or a track's time on a camera outside any zone."""

    camera_id: str
    track_id: int
    zone_id: str | None
    zone_kind: str | None
    enter_ms: int
    exit_ms: int

    @property
    def node(self) -> str:
        """Flow-graph node: ``camera/zone``, or the camera alone outside zones."""
        return f"{self.camera_id}/{self.zone_id}" if self.zone_id else self.camera_id


@dataclass(frozen=True)
class Journey:
    journey_id: str
    tracks: tuple[TrackInfo, ...]
    links: tuple[Link, ...]

    @property
    def first_ms(self) -> int:
        ts = self.tracks
        return ts[0].first_ms if len(ts) == 1 else min(t.first_ms for t in ts)

    @property
    def last_ms(self) -> int:
        ts = self.tracks
        return ts[0].last_ms if len(ts) == 1 else max(t.last_ms for t in ts)

    @property
    def dwell_ms(self) -> int:
        return self.last_ms - self.first_ms

    @property
    def cameras(self) -> list[str]:
        return list(dict.fromkeys(t.camera_id for t in self.tracks))

    @property
    def customer_id(self) -> str | None:
        return next((t.customer_id for t in self.tracks if t.customer_id), None)

    @property
    def attributes(self) -> dict:
        """The first known value of each attribute along the journey."""
        out: dict = {}
        for t in self.tracks:
            for k, v in t.attributes.items():
                if v is not None and k not in out:
                    out[k] = v
        return out

    @property
    def entered(self) -> bool:
        return self.tracks[0].entered

    @property
    def exited(self) -> bool:
        return self.tracks[-1].exited

    @property
    def path(self) -> list[Step]:
        """Zone visits of every track in time order; a track that visited no zone is one camera-level step."""
        out = []
        for t in self.tracks:
            if t.zones:
                out += [Step(t.camera_id, t.track_id, v.zone_id, v.zone_kind, v.enter_ms, v.exit_ms)
                        for v in sorted(t.zones, key=lambda v: (v.enter_ms, v.zone_id))]
            else:
                out.append(Step(t.camera_id, t.track_id, None, None, t.first_ms, t.last_ms))
        return out

    @property
    def nodes(self) -> tuple[str, ...]:
        """The flow-graph nodes of :attr:`path`, consecutive repeats collapsed (what flows and top paths count)."""
        if len(self.tracks) == 1:
            return self.tracks[0].nodes
        return tuple(collapse(n for t in self.tracks for n in t.nodes))


def journey_id(camera_id: str, track_id: int) -> str:
    return f"{track_id}@{camera_id}"


def parse_journey_id(value: str) -> tuple[str, int] | None:
    """``"12@cam-1"`` -> ``("cam-1", 12)``; ``None`` when malformed (a track id outside 64 bits included).

    Example:
        >>> parse_journey_id("12@cam-1"), parse_journey_id("99999999999999999999@cam-1"), parse_journey_id("12")
        (('cam-1', 12), None, None)
    """
    tid, sep, cam = value.partition("@")
    if not sep or not cam:
        return None
    try:
        track_id = int(tid)
    except ValueError:
        return None
    return (cam, track_id) if -(2**63) <= track_id < 2**63 else None


def _order(t: TrackInfo) -> tuple:
    return t.first_ms, t.camera_id, t.track_id


def _unit(v: np.ndarray | None) -> np.ndarray | None:
    if v is None or len(v) == 0:
        return None
    v = np.asarray(v, np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else None


def candidates(tracks: Sequence[TrackInfo], config: JourneysConfig) -> list[Link]:
    """Every admissible (predecessor, successor) pair with its score (see the module docstring)."""
    windows: dict[tuple[str, str], tuple[int, int]] = {}
    for ln in config.links:
        pairs = [(ln.source, ln.target)] + ([(ln.target, ln.source)] if ln.both_ways else [])
        for p in pairs:
            lo, hi = int(round(ln.min_s * 1000)), int(round(ln.max_s * 1000))
            old = windows.get(p)
            windows[p] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    if not windows:
        return []
    units = [_unit(t.appearance) for t in tracks]
    by_cam: dict[str, list[int]] = {}
    for i in sorted(range(len(tracks)), key=lambda i: _order(tracks[i])):
        by_cam.setdefault(tracks[i].camera_id, []).append(i)
    starts = {cam: [tracks[i].first_ms for i in idx] for cam, idx in by_cam.items()}
    out = []
    for (ca, cb), (lo, hi) in sorted(windows.items()):
        cb_idx, cb_starts = by_cam.get(cb, []), starts.get(cb, [])
        for i in by_cam.get(ca, []):
            a = tracks[i]
            # successors start in [a.last + lo, a.last + hi]: a slice of cb's tracks sorted by start
            for j in cb_idx[bisect_left(cb_starts, a.last_ms + lo):bisect_right(cb_starts, a.last_ms + hi)]:
                b = tracks[j]
                if i == j or _order(b) <= _order(a):
                    continue
                transit = b.first_ms - a.last_ms
                if not lo <= transit <= hi:
                    continue
                if config.face_identity and a.customer_id and b.customer_id:
                    if a.customer_id == b.customer_id:
                        out.append(Link(a.key, b.key, FACE_SCORE, transit, "face"))
                    continue  # two different customers: never one person
                ua, ub = units[i], units[j]
                if ua is None or ub is None or len(ua) != len(ub):
                    continue
                sim = float(ua @ ub)
                if sim >= config.min_similarity:
                    out.append(Link(a.key, b.key, sim, transit, "appearance"))
    return out


def assign(cands: Sequence[Link]) -> list[Link]:
    """The one-to-one subset of ``cands`` with the largest total score (ties: the earlier candidate order)."""
    from scipy.optimize import linear_sum_assignment

    best: dict[tuple, Link] = {}
    for c in cands:  # a pair listed twice (two windows) keeps its best score
        if (c.a, c.b) not in best or c.score > best[(c.a, c.b)].score:
            best[(c.a, c.b)] = c
    # connected groups of predecessors ("a", key) and successors ("b", key)
    parent: dict[tuple, tuple] = {}

    def find(x: tuple) -> tuple:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in best:
        ra, rb = find(("a", a)), find(("b", b))
        if ra != rb:
            parent[ra] = rb
    groups: dict[tuple, list[Link]] = {}
    for (a, b), c in sorted(best.items()):
        groups.setdefault(find(("a", a)), []).append(c)
    out = []
    for links in groups.values():
        rows = sorted({c.a for c in links})
        cols = sorted({c.b for c in links})
        ri = {k: n for n, k in enumerate(rows)}
        ci = {k: n for n, k in enumerate(cols)}
        big = 1e6
        cost = np.full((len(rows), len(cols)), big)
        for c in links:
            cost[ri[c.a], ci[c.b]] = -c.score
        r, k = linear_sum_assignment(cost)
        chosen = {(rows[x], cols[y]) for x, y in zip(r, k) if cost[x, y] < big}
        out += [c for c in links if (c.a, c.b) in chosen]
    return sorted(out, key=lambda c: (c.a, c.b))


def link_tracks(tracks: Sequence[TrackInfo], config: JourneysConfig) -> list[Link]:
    """The links between ``tracks`` (candidates, then the one-to-one assignment)."""
    return assign(candidates(tracks, config))


def build_journeys(tracks: Iterable[TrackInfo], links: Iterable[Link]) -> list[Journey]:
    """Chains of linked tracks, cut after each exit from the store; ordered by start."""
    tracks = sorted(tracks, key=_order)
    by_key = {(t.camera_id, t.track_id): t for t in tracks}
    nxt = {ln.a: ln for ln in links if ln.a in by_key and ln.b in by_key}
    has_prev = {ln.b for ln in nxt.values()}
    out = []
    for head in tracks:
        key = (head.camera_id, head.track_id)
        if key in has_prev:
            continue
        if key not in nxt:  # a track linked to nothing (the common case): a journey of its own
            out.append(Journey(journey_id(*key), (head,), ()))
            continue
        chain, chain_links = [head], []
        cur = head
        while True:
            ln = nxt.get(cur.key)
            if ln is None or cur.exited:  # a visit ends at the exit; the next track (if linked) starts another
                out.append(Journey(journey_id(chain[0].camera_id, chain[0].track_id), tuple(chain),
                                   tuple(chain_links)))
                if ln is None:
                    break
                chain, chain_links = [], []
            else:
                chain_links.append(ln)
            cur = by_key[ln.b]
            chain.append(cur)
    return sorted(out, key=lambda j: (j.first_ms, j.journey_id))


def flows(journeys: Iterable[Journey]) -> Counter:
    """Transitions between consecutive path steps: ``(from node, to node) -> journeys that made it``.

    Repeated visits of one node in a row count once (no self-loops), so the graph suits a Sankey diagram.
    A journey counts once per transition however often it made it (someone pacing between two shelves is
    one person, not five: the counts are groups of people, which k-anonymity withholds when small).

        >>> t = TrackInfo("c", 1, 0, 9, zones=tuple(Visit(z, "shelf", i, i + 1) for i, z in enumerate("abab")))
        >>> dict(flows([Journey("1@c", (t,), ())]))
        {('c/a', 'c/b'): 1, ('c/b', 'c/a'): 1}
    """
    out: Counter = Counter()
    for j in journeys:
        nodes = j.nodes
        if len(nodes) > 1:
            out.update(dict.fromkeys(zip(nodes, nodes[1:])).keys())
    return out


def collapse(nodes: Iterable[str]) -> list[str]:
    """Consecutive repeats removed: ``a a b a`` -> ``a b a``."""
    out: list[str] = []
    for n in nodes:
        if not out or out[-1] != n:
            out.append(n)
    return out


def top_paths(journeys: Iterable[Journey], n: int = 10) -> list[tuple[tuple[str, ...], int]]:
    """The ``n`` most frequent node sequences (repeats collapsed), most frequent first (ties: the path)."""
    c = Counter(j.nodes for j in journeys)
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def entrances(entrance_lines: Iterable[str] | None) -> dict[str, frozenset[str]] | None:
    """``store.entrance_lines`` (``camera_id/line_id``) as camera id -> its entrance line ids (a camera without
    one has none: ``.get(camera, frozenset())``); ``None`` when unset (every line is an entrance).

        >>> entrances(["door/in", "door/side", "back/gate"])["door"] == {"in", "side"}, entrances(None)
        (True, None)
    """
    if entrance_lines is None:
        return None
    out: dict[str, set[str]] = {}
    for x in entrance_lines:
        cam, _, line = x.partition("/")
        out.setdefault(cam, set()).add(line)
    return {cam: frozenset(lines) for cam, lines in out.items()}


def track_info(summary, customer_id: str | None = None, attributes: dict | None = None,
               entrance_lines: Iterable[str] | None = None) -> TrackInfo:
    """A :class:`~storelens.contract.messages.TrackSummary` as the linker's :class:`TrackInfo` (``entrance_lines``:
    the site's ``store.entrance_lines``)."""
    from storelens.contract.messages import direction_name

    s = summary
    doors = entrances(entrance_lines)
    return TrackInfo(
        s.camera_id, int(s.track_id), int(s.first_ts_ms), int(s.last_ts_ms),
        np.asarray(s.appearance, np.float64) if len(s.appearance) else None,
        tuple(Visit(z.zone_id, z.zone_kind, int(z.enter_ts_ms), int(z.exit_ts_ms)) for z in s.zones),
        tuple((c.line_id, direction_name(c.direction), int(c.ts_ms)) for c in s.crossings),
        customer_id, dict(attributes or {}), None if doors is None else doors.get(s.camera_id, frozenset()))
