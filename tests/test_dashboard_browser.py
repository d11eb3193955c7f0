"""The dashboard in a real browser (Debian chromium driven by Playwright) over a real demo run.

The embedded pipeline runs on TUD-Stadtmitte (three counting lines, three zones, one of them a
queue, a crowd alert rule) into SQLite; the app serves the API and the built dashboard with uvicorn on a free
port; the browser signs in, and what it shows is checked against what the API returns.
Screenshots of every view, desktop and phone width, go to ``test-artifacts/dashboard/``.
"""
from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from storelens.paths import asset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a hung browser fails the test, not make test

REPO = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM = os.environ.get("STORELENS_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: One user of each role (passwords long enough for auth.min_password_length).
USERS = {"admin": "admin-pass-123", "manager": "manager-pass-123", "viewer": "viewer-pass-123"}

VIDEO = asset("mot", "TUD-Stadtmitte", "TUD-Stadtmitte.mp4")
START_TS_MS = 1_767_225_600_000


def _strip(zid: str, x0: float, x1: float, h: float, **kw) -> dict:
    return {"id": zid, "polygon": [[x0, 0], [x1, 0], [x1, h], [x0, h]], **kw}


def site(db: pathlib.Path) -> dict:
    """The demo site: one camera on TUD-Stadtmitte with three lines, three zones and a crowd alert rule."""
    return {
        "store": {"id": "tud"},
        "cameras": [{"id": "stadtmitte", "source": str(VIDEO), "start_ts_ms": START_TS_MS,
                     "lines": [{"id": "x200", "a": [200, 40], "b": [200, 440]},
                               {"id": "x320", "a": [320, 40], "b": [320, 440]},
                               {"id": "x440", "a": [440, 40], "b": [440, 440]}],
                     "zones": [_strip("left", 0, 213, 480),
                               _strip("shelf", 213, 426, 480, kind="shelf", product="coffee", category="food"),
                               _strip("till", 426, 640, 480, kind="queue", service_edge=[1, 2])]}],
        "zones": {"enter_after_ms": 200, "exit_after_ms": 400, "stopper_after_s": 1.0, "bucket_s": 60},
        "stationary": {"enabled": False},
        "faces": {"enabled": False},
        "alerts": {"rules": [{"kind": "camera_occupancy", "id": "crowd", "camera": "stadtmitte", "max": 4,
                              "hold_s": 0.4, "cooldown_s": 0}]},
        "storage": {"path": str(db)},
    }


def build_demo(tmp: pathlib.Path, edit: Callable[[dict], None] | None = None) -> dict:
    """Run the embedded pipeline over the demo site (changed by ``edit``) into ``tmp/demo.db``; the site as a dict."""
    from storelens.config import parse_config
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.storage import SqlStorage

    raw = site(tmp / "demo.db")
    if edit is not None:
        edit(raw)
    with SqlStorage(str(tmp / "demo.db")) as storage:
        EmbeddedPipeline(parse_config(raw), storage=storage).run()
    return raw


# -- the server and the browser ---------------------------------------------------------------


@dataclass
class Served:
    url: str
    storage: object
    config: dict

    def client(self, role: str) -> httpx.Client:
        """An API client signed in as the user of ``role`` (bearer token from the login route)."""
        r = httpx.post(f"{self.url}/v1/auth/login", data={"username": role, "password": USERS[role]})
        r.raise_for_status()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {r.json()['access_token']}"},
                            timeout=30)


@contextmanager
def serve_demo(tmp: pathlib.Path, edit: Callable[[dict], None] | None = None) -> Iterator[Served]:
    """The demo run (:func:`build_demo`) served by the app (API + built dashboard) with uvicorn on a free port."""
    from storelens.storage import SqlStorage

    need_dashboard()
    if not VIDEO.exists():
        pytest.skip(f"asset missing: {VIDEO}")
    raw = build_demo(tmp, edit)
    with serve_site(raw, SqlStorage(str(tmp / "demo.db"))) as s:
        yield s


def need_dashboard() -> None:
    from storelens.api.dashboard import dashboard_dir

    if not (dashboard_dir() / "index.html").is_file():
        pytest.fail(f"the dashboard is not built in {dashboard_dir()}: run make dashboard")


@contextmanager
def serve_site(raw: dict, storage, **app_kw) -> Iterator[Served]:
    """The app of site ``raw`` over ``storage`` (closed at the end) with a user of each role (:data:`USERS`), serving
    the API and the built dashboard with uvicorn on a free port; ``app_kw``: more of ``create_app``'s arguments
    (e.g. ``gallery_store``)."""
    from storelens.api import create_app
    from storelens.api.testing import served_app
    from storelens.config import parse_config

    need_dashboard()
    app = create_app(parse_config(raw), storage, **app_kw)
    for role, password in USERS.items():
        app.state.context.auth.create_user(role, password, role)
    try:
        with served_app(app, timeout_graceful_shutdown=2) as (url, _server):
            yield Served(url, storage, raw)
    finally:
        storage.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo run served by the app (API + built dashboard) with uvicorn on a free port."""
    with serve_demo(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    if not pathlib.Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/browser.sh")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        expect.set_options(timeout=15_000)  # as the pages' own timeout (expect() waits 5 s by default)
        yield b
        b.close()


def sign_in(browser, served: Served, role: str, viewport: dict = DESKTOP, clock_s: float | None = None,
            **page_options):
    """A new browser page (``page_options``: of ``browser.new_page``, e.g. ``timezone_id``) signed in through the
    sign-in form as the user of ``role``; ``clock_s``: the page's clock installed at that time (then running)."""
    page = browser.new_page(viewport=viewport, **page_options)
    page.set_default_timeout(15_000)
    if clock_s is not None:
        page.clock.install(time=clock_s)
    page.goto(served.url + "/")
    page.get_by_test_id("username").fill(role)
    page.get_by_test_id("password").fill(USERS[role])
    page.get_by_test_id("signin-submit").click()
    page.get_by_test_id("role").wait_for(state="attached")
    return page


def open_view(page, name: str) -> None:
    """Go to a view through the navigation (the phone layout opens the menu first)."""
    nav = page.get_by_test_id(f"nav-{name}")
    if not nav.is_visible():
        page.get_by_role("button", name="Menu").click()
    nav.click()
    page.get_by_test_id(f"view-{name}").wait_for()


def shot(page, name: str) -> pathlib.Path:
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot of a scrolled page draws the sticky bar mid-page
    page.screenshot(path=str(path), full_page=True)
    return path


def settle(page) -> None:
    """Wait until the view finished loading (no "Loading…" left) and its charts painted."""
    page.wait_for_function("() => document.querySelector('main .card, main .problem, main .empty') !== null "
                           "&& !document.querySelector('main').innerText.includes('Loading…')")
    page.wait_for_function("() => [...document.querySelectorAll('main img')].every(i => i.complete)")
    page.wait_for_timeout(300)  # echarts paints on the next animation frames (animation is off)


def _text(locator) -> str:
    return locator.inner_text().strip()


# -- the tests ------------------------------------------------------------------------------------

VIEWS = ["live", "counts", "camera", "zones", "journeys", "interest", "demographics", "customers", "alerts", "health",
         "audit", "stores"]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_screenshots_of_every_view(served, browser, device):
    """Every view renders without an error for an admin, at desktop and phone width (files to look at).

    First in the module: the screenshots show the demo run before the other tests change it.
    """
    from playwright.sync_api import expect

    page = sign_in(browser, served, "admin", DESKTOP if device == "desktop" else PHONE)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    for view in VIEWS:
        open_view(page, view)
        if view == "camera":
            page.get_by_test_id("heatmap-toggle").check()
        settle(page)
        if view == "journeys":  # all the demo's data (from 2026-01-01), not an empty last week
            assert page.get_by_test_id("range").input_value() == "all"
            # the demo's 10 journeys make no zone-to-zone step k_min (5) times: every link is withheld, and said
            expect(page.get_by_test_id("flows-withheld")).to_contain_text("withheld")
            assert page.get_by_test_id("flows").get_by_text("No journeys in this range").count() == 0
        problems = [_text(p) for p in page.get_by_test_id("problem").all()]
        # customers: faces are off in the demo (503); everything else must load
        assert all(view == "customers" and "503" in p for p in problems), (view, problems)
        # nothing wider than the screen (tables scroll inside their card)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (view, overflow)
        shot(page, f"{view}-{device}")
    assert errors == []
    page.close()


def test_sign_in_then_the_live_and_count_numbers_equal_the_api(served, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(15_000)
    page.goto(served.url + "/")
    page.get_by_test_id("username").fill("viewer")
    page.get_by_test_id("password").fill("not-the-password")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_contain_text("Wrong user name or password")
    shot(page, "signin-desktop")
    page.get_by_test_id("password").fill(USERS["viewer"])
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("role")).to_have_text("viewer")

    api = served.client("viewer")
    occupancy = api.get("/v1/occupancy").json()
    assert occupancy["cameras"], occupancy
    expect(page.get_by_test_id("store-occupancy")).to_have_text(str(occupancy["occupancy"]))
    for cam in occupancy["cameras"]:
        row = page.get_by_test_id(f"live-camera-{cam['camera_id']}")
        expect(row.get_by_test_id("occupancy")).to_have_text(str(cam["occupancy"]))
        expect(row.get_by_test_id("in")).to_have_text(str(cam["total_in"]))
        expect(row.get_by_test_id("out")).to_have_text(str(cam["total_out"]))

    open_view(page, "counts")
    counts = api.get("/v1/counts", params={"camera_id": "stadtmitte", "bucket_s": 60}).json()
    assert counts["totals"] and sum(t["in"] + t["out"] for t in counts["totals"].values()) > 0, counts
    for line_id, total in counts["totals"].items():
        row = page.get_by_test_id(f"total-{line_id}")
        expect(row.get_by_test_id("in")).to_have_text(str(total["in"]))
        expect(row.get_by_test_id("out")).to_have_text(str(total["out"]))
    page.get_by_test_id("counts-chart").wait_for()

    open_view(page, "zones")
    queues = api.get("/v1/queues").json()["queues"]
    assert [q["zone_id"] for q in queues] == ["till"]
    expect(page.get_by_test_id("queue-till").get_by_test_id("length")).to_have_text(str(queues[0]["length"]))
    for z in api.get("/v1/zones").json()["zones"]:
        expect(page.get_by_test_id(f"zone-row-{z['zone_id']}").get_by_test_id("occupancy")).to_have_text(
            str(z["occupancy"]))
    page.close()


def test_an_admin_drags_a_line_end_and_the_site_saves_it(served, browser):
    from playwright.sync_api import expect

    api = served.client("admin")
    r = api.get("/v1/site")
    r.raise_for_status()
    before = next(ln for c in r.json()["cameras"] if c["id"] == "stadtmitte" for ln in c["lines"] if ln["id"] == "x320")

    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    settle(page)
    row = page.get_by_test_id("line-row-x320")
    expect(row.get_by_test_id("b")).to_have_text(f"{before['b'][0]:g}, {before['b'][1]:g}")
    handle = page.get_by_test_id("handle-x320-b")
    expect(handle).to_have_class("handle editable")  # the site (GET /v1/site) is loaded: an admin may edit
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    frame = page.get_by_test_id("overlay").bounding_box()
    scale = 640 / frame["width"]  # frame pixels per screen pixel (the snapshot is 640 px wide)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    dx, dy = -120, -40  # screen pixels
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=5)
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()
    shown = [float(v) for v in _text(row.get_by_test_id("b")).split(",")]
    assert abs(shown[0] - (before["b"][0] + dx * scale)) <= 2 and abs(shown[1] - (before["b"][1] + dy * scale)) <= 2
    shot(page, "camera-line-moved-desktop")
    page.get_by_test_id("save-x320").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Line x320 saved")

    after = next(ln for c in api.get("/v1/site").json()["cameras"] if c["id"] == "stadtmitte"
                 for ln in c["lines"] if ln["id"] == "x320")
    assert [float(v) for v in after["b"]] == shown
    assert after["a"] == before["a"]
    # the page reads it back after a reload, and /v1/cameras serves the new line
    page.reload()
    expect(page.get_by_test_id("line-row-x320").get_by_test_id("b")).to_have_text(
        f"{after['b'][0]:g}, {after['b'][1]:g}")
    cams = api.get("/v1/cameras").json()["cameras"]
    assert [list(ln["b"]) for c in cams for ln in c["lines"] if ln["id"] == "x320"] == [[float(v) for v in after["b"]]]
    page.close()


def _press_drag_release(page, x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
    """Press at (x, y) screen pixels, drag by (dx, dy) in two moves, release; the release point."""
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=5)
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()
    return x + dx, y + dy


def test_an_admin_drags_a_zone_corner_and_the_site_saves_it(served, browser):
    """The till's bottom-right corner (the frame's corner: no other zone shares it) is dragged into the frame and
    saved; the zone keeps its kind and service edge; a save based on a stale site version is refused (409)."""
    from playwright.sync_api import expect

    api = served.client("admin")
    site0 = api.get("/v1/site").json()
    before = next(z for c in site0["cameras"] if c["id"] == "stadtmitte" for z in c["zones"] if z["id"] == "till")
    assert before["polygon"][2] == [640, 480] and before["kind"] == "queue"

    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    settle(page)
    row = page.get_by_test_id("zonecfg-row-till")
    expect(row.get_by_test_id("vertex-2")).to_have_text("640, 480")
    handle = page.get_by_test_id("handle-zone-till-2")
    expect(handle).to_have_class("handle editable zone-handle")
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    frame = page.get_by_test_id("overlay").bounding_box()
    scale = 640 / frame["width"]  # frame pixels per screen pixel
    # the square is centred on the frame's corner: press inside its visible quarter
    x, y = box["x"] + box["width"] / 2 - 3, box["y"] + box["height"] / 2 - 3
    x1, y1 = _press_drag_release(page, x, y, -110, -70)
    want = ((x1 - frame["x"]) * scale, (y1 - frame["y"]) * scale)
    shown = [float(v) for v in _text(row.get_by_test_id("vertex-2")).split(",")]
    assert abs(shown[0] - want[0]) <= 2 and abs(shown[1] - want[1]) <= 2, (shown, want)
    assert 450 < shown[0] < 640 and 330 < shown[1] < 480
    shot(page, "camera-zone-moved-desktop")
    page.get_by_test_id("save-zone-till").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Zone till saved")

    site1 = api.get("/v1/site").json()
    after = next(z for c in site1["cameras"] if c["id"] == "stadtmitte" for z in c["zones"] if z["id"] == "till")
    assert site1["version"] == site0["version"] + 1
    assert [float(v) for v in after["polygon"][2]] == shown
    assert [after["polygon"][i] for i in (0, 1, 3)] == [before["polygon"][i] for i in (0, 1, 3)]
    assert {k: v for k, v in after.items() if k != "polygon"} == {k: v for k, v in before.items() if k != "polygon"}
    expect(page.get_by_test_id("handle-zone-till-2")).to_have_count(1)

    # someone else changes the site meanwhile: the next save of this page is refused with a 409, nothing changes
    page.wait_for_timeout(300)  # the page re-read the site (version + 1)
    handle = page.get_by_test_id("handle-zone-till-2")
    box = handle.bounding_box()
    _press_drag_release(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, -30, 0)
    left = next(z for c in site1["cameras"] if c["id"] == "stadtmitte" for z in c["zones"] if z["id"] == "left")
    r = api.put("/v1/site/cameras/stadtmitte/zones/left", json=left, params={"base_version": site1["version"]})
    assert r.status_code == 200, r.text
    page.get_by_test_id("save-zone-till").click()
    problem = page.get_by_test_id("problem")
    expect(problem).to_have_attribute("data-status", "409")
    expect(problem).to_contain_text("reload")
    shot(page, "camera-zone-stale-409-desktop")
    site2 = api.get("/v1/site").json()
    assert site2["version"] == site1["version"] + 1
    assert next(z for c in site2["cameras"] for z in c["zones"] if z["id"] == "till") == after
    page.close()


def test_a_manager_acknowledges_an_alert(served, browser):
    from playwright.sync_api import expect

    api = served.client("manager")
    alerts = api.get("/v1/alerts").json()["alerts"]
    # the pipeline's crowd rule (more than 4 people for 0.4 s) fired on the clip
    open_alerts = [a for a in alerts if a["acked_by"] is None]
    assert open_alerts and open_alerts[0]["rule_id"] == "crowd", alerts
    target = open_alerts[0]

    page = sign_in(browser, served, "manager")
    open_view(page, "alerts")
    card = page.get_by_test_id(f"alert-{target['alert_id']}")
    expect(card.get_by_test_id("alert-state")).to_have_text(target["state"])
    shot(page, "alerts-before-ack-desktop")
    card.get_by_test_id("ack").click()
    expect(card.get_by_test_id("acked")).to_contain_text("Acknowledged by manager")
    expect(card.get_by_test_id("ack")).to_have_count(0)
    stored = next(a for a in api.get("/v1/alerts").json()["alerts"] if a["alert_id"] == target["alert_id"])
    assert stored["acked_by"] == "manager" and stored["acked_ts_ms"] is not None
    page.close()


def test_a_viewer_is_refused_the_admin_actions(served, browser):
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    expect(page.get_by_test_id("nav-customers")).to_have_count(0)  # the customer list is for managers and admins
    # the API refuses the erasure to the viewer's session cookie, whatever the page shows
    r = page.request.delete(f"{served.url}/v1/customers/cust-0001")
    assert r.status == 403, r.text()
    open_view(page, "alerts")
    settle(page)
    assert page.get_by_test_id("alert-state").count() >= 1
    expect(page.get_by_test_id("ack")).to_have_count(0)
    open_view(page, "camera")
    settle(page)
    expect(page.locator(".handle.editable")).to_have_count(0)
    expect(page.get_by_text("Only admins can move lines.")).to_be_visible()
    expect(page.get_by_test_id("nav-audit")).to_have_count(0)  # the counting audit is for managers and admins
    page.close()


def _pct(v: float) -> str:
    """The dashboard's fmtPct: percent with at most one decimal."""
    return f"{round(v * 100, 1):g} %"


def test_the_stores_view_shows_the_rolled_up_figures_of_the_api(served, browser):
    """The demo store rolls its KPI hours up into its own database (``storelens kpis publish --local``'s path);
    the chain view shows the figures ``GET /v1/chain/kpis`` gives."""
    from playwright.sync_api import expect

    from storelens.config import parse_config
    from storelens.contract import topics
    from storelens.stages.rollup import ChainRollupStage
    from storelens.storage.rollup import kpi_publisher

    config = parse_config({**served.config, "rollup": {"enabled": True, "lookback_h": 24 * 31}})
    stage = ChainRollupStage(config)
    sent = kpi_publisher(config, served.storage, lambda items: served.storage.write_records(
        [r for _, h in items for r in stage.handle(topics.STORE_KPIS, h).records])).run()
    assert sent > 0
    api = served.client("viewer")
    chain = api.get("/v1/chain/kpis").json()
    (group,) = chain["groups"]
    assert group["totals"]["visitors"] > 0, chain
    page = sign_in(browser, served, "viewer")
    open_view(page, "stores")
    settle(page)
    store = config.store.id
    expect(page.get_by_test_id(f"stores-visitors-{store}")).to_have_text(str(group["totals"]["visitors"]))
    page.get_by_test_id("stores-chart").wait_for()
    shot(page, "stores-desktop")
    page.close()


def test_a_manager_audits_two_clips(served, browser):
    """Last: the audit's alert would be the newest open alert of the other tests.

    The manager samples 2 clips, plays the first, tallies the first as the system counted it and the second with
    one person too many: 1 of 2 exact, the Wilson interval of 1/2, below the default minimum (90 %): an alert."""
    from playwright.sync_api import expect

    from storelens.config import parse_config
    from storelens.domain.audit import wilson_interval
    from storelens.storage.audit import make_clip

    config = parse_config(served.config)
    page = sign_in(browser, served, "manager")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_view(page, "audit")
    settle(page)
    page.get_by_test_id("audit-clips").fill("2")
    page.get_by_test_id("audit-start-button").click()
    card = page.get_by_test_id("audit-clip")
    expect(card).to_contain_text("Clip 1 of 2")
    frame_js = "() => { const i = document.querySelector('[data-testid=clip-frame]'); return i && i.complete && i.naturalWidth > 0 }"
    page.wait_for_function(frame_js)
    img = page.get_by_test_id("clip-frame")
    assert page.evaluate("() => document.querySelector('[data-testid=clip-frame]').naturalWidth") == 640
    n_frames = int(_text(page.get_by_test_id("frame-pos")).split("/")[1])
    assert 60 <= n_frames <= 101  # 4 s at 25 fps (less at the start or end of the video)
    # play about a second, pause: the frames advanced at the video's pace, never faster. The bound is the time
    # that really passed between the two clicks (a loaded machine stretches a 1 s wait), not the nominal second.
    fps = 25
    started = time.monotonic()
    page.get_by_test_id("play").click()
    page.wait_for_timeout(1000)
    page.get_by_test_id("play").click()
    elapsed_s = time.monotonic() - started
    played = int(img.get_attribute("data-frame"))
    assert 5 <= played <= fps * elapsed_s + 2, (played, elapsed_s)
    page.get_by_test_id("frame-slider").fill(str(n_frames - 1))
    expect(page.get_by_test_id("frame-pos")).to_have_text(f"frame {n_frames} / {n_frames}")
    page.wait_for_function(frame_js)

    truth = []
    for i in range(2):
        if i:
            page.get_by_test_id("next-clip").click()
            expect(card).to_contain_text("Clip 2 of 2")
            page.wait_for_function(frame_js)
        cam, line, ts = img.get_attribute("src").split("/")[4:7]
        clip = make_clip(config, served.storage, cam, line, int(ts))
        assert clip is not None
        want = (clip.system_in + (1 if i else 0), clip.system_out)
        truth.append(want)
        for key, n in zip(("tally-in", "tally-out"), want):
            for _ in range(n):
                page.get_by_test_id(key).get_by_test_id("plus").click()
            expect(page.get_by_test_id(key).get_by_test_id("value")).to_have_text(str(n))
        if i == 0:
            shot(page, "audit-clip-desktop")
    page.get_by_test_id("audit-submit").click()
    result = page.get_by_test_id("audit-result")
    expect(result.get_by_test_id("result-accuracy")).to_have_text("50 %")
    lo, hi = wilson_interval(1, 2)
    expect(result.get_by_test_id("result-interval")).to_have_text(f"{_pct(lo)} – {_pct(hi)} (95 %)")
    expect(result.get_by_test_id("result-alert")).to_contain_text("alert was raised")

    api = served.client("manager")
    audits = api.get("/v1/audits").json()["audits"]
    newest = audits[0]
    assert (newest["auditor"], newest["n_clips"], newest["n_correct"], newest["alerted"]) == ("manager", 2, 1, True)
    assert (newest["ci_low"], newest["ci_high"]) == pytest.approx((lo, hi))
    row = page.get_by_test_id(f"audit-row-{newest['audit_id']}")
    expect(row.get_by_test_id("accuracy")).to_have_text("50 %")
    alerts = api.get("/v1/alerts").json()["alerts"]
    assert any(a["kind"] == "count_accuracy" and a["alert_id"].endswith(newest["audit_id"]) for a in alerts)
    shot(page, "audit-result-desktop")
    assert errors == []
    page.close()
