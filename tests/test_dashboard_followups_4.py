"""Dashboard follow-ups (4), at the API and in a real browser (the fixtures and helpers of ``test_dashboard_browser``).

1. Stores: since an answer is shown for its own query only (``useApi``), picking another currency asked the
   chain's newest day again, and the comparison, whose range ends on that day, waited for it: meanwhile the
   currency picker (made from the comparison's answer) and every card vanished, until two requests in a row came
   back. Now the last known day is kept while it is asked again (the comparison is asked at once) and the picker
   keeps the last answer's currencies while the next one loads.
2. Interest: ``attention_s`` is null both when no stopper had a usable face and when 1 to k_min-1 had one
   (withheld); the page showed "-" for both. ``/v1/interest`` says ``attention_suppressed``; the page "withheld".

The site's rows are written straight to storage.
"""
from __future__ import annotations

import re
import time

import pytest
from test_business_review_fixes import roll_into
from test_dashboard_browser import (  # noqa: F401 (browser: the module's fixture)
    browser, open_view, serve_site, settle,
)
from test_dashboard_browser import sign_in as browser_sign_in
from test_dashboard_followups_3 import DAYS, SALES, kpi_hour
from test_privacy_review_fixes import POLY, T0, attributes, client_for

from storelens.contract import messages as m
from storelens.storage import SqlStorage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: shelf zone -> (stoppers, of them with a usable face): 6 of 6, none of 6, 1 of 6 (withheld at k_min 5), 2 passers
SHELVES = {"baby": (6, 6), "wine": (6, 0), "fruit": (6, 1), "pharmacy": (2, 0)}
K_MIN = 5


def site(db) -> dict:
    return {"store": {"id": "f4", "timezone": "UTC"},
            "cameras": [{"id": "floor", "source": "floor.mp4",
                         "zones": [{"id": z, "kind": "shelf", "polygon": POLY} for z in SHELVES]}],
            "privacy": {"k_min": K_MIN}, "storage": {"path": str(db)}}


def visits() -> tuple[list[m.ZoneEvent], list[m.TrackAttributes]]:
    """Each shelf's stoppers (10 s each) and the faces of those that had one (attention share 0.9)."""
    events, faces, track = [], [], 0
    for zone, (stoppers, with_face) in SHELVES.items():
        for i in range(stoppers):
            track += 1
            events.append(m.ZoneEvent(event_id=f"{zone}-{i}", camera_id="floor", zone_id=zone, zone_kind="shelf",
                                      track_id=track, kind=m.ZONE_EVENT_EXIT, ts_ms=T0 + track * 1_000, seq=track,
                                      dwell_ms=10_000))
            if i < with_face:
                faces.append(attributes(track, "female", 30.0, "happy", attention_share=0.9))
    return events, faces


# -- the API --------------------------------------------------------------------------------------


def test_interest_says_when_the_attention_is_withheld(tmp_path) -> None:
    events, faces = visits()
    with client_for(tmp_path, site(tmp_path / "x.db"), events, faces) as client:
        r = client.get("/v1/interest", params={"start_ms": 0})
        assert r.status_code == 200, r.text
        rows = {i["key"]: i for i in r.json()["items"]}
        schema = client.app.openapi()["components"]["schemas"]["InterestOut"]["properties"]
    got = {k.split("/")[1]: (i["attention_s"], i["attention_suppressed"], i["suppressed"]) for k, i in rows.items()}
    assert got == {"baby": (pytest.approx(6 * 0.9 * 10), False, False),
                   "wine": (None, False, False),  # no face: nothing to withhold
                   "fruit": (None, True, False),  # one face among six stoppers: withheld
                   "pharmacy": (None, False, True)}  # the whole row withheld: says `suppressed` only
    assert "withheld" in schema["attention_suppressed"]["description"]


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("f4") / "f4.db"
    storage = SqlStorage(str(db))
    events, faces = visits()
    storage.write_records(events)
    storage.write_track_attributes(faces)
    roll_into(storage, [kpi_hour(s, d) for s in SALES for d in DAYS])
    with serve_site(site(db), storage) as s:
        yield s


def sign_in(browser, served, role: str):  # noqa: F811
    return browser_sign_in(browser, served, role, locale="en-US")


def test_interest_shows_a_withheld_attention_as_withheld(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    open_view(page, "interest")
    settle(page)
    row = lambda zone: page.get_by_test_id(f"interest-row-floor/{zone}")  # noqa: E731
    expect(row("fruit").get_by_test_id("attention")).to_have_text("withheld")  # before: "-"
    expect(row("wine").get_by_test_id("attention")).to_have_text("-")
    expect(row("baby").get_by_test_id("attention")).to_have_text("54")
    expect(row("pharmacy").get_by_test_id("withheld")).to_contain_text("withheld")
    page.close()


def test_the_stores_page_keeps_its_currency_picker_while_it_asks_again(served, browser):  # noqa: F811
    """The chain's newest day (``/v1/chain/kpis`` without ``from_day``) and the comparison (with it) are held
    back in turn: the page must not wait for the first to ask the second, and keeps its currency picker."""
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/chain/kpis" in r.url else None)
    open_view(page, "stores")
    settle(page)
    picker = page.get_by_test_id("stores-currency")
    expect(page.get_by_test_id("stores-row-eur-01")).to_be_visible()
    expect(picker.locator("option")).to_have_count(3)

    held, hold = [], {"newest": True, "comparison": False}

    def route(r) -> None:
        kind = "comparison" if "from_day=" in r.request.url else "newest"
        held.append(r) if hold[kind] else r.continue_()

    page.route(re.compile(r"/v1/chain/kpis\?"), route)
    n0 = len(asked)
    # another currency: its newest day is held back; the comparison is asked at once (the last day known)
    picker.select_option("JPY")
    expect(page.get_by_test_id("stores-row-jpy-01").get_by_test_id("atv")).to_have_text("¥25,000")
    assert [u for u in asked[n0:] if "from_day=" not in u] and len(held) == 1, (asked[n0:], held)
    expect(picker).to_have_value("JPY")
    expect(picker.locator("option")).to_have_count(3)
    held.pop().continue_()  # the newest day of JPY stores: the same day, so no second comparison
    page.wait_for_timeout(1_000)
    assert len([u for u in asked[n0:] if "from_day=" in u and "currency=JPY" in u]) == 1, asked[n0:]

    # a longer range: the comparison is held back; meanwhile "Loading…" and the picker stays
    hold.update(newest=False, comparison=True)
    page.get_by_label("Days").select_option("28")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(held) == 1 and "from_day=" in held[0].request.url, held
    expect(page.get_by_text("Loading…")).to_be_visible()
    expect(picker).to_be_visible(timeout=2_000)  # before: gone until the answer came
    expect(picker.locator("option")).to_have_count(3)
    expect(page.get_by_test_id("stores-row-jpy-01")).to_have_count(0)  # no answer shown for another query
    hold["comparison"] = False
    held.pop().continue_()
    expect(page.get_by_test_id("stores-row-jpy-01").get_by_test_id("atv")).to_have_text("¥25,000")
    expect(page.get_by_test_id("problem")).to_have_count(0)
    page.close()
