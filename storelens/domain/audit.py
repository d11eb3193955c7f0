"""Counting accuracy audit: a person's tally of sampled clips against the system's counts.

Each clip is a few seconds of video around one sampled line crossing. In it the system
counted ``system_in`` / ``system_out`` crossings of that line; the person tallies
``person_in`` / ``person_out``. A clip is *correct* when both agree exactly.

* ``accuracy`` = correct clips / clips, with a **Wilson score interval** (:func:`wilson_interval`;
  clips are independent Bernoulli trials; Wilson keeps its coverage for small samples and
  accuracies near 1, where the normal interval collapses to a point);
* ``count_accuracy`` = 1 - (|system_in - person_in| + |system_out - person_out|) summed over the
  clips / the person's total (0 at worst): how far the totals are off, the usual figure of
  commercial counters.

Example:
    >>> s = summarise([ClipTally("c1", 1, 0, 1, 0), ClipTally("c2", 1, 0, 0, 0), ClipTally("c3", 0, 1, 0, 1)])
    >>> s.n_correct, round(s.accuracy, 3), [round(v, 3) for v in (s.ci_low, s.ci_high)]
    (2, 0.667, [0.208, 0.939])
    >>> parse_answers("clip_id,in,out\\nc1,1,0\\n")
    {'c1': (1, 0)}
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from storelens.errors import ConfigError

#: How the interval is computed (stored with each audit).
INTERVAL_METHOD = "wilson"


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` at ``confidence``.

    Example:
        >>> [round(v, 4) for v in wilson_interval(9, 10)]
        [0.5958, 0.9821]
    """
    if n <= 0 or not 0 <= k <= n:
        raise ConfigError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ClipTally:
    clip_id: str
    system_in: int
    system_out: int
    person_in: int
    person_out: int

    @property
    def correct(self) -> bool:
        return self.system_in == self.person_in and self.system_out == self.person_out


@dataclass(frozen=True)
class AuditSummary:
    n_clips: int
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float
    count_accuracy: float
    system_in: int
    system_out: int
    person_in: int
    person_out: int
    method: str = INTERVAL_METHOD


def summarise(clips: Sequence[ClipTally], confidence: float = 0.95) -> AuditSummary:
    """The audit's accuracy, Wilson interval and totals over ``clips`` (at least one)."""
    if not clips:
        raise ConfigError("the audit has no answered clips")
    k = sum(c.correct for c in clips)
    lo, hi = wilson_interval(k, len(clips), confidence)
    s_in, s_out = sum(c.system_in for c in clips), sum(c.system_out for c in clips)
    p_in, p_out = sum(c.person_in for c in clips), sum(c.person_out for c in clips)
    err = sum(abs(c.system_in - c.person_in) + abs(c.system_out - c.person_out) for c in clips)
    total = p_in + p_out
    count_acc = max(0.0, 1 - err / total) if total else (1.0 if err == 0 else 0.0)
    return AuditSummary(len(clips), k, k / len(clips), lo, hi, confidence, count_acc, s_in, s_out, p_in, p_out)


def parse_answers(text: str) -> dict[str, tuple[int, int]]:
    """``{clip_id: (in, out)}`` from a CSV ``clip_id,in,out`` (header optional); clear errors."""
    out: dict[str, tuple[int, int]] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and row[0].strip().lower() in ("clip_id", "clip", "id"):
            continue
        if len(row) != 3:
            raise ConfigError(f"answers line {lineno}: expected 3 columns clip_id,in,out, got {len(row)}")
        clip, a, b = (v.strip() for v in row)
        try:
            n_in, n_out = int(a), int(b)
        except ValueError:
            raise ConfigError(f"answers line {lineno}: in and out must be whole numbers: {row}") from None
        if n_in < 0 or n_out < 0:
            raise ConfigError(f"answers line {lineno}: negative count: {row}")
        if clip in out:
            raise ConfigError(f"answers line {lineno}: clip {clip!r} answered twice")
        out[clip] = (n_in, n_out)
    return out
