#!/usr/bin/env python
"""Staff uniform cue (issue 11 item 3): precision and recall of the torso colour model on labelled crops.

Labels: ``tests/data/staff_uniform_labels.csv`` (``sequence,frame,track_id,label``; labels only,
the boxes are the sequences' ground truth, the pixels the shared assets). The "uniform" is a
red top: people wearing one are labelled ``staff`` by track id, everyone else ``shopper``
(maroon, pink, orange, brown and yellow tops are there as hard negatives). Boxes lower than
60 px are left out. Sequences: MOT17-02, -04, -10, -11 (``MOT17-mini``, all their frames),
TUD-Stadtmitte (every 5th frame) and TUD-Campus (every 5th).

Held-out rule: the store's setup (the reference colour and the thresholds) is chosen on
MOT17-02 only (``--tune``: the reference is the median HSV of the red pixels of its staff
torsos, then a grid over the tolerances and ``min_share`` maximising F1 there); the table
reports the other sequences, which the setup never saw. Rows: per crop (one crop judged
alone) and per track (the track rule, ``min_crops`` staff crops and >= ``min_crop_fraction``
of its crops, over the crops of the sequence).

    python bench/staff_uniform.py           # evaluate STORE_SETUP on the held-out sequences
    python bench/staff_uniform.py --tune    # re-derive STORE_SETUP on MOT17-02
"""
from __future__ import annotations

import argparse
import csv
import itertools
import pathlib
import sys
import time
from collections import defaultdict

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from storelens.backends.uniform import HsvTorsoUniform, build_uniform_cue, crop_box  # noqa: E402
from storelens.config.groups import UniformCueConfig  # noqa: E402
from storelens.domain.mot import read_mot  # noqa: E402
from storelens.domain.staff import UniformVotes  # noqa: E402
from storelens.paths import asset  # noqa: E402

LABELS = REPO / "tests" / "data" / "staff_uniform_labels.csv"
TUNE = "MOT17-02"
#: The store's setup, from ``--tune`` on MOT17-02 (reference colour and thresholds).
STORE_SETUP = {"backend": "hsv_torso", "colours": [{"name": "red", "hsv": [173, 161, 49], "hue_tol": 6,
                                                    "sat_tol": 90, "val_tol": 255}],
               "min_share": 0.339, "min_crops": 2, "min_crop_fraction": 0.5, "min_height_px": 60}


def sequence_paths(name: str) -> tuple[pathlib.Path, pathlib.Path | None, pathlib.Path]:
    """(gt.txt, img1 dir or None, video or None) of a labelled sequence."""
    if name.startswith("MOT17-"):
        d = asset("mot", "MOT17-mini", "train", f"{name}-FRCNN")
        return d / "gt" / "gt.txt", d / "img1", d
    return asset("mot", name, "gt", "gt.txt"), None, asset("mot", name, f"{name}.mp4")


def load_crops() -> dict[str, list[tuple[int, int, bool, np.ndarray]]]:
    """sequence -> [(frame, track_id, is_staff, crop BGR)] of every labelled box."""
    rows: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
    with open(LABELS, newline="") as f:
        for r in csv.DictReader(f):
            if r["label"] not in ("staff", "shopper"):
                raise ValueError(f"{LABELS}: bad label {r['label']!r} (staff or shopper)")
            rows[r["sequence"]].append((int(r["frame"]), int(r["track_id"]), r["label"] == "staff"))
    out: dict[str, list[tuple[int, int, bool, np.ndarray]]] = {}
    for name, items in rows.items():
        gt_path, img_dir, video = sequence_paths(name)
        gt = read_mot(gt_path, evaluated_only=True)
        wanted = {fr for fr, _, _ in items}
        frames: dict[int, np.ndarray] = {}
        if img_dir is not None:
            for fr in wanted:
                frames[fr] = cv2.imread(str(img_dir / f"{fr:06d}.jpg"))
        else:
            cap = cv2.VideoCapture(str(video))
            fr = 0
            while len(frames) < len(wanted):
                ok, img = cap.read()
                if not ok:
                    break
                fr += 1
                if fr in wanted:
                    frames[fr] = img
            cap.release()
        boxes = {(fr, b.track_id): b for fr, bs in gt.items() for b in bs}
        out[name] = []
        for fr, tid, staff in items:
            b = boxes[(fr, tid)]
            crop = crop_box(frames[fr], (b.left, b.top, b.left + b.width, b.top + b.height))
            out[name].append((fr, tid, staff, crop))
    return out


def scores(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else None
    return p, r, f1


def evaluate(setup: dict, crops: list[tuple[int, int, bool, np.ndarray]]) -> dict[str, tuple[int, int, int, int]]:
    """Per crop and per track: (tp, fp, fn, tn)."""
    cfg = UniformCueConfig.model_validate(setup)
    cue = build_uniform_cue(cfg)
    crop_c = [0, 0, 0, 0]
    votes = UniformVotes(cfg.min_crops, cfg.min_crop_fraction)
    truth: dict[int, bool] = {}
    for fr, tid, staff, crop in sorted(crops, key=lambda x: x[0]):
        j = cue.judge(crop)
        crop_c[(0 if j.staff else 2) if staff else (1 if j.staff else 3)] += 1
        votes.add(tid, j.staff, j.colour)
        truth[tid] = staff
    track_c = [0, 0, 0, 0]
    for tid, staff in truth.items():
        said = votes.is_staff(tid)
        track_c[(0 if said else 2) if staff else (1 if said else 3)] += 1
    return {"crop": tuple(crop_c), "track": tuple(track_c)}


def tune(crops: list[tuple[int, int, bool, np.ndarray]]) -> dict:
    """The reference colour from the staff torsos of the tuning sequence; then, per tolerance setting of a grid,
    ``min_share`` midway between the weakest staff crop and the strongest shopper crop (max margin); the
    setting with the best crop F1 there, ties broken by the widest margin."""
    probe = HsvTorsoUniform(UniformCueConfig.model_validate(
        {"colours": [{"name": "x", "hsv": [0, 0, 0]}]}))
    px = np.concatenate([cv2.cvtColor(probe.torso(c), cv2.COLOR_BGR2HSV).reshape(-1, 3)
                         for _, _, s, c in crops if s and c.shape[0] >= 60])
    h = px[:, 0].astype(np.float64)
    reddish = px[((h <= 12) | (h >= 165)) & (px[:, 1] >= 80)]
    ang = reddish[:, 0] * (2 * np.pi / 180)
    hue = int(round(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) / 2)) % 180
    ref = [hue, int(np.median(reddish[:, 1])), int(np.median(reddish[:, 2]))]
    best = None
    judged = [(st, c) for _, _, st, c in crops if c.shape[0] >= 60]
    # lighting differs between cameras: brightness (V) is not matched, only hue and saturation (val_tol 255)
    for hue_tol, sat_tol, val_tol in itertools.product((6, 8, 10, 12, 15), (60, 90, 120), (255,)):
        colour = {"name": "red", "hsv": ref, "hue_tol": hue_tol, "sat_tol": sat_tol, "val_tol": val_tol}
        cue = HsvTorsoUniform(UniformCueConfig.model_validate({"colours": [colour]}))
        pos = [float(cue.shares(c)[0]) for st, c in judged if st]
        neg = [float(cue.shares(c)[0]) for st, c in judged if not st]
        # max margin: the threshold midway between the weakest staff crop and the strongest shopper crop
        share = min(max((min(pos) + max(neg)) / 2, 0.05), 0.95)
        setup = {**STORE_SETUP, "colours": [colour], "min_share": round(share, 3)}
        tp, fp, fn, _ = evaluate(setup, crops)["crop"]
        key = (scores(tp, fp, fn)[2] or 0.0, min(pos) - max(neg))
        if best is None or key > best[0]:
            best = (key, setup)
    assert best is not None
    print(f"reference HSV from {len(reddish)} red torso pixels of {TUNE}'s staff: {ref}; best crop F1 on {TUNE}: "
          f"{best[0][0]:.3f}, share margin {best[0][1]:.3f}")
    return best[1]


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", action="store_true", help=f"re-derive the store setup on {TUNE} and print it")
    args = ap.parse_args()
    t0 = time.perf_counter()
    crops = load_crops()
    setup = STORE_SETUP
    if args.tune:
        setup = tune(crops[TUNE])
        print(f"STORE_SETUP = {setup}\n")
    print(f"$ python bench/staff_uniform.py{' --tune' if args.tune else ''}")
    print(f"setup (chosen on {TUNE} only): {setup}\n")
    print("| sequence | role | staff crops / all | crop TP / FP / FN | crop precision | crop recall | "
          "staff tracks / all | track TP / FP / FN | track precision | track recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    held = {"crop": [0, 0, 0, 0], "track": [0, 0, 0, 0]}
    for name in sorted(crops, key=lambda n: (n != TUNE, n)):
        res = evaluate(setup, crops[name])
        role = "tuning" if name == TUNE else "held out"
        if name != TUNE:
            for k in held:
                held[k] = [a + b for a, b in zip(held[k], res[k])]
        c, t = res["crop"], res["track"]
        print(f"| {name} | {role} | {c[0] + c[2]} / {sum(c)} | {c[0]} / {c[1]} / {c[2]} | {fmt(scores(*c[:3])[0])} | "
              f"{fmt(scores(*c[:3])[1])} | {t[0] + t[2]} / {sum(t)} | {t[0]} / {t[1]} / {t[2]} | "
              f"{fmt(scores(*t[:3])[0])} | {fmt(scores(*t[:3])[1])} |")
    c, t = held["crop"], held["track"]
    print(f"| **all held out** | | {c[0] + c[2]} / {sum(c)} | {c[0]} / {c[1]} / {c[2]} | {fmt(scores(*c[:3])[0])} | "
          f"{fmt(scores(*c[:3])[1])} | {t[0] + t[2]} / {sum(t)} | {t[0]} / {t[1]} / {t[2]} | "
          f"{fmt(scores(*t[:3])[0])} | {fmt(scores(*t[:3])[1])} |")
    n = sum(len(v) for v in crops.values())
    print(f"\n{n} labelled crops; {time.perf_counter() - t0:.1f} s in all (decode, crop, judge)")


if __name__ == "__main__":
    main()
