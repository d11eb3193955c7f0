"""An embedded run starts every camera's tracker session afresh: it never inherits the reid decisions a killed run
left in the gallery.

The reid stage keeps each track's decision (customer, staff, abstained, erased) in the gallery's ``track_decisions``
by ``(camera, track id)``, and forgets a camera's at the end of its stream. A run killed uncleanly (SIGKILL, power
loss) ends no stream: its decisions stay. Track ids are the session's base (its first frame's time) + the tracker's
id, and a file camera's timestamps are the same in every run, so the next run of the file has the same track ids:
before, its tracks took the killed run's decisions (a person published as another customer, or never decided
because an erased customer's track once had the id), never decided from their own faces. Now the faces stage
forgets the camera's stored decisions at its first crop (``ReidStage.start_session``), as an end of stream does,
but the ``erased`` ones: they keep a rerun from enrolling an erased person again (its privacy wins over the rare
other person with that track id).

Real run: ingest -> YOLO -> the default tracker -> crops -> YuNet -> gate -> dlib -> FAISS over a video of labelled
identity photos of the shared assets (as tests/test_staff_faces.py), the gallery and history in SQLite files.
"""
from __future__ import annotations

import pathlib

import pytest

from storelens.backends.face_index import TrackDecision
from storelens.backends.face_video import write_visit_video
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages.faces import match_event_id
from storelens.storage import SqlStorage, open_gallery
from storelens.storage.gallery import open_gallery_store

FACES = asset("faces")
pytestmark = [pytest.mark.slow,  # the real detector, tracker and face models over a video
              pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")]

T0 = 1_767_225_600_000
PEOPLE = [("obama", "obama.jpg"), ("biden", "biden.jpg")]


def run(cfg) -> dict[int, str]:
    """One embedded run of the file to its end: track id -> the customer published for it."""
    with SqlStorage(cfg.storage.path) as storage:
        gallery = open_gallery(cfg)
        try:
            res = EmbeddedPipeline(cfg, storage=storage, gallery=gallery).run()
        finally:
            gallery.store.close()
    assert len({x.track_id for x in res.customer_matches}) == len(res.customer_matches), res.customer_matches
    return {x.track_id: x.customer_id for x in res.customer_matches}


def test_a_run_decides_its_tracks_on_their_own_faces_not_on_a_killed_runs_decisions(tmp_path: pathlib.Path):
    # 48 frames: each person for 12, 8 empty frames before each and after the last; 3 crops of each person
    video = write_visit_video([FACES / "identities" / p / f for p, f in PEOPLE], tmp_path / "visit.avi",
                              size_wh=(640, 360), hold_frames=12, gap_frames=8)
    cfg = parse_config({
        "store": {"id": "s"}, "cameras": [{"id": "door", "source": str(video), "start_ts_ms": T0}],
        "tracker": {"track_buffer": 5}, "crops": {"every_n_frames": 4},  # lost tracks end within a gap
        "storage": {"backend": "sqlite", "path": str(tmp_path / "history.db")},
        "faces": {"enabled": True}})
    first = run(cfg)  # ends cleanly: its decisions are forgotten at the end of the stream
    assert len(first) == len(set(first.values())) == len(PEOPLE), first  # two people, two customers
    obama, biden = sorted(first)  # the people come one after the other: track ids in their order

    # what a run killed after deciding these track ids leaves (its tracker config other, or a customer erased
    # since): obama's track erased, biden's the customer obama is (its match published)
    store = open_gallery_store(cfg)
    try:
        assert store.track_decision("door", obama) is None
        wrong = m.CustomerMatch(event_id=match_event_id("door", biden), camera_id="door", track_id=biden,
                                ts_ms=T0 + 1_000, customer_id=first[obama])
        for track, decision in ((obama, TrackDecision("erased", ts_ms=T0 + 1_000)),
                                (biden, TrackDecision("customer", first[obama], None, T0 + 1_000, m.encode(wrong)))):
            store.save_track_decision("door", track, decision)
    finally:
        store.close()

    second = run(cfg)
    # each track decided on its own faces: the same customer as the first run (was: biden's published as obama),
    # but for the track an erased decision was kept of: left undecided (an erased person is never enrolled again by
    # a rerun of the file, tests/test_breaker_cli_followups_9.py; here the trade-off: it was obama, not erased)
    assert second == {biden: first[biden]}
    store = open_gallery_store(cfg)
    try:
        assert store.counts()["customers"] == len(PEOPLE)  # nobody enrolled twice, nobody lost
        # the clean end forgot them, but for the erased decision (kept until retention purges it: a rerun of the file
        # never enrols an erased person again, tests/test_faces_review_31.py)
        assert [getattr(store.track_decision("door", t), "decision", None) for t in (obama, biden)] == ["erased", None]
    finally:
        store.close()
