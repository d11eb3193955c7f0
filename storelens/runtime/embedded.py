"""The embedded mode: every stage in one process, joined by the in-process bus.

The stages registered for the ``embedded`` mode (:mod:`storelens.stages.registry`)
each run in a thread under the same :class:`~storelens.runtime.runner.Runner` as the
services, with an :class:`~storelens.runtime.transports.InProcessTransport` instead of
Kafka: same topics, keys, protobuf codec, error policy and sinks. One ingest thread per
camera feeds ``frames`` (JPEG as the services send, or raw pixels with ``pipeline.frames: bgr``); the bus
queues are bounded, so ingest never runs far ahead.
When every file source has ended, ``frames`` is ended and each stage ends its
outputs after it has handled its inputs, down to analytics.

Several cameras share the models: detect-track takes the frames of up to
``pipeline.batch_cameras`` cameras that wait at once in one call (one detector call, one
re-id inference; see :meth:`~storelens.stages.core.DetectTrackStage.handle_batch` and the
runner's batches), with the same results as one frame at a time
(:attr:`PipelineResult.detect_batches` says how many frames each call had).

Customer erasures made through the API (``DELETE /v1/customers/{id}``, any process, same history store) reach
the faces stage on ``customer-erasures`` as they reach the reid service: the API's
:class:`~storelens.runtime.workers.CustomerErasurePublisher` stores the ``CustomerErasure`` in the history's
outbox (:mod:`storelens.storage.outbox`), and the thread that looks for site versions takes what it finds
there (the store's ``take_outbox``) and publishes it onto the bus, within :data:`SITE_POLL_S`.

While it runs, the pipeline holds its history's purge lease (:class:`~storelens.runtime.retention.PurgeLease`):
its own retention purge runs, an API process's does not.

Site versions saved through ``/v1/site`` (any process, same history store) are put in force
without a restart: the stages that take ``site-config`` (detect-track, faces, analytics) apply
each new version first, then the ingest :class:`~storelens.runtime.ingest.CameraSupervisor`
starts the added cameras, stops the removed ones and restarts the re-pointed ones. A file
camera added mid-run is read to its end before the run ends; a live one runs until :meth:`stop`.

A stop (:meth:`stop`, Ctrl-C, SIGTERM in the CLI) ends each stage's thread after the message in hand (the result
says so: :attr:`PipelineResult.interrupted`, its figures cover the frames tracked until then); then, in pipeline
order, the stages after detect-track handle what was already queued for them (the tracked frames, crops, final
attribute summaries and reid decisions the stages before them had finished: a few per topic, the bus' ``maxsize``;
no new frame) and the faces stage ends the tracks still open (their final attribute summaries, and the reid decision of
each undecided track with a good face: :meth:`~storelens.stages.faces.FacesStage.end_streams`),
which analytics writes to the history, and the analytics stage ends every camera still streaming as
at an end of stream (its open zone visits get their exits; the last zone buckets, heatmap minute and
hour, journeys and buying units are written to the history), since their state lives in this process
only (:meth:`~storelens.stages.analytics.AnalyticsStage.end_streams`). At its start the analytics stage takes
the day's occupancy, ins and outs of each live camera, and the store's, from the history
(:meth:`EmbeddedPipeline._resume_counts`; none with ``store.occupancy_reset`` ``null``), and the count windows
still open: a restart mid-day goes on from them. A run that was killed (SIGKILL,
power loss) ended nothing: the next run's faces stage forgets, at each camera's first crop, the reid decisions it
left in the gallery (every run starts the cameras' tracker sessions afresh, a file's track ids the same in every run:
:meth:`~storelens.stages.faces.ReidStage.start_session`).

Example:
    >>> from storelens.config import load_config                      # doctest: +SKIP
    >>> result = EmbeddedPipeline(load_config("site.yaml")).run()     # doctest: +SKIP
    >>> result.line_counts["entrance"]                                 # doctest: +SKIP
    {'door': {'in': 4, 'out': 2}}
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from storelens.backends.video import is_live, open_capture
from storelens.config import CameraConfig, SiteConfig, with_site_update
from storelens.config.site import site_file_override
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID, window_start_ms
from storelens.errors import StoreLensError
from storelens.runtime.bus import BusMessage, InProcessBus
from storelens.runtime.ingest import CameraSupervisor
from storelens.runtime.retention import RetentionPurge, purge_lease
from storelens.runtime.runner import Handled, Runner, RunnerCore
from storelens.runtime.sinks import HistorySink
from storelens.runtime.webhooks import close_webhooks, webhook_sinks
from storelens.runtime.transports import END_OF_TOPIC, InProcessTransport
from storelens.stages.analytics import AnalyticsStage
from storelens.stages.base import Publish
from storelens.stages.core import DetectTrackStage
from storelens.stages.registry import stages_for

log = logging.getLogger(__name__)
#: Seconds between two looks for a site version saved through the API (:meth:`EmbeddedPipeline._watch_site`).
SITE_POLL_S = 1.0
#: Seconds :meth:`EmbeddedPipeline.run` waits, at its end, for a look at the site versions in progress.
SITE_WATCH_JOIN_S = 15.0  # longer than the history's own connect / lock timeout (10 s by default)
#: Seconds ingest waits for the stages to apply a site version before it starts the version's new cameras.
SITE_APPLY_TIMEOUT_S = 30.0
#: Seconds the end of :meth:`EmbeddedPipeline.run` gives the alert webhooks to deliver what is queued or waiting to
#: retry (as the analytics service's ``STORELENS_WEBHOOK_CLOSE_S``); what is left then stays in the history's
#: ``webhook_outbox`` for the next run (without a history store: dead-lettered, logged and counted in
#: ``PipelineResult.errors["webhook_undelivered"]``).
WEBHOOK_CLOSE_S = 5.0
#: Customer matches a run's :class:`PipelineResult` keeps (the newest).
CUSTOMER_MATCHES_KEPT = 10_000
#: Topics other processes publish to the pipeline through the history's outbox (the API's erasures), relayed
#: onto the bus when a stage consumes them (:meth:`EmbeddedPipeline._watch_site`).
OUTBOX_TOPICS = (topics.CUSTOMER_ERASURES,)


@dataclass
class PipelineResult:
    frames: int = 0
    frames_per_camera: dict[str, int] = field(default_factory=dict)
    line_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    occupancy: dict[str, int] = field(default_factory=dict)
    crossings: int = 0
    dead_letters: int = 0
    elapsed_s: float = 0.0
    #: Faces stages (``faces.enabled``): counters of the attributes and reid stages.
    faces: dict[str, int] = field(default_factory=dict)
    #: Track -> customer decisions of the reid stage, in order: the last :data:`CUSTOMER_MATCHES_KEPT` (a run of
    #: live cameras never ends; the history keeps them all).
    customer_matches: deque[m.CustomerMatch] = field(default_factory=lambda: deque(maxlen=CUSTOMER_MATCHES_KEPT))
    #: Errors handled by the runners' policy (e.g. ``{"storage": 3}``: three failed writes, retried), cameras whose
    #: source failed (``source``) and unreadable video frames skipped (``decode``, with the stages' undecodable
    #: messages).
    errors: dict[str, int] = field(default_factory=dict)
    #: detect-track's calls by frames per call (``{1: 40, 2: 15}``), when it batches cameras
    #: (``pipeline.batch_cameras`` > 1 and more than one camera); empty otherwise.
    detect_batches: dict[int, int] = field(default_factory=dict)
    #: The run was stopped (:meth:`EmbeddedPipeline.stop`, Ctrl-C, SIGTERM in the CLI) before its sources were all
    #: read and processed: the results cover the frames tracked until then (:attr:`frames`), no more.
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


def check_sources(cameras: Sequence[CameraConfig]) -> None:
    """Fail fast, before loading models, if a file source of ``cameras`` (those in force:
    :func:`site_in_force`) cannot be opened."""
    for cam in cameras:
        if not is_live(cam.source):
            open_capture(cam.source).release()


def version_cameras(config: SiteConfig, update: m.SiteUpdate) -> list[CameraConfig] | None:
    """The cameras of a site version (``None``, logged, when invalid: the stages dead-letter it)."""
    try:
        return with_site_update(config, update).cameras
    except (StoreLensError, ValueError) as exc:
        log.error("site version not applied to ingest", extra={"version": update.version, "error": str(exc)})
        return None


def site_in_force(config: SiteConfig, storage: Any = None) -> tuple[m.SiteUpdate | None, list[CameraConfig]]:
    """The newest site version saved through ``/v1/site`` in ``storage`` (``None``: none, or no storage) and the
    cameras in force: that version's, else the site file's. A camera removed through the API is not among them
    (its file may be gone)."""
    update = storage.site_update(config.store.id) if storage is not None else None
    cameras = version_cameras(config, update) if update is not None else None
    return update, cameras or list(config.cameras)


class EmbeddedPipeline:
    """Runs ingest and every embedded stage (detect-track, faces, analytics, ...) for every camera.

    Args:
        storage: history store written by analytics (none: nothing persisted).
        detector, tracker_factory: detect-track's models (default: from the config).
        on_tracked, on_frame_done: called on the analytics thread after each tracked frame.
        bus: the in-process bus (e.g. to watch ``dead-letter``).
        faces_stages: ``(AttributesStage, ReidStage | None)`` for ``faces.enabled``, or
        gallery: the face gallery the reid stage uses (:func:`storelens.storage.open_gallery`); the retention
            purge keeps it to ``faces.reid.retention_days``. Without ``faces.enabled``: the gallery store an
            earlier run left (:func:`storelens.storage.gallery.open_gallery_store_to_purge`), purged only.
        staff_faces: the opt-in staff face gallery the reid stage reads with ``staff.faces``
            (:class:`storelens.storage.staff_faces.StaffFaceSource`).
        on_short_file: ``on_short_file(camera, frames_read, frame_count)``: a file camera's video ended before
            its frame count (truncated or damaged: the results cover the frames read), called in the camera's
            thread; without it, logged as a warning (:data:`storelens.backends.video.SHORT_VIDEO_MESSAGE`).
    """

    def __init__(
        self,
        config: SiteConfig,
        storage=None,
        detector=None,
        tracker_factory: Callable | None = None,
        on_tracked: Callable[[m.TrackedFrame], None] | None = None,
        on_frame_done: Callable[[str], None] | None = None,
        bus: InProcessBus | None = None,
        faces_stages: tuple | None = None,
        gallery: Any = None,
        staff_faces: Any = None,
        on_short_file: Callable[[CameraConfig, int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.on_short_file = on_short_file
        self.storage = storage
        self.bus = bus or InProcessBus(maxsize=8)
        self.on_tracked = on_tracked
        self.on_frame_done = on_frame_done
        self._stop = threading.Event()
        self._stopped = False  # stop() or Ctrl-C: PipelineResult.interrupted
        self._errors: list[BaseException] = []
        self._detector = detector
        self._tracker_factory = tracker_factory
        self.gallery = gallery
        self.staff_faces = staff_faces
        self.result = PipelineResult()
        self.analytics = AnalyticsStage(config)
        #: ``(AttributesStage, ReidStage)`` when ``faces.enabled`` (built in :meth:`run` unless given).
        self.faces_stages = faces_stages
        self.runners: dict[str, Runner] = {}
        #: The retention purge of the history (:mod:`storelens.runtime.retention`), set by :meth:`run`.
        self.retention: RetentionPurge | None = None
        #: The ingest threads, one per camera (set by :meth:`run`; site versions are applied to it).
        self.ingest: CameraSupervisor | None = None

    def stop(self) -> None:
        """End :meth:`run` (from any thread): each stage's thread stops after the message in hand, and from now on no
        thread waits on a full queue (the stage that would drain it may have stopped already; :meth:`run` hands what
        is queued to the stages after detect-track once their threads have ended); the result says it was stopped
        (:attr:`PipelineResult.interrupted`)."""
        self._stopped = True
        self._stop.set()
        self.bus.close()

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.stop()

    # -- stages ------------------------------------------------------------------------
    def build_stage(self) -> DetectTrackStage:
        from storelens.stages.core import build_detect_track

        return build_detect_track(self.config, self._detector, self._tracker_factory)

    def _deps(self, detect_track: DetectTrackStage | None) -> dict[str, dict[str, Any]]:
        """What only this pipeline can give each stage's factory (models, the gallery)."""
        faces = {"gallery": self.gallery, "stages": self.faces_stages, "staff_faces": self.staff_faces}
        if detect_track is not None:  # a stage built by the caller; the faces stage still needs its gallery
            return {"detect-track": {"stage": detect_track}, "faces": faces}
        return {"detect-track": {"detector": self._detector, "tracker_factory": self._tracker_factory},
                "faces": faces}

    def _observer(self, name: str) -> Callable[[Handled], None]:
        res = self.result
        if name == "faces":
            def faces(h: Handled) -> None:
                res.customer_matches.extend(p.message for p in h.outputs.publish if p.topic == topics.CUSTOMER_MATCHES)
            return faces
        if name != "analytics":
            return lambda h: None

        def analytics(h: Handled) -> None:
            tf = h.value
            if h.topic != topics.TRACKS or h.dead_letter is not None or tf.end_of_stream:
                return
            res.frames += 1
            res.frames_per_camera[tf.camera_id] = res.frames_per_camera.get(tf.camera_id, 0) + 1
            res.crossings += h.outputs.info.get("crossings", 0)
            if self.on_tracked is not None:
                self.on_tracked(tf)
            if self.on_frame_done is not None:
                self.on_frame_done(tf.camera_id)
        return analytics

    # -- run -----------------------------------------------------------------------------
    def run(self, stage: DetectTrackStage | None = None) -> PipelineResult:
        """Run until every file source has ended (or :meth:`stop`); raise the first stage error.

        A camera whose source fails (a file with no decodable frame) ends alone, logged and counted in
        ``errors["source"]``; its error is raised at the end only if every camera failed. Unreadable frames a
        file skipped are counted in ``errors["decode"]``. The history's purge lease is held meanwhile.
        """
        lease = purge_lease(self.storage) if self.storage is not None else None
        if lease is not None:
            lease.hold_for_pipeline()
        try:
            return self._run(stage)
        finally:
            if lease is not None:
                lease.close()

    def _run(self, stage: DetectTrackStage | None) -> PipelineResult:
        # site versions edited through the API: the newest from the start (its cameras checked and started), later
        # ones as they are saved
        first, cameras = site_in_force(self.config, self.storage)
        check_sources(cameras)
        deps = self._deps(stage)
        stages = {e.name: e.build(self.config, **deps.get(e.name, {})) for e in stages_for("embedded", self.config)}
        self.analytics = stages.get("analytics", self.analytics)
        if "faces" in stages:
            self.faces_stages = (stages["faces"].attributes, stages["faces"].reid)
        site_stages = [st for st in stages.values() if topics.SITE_CONFIG in st.inputs]
        if first is not None and (override := site_file_override(self.config, first)):
            log.warning(override, extra={"site_version": first.version})
        if first is not None:
            for st in site_stages:  # nothing is open yet: the outputs (closed tracks) are empty
                st.handle(topics.SITE_CONFIG, first)
        dt = stages.get("detect-track")
        if isinstance(dt, DetectTrackStage):
            dt.warm_up()  # trackers (and their embedders), the snapshots' face detector: before timing
        produced = {topics.FRAMES} | {t for s in stages.values() for t in s.outputs}
        #: Alert webhooks (``alerts.webhooks``): delivered in their own thread, flushed at the end of the run.
        self.webhooks = webhook_sinks(self.config, storage=self.storage)  # kept in the history until delivered
        sinks = {"analytics": ([HistorySink(self.storage)] if self.storage is not None else []) + self.webhooks}
        if "analytics" in stages:
            self._resume_counts()
            self._carry_over_alerts(sinks["analytics"])
        #: The retention purge (privacy.retention) runs in the thread that writes the history.
        self.retention = self._retention()
        chores = {"analytics": [self.retention]} if self.retention is not None else {}
        threads = []
        for name, st in stages.items():  # subscriptions exist before the first frame is published
            transport = InProcessTransport(self.bus, list(st.inputs), ending=[t for t in st.inputs if t in produced],
                                           outputs=st.outputs)
            runner = Runner(RunnerCore(st, sinks.get(name, ()), chores=chores.get(name, ())), transport,
                            should_stop=self._stop.is_set,
                            observers=[self._observer(name)], batch_max=self._batch_max(name, cameras))
            self.runners[name] = runner
            threads.append(threading.Thread(target=self._run_stage, args=(runner,), name=name, daemon=True))
        failed: dict[str, tuple[CameraConfig, StoreLensError]] = {}  # camera id -> the camera, its source's error
        counting = threading.Lock()  # the camera threads count errors

        def count_error(reason: str, n: int = 1) -> None:
            with counting:
                self.result.errors[reason] = self.result.errors.get(reason, 0) + n

        def source_failed(cam: CameraConfig, exc: StoreLensError) -> None:
            # (a file with no decodable frame, ...): that camera ends, its frames before and its end-of-stream
            # marker are analysed, the others go on
            log.error("camera failed", extra={"camera": cam.id, "error": str(exc)})
            failed[cam.id] = (cam, exc)
            count_error("source")

        frame_headers = m.type_headers(m.Frame)  # ingest publishes Frame bytes only
        self.ingest = CameraSupervisor(lambda k, v: self.bus.publish(topics.FRAMES, k, v, headers=frame_headers),
                                       self._stop.is_set,
                                       source_failed, frame_format=self.config.pipeline.frames,
                                       on_bad_frames=lambda cam, n: count_error("decode", n),
                                       reconnect=self.config.ingest, on_short_file=self.on_short_file)
        t0 = time.perf_counter()
        site_watch = None
        # a Ctrl-C (KeyboardInterrupt) from here on stops what was started, also while starting: the camera threads
        # may already be trying their sources (before, one right after their first try left them running for good)
        try:
            for t in threads:
                t.start()
            self.ingest.apply(cameras)
            if self.storage is not None:
                # not one of the stage threads the run waits for to end: it ends with the run (self._stop), joined below
                relayed = [t for t in OUTBOX_TOPICS if any(t in st.inputs for st in stages.values())]
                site_watch = threading.Thread(target=self._watch_site, args=(first.version if first else 0,
                                                                             site_stages, relayed),
                                              name="site-watch", daemon=True)
                site_watch.start()
            while not self._stop.is_set() and not self.ingest.close_if_idle():
                self._stop.wait(0.1)
            if not self._stop.is_set():  # every source ended: end the frames topic
                self.bus.publish(topics.FRAMES, b"", END_OF_TOPIC)
            # until the stages have drained the ended sources, or a stop (a failure is one)
            while any(t.is_alive() for t in threads) and not self._stop.is_set():
                for t in threads:
                    t.join(timeout=0.1)
        except KeyboardInterrupt:
            self.stop()
        self._stop.set()
        self.bus.close()  # unblocks any thread still waiting on a full queue
        self.ingest.stop(timeout_s=5)
        for t in threads:
            if t.is_alive():
                t.join(timeout=30)
        self._end_streams(threads)
        if site_watch is not None:  # a look at the site versions in progress ends before the caller closes storage
            site_watch.join(timeout=SITE_WATCH_JOIN_S)
            if site_watch.is_alive():
                log.warning("the site watcher is still reading the history; run() returns without it",
                            extra={"waited_s": SITE_WATCH_JOIN_S})
        # what fired before the end is delivered (or dead-lettered) before returning, within WEBHOOK_CLOSE_S (an
        # endpoint that is down would otherwise hold the stop for max_attempts tries of every queued message)
        left = close_webhooks(self.webhooks, WEBHOOK_CLOSE_S)
        if left:
            self.result.errors["webhook_undelivered"] = self.result.errors.get("webhook_undelivered", 0) + left
        self._collect(time.perf_counter() - t0)
        self.result.interrupted = self._stopped
        if not self._errors and failed and all(failed.get(c.id, (None,))[0] == c for c in self.ingest.cameras):
            self._errors.append(next(iter(failed.values()))[1])  # no camera could be read: the run failed
        if self._errors:
            err = self._errors[0]
            if isinstance(err, StoreLensError):
                raise err
            raise StoreLensError(f"pipeline failed: {type(err).__name__}: {err}") from err
        return self.result

    def _resume_counts(self) -> None:
        """The day's occupancy, ins and outs (each live camera's, its lines', the store's) the previous process left
        in the history: the analytics stage goes on from them (:meth:`~storelens.stages.analytics.AnalyticsStage.
        resume_counts`), so a restart mid-day does not set them back to 0; and the count windows still open go on
        from their stored rows (:meth:`~storelens.stages.analytics.AnalyticsStage.resume_windows`). Nothing without
        a history; no counts with ``store.occupancy_reset`` ``null`` (never: the crossings stored go back further
        than the rows' counts), logged; a history that does not answer is logged and counted
        (``errors["occupancy_resume"]``), and the counts start at 0."""
        if self.storage is None:
            return
        stage, now = self.analytics, int(time.time() * 1000)
        try:
            read = getattr(self.storage, "count_window_rows", None)
            if read is not None:
                win_s = stage.config.counting.window_s
                open_from = window_start_ms(now, win_s) - win_s * 1000  # the current window and the one before
                stage.resume_windows([w for cam in stage.resumable_cameras() if cam != STORE_OCCUPANCY_ID
                                      for w in read(cam, open_from)], now)
            since = stage.reset.last_reset_ms(now)
            if since is None:
                log.info("store.occupancy_reset is null (never): the occupancy, ins and outs start at 0, not from "
                         "the history (its crossings go back further than the counts of its occupancy rows)")
                return
            rows = {cam: self.storage.occupancy(cam) for cam in stage.resumable_cameras()}
            lines = {cam: self.storage.line_totals(cam, since, row.ts_ms + 1) for cam, row in rows.items()
                     if row is not None and cam != STORE_OCCUPANCY_ID and not stage.reset.void_at(row.ts_ms, now)}
            taken = stage.resume_counts(rows, lines, now)
        except Exception:  # noqa: BLE001 (the history store is down: the run goes on from 0, as before)
            log.exception("could not take the day's occupancy from the history")
            self.result.errors["occupancy_resume"] = self.result.errors.get("occupancy_resume", 0) + 1
            return
        if taken:
            log.info("occupancy taken from the history", extra={"cameras": ",".join(taken)})

    def _carry_over_alerts(self, sinks: Sequence[Any]) -> None:
        """The alerts the previous process left open in the history (an embedded stop leaves them open: nobody knows
        then whether the condition still holds): a live camera's are taken over by the analytics stage, so they
        resolve when the condition ends and do not fire a second time; the others (their rule or camera removed
        or changed meanwhile) are resolved now, in the history and to the webhooks
        (:meth:`~storelens.stages.analytics.AnalyticsStage.adopt_alerts`)."""
        firing = getattr(self.storage, "firing_alerts", None)
        if firing is None:
            return
        try:
            closed = self.analytics.adopt_alerts(firing(), int(time.time() * 1000))
            for sink in sinks:
                sink.write(closed)
        except Exception:  # noqa: BLE001 (the history store is down: the run goes on, the analytics runner reports it)
            log.exception("could not take over the alerts left open by the previous run")
            self.result.errors["alerts_carry_over"] = self.result.errors.get("alerts_carry_over", 0) + 1
            return
        if closed:
            log.info("alerts left open by the previous run resolved", extra={
                "resolved": len(closed), "alerts": ",".join(a.alert_id for a in closed)})

    def _batch_max(self, stage: str, cameras: list[CameraConfig]) -> int:
        """Most frames per detect-track call: one per camera, at most ``pipeline.batch_cameras`` (others: 1)."""
        if stage != "detect-track":
            return 1
        return max(1, min(self.config.pipeline.batch_cameras, len(cameras)))

    def _site_cameras(self, update: m.SiteUpdate) -> list[CameraConfig] | None:
        """The cameras of a site version (``None``, logged, when invalid: the stages dead-letter it)."""
        return version_cameras(self.config, update)

    def _watch_site(self, version: int, site_stages: list | None = None, relayed: Sequence[str] = ()) -> None:
        """Publish each site version saved through the API (``/v1/site``, any process) to the stages, then
        hand its cameras to ingest; and the messages of the ``relayed`` topics the API stored in the history's
        outbox (customer erasures), first, as they are.

        The stages apply it between two messages of their own threads (``site-config``, as in the
        distributed mode); ingest starts a version's new cameras only once every stage in
        ``site_stages`` has it in force (at most :data:`SITE_APPLY_TIMEOUT_S`), so no frame of an
        added camera meets a stage that does not know it. Polled every :data:`SITE_POLL_S` seconds
        (one indexed query).
        """
        take = getattr(self.storage, "take_outbox", None) if relayed else None
        while not self._stop.wait(SITE_POLL_S):
            if take is not None:
                try:
                    for topic, key, value, headers in take(relayed):
                        self.bus.publish(topic, key, value, headers=headers)
                except Exception:  # the history store is down: look again later
                    log.warning("could not read the outbox", exc_info=True)
            try:
                update = self.storage.site_update(self.config.store.id, version)
            except Exception:  # the history store is down: the analytics runner reports it; look again later
                log.warning("could not read the site versions", exc_info=True)
                continue
            if update is None:
                continue
            version = update.version
            cameras = self._site_cameras(update)
            # ingest stays open while the stages take the version (its last file may end meanwhile)
            held = cameras is not None and self.ingest is not None and self.ingest.hold()
            try:
                self.bus.publish(topics.SITE_CONFIG, self.config.store.id.encode(), m.encode(update),
                                 headers=m.type_headers(update))
                if not held:
                    if cameras is not None and self.ingest is not None:
                        log.warning("ingest has ended: the site version's cameras are not started",
                                    extra={"version": version})
                    continue
                deadline = time.monotonic() + SITE_APPLY_TIMEOUT_S
                while (any(getattr(st, "site_version", version) < version for st in site_stages or ())
                       and time.monotonic() < deadline and not self._stop.is_set()):
                    time.sleep(0.02)
                if self._stop.is_set():  # the run is ending: start no camera now
                    break
                diff = self.ingest.apply(cameras)
            finally:
                if held:
                    self.ingest.release()
            log.info("site version applied to ingest", extra={
                "version": version, "added": ",".join(c.id for c in diff.added), "removed": ",".join(diff.removed),
                "restarted": ",".join(c.id for c in diff.restarted)})

    def _retention(self) -> RetentionPurge | None:
        """The scheduled purge of expired personal data: the history (when there is a store and it is enabled)
        and the face gallery (``faces.reid.retention_days``), with or without crops."""
        store = getattr(self.gallery, "store", self.gallery)  # a FaceGallery's store, or a gallery store alone
        purge = RetentionPurge(self.storage, self.config, gallery=self.gallery,
                               known_customer=store.customer_exists if store is not None else None)
        return purge if purge.history or purge.gallery is not None else None

    def _run_stage(self, runner: Runner) -> None:
        try:
            failure = runner.run()
        except BaseException as exc:  # noqa: BLE001 (a failing thread fails the run with its message)
            failure = exc
        if failure is not None:
            self._fail(failure)

    def _end_streams(self, threads: list[threading.Thread]) -> None:
        """After a stop, in pipeline order: each stage downstream of detect-track handles what was queued for it
        (what the stages upstream had finished: tracked frames, crops, final attribute summaries, reid decisions;
        at most the bus' ``maxsize`` + 1 per topic, no new frame), then each stage with an ``end_streams`` method
        ends the cameras still streaming (a live source, a file not read to its end) as at an end of stream, and
        what it still held open reaches the history before :meth:`run` returns (and the caller closes it). The
        faces stage's open tracks get their final summaries and the undecided ones with a good face their reid
        decision; those, and the outputs of what it handled from its queue, are handed to analytics as if
        published (the bus has closed), which writes them. Analytics' sinks (history, webhooks) then get its open
        zone visits' exits, the last zone buckets, heatmap minute and hour, journeys and buying units. This state
        is in memory only: without it a stop lost it. A stage that failed or has not stopped is left alone (and
        gets nothing handed); one whose write fails here (one try: the run is stopping) gets no more of what is
        left for it, nor its own end of streams (whose end-of-stream records, alerts and resolves would follow
        frames not written), logged and counted once in ``errors["end_streams"]``."""
        alive = {t.name for t in threads if t.is_alive()}
        handed: list[Publish] = []  # what the stages ended so far would have published
        for name, runner in self.runners.items():  # pipeline order: faces before analytics
            core = runner.core
            downstream = topics.FRAMES not in core.stage.inputs  # not detect-track: no new frame is analysed
            if runner.failure is not None or not (downstream or hasattr(core.stage, "end_streams")
                                                  or any(p.topic in core.stage.inputs for p in handed)):
                continue
            if name in alive:
                log.warning("a stage has not stopped: what was queued for it and the cameras still streaming are not "
                            "ended in it", extra={"stage": name})
                continue
            end: Handled | None = None  # what its own end_streams wrote
            try:
                # first what its queues held (published before anything handed now), then what is handed
                left: list[BusMessage | Publish] = runner.transport.take_queued() if downstream else []
                left += [p for p in handed if p.topic in core.stage.inputs]
                for i, item in enumerate(left):
                    if isinstance(item, BusMessage):
                        h = core.write_sinks(core.process(item, runner.transport.base_topic(item.topic)))
                    else:
                        h = core.deliver(item.topic, item.camera_id, item.message)
                    if h.stop is not None:  # a sink that failed (or the stage's "stop" verdict): no more tries
                        log.error("what was left for a stage at the stop was not all handled and written", extra={
                            "stage": name, "topic": h.topic, "error": repr(h.stop), "left": len(left) - i})
                        self.result.errors["end_streams"] = self.result.errors.get("end_streams", 0) + 1
                        break
                    handed += h.outputs.publish
                    for obs in runner.observers:  # analytics' frames and callbacks, faces' customer matches
                        obs(h)
                else:  # all written: the cameras still streaming are ended (not after a failed write: their
                    end = core.end_streams()  # end-of-stream rows, alerts and resolves would follow lost frames)
            except Exception:  # noqa: BLE001 (the run has stopped: report it, return what was counted)
                log.exception("ending the cameras' streams at the stop failed", extra={"stage": name})
                self.result.errors["end_streams"] = self.result.errors.get("end_streams", 0) + 1
                continue
            if end is not None:
                handed += end.outputs.publish
                for obs in runner.observers:  # e.g. the faces' decisions in PipelineResult.customer_matches
                    obs(end)

    def _collect(self, elapsed_s: float) -> None:
        res = self.result
        res.elapsed_s = elapsed_s
        for cam in self.analytics.config.cameras:  # the cameras in force at the end (site versions)
            res.line_counts[cam.id] = self.analytics.line_counts(cam.id)
            res.occupancy[cam.id] = self.analytics.occupancy[cam.id].value
        for r in self.runners.values():
            res.dead_letters += r.core.dead_letters
            for k, v in r.core.errors.items():
                res.errors[k] = res.errors.get(k, 0) + v
        dt = self.runners.get("detect-track")
        if dt is not None:
            res.detect_batches = dict(sorted(dt.batch_sizes.items()))
        faces = self.runners.get("faces")
        if faces is not None:
            res.faces = dict(faces.core.stage.stats)
