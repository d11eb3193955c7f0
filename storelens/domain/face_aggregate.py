"""Per-track aggregation of face attributes over many frames, with an explicit ``unknown``.

One shopper (a person track) is seen in many frames; single-frame estimates
are noisy, so the track's attributes come from all of its *good* faces:

* age: the median of the per-face estimates, with an interval (25th-75th
  percentile by default); ``unknown`` with fewer than ``min_faces`` good faces
  or an interval wider than ``max_age_interval_years``.
* gender: the mean probability of each label over good faces; the winner's
  mean probability is the confidence, the share of faces whose own top label
  is the winner is ``vote_share``; ``unknown`` with too few faces, a
  confidence under ``min_gender_confidence``, or (reason ``child``) when the
  median of the faces' ages is under ``child_below_years``: a child gets no
  gender, as in a single image (the models tell boys from girls no better
  than chance). The median is used even when the age itself is reported as
  ``unknown`` (too wide an interval).
* emotion: the same over the 7 FER2013 classes (dominant emotion of the visit),
  threshold ``min_emotion_confidence``.
* attention: share of faces whose pose is usable (big and sharp enough, not cut
  by the crop's or frame's edge, any pose) that were attending
  (:func:`storelens.domain.face_quality.is_attending`).

Faces that failed the quality gate are counted (``n_rejected``, per reason in
``rejected_reasons``) and never used for age, gender or emotion.

Example:
    >>> from storelens.domain.face_quality import QualityResult
    >>> good = QualityResult(True, (), 80.0, 500.0, 0.0, 0.0, 0.0)
    >>> obs = [FaceObservation(good, age_years=a, p_male=0.9) for a in (30, 34, 38)]
    >>> r = aggregate(obs)
    >>> r.age.years, r.gender.label, r.emotion.label
    (34.0, 'male', 'unknown')
    >>> kid = aggregate([FaceObservation(good, age_years=a, p_male=0.95) for a in (7, 8, 9)])
    >>> kid.age.years, kid.gender.label, kid.gender.reason
    (8.0, 'unknown', 'child')
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from storelens.domain.face_quality import QualityResult
from storelens.config.faces import AggregationConfig  # noqa: F401  (defined there, re-exported)

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GENDERS = ("female", "male")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class FaceObservation:
    """One face of one track in one frame (attributes are ``None`` when not computed)."""

    quality: QualityResult
    age_years: float | None = None
    p_male: float | None = None
    emotion_probs: np.ndarray | None = None  # (7,) over EMOTIONS
    attending: bool | None = None


@dataclass(frozen=True)
class AgeEstimate:
    years: float | None  # median; None when unknown
    low: float | None
    high: float | None
    n: int  # faces used
    reason: str = ""  # why unknown: "too_few_faces" / "inconsistent"

    @property
    def known(self) -> bool:
        return self.years is not None


@dataclass(frozen=True)
class LabelEstimate:
    label: str  # a class name, or "unknown"
    confidence: float  # mean probability of the best class (reported even when unknown; 0 with no faces)
    vote_share: float  # share of faces whose own top class is the best class
    n: int
    probabilities: dict[str, float] = field(default_factory=dict)  # mean probability per class
    reason: str = ""  # why unknown: "too_few_faces" / "low_confidence" / "child" (gender only)

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN


@dataclass(frozen=True)
class TrackAttributes:
    track_id: int | None
    n_faces: int  # all observations
    n_used: int  # passed the quality gate
    n_rejected: int
    rejected_reasons: dict[str, int]
    age: AgeEstimate
    gender: LabelEstimate
    emotion: LabelEstimate
    attention_share: float | None  # None when no face had a usable pose
    attention_n: int


def _label(probs: list[np.ndarray], classes: tuple[str, ...], min_faces: int, min_conf: float) -> LabelEstimate:
    n = len(probs)
    if n == 0:
        return LabelEstimate(UNKNOWN, 0.0, 0.0, 0, {}, "too_few_faces")
    p = np.stack(probs).astype(np.float64)
    mean = p.mean(axis=0)
    best = int(mean.argmax())
    conf = float(mean[best])
    share = float((p.argmax(axis=1) == best).mean())
    means = {c: float(v) for c, v in zip(classes, mean)}
    if n < min_faces:
        return LabelEstimate(UNKNOWN, conf, share, n, means, "too_few_faces")
    if conf < min_conf:
        return LabelEstimate(UNKNOWN, conf, share, n, means, "low_confidence")
    return LabelEstimate(classes[best], conf, share, n, means)


def aggregate(
    observations: Iterable[FaceObservation], cfg: AggregationConfig | None = None, track_id: int | None = None
) -> TrackAttributes:
    """Attributes of one track from its face observations (see module docstring)."""
    cfg = cfg or AggregationConfig()
    obs = list(observations)
    used = [o for o in obs if o.quality.ok]
    rejected = Counter(r for o in obs if not o.quality.ok for r in o.quality.reasons)

    ages = np.array([o.age_years for o in used if o.age_years is not None], np.float64)
    if len(ages) < cfg.min_faces:
        age = AgeEstimate(None, None, None, len(ages), "too_few_faces")
    else:
        lo, hi = np.percentile(ages, cfg.age_interval_percentiles)
        if cfg.max_age_interval_years is not None and hi - lo > cfg.max_age_interval_years:
            age = AgeEstimate(None, float(lo), float(hi), len(ages), "inconsistent")
        else:
            age = AgeEstimate(float(np.median(ages)), float(lo), float(hi), len(ages))

    genders = [np.array([1.0 - o.p_male, o.p_male]) for o in used if o.p_male is not None]
    gender = _label(genders, GENDERS, cfg.min_faces, cfg.min_gender_confidence)
    if gender.known and len(ages) and float(np.median(ages)) < cfg.child_below_years:
        gender = replace(gender, label=UNKNOWN, reason="child")
    emotions = [np.asarray(o.emotion_probs, np.float64) for o in used if o.emotion_probs is not None]
    emotion = _label(emotions, EMOTIONS, cfg.min_faces, cfg.min_emotion_confidence)

    att = [o.attending for o in obs if o.attending is not None and o.quality.pose_usable]
    return TrackAttributes(
        track_id=track_id,
        n_faces=len(obs),
        n_used=len(used),
        n_rejected=len(obs) - len(used),
        rejected_reasons=dict(sorted(rejected.items())),
        age=age,
        gender=gender,
        emotion=emotion,
        attention_share=(sum(att) / len(att)) if att else None,
        attention_n=len(att),
    )


class TrackAggregator:
    """Collects observations per track id; :meth:`result` any time, :meth:`pop` when the track ends.

    Example:
        >>> agg = TrackAggregator()
        >>> agg.add(7, FaceObservation(QualityResult(False, ("blurry",), 80.0, 20.0, 0.0, 0.0, 0.0)))
        >>> r = agg.pop(7)
        >>> r.n_rejected, r.rejected_reasons, r.gender.label, 7 in agg
        (1, {'blurry': 1}, 'unknown', False)
    """

    def __init__(self, cfg: AggregationConfig | None = None) -> None:
        self.cfg = cfg or AggregationConfig()
        self._obs: dict[int, deque[FaceObservation]] = {}
        self._seen: Counter[int] = Counter()
        self._rejected: dict[int, Counter[str]] = {}
        self._n_rejected: Counter[int] = Counter()

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._obs

    def track_ids(self) -> list[int]:
        return list(self._obs)

    def add(self, track_id: int, obs: FaceObservation) -> None:
        q = self._obs.setdefault(track_id, deque(maxlen=self.cfg.max_observations))
        q.append(obs)
        # Counts cover the whole track, also observations the bounded window has dropped.
        self._seen[track_id] += 1
        if not obs.quality.ok:
            self._n_rejected[track_id] += 1
            self._rejected.setdefault(track_id, Counter()).update(obs.quality.reasons)

    def result(self, track_id: int) -> TrackAttributes:
        r = aggregate(self._obs.get(track_id, ()), self.cfg, track_id)
        return TrackAttributes(
            track_id=track_id,
            n_faces=self._seen[track_id],
            n_used=self._seen[track_id] - self._n_rejected[track_id],
            n_rejected=self._n_rejected[track_id],
            rejected_reasons=dict(sorted(self._rejected.get(track_id, Counter()).items())),
            age=r.age,
            gender=r.gender,
            emotion=r.emotion,
            attention_share=r.attention_share,
            attention_n=r.attention_n,
        )

    def evidence(self, track_id: int) -> tuple:
        """The track's evidence as it stands (observations and counts), for :meth:`restore`."""
        return (self._obs.get(track_id, deque(maxlen=self.cfg.max_observations)), self._seen[track_id],
                self._rejected.get(track_id, Counter()), self._n_rejected[track_id])

    def restore(self, track_id: int, evidence: tuple) -> None:
        """Continue a track with the :meth:`evidence` it had (a track that ended, then came back).

        >>> agg = TrackAggregator()
        >>> blurry = FaceObservation(QualityResult(False, ("blurry",), 80.0, 20.0, 0.0, 0.0, 0.0))
        >>> agg.add(7, blurry)
        >>> kept = agg.evidence(7); _ = agg.pop(7)
        >>> agg.restore(7, kept); agg.add(7, blurry)
        >>> agg.result(7).n_faces
        2
        """
        self._obs[track_id], self._seen[track_id], rejected, self._n_rejected[track_id] = evidence
        if rejected:
            self._rejected[track_id] = rejected

    def pop(self, track_id: int) -> TrackAttributes:
        r = self.result(track_id)
        self._obs.pop(track_id, None)
        self._seen.pop(track_id, None)
        self._rejected.pop(track_id, None)
        self._n_rejected.pop(track_id, None)
        return r


def assign_faces_to_tracks(
    face_boxes: np.ndarray, person_boxes: np.ndarray, head_fraction: float = 0.4
) -> np.ndarray:
    """For each face, the index of the person box it belongs to, or -1.

    A face belongs to a person when its centre lies inside the person box and
    within the box's top ``head_fraction``. Pairs are taken greedily, the
    face closest to its person box's vertical centre line first (then the
    higher face), and each face and each person is used at most once.

    Example:
        >>> assign_faces_to_tracks(np.array([[40, 10, 60, 35.]]), np.array([[0, 0, 100, 200.], [200, 0, 300, 200]]))
        array([0])
    """
    faces = np.asarray(face_boxes, np.float64).reshape(-1, 4)
    people = np.asarray(person_boxes, np.float64).reshape(-1, 4)
    out = np.full(len(faces), -1, np.int64)
    if len(faces) == 0 or len(people) == 0:
        return out
    fc = np.stack([(faces[:, 0] + faces[:, 2]) / 2, (faces[:, 1] + faces[:, 3]) / 2], axis=1)
    pairs = []
    for i, (x, y) in enumerate(fc):
        for j, (x0, y0, x1, y1) in enumerate(people):
            if x0 <= x <= x1 and y0 <= y <= y0 + head_fraction * (y1 - y0):
                rel_y = (y - y0) / max(y1 - y0, 1e-9)
                pairs.append((abs(x - (x0 + x1) / 2) / max(x1 - x0, 1e-9), rel_y, i, j))
    taken_f, taken_p = set(), set()
    for _, _, i, j in sorted(pairs):
        if i not in taken_f and j not in taken_p:
            out[i] = j
            taken_f.add(i)
            taken_p.add(j)
    return out


def consistent_faces(embeddings: np.ndarray, min_similarity: float) -> np.ndarray | None:
    """The faces of a track that show one person: indices of the rows of unit ``embeddings`` at least
    ``min_similarity`` (cosine) to the track's medoid (the row most similar to all others), or ``None``
    when they are not more than half of the rows (an id switch inside the track, or no face agreeing with
    another: nobody can tell whose track it is).

    Example:
        >>> a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        >>> consistent_faces(np.stack([a, a, b]), 0.9).tolist(), consistent_faces(np.stack([a, b]), 0.9)
        ([0, 1], None)
    """
    x = np.asarray(embeddings, np.float64).reshape(len(embeddings), -1)
    if len(x) <= 1:
        return np.arange(len(x))
    sims = x @ x.T
    medoid = int(np.argmax(sims.sum(axis=1)))
    keep = np.flatnonzero(sims[medoid] >= min_similarity)
    keep = np.union1d(keep, [medoid])
    return keep if 2 * len(keep) > len(x) else None
