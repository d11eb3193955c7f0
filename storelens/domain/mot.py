"""MOTChallenge files: read, write, score a tracker, and count ground truth.

The MOTChallenge text format has one box per line::

    frame,id,left,top,width,height,conf,x,y,z          (2D MOT 2015, 10 columns)
    frame,id,left,top,width,height,conf,class,visibility  (MOT16/17 ground truth, 9 columns)

Frames are numbered from 1 (frame N is the video's N-th frame); boxes are in
source pixels. ``storelens track`` writes hypotheses as
``frame,id,left,top,width,height,conf,-1,-1,-1``.

Ground-truth rows are *evaluated* (scored, counted) when their ``conf`` is not
0 and, for MOT16/17/20 ground truth, their class is 1 (pedestrian). In 2D MOT 2015
every row has conf 1. Before scoring, a tracker box that matches a MOT16/17/20
ground-truth box of a distractor class (a person on a vehicle, a static person,
a distractor, a reflection; in MOT20 also a non-MOT vehicle) is removed, as the
official MOTChallenge evaluation does (:func:`scored_frames`): such a box is
neither a hit nor a false positive.

* :func:`evaluate_mot` scores a hypothesis file against ground truth with
  ``motmetrics`` (CLEAR MOT and identity metrics, IoU matching).
* :func:`gt_line_counts` replays the ground-truth trajectories through
  :class:`storelens.domain.counting.LineCounter`, giving the reference ``in``/``out``
  counts that the pipeline's counts are compared with.

Example:
    >>> from storelens.paths import asset
    >>> gt = asset("mot", "TUD-Campus", "gt", "gt.txt")
    >>> scores = evaluate_mot(gt, "campus_tracks.txt")   # from `storelens track`  # doctest: +SKIP
    >>> print(scores)                                                     # doctest: +SKIP
    MOTA 0.518  IDF1 0.492  MOTP(IoU) 0.746  IDsw 6  precision 0.773  recall 0.758  ...
    >>> gt_line_counts(gt, [LineConfig(id="x300", a=(300, 480), b=(300, 0))])  # walking right is "in"
    {'x300': {'in': 4, 'out': 1}}

From a shell::

    python -m storelens.domain.mot GT_FILE HYP_FILE [--iou 0.5] [--json]
"""
from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import pathlib
import sys
from dataclasses import asdict, dataclass
from typing import Collection, Iterable, Mapping, Sequence, Union

import numpy as np

from storelens.config import CountingConfig, LineConfig
from storelens.errors import StoreLensError

PathLike = Union[str, os.PathLike]

#: MOT16/17 ground-truth class of pedestrians, the only class that is evaluated.
PEDESTRIAN_CLASS = 1
#: MOT16/17 ground-truth classes whose matched tracker boxes are removed before scoring: person on vehicle (2),
#: static person (7), distractor (8), reflection (12), as TrackEval's MotChallenge2DBox preprocessing does.
DISTRACTOR_CLASSES = frozenset({2, 7, 8, 12})
#: MOT20 also removes tracker boxes matched to a non-MOT vehicle (6).
MOT20_DISTRACTOR_CLASSES = DISTRACTOR_CLASSES | {6}
#: IoU from which a tracker box matches a distractor box (fixed, whatever the scoring threshold).
DISTRACTOR_MATCH_IOU = 0.5


class MotFormatError(StoreLensError):
    """A MOTChallenge file is missing or malformed (the message names file and line)."""


@dataclass(frozen=True)
class MotBox:
    """One row of a MOTChallenge file (box in source pixels, frames from 1).

    ``cls`` and ``visibility`` are set only for 9-column MOT16/17 ground truth;
    they are ``None`` for 2D MOT 2015 files and tracker output.
    """

    frame: int
    track_id: int
    left: float
    top: float
    width: float
    height: float
    conf: float = 1.0
    cls: int | None = None
    visibility: float | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` corners."""
        return (self.left, self.top, self.left + self.width, self.top + self.height)

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom-centre of the box, the counting anchor (as :func:`storelens.domain.geometry.anchors_bottom_center`)."""
        return (self.left + self.width / 2.0, self.top + self.height)

    @property
    def evaluated(self) -> bool:
        """Whether a ground-truth row takes part in scoring: conf != 0 and (if known) pedestrian class."""
        return self.conf != 0 and (self.cls is None or self.cls == PEDESTRIAN_CLASS)


MotFrames = dict[int, list[MotBox]]


def read_mot(path: PathLike, evaluated_only: bool = False) -> MotFrames:
    """Read a MOTChallenge file into ``{frame: [MotBox, ...]}``, frames ascending.

    Blank lines are skipped. Raises :class:`MotFormatError` if the file is
    missing or a row is malformed (fewer than 7 columns, non-numbers, frame < 1,
    negative size). With ``evaluated_only`` only rows that
    :attr:`MotBox.evaluated` keeps are returned (use it for ground truth).
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise MotFormatError(f"MOT file not found: {p}")
    frames: MotFrames = {}
    with p.open() as fh:
        for lineno, raw in enumerate(fh, 1):
            text = raw.strip()
            if not text:
                continue
            box = _parse_row(text, p, lineno)
            if evaluated_only and not box.evaluated:
                continue
            frames.setdefault(box.frame, []).append(box)
    return dict(sorted(frames.items()))


def _parse_row(text: str, p: pathlib.Path, lineno: int) -> MotBox:
    cols = [c.strip() for c in text.split(",")]
    where = f"{p}:{lineno}"
    if len(cols) < 7:
        raise MotFormatError(f"{where}: expected at least 7 comma-separated columns "
                             f"(frame,id,left,top,width,height,conf,...), got {len(cols)}")
    try:
        vals = [float(c) for c in cols]
    except ValueError:
        raise MotFormatError(f"{where}: not all columns are numbers: {text!r}") from None
    if not all(math.isfinite(v) for v in vals[:7]):
        raise MotFormatError(f"{where}: non-finite value in {text!r}")
    frame, tid = vals[0], vals[1]
    if frame != int(frame) or tid != int(tid):
        raise MotFormatError(f"{where}: frame and id must be integers: {text!r}")
    if frame < 1:
        raise MotFormatError(f"{where}: frame {int(frame)}: frames are numbered from 1")
    if vals[4] < 0 or vals[5] < 0:
        raise MotFormatError(f"{where}: negative box size: {text!r}")
    cls = vis = None
    if len(cols) == 9:  # MOT16/17 ground truth: ..., conf, class, visibility
        cls, vis = int(vals[7]), vals[8]
    return MotBox(int(frame), int(tid), vals[2], vals[3], vals[4], vals[5], vals[6], cls, vis)


def write_mot(path: PathLike, boxes: Mapping[int, Iterable[MotBox]] | Iterable[MotBox]) -> int:
    """Write boxes as ``frame,id,left,top,width,height,conf,-1,-1,-1`` rows, sorted by frame then id.

    ``boxes`` is either ``{frame: [MotBox, ...]}`` (as :func:`read_mot` returns)
    or a flat iterable of :class:`MotBox`. Returns the number of rows written.
    """
    if isinstance(boxes, Mapping):
        flat = [b for bs in boxes.values() for b in bs]
    else:
        flat = list(boxes)
    flat.sort(key=lambda b: (b.frame, b.track_id))
    rows = [f"{b.frame},{b.track_id},{b.left:.2f},{b.top:.2f},{b.width:.2f},{b.height:.2f},{b.conf:.4f},-1,-1,-1"
            for b in flat]
    pathlib.Path(path).write_text("\n".join(rows) + ("\n" if rows else ""))
    return len(rows)


# -- scoring ---------------------------------------------------------------

@dataclass(frozen=True)
class MotScores:
    """Tracking scores of one sequence (``motmetrics`` definitions).

    ``motp`` is motmetrics' MOTP: the mean *distance* ``1 - IoU`` of matched
    pairs (lower is better); :attr:`motp_iou` is the MOTChallenge form.
    """

    mota: float
    idf1: float
    motp: float
    num_switches: int
    precision: float
    recall: float
    num_frames: int
    num_objects: int = 0
    num_false_positives: int = 0
    num_misses: int = 0

    @property
    def motp_iou(self) -> float:
        """Mean IoU of matched pairs (higher is better), as MOTChallenge reports MOTP."""
        return 1.0 - self.motp

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"MOTA {self.mota:.3f}  IDF1 {self.idf1:.3f}  MOTP(IoU) {self.motp_iou:.3f}  "
                f"IDsw {self.num_switches}  precision {self.precision:.3f}  recall {self.recall:.3f}  "
                f"FP {self.num_false_positives}  FN {self.num_misses}  GT {self.num_objects}  "
                f"frames {self.num_frames}")


def _numpy2_compat() -> None:
    """Restore ``numpy.asfarray`` (removed in NumPy 2.0), which motmetrics 1.4.0 calls.

    Called just before motmetrics is imported, never at import time of this
    module. It only adds the missing name (same semantics as NumPy 1:
    ``asarray`` with a float64 default dtype) and is a no-op on NumPy 1 or if
    already present; it is left installed because motmetrics calls it lazily.
    """
    if not hasattr(np, "asfarray"):
        def asfarray(a, dtype=np.float64):  # noqa: ANN001 - mirrors numpy 1.x
            if not np.issubdtype(np.dtype(dtype), np.inexact):
                dtype = np.float64
            return np.asarray(a, dtype=dtype)

        np.asfarray = asfarray  # type: ignore[attr-defined]


def _box_array(boxes: Sequence[MotBox]) -> np.ndarray:
    return np.array([[b.left, b.top, b.width, b.height] for b in boxes], np.float64).reshape(-1, 4)


def box_iou(a: Sequence[MotBox], b: Sequence[MotBox]) -> np.ndarray:
    """IoU of every box of ``a`` (rows) with every box of ``b`` (columns)."""
    ax, bx = (np.array([bb.xyxy for bb in boxes], np.float64).reshape(-1, 4) for boxes in (a, b))
    lt = np.maximum(ax[:, None, :2], bx[None, :, :2])
    rb = np.minimum(ax[:, None, 2:], bx[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=2)
    area_a = (ax[:, 2] - ax[:, 0]) * (ax[:, 3] - ax[:, 1])
    area_b = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _distractor_classes(gt_path: PathLike) -> frozenset[int]:
    """The distractor classes of a sequence: MOT20's if its name (``seqinfo.ini``, else the folder above ``gt/``)
    starts with ``MOT20``."""
    name = sequence_info(gt_path).get("name") or pathlib.Path(gt_path).resolve().parent.parent.name
    return MOT20_DISTRACTOR_CLASSES if name.upper().startswith("MOT20") else DISTRACTOR_CLASSES


def _without_distractor_matches(gt: Sequence[MotBox], hyp: Sequence[MotBox],
                                distractors: Collection[int]) -> list[MotBox]:
    """``hyp`` less the boxes that one-to-one matching on IoU (Hungarian, pairs of IoU >= 0.5 only) pairs with a
    ``gt`` box (any row of the frame: every class, conf 0 too) of a class in ``distractors``."""
    if not gt or not hyp:
        return list(hyp)
    from scipy.optimize import linear_sum_assignment

    iou = box_iou(gt, hyp)
    iou[iou < DISTRACTOR_MATCH_IOU - np.finfo(float).eps] = 0.0
    rows, cols = linear_sum_assignment(iou, maximize=True)
    drop = {int(c) for r, c in zip(rows, cols) if iou[r, c] > np.finfo(float).eps and gt[r].cls in distractors}
    return [b for k, b in enumerate(hyp) if k not in drop]


def scored_frames(gt_path: PathLike, hyp_path: PathLike) -> tuple[MotFrames, MotFrames]:
    """Ground truth and hypotheses as they are scored (MOTChallenge's preprocessing), ``{frame: [MotBox, ...]}``.

    If the ground truth carries classes (MOT16/17/20, 9 columns), in every frame the
    hypotheses are first matched one-to-one to *all* ground-truth rows of the frame
    (Hungarian on IoU, pairs of IoU >= 0.5 only) and those matched to a distractor
    class (:data:`DISTRACTOR_CLASSES`; :data:`MOT20_DISTRACTOR_CLASSES` for a MOT20
    sequence) are removed. Then only evaluated ground-truth rows are kept
    (:attr:`MotBox.evaluated`). Ground truth without classes (2D MOT 2015, TUD,
    CAVIAR) keeps every hypothesis. Both :func:`evaluate_mot` and the HOTA of
    ``bench/tracking.py`` score these frames.
    """
    gt_all, hyp = read_mot(gt_path), read_mot(hyp_path)
    if any(b.cls is not None for bs in gt_all.values() for b in bs):
        distractors = _distractor_classes(gt_path)
        hyp = {f: _without_distractor_matches(gt_all.get(f, []), bs, distractors) for f, bs in hyp.items()}
    gt = {f: kept for f, bs in gt_all.items() if (kept := [b for b in bs if b.evaluated])}
    return gt, hyp


def evaluate_mot(gt_path: PathLike, hyp_path: PathLike, iou_threshold: float = 0.5,
                 frames: Collection[int] | None = None) -> MotScores:
    """Score tracker output ``hyp_path`` against ground truth ``gt_path``.

    Boxes match when their IoU is at least ``iou_threshold``. Only evaluated
    ground-truth rows count (conf != 0; for MOT16/17/20 also class 1), and tracker
    boxes on distractors are removed first (:func:`scored_frames`). Every frame
    that has ground truth or hypotheses is scored, so frames the tracker left
    empty count as misses; with ``frames``, only those (a camera sampling the
    sequence, ``target_fps``: a frame never shown to the tracker is no miss).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    gt, hyp = scored_frames(gt_path, hyp_path)
    _numpy2_compat()
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    max_dist = 1.0 - iou_threshold
    for f in sorted((set(gt) | set(hyp)) if frames is None else set(frames)):
        g, h = gt.get(f, []), hyp.get(f, [])
        dist = mm.distances.iou_matrix(_box_array(g), _box_array(h), max_iou=max_dist)
        acc.update([b.track_id for b in g], [b.track_id for b in h], dist, frameid=f)
    names = ["mota", "idf1", "motp", "num_switches", "precision", "recall", "num_frames",
             "num_objects", "num_false_positives", "num_misses"]
    row = mm.metrics.create().compute(acc, metrics=names, name="seq").loc["seq"]

    def num(key: str) -> float:
        v = float(row[key])
        return 0.0 if math.isnan(v) else v

    return MotScores(
        mota=num("mota"), idf1=num("idf1"), motp=num("motp"), num_switches=int(num("num_switches")),
        precision=num("precision"), recall=num("recall"), num_frames=int(num("num_frames")),
        num_objects=int(num("num_objects")), num_false_positives=int(num("num_false_positives")),
        num_misses=int(num("num_misses")),
    )


# -- reference counts ------------------------------------------------------

def sequence_info(gt_path: PathLike) -> dict[str, str]:
    """``[Sequence]`` of the ``seqinfo.ini`` beside ``gt/`` (``{}`` if there is none)."""
    p = pathlib.Path(gt_path)
    for cand in (p.parent.parent / "seqinfo.ini", p.parent / "seqinfo.ini"):
        if cand.is_file():
            cp = configparser.ConfigParser()
            cp.read(cand)
            if cp.has_section("Sequence"):
                return dict(cp["Sequence"])
    return {}


def _as_line(line: LineConfig | Mapping) -> LineConfig:
    return line if isinstance(line, LineConfig) else LineConfig.model_validate(dict(line))


def gt_line_counts(
    gt_path: PathLike,
    lines: Sequence[LineConfig | Mapping],
    counting_config: CountingConfig | None = None,
    fps: float | None = None,
    start_ts_ms: int = 0,
) -> dict[str, dict[str, int]]:
    """Reference ``{line_id: {"in": N, "out": N}}`` from ground-truth trajectories.

    The evaluated ground-truth boxes' bottom-centre anchors (and heights) are fed frame by
    frame (every frame from 1 to the last, empty ones included, as the
    pipeline does) into :class:`storelens.domain.counting.LineCounter`, with the
    ground-truth ids as track ids. Timestamps follow ingest:
    ``start_ts_ms + round((frame - 1) * 1000 / fps)``; ``fps`` defaults to
    ``frameRate`` of ``seqinfo.ini`` (25 if absent). ``lines`` are
    :class:`LineConfig` objects or dicts like ``{"id": "mid", "a": [320, 0], "b": [320, 480]}``.
    """
    from storelens.domain.counting import LineCounter

    line_cfgs = [_as_line(ln) for ln in lines]
    if fps is None:
        info = sequence_info(gt_path)
        fps = float(info.get("framerate", 0) or 0) or 25.0
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    gt = read_mot(gt_path, evaluated_only=True)
    counter = LineCounter("gt", line_cfgs, counting_config or CountingConfig())
    last = max(gt, default=0)
    for f in range(1, last + 1):
        boxes = gt.get(f, [])
        counter.update(seq=f - 1, ts_ms=start_ts_ms + int(round((f - 1) * 1000.0 / fps)),
                       track_ids=[b.track_id for b in boxes], anchors=[b.anchor for b in boxes],
                       heights=[b.height for b in boxes])
    return counter.counts()


# -- command line ----------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m storelens.domain.mot GT HYP``: print the scores (``--json`` for machines)."""
    ap = argparse.ArgumentParser(prog="python -m storelens.domain.mot",
                                 description="Score MOTChallenge tracker output against ground truth.")
    ap.add_argument("gt", help="ground-truth file (gt/gt.txt)")
    ap.add_argument("hyp", help="tracker output (e.g. from `storelens track --mot-out`)")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU needed for a match (default 0.5)")
    ap.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = ap.parse_args(argv)
    try:
        scores = evaluate_mot(args.gt, args.hyp, iou_threshold=args.iou)
    except (StoreLensError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(scores.as_dict()) if args.json else scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
