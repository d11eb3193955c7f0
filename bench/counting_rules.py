#!/usr/bin/env python
"""Line-counting errors of the counting rules on the default tracker's real tracks, every frame and at 5 fps.

The product's detect-track stage (YOLO, the default tracker, stationary flags) runs once on each sequence with
hand-checked counts: the three lines of TUD-Campus and of TUD-Stadtmitte (``tests/test_mot_quality.py``) and
the shop door of the three CAVIAR entrance clips (``tests/test_door_counts.py``, CAVIAR's hand counts), every
frame and at 5 fps in each of the five frame phases (as ``target_fps: 5`` samples a 25 fps camera). Its tracks
are then replayed through :class:`~storelens.domain.counting.LineCounter` as the analytics stage feeds it
(stationary tracks as ``still_ids``, the others as people, with their box heights) under several rule sets:

* ``no heights``: today's counter given no box heights (a re-acquire radius of 60 px, every step a step; the
  rule that a track lost while stationary hands its state to nobody is in force in every row);
* ``default``: today's :class:`~storelens.config.CountingConfig`;
* each new setting at other values, one at a time (the rest at their defaults), to show how flat the errors
  are around the defaults.

Each cell is the sum of |in - true in| + |out - true out| over the lines and phases of that group.

With ``--step N`` the sampled rows are every N-th frame in each of the N phases (default 5: 5 fps from 25 fps
sources); with ``--reencode`` every clip is first re-encoded (bench/tracking.py's MJPG copy at quality 100), as
another camera or recorder would encode the same scene: the counts must not hang on one encoder's pixels.

    python bench/counting_rules.py [--step N] [--reencode] [--out /tmp/counting_rules.md]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import benchlib  # noqa: E402

#: One setting at a time, each at values around its default.
SWEEP = {
    "reacquire_radius_heights": (0.2, 0.5, 0.75, 1.0),
    "max_height_ratio": (1.4, 1.5, 2.0, 2.5),
    "max_speed_heights_per_s": (1.0, 3.0, 4.0),
    "max_step_heights": (0.0, 0.35, 0.5),
    "min_box_move_share": (0.0, 0.1, 0.15, 0.35, 0.5),
}


def sequences() -> list[tuple[str, Path, list, list]]:
    """(name, video, [LineConfig], [(true in, true out)]) of every sequence with hand-checked line counts: the
    TUD sequences and the three CAVIAR clips of ``bench/tracking.py`` (its :func:`count_cases`)."""
    from tracking import count_cases
    from tracking import sequences as all_sequences

    out = []
    for seq in all_sequences():
        cases = count_cases(seq.name)
        if cases and seq.source.is_file():
            out.append((seq.name, seq.source, [c[0] for c in cases], [c[1:] for c in cases]))
    return out


def tracks(video: Path, step: int, offset: int, detector, config) -> list[tuple[int, list]]:
    """``(ts_ms, [(track id, x1, y1, x2, y2, stationary)])`` of every ``step``-th frame from ``offset``."""
    from tracking import source_frames, video_fps

    from storelens.backends.trackers import build_tracker
    from storelens.backends.video import RawFrame, encode_frame
    from storelens.stages import DetectTrackStage

    stage = DetectTrackStage(config, detector, lambda: build_tracker(config.tracker))
    fps = video_fps(video)
    out = []
    for k, img in enumerate(source_frames(video)):
        if k >= offset and (k - offset) % step == 0:
            ts = int(round(k * 1000 / fps))
            tf = stage.process(encode_frame("cam", k, RawFrame(k, ts, img), None, 90))
            out.append((ts, [(t.track_id, (b := t.bbox_xyxy).x1, b.y1, b.x2, b.y2, t.stationary) for t in tf.tracks]))
    return out


def errors(frames: list, lines: list, truth: list, counting, heights: bool) -> int:
    """Counting error of one run's tracks replayed as the analytics stage feeds them."""
    from storelens.domain.counting import LineCounter

    lc = LineCounter("cam", lines, counting)
    for seq, (ts, tr) in enumerate(frames):
        people = [t for t in tr if not t[5]]
        lc.update(seq, ts, [t[0] for t in people], [((t[1] + t[3]) / 2, t[4]) for t in people],
                  still_ids=[t[0] for t in tr if t[5]], heights=[t[4] - t[2] for t in people] if heights else None)
    got = lc.counts()
    return sum(abs(got[ln.id]["in"] - t_in) + abs(got[ln.id]["out"] - t_out) for ln, (t_in, t_out) in zip(lines, truth))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/counting_rules.md", help="also write the Markdown here")
    ap.add_argument("--step", type=int, default=5, help="sampled rows: every N-th frame, in each of the N phases")
    ap.add_argument("--reencode", action="store_true", help="track an MJPG (quality 100) copy of each clip")
    args = ap.parse_args()
    if args.step < 2:
        raise SystemExit("--step must be 2 or more (every frame is always a row)")
    phases = [(1, 0)] + [(args.step, k) for k in range(args.step)]
    warnings.filterwarnings("ignore")
    from storelens.backends.detectors import build_detector
    from storelens.config import CountingConfig, parse_config

    config = parse_config({"store": {"id": "bench"}, "cameras": [{"id": "cam", "source": "unused"}]})
    detector = build_detector(config.detector)
    runs = {}  # (sequence, step, offset) -> frames
    seqs = sequences()
    with tempfile.TemporaryDirectory() as tmp:
        for name, video, _, _ in seqs:
            if args.reencode:
                from tracking import reencode

                video, source = Path(tmp) / f"{name}.avi", video
                reencode(source, video)
            for step, offset in phases:
                runs[(name, step, offset)] = tracks(video, step, offset, detector, config)
                print(f"tracked {name} step {step} offset {offset}: {len(runs[(name, step, offset)])} frames",
                      flush=True)

    base = CountingConfig()
    sets = [("no heights", base, False), ("default", base, True)]
    sets += [(f"{key} {v:g}", base.model_copy(update={key: v}), True) for key, vals in SWEEP.items() for v in vals]
    groups = [("TUD lines", "TUD"), ("CAVIAR door", "CAVIAR")]
    rate = f"1 frame in {args.step} ({args.step} phases)"
    head = ["rule set"] + [f"{g}, {'every frame' if s == 1 else rate}" for g, _ in groups for s in (1, args.step)]
    head.append("all")
    table = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, counting, heights in sets:
        cells = collections.Counter()
        for name, _, lines, truth in seqs:
            group = next(g for g, prefix in groups if name.startswith(prefix))
            for step, offset in phases:
                cells[(group, step)] += errors(runs[(name, step, offset)], lines, truth, counting, heights)
        row = [cells[(g, s)] for g, _ in groups for s in (1, args.step)]
        table.append(f"| {label} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    d = base.model_dump()
    lines = [f"Command: `{shlex.join(['python', 'bench/counting_rules.py', *sys.argv[1:]])}`", "",
             benchlib.cpu_line(), benchlib.python_line(),
             f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"- defaults: {json.dumps({k: d[k] for k in ('reacquire_radius_heights', *list(SWEEP)[1:])})}",
             "- lines: TUD-Campus x140/x300/x500, TUD-Stadtmitte x300/x460/x540; the CAVIAR door of "
             "OneLeaveShop1front, EnterExitCrossingPaths1front and OneLeaveShopReenter1front", "",
             "Counting errors (|in - true in| + |out - true out|, summed over lines and phases):", "", *table]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
