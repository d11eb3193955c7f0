"""The faces stages as message-in / messages-out processors (embedded pipeline and services).

* :class:`CropFaceFinder`: a person crop -> the face of *that* person (the best
  face in the head region of the crop), in source-frame pixels.
* :class:`AttributesStage`: ``PersonCrop`` -> ``FaceObservation`` (per face, gate
  verdict, age/gender/emotion/attention) and ``TrackAttributes`` (per-track
  aggregate, re-published as evidence grows, ``final`` when the track ends).
* :class:`ReidStage`: ``PersonCrop`` -> ``CustomerMatch``: the embeddings of a
  track's first ``faces_per_decision`` good faces are averaged and matched
  against the FAISS gallery once per track (new customer below the threshold);
  faces not at least ``faces.reid.min_face_agreement`` similar to the track's
  medoid face are left out of the average, and the gallery never learns from
  such a track; when they are half or more of its faces (an id switch inside
  the track) or the gallery abstains (``faces.gallery.match_margin``), the track
  gets no decision at all;
  with ``staff.faces`` the average is first compared with the enrolled staff
  embeddings: a staff member's track becomes a ``StaffTrack`` (cue ``face``) and
  no customer;
  every later crop of the track extends the customer's visit. ``CustomerErasure``
  removes a customer from the gallery (index, embeddings, visits).

Tracks end when their camera's stream ends (``PersonCrop.end_of_stream``; also when the embedded
run stops while the camera still streams: :meth:`FacesStage.end_streams`) or
when no crop of them arrived for ``faces.reid.track_idle_s`` of camera time, or 3 crop intervals of their camera
if longer (:meth:`~storelens.config.SiteConfig.face_track_idle_s`: a camera sampled at 1 fps crops a track every
10 s; a shorter idle time would decide each of its tracks on one face)
(any crop counts, with or without a face: a shopper who turns away keeps the
track open and gets one ``final`` summary, at the real end). A track that
comes back after such an idle end keeps its reid decision (the same customer
or staff member, or none at all when it was left undecided or its person
erased: no second decision or enrolment; the last
:data:`CLOSED_TRACK_DECISIONS` idle-ended tracks are remembered in memory, and every decision in the gallery's
store, with the gallery's retention: a restarted reid stage looks a track up there before it decides it, so a
track is decided once and a track of an erased customer never again, until its camera's stream ends (or, in
the embedded mode, whose runs start each camera's tracker session afresh, a run starts the camera: the decisions a
killed run left are of an earlier session's tracks, but its ``erased`` ones, :meth:`ReidStage.start_session`); the
store also keeps the ``CustomerMatch`` / ``StaffTrack`` published for the decision, which the restarted stage publishes
once more, unchanged (the decision is stored before the runner publishes it: a process that stopped in between
never published it; a second copy, the same ``event_id``, changes nothing downstream)), and its
attribute summary goes on from the evidence of its first part (the last
:data:`CLOSED_TRACK_ATTRIBUTES` idle-ended tracks are remembered): the stored
summary covers both parts.
Redelivered crops (a ``(seq, track_id)`` already processed) are skipped.

No face image leaves these stages: observations carry boxes, landmarks and
model outputs; the gallery keeps embeddings only.

Example (real models; see tests/test_faces_pipeline.py):
    >>> stage = AttributesStage(config)                      # doctest: +SKIP
    >>> out = stage.process(crop)                            # doctest: +SKIP
    >>> out.observations[0].accepted, out.summaries[0].n_faces   # doctest: +SKIP
    (True, 1)
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
import numpy as np

from storelens.contract import messages as m
from storelens.config import SiteConfig
from storelens.errors import ConfigError, DecodeError
from storelens.domain.face_aggregate import TrackAggregator, assign_faces_to_tracks, consistent_faces
from storelens.domain.face_aggregate import TrackAttributes as AggTrackAttributes
from storelens.domain.purge_clock import CLOCK_AHEAD, host_clamped_ms
from storelens.backends.face_detectors import Faces
from storelens.contract import topics
from storelens.stages.base import Outputs, Publish, UnknownCamera, decode_input
from storelens.stages.site_cameras import SiteCameras, decode_site_input

log = logging.getLogger(__name__)

#: A face belongs to the crop's person when its centre lies in this top share of the crop.
HEAD_REGION = 0.5
_HOUR_MS = 3_600_000
#: How many idle-ended tracks' reid decisions (ids only, no embeddings: a few hundred bytes each) a stage keeps, so a
#: track that comes back after a gap keeps its decision; the least recently ended are forgotten first. Far more
#: than the tracks a store's cameras end within a track's possible gap (a tracker's lost-track buffer).
CLOSED_TRACK_DECISIONS = 10_000
#: How many idle-ended tracks' attribute evidence (model outputs, at most ``faces.aggregation.max_observations``
#: faces each; no image) the attributes stage keeps, so a track that comes back goes on with its summary; the
#: least recently ended are forgotten first.
CLOSED_TRACK_ATTRIBUTES = 1_000


def decode_crop(crop: m.PersonCrop) -> np.ndarray:
    """The crop's BGR image; :class:`DecodeError` when it is not a JPEG."""
    import cv2

    if not crop.jpeg:
        raise DecodeError("person crop carries no image")
    img = cv2.imdecode(np.frombuffer(crop.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DecodeError(f"person crop of track {crop.track_id} is not a decodable JPEG ({len(crop.jpeg)} bytes)")
    return img


@dataclass(frozen=True)
class DecodedCrop:
    """A person crop and its decoded image (``None`` for end-of-stream markers)."""

    crop: m.PersonCrop
    image: np.ndarray | None


def decode_crop_input(stage, topic: str, value: bytes) -> DecodedCrop:
    """Stage-contract decode of ``person-crops``: protobuf, camera check and JPEG, so a corrupt
    crop is a dead letter before the stage's redelivery check ever sees it."""
    crop = decode_input(stage, topic, value)
    return DecodedCrop(crop, None if crop.end_of_stream else decode_crop(crop))


def decode_site_crop_input(stage, topic: str, value: bytes, site: SiteCameras):
    """:func:`decode_crop_input` that also takes ``site-config`` (a ``SiteUpdate``) and lets through, undecoded,
    the crops of a camera a site version removed (the stage drops them)."""
    msg = decode_site_input(stage, topic, value, site)
    if topic == topics.SITE_CONFIG:
        return msg
    return DecodedCrop(msg, None if msg.end_of_stream or site.gone(msg.camera_id) else decode_crop(msg))


def select_person_face(faces: Faces, crop_hw: tuple[int, int], head_region: float = HEAD_REGION) -> Faces:
    """The face of the crop's person: centre in the head region, then the one nearest the crop's vertical
    centre line (then the higher one): :func:`~storelens.domain.face_aggregate.assign_faces_to_tracks`'
    rule with the crop as the person box, so a bystander's face at the crop's edge, however large, loses to
    the person's own. Empty if none.

    >>> f = Faces(np.array([[10, 10, 50, 50], [10, 300, 40, 330], [60, 0, 140, 90]], np.float32),
    ...           np.zeros((3, 5, 2), np.float32), np.array([0.9, 0.95, 0.95], np.float32))
    >>> select_person_face(f, (400, 100)).bbox_xyxy.tolist()
    [[10.0, 10.0, 50.0, 50.0]]
    """
    if len(faces) == 0:
        return faces
    h, w = crop_hw
    owner = assign_faces_to_tracks(faces.bbox_xyxy, np.array([[0, 0, w, h]], np.float64), head_region)
    mine = np.flatnonzero(owner == 0)
    return faces[int(mine[0])] if len(mine) else Faces.empty()


def idle_ms(site: SiteCameras, camera_id: str) -> int:
    """How long a track of ``camera_id`` may go without a crop (camera time, ms) under the site version in force
    (:meth:`~storelens.config.SiteConfig.face_track_idle_s`)."""
    return int(site.config.face_track_idle_s(camera_id) * 1000)


def crop_to_frame(crop: m.PersonCrop, img_hw: tuple[int, int]) -> tuple[float, float, float]:
    """``(scale, dx, dy)`` mapping crop-image pixels to source-frame pixels (the crop's box is the region its image
    shows: the track's box clipped to the frame, as detect-track cuts it)."""
    b = crop.bbox_xyxy
    w = max(1e-6, b.x2 - b.x1)
    return w / max(1, img_hw[1]), b.x1, b.y1


class CropFaceFinder:
    """Face detection on person crops (any :class:`~storelens.backends.face_detectors.FaceDetector`)."""

    def __init__(self, detector) -> None:
        self.detector = detector

    def find(self, image_bgr: np.ndarray) -> Faces:
        """The crop person's face (0 or 1) in crop pixels."""
        return select_person_face(self.detector.detect(image_bgr), image_bgr.shape[:2])


class _Dedupe:
    """Per camera: crops are processed in seq order; a (seq, track) seen before is a redelivery."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, set[int]]] = {}

    def seen(self, crop: m.PersonCrop, mark: bool = True) -> bool:
        """Whether ``crop`` is a redelivery; if not, it is marked seen (unless ``mark`` is False: only a look)."""
        seq, tracks = self._last.get(crop.camera_id, (-1, set()))
        key = -1 if crop.end_of_stream else crop.track_id
        if crop.seq < seq or (crop.seq == seq and key in tracks):
            return True
        if not mark:
            return False
        if crop.seq > seq:
            self._last[crop.camera_id] = (crop.seq, {key})
        else:
            tracks.add(key)
        return False


@dataclass
class _TrackSpan:
    first_ts_ms: int
    last_ts_ms: int
    last_seq: int


@dataclass
class AttributesOutput:
    observations: list[m.FaceObservation] = field(default_factory=list)
    summaries: list[m.TrackAttributes] = field(default_factory=list)
    duplicate: bool = False


def summary_message(camera_id: str, r: AggTrackAttributes, span: _TrackSpan, final: bool) -> m.TrackAttributes:
    """The wire form of an aggregate."""
    msg = m.TrackAttributes(
        camera_id=camera_id, track_id=int(r.track_id or 0), first_ts_ms=span.first_ts_ms,
        last_ts_ms=span.last_ts_ms, last_seq=span.last_seq, n_faces=r.n_faces, n_used=r.n_used,
        n_rejected=r.n_rejected, age_unknown_reason=r.age.reason, gender=m.gender_value(r.gender.label),
        gender_confidence=r.gender.confidence, emotion=m.emotion_value(r.emotion.label),
        emotion_confidence=r.emotion.confidence, attention_n=r.attention_n, final=final)
    for k, v in r.rejected_reasons.items():
        msg.rejected_reasons[k] = int(v)
    for k, v in r.emotion.probabilities.items():
        msg.emotion_probabilities[k] = float(v)
    if r.age.years is not None:
        msg.age_years = r.age.years
    if r.age.low is not None:
        msg.age_low_years, msg.age_high_years = r.age.low, r.age.high
    if r.attention_share is not None:
        msg.attention_share = r.attention_share
    return msg


class AttributesStage:
    """PersonCrop -> face observations + per-track attribute summaries (see the module docstring).

    ``analyzer`` (a :class:`~storelens.backends.face_attributes.FaceAnalyzer`) and
    ``detector`` default to the models named by ``config.faces``.
    """

    name = "attributes"
    inputs = {topics.PERSON_CROPS: m.PersonCrop, topics.SITE_CONFIG: m.SiteUpdate}
    outputs = (topics.FACE_OBSERVATIONS, topics.TRACK_ATTRIBUTES)
    #: One odd image must never block its partition.
    on_error = "dead_letter"

    def __init__(self, config: SiteConfig, analyzer=None, detector=None) -> None:
        self.config = config
        self.cfg = config.faces
        #: The cameras in force (the site file's, then each site version's on ``site-config``).
        self.site = SiteCameras(config)
        self.cameras = self.site.ids
        if analyzer is None:
            from storelens.backends.face_attributes import EmotionClassifier, FaceAnalyzer
            from storelens.backends.face_attributes.analyzer import build_head_pose
            from storelens.backends.face_attributes.demographics import build_age_gender
            from storelens.domain.face_quality import FaceQualityGate

            analyzer = FaceAnalyzer(None, FaceQualityGate(self.cfg.quality), build_age_gender(self.cfg.age_gender),
                                    EmotionClassifier(self.cfg.emotion), self.cfg.attention,
                                    build_head_pose(self.cfg.attention))
        if detector is None:
            from storelens.backends.face_detectors import build_face_detector

            detector = build_face_detector(self.cfg.detector)
        self.analyzer = analyzer
        self.finder = CropFaceFinder(detector)
        self.detector_name = self.cfg.detector.backend
        self._agg: dict[str, TrackAggregator] = {}
        self._spans: dict[tuple[str, int], _TrackSpan] = {}
        #: (camera, track) -> camera time of its last crop, face or not: a track idle past :func:`idle_ms` ends.
        self._last_crop: dict[tuple[str, int], int] = {}
        #: Idle-ended tracks' (aggregator evidence, span), least recently ended first
        #: (:data:`CLOSED_TRACK_ATTRIBUTES`).
        self._closed: OrderedDict[tuple[str, int], tuple[tuple, _TrackSpan]] = OrderedDict()
        self._dedupe = _Dedupe()
        #: Counters since start: crops, faces found, faces rejected by the gate (by reason).
        self.stats = {"crops": 0, "faces": 0, "accepted": 0, "rejected": 0}

    def decode(self, topic: str, value: bytes) -> DecodedCrop:
        return decode_site_crop_input(self, topic, value, self.site)

    @property
    def site_version(self) -> int:
        return self.site.version

    def apply_site(self, update: m.SiteUpdate) -> list[m.TrackAttributes] | None:
        """Put a site version's cameras in force (``None``: not newer); the removed cameras' open tracks
        are closed: their final summaries are returned."""
        diff = self.site.apply(update)
        if diff is None:
            return None
        out = []
        for cam in diff.removed:
            out += self.close_tracks(cam)
            self._agg.pop(cam, None)
        return out

    def handle(self, topic: str, d: DecodedCrop) -> Outputs:
        """Stage contract: observations to ``face-observations``, summaries to ``track-attributes``."""
        if topic == topics.SITE_CONFIG:
            closed = self.apply_site(d)
            return Outputs(publish=[Publish(topics.TRACK_ATTRIBUTES, x.camera_id, x) for x in closed or []],
                           info={"site_version": d.version, "applied": closed is not None})
        if self.site.gone(d.crop.camera_id):  # in flight when a site version removed the camera
            return Outputs(duplicate=True)
        out = self.process(d.crop, d.image)
        return attributes_outputs(d.crop.camera_id, out)

    def _aggregator(self, cam: str) -> TrackAggregator:
        if cam not in self._agg:
            self._agg[cam] = TrackAggregator(self.cfg.aggregation)
        return self._agg[cam]

    def process(self, crop: m.PersonCrop, image_bgr: np.ndarray | None = None,
                face: Faces | None = None, analysis=None) -> AttributesOutput:
        """One crop; ``image_bgr``/``face``/``analysis`` (the analyzer's of ``face``) may be passed when already
        decoded/detected/analysed.

        The models (face detector, analyzer) run before anything here changes: a crop that makes one raise is a dead
        letter that changed nothing (before, the tracks its arrival ended for idleness were ended first, and their
        final summaries lost with the crop's output)."""
        if crop.camera_id not in self.cameras:
            raise UnknownCamera(f"unknown camera {crop.camera_id!r}")
        if self._dedupe.seen(crop, mark=False):
            return AttributesOutput(duplicate=True)
        if not crop.end_of_stream:
            img = decode_crop(crop) if image_bgr is None else image_bgr
            if face is None:
                face = self.finder.find(img)
            if len(face) and analysis is None:
                analysis = self.analyzer.analyze(img, face)[0]
        self._dedupe.seen(crop)
        cam = crop.camera_id
        out = AttributesOutput()
        if crop.end_of_stream:
            out.summaries = self.close_tracks(cam)
            return out
        self.stats["crops"] += 1
        out.summaries.extend(self.close_tracks(cam, older_than_ts_ms=crop.ts_ms - idle_ms(self.site, cam)))
        key = (cam, crop.track_id)
        self._last_crop[key] = max(self._last_crop.get(key, crop.ts_ms), crop.ts_ms)
        if len(face) == 0:
            return out
        s, dx, dy = crop_to_frame(crop, img.shape[:2])
        fr = face.scaled(s).translated(dx, dy)
        q = analysis.quality
        self.stats["faces"] += 1
        self.stats["accepted" if q.ok else "rejected"] += 1
        obs = m.FaceObservation(
            camera_id=cam, seq=crop.seq, ts_ms=crop.ts_ms, track_id=crop.track_id,
            face_bbox_xyxy=m.BoxXYXY(**dict(zip(("x1", "y1", "x2", "y2"), map(float, fr.bbox_xyxy[0])))),
            landmarks5_xy=[float(v) for v in fr.landmarks5[0].reshape(-1)], detection_score=float(analysis.score),
            accepted=bool(q.ok), rejected_reasons=list(q.reasons), sharpness=float(q.sharpness),
            yaw_deg=float(q.yaw_deg), pitch_deg=float(q.pitch_deg), roll_deg=float(q.roll_deg),
            face_detector=self.detector_name)
        if analysis.attending is not None:
            obs.attending = bool(analysis.attending)
        if analysis.age_gender is not None:
            obs.age_years = float(analysis.age_gender.age_years)
            obs.p_male = float(analysis.age_gender.p_male)
        if analysis.emotion is not None:
            obs.emotion_probs.extend(float(p) for p in analysis.emotion)
        out.observations.append(obs)
        agg = self._aggregator(cam)
        if crop.track_id not in agg and key in self._closed:  # back after an idle end: its summary goes on
            evidence, self._spans[key] = self._closed.pop(key)
            agg.restore(crop.track_id, evidence)
        agg.add(crop.track_id, analysis.observation())
        span = self._spans.get(key)
        if span is None:
            span = self._spans[key] = _TrackSpan(crop.ts_ms, crop.ts_ms, crop.seq)
        span.last_ts_ms, span.last_seq = max(span.last_ts_ms, crop.ts_ms), max(span.last_seq, crop.seq)
        out.summaries.append(summary_message(cam, agg.result(crop.track_id), span, final=False))
        return out

    def end_streams(self) -> list[m.TrackAttributes]:
        """The final summaries of every camera's open tracks, as at the end of its stream: the embedded run stops
        while a camera still streams (its state is in memory only). Not called by the attributes service (its next
        instance goes on with the tracks in progress)."""
        cams = {c for c, _ in self._last_crop} | {c for c, agg in self._agg.items() if agg.track_ids()}
        return [x for cam in sorted(cams) for x in self.close_tracks(cam)]

    def close_tracks(self, camera_id: str, older_than_ts_ms: int | None = None) -> list[m.TrackAttributes]:
        """Final summaries of the camera's tracks (all, or those without any crop, face or not, since before
        ``older_than_ts_ms``). The evidence of a track ended for idleness is remembered: if the track comes
        back, its summary goes on from it. Ending all of a camera's tracks forgets the camera's remembered ones."""
        for key in [k for k, ts in self._last_crop.items()
                    if k[0] == camera_id and (older_than_ts_ms is None or ts < older_than_ts_ms)]:
            del self._last_crop[key]
        if older_than_ts_ms is None:
            for key in [k for k in self._closed if k[0] == camera_id]:
                del self._closed[key]
        agg = self._agg.get(camera_id)
        if agg is None:
            return []
        out = []
        for tid in agg.track_ids():
            if (camera_id, tid) in self._last_crop:  # a crop within the idle time: still open
                continue
            span = self._spans.pop((camera_id, tid), None) or _TrackSpan(0, 0, 0)
            if older_than_ts_ms is not None:
                self._closed[(camera_id, tid)] = (agg.evidence(tid), span)
                self._closed.move_to_end((camera_id, tid))
                while len(self._closed) > CLOSED_TRACK_ATTRIBUTES:
                    self._closed.popitem(last=False)
            out.append(summary_message(camera_id, agg.pop(tid), span, final=True))
        return out


# -- re-identification -------------------------------------------------------------------


def match_event_id(camera_id: str, track_id: int) -> str:
    """Deterministic id of a track's customer decision (one per camera-scoped track)."""
    return hashlib.sha1(f"match|{camera_id}|{track_id}".encode()).hexdigest()[:24]


@dataclass
class _Erasure:
    """An erased customer's embeddings, kept in memory only while crops captured before the request may still
    come (:meth:`ReidStage.erase`): from cameras that have sent no crop since ``ts_ms``, for at most the
    ``person-crops`` topic's retention."""

    ts_ms: int
    vectors: np.ndarray
    cameras: set[str]
    until_s: float


@dataclass
class _ReidTrack:
    embeddings: list[np.ndarray] = field(default_factory=list)
    #: Camera time of the track's first crop here (face or not): its customer's visit runs from then on, not from
    #: the decision, which waits for ``faces_per_decision`` good faces (``None``: no crop yet).
    first_ts_ms: int | None = None
    last_ts_ms: int = 0
    last_seq: int = 0
    customer_id: str | None = None
    erased: bool = False
    #: The enrolled staff member the track was recognised as (no customer then).
    staff_id: str | None = None
    #: No decision can be taken for the track (its faces show different people, or two customers match
    #: about equally well): no customer, no enrolment, its later crops are ignored.
    abstained: bool = False


def decode_erasure(value: bytes) -> m.CustomerErasure:
    """A ``customer-erasures`` message (of the reid stage, or of the faces stage with or without reid);
    :class:`DecodeError` when it names no customer."""
    req = m.decode(m.CustomerErasure, value)
    if not req.customer_id:
        raise DecodeError("customer erasure without a customer_id")
    return req


class ReidStage:
    """PersonCrop -> CustomerMatch (once per track) over a :class:`~storelens.backends.face_index.FaceGallery`.

    Args:
        config: site config (``faces`` section).
        gallery: the customers' gallery (its store keeps embeddings and visits).
        embedder: a :class:`~storelens.backends.face_embedders.FaceEmbedder` (default: ``faces.embedder``).
        detector, gate: face detector and quality gate (default: from ``faces``).
        staff_faces: the opt-in staff face gallery (``load(model, dim) -> (staff_ids, unit rows)``, e.g.
            :class:`storelens.storage.staff_faces.StaffFaceSource`); used when ``staff.faces`` is enabled:
            read at start and every ``staff.faces.reload_s`` seconds. A track whose mean face embedding
            is at least ``staff.faces.min_similarity`` (cosine) to a staff embedding is published as a
            ``StaffTrack`` (cue ``face``, detail the staff id) on ``staff-tracks`` and never matched
            against, nor enrolled in, the customers' gallery.
    """

    name = "reid"
    inputs = {topics.CUSTOMER_ERASURES: m.CustomerErasure, topics.PERSON_CROPS: m.PersonCrop,
              topics.SITE_CONFIG: m.SiteUpdate}
    outputs = (topics.CUSTOMER_MATCHES, topics.STAFF_TRACKS)
    #: One odd image never blocks its partition; a failing gallery store stops the process (policy).
    on_error = "dead_letter"

    def __init__(self, config: SiteConfig, gallery, embedder=None, detector=None, gate=None,
                 staff_faces=None) -> None:
        from storelens.backends.face_index import VisitTracker

        self.config = config
        self.cfg = config.faces
        #: The cameras in force (the site file's, then each site version's on ``site-config``).
        self.site = SiteCameras(config)
        self.cameras = self.site.ids
        if embedder is None:
            from storelens.backends.face_embedders import build_embedder

            embedder = build_embedder(self.cfg.embedder)
        if detector is None:
            from storelens.backends.face_detectors import build_face_detector

            detector = build_face_detector(self.cfg.detector)
        if gate is None:
            from storelens.domain.face_quality import FaceQualityGate

            gate = FaceQualityGate(self.cfg.quality)
        self.gallery = gallery
        self.visits = VisitTracker(gallery.store, gap_ms=int(self.cfg.reid.visit_gap_s * 1000)) \
            if gallery.store is not None else None
        self.embedder = embedder
        self.embedder_name = getattr(embedder, "name", type(embedder).__name__)
        self.finder = CropFaceFinder(detector)
        self.gate = gate
        self.per_decision = self.cfg.reid.faces_per_decision
        agreement = self.cfg.reid.min_face_agreement
        #: Cosine similarity every face of a track used for its decision has with the track's medoid face.
        self.min_face_agreement = gallery.cfg.match_threshold if agreement is None else agreement
        self.retention_ms = (None if self.cfg.reid.retention_days is None
                             else int(self.cfg.reid.retention_days * 86_400_000))
        if getattr(gallery, "retention_ms", 0) is None:  # a customer purged elsewhere is told from an erased one
            gallery.retention_ms = self.retention_ms
        self._tracks: dict[tuple[str, int], _ReidTrack] = {}
        #: Tracks ended for idleness with their decision (or abstention, or erasure), least recently ended first (see
        #: :data:`CLOSED_TRACK_DECISIONS`).
        self._closed: OrderedDict[tuple[str, int], _ReidTrack] = OrderedDict()
        self._dedupe = _Dedupe()
        self._last_purge_ts: int | None = None
        #: Problems found in the messages since :meth:`handle` last took them (``storelens_errors_total`` reason ->
        #: how many: :data:`CLOCK_AHEAD`).
        self.errors: dict[str, int] = {}
        self._warned_ahead: set[str] = set()
        #: Recent erasures whose person's earlier crops may still be queued (:meth:`erase`).
        self._erasures: list[_Erasure] = []
        self.stats = {"crops": 0, "faces": 0, "accepted": 0, "rejected": 0, "matches": 0, "new": 0,
                      "returning": 0, "purged_embeddings": 0, "staff": 0, "abstained": 0}
        staff_cfg = config.staff.faces
        #: ``staff.faces`` when enabled and a source was given, else ``None`` (no face cue).
        self.staff_cfg = staff_cfg if staff_cfg is not None and staff_cfg.enabled and staff_faces is not None \
            else None
        self.staff_faces = staff_faces
        self._staff_ids: list[str] = []
        self._staff_x = np.zeros((0, self.cfg.embedder.dim), np.float32)
        self._staff_loaded_at: float | None = None
        if self.staff_cfg is not None:
            self.reload_staff()

    def reload_staff(self) -> int:
        """Read the enrolled staff embeddings of this stage's embedder now; returns how many."""
        ids, x = self.staff_faces.load(self.embedder_name, self.cfg.embedder.dim)
        dim = self.cfg.embedder.dim
        self._staff_ids = list(ids)
        self._staff_x = np.asarray(x, np.float32).reshape(len(ids), dim) if ids else np.zeros((0, dim), np.float32)
        self._staff_loaded_at = time.monotonic()
        return len(self._staff_ids)

    def staff_match(self, embedding: np.ndarray) -> tuple[str | None, float]:
        """``(staff_id, similarity)`` of the best enrolled staff embedding for a unit ``embedding``;
        ``(None, best similarity)`` below ``staff.faces.min_similarity`` (``(None, -1.0)``: nobody enrolled)."""
        if self.staff_cfg is None:
            return None, -1.0
        if self._staff_loaded_at is None or time.monotonic() - self._staff_loaded_at >= self.staff_cfg.reload_s:
            try:
                self.reload_staff()
            except Exception as exc:  # noqa: BLE001 (keep the last list; the store may be back next time)
                log.warning("cannot reload the staff face gallery", extra={"error": str(exc)})
                self._staff_loaded_at = time.monotonic()
        if not self._staff_ids:
            return None, -1.0
        sims = self._staff_x @ np.asarray(embedding, np.float32).reshape(-1)
        i = int(np.argmax(sims))
        sim = float(sims[i])
        return (self._staff_ids[i] if sim >= self.staff_cfg.min_similarity else None), sim

    def process(self, crop: m.PersonCrop, image_bgr: np.ndarray | None = None, face: Faces | None = None,
                accepted: bool | None = None) -> list[m.CustomerMatch | m.StaffTrack]:
        """One crop. ``image_bgr``/``face``/``accepted`` may come from the attributes stage (embedded mode).
        Returns the track decisions taken: ``CustomerMatch``, or ``StaffTrack`` for enrolled staff.

        The models (face detector, quality gate, embedder) run before anything here changes: a crop that makes one
        raise is a dead letter that changed nothing. Before, the tracks its arrival ended (idle) were decided
        first (the customer enrolled, the decision stored) and their decisions lost with the crop's output."""
        if crop.camera_id not in self.cameras:
            raise UnknownCamera(f"unknown camera {crop.camera_id!r}")
        img, embedding = image_bgr, None
        if not crop.end_of_stream and not self._dedupe.seen(crop, mark=False) and self._may_embed(crop):
            img = decode_crop(crop) if img is None else img
            if face is None:
                face = self.finder.find(img)
            if len(face) and accepted is None:
                accepted = bool(self.gate.check(img, face)[0].ok)
            if len(face) and accepted:
                embedding = np.asarray(self.embedder.embed(img, face), np.float32).reshape(-1)
        if self._dedupe.seen(crop):
            return []
        cam = crop.camera_id
        self._maybe_purge(crop.ts_ms, cam)
        self._expire_erasures(cam, None if crop.end_of_stream else crop.ts_ms)
        if crop.end_of_stream:
            return self.close_tracks(cam)
        out = self.close_tracks(cam, older_than_ts_ms=crop.ts_ms - idle_ms(self.site, cam))
        img = decode_crop(crop) if img is None else img
        self.stats["crops"] += 1
        key = (cam, crop.track_id)
        tr = self._tracks.get(key)
        if tr is None:  # a new track, or one back after an idle end or a restart: it keeps its decision
            tr = self._closed.pop(key, None)
            if tr is None:
                tr, again = self._stored_track(key)
                out += again
            self._tracks[key] = tr
        seen_ts = tr.last_ts_ms or None  # the track's crop before this one (none after a restart)
        tr.last_ts_ms, tr.last_seq = max(tr.last_ts_ms, crop.ts_ms), max(tr.last_seq, crop.seq)
        tr.first_ts_ms = crop.ts_ms if tr.first_ts_ms is None else min(tr.first_ts_ms, crop.ts_ms)
        if tr.erased or tr.staff_id is not None or tr.abstained:
            return out
        if tr.customer_id is not None:  # seen all along since the track's last crop: one track, one visit
            self._observe(tr.customer_id, crop.ts_ms, cam, since_ts_ms=seen_ts)
            return out
        if face is None:
            face = self.finder.find(img)
        if len(face) == 0:
            return out
        self.stats["faces"] += 1
        if accepted is None:
            accepted = bool(self.gate.check(img, face)[0].ok)
        if not accepted:
            self.stats["rejected"] += 1
            return out
        self.stats["accepted"] += 1
        if embedding is None:  # (run above unless the track looked decided then)
            embedding = np.asarray(self.embedder.embed(img, face), np.float32).reshape(-1)
        if self._erasures and self._erased_face(embedding[None], crop.ts_ms):
            tr.embeddings, tr.erased = [], True  # an erased customer's face, captured before the request
            self._remember(cam, crop.track_id, tr, crop.ts_ms)
            return out
        tr.embeddings.append(embedding)
        if len(tr.embeddings) >= self.per_decision:
            decision = self._decide(cam, crop.track_id, tr, crop.seq, crop.ts_ms)
            if decision is not None:
                out.append(decision)
        return out

    def _may_embed(self, crop: m.PersonCrop) -> bool:
        """Whether :meth:`process` may need ``crop``'s embedding: its track is not known to be decided already
        (a decided track's crops need no model, nor does a track this stage holds nothing of whose decision the
        gallery's store keeps: taken before a restart)."""
        key = (crop.camera_id, crop.track_id)
        tr = self._tracks.get(key)
        if tr is None:
            tr = self._closed.get(key)
        if tr is None:  # after a restart: a decision kept in the store (an erased person's face is never embedded)
            lookup = getattr(self.gallery.store, "track_decision", None)
            return lookup is None or lookup(*key) is None
        return not (tr.erased or tr.staff_id is not None or tr.abstained or tr.customer_id is not None)

    def _observe(self, customer_id: str, ts_ms: int, cam: str, since_ts_ms: int | None = None):
        """The customer seen at ``ts_ms`` (all along since ``since_ts_ms``, the track's first crop, if given):
        ``(visit, whether this sighting started it)``; ``(None, False)`` without visits or for a customer erased
        meanwhile (:meth:`VisitTracker.record <storelens.backends.face_index.VisitTracker.record>`)."""
        if self.visits is None:
            return None, False
        try:
            return self.visits.record(customer_id, ts_ms, cam, since_ts_ms=since_ts_ms)
        except KeyError:  # erased meanwhile
            return None, False

    def _stored_track(self, key: tuple[str, int]) -> tuple[_ReidTrack, list[m.CustomerMatch | m.StaffTrack]]:
        """A track this stage holds nothing of: with the decision the gallery's store keeps for it (taken before a
        restart, or by a stage whose :attr:`_closed` forgot it), else a new one; and, for a customer's or staff
        member's decision, the message published for it, to publish again: the store keeps the decision before
        the runner publishes it, so a process that stopped in between never published it (the same message,
        the same ``event_id``: a second copy changes nothing downstream)."""
        lookup = getattr(self.gallery.store, "track_decision", None)
        found = lookup(*key) if lookup is not None else None
        if found is None:
            return _ReidTrack(), []
        kind = found.decision
        again: list[m.CustomerMatch | m.StaffTrack] = []
        if found.output is not None and kind in ("customer", "staff"):
            again.append(m.decode(m.CustomerMatch if kind == "customer" else m.StaffTrack, found.output))
            log.info("track decision published again", extra={"camera": key[0], "track_id": key[1],
                                                              "decision": kind})
        return _ReidTrack(customer_id=found.customer_id if kind == "customer" else None,
                          staff_id=found.staff_id if kind == "staff" else None, erased=kind == "erased",
                          abstained=kind not in ("customer", "staff", "erased")), again

    def _remember(self, cam: str, track_id: int, tr: _ReidTrack, ts_ms: int,
                  output: m.CustomerMatch | m.StaffTrack | None = None) -> None:
        """Keep the track's decision (customer, staff, abstained or erased) in the gallery's store, with the
        gallery's retention, and ``output``, the message published for a customer or staff member: a restarted
        stage finds them (:meth:`_stored_track`), never decides the track again, and publishes ``output`` again."""
        from storelens.backends.face_index import TrackDecision

        save = getattr(self.gallery.store, "save_track_decision", None)
        if save is None:
            return
        kind = ("erased" if tr.erased else "staff" if tr.staff_id is not None
                else "customer" if tr.customer_id is not None else "abstained")
        save(cam, track_id, TrackDecision(kind, tr.customer_id, tr.staff_id, int(ts_ms),
                                          None if output is None else m.encode(output)))

    def _abstain(self, cam: str, track_id: int, tr: _ReidTrack, why: str, ts_ms: int, **extra) -> None:
        tr.abstained, tr.embeddings = True, []
        self._remember(cam, track_id, tr, ts_ms)
        self.stats["abstained"] += 1
        log.info("track undecided", extra={"camera": cam, "track_id": track_id, "reason": why, **extra})

    def _decide(self, cam: str, track_id: int, tr: _ReidTrack, seq: int,
                ts_ms: int) -> m.CustomerMatch | m.StaffTrack | None:
        """The track's decision from its faces; ``None``: abstained (see :attr:`_ReidTrack.abstained`), or the
        face's customer was found erased by another process (the track is erased)."""
        from storelens.backends.face_index import CustomerErased

        x = np.stack(tr.embeddings)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        keep = consistent_faces(x, self.min_face_agreement)
        if keep is None:  # e.g. an id switch inside the track: averaging would blend two people
            return self._abstain(cam, track_id, tr, "faces of different people", ts_ms, faces=len(x))
        consistent = len(keep) == len(x)  # faces were dropped: match the rest, but never learn from them
        mean = x[keep].mean(axis=0)
        staff_id, staff_sim = self.staff_match(mean / max(float(np.linalg.norm(mean)), 1e-12))
        if staff_id is not None:  # staff are not customers: no gallery match, no enrolment, no visit
            tr.staff_id, tr.embeddings = staff_id, []
            staff = m.StaffTrack(camera_id=cam, track_id=track_id, ts_ms=ts_ms, seq=seq, cue="face", detail=staff_id)
            self._remember(cam, track_id, tr, ts_ms, staff)
            self.stats["staff"] += 1
            log.info("track is staff (face)", extra={"camera": cam, "track_id": track_id, "staff": staff_id,
                                                     "similarity": round(staff_sim, 3)})
            return staff
        try:
            cid, sim, is_new = self.gallery.enroll_or_match(mean, ts_ms, learn=consistent)
        except CustomerErased as exc:  # the API erased them; the request, on its way, finds the dropped vectors
            tr.erased, tr.embeddings = True, []
            self._remember(cam, track_id, tr, ts_ms)
            log.info("track of an erased customer", extra={"camera": cam, "track_id": track_id, "customer": str(exc)})
            return None
        if cid is None:
            return self._abstain(cam, track_id, tr, "two customers match about equally", ts_ms,
                                 similarity=round(sim, 3))
        tr.customer_id = cid
        # the track was the customer from its first crop on: a person present all along (a new track after an id
        # switch, another camera) whose faces came late is still in the same visit
        visit, started = self._observe(cid, ts_ms, cam, since_ts_ms=tr.first_ts_ms)
        self.stats["matches"] += 1
        self.stats["new"] += int(is_new)
        returning = bool(visit is not None and visit.returning)
        self.stats["returning"] += int(returning and started)  # returning visits, not their tracks
        n = len(keep)
        tr.embeddings = []  # not needed any more (privacy: keep nothing longer than necessary)
        log.info("track matched", extra={"camera": cam, "track_id": track_id, "customer": cid,
                                         "similarity": round(float(sim), 3), "new": is_new, "returning": returning})
        match = m.CustomerMatch(
            event_id=match_event_id(cam, track_id), camera_id=cam, track_id=track_id, seq=seq, ts_ms=ts_ms,
            customer_id=cid, similarity=float(sim), is_new=bool(is_new), returning=returning,
            visit_no=0 if visit is None else visit.visit_no,
            visit_first_ts_ms=0 if visit is None else visit.first_ts_ms, n_faces=n, embedder=self.embedder_name)
        self._remember(cam, track_id, tr, ts_ms, match)
        return match

    def end_streams(self) -> list[m.CustomerMatch | m.StaffTrack]:
        """The decisions of every camera's open tracks, as at the end of its stream (:meth:`close_tracks`: an
        undecided track with a good face is decided now): the embedded run stops while a camera still streams.
        Not called by the reid service (its next instance goes on with the tracks in progress). No crop comes
        any more: the embeddings of erasures leave memory."""
        out = [x for cam in sorted({c for c, _ in self._tracks}) for x in self.close_tracks(cam)]
        for cam in self.cameras:
            self._expire_erasures(cam, None)
            self._forget_decisions(cam)
        return out

    #: :meth:`tick` period (s, wall time): the runner calls it between messages, or without any.
    tick_s = 60.0

    def tick(self, now_ms: int) -> Outputs:
        """The runner's periodic call: the embeddings of erasures leave memory once their time is up, also when
        no message comes (a store closed overnight sends no crop)."""
        self._expire_erasures()
        return Outputs()

    def close_tracks(self, camera_id: str, older_than_ts_ms: int | None = None) -> list[m.CustomerMatch | m.StaffTrack]:
        """End the camera's tracks (all, or idle ones): undecided tracks with a good face are decided now.

        The decision of a track ended for idleness (a customer, a staff member, or none: abstained or erased) is
        remembered: if the track comes back, it keeps it. Ending
        all of a camera's tracks (end of its stream, camera removed) forgets the camera's remembered decisions, here
        and in the gallery's store but the ``erased`` ones (:meth:`_forget_decisions`), after the decisions taken now.
        """
        out = []
        if older_than_ts_ms is None:
            for key in [k for k in self._closed if k[0] == camera_id]:
                del self._closed[key]
        for key in [k for k in self._tracks if k[0] == camera_id]:
            tr = self._tracks[key]
            if older_than_ts_ms is not None and tr.last_ts_ms >= older_than_ts_ms:
                continue
            del self._tracks[key]
            if tr.customer_id is None and tr.staff_id is None and tr.embeddings and not tr.erased:
                decision = self._decide(camera_id, key[1], tr, tr.last_seq, tr.last_ts_ms)
                if decision is not None:
                    out.append(decision)
            if older_than_ts_ms is not None and (tr.customer_id is not None or tr.staff_id is not None or tr.erased
                                                 or tr.abstained):
                tr.embeddings = []
                self._closed[key] = tr
                self._closed.move_to_end(key)
                while len(self._closed) > CLOSED_TRACK_DECISIONS:
                    self._closed.popitem(last=False)
        if older_than_ts_ms is None:
            self._forget_decisions(camera_id)
        return out

    def _forget_decisions(self, camera_id: str) -> int:
        """The camera's stream ended (or a fresh tracker session starts: :meth:`start_session`): the store's
        decisions of its tracks go, but the ``erased`` ones: a rerun of the same file gives an erased person the same
        track id, and nothing else stops their enrolment again (they hold no face; the retention purge drops them)."""
        forget = getattr(self.gallery.store, "forget_track_decisions", None)
        if forget is None:
            return 0
        return forget(camera_id, keep_erased=True)

    def start_session(self, camera_id: str) -> None:
        """The camera's tracker starts a fresh session (no tracker state restored: every embedded run), before any
        crop of it is processed here. Its track ids may be those of an earlier session's tracks (a file camera's
        timestamps, so its ids, are the same in every run), so the decisions the gallery's store still keeps of
        the camera's tracks may be of other people: left by a run that stopped without ending its streams (killed,
        power loss). They go, as at an end of stream, and every track of the session is decided on its own faces,
        but the ``erased`` ones: a rerun of the same file gives an erased person the same track id, and once the
        gallery holds no vector of theirs nothing else stops their enrolment again. An erased person's privacy wins
        over the rare other person with that track id in a run whose tracker settings changed (left undecided).
        Not for the reid service: there a restarted stage keeps the decisions while detect-track keeps its
        tracker session (a fresh one moves its ids above the old session's,
        :meth:`~storelens.stages.core.DetectTrackStage.restore_camera`)."""
        gone = self._forget_decisions(camera_id)
        if gone:
            log.warning("track decisions of an earlier tracker session forgotten (a run that did not end its "
                        "streams)", extra={"camera": camera_id, "decisions": gone})

    def decode(self, topic: str, value: bytes):
        if topic == topics.CUSTOMER_ERASURES:
            return decode_erasure(value)
        return decode_site_crop_input(self, topic, value, self.site)

    @property
    def site_version(self) -> int:
        return self.site.version

    def apply_site(self, update: m.SiteUpdate) -> list[m.CustomerMatch | m.StaffTrack] | None:
        """Put a site version's cameras in force (``None``: not newer); the removed cameras' open tracks
        are closed: the decisions taken then are returned."""
        diff = self.site.apply(update)
        if diff is None:
            return None
        out = []
        for cam in diff.removed:
            out += self.close_tracks(cam)
        return out

    def handle(self, topic: str, msg) -> Outputs:
        """Stage contract: a crop's decisions to ``customer-matches``; an erasure request applied."""
        if topic == topics.SITE_CONFIG:
            closed = self.apply_site(msg)
            self._expire_erasures()  # on time, as every message does; and the removed cameras send no crop any more
            return Outputs(publish=decision_publishes(closed or []),
                           info={"site_version": msg.version, "applied": closed is not None})
        if topic == topics.PERSON_CROPS and self.site.gone(msg.crop.camera_id):
            self._expire_erasures()
            return Outputs(duplicate=True)
        if topic == topics.CUSTOMER_ERASURES:
            self._expire_erasures()
            deleted = self.erase(msg.customer_id, msg.ts_ms)
            log.info("customer erased", extra={"customer": msg.customer_id, "in_gallery": deleted,
                                               "request_id": msg.request_id})
            return Outputs(info={"erased": deleted})
        before = self.stats["crops"]
        matches = self.process(msg.crop, msg.image)
        duplicate = not msg.crop.end_of_stream and self.stats["crops"] == before
        return Outputs(publish=decision_publishes(matches), duplicate=duplicate, info=self.take_errors())

    def take_errors(self) -> dict:
        """``Outputs.info`` of the problems found since the last call (``{"errors": {reason: n}}``, or empty)."""
        errors, self.errors = self.errors, {}
        return {"errors": errors} if errors else {}

    def erase(self, customer_id: str, ts_ms: int = 0) -> bool:
        """Right to erasure: drop the customer from the gallery (index, store) and forget their tracks.

        The tracks matched to the customer, and the undecided open tracks with a face that matches the
        customer's embeddings (``faces.gallery.match_threshold``: the same person, not decided yet), drop
        their faces and are never decided. Crops captured before ``ts_ms`` (the request's time; 0: not
        given) that arrive later and match are not enrolled either: the customer's embeddings stay in
        memory, and nowhere else, until every camera has sent a crop captured since then (at most the
        ``person-crops`` topic's retention). A customer the gallery found erased by another process before the
        request came (the API deletes the rows, then sends it) is dropped the same way, with the embeddings the
        gallery kept for the request (:meth:`FaceGallery.take_erased
        <storelens.backends.face_index.FaceGallery.take_erased>`).
        """
        from storelens.backends.face_index import ERASED_KEPT_S

        found_erased = False
        try:
            vectors = self.gallery.embeddings_of(customer_id)[0]
        except KeyError:  # not in this gallery: found erased before (its vectors kept), or erased before, or unknown
            vectors = self.gallery.take_erased(customer_id)
            found_erased = vectors is not None
        for key, tr in (*self._tracks.items(), *self._closed.items()):
            if tr.customer_id == customer_id:  # the store's decision goes to "erased" with the customer (below)
                tr.customer_id, tr.erased = None, True
            elif (vectors is not None and tr.embeddings and tr.customer_id is None and tr.staff_id is None
                  and self._erased_face(np.stack(tr.embeddings), vectors=vectors)):
                tr.embeddings, tr.erased = [], True
                self._remember(*key, tr, tr.last_ts_ms)
        if vectors is not None and len(vectors) and ts_ms > 0:
            self._erasures.append(_Erasure(int(ts_ms), vectors, set(self.cameras), time.monotonic() + ERASED_KEPT_S))
        return self.gallery.delete(customer_id) or found_erased

    def _erased_face(self, faces: np.ndarray, ts_ms: int | None = None, vectors: np.ndarray | None = None) -> bool:
        """Whether one of ``faces`` (rows) matches ``vectors``, or else the embeddings of an erasure requested
        after ``ts_ms``, at ``faces.gallery.match_threshold`` or more (cosine)."""
        x = faces / np.maximum(np.linalg.norm(faces, axis=1, keepdims=True), 1e-12)
        sets = [vectors] if vectors is not None else [e.vectors for e in self._erasures if ts_ms < e.ts_ms]
        return any(float((x @ v.T).max()) >= self.gallery.cfg.match_threshold for v in sets if len(v))

    def _expire_erasures(self, camera_id: str | None = None, ts_ms: int | None = None) -> None:
        """A crop of ``camera_id`` captured at ``ts_ms`` (``None``: its stream ended): no earlier crop of that
        camera comes any more; an erasure's embeddings go once no camera in force can send one, or their time is
        up (checked at every message and :meth:`tick`; also the gallery's, :meth:`FaceGallery.expire_erased
        <storelens.backends.face_index.FaceGallery.expire_erased>`)."""
        self.gallery.expire_erased()
        if not self._erasures:
            return
        now = time.monotonic()
        for e in self._erasures:
            if camera_id is not None and (ts_ms is None or ts_ms >= e.ts_ms):
                e.cameras.discard(camera_id)
        self._erasures = [e for e in self._erasures if e.cameras & set(self.cameras) and now < e.until_s]

    def _maybe_purge(self, ts_ms: int, camera_id: str = "") -> None:
        """Retention, at most once per hour of camera time; never ahead of this host's clock (a crop dated in the
        future, a camera clock or a file's ``start_ts_ms`` set wrong, would purge the whole gallery: every customer
        of every camera; counted, :data:`CLOCK_AHEAD`)."""
        if self.retention_ms is None or ts_ms <= 0:
            return
        crop_ts_ms = ts_ms
        ts_ms, ahead = host_clamped_ms(crop_ts_ms)
        if ahead:
            self.errors[CLOCK_AHEAD] = self.errors.get(CLOCK_AHEAD, 0) + 1
            if camera_id not in self._warned_ahead:
                self._warned_ahead.add(camera_id)
                log.warning("crop dated ahead of this host's clock: the gallery's retention purge goes by the host's "
                            "clock instead", extra={"camera": camera_id, "ts_ms": int(crop_ts_ms), "now_ms": ts_ms})
        if self._last_purge_ts is not None and ts_ms - self._last_purge_ts < _HOUR_MS:
            return
        self._last_purge_ts = ts_ms
        res = self.gallery.purge_older_than(ts_ms - self.retention_ms)
        self.stats["purged_embeddings"] += res.embeddings
        if res.embeddings or res.customers:
            log.info("retention purge", extra={"embeddings": res.embeddings, "customers": res.customers,
                                               "visits": res.visits})


def decision_publishes(decisions) -> list[Publish]:
    """Reid decisions to their topics: ``CustomerMatch`` -> ``customer-matches``, ``StaffTrack`` -> ``staff-tracks``."""
    return [Publish(topics.STAFF_TRACKS if isinstance(x, m.StaffTrack) else topics.CUSTOMER_MATCHES, x.camera_id, x)
            for x in decisions]


def attributes_outputs(camera_id: str, out: AttributesOutput, matches: list = ()) -> Outputs:
    if out.duplicate:
        return Outputs(duplicate=True)
    return Outputs(publish=[Publish(topics.FACE_OBSERVATIONS, camera_id, o) for o in out.observations]
                   + [Publish(topics.TRACK_ATTRIBUTES, camera_id, x) for x in out.summaries]
                   + decision_publishes(matches))


class FacesStage:
    """Attributes and reid in one stage (embedded mode): one face detection per crop serves both.

    The services run :class:`AttributesStage` and :class:`ReidStage` separately.
    Every run starts each camera's tracker session afresh (its track ids those of the previous run of a file): at the
    first crop of a camera the reid stage forgets the decisions an earlier run left in the gallery's store
    (:meth:`ReidStage.start_session`).
    A crop that makes a model (or the stage) raise is a dead letter, as in those services, and the run goes on;
    every model runs before either stage changes its state (the face detected and analysed here, the embedding
    first thing in :meth:`ReidStage.process`), then reid, then attributes (given the analysis: no model left to
    raise): a failing crop changes nothing, and the decisions of the tracks it would have ended are not lost.
    Erasure requests (``customer-erasures``, relayed from the API through the history's outbox by the embedded
    pipeline) go to the reid stage, as in the reid service (:meth:`ReidStage.handle`).
    """

    name = "faces"
    inputs = {topics.CUSTOMER_ERASURES: m.CustomerErasure, topics.PERSON_CROPS: m.PersonCrop,
              topics.SITE_CONFIG: m.SiteUpdate}
    outputs = (topics.FACE_OBSERVATIONS, topics.TRACK_ATTRIBUTES, topics.CUSTOMER_MATCHES, topics.STAFF_TRACKS)
    #: One odd crop never ends the run (a failing gallery store still stops it: the policy's ``store``).
    on_error = "dead_letter"

    def __init__(self, attributes: AttributesStage, reid: ReidStage | None) -> None:
        self.attributes, self.reid = attributes, reid
        self.cameras = attributes.cameras
        #: The cameras whose tracker session the reid stage has started (:meth:`ReidStage.start_session`).
        self._sessions: set[str] = set()

    def decode(self, topic: str, value: bytes) -> DecodedCrop:
        if topic == topics.CUSTOMER_ERASURES:  # decoded with or without reid (handle then ignores it)
            return decode_erasure(value)
        return decode_site_crop_input(self, topic, value, self.attributes.site)

    @property
    def site_version(self) -> int:
        return self.attributes.site.version

    def handle(self, topic: str, d: DecodedCrop) -> Outputs:
        if topic == topics.CUSTOMER_ERASURES:  # without reid (no gallery here) there is nothing to forget
            return self.reid.handle(topic, d) if self.reid is not None else Outputs(info={"erased": False})
        if topic == topics.SITE_CONFIG:  # both stages; the removed cameras' open tracks are closed
            closed = self.attributes.apply_site(d)
            matches = (self.reid.apply_site(d) or []) if self.reid is not None else []
            return Outputs(publish=[Publish(topics.TRACK_ATTRIBUTES, x.camera_id, x) for x in closed or []]
                           + decision_publishes(matches),
                           info={"site_version": d.version, "applied": closed is not None})
        if self.attributes.site.gone(d.crop.camera_id):
            return Outputs(duplicate=True)
        if self.reid is not None and d.crop.camera_id not in self._sessions and d.crop.camera_id in self.cameras:
            self.reid.start_session(d.crop.camera_id)  # before any decision of the camera's tracks is looked up
            self._sessions.add(d.crop.camera_id)
        face = None if d.image is None else self.attributes.finder.find(d.image)
        # the models first (reid's embedder first thing in its process, before its state changes), then attributes
        # (no model left to raise): a crop that fails is a dead letter that changed nothing in either stage
        analysis = self.attributes.analyzer.analyze(d.image, face)[0] if face is not None and len(face) else None
        accepted = None if analysis is None else bool(analysis.quality.ok)
        matches = self.reid.process(d.crop, d.image, face, accepted) if self.reid is not None else []
        out = self.attributes.process(d.crop, d.image, face, analysis)
        if out.duplicate and matches:  # reid decides on its own redelivery check
            out = AttributesOutput()
        res = attributes_outputs(d.crop.camera_id, out, matches)
        if self.reid is not None:
            res.info.update(self.reid.take_errors())
        return res

    tick_s = ReidStage.tick_s

    def tick(self, now_ms: int) -> Outputs:
        """The runner's periodic call: the reid stage's (:meth:`ReidStage.tick`)."""
        return self.reid.tick(now_ms) if self.reid is not None else Outputs()

    def end_streams(self) -> Outputs:
        """At the stop of the embedded run (:meth:`~storelens.runtime.runner.RunnerCore.end_streams`): every camera
        still streaming ends as at the end of its stream, so its open tracks get their final summaries and the
        undecided ones with a good face their reid decision (:meth:`AttributesStage.end_streams`,
        :meth:`ReidStage.end_streams`), to publish to the stages downstream (analytics writes them)."""
        summaries = self.attributes.end_streams()
        matches = self.reid.end_streams() if self.reid is not None else []
        return Outputs(publish=[Publish(topics.TRACK_ATTRIBUTES, x.camera_id, x) for x in summaries]
                       + decision_publishes(matches), info={"summaries": len(summaries), "decisions": len(matches)})

    @property
    def stats(self) -> dict[str, int]:
        res = {f"attributes_{k}": v for k, v in self.attributes.stats.items()}
        if self.reid is not None:
            res.update({f"reid_{k}": v for k, v in self.reid.stats.items()})
        return res


def build_faces(config: SiteConfig, gallery=None, stages: tuple | None = None, staff_faces=None) -> FacesStage:
    """The embedded faces stage: ``stages`` = ``(AttributesStage, ReidStage | None)``, or built from
    ``config.faces`` over ``gallery`` (opened by the caller: :func:`storelens.storage.open_gallery`) and
    the staff face gallery ``staff_faces`` (``staff.faces``: :class:`storelens.storage.staff_faces.StaffFaceSource`)."""
    if stages is not None:
        return FacesStage(*stages)
    if gallery is None:
        raise ConfigError("the faces stage needs the face gallery (storelens.storage.open_gallery(config))")
    return FacesStage(AttributesStage(config), ReidStage(config, gallery, staff_faces=staff_faces))


def gallery_sqlite_path(config: SiteConfig) -> str:
    p = config.faces.reid.sqlite_path
    if p:
        return p
    base = config.storage.path
    return ":memory:" if base == ":memory:" else f"{base}.gallery.db"
