"""Site-file sections for buying units (``groups:``) and staff exclusion (``staff:``).

Both are strict models with defaults, so a site file without them keeps working.
(Owners: groups -> :mod:`storelens.domain.groups`; staff -> :mod:`storelens.domain.staff`
and the uniform colour backend :mod:`storelens.backends.uniform`.)

Example:
    >>> GroupsConfig().window_ms, GroupsConfig().together_frames
    (2000, 8)
    >>> StaffConfig.model_validate({"uniform": {"colours": [{"name": "red", "hsv": [0, 200, 160]}]}}).uniform.min_share
    0.35
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, SerializeAsAny, model_validator

from storelens.config.base import BackendConfig, Strict


class GroupsConfig(Strict):
    """The ``groups:`` section: people who cross the same line in the same direction together are one buying unit.

    Two crossings of one line, same direction, at most ``window_ms`` apart, link when the two
    tracks were *together* in at least ``together_frames`` of the last ``history_frames`` frames
    before the later crossing. Together in a frame: the distance of their anchors (box bottom
    centres) is at most ``max_gap_heights`` times their mean box height, and the taller box is at
    most ``max_height_ratio`` times the shorter one (about the same distance from the camera).
    Linked crossings form a group (transitively); a person crossing alone is a unit of one.
    """

    enabled: bool = True
    window_ms: Annotated[int, Field(ge=0, le=60_000)] = 2000
    max_gap_heights: Annotated[float, Field(gt=0, le=10)] = 1.0
    max_height_ratio: Annotated[float, Field(ge=1, le=10)] = 1.4
    together_frames: Annotated[int, Field(ge=1, le=10_000)] = 8
    history_frames: Annotated[int, Field(ge=1, le=10_000)] = 50

    @model_validator(mode="after")
    def _history_holds_n(self) -> "GroupsConfig":
        if self.history_frames < self.together_frames:
            raise ValueError(f"history_frames ({self.history_frames}) must be >= together_frames "
                             f"({self.together_frames})")
        return self


class UniformColour(Strict):
    """A reference colour of the staff uniform: OpenCV HSV (H 0-179, S and V 0-255) with tolerances."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    hsv: tuple[Annotated[int, Field(ge=0, le=179)], Annotated[int, Field(ge=0, le=255)],
               Annotated[int, Field(ge=0, le=255)]]
    #: Hue distance (circular, 0-90) and saturation / value distance a pixel may have and still match.
    hue_tol: Annotated[int, Field(ge=0, le=90)] = 12
    sat_tol: Annotated[int, Field(ge=0, le=255)] = 90
    val_tol: Annotated[int, Field(ge=0, le=255)] = 110


class UniformCueConfig(BackendConfig):
    """The ``staff.uniform`` section: a colour model of the staff uniform on person crops, one settings class
    per backend (``backend``, default ``hsv_torso``: :class:`HsvTorsoUniformConfig`).

    Common to every backend: detect-track judges a crop of each track every ``judge_every_n_frames``
    frames; a track is staff when at least ``min_crops`` of its judged crops are, and at least
    ``min_crop_fraction`` of them; crops of boxes lower than ``min_height_px`` (pixels of the frame as
    detect-track decodes it, i.e. after ``resize_width``) are not judged.
    """

    default_backend: ClassVar[str] = "hsv_torso"
    min_crops: Annotated[int, Field(ge=1)] = 3
    min_crop_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    min_height_px: Annotated[int, Field(ge=8)] = 60
    #: detect-track judges each track's crop at most every this many of the camera's frames.
    judge_every_n_frames: Annotated[int, Field(ge=1)] = 5


class HsvTorsoUniformConfig(UniformCueConfig):
    """``backend: hsv_torso``: the share of torso pixels near any reference colour in OpenCV HSV.

    The torso is the box region ``torso_y`` (fractions of the box height from the top) by
    ``torso_x`` (fractions of its width); a crop is staff when at least ``min_share`` of its torso
    pixels match one of ``colours`` (the best one names the match).
    """

    backend: Literal["hsv_torso"] = "hsv_torso"
    colours: Annotated[list[UniformColour], Field(min_length=1)]
    torso_y: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = (0.2, 0.5)
    torso_x: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = (0.25, 0.75)
    min_share: Annotated[float, Field(gt=0, le=1)] = 0.35

    @model_validator(mode="after")
    def _ranges(self) -> "HsvTorsoUniformConfig":
        for name in ("torso_y", "torso_x"):
            lo, hi = getattr(self, name)
            if lo >= hi:
                raise ValueError(f"{name}: the start ({lo}) must be below the end ({hi})")
        return self


class StaffFacesConfig(Strict):
    """The ``staff.faces`` section: the opt-in staff face gallery (``storelens staff enroll``, consent recorded).

    The reid stage compares each track's face embedding (the mean of its first
    ``faces.reid.faces_per_decision`` good faces) with every enrolled staff embedding of the
    configured ``faces.embedder`` *before* the customers' gallery: at a cosine similarity of at
    least ``min_similarity`` the track is staff (a ``StaffTrack`` with cue ``face``, the staff id
    as its detail) and is neither matched nor enrolled as a customer. The staff embeddings are
    read at the stage's start and again every ``reload_s`` seconds, so an enrolment or removal
    takes effect without a restart.

    ``min_similarity`` 0.93: bench/staff_faces.py (dlib embeddings, faces/identities enrolled,
    identities_test + 1000 UTKFace probes) gives precision and recall 1.0 from 0.92 to 0.95 (genuine
    probes >= 0.954, strangers <= 0.918); 0.93 lies between them (BENCHMARKS.md "Staff face cue").

    >>> StaffFacesConfig().min_similarity, StaffFacesConfig().reload_s
    (0.93, 30.0)
    """

    enabled: bool = True
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.93
    reload_s: Annotated[float, Field(gt=0)] = 30.0


class StaffConfig(Strict):
    """The ``staff:`` section: who counts as staff (excluded from visitors, counted as ``staff_in``).

    * ``zones``: a track seen inside a ``staff_only`` zone is staff (for its whole track: the
      KPIs exclude its crossings of that business day, before and after).
    * ``uniform``: the torso colour cue (:class:`UniformCueConfig`), off unless configured.
    * ``faces``: the opt-in staff face gallery (:class:`StaffFacesConfig`, needs ``faces.enabled``
      in the embedded mode, or the reid service), off unless configured.
    """

    zones: bool = True
    uniform: SerializeAsAny[UniformCueConfig] | None = None
    faces: StaffFacesConfig | None = None
