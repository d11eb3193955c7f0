"""The faces services end to end: six services as separate processes on real Kafka,
PostgreSQL and Redis (``scripts/stack.sh up``), returning customers across two visits.

Two short videos are made from the labelled identity photos
(:func:`storelens.backends.face_video.write_visit_video`): visit 1 on camera ``entrance``
shows obama, biden and kit_harington; visit 2, three hours later on camera
``checkout``, shows obama (another photo), alex_lacamoire and biden (another
photo). Visit 1 is ingested and fully processed before visit 2, then the API must
report obama and biden as returning customers (one customer id each across both
visits) and kit and alex as first-time single-visit customers, per-track
demographics for the six tracks, and erase a customer everywhere (history,
gallery, the reid service's in-memory index). Bad crops (a corrupt JPEG, an
unknown camera, bytes that are no PersonCrop) and bad messages on the analytics
inputs must land in ``dead-letter`` while every service keeps running.

Every expectation is checked and the failures are reported together at the end
(the erasure and dead-letter checks still run when an identity check fails).
"""
from __future__ import annotations

import time

import httpx
import pytest

from storelens.config import KafkaConfig
from storelens.contract import messages as m
from storelens.runtime.localdeploy import KAFKA, LocalDeployment
from storelens.paths import asset

pytestmark = pytest.mark.slow

#: Each photo is held 2.4 s; the empty gap between two people (3.5 s) is longer than the
#: tracker keeps a lost track (the default ``tracker.track_buffer``, 60 frames at 25 fps = 2.4 s, which
#: detect-track keeps as 2.4 s = 24 frames of this 10 fps video), so every photo is its own track.
#: With write_visit_video's default gap (12 frames) detect-track re-acquires the
#: previous person's track for the next one (alex_lacamoire and biden2 became one track on
#: ``checkout``, in the embedded mode too), and a track gets one customer decision only.
FPS, HOLD, GAP = 10.0, 24, 35
FRAME_MS = 1000.0 / FPS
T0 = 1_767_225_600_000
HOUR_MS = 3_600_000
VISITS = {
    "entrance": (T0, [("obama", "obama.jpg"), ("biden", "biden.jpg"), ("kit_harington", "john1.jpeg")]),
    "checkout": (T0 + 3 * HOUR_MS, [("obama", "obama2.jpg"), ("alex_lacamoire", "img1.jpg"),
                                    ("biden", "biden2.jpg")]),
}
PIPELINE = ("api", "analytics", "attributes", "reid", "detect-track")


def _photo(person: str, name: str):
    return asset("faces", "identities", person, name)


def _n_frames(path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _person_at(camera: str, ts_ms: int) -> str:
    """Who the video of ``camera`` shows at ``ts_ms`` (each photo: GAP empty frames, then HOLD frames)."""
    start, people = VISITS[camera]
    frame = (ts_ms - start) / FRAME_MS
    i = min(max(int((frame - GAP) // (HOLD + GAP)), 0), len(people) - 1)
    return people[i][0]


def _site(tmp_path, cameras: list[str]) -> dict:
    cams = []
    for cam in cameras:
        start, people = VISITS[cam]
        video = tmp_path / f"{cam}.avi"
        if not video.exists():
            from storelens.backends.face_video import write_visit_video

            write_visit_video([_photo(p, n) for p, n in people], video, fps=FPS, hold_frames=HOLD, gap_frames=GAP)
        cams.append({"id": cam, "source": str(video), "start_ts_ms": start})
    return {"store": {"id": "faces-e2e"}, "cameras": cams, "faces": {"enabled": True},
            "privacy": {"k_min": 1}}  # exact demographics of a few people (k-anonymity: tests/test_privacy.py)


def _read_topic(dep: LocalDeployment, base: str, cls, expect: int, timeout_s: float = 30) -> list:
    from storelens.runtime.kafka import consume_all

    # anything beyond the expected count arrives within a moment too (settle_s)
    msgs = consume_all(KafkaConfig(bootstrap_servers=KAFKA), f"{dep.uid}.{base}", timeout_s=timeout_s,
                       expect=expect, settle_s=2)
    return [m.decode(cls, msg.value) for msg in msgs]


def _wait(what: str, cond, dep: LocalDeployment, timeout_s: float = 240, logs=("reid", "attributes")) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for name, proc in dep.procs.items():
            if proc.poll() is not None and not (name == "ingest" and proc.returncode == 0):
                raise AssertionError(f"{name} exited {proc.returncode}:\n{dep.log(name)}")
        try:
            if cond():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(f"--- {n}\n{dep.log(n)}" for n in logs))


def _drained(dep: LocalDeployment, extra_crops: int, extra_attrs: int, extra_matches: int) -> bool:
    """Every crop detect-track published was processed by attributes and reid, and every
    summary/match they published was written by analytics (its processing time is observed after the write)."""
    crops = dep.metric("detect-track", "storelens_messages_out_total", "person-crops") + extra_crops
    if not (crops and dep.metric("attributes", "storelens_messages_in_total", "person-crops") >= crops
            and dep.metric("reid", "storelens_messages_in_total", "person-crops") >= crops):
        return False
    attrs = dep.metric("attributes", "storelens_messages_out_total", "track-attributes") + extra_attrs
    matches = dep.metric("reid", "storelens_messages_out_total", "customer-matches") + extra_matches
    return (dep.metric("analytics", "storelens_processing_seconds_count", "track-attributes") >= attrs
            and dep.metric("analytics", "storelens_processing_seconds_count", "customer-matches") >= matches)


def _ingest_visit(dep: LocalDeployment, tmp_path, camera: str, extra: tuple[int, int, int], inject=None) -> None:
    """Run ingest on ``camera`` alone until its video is fully processed by every service."""
    cfg = dep.write_config(_site(tmp_path, [camera]), suffix=f"-ingest-{camera}")
    dep.start("ingest", cfg)
    dep.wait_ready("ingest")
    if inject is not None:
        _wait("first crops", lambda: dep.metric("detect-track", "storelens_messages_out_total", "person-crops") > 0,
              dep)
        inject()
    start, _ = VISITS[camera]
    last_ts = start + int(round((_n_frames(tmp_path / f"{camera}.avi") - 1) * FRAME_MS))
    dep.wait_done(camera, last_ts)
    _wait(f"{camera}: faces drained", lambda: _drained(dep, *extra), dep)
    assert dep.stop("ingest") == 0


@pytest.fixture
def deployment(tmp_path):
    dep = LocalDeployment(tmp_path, _site(tmp_path, list(VISITS)))
    try:
        yield dep
    finally:
        for proc in dep.procs.values():
            if proc.poll() is None:
                proc.kill()


def test_returning_customers_across_two_visits(deployment, tmp_path):
    from storelens.runtime.kafka import KafkaBus

    dep = deployment
    api = lambda path, **params: dep.api.get(path, params=params)  # noqa: E731
    problems: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            problems.append(what)

    t_start = time.time()
    for name in PIPELINE:
        dep.start(name)
    for name in PIPELINE:
        dep.wait_ready(name)
    t_ready = time.time()

    # -- bad input while visit 1 runs: each crop is dead-lettered by attributes and by reid -----------
    crops_topic = f"{dep.uid}.person-crops"
    bad_crops = [
        ("entrance", m.PersonCrop(camera_id="entrance", seq=10_000, ts_ms=T0, track_id=77,
                                  jpeg=b"\xff\xd8\xff\xe0 corrupt", bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=10, y2=10))),
        ("lobby", m.PersonCrop(camera_id="lobby", seq=1, ts_ms=T0, track_id=1, jpeg=b"\xff\xd8")),
        ("entrance", None),  # not a PersonCrop at all
    ]

    def inject() -> None:
        p = KafkaBus(KafkaConfig(bootstrap_servers=KAFKA), f"{dep.uid}-test")
        for key, crop in bad_crops:
            value = m.encode(crop or m.PersonCrop(camera_id="entrance", jpeg=b"x" * 64))
            p.publish(crops_topic, key.encode(), value if crop is not None else value[:-20])
        # one bad message on each of the analytics' faces inputs
        p.publish(f"{dep.uid}.track-attributes", b"entrance", b"\x0a\xff\xff garbage")
        p.publish(f"{dep.uid}.customer-matches", b"lobby",
                  m.encode(m.CustomerMatch(event_id="x", camera_id="lobby", customer_id="cust-x")))
        p.close(30)  # raises unless every message was delivered

    _ingest_visit(dep, tmp_path, "entrance", extra=(len(bad_crops), 1, 1), inject=inject)
    t_visit1 = time.time()
    matches_v1 = dep.metric_value("reid", "storelens_customer_matches_total")
    expect(dep.metric_value("reid", "storelens_customer_matches_total", result="new") == 3,
           f"visit 1: expected 3 new customers, reid reports {matches_v1} matches")

    _ingest_visit(dep, tmp_path, "checkout", extra=(len(bad_crops), 1, 1))
    t_visit2 = time.time()

    # -- customers ---------------------------------------------------------------------------------
    listing = api("/v1/customers", page_size=500).json()
    customers = {c["customer_id"]: c for c in listing["items"]}
    seen: dict[tuple[str, str], list[str]] = {}  # (camera, person) -> customers matched to its tracks
    details = {}
    for cid in customers:
        details[cid] = detail = api(f"/v1/customers/{cid}").json()
        for t in detail["tracks"]:
            seen.setdefault((t["camera_id"], _person_at(t["camera_id"], t["ts_ms"])), []).append(cid)
    observed = {f"{cam}/{person}": cids for (cam, person), cids in sorted(seen.items())}
    report = (f"customers: {[(c['customer_id'], c['visits'], c['returning'], c['cameras']) for c in listing['items']]}"
              f"; tracks by person: {observed}")
    for cam, (_, people) in VISITS.items():
        for person, _ in people:
            cids = seen.get((cam, person), [])
            expect(len(cids) == 1, f"{cam}/{person}: expected one matched track, got {cids} ({report})")
    one = {k: v[0] for k, v in seen.items() if len(v) == 1}
    for person in ("obama", "biden"):
        a, b = one.get(("entrance", person)), one.get(("checkout", person))
        expect(a is not None and a == b, f"{person}: not the same customer in both visits ({report})")
        if a is not None and a == b:
            c = customers[a]
            expect(c["returning"] and c["visits"] == 2 and c["cameras"] == ["checkout", "entrance"],
                   f"{person}: expected a returning customer with 2 visits, got {c}")
            visits = details[a]["visits"]
            expect([v["visit_no"] for v in visits] == [1, 2] and visits[1]["first_seen_ts_ms"] >= T0 + 3 * HOUR_MS,
                   f"{person}: visits {visits}")
            expect([t["returning"] for t in details[a]["tracks"]] == [False, True],
                   f"{person}: tracks {details[a]['tracks']}")
    for cam, person in (("entrance", "kit_harington"), ("checkout", "alex_lacamoire")):
        cid = one.get((cam, person))
        expect(cid is not None and not customers[cid]["returning"] and customers[cid]["visits"] == 1
               and customers[cid]["cameras"] == [cam], f"{person}: expected a new single-visit customer ({report})")
    distinct = {one.get(k) for k in (("entrance", "obama"), ("entrance", "biden"), ("entrance", "kit_harington"),
                                     ("checkout", "alex_lacamoire"))}
    expect(len(distinct) == 4 and None not in distinct, f"the four people are not four customers ({report})")
    expect(listing["total"] == 4, f"expected 4 customers, got {listing['total']} ({report})")
    returning = api("/v1/customers", returning="true").json()
    expect(returning["total"] == 2, f"expected 2 returning customers, got {returning['total']} ({report})")
    for cid, d in details.items():  # the attributes of matched tracks were joined in
        expect(all(t["attributes"] is not None and t["attributes"]["final"] for t in d["tracks"]),
               f"{cid}: a matched track has no final attributes: {d['tracks']}")

    # -- demographics: one row per track with faces ---------------------------------------------------
    demo = {cam: api("/v1/demographics", camera_id=cam).json() for cam in VISITS}
    store = api("/v1/demographics").json()
    for cam in VISITS:
        expect(demo[cam]["tracks"] == 3, f"{cam}: expected 3 tracks with faces, got {demo[cam]}")
        expect(sum(demo[cam]["gender"].values()) == demo[cam]["tracks"], f"{cam}: {demo[cam]}")
    expect(store["tracks"] == sum(d["tracks"] for d in demo.values()), f"store: {store}")

    # -- dead letters: the services skipped the bad messages and kept going ---------------------------
    letters = _read_topic(dep, "dead-letter", m.DeadLetter, expect=2 * len(bad_crops) + 2)
    by_service: dict[str, list[str]] = {}
    for dl in letters:
        by_service.setdefault(dl.service, []).append(dl.reason)
    for svc in ("attributes", "reid"):
        reasons = sorted(by_service.get(svc, []))
        expect(len(reasons) == 3 and any("not a decodable JPEG" in r for r in reasons)
               and any("unknown camera 'lobby'" in r for r in reasons)
               and any("cannot decode storelens.v1.PersonCrop" in r for r in reasons), f"{svc}: {reasons}")
        expect(dep.metric(svc, "storelens_dead_letters_total", "person-crops") == 3, f"{svc}: dead letter metric")
    analytics_reasons = sorted(by_service.get("analytics", []))
    expect(len(analytics_reasons) == 2 and any("cannot decode storelens.v1.TrackAttributes" in r
                                               for r in analytics_reasons)
           and any("unknown camera 'lobby'" in r for r in analytics_reasons), f"analytics: {analytics_reasons}")

    # -- metrics of the faces services --------------------------------------------------------------
    attributes_metrics = httpx.get(dep.url("attributes", "/metrics")).text
    for name in ("storelens_face_crops_total", "storelens_faces_total", "storelens_tracks_final_total",
                 "storelens_consumer_lag"):
        expect(name in attributes_metrics, f"attributes exports no {name}")
    expect(dep.metric_value("attributes", "storelens_faces_total", result="accepted") >= 6,
           "attributes: fewer than 6 accepted faces")
    expect(dep.metric_value("reid", "storelens_returning_customers_total") == 2,
           f"reid: {dep.metric_value('reid', 'storelens_returning_customers_total')} returning matches, expected 2")
    gallery_before = dep.metric_value("reid", "storelens_gallery_customers")
    expect(gallery_before == len(customers), f"reid gallery has {gallery_before} customers, API {len(customers)}")

    # -- right to erasure: API -> stores -> customer-erasures -> reid's index ---------------------------
    victim = one.get(("entrance", "obama")) or next(iter(customers), None)
    assert victim is not None, f"no customer at all to erase ({report}); problems: {problems}"
    r = dep.api.delete(f"/v1/customers/{victim}")
    assert r.status_code == 204, r.text
    assert api(f"/v1/customers/{victim}").status_code == 404
    assert victim not in {c["customer_id"] for c in api("/v1/customers", page_size=500).json()["items"]}
    _wait("reid applied the erasure",
          lambda: dep.metric_value("reid", "storelens_customer_erasures_total", result="deleted") >= 1, dep,
          timeout_s=60)
    assert dep.metric_value("reid", "storelens_gallery_customers") == gallery_before - 1
    assert "customer erased" in dep.log("reid", tail=200_000)
    erasures = _read_topic(dep, "customer-erasures", m.CustomerErasure, expect=1)
    assert [e.customer_id for e in erasures] == [victim]
    assert dep.api.delete(f"/v1/customers/{victim}").status_code == 404
    # every row derived from the customer goes, their tracks' face attributes too (privacy, issue 11 item 7):
    # the store's demographics lose at least the erased customer's tracks, and nobody else's
    after = api("/v1/demographics").json()["tracks"]
    erased_tracks = {(t["camera_id"], t["track_id"]) for t in details[victim]["tracks"]}
    assert 1 <= store["tracks"] - after and after >= 0, (store["tracks"], after, erased_tracks)

    # -- every service healthy and ready, and stops cleanly ------------------------------------------
    for name in PIPELINE:
        assert httpx.get(dep.url(name, "/healthz")).status_code == 200, name
        assert httpx.get(dep.url(name, "/readyz")).status_code == 200, (name, httpx.get(dep.url(name, "/readyz")).text)
    t_end = time.time()
    print(f"\nfaces e2e: services ready {t_ready - t_start:.1f} s, visit 1 {t_visit1 - t_ready:.1f} s, "
          f"visit 2 {t_visit2 - t_visit1:.1f} s, checks {t_end - t_visit2:.1f} s; {report}")
    dep.shutdown()  # ingest already stopped (exit 0) after visit 2
    assert not problems, "\n".join(problems)
