#!/usr/bin/env python
"""How ``bytereid``'s scores move with its parameters and with the JPEG hop, on every visible sequence.

``bench/tracking.py`` times whole processes; this script answers "what if" questions about the tracker
alone, quickly: the detector runs once per sequence and JPEG quality (detections cached in ``--cache``),
then every parameter set replays the same detections through :class:`ByteReidTracker` (re-id included)
and is scored like ``bench/tracking.py`` (motmetrics MOTA / IDF1 / ID switches, the counting errors of
``tests/test_mot_quality.py``'s lines).

Frames take the ingest's own JPEG round trip (``encode_frame`` / ``decode_frame``) at each
``--jpeg-quality`` (0: none, the decoded video frames as they are), so at 90, the site default, the
default column equals what ``storelens track`` writes; at 0, what it writes with ``pipeline.frames: bgr``.
MOT17-mini's jpgs are read directly (``tracking.py`` packs them into an MJPG file first, so those rows
differ slightly from its table).

    python bench/tracker_sweep.py [--set NAME:key=value,key=value ...] [--jpeg-quality 90[,95,0]]
                                  [--sequences TUD-Campus,...] [--step 5 [--offset 0]] [--rect [--imgsz 832]] [--ultralytics]
                                  [--cache DIR] [--out FILE.md]

``--step 5`` tracks every 5th frame only (a camera's ``target_fps: 5`` on these 25 fps sources) and scores those
frames; the "frames" column then counts the frames tracked. ``--ultralytics`` adds Ultralytics' ``model.track()``
with ByteTrack and BoT-SORT (its own detector, the same weights) on the same frames, one at a time (their re-id
crops show as 0).

e.g. ``--set nt25:new_track_thresh=0.25 --set ul:new_track_thresh=0.25,track_high_thresh=0.25``
(Ultralytics' ByteTrack thresholds). The ``default`` column (``ByteReidTrackerConfig()``) is always run.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import shlex
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tracking import (WEIGHTS, Seq, count_errors, detector_iou, machine_lines, sequences,  # noqa: E402
                      source_frames, video_fps)

from storelens.domain.mot import MotBox, evaluate_mot, write_mot  # noqa: E402

#: Sequences with at least this many frames score identity over time; MOT17-mini's 4-8 frames mostly score starts.
LONG = 50


def frames(seq: Seq, quality: int, step: int = 1, offset: int = 0, scale: float = 1.0):
    """``(frame number from 1, fps, BGR image)`` of every ``step``-th frame from frame ``offset`` (0-based), as a
    camera's ``target_fps`` samples them (``fps`` is then the sampled rate), through the ingest's JPEG round trip
    unless ``quality`` is 0 (only the frames kept are encoded and decoded); ``scale`` < 1: as a camera of that
    fraction of the resolution would see them (area-resized before the JPEG hop)."""
    import cv2
    import numpy as np

    from storelens.backends.video import RawFrame, decode_frame, encode_frame

    def hop(k: int, img: np.ndarray) -> np.ndarray:
        if scale != 1.0:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return decode_frame(encode_frame("cam", k, RawFrame(k, 0, img), None, quality)) if quality else img

    def kept(k: int) -> bool:
        return k >= offset and (k - offset) % step == 0

    fps = video_fps(seq.source, jpg_folder_fps=30.0)  # 30 for MOT17-mini's jpgs, as every table so far was made
    for k, img in enumerate(source_frames(seq.source)):
        if kept(k):
            yield k + 1, fps / step, hop(k, img)


def detections(seq: Seq, quality: int, confidence: float, cache: pathlib.Path, rect: bool = False,
               imgsz: int = 640, scale: float = 1.0) -> list:
    """The detector's output for every frame (cached: ``(xyxy, confidence, class)`` arrays per frame, in the
    scaled frame's pixels); ``rect``, ``imgsz``: ``detector.rect`` and ``detector.imgsz``; ``scale``: see
    :func:`frames`."""
    path = cache / (f"{seq.name}.q{quality}.c{confidence}{'.rect' if rect else ''}{'' if imgsz == 640 else imgsz}"
                    f"{'' if scale == 1.0 else f'.x{scale:g}'}.pkl")
    if path.exists():
        return pickle.loads(path.read_bytes())  # noqa: S301 (our own cache)
    from storelens.backends.detectors import build_detector
    from storelens.config import OpenVINODetectorConfig
    from storelens.paths import asset

    det = build_detector(OpenVINODetectorConfig(weights=str(asset(*WEIGHTS.split("/"))), confidence=confidence,
                                               rect=rect, imgsz=imgsz))
    out = []
    for _, _, img in frames(seq, quality, scale=scale):
        d = det.detect(img)
        out.append((d.bbox_xyxy.copy(), d.confidence.copy(), d.class_id.copy()))
    path.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def mot_box(f: int, tid: int, x1: float, y1: float, x2: float, y2: float, c: float) -> MotBox:
    return MotBox(f, int(tid), float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(c))


def track(seq: Seq, quality: int, dets: list, params: dict, out: pathlib.Path, step: int = 1,
          offset: int = 0, scale: float = 1.0) -> tuple:
    """Replay the cached detections of the sampled :func:`frames` through a fresh ``bytereid`` tracker; MOT
    rows to ``out`` (in the sequence's own pixels); its scores (against the ground truth of those frames),
    counting errors and re-id crops."""
    from storelens.backends.detectors.base import Detections
    from storelens.backends.trackers.bytereid import ByteReidTracker
    from storelens.config.tracker_bytereid import ByteReidTrackerConfig

    tracker = ByteReidTracker(ByteReidTrackerConfig(**params))
    boxes = []
    for f, fps, img in frames(seq, quality, step, offset, scale):
        if f - 1 == offset:
            tracker.set_frame_rate(fps)
        tr = tracker.update(img, Detections(*dets[f - 1]))
        boxes += [mot_box(f, tid, *(box / scale), c) for tid, box, c in zip(tr.track_id, tr.bbox_xyxy, tr.confidence)]
    write_mot(out, boxes)
    return (*score(seq, out, len(dets), step, offset), tracker.embedded)


def ultralytics_track(seq: Seq, quality: int, tracker_yaml: str, out: pathlib.Path, n_frames: int, step: int = 1,
                      offset: int = 0, scale: float = 1.0) -> tuple:
    """Ultralytics ``model.track()`` (its own detector on the same weights) on the same sampled :func:`frames`,
    one at a time, as a user would feed a camera; its scores and counting errors (and 0 re-id crops counted)."""
    from ultralytics import YOLO

    from storelens.paths import asset

    model = YOLO(str(asset(*WEIGHTS.split("/"))), task="detect")
    boxes = []
    for f, _, img in frames(seq, quality, step, offset, scale):
        b = model.track(img, tracker=tracker_yaml, imgsz=640, iou=detector_iou(), classes=[0], verbose=False,
                        persist=True)[0].boxes
        if b is not None and b.id is not None:
            boxes += [mot_box(f, tid, *(x / scale for x in box), c)
                      for box, tid, c in zip(b.xyxy.tolist(), b.id.int().tolist(), b.conf.tolist())]
    write_mot(out, boxes)
    return (*score(seq, out, n_frames, step, offset), 0)


def score(seq: Seq, out: pathlib.Path, n_frames: int, step: int, offset: int) -> tuple:
    """MOT scores of the rows in ``out`` (with ``step`` or ``offset``: on the sampled frames only, a frame never
    shown to the tracker is no miss), and counting errors."""
    tracked = None if step == 1 and offset == 0 else range(offset + 1, n_frames + 1, step)
    return evaluate_mot(seq.gt, out, frames=tracked), sum(count_errors(out, seq.name).values())


def parse_set(text: str) -> tuple[str, dict]:
    """``NAME:key=value,...`` -> (NAME, {key: value}) with numbers as numbers and ``none`` as None."""
    name, sep, body = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--set {text!r}: expected NAME:key=value[,key=value]")
    params = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--set {text!r}: {item!r} is not key=value")
        if value.strip().lower() == "none":  # a setting switched off (e.g. appearance_margin=none)
            params[key.strip()] = None
            continue
        try:
            params[key.strip()] = float(value) if any(ch in value for ch in ".e") else int(value)
        except ValueError:
            raise SystemExit(f"--set {text!r}: {value!r} is not a number") from None
    return name, params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="NAME:key=value,...",
                    help="a parameter set of ByteReidTrackerConfig (repeatable)")
    ap.add_argument("--jpeg-quality", default="90", help="comma-separated; 0 = no JPEG round trip (default 90)")
    ap.add_argument("--sequences", help="comma-separated names or prefixes (default: all)")
    ap.add_argument("--step", type=int, default=1,
                    help="track every N-th frame only, as a camera's target_fps does (5: 25 fps sources at 5 fps)")
    ap.add_argument("--offset", type=int, default=0, help="with --step: the first frame tracked (0-based)")
    ap.add_argument("--rect", action="store_true",
                    help="our detector with detector.rect (the frame's aspect ratio; Ultralytics' columns unchanged)")
    ap.add_argument("--imgsz", type=int, default=640, help="with --rect: detector.imgsz (the frame fitted into it)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="frames resized by this factor first, as a lower-resolution camera would see them "
                         "(0.5: people half as tall; boxes are scored in the sequence's own pixels)")
    ap.add_argument("--ultralytics", action="store_true",
                    help="also Ultralytics' model.track() with ByteTrack and BoT-SORT on the same frames")
    ap.add_argument("--cache", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "storelens_sweep_cache",
                    help="detections per sequence, JPEG quality and confidence; empty it after changing the detector")
    ap.add_argument("--out", default="/tmp/tracker_sweep.md", help="also write the Markdown here")
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        raise SystemExit("--scale must be in (0, 1]")
    if args.imgsz != 640 and not args.rect:
        raise SystemExit("--imgsz needs --rect (a fixed 640x640 export runs at 640 otherwise)")
    from storelens.config.tracker_bytereid import ByteReidTrackerConfig

    sets = dict([("default", {}), *map(parse_set, args.set)])
    from pydantic import ValidationError

    for name, params in sets.items():
        try:
            ByteReidTrackerConfig(**params)  # fail fast on an unknown or bad parameter
        except ValidationError as exc:
            raise SystemExit(f"--set {name}: {exc}") from None
    qualities = [int(q) for q in args.jpeg_quality.split(",")]
    wanted = args.sequences.split(",") if args.sequences else None
    seqs = [s for s in sequences()  # with ground-truth boxes (the door-only clip is bench/tracking.py's)
            if s.gt is not None and (not wanted or any(s.name.startswith(w) for w in wanted))]
    if not seqs:
        raise SystemExit(f"no sequence matches {args.sequences!r}")
    confidence = min(ByteReidTrackerConfig(**p).track_low_thresh for p in sets.values())
    args.cache.mkdir(parents=True, exist_ok=True)
    peers = ["ul-bytetrack", "ul-botsort"] if args.ultralytics else []
    columns = [(n, q) for q in qualities for n in [*sets, *peers]]
    head = [f"{n}" + (f", JPEG q{q}" if q else ", no JPEG") for n, q in columns]
    lines = [f"Command: `{shlex.join(['python', 'bench/tracker_sweep.py', *sys.argv[1:]])}`", "",
             *machine_lines(),
             "- parameter sets: " + "; ".join(f"{n}: {p or 'ByteReidTrackerConfig()'}" for n, p in sets.items()),
             f"- detections cached at confidence {confidence}, NMS IoU {detector_iou()}"
             + (" (Ultralytics' model.track too)" if args.ultralytics else "") + f", in {args.cache}"
             + (f", detector.rect: true, imgsz {args.imgsz}" if args.rect else "")
             + (f", frames resized by {args.scale:g}" if args.scale != 1 else ""), "",
             "IDF1 / MOTA / ID switches / counting errors", "",
             "| sequence | frames | " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(columns)]
    scores = {c: [] for c in columns}  # (sequence frames, IDF1, ID switches, counting errors, re-id crops, tracked)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seq in seqs:
            cells, n = [], 0
            for name, q in columns:
                dets = detections(seq, q, confidence, args.cache, args.rect, args.imgsz, args.scale)
                n = len(dets)
                out = pathlib.Path(tmp) / f"{seq.name}.{name}.q{q}.txt"
                if name in peers:
                    s, errors, crops = ultralytics_track(seq, q, f"{name[3:]}.yaml", out, len(dets), args.step,
                                                         args.offset, args.scale)
                else:
                    s, errors, crops = track(seq, q, dets, sets[name], out, args.step, args.offset, args.scale)
                n = -(-(len(dets) - args.offset) // args.step)  # frames tracked
                scores[(name, q)].append((len(dets), s.idf1, s.num_switches, errors, crops, n))
                cells.append(f"{s.idf1:.3f} / {s.mota:.3f} / {s.num_switches} / {errors}")
                print(f"{seq.name} {name} q{q}: {cells[-1]}", file=sys.stderr, flush=True)
            lines.append(f"| {seq.name} | {n} | " + " | ".join(cells) + " |")
    for label, keep in ((f"mean IDF1, sequences of {LONG}+ frames", lambda n: n >= LONG),
                        ("mean IDF1, shorter (MOT17-mini)", lambda n: n < LONG)):
        cells = [[idf1 for n, idf1, *_ in v if keep(n)] for v in scores.values()]
        if cells[0]:
            lines.append(f"| {label} | | " + " | ".join(f"{sum(c) / len(c):.3f}" for c in cells) + " |")
    lines.append("| ID switches / counting errors, all | | "
                 + " | ".join(f"{sum(x[2] for x in v)} / {sum(x[3] for x in v)}" for v in scores.values()) + " |")
    long_runs = [[x for x in v if x[0] >= LONG] for v in scores.values()]
    lines.append(f"| re-id crops a frame, sequences of {LONG}+ frames | | "
                 + " | ".join(f"{sum(x[4] for x in v) / max(1, sum(x[5] for x in v)):.2f}" for v in long_runs) + " |")
    lines += ["", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text)
    pathlib.Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
