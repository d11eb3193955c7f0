"""Measuring age/gender estimators on the labelled UTKFace faces of the shared assets.

Shared by ``bench/demographics.py`` (the tables in BENCHMARKS.md) and
``tests/test_demographics.py`` (the floors), so both compute the same numbers.

``faces/utkface/labels.csv`` (``file,age,gender,race``; gender 0 = male) lists
2,000 aligned 200x200 chips; :func:`~storelens.domain.demographics.split_part`
puts each file in the tuning or the held-out half. Each chip goes through the
default face detector (the largest face is used; a chip without a face counts
as abstained on both age and gender) and then the estimator.

Example:
    >>> items = utkface_items("held_out", limit=3)                     # doctest: +SKIP
    >>> [i.file for i in items][:1]                                    # doctest: +SKIP
    ['100_0_0_20170112213500903.jpg.chip.jpg']
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import cv2
import numpy as np

from storelens.backends.face_attributes.demographics import DemographicsEstimator
from storelens.domain.demographics import FaceDemographics, RawAgeGender, Rule, Scores, score, split_part
from storelens.errors import SourceError
from storelens.paths import asset


@dataclass(frozen=True)
class LabelledFace:
    file: str
    age: int
    male: bool
    race: int


def utkface_items(part: str | None = None, limit: int | None = None) -> list[LabelledFace]:
    """The labelled UTKFace chips (``part``: ``"tune"``, ``"held_out"`` or ``None`` for all), sorted by
    name; ``limit`` keeps the first ``limit`` of the part in SHA-256 order (a fixed pseudo-random sample)."""
    path = asset("faces", "utkface", "labels.csv")
    if not path.is_file():
        raise SourceError(f"UTKFace labels not found: {path} (set STORELENS_ASSETS to the shared assets)")
    items = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                item = LabelledFace(row["file"], int(row["age"]), int(row["gender"]) == 0, int(row["race"]))
            except (KeyError, ValueError):
                continue  # a malformed row (see the assets README)
            if part is None or split_part(item.file) == part:
                items.append(item)
    items.sort(key=lambda i: i.file)
    if limit is not None:
        import hashlib

        items = sorted(items, key=lambda i: hashlib.sha256(i.file.encode()).hexdigest())[:limit]
        items.sort(key=lambda i: i.file)
    return items


@dataclass(frozen=True)
class RawSet:
    """Raw estimator outputs of labelled faces (NaN rows where no face was found)."""

    items: list[LabelledFace]
    found: np.ndarray  # (N,) bool
    raw: RawAgeGender

    @property
    def true_age(self) -> np.ndarray:
        return np.array([i.age for i in self.items], np.float64)

    @property
    def true_male(self) -> np.ndarray:
        return np.array([i.male for i in self.items], bool)

    def subset(self, mask: np.ndarray) -> "RawSet":
        idx = np.flatnonzero(mask)
        r = self.raw
        return RawSet([self.items[i] for i in idx], self.found[idx],
                      RawAgeGender(*(getattr(r, k)[idx] for k in r.__dataclass_fields__)))


def run_raw(estimator: DemographicsEstimator, detector, items: list[LabelledFace]) -> RawSet:
    """Detect the largest face of every chip and collect the estimator's raw outputs."""
    root = asset("faces", "utkface")
    rows, found = [], []
    for item in items:
        img = cv2.imread(str(root / item.file))
        if img is None:
            raise SourceError(f"unreadable image {root / item.file}")
        faces = detector.detect(img)
        if len(faces) == 0:
            found.append(False)
            rows.append([np.nan] * 6)
            continue
        side = faces.bbox_xyxy[:, 2] - faces.bbox_xyxy[:, 0]
        r = estimator.raw(img, faces[int(np.argmax(side))])
        found.append(True)
        rows.append([float(getattr(r, k)[0]) for k in RawAgeGender.__dataclass_fields__])
    a = np.array(rows, np.float64).reshape(len(items), 6)
    return RawSet(list(items), np.array(found, bool), RawAgeGender(*(a[:, k] for k in range(6))))


def decisions(rule: Rule, rs: RawSet) -> tuple[list[FaceDemographics], np.ndarray, np.ndarray]:
    """Reported demographics per face (abstained on both where no face was found), fused age and p_male."""
    age, _, _, p, _ = rule.fuse(rs.raw)
    ds = rule.decide(rs.raw)
    none = FaceDemographics(None, None, None, "unknown", 0.5, float("inf"))
    ds = [d if ok else none for d, ok in zip(ds, rs.found)]
    age = np.where(rs.found, age, np.nan)
    p = np.where(rs.found, p, 0.5)
    return ds, age, p


def evaluate(rule: Rule, rs: RawSet) -> Scores:
    """:class:`~storelens.domain.demographics.Scores` of ``rule`` (fusion and thresholds) on ``rs``."""
    ds, age, p = decisions(rule, rs)
    return score(ds, np.nan_to_num(age, nan=-1.0), p, rs.true_age, rs.true_male)
