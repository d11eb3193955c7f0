"""Review of the batch that merged the message-type header, the history outbox, the zone defaults, ... (the
interactions the review found):

1. A site whose zone sets ``exit_after_ms`` above the tracker's window, without ``lost_after_ms``, could not be
   changed at all: :func:`site_document` kept the derived ``zones.lost_after_ms`` (2400) as if the file set
   it, and the re-validation refused it under the zone's ``exit_after_ms`` (``PUT /v1/site``, ``site import``,
   every stage applying a version).
2. The embedded faces stage without reid (``FacesStage(attributes, None)``) stopped on an erasure relayed from
   the outbox (``ReidStage.decode`` called on ``None``); it now decodes it and ignores it.
3. The API's erasure publisher over the history outbox (embedded mode) failed: the outbox lacked the Kafka bus'
   ``publish_all`` / ``close``; the relayed message keeps its ``message-type`` header.
"""
from __future__ import annotations

import pytest

from storelens.config import parse_config
from storelens.config.site import site_document, with_cameras
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.stages.faces import AttributesStage, FacesStage
from storelens.storage import SqliteStorage
from storelens.storage.outbox import HistoryOutbox
from storelens.runtime.workers import CustomerErasurePublisher
from test_faces_review_fixes import config as faces_config
from test_faces_review_fixes import models  # noqa: F401 (the module's fixture)

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]


@pytest.mark.parametrize("zone", [
    {"exit_after_ms": 5000},  # above the default tracker window (2.4 s)
    {"exit_after_ms": 5000, "lost_after_ms": 6000},  # the zone's own
])
def test_a_site_with_a_long_exit_wait_can_be_changed(zone) -> None:
    doc = {"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4", "zones": [
        {"id": "z", "kind": "area", "polygon": SQUARE, **zone}]}]}
    cfg = parse_config(doc)
    assert "lost_after_ms" not in site_document(cfg)["zones"]  # derived, not the file's
    cams = [c.model_dump(mode="json") for c in cfg.cameras]
    cams[0]["zones"][0]["polygon"] = [[0, 0], [120, 0], [120, 100], [0, 100]]  # a moved zone
    new = with_cameras(cfg, cams)
    assert new.cameras[0].zones[0].polygon[1] == (120, 0) or list(new.cameras[0].zones[0].polygon[1]) == [120, 0]
    rules = new.cameras[0].zones[0].rules(new.zones)
    assert rules.lost_after_ms == zone.get("lost_after_ms", 5000)  # raised to the zone's exit wait, or its own


def test_an_explicit_zones_lost_after_ms_stays_in_the_document() -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "zones": {"lost_after_ms": 3000}})
    assert site_document(cfg)["zones"]["lost_after_ms"] == 3000


def test_the_faces_stage_without_reid_ignores_an_erasure(tmp_path, models) -> None:  # noqa: F811
    cfg = faces_config(tmp_path)
    stage = FacesStage(AttributesStage(cfg, analyzer=models.analyzer, detector=models.detector), None)
    req = m.CustomerErasure(customer_id="cust-1", ts_ms=1, request_id="r")
    decoded = stage.decode(topics.CUSTOMER_ERASURES, m.encode(req))
    assert decoded.customer_id == "cust-1"
    assert stage.handle(topics.CUSTOMER_ERASURES, decoded).info == {"erased": False}
    from storelens.errors import DecodeError

    with pytest.raises(DecodeError, match="without a customer_id"):
        stage.decode(topics.CUSTOMER_ERASURES, m.encode(m.CustomerErasure(ts_ms=1)))


def test_the_erasure_publisher_over_the_outbox_keeps_the_message_type(tmp_path) -> None:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "x.mp4"}],
                        "storage": {"path": str(tmp_path / "h.db")}})
    with SqliteStorage(str(tmp_path / "h.db")) as storage:
        publisher = CustomerErasurePublisher(cfg, bus=HistoryOutbox(storage))
        publisher("cust-9")
        publisher.close()
        [(topic, key, value, headers)] = storage.take_outbox([topics.CUSTOMER_ERASURES])
    assert (topic, key, m.decode(m.CustomerErasure, value).customer_id) == (topics.CUSTOMER_ERASURES, b"cust-9",
                                                                          "cust-9")
    assert headers == m.type_headers(m.CustomerErasure)
