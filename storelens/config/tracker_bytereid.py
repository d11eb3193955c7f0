"""Settings of the ``bytereid`` tracker and of the Open Model Zoo person re-id embedder.

* :class:`ByteReidTrackerConfig` (``tracker: {backend: bytereid}``, the default tracker):
  BYTE two-stage association + Kalman motion (Ultralytics' BoT-SORT code) with
  appearance from a person re-identification model
  (:mod:`storelens.backends.trackers.bytereid`). One parameter set for every
  camera, chosen on all visible sequences at once (BENCHMARKS.md). The detector
  must deliver detections down to ``track_low_thresh``
  (``detector.confidence`` <= ``track_low_thresh``) for the second stage to see them:
  a site file that does not set ``detector.confidence`` gets ``track_low_thresh``
  (:class:`storelens.config.site.SiteConfig`); a higher one it sets is kept.
* :class:`OmzReidEmbedderConfig` (``omz-reid-openvino``): the re-id model as an
  appearance embedder (:mod:`storelens.backends.appearance.omz_reid_openvino`),
  also selectable by the deep-sort tracker (``tracker.embedder``).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from storelens.config.base import OptionalEnvStr, Precision
from storelens.config.trackers import AppearanceEmbedderConfig, TrackerConfig

Unit = Annotated[float, Field(ge=0, le=1)]


class OmzReidEmbedderConfig(AppearanceEmbedderConfig):
    """Intel Open Model Zoo ``person-reidentification-retail-0288`` (or ``-0287``) run by OpenVINO."""

    backend: Literal["omz-reid-openvino"] = "omz-reid-openvino"
    #: The IR's ``.xml``; ``None``: 0288 FP16 from the shared assets.
    weights: OptionalEnvStr = None
    device: str = "cpu"
    #: OpenVINO inference precision. ``f32`` (the default): a crop's embedding is the same, within 2e-6, alone
    #: or in a batch of any size and on every CPU; ``default``: the CPU's own, bf16 where it has it (faster per
    #: crop, but a crop's embedding then moves by up to ~5e-3 with the batch size it is padded to).
    precision: Precision = "f32"
    #: OpenVINO threads (``None``: OpenVINO's choice, all cores). 2 by default: the re-id inference runs
    #: between two detector inferences, so a second core is free then; on a 2-core AVX2 CPU it cut the
    #: re-id time of a TUD-Stadtmitte frame from 15.6 to 11.5 ms, with the same tracks on every
    #: visible sequence (BENCHMARKS.md, tracking speed, 2026-12-04).
    threads: Annotated[int | None, Field(ge=1)] = 2


class ByteReidTrackerConfig(TrackerConfig):
    """BYTE + Kalman + person re-id (``backend: bytereid``)."""

    backend: Literal["bytereid"] = "bytereid"
    #: Detections at or above this score are "confident": they are matched first
    #: (IoU + appearance), may start tracks, are published and cropped.
    track_high_thresh: Unit = 0.3
    #: Detections in [low, high) only keep existing tracks alive (second, IoU-only
    #: stage); they never start a track and are never published. A site file's unset
    #: ``detector.confidence`` is this value (a higher one set there is kept,
    #: and this stage then sees nothing below it).
    track_low_thresh: Unit = 0.1
    #: A confident detection left unmatched starts a track only from this score.
    new_track_thresh: Unit = 0.45
    #: Frames a lost track stays re-findable (by motion or appearance), counted at ``fps``: 60 at 25 fps
    #: is 2.4 s, and a camera whose frames come at another rate (``target_fps: 5``, a 10 fps stream)
    #: keeps it for the same 2.4 s (12 frames at 5 fps).
    track_buffer: Annotated[int, Field(ge=1)] = 60
    #: First-stage gate on the fused cost (1 - IoU * score, or the appearance cost).
    match_thresh: Unit = 0.8
    #: Appearance may replace IoU only for pairs with at least this IoU (at ``fps``; see the next setting).
    proximity_thresh: Unit = 0.5
    #: Slower frames, wider gate: people move further between frames, so a person's box overlaps their track's
    #: prediction less. Below ``fps`` the gate becomes the IoU of the same prediction error grown with the
    #: square root of the frame interval (:func:`~storelens.backends.trackers.bytereid.proximity_gate`: 0.5 at
    #: 25 fps is 0.36 at 12.5, 0.27 at 8.3 and 0.15 at 5 fps); never narrower than ``proximity_thresh``.
    #: At 5 fps this lifts the four long sequences' mean IDF1 from 0.546 to 0.603 (five frame phases,
    #: ``bench/tracker_sweep.py --step 5``, BENCHMARKS.md). ``False``: the same gate at every rate.
    proximity_follows_frame_rate: bool = True
    #: First-stage appearance gate, in Ultralytics' BoT-SORT units: a pair's appearance cost is half its cosine
    #: distance, ``(1 - cos) / 2``, and counts (instead of the IoU cost, if lower) only up to
    #: ``1 - appearance_thresh``, i.e. for a cosine similarity of at least ``2 * appearance_thresh - 1``
    #: (0.2 at 0.6; Ultralytics' own default 0.8 is 0.6). 0.7-0.8 were measured and not kept (BENCHMARKS.md,
    #: "Issue 9, eighth pass").
    appearance_thresh: Unit = 0.6
    #: ... and only when no other detection within the IoU gate of the same track looks more like it by more
    #: than this (cosine similarity): a track whose own person is visible beside it does not take a neighbour's
    #: box on a weak likeness (:func:`~storelens.backends.trackers.bytereid.appearance_margin_mask`). Tracking
    #: every 5th frame (five phases), the four long sequences' ID switches fall from 51 to 34 and their mean IDF1
    #: rises from 0.603 to 0.613 (at half and a third of the size: no phase lower, 50 -> 28 and 40 -> 18 ID
    #: switches); every frame, the same tracks. 0.3 scores within 0.001 of 0.25; 0.2 and 0.35 each lose one phase
    #: (BENCHMARKS.md, "Issue 9, ninth pass"). ``None``: no such test.
    appearance_margin: Annotated[float, Field(ge=0, le=2)] | None = 0.25
    #: Re-activation after a loss: a lost track takes an unmatched confident detection
    #: whose cosine similarity to the track's appearance is at least this ...
    reactivate_similarity: Unit = 0.5
    #: ... and whose centre is within this many box heights of the track's predicted
    #: centre, plus the same again per second lost (at ``fps``).
    reactivate_radius_heights: Annotated[float, Field(ge=0)] = 1.5
    #: Frame rate ``track_buffer`` is counted at. The detect-track stage measures each camera's real rate
    #: from its frames' timestamps, and the buffer and the radius growth follow it.
    fps: Annotated[float, Field(gt=0)] = 25.0
    #: Lazy appearance: a confident detection overlapping exactly one live track
    #: (IoU >= ``appearance_skip_iou``) and no other reuses that track's appearance for
    #: at most this many frames in a row; new, crowded and ambiguous ones are always
    #: embedded. 0 embeds every confident detection. 10 scores as 5 to 25 do on every visible sequence
    #: (without the JPEG hop, ``pipeline.frames: bgr``, 25 loses IDF1 on one; ``bench/tracker_sweep.py``,
    #: BENCHMARKS.md); each crop not embedded saves ~4 ms of CPU (f32 re-id).
    appearance_refresh_frames: Annotated[int, Field(ge=0)] = 10
    appearance_skip_iou: Unit = 0.6
    #: The re-id model (see :class:`OmzReidEmbedderConfig`).
    reid_weights: OptionalEnvStr = None
    reid_device: str = "cpu"
    reid_precision: Precision = "f32"
    #: The re-id model's OpenVINO threads (:attr:`OmzReidEmbedderConfig.threads`).
    reid_threads: Annotated[int | None, Field(ge=1)] = 2

    @property
    def refind_ms(self) -> int:
        """How long a lost track stays re-findable: ``track_buffer`` frames at ``fps`` (2400 ms by default), the
        same time at any camera frame rate; an unset ``zones.lost_after_ms`` follows it."""
        return round(self.track_buffer / self.fps * 1000)

    @property
    def appearance(self) -> OmzReidEmbedderConfig:
        """The embedder's own settings: its field ``x`` comes from ``reid_x`` here."""
        return OmzReidEmbedderConfig(weights=self.reid_weights, device=self.reid_device,
                                     precision=self.reid_precision, threads=self.reid_threads)
