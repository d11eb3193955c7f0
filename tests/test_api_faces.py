"""/v1/customers* and /v1/demographics over a real SqliteGalleryStore and real storage (no mocks)."""
from __future__ import annotations

import os
import pathlib
import uuid
from typing import Iterator

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from storelens.api.testing import signed_in_client
from storelens.contract import messages as m
from storelens.api import FACES_DISABLED, create_app
from storelens.config import SiteConfig, parse_config
from storelens.storage.gallery import SqliteGalleryStore, Visit
from storelens.storage import SqliteStorage
from storelens.storage import PostgresStorage

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR, DAY = 3_600_000, 86_400_000
DIM = 4


def make_config() -> SiteConfig:
    return parse_config({"store": {"id": "store-42"}, "cameras": [
        {"id": "cam-1", "source": "/tmp/x.mp4"}, {"id": "cam-2", "source": "/tmp/y.mp4"}],
        "privacy": {"k_min": 1}})  # exact demographics of three tracks (k-anonymity: tests/test_privacy.py)


def attrs(cam: str, track_id: int, last_ts: int, *, n_faces: int = 3, **kw: object) -> m.TrackAttributes:
    age = kw.pop("age", None)
    low, high = kw.pop("age_low", None), kw.pop("age_high", None)
    a = m.TrackAttributes(camera_id=cam, track_id=track_id, first_ts_ms=last_ts - 5_000, last_ts_ms=last_ts,
                          last_seq=last_ts // 40, n_faces=n_faces,
                          gender=m.gender_value(str(kw.pop("gender", "unknown"))),
                          emotion=m.emotion_value(str(kw.pop("emotion", "unknown"))), **kw)
    for field, value in (("age_years", age), ("age_low_years", low), ("age_high_years", high)):
        if value is not None:
            setattr(a, field, value)
    return a


def match(customer_id: str, cam: str, track_id: int, ts_ms: int, **kw: object) -> m.CustomerMatch:
    return m.CustomerMatch(event_id=f"{cam}:{track_id}", camera_id=cam, track_id=track_id, seq=ts_ms // 40,
                           ts_ms=ts_ms, customer_id=customer_id, **kw)


def fill_gallery(g: SqliteGalleryStore) -> None:
    """cust-a returning (2 visits, both cameras), cust-b and cust-c first-time, cust-d without a visit."""
    rng = np.random.default_rng(0)
    for cid, created, visits in [
        ("cust-a", T0, [Visit("cust-a", 1, T0, T0 + 60_000, ("cam-1",)),
                        Visit("cust-a", 2, T0 + 2 * DAY, T0 + 2 * DAY + 90_000, ("cam-1", "cam-2"))]),
        ("cust-b", T0 + HOUR, [Visit("cust-b", 1, T0 + HOUR, T0 + HOUR + 30_000, ("cam-2",))]),
        ("cust-c", T0 + 3 * DAY, [Visit("cust-c", 1, T0 + 3 * DAY, T0 + 3 * DAY + 10_000, ("cam-1",))]),
        ("cust-d", T0 + 10, []),
    ]:
        g.add_customer(cid, created)
        for i in range(2):
            g.add_embedding(cid, created + i, rng.standard_normal(DIM).astype(np.float32))
        for v in visits:
            g.save_visit(v)


def fill_storage(s: SqliteStorage | PostgresStorage) -> None:
    s.write_track_attributes([
        attrs("cam-1", 1, T0 + 60_000, age=29.0, age_low=20.0, age_high=40.0, gender="female",
              gender_confidence=0.7, emotion="happy", n_used=2),
        attrs("cam-2", 5, T0 + 2 * DAY + 90_000, age=33.0, age_low=30.0, age_high=36.0, gender="female",
              gender_confidence=0.9, emotion="neutral", n_used=5, final=True),
        attrs("cam-2", 2, T0 + HOUR + 30_000, age=70.0, gender="male", gender_confidence=0.8),
        attrs("cam-1", 9, T0 + HOUR, n_faces=0),  # no face: not in demographics
    ])
    s.write_customer_matches([
        match("cust-a", "cam-2", 5, T0 + 2 * DAY + 1_000, similarity=0.75, returning=True, visit_no=2),
        match("cust-a", "cam-1", 1, T0 + 1_000, is_new=True, visit_no=1),
        match("cust-b", "cam-2", 2, T0 + HOUR + 1_000, is_new=True, visit_no=1),
        match("cust-c", "cam-1", 7, T0 + 3 * DAY + 1_000, is_new=True, visit_no=1),  # no attributes
    ])


@pytest.fixture
def gallery(tmp_path: pathlib.Path) -> Iterator[SqliteGalleryStore]:
    g = SqliteGalleryStore(tmp_path / "gallery.db", dim=DIM)
    fill_gallery(g)
    yield g
    g.close()


@pytest.fixture
def storage(tmp_path: pathlib.Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage(str(tmp_path / "history.db"))
    fill_storage(s)
    yield s
    s.close()


@pytest.fixture
def erased() -> list[str]:
    return []


@pytest.fixture
def client(storage: SqliteStorage, gallery: SqliteGalleryStore, erased: list[str]) -> Iterator[TestClient]:
    with signed_in_client(create_app(make_config(), storage, gallery_store=gallery, on_erasure=erased.append)) as c:
        yield c


def ids(body: dict) -> list[str]:
    return [c["customer_id"] for c in body["items"]]


# -- list -------------------------------------------------------------------------------


def test_customers_first_page(client: TestClient) -> None:
    r = client.get("/v1/customers", params={"page_size": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["page"], body["page_size"]) == (4, 1, 2)
    assert body["items"] == [
        {"customer_id": "cust-c", "created_ts_ms": T0 + 3 * DAY, "visits": 1, "first_seen_ts_ms": T0 + 3 * DAY,
         "last_seen_ts_ms": T0 + 3 * DAY + 10_000, "returning": False, "cameras": ["cam-1"]},
        {"customer_id": "cust-a", "created_ts_ms": T0, "visits": 2, "first_seen_ts_ms": T0,
         "last_seen_ts_ms": T0 + 2 * DAY + 90_000, "returning": True, "cameras": ["cam-1", "cam-2"]},
    ]


@pytest.mark.parametrize(("params", "total", "expected"), [
    pytest.param({}, 4, ["cust-c", "cust-a", "cust-b", "cust-d"], id="all"),
    pytest.param({"page": 2, "page_size": 2}, 4, ["cust-b", "cust-d"], id="page-2"),
    pytest.param({"page": 3, "page_size": 2}, 4, [], id="past-the-end"),
    pytest.param({"page_size": 500}, 4, ["cust-c", "cust-a", "cust-b", "cust-d"], id="max-page-size"),
    pytest.param({"returning": "true"}, 1, ["cust-a"], id="returning"),
    pytest.param({"returning": "false"}, 3, ["cust-c", "cust-b", "cust-d"], id="first-time"),
    pytest.param({"start_ms": T0 + 2 * DAY, "end_ms": T0 + 4 * DAY}, 2, ["cust-c", "cust-a"], id="range"),
    pytest.param({"end_ms": T0 + HOUR}, 1, ["cust-a"], id="end-exclusive"),
    pytest.param({"start_ms": T0 + HOUR + 30_000, "end_ms": T0 + DAY}, 1, ["cust-b"], id="start-inclusive"),
    pytest.param({"start_ms": T0 + HOUR + 30_001, "end_ms": T0 + DAY}, 0, [], id="gap"),
    # with a range, returning of the range: cust-a's visit of the day is its first (it came back two days later)
    pytest.param({"returning": "false", "start_ms": T0, "end_ms": T0 + DAY}, 2, ["cust-a", "cust-b"], id="combined"),
    pytest.param({"returning": "true", "start_ms": T0, "end_ms": T0 + DAY}, 0, [], id="combined-returning"),
])
def test_customers_paging_and_filters(client: TestClient, params: dict, total: int, expected: list[str]) -> None:
    r = client.get("/v1/customers", params=params)
    assert r.status_code == 200, r.text
    assert (r.json()["total"], ids(r.json())) == (total, expected)


@pytest.mark.parametrize("params", [
    {"page": 0}, {"page": -1}, {"page": "x"}, {"page": 10**7}, {"page_size": 0}, {"page_size": 501},
    {"returning": "maybe"}, {"start_ms": -1}, {"end_ms": 0}, {"start_ms": 5, "end_ms": 5},
    {"start_ms": 10, "end_ms": 5}, {"end_ms": 10**30},
])
def test_customers_bad_params_are_422(client: TestClient, params: dict) -> None:
    assert client.get("/v1/customers", params=params).status_code == 422


# -- one customer ---------------------------------------------------------------------------


def test_customer_detail(client: TestClient) -> None:
    r = client.get("/v1/customers/cust-a")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["customer_id"], body["returning"]) == ("cust-a", True)
    assert body["visits"] == [
        {"visit_no": 1, "first_seen_ts_ms": T0, "last_seen_ts_ms": T0 + 60_000, "cameras": ["cam-1"]},
        {"visit_no": 2, "first_seen_ts_ms": T0 + 2 * DAY, "last_seen_ts_ms": T0 + 2 * DAY + 90_000,
         "cameras": ["cam-1", "cam-2"]},
    ]
    assert [(t["camera_id"], t["track_id"], t["visit_no"], t["is_new"]) for t in body["tracks"]] == [
        ("cam-1", 1, 1, True), ("cam-2", 5, 2, False)]  # oldest first
    a = body["tracks"][1]["attributes"]
    assert a == {
        "first_ts_ms": T0 + 2 * DAY + 85_000, "last_ts_ms": T0 + 2 * DAY + 90_000,
        "last_seq": (T0 + 2 * DAY + 90_000) // 40,
        "n_faces": 3, "n_used": 5, "n_rejected": 0, "age_years": 33.0, "age_low_years": 30.0, "age_high_years": 36.0,
        "age_band": "25-34", "gender": "female", "gender_confidence": pytest.approx(0.9), "emotion": "neutral",
        "emotion_confidence": 0.0, "attention_share": None, "final": True,
    }
    # The most confident gender; the age of the track with the most used faces.
    assert body["summary"] == {"tracks_with_faces": 2, "gender": "female", "gender_confidence": pytest.approx(0.9),
                               "age_years": 33.0, "age_low_years": 30.0, "age_high_years": 36.0,
                               "age_band": "25-34"}


@pytest.mark.parametrize(("cid", "returning", "visits", "tracks", "summary"), [
    ("cust-b", False, 1, [True], {"gender": "male", "age_band": "65+", "tracks_with_faces": 1}),
    ("cust-c", False, 1, [False], {"gender": "unknown", "age_band": "unknown", "tracks_with_faces": 0}),
    ("cust-d", False, 0, [], {"gender": "unknown", "age_band": "unknown", "tracks_with_faces": 0}),
])
def test_customer_detail_partial_knowledge(client: TestClient, cid: str, returning: bool, visits: int,
                                           tracks: list[bool], summary: dict) -> None:
    body = client.get(f"/v1/customers/{cid}").json()
    assert (body["returning"], len(body["visits"])) == (returning, visits)
    assert [t["attributes"] is not None for t in body["tracks"]] == tracks  # has attributes?
    assert {k: body["summary"][k] for k in summary} == summary


def test_unknown_customer_is_404(client: TestClient) -> None:
    r = client.get("/v1/customers/cust-zzz")
    assert (r.status_code, r.json()) == (404, {"detail": "unknown customer 'cust-zzz'"})


HOSTILE_IDS = [
    ("'; DROP TABLE customers; --", 422),
    ("cust-a' OR '1'='1", 422),
    ("cust-a%00", 422),
    ("cust-a%0A", 422),
    ("%20cust-a", 422),
    ("-cust-a", 422),
    (".hidden", 422),
    ("cust-%C3%A4", 422),  # non-ASCII
    ("*", 422),
    ("%25", 422),
    ("a" * 129, 422),
    ("a" * 128, 404),  # valid, unknown
    ("cust-a%2F..%2F..%2Fetc", 404),  # a slash never reaches the handler
    ("..%2F..%2Fetc%2Fpasswd", 404),
    ("cust-a/visits", 404),
]


@pytest.mark.parametrize(("raw_id", "status"), HOSTILE_IDS)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_hostile_customer_ids_never_reach_the_stores(client: TestClient, gallery: SqliteGalleryStore,
                                                     erased: list[str], method: str, raw_id: str,
                                                     status: int) -> None:
    r = client.request(method, f"/v1/customers/{raw_id}")
    assert r.status_code == status, r.text
    assert gallery.counts() == {"customers": 4, "embeddings": 8, "visits": 4}
    if status == 422:
        assert erased == []


# -- demographics ---------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "tracks", "gender", "age"), [
    ({}, 3, {"female": 2, "male": 1, "unknown": 0}, {"25-34": 2, "65+": 1}),
    ({"camera_id": "cam-2"}, 2, {"female": 1, "male": 1, "unknown": 0}, {"25-34": 1, "65+": 1}),
    ({"camera_id": "cam-1", "start_ms": T0, "end_ms": T0 + DAY}, 1, {"female": 1, "male": 0, "unknown": 0},
     {"25-34": 1}),
    ({"start_ms": T0 + HOUR + 30_000}, 2, {"female": 1, "male": 1, "unknown": 0}, {"25-34": 1, "65+": 1}),
    ({"end_ms": T0 + 60_000}, 0, {"female": 0, "male": 0, "unknown": 0}, {}),
])
def test_demographics(client: TestClient, params: dict, tracks: int, gender: dict, age: dict) -> None:
    r = client.get("/v1/demographics", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["camera_id"], body["start_ms"], body["end_ms"]) == (
        params.get("camera_id"), params.get("start_ms"), params.get("end_ms"))
    assert (body["tracks"], body["gender"]) == (tracks, gender)
    assert {k: v for k, v in body["age"].items() if v} == age
    assert list(body["age"]) == ["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"]
    assert sum(body["emotion"].values()) == tracks


@pytest.mark.parametrize(("params", "status"), [
    ({"camera_id": "cam-9"}, 404), ({"camera_id": "x" * 201}, 422), ({"start_ms": 5, "end_ms": 5}, 422),
    ({"start_ms": -1}, 422), ({"end_ms": "soon"}, 422),
])
def test_demographics_bad_input(client: TestClient, params: dict, status: int) -> None:
    r = client.get("/v1/demographics", params=params)
    assert r.status_code == status, r.text
    if status == 404:
        assert r.json() == {"detail": "unknown camera 'cam-9'"}


# -- erasure --------------------------------------------------------------------------------


def test_delete_erases_the_customer_everywhere(client: TestClient, gallery: SqliteGalleryStore,
                                               storage: SqliteStorage, erased: list[str]) -> None:
    r = client.delete("/v1/customers/cust-a")
    assert (r.status_code, r.content) == (204, b"")
    assert erased == ["cust-a"]
    # Gallery store: the customer, its embeddings and visits are gone; the others stay.
    assert not gallery.customer_exists("cust-a")
    assert gallery.visits("cust-a") == [] and gallery.last_visit("cust-a") is None
    assert [cid for _, cid, _, _ in gallery.embeddings() if cid == "cust-a"] == []
    assert gallery.counts() == {"customers": 3, "embeddings": 6, "visits": 2}
    # History: its matches and the attributes of its two tracks are gone; the others' stay.
    assert storage.customer_tracks("cust-a") == []
    assert len(storage.customer_tracks("cust-b")) == 1
    assert storage.demographics()["tracks"] == 1
    # The API agrees.
    assert client.get("/v1/customers/cust-a").status_code == 404
    assert "cust-a" not in ids(client.get("/v1/customers").json())
    r = client.delete("/v1/customers/cust-a")
    assert (r.status_code, r.json()) == (404, {"detail": "unknown customer 'cust-a'"})


def test_delete_of_history_only_customer_is_204(client: TestClient, storage: SqliteStorage) -> None:
    storage.write_customer_matches([match("cust-gone", "cam-1", 3, T0)])  # e.g. gallery already purged
    assert client.delete("/v1/customers/cust-gone").status_code == 204
    assert storage.customer_tracks("cust-gone") == []


def test_delete_unknown_is_404_but_still_notifies(client: TestClient, erased: list[str]) -> None:
    r = client.delete("/v1/customers/cust-zzz")
    assert (r.status_code, r.json()) == (404, {"detail": "unknown customer 'cust-zzz'"})
    assert erased == ["cust-zzz"]  # a retry of a failed notification reaches the recognition service


def test_delete_when_notification_fails_is_503_and_a_retry_notifies(
        storage: SqliteStorage, gallery: SqliteGalleryStore) -> None:
    calls: list[str] = []

    def flaky(customer_id: str) -> None:
        calls.append(customer_id)
        if len(calls) == 1:
            raise ConnectionError("kafka down")

    client = signed_in_client(create_app(make_config(), storage, gallery_store=gallery, on_erasure=flaky))
    r = client.delete("/v1/customers/cust-b")
    assert r.status_code == 503 and "retry" in r.json()["detail"]
    assert not gallery.customer_exists("cust-b") and storage.customer_tracks("cust-b") == []
    assert client.delete("/v1/customers/cust-b").status_code == 204  # the retry asked for: done (not 404)
    assert calls == ["cust-b", "cust-b"]


def test_delete_without_on_erasure(storage: SqliteStorage, gallery: SqliteGalleryStore) -> None:
    client = signed_in_client(create_app(make_config(), storage, gallery_store=gallery))
    assert client.delete("/v1/customers/cust-c").status_code == 204
    assert not gallery.customer_exists("cust-c")


# -- faces disabled ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/customers"), ("GET", "/v1/customers/cust-a"), ("DELETE", "/v1/customers/cust-a"),
])
def test_customer_endpoints_are_503_without_gallery(storage: SqliteStorage, method: str, path: str) -> None:
    client = signed_in_client(create_app(make_config(), storage))
    r = client.request(method, path)
    assert (r.status_code, r.json()) == (503, {"detail": FACES_DISABLED})
    assert storage.customer_tracks("cust-a") != []  # nothing was erased


def test_demographics_work_without_gallery(storage: SqliteStorage) -> None:
    client = signed_in_client(create_app(make_config(), storage))
    assert client.get("/v1/demographics").json()["tracks"] == 3


# -- docs and metrics ---------------------------------------------------------------------------


def test_openapi_documents_the_face_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/customers", "/v1/customers/{customer_id}", "/v1/demographics"} <= set(paths)
    assert paths["/v1/customers"]["get"]["tags"] == ["customers"]
    assert paths["/v1/demographics"]["get"]["tags"] == ["demographics"]
    assert {"200", "404", "422", "503"} <= set(paths["/v1/customers/{customer_id}"]["get"]["responses"])
    assert {"204", "404", "422", "503"} <= set(paths["/v1/customers/{customer_id}"]["delete"]["responses"])
    for op in (paths["/v1/customers"]["get"], paths["/v1/customers/{customer_id}"]["get"],
               paths["/v1/demographics"]["get"]):
        assert op["description"] and op["summary"]
    cid = next(p for p in paths["/v1/customers/{customer_id}"]["get"]["parameters"] if p["name"] == "customer_id")
    assert cid["schema"]["maxLength"] == 128 and cid["schema"]["pattern"]
    size = next(p for p in paths["/v1/customers"]["get"]["parameters"] if p["name"] == "page_size")
    assert (size["schema"]["minimum"], size["schema"]["maximum"]) == (1, 500)
    schemas = spec["components"]["schemas"]
    assert {"total", "page", "page_size", "items"} <= set(schemas["CustomersOut"]["properties"])
    assert {"visits", "tracks", "summary", "returning"} <= set(schemas["CustomerOut"]["properties"])
    assert {"tracks", "age", "gender", "emotion"} <= set(schemas["DemographicsOut"]["properties"])


def test_customer_ids_never_become_metric_labels(client: TestClient) -> None:
    client.get("/v1/customers/cust-a")
    client.delete("/v1/customers/cust-b")
    text = client.get("/metrics").text
    assert 'route="/v1/customers/{customer_id}"' in text
    assert "cust-a" not in text and "cust-b" not in text


# -- PostgreSQL history ---------------------------------------------------------------------------


def test_customer_detail_and_erasure_over_postgres(gallery: SqliteGalleryStore) -> None:
    schema = f"test_api_faces_{uuid.uuid4().hex[:12]}"
    try:
        with PostgresStorage(PG_DSN, schema=schema) as store:
            fill_storage(store)
            erased: list[str] = []
            client = signed_in_client(create_app(make_config(), store, gallery_store=gallery, on_erasure=erased.append))
            body = client.get("/v1/customers/cust-a").json()
            assert [t["track_id"] for t in body["tracks"]] == [1, 5]
            assert body["summary"]["age_band"] == "25-34"
            assert client.get("/v1/demographics", params={"camera_id": "cam-2"}).json()["tracks"] == 2
            assert client.delete("/v1/customers/cust-a").status_code == 204
            assert store.customer_tracks("cust-a") == [] and erased == ["cust-a"]
            assert not gallery.customer_exists("cust-a")
    finally:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
