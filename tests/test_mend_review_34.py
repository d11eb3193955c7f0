"""Mend of the customer erasure's retry, the analytics service's stall bound, the trackers' bad-box filter.

1. Whether a retry of a customer erasure the stores no longer hold answers 204 was read from the audit log (an
   earlier 503 of the same path): a retry sent before the first request's audit row (another API worker, while the
   first still waits for the broker) answered 404, and a 503 of an id that never existed (the notification failed)
   turned its later 404 into 204. Now a ``pending_erasures`` row (migration 0023) is written in the history's
   erasure transaction and removed once the notification went out.
2. The analytics service's ``STORELENS_ANALYTICS_SINK_STALL_S`` (and its siblings ``_STUCK_S``,
   ``STORELENS_SHUTDOWN_TIMEOUT_S``, ``STORELENS_WEBHOOK_CLOSE_S``) were read at import, unchecked: ``0`` made every
   write "stalled", a typo was a ValueError traceback at import. Now ``AnalyticsSettings`` (pydantic), read at start.
3. The bad-box filter ran twice per frame (detect-track, then the tracker's update); now once (``Detections.checked``),
   the trackers still filtering what other callers give them.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import numpy as np
import pytest

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.face_index import Visit
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import PostgresStorage, SqliteStorage
from storelens.storage.gallery import SqlGalleryStore

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


# -- 1. a customer erasure's retry answers by a pending-erasure record, not by the audit log -------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def stores(request, tmp_path) -> Iterator[tuple[object, SqlGalleryStore]]:
    """History and gallery: two SQLite files, or one PostgreSQL schema (distributed mode's ``gallery_*`` tables)."""
    if request.param == "sqlite":
        history, gallery = SqliteStorage(str(tmp_path / "h.db")), SqlGalleryStore(tmp_path / "g.db", dim=4)
        yield history, gallery
        gallery.close()
        history.close()
        return
    import psycopg

    schema = f"test_mend34_{uuid.uuid4().hex[:12]}"
    history = PostgresStorage(PG_DSN, schema=schema)
    gallery = SqlGalleryStore(PG_DSN, dim=4, schema=schema)
    yield history, gallery
    gallery.close()
    history.close()
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _site():
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "shop.mp4"}]})


def _customer(history, gallery, customer_id: str, *, in_history: bool = True) -> None:
    gallery.add_customer(customer_id, T0)
    gallery.save_visit(Visit(customer_id, 1, T0, T0 + 2_000, ("c",)))
    if in_history:
        history.write_customer_matches([m.CustomerMatch(event_id=f"c:{customer_id}", camera_id="c", track_id=7,
                                                        customer_id=customer_id, ts_ms=T0 + 1_000)])


@pytest.mark.parametrize(("customer", "in_history", "fails", "expected"), [
    # the notification fails once (503: the stores erased); the retry sends it (204); a repeat is 404
    pytest.param("cust-1", True, 1, [503, 204, 404], id="retry-then-repeat"),
    pytest.param("cust-1", False, 1, [503, 204, 404], id="gallery-only-retry-then-repeat"),
    # an id that never existed: its 503 (the notification failed) does not make the retry a 204
    pytest.param("typo", None, 1, [503, 404, 404], id="never-erased-id-after-a-503"),
    pytest.param("cust-1", True, 0, [204, 404], id="erased-with-a-204"),
])
def test_erasure_retry_answers_by_the_pending_record(stores, customer, in_history, fails, expected) -> None:
    history, gallery = stores
    if in_history is not None:
        _customer(history, gallery, customer, in_history=in_history)
    sent: list[str] = []

    def on_erasure(customer_id: str) -> None:
        sent.append(customer_id)
        if len(sent) <= fails:
            raise ConnectionError("the broker did not answer")

    c = signed_in_client(create_app(_site(), history, gallery_store=gallery, on_erasure=on_erasure))
    assert [c.delete(f"/v1/customers/{customer}").status_code for _ in expected] == expected
    assert sent == [customer] * len(expected)  # the notification is sent by every request
    assert not history.erasure_pending(customer)
    assert history.customer_tracks(customer) == [] and not gallery.customer_exists(customer)


def test_a_retry_sent_before_the_first_request_answered_is_204(stores) -> None:
    """Another API worker takes the retry while the first request still waits for the broker (its 503 and audit
    row not written yet): the retry sends the notification and answers 204 (it was 404: no audited 503 yet)."""
    history, gallery = stores
    _customer(history, gallery, "cust-1")
    site = _site()
    other_worker = signed_in_client(create_app(site, history, gallery_store=gallery, on_erasure=lambda _: None))
    retried: list[int] = []

    def broker_down(customer_id: str) -> None:
        retried.append(other_worker.delete(f"/v1/customers/{customer_id}").status_code)
        raise ConnectionError("the broker did not answer")

    first = signed_in_client(create_app(site, history, gallery_store=gallery, on_erasure=broker_down))
    assert first.delete("/v1/customers/cust-1").status_code == 503
    assert retried == [204]
    assert not history.erasure_pending("cust-1")  # the retry's notification went out


# -- 2. the analytics service's own settings: typed, read at start, checked ------------------------------------------

def _analytics_app(tmp_path, **kw):
    import asyncio

    from storelens.runtime.analytics_app import AnalyticsApp
    from storelens.runtime.service import ServiceRuntime

    loop = asyncio.new_event_loop()
    st = SqliteStorage(str(tmp_path / "a.db"))
    try:
        return AnalyticsApp(parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}]}), st,
                            None, ServiceRuntime("analytics", port=0), loop=loop, **kw)
    finally:
        loop.close()
        st.close()


@pytest.mark.parametrize(("variable", "value", "field", "expected"), [
    ("STORELENS_ANALYTICS_SINK_STALL_S", "7.5", "sink_stall_s", 7.5),
    ("STORELENS_ANALYTICS_STUCK_S", "90", "stuck_s", 90.0),
    ("STORELENS_WEBHOOK_CLOSE_S", "0", "webhook_close_s", 0.0),
    ("STORELENS_SHUTDOWN_TIMEOUT_S", "12", "shutdown_timeout_s", 12.0),
    ("STORELENS_ANALYTICS_SINK_STALL_S", "", "sink_stall_s", 60.0),  # empty: the default
])
def test_analytics_settings_are_read_when_the_service_starts(tmp_path, monkeypatch, variable, value, field,
                                                             expected) -> None:
    """A variable set after the module was imported is the one in force (it was read at import: a test, or an
    embedding program that sets it later, got the import-time value)."""
    import storelens.runtime.analytics_app  # noqa: F401 (imported before the variable is set)

    monkeypatch.setenv(variable, value)
    app = _analytics_app(tmp_path)
    if field == "sink_stall_s":
        assert app.sink_stall_s == expected  # what the readiness check compares with
    assert getattr(app.settings, field) == expected


@pytest.mark.parametrize(("variable", "value"), [
    ("STORELENS_ANALYTICS_SINK_STALL_S", "0"),       # every write 'stalled': never ready
    ("STORELENS_ANALYTICS_SINK_STALL_S", "-5"),
    ("STORELENS_ANALYTICS_SINK_STALL_S", "nan"),
    ("STORELENS_ANALYTICS_STUCK_S", "5m"),
    ("STORELENS_WEBHOOK_CLOSE_S", "-1"),
    ("STORELENS_ANALYTICS_AUTO_OFFSET_RESET", "earlist"),
])
def test_an_analytics_setting_that_is_not_valid_is_an_error_naming_it(tmp_path, monkeypatch, variable, value) -> None:
    from storelens.errors import ConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        _analytics_app(tmp_path)


def test_the_analytics_service_stops_at_start_on_a_setting_that_is_not_valid(repo_root, tmp_path) -> None:
    """Exit code 2 and one line naming the variable (it was a ValueError traceback at import, exit code 1)."""
    import subprocess
    import sys

    env = {**os.environ, "STORELENS_ANALYTICS_SINK_STALL_S": "a minute", "STORELENS_HTTP_PORT": "0",
           "STORELENS_CONFIG": str(tmp_path / "missing.yaml")}
    r = subprocess.run([sys.executable, str(repo_root / "services" / "analytics" / "main.py")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "STORELENS_ANALYTICS_SINK_STALL_S (sink_stall_s)" in r.stderr and "Traceback" not in r.stderr


# -- 3. the bad-box filter runs once per frame in detect-track, the trackers keep theirs for other callers -----------

@pytest.fixture(scope="module")
def images() -> list:
    import cv2

    from storelens.paths import asset

    cap = cv2.VideoCapture(str(asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")))
    out = [cap.read()[1] for _ in range(3)]
    cap.release()
    assert all(f is not None for f in out)
    return out


NAN_BOX = [float("nan"), 10, 60, 200]
VALID_BOX = [285.0, 160.0, 345.0, 330.0]


@pytest.mark.parametrize("backend", ["bytereid", "deepsort"])
def test_a_tracker_called_directly_still_leaves_out_a_nan_box(images, backend) -> None:
    """The CLI's ``storelens track`` and the benches call the trackers with the detector's own result."""
    from storelens.backends.detectors.base import Detections
    from storelens.backends.trackers import tracker_factory

    dets = Detections(np.array([NAN_BOX, VALID_BOX], np.float32), np.array([0.9, 0.9], np.float32),
                      np.zeros(2, np.int32))
    config = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                           "tracker": {"backend": backend}})
    tracker = tracker_factory(config.tracker)()
    for image in images:  # deepsort confirms a track after n_init frames
        tracks = tracker.update(image, dets)
    assert len(tracks) <= 1 and all(np.isfinite(tracks.bbox_xyxy).all(axis=1))


@pytest.mark.parametrize("batch", [False, True], ids=["one-frame", "batch"])
def test_detect_track_checks_each_frames_boxes_once_and_counts_each_bad_box_once(images, monkeypatch, batch) -> None:
    """Before, ``Detections.well_formed`` ran twice per frame (the stage, then the tracker's update)."""
    from storelens.backends.detectors import build_detector
    from storelens.backends.detectors.base import Detections
    from storelens.backends.video import RawFrame, encode_frame
    from storelens.contract import topics
    from storelens.stages.core import build_detect_track

    doc = {"store": {"id": "s"}, "cameras": [{"id": "c1", "source": "rtsp://cam/one"}], "heatmap": {"enabled": False}}
    config = parse_config(doc)
    real = build_detector(config.detector)

    class WithABadBox:  # the real detector's boxes and one NaN box (a model fed a broken frame)
        def detect(self, image):
            d = real.detect(image)
            return Detections(np.vstack([d.bbox_xyxy, np.array([NAN_BOX], np.float32)]).astype(np.float32),
                              np.append(d.confidence, np.float32(0.9)).astype(np.float32),
                              np.append(d.class_id, 0).astype(np.int32))

    stage = build_detect_track(config, detector=WithABadBox())
    checks: list[int] = []
    well_formed = Detections.well_formed

    def counted(self):
        checks.append(len(self))
        return well_formed(self)

    monkeypatch.setattr(Detections, "well_formed", counted)
    outs = []
    for i, image in enumerate(images):
        frame = encode_frame("c1", i + 1, RawFrame(i + 1, T0 + i * 80, image), None, 90, frame_format="bgr")
        outs += stage.handle_batch(topics.FRAMES, [frame]) if batch else [stage.handle(topics.FRAMES, frame)]
    assert len(checks) == len(images)  # once per frame
    assert [o.info.get("errors") for o in outs] == [{"bad_box": 1}] * len(images)  # each bad box counted once
    assert all(len(o.publish[0].message.tracks) > 0 for o in outs[1:])
