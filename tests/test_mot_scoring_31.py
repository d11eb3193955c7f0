"""MOTChallenge scoring as the official evaluation does it, and the Ultralytics child of bench/tracking.py.

* MOT16/17/20 ground truth: tracker boxes matched (Hungarian on IoU, pairs of IoU >= 0.5) to a
  distractor row (person on vehicle 2, static person 7, distractor 8, reflection 12; MOT20 also
  vehicle 6) are removed before scoring, as TrackEval's MotChallenge2DBox preprocessing does, in
  ``evaluate_mot`` and in the HOTA of ``bench/tracking.py`` alike (``storelens.domain.mot.scored_frames``).
  A perfect hypothesis built from every person-like box of MOT17-mini scores 1.0; a box on empty
  background is still a false positive.
* Ground truth without classes (TUD, MOT15-style, CAVIAR) scores exactly as before.
* The ``_ultralytics`` child of bench/tracking.py loads neither storelens.config nor pydantic before it
  dispatches (their import time is not charged to Ultralytics' timed process).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import pytest

from storelens.domain.mot import MotBox, box_iou, evaluate_mot, read_mot, write_mot
from storelens.paths import asset

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench" / "tracking.py"
MOT17_MINI = sorted(asset("mot", "MOT17-mini", "train").glob("MOT17-*"))
PERSON_LIKE = {1, 2, 7, 8, 12}  # pedestrian, person on vehicle, static person, distractor, reflection


def _bench_module():
    if str(BENCH.parent) not in sys.path:  # benchlib, as when the bench runs as a script
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("tracking_bench_31", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _trackeval_available() -> bool:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import trackeval.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def _perfect(gt: pathlib.Path, dst: pathlib.Path, extra: list[MotBox] = ()) -> pathlib.Path:
    write_mot(dst, [MotBox(b.frame, b.track_id, b.left, b.top, b.width, b.height, 1.0)
                    for bs in read_mot(gt).values() for b in bs if b.cls in PERSON_LIKE] + list(extra))
    return dst


def test_mot17_mini_has_distractors():
    assert len(MOT17_MINI) == 7
    classes = {b.cls for d in MOT17_MINI for bs in read_mot(d / "gt" / "gt.txt").values() for b in bs}
    assert {2, 7, 8, 12} <= classes  # else the tests below prove nothing


@pytest.mark.parametrize("seq", MOT17_MINI, ids=lambda d: d.name)
def test_perfect_hypothesis_scores_one(seq, tmp_path):
    gt = seq / "gt" / "gt.txt"
    s = evaluate_mot(gt, _perfect(gt, tmp_path / "hyp.txt"))
    assert (s.mota, s.idf1, s.num_false_positives, s.num_misses, s.num_switches) == (1.0, 1.0, 0, 0, 0)
    assert s.num_objects == sum(len(bs) for bs in read_mot(gt, evaluated_only=True).values())


@pytest.mark.skipif(not _trackeval_available(), reason="trackeval not installed (requirements-nodeps.txt)")
@pytest.mark.parametrize("seq", MOT17_MINI, ids=lambda d: d.name)
def test_perfect_hypothesis_hota_is_one(seq, tmp_path):
    gt = seq / "gt" / "gt.txt"
    assert _bench_module().hota(gt, _perfect(gt, tmp_path / "hyp.txt")) == pytest.approx(1.0, abs=1e-6)


def test_box_on_empty_background_is_still_a_false_positive(tmp_path):
    seq = MOT17_MINI[0]  # MOT17-02: 48 false positives on distractors before the preprocessing
    gt = seq / "gt" / "gt.txt"
    frame1 = read_mot(gt)[1]
    extra = MotBox(1, 9999, 1, 1, 40, 100, 0.9)
    assert not box_iou([extra], frame1).any()  # touches no ground-truth row at all
    s = evaluate_mot(gt, _perfect(gt, tmp_path / "hyp.txt", [extra]))
    assert (s.num_false_positives, s.num_misses) == (1, 0)
    assert s.mota == pytest.approx(1.0 - 1.0 / s.num_objects)
    assert s.idf1 < 1.0
    if _trackeval_available():
        assert _bench_module().hota(gt, tmp_path / "hyp.txt") < 1.0


# -- hand-made MOT17/MOT20 frames -------------------------------------------------------

P = (100, 100, 50, 100)  # a pedestrian (left, top, width, height)
R = (110, 100, 50, 100)  # overlaps P with IoU 40/60 = 0.667 (a reflection, say)


@dataclass(frozen=True)
class Case:
    name: str
    seq: str  # folder name above gt/ (MOT20-* takes MOT20's distractor classes)
    gt: tuple  # (id, box, conf, class)
    hyp: tuple  # (id, box)
    fp: int
    fn: int


CASES = [
    Case("on a static person: not scored", "MOT17-01", ((1, P, 1, 1), (2, (300, 100, 50, 100), 0, 7)),
         ((1, P), (2, (300, 100, 50, 100))), 0, 0),
    Case("each distractor class", "MOT17-01",
         tuple((k, (100 * k, 300, 40, 90), 0, c) for k, c in enumerate((2, 7, 8, 12), 1)),
         tuple((k, (100 * k, 300, 40, 90)) for k in range(1, 5)), 0, 0),
    Case("under IoU 0.5 of a distractor: a false positive", "MOT17-01", ((1, (300, 100, 50, 100), 0, 8),),
         ((1, (330, 100, 50, 100)),), 1, 0),
    Case("on an occluder (9): a false positive", "MOT17-01", ((1, (300, 100, 50, 100), 0, 9),),
         ((1, (300, 100, 50, 100)),), 1, 0),
    Case("on a zero-marked pedestrian: a false positive", "MOT17-01", ((1, (300, 100, 50, 100), 0, 1),),
         ((1, (300, 100, 50, 100)),), 1, 0),
    Case("on a vehicle (6) in MOT17: a false positive", "MOT17-01", ((1, (300, 100, 50, 100), 0, 6),),
         ((1, (300, 100, 50, 100)),), 1, 0),
    Case("on a vehicle (6) in MOT20: not scored", "MOT20-01", ((1, (300, 100, 50, 100), 0, 6),),
         ((1, (300, 100, 50, 100)),), 0, 0),
    # one-to-one: the box on the reflection goes, the box on the pedestrian (IoU 0.667 with R too) stays a hit
    Case("pedestrian and overlapping reflection", "MOT17-01", ((1, P, 1, 1), (2, R, 0, 12)),
         ((1, P), (2, R)), 0, 0),
    # one box between them: matched to the pedestrian (higher IoU), so it is a hit, not removed
    Case("one box nearer the pedestrian", "MOT17-01", ((1, P, 1, 1), (2, R, 0, 12)),
         ((1, (102, 100, 50, 100)),), 0, 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_distractor_preprocessing(case, tmp_path):
    gt = tmp_path / case.seq / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("".join(f"1,{i},{x},{y},{w},{h},{conf},{cls},1\n" for i, (x, y, w, h), conf, cls in case.gt))
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("".join(f"1,{i},{x},{y},{w},{h},0.9,-1,-1,-1\n" for i, (x, y, w, h) in case.hyp))
    s = evaluate_mot(gt, hyp)
    assert (s.num_false_positives, s.num_misses) == (case.fp, case.fn)


# -- ground truth without classes: unchanged ----------------------------------------------

def _degraded(gt: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """Misses, shifted boxes, an identity switch per odd id after frame 20, a false positive every 5th frame."""
    rows = []
    for f, bs in read_mot(gt, evaluated_only=True).items():
        for k, b in enumerate(bs):
            if (f + k) % 4 == 0:
                continue
            tid = b.track_id + (100 if f > 20 and b.track_id % 2 else 0)
            rows.append(MotBox(f, tid, b.left + (f % 3) * 4, b.top - (k % 2) * 3, b.width, b.height, 0.9))
        if f % 5 == 0:
            rows.append(MotBox(f, 999, 5, 5, 40, 90, 0.5))
    write_mot(dst, rows)
    return dst


# measured on the code before the distractor preprocessing (d5d49c5): MOTA, IDF1, FP, FN, IDsw, HOTA
UNCHANGED = {
    ("mot", "TUD-Campus"): (0.7047, 0.7372, 14, 89, 3, 0.5897),
    ("mot", "TUD-Stadtmitte"): (0.7093, 0.7930, 39, 293, 4, 0.5751),
    ("video", "caviar", "OneLeaveShop1front"): (-0.0982, 0.4184, 216, 265, 0, 0.3290),
}


@pytest.mark.parametrize("where", list(UNCHANGED), ids=lambda w: w[-1])
def test_scores_without_classes_unchanged(where, tmp_path):
    gt = asset(*where, "gt", "gt.txt")
    assert all(b.cls is None for bs in read_mot(gt).values() for b in bs)
    hyp = _degraded(gt, tmp_path / "hyp.txt")
    s = evaluate_mot(gt, hyp)
    mota, idf1, fp, fn, idsw, hota = UNCHANGED[where]
    assert (s.num_false_positives, s.num_misses, s.num_switches) == (fp, fn, idsw)
    assert (s.mota, s.idf1) == (pytest.approx(mota, abs=5e-5), pytest.approx(idf1, abs=5e-5))
    if _trackeval_available():
        assert _bench_module().hota(gt, hyp) == pytest.approx(hota, abs=5e-5)


# -- bench/tracking.py's Ultralytics child ---------------------------------------------------

def test_ultralytics_child_does_not_import_storelens_config():
    """As the child starts (``tracking.py _ultralytics ...``), importing the module loads no storelens.config /
    pydantic (charged to Ultralytics' timed process before); the parent still passes our NMS IoU."""
    code = ("import importlib.util, sys\n"
            f"sys.argv = [{str(BENCH)!r}, '_ultralytics', 'video.avi', 'bytetrack.yaml', 'out.txt', '0.6']\n"
            f"spec = importlib.util.spec_from_file_location('tracking_child', {str(BENCH)!r})\n"
            "mod = importlib.util.module_from_spec(spec); sys.modules['tracking_child'] = mod\n"
            "spec.loader.exec_module(mod)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('storelens', 'pydantic', 'benchlib')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's printed list
    assert "storelens.config" not in loaded and "pydantic" not in loaded, loaded
    assert loaded == ["storelens", "storelens.paths"]


def test_ultralytics_runs_get_our_detector_iou():
    from storelens.config import OpenVINODetectorConfig

    mod = _bench_module()
    assert mod.detector_iou() == OpenVINODetectorConfig().iou == 0.6
