"""The uniform cue of staff recognition: a colour model of the torso on person crops (``staff.uniform``).

One backend per settings class of :class:`~storelens.config.groups.UniformCueConfig`, chosen by
``staff.uniform.backend`` (registry :data:`UNIFORM_CUES`):

* ``hsv_torso`` (default): :class:`HsvTorsoUniform`: the share of the torso's pixels (a box
  region, ``torso_y`` x ``torso_x``) within the tolerances of a reference colour in OpenCV HSV
  (H 0-179, circular; S, V 0-255). A crop is staff when the best colour's share reaches
  ``min_share``. Configured per store: the reference colours are the store's uniform, the
  share threshold is set on labelled crops of the store's own cameras (``bench/staff_uniform.py``).

A track becomes staff from several crops (:class:`~storelens.domain.staff.UniformVotes`).

Example:
    >>> import numpy as np
    >>> from storelens.config.groups import UniformCueConfig
    >>> cue = build_uniform_cue(UniformCueConfig.model_validate(
    ...     {"colours": [{"name": "red", "hsv": [0, 220, 200]}], "min_share": 0.5}))
    >>> person = np.full((120, 40, 3), 90, np.uint8); person[20:70, :] = (20, 20, 210)  # a red shirt (BGR)
    >>> j = cue.judge(person); (j.judged, j.staff, j.colour, round(j.share, 2))
    (True, True, 'red', 1.0)
    >>> cue.judge(np.full((120, 40, 3), 90, np.uint8)).staff
    False
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from storelens.backends.registry import Registry
from storelens.config.groups import HsvTorsoUniformConfig, UniformCueConfig
from storelens.errors import ModelError

UNIFORM_CUES: Registry["UniformCue"] = Registry(UniformCueConfig, "staff.uniform.backend")


@dataclass(frozen=True)
class UniformJudgement:
    """One crop: whether it was judged (big enough), is staff, the best colour's share and name."""

    judged: bool
    staff: bool
    share: float
    colour: str | None


class UniformCue(Protocol):
    cfg: UniformCueConfig

    def judge(self, crop_bgr: np.ndarray) -> UniformJudgement:
        """A person crop (BGR, the box's pixels) -> judgement."""
        ...


def crop_box(frame_bgr: np.ndarray, bbox_xyxy: tuple[float, float, float, float]) -> np.ndarray:
    """The pixels of a box, clipped to the frame (possibly empty)."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in bbox_xyxy)
    return frame_bgr[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]


@UNIFORM_CUES.register("hsv_torso")
class HsvTorsoUniform:
    """Share of torso pixels near a reference HSV colour (see the module docstring)."""

    def __init__(self, cfg: HsvTorsoUniformConfig) -> None:
        self.cfg = cfg
        self._ref = np.array([c.hsv for c in cfg.colours], np.int32)
        self._tol = np.array([[c.hue_tol, c.sat_tol, c.val_tol] for c in cfg.colours], np.int32)

    def torso(self, crop_bgr: np.ndarray) -> np.ndarray:
        h, w = crop_bgr.shape[:2]
        (y0, y1), (x0, x1) = self.cfg.torso_y, self.cfg.torso_x
        return crop_bgr[int(h * y0):max(int(h * y1), int(h * y0) + 1), int(w * x0):max(int(w * x1), int(w * x0) + 1)]

    def shares(self, crop_bgr: np.ndarray) -> np.ndarray:
        """Share of the torso's pixels matching each reference colour (in ``colours`` order)."""
        if crop_bgr.ndim != 3 or crop_bgr.shape[2] != 3 or crop_bgr.dtype != np.uint8:
            raise ModelError(f"uniform cue: expected a BGR uint8 crop (H, W, 3), got {crop_bgr.dtype} "
                             f"{crop_bgr.shape}")
        torso = self.torso(crop_bgr)
        if torso.size == 0:
            return np.zeros(len(self._ref))
        hsv = cv2.cvtColor(np.ascontiguousarray(torso), cv2.COLOR_BGR2HSV).reshape(-1, 1, 3).astype(np.int32)
        d = np.abs(hsv - self._ref[None])
        d[..., 0] = np.minimum(d[..., 0], 180 - d[..., 0])  # hue is circular
        return (d <= self._tol[None]).all(axis=2).mean(axis=0)

    def judge(self, crop_bgr: np.ndarray) -> UniformJudgement:
        if crop_bgr.shape[0] < self.cfg.min_height_px:
            return UniformJudgement(False, False, 0.0, None)
        shares = self.shares(crop_bgr)
        best = int(np.argmax(shares))
        share = float(shares[best])
        return UniformJudgement(True, share >= self.cfg.min_share, share, self.cfg.colours[best].name)


def build_uniform_cue(cfg: UniformCueConfig) -> UniformCue:
    """The uniform cue ``cfg.backend`` names."""
    return UNIFORM_CUES.build(cfg)
