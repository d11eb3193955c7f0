"""Follow-ups of the faces review fixes, on the real stages, real models (YuNet, dlib) and the labelled photos.

1. A reid track left undecided because its faces show two people (an id switch) stays undecided when it comes
   back after an idle end: it was forgotten and its later faces made a new customer.
2. An erasure's embeddings leave memory once their time (the ``person-crops`` retention) is up even when no crop
   comes (a store closed overnight): on the stage's tick, on any other message, and at the embedded stop.
3. The API deletes a customer's rows, then sends the erasure request: a match that finds the customer gone
   meanwhile enrols no new customer from that face, and the embeddings it drops wait for the request, which then
   still drops the person's undecided open tracks and their queued crops captured before it.
4. The camera view bases a save on the version its previous save made: a second line or zone saved before the
   page re-read the site is not refused with "someone changed the site" (real browser over a demo run).
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from storelens.backends.face_embedders import DlibFaceEmbedder
from storelens.backends.face_index import ERASED_KEPT_S
from storelens.config.faces import FacesConfig
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.runner import RunnerCore
from storelens.stages import faces as faces_stages
from storelens.stages.faces import AttributesStage, FacesStage, ReidStage
from storelens.storage.gallery import SqliteGalleryStore
from test_dashboard_browser import browser  # noqa: F401 (the module's fixture)
from test_faces_privacy_fixes import IDLE_MS, reid_stage, run  # reid: 2 faces a decision, IDLE_MS idle; its decisions
from test_faces_review_fixes import end_of_stream, published  # a camera's end; what a stage publishes on a topic

FACES = asset("faces")
needs_faces = pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")

T0 = 1_767_225_600_000
OBAMA, OBAMA2, OBAMA_TEST = "identities/obama/obama.jpg", "identities/obama/obama2.jpg", "identities_test/obama1.jpg"
BIDEN, BIDEN2 = "identities/biden/biden.jpg", "identities/biden/biden2.jpg"
DOOR = {"id": "door", "source": "rtsp://cam/door"}


@pytest.fixture(scope="module")
def models():
    if not (FACES / "identities").is_dir():
        pytest.skip("shared face assets not found")
    from storelens.backends.face_detectors import build_face_detector

    return SimpleNamespace(detector=build_face_detector(FacesConfig().detector), embedder=DlibFaceEmbedder())


def erase(reid: ReidStage, customer_id: str, ts_ms: int):
    return reid.handle(topics.CUSTOMER_ERASURES,
                       m.CustomerErasure(customer_id=customer_id, ts_ms=ts_ms, request_id="r"))


# -- 1. an undecided track back after an idle end ---------------------------------------------------------------


@needs_faces
def test_a_track_left_undecided_for_an_id_switch_stays_undecided_when_it_comes_back(tmp_path, models):
    reid = reid_stage(tmp_path, models)
    # track 7: Obama's face, then Biden's (an id switch): the two faces disagree, no decision
    assert run(reid, [(7, T0, OBAMA2), (7, T0 + 1_000, BIDEN)]) == []
    assert reid.stats["abstained"] == 1
    # the track is lost for longer than the idle time, then found again: Biden's face twice
    back = T0 + 1_000 + IDLE_MS + 1_000
    later = run(reid, [(7, back, BIDEN2), (7, back + 100, BIDEN2)], seq0=2)
    later += published(reid.handle(topics.PERSON_CROPS, end_of_stream(5, back + 1_000)))

    assert later == []  # was: a new customer (Biden) for track 7
    assert len(reid.gallery) == 0 and reid.gallery.store.counts()["customers"] == 0
    assert reid.stats["abstained"] == 1 and reid.stats["matches"] == 0
    reid.gallery.store.close()


# -- 2. an erasure's embeddings leave memory without crops -----------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """The faces stages' monotonic clock (seconds), moved by the test."""
    now = [1_000.0]
    monkeypatch.setattr(faces_stages, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@needs_faces
@pytest.mark.parametrize("then", ["reid-tick", "faces-tick", "erasure", "site-version", "embedded-stop"])
def test_an_erasures_embeddings_leave_memory_when_no_crop_comes(tmp_path, models, clock, then):
    reid = reid_stage(tmp_path, models)
    [first] = run(reid, [(1, T0, OBAMA), (1, T0 + 100, OBAMA)])
    erase(reid, first.customer_id, T0 + 10_000)  # crops captured before may still be queued: kept
    assert len(reid._erasures) == 1 and reid.gallery.customers() == []

    clock[0] += ERASED_KEPT_S - 1  # the store is closed: no crop comes
    if then == "reid-tick":
        assert RunnerCore(reid).tick(T0) is None and reid._erasures  # not yet
    if then == "embedded-stop":  # no crop of any camera comes after the stop: at once
        faces = FacesStage(AttributesStage(reid.config, detector=models.detector, analyzer=object()), reid)
        assert published(faces.end_streams()) == []
        assert reid._erasures == []
        return
    clock[0] += 2
    if then == "reid-tick":  # the reid service's runner ticks every tick_s, with or without messages
        assert reid.tick_s <= 60 and RunnerCore(reid).tick(T0) is None
    elif then == "faces-tick":  # the embedded run's faces stage
        faces = FacesStage(AttributesStage(reid.config, detector=models.detector, analyzer=object()), reid)
        assert faces.tick_s <= 60 and RunnerCore(faces).tick(T0) is None
    elif then == "erasure":  # another customer's erasure request
        assert erase(reid, "cust-unknown", T0 + 20_000).info == {"erased": False}
    else:  # a site version (same cameras)
        update = m.SiteUpdate(version=1, store_id="s", cameras_json=json.dumps([DOOR]))
        assert reid.handle(topics.SITE_CONFIG, update).info["applied"]
    assert reid._erasures == []
    reid.gallery.store.close()


# -- 3. a customer found erased before the erasure request comes ---------------------------------------------


@needs_faces
def test_a_customer_found_erased_before_the_request_is_not_enrolled_again_and_the_request_drops_them(
        tmp_path, models):
    reid = reid_stage(tmp_path, models)
    [first] = run(reid, [(1, T0, OBAMA), (1, T0 + 100, OBAMA)])
    cid = first.customer_id
    # the same person on track 2, one face so far (undecided); another shopper on track 5
    assert run(reid, [(2, T0 + 1_000, OBAMA2), (5, T0 + 1_050, BIDEN)], seq0=2) == []

    api = SqliteGalleryStore(tmp_path / "gallery.db")  # the API on the same gallery: the rows go first
    assert api.delete_customer(cid)
    # a match meanwhile finds the customer gone: track 3's faces (Obama, queued) make no new customer
    assert run(reid, [(3, T0 + 1_100, OBAMA_TEST), (3, T0 + 1_200, OBAMA)], seq0=4) == []
    assert reid.gallery.customers() == [] and api.counts()["customers"] == 0

    # the request comes: the dropped embeddings are handed over; the open track 2 and queued crops go too
    asked = T0 + 10_000
    assert erase(reid, cid, asked).info == {"erased": True}
    assert len(reid._erasures) == 1 and reid.gallery.take_erased(cid) is None  # the gallery holds none now
    later = run(reid, [(2, T0 + 2_000, OBAMA_TEST), (4, T0 + 2_100, OBAMA2), (4, T0 + 2_200, OBAMA_TEST),
                       (5, T0 + 2_300, BIDEN2)], seq0=6)
    later += published(reid.handle(topics.PERSON_CROPS, end_of_stream(11, T0 + 3_000)))

    assert [x.track_id for x in later] == [5]  # the other shopper only
    assert reid.gallery.customers() == [later[0].customer_id] and api.counts()["customers"] == 1
    # seen again after the request: a new customer, as after any erasure
    after = run(reid, [(6, asked + 1_000, OBAMA2), (6, asked + 1_100, OBAMA)], seq0=11)
    assert [(x.track_id, x.is_new) for x in after] == [(6, True)] and after[0].customer_id != cid
    api.close()
    reid.gallery.store.close()


# -- 4. the camera view: saves in a row before the page re-read the site ----------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo run of ``test_dashboard_browser`` served by the app (API + built dashboard)."""
    from test_dashboard_browser import serve_demo

    with serve_demo(tmp_path_factory.mktemp("followups")) as s:
        yield s


def test_lines_and_a_zone_saved_one_after_the_other_before_the_site_is_read_again(served, browser):  # noqa: F811
    """Each save is based on the version the previous one made: the page's re-read of the site has not come (it is
    answered with the site as first loaded), yet the second line and the zone are saved, no 409."""
    from playwright.sync_api import expect
    from test_dashboard_browser import _press_drag_release, open_view, settle, sign_in

    api = served.client("admin")
    site0 = api.get("/v1/site").json()
    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    settle(page)
    expect(page.get_by_test_id("handle-x200-b")).to_have_class("handle editable")
    # from now on the page's re-reads of the site get the version it loaded (as while a re-read is on its way)
    page.route("**/v1/site", lambda route: route.fulfill(json=site0) if route.request.method == "GET"
               else route.continue_())
    for line_id, dx in (("x200", 30), ("x440", -30)):
        handle = page.get_by_test_id(f"handle-{line_id}-b")
        handle.scroll_into_view_if_needed()
        box = handle.bounding_box()
        _press_drag_release(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, dx, -60)
    box = page.get_by_test_id("handle-zone-till-2").bounding_box()  # the frame's corner: press inside its quarter
    _press_drag_release(page, box["x"] + box["width"] / 2 - 3, box["y"] + box["height"] / 2 - 3, -110, -70)

    page.get_by_test_id("save-x200").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Line x200 saved")
    for button, said in (("save-x440", "Line x440 saved"), ("save-zone-till", "Zone till saved")):
        page.get_by_test_id(button).click()
        page.wait_for_function("said => document.querySelector('[data-testid=problem]') !== null || "
                               "(document.querySelector('[data-testid=saved]')?.innerText ?? '').includes(said)",
                               arg=said)
        problem = page.get_by_test_id("problem")
        assert problem.count() == 0, problem.inner_text()  # was: 409, "someone changed the site since ..."
        expect(page.get_by_test_id("saved")).to_contain_text(said)

    site3 = api.get("/v1/site").json()
    assert site3["version"] == site0["version"] + 3
    cam0, cam3 = (next(c for c in s["cameras"] if c["id"] == "stadtmitte") for s in (site0, site3))
    moved = {ln["id"] for ln in cam3["lines"]} - {ln["id"] for ln in cam3["lines"] if ln in cam0["lines"]}
    assert moved == {"x200", "x440"}
    till = next(z for z in cam3["zones"] if z["id"] == "till")
    assert till["polygon"][2] != [640, 480] and till["kind"] == "queue"
    page.close()
