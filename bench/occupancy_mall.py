#!/usr/bin/env python
"""Occupancy error per frame on the Mall crowd-counting frames: detector settings vs head-count ground truth.

For each frame of ``video/mall/mall_0001-0800.mp4`` (or every ``--step``-th),
counts the detected people whose anchor lies inside the counting region
(``roi_mask.png``) and compares with the number of annotated heads of that
frame (``counts_0001-0800.csv``; every annotated head lies inside the region,
so that count is the region's count).

Each method is a ``detector:`` setting of the product's own backend
(:class:`~storelens.backends.detectors.ultralytics.UltralyticsDetector`). A
method runs once at a low confidence (0.05); the confidence threshold is then
chosen on the *fit* part (frames ``<= --split``) and reported on the
*held-out* part (frames ``> --split``). The calibrated rows fit
:class:`~storelens.domain.occupancy.BandCalibration` (one factor per image band)
on the fit part and apply it to the held-out part. fps is the detector alone
(``detect()`` on decoded frames, no video decoding), measured in this run;
methods run one after the other, so compare them within one run.

The anchor is the head point of a box (centre column, 10 % of its height below
the top), because the truth is heads and the region is drawn where heads are:
people cut by the bottom edge and occluded people whose box ends on someone
else keep their head where the annotator put it. The bottom-centre column is
there for comparison. The default row is the 0.05 run filtered at 0.35, which
gives the same boxes as running at 0.35 (NMS only lets better boxes suppress).

    python bench/occupancy_mall.py                      # every frame (slow: about 10 min on 2 cores)
    python bench/occupancy_mall.py --step 4             # every 4th frame
    python bench/occupancy_mall.py --methods default,tiles-2x2 --step 8
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

from storelens.config.detectors import UltralyticsDetectorConfig  # noqa: E402
from storelens.domain.occupancy import BandCalibration, anchor_points, band_counts, inside_mask  # noqa: E402
from storelens.paths import asset  # noqa: E402

SWEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
#: Image bands of the calibration: far (small people) above row 120 of 480, near below.
CAL_EDGES_FRAC = (0.0, 0.25, 1.0)

#: Detector runs: name -> settings beyond the product defaults (each runs once, at confidence 0.05).
RUNS: dict[str, dict] = {
    "default": {},
    "imgsz-1280": {"imgsz": 1280},
    "yolov8n-onnx": {"weights": "${STORELENS_ASSETS}/models/yolov8n_int8.onnx"},
    "tiles-2x2": {"tiles": (2, 2), "tile_overlap": 0.2},
    "tiles-2x2+full": {"tiles": (2, 2), "tile_overlap": 0.2, "tile_full_frame": True},
    "tiles-3x2": {"tiles": (3, 2), "tile_overlap": 0.2},
}
#: Head-point duplicate suppression radius of the "+head" methods (``detector.head_nms``), one value for all.
HEAD_NMS = 0.6
#: Methods: name -> (run, head_nms, note). "+head" applies the product's ``dedupe_heads`` to that run's boxes,
#: which is what ``detector.head_nms`` does inside ``detect()`` (greedy by score, so filtering by a threshold
#: afterwards equals running at that threshold).
METHODS: dict[str, tuple[str, float, str]] = {
    "default": ("default", 0.0, "the product default: yolo11n int8 OpenVINO, whole frame at 640, conf 0.35"),
    "default-lowconf": ("default", 0.0, "default detector, confidence threshold chosen on the fit part"),
    "default-lowconf+head": ("default", HEAD_NMS,
                             f"default detector, conf chosen on the fit part, `head_nms: {HEAD_NMS}`"),
    "imgsz-1280": ("imgsz-1280", 0.0, "imgsz 1280 asked; the int8 exports are static 640x640, so it runs at 640"),
    "yolov8n-onnx": ("yolov8n-onnx", 0.0, "the other weights in the assets (YOLOv8n int8 ONNX, 640); "
                     "no larger model is there"),
    "tiles-2x2": ("tiles-2x2", 0.0, "`tiles: [2, 2]`, 20% overlap, each tile at 640 (~1.8x zoom), NMS merge"),
    "tiles-2x2+head": ("tiles-2x2", HEAD_NMS, f"2x2 tiles + `head_nms: {HEAD_NMS}`"),
    "tiles-2x2+full": ("tiles-2x2+full", 0.0, "2x2 tiles + the whole frame (`tile_full_frame: true`), merged"),
    "tiles-2x2+full+head": ("tiles-2x2+full", HEAD_NMS, f"2x2 tiles + whole frame + `head_nms: {HEAD_NMS}`"),
    "tiles-3x2": ("tiles-3x2", 0.0, "`tiles: [3, 2]`, 20% overlap (~2.4x zoom)"),
    "tiles-3x2+head": ("tiles-3x2", HEAD_NMS, f"3x2 tiles + `head_nms: {HEAD_NMS}`"),
}
#: Methods that also get a calibrated row.
CALIBRATED = ("default-lowconf+head", "tiles-2x2+head", "tiles-2x2+full+head", "tiles-3x2+head")


@dataclass
class Row:
    method: str
    conf: float
    mae: float
    mae_fit: float
    mae_held: float
    bias_held: float
    mae_held_bottom: float
    fps: float
    note: str


def load_frames(step: int, limit: int | None = None) -> tuple[list[int], list[np.ndarray]]:
    cap = cv2.VideoCapture(str(asset("video", "mall", "mall_0001-0800.mp4")))
    if not cap.isOpened():
        raise SystemExit("error: cannot open the Mall video (set STORELENS_ASSETS)")
    idx, frames, n = [], [], 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        if (n - 1) % step == 0:
            idx.append(n)
            frames.append(f)
        if limit and n >= limit:
            break
    return idx, frames


def load_truth() -> dict[int, int]:
    with open(asset("video", "mall", "counts_0001-0800.csv")) as f:
        return {int(r["frame"]): int(r["count"]) for r in csv.DictReader(f)}


def roi_mask() -> np.ndarray:
    return cv2.imread(str(asset("video", "mall", "roi_mask.png")), cv2.IMREAD_GRAYSCALE) > 0


def run_detector(settings: dict, frames: list[np.ndarray], conf: float):
    """Boxes and scores per frame at ``conf``, and the detector's fps."""
    from storelens.backends.detectors import build_detector

    det = build_detector(UltralyticsDetectorConfig(**{**settings, "confidence": conf}))
    out = []
    t0 = time.perf_counter()
    for f in frames:
        d = det.detect(f)
        out.append((d.bbox_xyxy, d.confidence))
    return out, len(frames) / (time.perf_counter() - t0)


def counts_at(dets, conf: float, mask: np.ndarray, anchor: str = "head") -> np.ndarray:
    return np.array([int(inside_mask(anchor_points(b[s >= conf], anchor), mask).sum()) for b, s in dets], float)


def band_matrix(dets, conf: float, mask: np.ndarray, edges) -> np.ndarray:
    rows = []
    for b, s in dets:
        p = anchor_points(b[s >= conf], "head")
        rows.append(band_counts(p[inside_mask(p, mask)], edges))
    return np.array(rows, float)


def evaluate(name, note, dets, fps, idx, truth, mask, split, fixed_conf=None) -> tuple[Row, float]:
    g = np.array([truth[i] for i in idx], float)
    fit = np.array(idx) <= split
    held = ~fit
    confs = [fixed_conf] if fixed_conf is not None else list(SWEEP)
    best = min(confs, key=lambda c: np.abs(counts_at(dets, c, mask) - g)[fit].mean())
    e = counts_at(dets, best, mask) - g
    eb = counts_at(dets, best, mask, "bottom_center") - g
    return Row(name, best, np.abs(e).mean(), np.abs(e[fit]).mean(), np.abs(e[held]).mean(), e[held].mean(),
               np.abs(eb[held]).mean(), fps, note), best


def calibrated(base: Row, dets, idx, truth, mask, split, height: int, offset: bool) -> Row:
    g = np.array([truth[i] for i in idx], float)
    fit = np.array(idx) <= split
    edges = [f * height for f in CAL_EDGES_FRAC]
    x = band_matrix(dets, base.conf, mask, edges)
    cal = BandCalibration.fit(x[fit], g[fit], edges, offset=offset)
    e = np.array([cal.apply(r) for r in x]) - g
    factors = ", ".join(f"{v:.2f}" for v in cal.factors) + (f", offset {cal.offset:+.1f}" if offset else "")
    return Row(f"{base.method} + calibration", base.conf, np.abs(e).mean(), np.abs(e[fit]).mean(),
               np.abs(e[~fit]).mean(), e[~fit].mean(), float("nan"), base.fps,
               f"band factors (rows {'/'.join(f'{v:g}' for v in edges)}) fitted on the fit part: {factors}")


#: Method whose counts get the post-processing rows (``post_rows``).
POST_BASE = "tiles-2x2+head"
#: Frames of the causal mean (this frame and the previous ones): a live count cannot look ahead.
SMOOTH_FRAMES = 3
#: Thresholds and image bands of the linear correction (counts per band at each threshold -> count).
LINEAR_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
LINEAR_EDGES_FRAC = (0.0, 0.25, 1.0)


def post_rows(base: Row, dets, idx, truth, mask, split, height: int) -> list[Row]:
    """Post-processing of ``base``'s counts, each fitted on the fit part only: one confidence threshold per
    image band, a causal mean over the last ``SMOOTH_FRAMES`` frames, and a linear correction from counts at
    several thresholds per band (least squares), alone and with the causal mean."""
    g = np.array([truth[i] for i in idx], float)
    fit = np.array(idx) <= split
    pts = []
    for b, s in dets:
        p = anchor_points(b, "head")
        keep = inside_mask(p, mask)
        pts.append((p[keep, 1], s[keep]))
    split_row = LINEAR_EDGES_FRAC[1] * height

    def causal(c: np.ndarray) -> np.ndarray:
        return np.array([c[max(0, i - SMOOTH_FRAMES + 1):i + 1].mean() for i in range(len(c))])

    def row(name: str, c: np.ndarray, note: str, conf: float = float("nan")) -> Row:
        e = c - g
        return Row(f"{base.method} + {name}", conf, np.abs(e).mean(), np.abs(e[fit]).mean(), np.abs(e[~fit]).mean(),
                   e[~fit].mean(), float("nan"), base.fps, note)

    best = min(((lo, hi) for lo in SWEEP for hi in SWEEP), key=lambda th: np.abs(np.array(
        [((y < split_row) & (s >= th[0])).sum() + ((y >= split_row) & (s >= th[1])).sum() for y, s in pts])
        - g)[fit].mean())
    per_band = np.array([((y < split_row) & (s >= best[0])).sum() + ((y >= split_row) & (s >= best[1])).sum()
                         for y, s in pts], float)
    edges = [f * height for f in LINEAR_EDGES_FRAC]
    x = np.array([[((y >= edges[k]) & (y < edges[k + 1]) & (s >= t)).sum() for k in range(len(edges) - 1)
                   for t in LINEAR_THRESHOLDS] for y, s in pts], float)
    x1 = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(x1[fit], g[fit], rcond=None)[0]
    linear = x1 @ w
    return [
        row("per-band thresholds", per_band, f"threshold {best[0]:g} above row {split_row:g}, {best[1]:g} below"),
        row(f"causal mean of {SMOOTH_FRAMES} frames", causal(counts_at(dets, base.conf, mask)),
            f"mean of this frame's count and the {SMOOTH_FRAMES - 1} before (no look-ahead)", base.conf),
        row("linear correction", linear, f"counts at {len(LINEAR_THRESHOLDS)} thresholds x {len(edges) - 1} bands "
            f"-> count, least squares on the fit part ({x1.shape[1]} coefficients)"),
        row(f"linear correction + causal mean of {SMOOTH_FRAMES}", causal(linear), "both"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=int, default=1, help="use every STEP-th frame (default: all 800)")
    ap.add_argument("--split", type=int, default=400,
                    help="frames <= SPLIT fit thresholds/calibration, the rest is held out")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    names = [m for m in args.methods.split(",") if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}")

    idx, frames = load_frames(args.step)
    truth, mask = load_truth(), roi_mask()
    load0 = os.getloadavg()
    from storelens.backends.detectors.base import Detections
    from storelens.backends.detectors.tiling import dedupe_heads

    runs: dict[str, tuple[list, float]] = {}
    for key in dict.fromkeys(METHODS[n][0] for n in names):  # each run once, in the order asked
        runs[key] = run_detector(RUNS[key], frames, min(SWEEP))
        print(f"run {key}: {runs[key][1]:.1f} fps", file=sys.stderr, flush=True)
    rows: list[Row] = []
    raw: dict[str, list] = {}
    default_conf = UltralyticsDetectorConfig().confidence
    for name in names:
        key, radius, note = METHODS[name]
        dets, fps = runs[key]
        if radius:
            t0 = time.perf_counter()
            deduped = [dedupe_heads(Detections(b, s, np.zeros(len(s), np.int32)), radius) for b, s in dets]
            extra_s = time.perf_counter() - t0
            dets = [(d.bbox_xyxy, d.confidence) for d in deduped]
            fps = 1.0 / (1.0 / fps + extra_s / len(frames))
        row, _ = evaluate(name, note, dets, fps, idx, truth, mask, args.split,
                          fixed_conf=default_conf if name == "default" else None)
        raw[name] = dets
        rows.append(row)
        print(f"{name}: conf {row.conf:.2f} MAE {row.mae:.2f} held {row.mae_held:.2f} {row.fps:.1f} fps",
              file=sys.stderr, flush=True)
    for name in CALIBRATED:
        base = next((r for r in rows if r.method == name), None)
        if base is not None:
            rows.append(calibrated(base, raw[name], idx, truth, mask, args.split, frames[0].shape[0], offset=False))
    base = next((r for r in rows if r.method == POST_BASE), None)
    if base is not None:
        rows.extend(post_rows(base, raw[POST_BASE], idx, truth, mask, args.split, frames[0].shape[0]))
    load1 = os.getloadavg()

    g = np.array([truth[i] for i in idx], float)
    fit = np.array(idx) <= args.split
    print(f"Command: `{shlex.join(['python', 'bench/occupancy_mall.py', *sys.argv[1:]])}`")
    print()
    print(f"- Frames: {len(idx)} of 800 (every {args.step}); fit part = frames <= {args.split} "
          f"({int(fit.sum())} frames, mean {g[fit].mean():.1f} people), held-out = frames > {args.split} "
          f"({int((~fit).sum())} frames, mean {g[~fit].mean():.1f} people)")
    print("- Count = detections whose head point (box centre column, 10% of the box height below its top) lies in "
          "`roi_mask.png`; truth = annotated heads of the frame (all inside the region)")
    print(benchlib.cpu_line())
    print(benchlib.python_line() + f", ultralytics {benchlib.version('ultralytics')}, openvino "
          f"{benchlib.version('openvino')}, onnxruntime {benchlib.version('onnxruntime')}")
    print(f"- Load average at start {load0[0]:.2f}, at end {load1[0]:.2f} "
          "(other processes share the cores: fps is noisy)")
    print()
    print("| method | conf | MAE all | MAE fit | **MAE held-out** | bias held-out | MAE held-out, bottom-centre anchor "
          "| detector fps | what |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        bottom = "" if np.isnan(r.mae_held_bottom) else f"{r.mae_held_bottom:.2f}"
        conf = "-" if np.isnan(r.conf) else f"{r.conf:.2f}"
        print(f"| {r.method} | {conf} | {r.mae:.2f} | {r.mae_fit:.2f} | **{r.mae_held:.2f}** "
              f"| {r.bias_held:+.2f} "
              f"| {bottom} | {r.fps:.1f} | {r.note} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
