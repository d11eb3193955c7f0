#!/usr/bin/env python
"""Attention head pose: the landmark estimate against head-pose-estimation-adas-0001 (and gaze), as Markdown tables.

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
4. The gaze (``faces.attention.pose: gaze-adas``: head pose + landmarks-regression-retail-0009
   + gaze-estimation-adas-0002) the same way: mirror (truth: gaze yaw negated,
   pitch kept, vector x negated), rotation (truth: the gaze vector's image-plane
   part turns by the rotation, so yaw/pitch do change), agreement of its
   "attending" verdict with head-pose-adas's, and time per face. Where the eyes
   point and where the head points legitimately differ, so that agreement is a
   plausibility check, not an error rate.

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
from storelens.backends.face_attributes.gaze_openvino import GazeEstimator, gaze_angles  # noqa: E402
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


def poses(det, gz, img, biggest: bool):
    """[(landmark pose, model pose, face centre, gaze)] for the faces of ``img``.

    The model pose is the head-pose-adas output the gaze estimator computed (same crop, same model
    as ``HeadPoseEstimator.estimate``), so the head-pose model runs once per face.
    """
    faces = det.detect(img)
    if len(faces) == 0:
        return []
    if biggest:
        faces = faces[int(np.argmax(faces.bbox_xyxy[:, 2] - faces.bbox_xyxy[:, 0]))]
    gazes = gz.estimate(img, faces)
    return [(head_pose(lm), g.head_pose, ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2), g)
            for lm, g, b in zip(faces.landmarks5, gazes, faces.bbox_xyxy)]


def nearest(found, centre):
    if not found:
        return None
    d = [np.hypot(f[2][0] - centre[0], f[2][1] - centre[1]) for f in found]
    return found[int(np.argmin(d))]


def vector_angle_deg(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))))


def agreement_row(name, pairs, att_cfg):
    lm = np.array([[a.yaw_deg, a.pitch_deg] for a, _ in pairs])
    md = np.array([[b.yaw_deg, b.pitch_deg] for _, b in pairs])
    ok = np.isfinite(lm).all(1) & np.isfinite(md).all(1)
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
    gz = GazeEstimator(AttentionConfig(pose="gaze-adas", threads=1))

    photos = [(p, cv2.imread(p)) for p in photo_paths()]
    utk = [(p, cv2.imread(p)) for p in utk_paths(args.utk)]
    photo_found = [f for _, img in photos for f in poses(det, gz, img, biggest=False)]
    photo_pairs = [(f[0], f[1]) for f in photo_found]

    # Mirror and rotation tests, per UTKFace chip (and the photos).
    mirror = {"lm": [], "md": [], "gz": []}
    rot = {"lm": [], "md": [], "gz": []}
    utk_pairs = []
    utk_gaze_pairs = []  # (head-pose-adas pose, gaze)
    for _, img in utk + photos:
        is_utk = img.shape[:2] == (200, 200)
        found = poses(det, gz, img, biggest=True)
        if not found:
            continue
        lm0, md0, c, g0 = found[0]
        v0 = np.array(g0.vector)
        if is_utk:
            utk_pairs.append((lm0, md0))
            utk_gaze_pairs.append((md0, g0))
        h, w = img.shape[:2]
        m = nearest(poses(det, gz, cv2.flip(img, 1), biggest=True), (w - 1 - c[0], c[1]))
        if m is not None:
            for key, p0, p1 in (("lm", lm0, m[0]), ("md", md0, m[1])):
                mirror[key].append((p0.yaw_deg + p1.yaw_deg, p1.pitch_deg - p0.pitch_deg, p0.roll_deg + p1.roll_deg))
            g1 = m[3]
            mirror["gz"].append((g0.yaw_deg + g1.yaw_deg, g1.pitch_deg - g0.pitch_deg,
                                 vector_angle_deg(g1.vector, v0 * (-1, 1, 1))))
        for ang in (args.rotate, -args.rotate):
            # cv2 angle > 0 turns the picture counter-clockwise: roll (right eye lower > 0) changes by -ang.
            M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), ang, 1.0)
            r = nearest(poses(det, gz, cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE), True), c)
            if r is None:
                continue
            for key, p0, p1 in (("lm", lm0, r[0]), ("md", md0, r[1])):
                rot[key].append((p1.yaw_deg - p0.yaw_deg, p1.pitch_deg - p0.pitch_deg,
                                 (p1.roll_deg - p0.roll_deg) - (-ang)))
            # Gaze truth: the vector's (x right, y up) part turns counter-clockwise by ang.
            cs, sn = np.cos(np.radians(ang)), np.sin(np.radians(ang))
            v_true = np.array([v0[0] * cs - v0[1] * sn, v0[0] * sn + v0[1] * cs, v0[2]])
            yaw_t, pitch_t = gaze_angles(v_true)
            g1 = r[3]
            rot["gz"].append((g1.yaw_deg - yaw_t, g1.pitch_deg - pitch_t, vector_angle_deg(g1.vector, v_true)))

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

    print("\n### Agreement: head-pose-estimation-adas-0001 (head) vs gaze-estimation-adas-0002 (eyes)\n")
    print("Same columns, first method = head-pose-adas, second = gaze (where the eyes point may differ from where "
          "the head points; this is no error rate). Last column: attending by both / head only / gaze only.\n")
    print("| faces | n | yaw r | yaw median abs diff | pitch r | pitch median abs diff | attending (head) | "
          "attending (gaze) | verdict agreement | both / head only / gaze only |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(agreement_row("labelled photos (identities*, expressions)", [(f[1], f[3]) for f in photo_found], att_cfg))
    print(agreement_row(f"UTKFace chips ({len(utk)} read)", utk_gaze_pairs, att_cfg))

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

    print("\n### Gaze (gaze-adas) under the same transformations: error in degrees, median / 90th percentile\n")
    print("Mirror: truth gaze yaw' = -yaw, pitch' = pitch, vector (x, y, z)' = (-x, y, z). Rotation: truth = the "
          "original gaze vector with its (x, y) turned by the rotation (yaw and pitch change accordingly). Last "
          "column: angle between the measured and the true gaze vector.\n")
    print("| method | test | pairs | gaze yaw error | gaze pitch error | gaze vector angle error |")
    print("|---|---|---|---|---|---|")
    print(err_row("gaze-estimation-adas-0002", mirror["gz"], "mirror"))
    print(err_row("gaze-estimation-adas-0002", rot["gz"], f"rotate +-{args.rotate:g}"))

    # Timing: one face at a time, as the stage sees them.
    items = []
    for _, img in utk[:200] + photos:
        faces = det.detect(img)
        if len(faces):
            items.append((img, faces[0]))
    t_lm, t_md, t_gz = [], [], []
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
        for img, f in items:
            gz.estimate(img, f)
        t_gz.append((time.perf_counter() - t0) / len(items) * 1e3)
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
    print(f"| gaze-adas (head pose + eye landmarks + 2 eye crops + gaze inference) | {statistics.median(t_gz):.3f} |")
    print(f"| for scale: YuNet detection, per image (UTK 200x200 chips and photos) | {t_det:.2f} |")


if __name__ == "__main__":
    main()
