#!/usr/bin/env python
"""Staff face cue (issue 11 item 3): precision and recall of the opt-in staff face gallery by threshold.

Enrolment as ``storelens staff enroll`` does it (:class:`~storelens.runtime.still_faces.StillFaceEmbedder`:
the largest YuNet face of each image, the configured dlib embedder; consent-by "bench"), into a real
history store (:mod:`storelens.storage.staff_faces`, SQLite in memory), read back as the reid stage
reads it (:class:`~storelens.storage.staff_faces.StaffFaceSource`). Every identity of
``faces/identities/<person>/`` is a staff member (all their images enrolled).

Probes (each face embedded the same way, the decision the reid stage takes: the best cosine
similarity over every staff embedding, staff when >= the threshold):

* positives: the faces of ``faces/identities_test`` whose person is enrolled (labelled by hand,
  left to right, as in bench/faces_verify.py): correct when the best staff member is that person;
  and leave-one-image-out: each enrolment photo of a person with two, probed while that person is
  enrolled from their other photo only;
* negatives, other identities: the same faces against the gallery *without* their person
  (leave-one-identity-out), plus the child of ``obama_and_biden.jpg`` (nobody enrolled);
* negatives, strangers: ``--utk`` UTKFace crops (every k-th of ``faces/utkface/labels.csv``).

Precision = correct staff decisions / all staff decisions (a positive matched to the wrong member
counts as a false one); recall = correct staff decisions / positives.

    python bench/staff_faces.py              # 300 UTKFace crops
    python bench/staff_faces.py --utk 600
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time

import cv2
import numpy as np

from benchlib import cpu_model, version  # noqa: E402
from storelens.config.faces import FacesConfig
from storelens.paths import asset
from storelens.runtime.still_faces import StillFaceEmbedder
from storelens.storage import SqlStorage
from storelens.storage.staff_faces import StaffFaceSource, enroll, remove

#: identities_test files and their faces from left to right (None: nobody enrolled).
TEST_FACES = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "obama1.jpg": ["obama"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama_and_biden.jpg": ["biden", "obama", None],
}
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96)


def test_faces(emb: StillFaceEmbedder) -> list[tuple[str, str | None, np.ndarray]]:
    """(file, person or None, unit embedding) of every labelled face of identities_test."""
    out = []
    for name, who in TEST_FACES.items():
        img = cv2.imread(str(asset("faces", "identities_test", name)))
        faces = emb.detector.detect(img)
        if len(faces) < len(who):
            raise SystemExit(f"{name}: {len(faces)} faces found, {len(who)} labelled")
        b = faces.bbox_xyxy
        # the labelled faces are the largest ones; then left to right
        big = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")[:len(who)]
        for person, i in zip(who, sorted(big, key=lambda i: b[i, 0])):
            v = np.asarray(emb.embedder.embed(img, faces[int(i)]), np.float32).reshape(-1)
            out.append((name, person, v / np.linalg.norm(v)))
    return out


def utk_faces(emb: StillFaceEmbedder, n: int) -> list[np.ndarray]:
    root = asset("faces", "utkface")
    with open(root / "labels.csv") as f:
        files = sorted(r["file"] for r in csv.DictReader(f))
    step = max(1, len(files) // n)
    out = []
    for name in files[::step][:n]:
        img = cv2.imread(str(root / name))
        v = emb.embed_image(img) if img is not None else None
        if v is not None:
            out.append(v)
    return out


def best(source: StaffFaceSource, model: str, dim: int, v: np.ndarray) -> tuple[str | None, float]:
    ids, x = source.load(model, dim)
    if not ids:
        return None, -1.0
    s = x @ v
    i = int(np.argmax(s))
    return ids[i], float(s[i])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utk", type=int, default=300, help="UTKFace crops used as strangers")
    args = ap.parse_args()
    t0 = time.perf_counter()
    emb = StillFaceEmbedder(FacesConfig())
    store = SqlStorage(":memory:")
    source = StaffFaceSource(store)
    people = sorted(p for p in asset("faces", "identities").iterdir() if p.is_dir())
    enrolled: dict[str, list[np.ndarray]] = {}
    for person in people:
        imgs = sorted(str(p) for p in person.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        vecs = [v for _, v, _ in emb.embed_paths(imgs) if v is not None]
        enrolled[person.name] = vecs
        enroll(store, person.name, person.name, consent_by="bench", embeddings=vecs, model=emb.model, dim=emb.dim)
    probes = test_faces(emb)
    strangers = utk_faces(emb, args.utk)

    # (true person or None, predicted person or None, similarity) per trial
    trials: list[tuple[str | None, str | None, float]] = []
    for _, person, v in probes:
        trials.append((person, *best(source, emb.model, emb.dim, v)))
    for person, vecs in enrolled.items():  # leave one image out: enrolled from the other photo(s)
        if len(vecs) < 2:
            continue
        for i, v in enumerate(vecs):
            remove(store, person)
            enroll(store, person, person, consent_by="bench", embeddings=vecs[:i] + vecs[i + 1:], model=emb.model,
                   dim=emb.dim)
            trials.append((person, *best(source, emb.model, emb.dim, v)))
        remove(store, person)
        enroll(store, person, person, consent_by="bench", embeddings=vecs, model=emb.model, dim=emb.dim)
    for person in enrolled:  # leave one identity out: its faces are strangers now
        remove(store, person)
        for _, p, v in probes:
            if p == person:
                trials.append((None, *best(source, emb.model, emb.dim, v)))
        enroll(store, person, person, consent_by="bench", embeddings=enrolled[person], model=emb.model, dim=emb.dim)
    for v in strangers:
        trials.append((None, *best(source, emb.model, emb.dim, v)))
    n_pos = sum(1 for t, _, _ in trials if t is not None)
    n_neg = len(trials) - n_pos
    n_test = sum(1 for _, p, _ in probes if p is not None)

    print(f"enrolled: {len(enrolled)} members, {sum(map(len, enrolled.values()))} embeddings ({emb.model}); "
          f"trials: {n_pos} positive ({n_test} identities_test faces, {n_pos - n_test} leave-one-image-out), "
          f"{n_neg} negative ({len(probes)} identities_test faces against the others, {len(strangers)} UTKFace)")
    print()
    print("| min_similarity | staff decisions | correct | wrong member | strangers taken | precision | recall |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for thr in THRESHOLDS:
        taken = [(t, p) for t, p, s in trials if s >= thr]
        correct = sum(1 for t, p in taken if t is not None and t == p)
        wrong = sum(1 for t, p in taken if t is not None and t != p)
        strangers_taken = sum(1 for t, _ in taken if t is None)
        prec = correct / len(taken) if taken else float("nan")
        print(f"| {thr:.2f} | {len(taken)} | {correct} | {wrong} | {strangers_taken} | {prec:.3f} | "
              f"{correct / n_pos:.3f} |")
    pos = sorted(s for t, p, s in trials if t is not None and t == p)
    neg = sorted(s for t, _, s in trials if t is None)
    print()
    print(f"genuine best similarity: min {pos[0]:.3f}, median {np.median(pos):.3f}; "
          f"stranger best similarity: max {neg[-1]:.3f}, 99th pct {np.percentile(neg, 99):.3f}")
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}; {time.perf_counter() - t0:.1f} s; "
          f"{cpu_model()}; dlib {version('dlib-bin')}, opencv {cv2.__version__}")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
