#!/usr/bin/env python
"""Attention head pose: the landmark estimate against head-pose-estimation-adas-0001, as Markdown tables.

    python bench/attention.py [--utk 2000] [--rotate 15] [--rounds 3]

The shared assets have NO head-pose labels (no yaw/pitch truth, no
frontal/non-frontal labels). So this measures what can be measured:

1. Agreement of the two estimates (yaw, pitch, and the ``faces.attention``
   "attending" verdict under the default camera mode, |yaw| and |pitch| <= 20)
   on the labelled face photos (``faces/identities*``, ``faces/expressions``)
   and the UTKFace chips. Agreement is not accuracy.
2. Transformations whose effect on the true pose is known exactly:
   * a horizontal mirror negates yaw and roll and keeps pitch (each method
     re-runs end to end on the mirrored image: YuNet's landmarks for the
     landmark estimate, the mirrored crop for the model);
   * an in-plane rotation by +-``--rotate`` degrees (about the face centre)
     adds exactly that to roll and leaves yaw and pitch unchanged.
   The errors there are real errors of each method (on the part of the pose
   those transformations probe), but they say nothing about the absolute
   yaw/pitch scale.
3. Time per face on 1 thread: landmark pose (the landmarks come free with the
   YuNet detection, so that is just the arithmetic) and the model (square crop
   + resize + one inference per face).

Faces: YuNet (default settings) on each image; the biggest face of each
UTKFace chip, every face of the photos. Faces the quality gate would call
too small/blurry are kept (these are all large, sharp photos).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_line, python_line, version  # noqa: E402
from storelens.backends.face_attributes.head_pose_openvino import HeadPoseEstimator  # noqa: E402
from storelens.backends.face_detectors import YuNetFaceDetector  # noqa: E402
from storelens.config.faces import AttentionConfig  # noqa: E402
from storelens.domain.face_quality import head_pose, is_attending  # noqa: E402
from storelens.paths import asset  # noqa: E402


def photo_paths() -> list[str]:
    out = []
    for sub in ("identities", "identities_test", "expressions"):
        for root, _, files in os.walk(asset("faces", sub)):
            out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(".jpg")]
    return sorted(out)


def utk_paths(n: int) -> list[str]:
    root = asset("faces", "utkface")
    names = sorted(f for f in os.listdir(root) if f.endswith(".jpg"))
    step = max(1, len(names) // max(n, 1))
    return [str(root / f) for f in names[::step][:n]]


def poses(det, hp, img, biggest: bool):
    """[(landmark pose, model pose, face centre)] for the faces of ``img``."""
    faces = det.detect(img)
    if len(faces) == 0:
        return []
    if biggest:
        faces = faces[int(np.argmax(faces.bbox_xyxy[:, 2] - faces.bbox_xyxy[:, 0]))]
    model = hp.estimate(img, faces)
    return [(head_pose(lm), p, ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
            for lm, p, b in zip(faces.landmarks5, model, faces.bbox_xyxy)]


def nearest(found, centre):
    if not found:
        return None
    d = [np.hypot(c[0] - centre[0], c[1] - centre[1]) for _, _, c in found]
    return found[int(np.argmin(d))]


def agreement_row(name, pairs, att_cfg):
    lm = np.array([[a.yaw_deg, a.pitch_deg] for a, _ in pairs])
    md = np.array([[b.yaw_deg, b.pitch_deg] for _, b in pairs])
    ok = np.isfinite(lm).all(1)
    lm, md = lm[ok], md[ok]
    att_l = np.array([is_attending(y, p, att_cfg) for y, p in lm])
    att_m = np.array([is_attending(y, p, att_cfg) for y, p in md])
    r_yaw = np.corrcoef(lm[:, 0], md[:, 0])[0, 1]
    r_pitch = np.corrcoef(lm[:, 1], md[:, 1])[0, 1]
    both = (att_l & att_m).sum()
    return (f"| {name} | {len(lm)} | {r_yaw:.2f} | {np.median(np.abs(lm[:, 0] - md[:, 0])):.1f} | "
            f"{r_pitch:.2f} | {np.median(np.abs(lm[:, 1] - md[:, 1])):.1f} | "
            f"{att_l.mean():.0%} | {att_m.mean():.0%} | {(att_l == att_m).mean():.1%} | "
            f"{both} / {(att_l & ~att_m).sum()} / {(~att_l & att_m).sum()} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utk", type=int, default=2000, help="UTKFace chips used (evenly spaced by name)")
    ap.add_argument("--rotate", type=float, default=15.0, help="in-plane rotation of the rotation test, degrees")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (median)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    att_cfg = AttentionConfig()
    det = YuNetFaceDetector()
    hp = HeadPoseEstimator(AttentionConfig(pose="head-pose-adas", threads=1))

    photos = [(p, cv2.imread(p)) for p in photo_paths()]
    utk = [(p, cv2.imread(p)) for p in utk_paths(args.utk)]
    photo_pairs = [(a, b) for _, img in photos for a, b, _ in poses(det, hp, img, biggest=False)]

    # Mirror and rotation tests, per UTKFace chip (and the photos).
    mirror = {"lm": [], "md": []}
    rot = {"lm": [], "md": []}
    utk_pairs = []
    for _, img in utk + photos:
        is_utk = img.shape[:2] == (200, 200)
        found = poses(det, hp, img, biggest=True)
        if not found:
            continue
        lm0, md0, c = found[0]
        if is_utk:
            utk_pairs.append((lm0, md0))
        h, w = img.shape[:2]
        m = nearest(poses(det, hp, cv2.flip(img, 1), biggest=True), (w - 1 - c[0], c[1]))
        if m is not None:
            for key, p0, p1 in (("lm", lm0, m[0]), ("md", md0, m[1])):
                mirror[key].append((p0.yaw_deg + p1.yaw_deg, p1.pitch_deg - p0.pitch_deg, p0.roll_deg + p1.roll_deg))
        for ang in (args.rotate, -args.rotate):
            # cv2 angle > 0 turns the picture counter-clockwise: roll (right eye lower > 0) changes by -ang.
            M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), ang, 1.0)
            r = nearest(poses(det, hp, cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE), True), c)
            if r is None:
                continue
            for key, p0, p1 in (("lm", lm0, r[0]), ("md", md0, r[1])):
                rot[key].append((p1.yaw_deg - p0.yaw_deg, p1.pitch_deg - p0.pitch_deg,
                                 (p1.roll_deg - p0.roll_deg) - (-ang)))

    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"`{cmd}`  \n{cpu_line()}; {python_line()}; openvino {version('openvino')}, "
          f"opencv {version('opencv-python-headless') or version('opencv-python')}\n")
    print("### Agreement: landmark pose vs head-pose-estimation-adas-0001 (no pose labels exist in the assets)\n")
    print(f"Attending = camera mode, |yaw| <= {att_cfg.max_yaw_deg:g} and |pitch| <= {att_cfg.max_pitch_deg:g}. "
          "Median |diff| in degrees. Last column: attending by both / landmarks only / model only.\n")
    print("| faces | n | yaw r | yaw median abs diff | pitch r | pitch median abs diff | attending (lm) | "
          "attending (model) | verdict agreement | both / lm only / model only |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(agreement_row("labelled photos (identities*, expressions)", photo_pairs, att_cfg))
    print(agreement_row(f"UTKFace chips ({len(utk)} read)", utk_pairs, att_cfg))

    def err_row(name, rows, truth):
        a = np.array(rows, np.float64)
        a = a[np.isfinite(a).all(1)]
        med = np.median(np.abs(a), 0)
        p90 = np.percentile(np.abs(a), 90, 0)
        return (f"| {name} | {truth} | {len(a)} | {med[0]:.1f} / {p90[0]:.1f} | {med[1]:.1f} / {p90[1]:.1f} | "
                f"{med[2]:.1f} / {p90[2]:.1f} |")

    print("\n### Known-truth transformations (UTKFace chips + photos): error in degrees, median / 90th percentile\n")
    print("Mirror: truth yaw' = -yaw, pitch' = pitch, roll' = -roll. "
          f"Rotation by +-{args.rotate:g} deg: truth yaw and pitch unchanged, roll changes by exactly that.\n")
    print("| method | test | pairs | yaw error | pitch error | roll error |")
    print("|---|---|---|---|---|---|")
    for key, name in (("lm", "landmarks (YuNet 5 points)"), ("md", "head-pose-adas-0001")):
        print(err_row(name, mirror[key], "mirror"))
    for key, name in (("lm", "landmarks (YuNet 5 points)"), ("md", "head-pose-adas-0001")):
        print(err_row(name, rot[key], f"rotate +-{args.rotate:g}"))

    # Timing: one face at a time, as the stage sees them.
    items = []
    for _, img in utk[:200] + photos:
        faces = det.detect(img)
        if len(faces):
            items.append((img, faces[0]))
    t_lm, t_md = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _, f in items:
            head_pose(f.landmarks5[0])
        t_lm.append((time.perf_counter() - t0) / len(items) * 1e3)
        t0 = time.perf_counter()
        for img, f in items:
            hp.estimate(img, f)
        t_md.append((time.perf_counter() - t0) / len(items) * 1e3)
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for img, _ in items:
            det.detect(img)
    t_det = (time.perf_counter() - t0) / args.rounds / len(items) * 1e3
    print(f"\n### Time per face (1 thread, {len(items)} faces, median of {args.rounds} rounds)\n")
    print("| pose | ms / face |")
    print("|---|---|")
    print(f"| landmarks (arithmetic on YuNet's points) | {statistics.median(t_lm):.3f} |")
    print(f"| head-pose-adas-0001 (crop + resize + inference) | {statistics.median(t_md):.3f} |")
    print(f"| for scale: YuNet detection, per image (UTK 200x200 chips and photos) | {t_det:.2f} |")


if __name__ == "__main__":
    main()
