#!/usr/bin/env python
"""Buying units (issue 11 item 4): groups the pipeline finds vs the same rule on ground-truth trajectories.

For each sequence: the embedded pipeline (YOLO + tracker + analytics stage, default config)
runs on the video with vertical counting lines every 80 px (each line a separate "entrance";
people in these street scenes walk across the view), and the same analytics stage runs on
the sequence's ground-truth boxes (``derive``). The groups the rule gives on the ground truth
are the expected ones; crossings are matched by line, direction and time (<= 500 ms), and
:func:`storelens.domain.groups.compare_groups` scores "together" pairs and whole groups of
two or more. The rule's parameters are the defaults of ``groups:`` (set on the ground-truth
trajectories before any pipeline run; nothing tuned on the pipeline's output).

    OMP_NUM_THREADS=1 python bench/groups.py [--sequences TUD-Stadtmitte TUD-Campus]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchlib  # noqa: E402
from storelens.config import parse_config  # noqa: E402
from storelens.contract import messages as m  # noqa: E402
from storelens.domain.groups import GroupScore, compare_groups  # noqa: E402
from storelens.domain.mot import read_mot  # noqa: E402
from storelens.paths import asset  # noqa: E402
from storelens.stages.analytics import derive  # noqa: E402
from storelens.stages.groups import groups_from_records  # noqa: E402
from storelens.storage import SqlStorage  # noqa: E402
from storelens.storage.groups import stored_groups  # noqa: E402

START_TS_MS = 1_767_225_600_000
SEQUENCES = {"TUD-Stadtmitte": 25.0, "TUD-Campus": 25.0}
LINES = [{"id": f"x{x}", "a": [x, 0], "b": [x, 480]} for x in range(80, 640, 80)]


def site(video: pathlib.Path, db: pathlib.Path) -> dict:
    return {"store": {"id": "groups"},
            "cameras": [{"id": "cam", "source": str(video), "start_ts_ms": START_TS_MS, "lines": LINES}],
            "faces": {"enabled": False}, "storage": {"path": str(db)}}


def gt_frames(gt_path: pathlib.Path, fps: float) -> list[m.TrackedFrame]:
    gt = read_mot(gt_path, evaluated_only=True)
    n = max(gt)
    out = []
    for f in range(1, n + 1):
        tracks = [m.Track(track_id=b.track_id, bbox_xyxy=m.BoxXYXY(x1=b.left, y1=b.top, x2=b.left + b.width,
                                                                   y2=b.top + b.height), confidence=1.0)
                  for b in gt.get(f, [])]
        out.append(m.TrackedFrame(camera_id="cam", seq=f - 1, ts_ms=START_TS_MS + round((f - 1) * 1000 / fps),
                                  source_frame=f, tracks=tracks))
    out.append(m.TrackedFrame(camera_id="cam", seq=n, ts_ms=out[-1].ts_ms, end_of_stream=True))
    return out


def run(name: str, fps: float, tmp: pathlib.Path) -> tuple[GroupScore, float]:
    from storelens.runtime.embedded import EmbeddedPipeline

    video = asset("mot", name, f"{name}.mp4")
    raw = site(video, tmp / f"{name}.db")
    cfg = parse_config(raw)
    expected = groups_from_records(derive(cfg, gt_frames(asset("mot", name, "gt", "gt.txt"), fps)))
    t0 = time.perf_counter()
    with SqlStorage(str(tmp / f"{name}.db")) as storage:
        EmbeddedPipeline(cfg, storage=storage).run()
        predicted = stored_groups(storage, "cam")
    return compare_groups(expected, predicted), time.perf_counter() - t0


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", nargs="+", default=list(SEQUENCES), choices=list(SEQUENCES))
    args = ap.parse_args()
    print(f"$ OMP_NUM_THREADS=1 python bench/groups.py --sequences {' '.join(args.sequences)}")
    print(benchlib.cpu_line())
    print(f"lines: vertical every 80 px ({len(LINES)}), crossings matched within 500 ms\n")
    head = ("| sequence | crossings GT / pipeline / matched | buying units GT / pipeline | together pairs GT / "
            "pipeline / correct | pair precision | pair recall | groups (2+) GT / pipeline / exact | "
            "group precision | group recall |")
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    totals = [0] * 11
    with tempfile.TemporaryDirectory() as d:
        for name in args.sequences:
            s, secs = run(name, SEQUENCES[name], pathlib.Path(d))
            vals = [s.crossings_expected, s.crossings_predicted, s.crossings_matched, s.units_expected,
                    s.units_predicted, s.pairs_expected, s.pairs_predicted, s.pairs_correct, s.groups_expected,
                    s.groups_predicted, s.groups_correct]
            totals = [a + b for a, b in zip(totals, vals)]
            print(f"| {name} | {vals[0]} / {vals[1]} / {vals[2]} | {vals[3]} / {vals[4]} | {vals[5]} / {vals[6]} / "
                  f"{vals[7]} | {fmt(s.pair_precision)} | {fmt(s.pair_recall)} | {vals[8]} / {vals[9]} / {vals[10]} "
                  f"| {fmt(s.group_precision)} | {fmt(s.group_recall)} |", flush=True)
    t = GroupScore(*totals)
    print(f"| all | {totals[0]} / {totals[1]} / {totals[2]} | {totals[3]} / {totals[4]} | {totals[5]} / {totals[6]} / "
          f"{totals[7]} | {fmt(t.pair_precision)} | {fmt(t.pair_recall)} | {totals[8]} / {totals[9]} / {totals[10]} "
          f"| {fmt(t.group_precision)} | {fmt(t.group_recall)} |")


if __name__ == "__main__":
    main()
