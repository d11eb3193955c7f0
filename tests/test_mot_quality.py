"""Tracking and counting quality of the real CLI on real MOTChallenge sequences.

* ``storelens track`` on TUD-Campus and TUD-Stadtmitte: the MOT file follows
  the conventions (frames from 1 to the last video frame, in order, one row
  per box ``frame,id,left,top,width,height,conf,-1,-1,-1``) and scores MOTA
  and IDF1 (``storelens.domain.mot.evaluate_mot``, IoU >= 0.5) above floors set from
  measured values minus a margin, so a real regression fails.
* ``storelens count`` on the same videos: per-line ``in``/``out`` close to the
  reference counts derived from the ground-truth trajectories
  (``storelens.domain.mot.gt_line_counts``).
* Fast unit tests of ``storelens.domain.mot`` on small hand-made files.

Each CLI command runs once per sequence (module-scoped, lazily cached
fixtures); ``pytest -s`` or ``-rA`` shows the scores and counts.

Measured (2026-12, yolo11n int8 OpenVINO + the default tracker, bytereid, with
``detector.confidence`` 0.1 following its ``track_low_thresh``; defaults):

=============== ====== ====== ==========================================
sequence         MOTA   IDF1   notes
=============== ====== ====== ==========================================
TUD-Campus       0.588  0.723  77 FP, 70 FN, 1 IDsw of 359 GT boxes
TUD-Stadtmitte   0.804  0.835  37 FP, 186 FN, 4 IDsw of 1156 GT boxes
=============== ====== ====== ==========================================

The int8 detector's results depend a little on the CPU: on a CPU with AVX-512
VNNI (2026-12-02/03 runs, BENCHMARKS.md) the same commands gave 0.565 / 0.756
and 0.799 / 0.885, also with exact counts; the floors hold for both.

(deep-sort, ``tracker: {backend: deepsort}``, measured 0.518 / 0.492 and
0.788 / 0.804 in 2026-11, with 1 count error per sequence.)
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import pytest

from storelens.config import ByteReidTrackerConfig, CountingConfig, LineConfig, TrackerConfig
from storelens.domain.mot import (
    MotBox,
    MotFormatError,
    evaluate_mot,
    gt_line_counts,
    read_mot,
    write_mot,
)
from storelens.paths import asset

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MOT_ROW_COLUMNS = 10


@dataclass(frozen=True)
class Sequence:
    name: str
    frames: int
    min_mota: float  # measured minus ~0.02 (the default tracker, bytereid)
    min_idf1: float

    @property
    def video(self) -> pathlib.Path:
        return asset("mot", self.name, f"{self.name}.mp4")

    @property
    def gt(self) -> pathlib.Path:
        return asset("mot", self.name, "gt", "gt.txt")


SEQUENCES = {
    s.name: s
    for s in (
        Sequence("TUD-Campus", 71, min_mota=0.54, min_idf1=0.70),  # measured 0.588 / 0.723 (0.565 / 0.756)
        Sequence("TUD-Stadtmitte", 179, min_mota=0.78, min_idf1=0.81),  # measured 0.804 / 0.835 (0.799 / 0.885)
    )
}


@dataclass(frozen=True)
class CountCase:
    """A counting line and the ground truth's crossings of it.

    Lines are vertical and point up (A at the bottom): walking to the right
    (x growing) is ``in``, to the left is ``out``. ``gt_in``/``gt_out`` were
    checked by hand against the ground-truth trajectories (which ids cross,
    and which way).
    """

    seq: str
    line_id: str
    x: int
    gt_in: int
    gt_out: int

    @property
    def line(self) -> LineConfig:
        return LineConfig(id=self.line_id, a=(self.x, 480), b=(self.x, 0))

    @property
    def cli_arg(self) -> str:
        return f"{self.line_id}={self.x},480,{self.x},0"


# Lines at the left, middle and right of each view, where people are well
# visible. TUD-Campus' middle (x 340-460) is avoided: a group of people walks
# there occluding each other, so the detector cannot separate them.
COUNT_CASES = [
    CountCase("TUD-Campus", "x140", 140, gt_in=2, gt_out=1),  # in: ids 3, 7; out: 2
    CountCase("TUD-Campus", "x300", 300, gt_in=4, gt_out=1),  # in: 3, 4, 5, 7; out: 2
    CountCase("TUD-Campus", "x500", 500, gt_in=3, gt_out=0),  # in: 1, 3, 4
    CountCase("TUD-Stadtmitte", "x300", 300, gt_in=1, gt_out=1),  # in: 2; out: 7
    CountCase("TUD-Stadtmitte", "x460", 460, gt_in=2, gt_out=4),  # in: 2, 4; out: 6, 7, 8, 9
    CountCase("TUD-Stadtmitte", "x540", 540, gt_in=3, gt_out=3),  # in: 2, 4, 5; out: 7, 8, 9
]
# Measured |in - gt_in| + |out - gt_out| with the default tracker (bytereid): 0 on all six lines, so the
# counts must be exact (deep-sort had 1 per sequence: a spurious out at Campus x500, a missed out at
# Stadtmitte x460).
MAX_LINE_ERROR = 0
MAX_SEQUENCE_ERROR = 0  # summed over a sequence's lines


def _case_id(c: CountCase) -> str:
    return f"{c.seq}-{c.line_id}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "storelens.cli", *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO_ROOT)


def _require(seq: Sequence) -> None:
    if not seq.video.is_file() or not seq.gt.is_file():
        pytest.fail(f"missing test data {seq.video} / {seq.gt}: set STORELENS_ASSETS to the shared assets folder")


@dataclass(frozen=True)
class TrackRun:
    proc: subprocess.CompletedProcess[str]
    mot_path: pathlib.Path


@pytest.fixture(scope="module")
def track_run(tmp_path_factory) -> Callable[[str], TrackRun]:
    """``track_run(name)``: one ``storelens track`` run per sequence, cached for the module."""
    cache: dict[str, TrackRun] = {}

    def get(name: str) -> TrackRun:
        if name not in cache:
            seq = SEQUENCES[name]
            _require(seq)
            out = tmp_path_factory.mktemp(f"track-{name}") / "tracks.txt"
            cache[name] = TrackRun(run_cli("track", str(seq.video), "--mot-out", str(out)), out)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def count_run() -> Callable[[str], dict]:
    """``count_run(name)``: one ``storelens count --json`` run per sequence with all its lines, cached."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            seq = SEQUENCES[name]
            _require(seq)
            args = ["count", str(seq.video), "--json"]
            for c in COUNT_CASES:
                if c.seq == name:
                    args += ["--line", c.cli_arg]
            proc = run_cli(*args)
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[name] = json.loads(proc.stdout)
        return cache[name]

    return get


# -- tracking --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_track_output_follows_mot_conventions(name, track_run):
    seq = SEQUENCES[name]
    run = track_run(name)
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    assert "Traceback" not in run.proc.stderr
    lines = run.mot_path.read_text().splitlines()
    assert f"wrote {len(lines)} boxes of {seq.frames} frames" in run.proc.stdout

    frames: list[int] = []
    ids_per_frame: dict[int, list[int]] = {}
    for i, line in enumerate(lines, 1):
        cols = line.split(",")
        assert len(cols) == MOT_ROW_COLUMNS, f"row {i}: {line!r}"
        assert cols[7:] == ["-1", "-1", "-1"], f"row {i}: {line!r}"
        frame, tid = int(cols[0]), int(cols[1])
        left, top, w, h, conf = (float(c) for c in cols[2:7])
        assert w > 0 and h > 0 and 0 < conf <= 1, f"row {i}: {line!r}"
        frames.append(frame)
        ids_per_frame.setdefault(frame, []).append(tid)

    assert frames == sorted(frames), "rows are in frame order"
    assert min(frames) >= 1 and max(frames) == seq.frames, "frames are numbered 1..N (N = video frames)"
    # People are visible in every frame of both sequences. The CLI runs the default tracker, bytereid,
    # whose BYTE core confirms the tracks it starts on the first frame at once (later ones on their
    # second matched frame), so every frame from 1 on has boxes (deep-sort: from its n_init-th frame).
    assert isinstance(TrackerConfig(), ByteReidTrackerConfig), "the default tracker changed: revisit this rule"
    assert set(range(1, seq.frames + 1)) <= set(frames), "a frame is missing from the MOT output"
    for f, ids in ids_per_frame.items():
        assert len(ids) == len(set(ids)), f"frame {f}: an id appears twice"
    # The same file read through the library gives the same rows.
    parsed = read_mot(run.mot_path)
    assert sum(len(b) for b in parsed.values()) == len(lines)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_tracking_scores_against_ground_truth(name, track_run):
    seq = SEQUENCES[name]
    run = track_run(name)
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    scores = evaluate_mot(seq.gt, run.mot_path)
    print(f"\n{name}: {scores}")
    assert scores.num_frames == seq.frames
    assert scores.mota >= seq.min_mota, f"{name}: MOTA {scores.mota:.3f} < {seq.min_mota} ({scores})"
    assert scores.idf1 >= seq.min_idf1, f"{name}: IDF1 {scores.idf1:.3f} < {seq.min_idf1} ({scores})"


# -- counting --------------------------------------------------------------

@pytest.mark.parametrize("case", COUNT_CASES, ids=_case_id)
def test_ground_truth_counts_of_the_chosen_lines(case):
    """The reference itself: gt_line_counts on the real GT equals the hand-checked crossings."""
    seq = SEQUENCES[case.seq]
    _require(seq)
    gt = gt_line_counts(seq.gt, [case.line])[case.line_id]
    print(f"\n{_case_id(case)} GT: {gt}")
    assert gt == {"in": case.gt_in, "out": case.gt_out}


@pytest.mark.slow
@pytest.mark.parametrize("case", COUNT_CASES, ids=_case_id)
def test_line_counts_close_to_ground_truth(case, count_run):
    result = count_run(case.seq)
    assert result["frames"] == SEQUENCES[case.seq].frames
    got = {ln["id"]: ln for ln in result["lines"]}[case.line_id]
    err = abs(got["in"] - case.gt_in) + abs(got["out"] - case.gt_out)
    print(f"\n{_case_id(case)}: pipeline in/out {got['in']}/{got['out']}, GT {case.gt_in}/{case.gt_out}, error {err}")
    assert err <= MAX_LINE_ERROR, (got, case)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_total_count_error_per_sequence(name, count_run):
    cases = [c for c in COUNT_CASES if c.seq == name]
    gt = gt_line_counts(SEQUENCES[name].gt, [c.line for c in cases])
    got = {ln["id"]: ln for ln in count_run(name)["lines"]}
    assert set(got) == {c.line_id for c in cases}
    err = sum(abs(got[k][d] - gt[k][d]) for k in gt for d in ("in", "out"))
    crossings = sum(gt[k]["in"] + gt[k]["out"] for k in gt)
    pipe_txt = ", ".join(f"{k} {got[k]['in']}/{got[k]['out']}" for k in gt)
    gt_txt = ", ".join(f"{k} {v['in']}/{v['out']}" for k, v in gt.items())
    print(f"\n{name}: total count error {err} over {crossings} GT crossings; "
          f"pipeline in/out: {pipe_txt}; GT: {gt_txt}")
    assert crossings >= 6, "the lines must really be crossed"
    assert err <= MAX_SEQUENCE_ERROR, (got, gt)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_count_equals_replaying_the_track_output(name, count_run, track_run):
    """``count`` and ``track`` see the same tracks: replaying the MOT file through
    ``gt_line_counts`` (the reference's own code path) gives the CLI's counts."""
    run = track_run(name)
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    cases = [c for c in COUNT_CASES if c.seq == name]
    replayed = gt_line_counts(run.mot_path, [c.line for c in cases])
    got = {ln["id"]: {"in": ln["in"], "out": ln["out"]} for ln in count_run(name)["lines"]}
    assert replayed == got


# -- storelens.domain.mot on hand-made files (fast) -------------------------------

def _box(frame: int, tid: int, anchor: tuple[float, float], conf: float = 1.0) -> MotBox:
    """A 40x100 box whose bottom-centre is ``anchor``."""
    x, y = anchor
    return MotBox(frame, tid, x - 20, y - 100, 40, 100, conf)


def _write_gt(path: pathlib.Path, boxes: list[MotBox]) -> pathlib.Path:
    """MOT15-style GT rows (10 columns, world coordinates -1)."""
    rows = sorted(boxes, key=lambda b: (b.frame, b.track_id))
    path.write_text("".join(f"{b.frame},{b.track_id},{b.left},{b.top},{b.width},{b.height},{b.conf:g},-1,-1,-1\n"
                            for b in rows))
    return path


def _walk(tid: int, xs: list[float], y: float, first_frame: int = 1, conf: float = 1.0) -> list[MotBox]:
    return [_box(first_frame + i, tid, (x, y), conf) for i, x in enumerate(xs)]


MID = LineConfig(id="mid", a=(320, 480), b=(320, 0))  # points up: walking right is "in"
DOOR = LineConfig(id="door", a=(0, 300), b=(640, 300))  # walking down the image is "in"


def test_gt_line_counts_on_hand_made_trajectories(tmp_path):
    right = [100 + 40 * i for i in range(11)]  # 100 .. 500
    boxes = (
        _walk(1, right, 400)  # crosses mid left -> right: in
        + _walk(2, right[::-1], 420)  # right -> left: out
        + _walk(3, [200, 240, 280, 318, 280, 240, 200], 440)  # U-turn inside the hysteresis band: nothing
        + _walk(4, [200, 280, 360, 440, 360, 280, 200], 460)  # over and back: in then out
        + _walk(5, right, 380, conf=0)  # conf 0 is not evaluated: must not count
        + [_box(f, 6, (600, 240 + 20 * (f - 1))) for f in range(1, 8)]  # down through the door line: in
    )
    gt = _write_gt(tmp_path / "gt.txt", boxes)
    # at 2 fps: 40 px a frame is 0.8 box heights a second, a walk (LineCounter never counts a step that is none)
    counts = gt_line_counts(gt, [MID, DOOR], CountingConfig(), fps=2.0)
    assert counts == {"mid": {"in": 2, "out": 2}, "door": {"in": 1, "out": 0}}
    # lines as plain dicts (config style) give the same
    as_dicts = [{"id": "mid", "a": [320, 480], "b": [320, 0]}, {"id": "door", "a": [0, 300], "b": [640, 300]}]
    assert gt_line_counts(gt, as_dicts, fps=2.0) == counts
    # at 25 fps the tracks through "mid" move 10 box heights a second: no person walks so, none counts
    assert gt_line_counts(gt, [MID]) == {"mid": {"in": 0, "out": 0}}


def test_gt_line_counts_joins_an_id_switch_at_the_line(tmp_path):
    # id 1 walks up to the line and vanishes; two frames later id 2 appears 30 px (0.3 box heights)
    # further on: LineCounter's re-acquisition joins them into one crossing. At 2 fps (a walk; the gap is 1.5 s).
    boxes = _walk(1, [200, 240, 280, 310], 400) + _walk(2, [340, 380, 420], 400, first_frame=7)
    gt = _write_gt(tmp_path / "gt.txt", boxes)
    assert gt_line_counts(gt, [MID], fps=2.0) == {"mid": {"in": 1, "out": 0}}
    # with re-acquisition switched off the new id starts fresh: no crossing
    no_join = CountingConfig(reacquire_radius_heights=0)
    assert gt_line_counts(gt, [MID], no_join, fps=2.0) == {"mid": {"in": 0, "out": 0}}
    # and after the re-acquire window (2 s) it is a new person too: at 1 fps the gap is 3 s
    assert gt_line_counts(gt, [MID], fps=1.0) == {"mid": {"in": 0, "out": 0}}


def test_read_write_roundtrip_and_filters(tmp_path):
    boxes = [MotBox(2, 7, 10.5, 20.25, 30, 60, 0.9), MotBox(1, 3, 1, 2, 3, 4, 0.5), MotBox(1, 1, 5, 6, 7, 8, 1.0)]
    path = tmp_path / "hyp.txt"
    assert write_mot(path, boxes) == 3
    text = path.read_text().splitlines()
    assert text[0] == "1,1,5.00,6.00,7.00,8.00,1.0000,-1,-1,-1"
    assert [r.split(",")[:2] for r in text] == [["1", "1"], ["1", "3"], ["2", "7"]]
    frames = read_mot(path)
    assert list(frames) == [1, 2]
    assert frames[2][0] == MotBox(2, 7, 10.5, 20.25, 30, 60, 0.9)
    assert frames[2][0].anchor == (25.5, 80.25)
    # MOT17 ground truth (9 columns): only conf != 0 and class 1 (pedestrian) are evaluated
    mot17 = tmp_path / "gt17.txt"
    mot17.write_text("1,1,0,0,10,20,1,1,1.0\n1,2,0,0,10,20,0,1,1.0\n1,3,0,0,10,20,1,7,0.5\n2,1,1,0,10,20,1,1,0.8\n")
    assert [b.track_id for bs in read_mot(mot17, evaluated_only=True).values() for b in bs] == [1, 1]
    assert read_mot(mot17)[1][2].cls == 7


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1,1,0,0,10\n", "at least 7"),
        ("1,1,a,0,10,20,1,-1,-1,-1\n", "not all columns are numbers"),
        ("0,1,0,0,10,20,1,-1,-1,-1\n", "numbered from 1"),
        ("1,1,0,0,-10,20,1,-1,-1,-1\n", "negative box size"),
    ],
    ids=["short-row", "not-a-number", "frame-0", "negative-size"],
)
def test_read_mot_rejects_malformed_rows(tmp_path, text, problem):
    path = tmp_path / "bad.txt"
    path.write_text("1,1,0,0,10,20,1,-1,-1,-1\n" + text)
    with pytest.raises(MotFormatError, match=problem) as info:
        read_mot(path)
    assert "bad.txt:2" in str(info.value)
    with pytest.raises(MotFormatError, match="not found"):
        read_mot(tmp_path / "missing.txt")


def test_evaluate_mot_on_hand_made_hypotheses(tmp_path):
    gt_boxes = _walk(1, [100 + 10 * i for i in range(10)], 300) + _walk(2, [400 - 10 * i for i in range(10)], 300)
    gt = _write_gt(tmp_path / "gt.txt", gt_boxes)

    perfect = evaluate_mot(gt, gt)
    assert (perfect.mota, perfect.idf1, perfect.num_switches, perfect.num_frames) == (1.0, 1.0, 0, 10)
    assert perfect.motp == pytest.approx(0.0) and perfect.motp_iou == pytest.approx(1.0)

    # hypothesis: misses frame 1 entirely, swaps the ids of person 2 halfway, adds one false box
    hyp_boxes = [b for b in gt_boxes if b.frame > 1]
    hyp_boxes = [MotBox(b.frame, 9 if (b.track_id == 2 and b.frame > 5) else b.track_id, b.left, b.top, b.width,
                        b.height) for b in hyp_boxes]
    hyp_boxes.append(MotBox(3, 5, 600, 0, 20, 20))
    hyp = tmp_path / "hyp.txt"
    write_mot(hyp, hyp_boxes)
    s = evaluate_mot(gt, hyp)
    print(f"\nhand-made: {s}")
    assert (s.num_misses, s.num_false_positives, s.num_switches, s.num_objects) == (2, 1, 1, 20)
    assert s.mota == pytest.approx(1 - (2 + 1 + 1) / 20)
    assert s.recall == pytest.approx(18 / 20) and s.precision == pytest.approx(18 / 19)
    # a box shifted to IoU < 0.5 does not match
    shifted = tmp_path / "shifted.txt"
    write_mot(shifted, [MotBox(b.frame, b.track_id, b.left + 30, b.top, b.width, b.height) for b in gt_boxes])
    assert evaluate_mot(gt, shifted).recall == 0.0
    assert evaluate_mot(gt, shifted, iou_threshold=0.1).recall == 1.0


def test_importing_storelens_mot_does_not_patch_numpy():
    code = "import numpy, storelens.domain.mot; print(hasattr(numpy, 'asfarray'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    import numpy as np

    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        assert out.stdout.strip() == "False"


def test_mot_command_line(tmp_path):
    gt = _write_gt(tmp_path / "gt.txt", _walk(1, [100, 110, 120], 300))
    ok = subprocess.run([sys.executable, "-m", "storelens.domain.mot", str(gt), str(gt), "--json"],
                        capture_output=True, text=True, cwd=REPO_ROOT)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mota"] == 1.0
    bad = subprocess.run([sys.executable, "-m", "storelens.domain.mot", str(gt), str(tmp_path / "nope.txt")],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: MOT file not found") and "Traceback" not in bad.stderr


def test_doctests():
    import doctest

    import storelens.domain.mot

    result = doctest.testmod(storelens.domain.mot, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0 and result.failed == 0
