"""The ``audit:`` section of the site file: the counting accuracy audit (``storelens audit``).

A person tallies ins and outs in short clips around sampled line crossings; the measured
accuracy (share of clips where the system's counts equal the person's tally) below
``min_accuracy`` raises an alert of kind ``count_accuracy``.

Example:
    >>> AuditConfig().min_accuracy, AuditConfig(min_accuracy=0.8, clips=10).clips
    (0.9, 10)
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from storelens.config.base import Strict


class AuditConfig(Strict):
    #: Measured accuracy below this raises a ``count_accuracy`` alert.
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.9
    #: Crossings sampled per audit.
    clips: Annotated[int, Field(ge=1, le=1000)] = 20
    #: Seconds of video before and after each sampled crossing.
    clip_before_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    clip_after_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    #: Confidence level of the Wilson score interval.
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    severity: Literal["info", "warning", "critical"] = "warning"
