"""Review fixes, fifth batch: webhook URLs out of the logs, and a file camera resumed (not replayed) by a site
version that changes only its sampling or encoding.

* A Slack-like webhook URL holds its secret in its path: a real local HTTP server failing with 500 (and one
  answering a redirect to another secret URL) behind a real :class:`WebhookSender` -> no log line (formatted as
  the services log, extras and tracebacks included) and no dead-letter reason carries the token; the logs show
  ``http://127.0.0.1:<port>/...#<8 hex of the URL's SHA-256>``, different for two URLs of that host.
* A site version that changes only ``jpeg_quality`` (or ``target_fps``) of a file camera mid-file: the file goes on
  after its last published frame (timestamps never go back, no source frame twice, no end-of-stream in the middle)
  and the stored crossings equal those of a run without the edit; a changed ``start_ts_ms`` still starts a new
  stream (end-of-stream, the file from its start).
"""
from __future__ import annotations

import hashlib
import http.server
import logging
import threading

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import CameraConfig, parse_config
from storelens.contract import messages as m
from storelens.logs import JsonFormatter
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.ingest import CameraSupervisor
from storelens.runtime.webhooks import Delivery, WebhookSender
from storelens.storage import SqlStorage

TOKEN = "XoXbS3cr3tT0k3nZZ"
OTHER_TOKEN = "AnotherS3cr3tQQ"


class FailingHook:
    """A local HTTP server: every POST answers 500, except ``.../redirect`` (302 to a secret URL of this host)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append(self.path)
                if self.path.endswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", f"/services/T000/B000/{OTHER_TOKEN}")
                else:
                    self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhook_logs_and_dead_letters_never_show_the_secret_url(caplog) -> None:
    hook = FailingHook()
    slack = f"{hook.base}/services/T000/B000/{TOKEN}"
    other = f"{hook.base}/services/T000/B111/{OTHER_TOKEN}"
    redirect = f"{hook.base}/services/T000/B222/{TOKEN}/redirect"
    gate, retrying = threading.Event(), threading.Event()

    def sleep(_s: float) -> None:  # the first retry waits until the queue has overflowed
        retrying.set()
        gate.wait(10)

    sender = WebhookSender(sleep=sleep, max_queued=1)
    try:
        with caplog.at_level(logging.DEBUG, logger="storelens.runtime.webhooks"):
            def delivery(url: str, n: int) -> Delivery:
                return Delivery(url, b'{"n": %d}' % n, {}, max_attempts=2, backoff_s=0.0, backoff_max_s=0.0,
                                timeout_s=5.0)

            sender.submit(delivery(slack, 1))  # 500, then waits to retry
            assert retrying.wait(10)
            for n in (2, 3):  # 2 waits behind it, 3 pushes it out: "queue full"
                sender.submit(delivery(slack, n))
            gate.set()
            sender.submit(delivery(other, 4))
            sender.submit(delivery(redirect, 5))
            assert sender.flush(timeout_s=30)
        assert sender.dropped == 1 and sender.delivered == 0 and len(sender.dead_letters) == 5
        assert len(hook.posts) == 2 + 2 + 2 + 2  # 1, 3, 4 and 5 tried twice each (2 dropped unsent)
    finally:
        sender.close()
        hook.close()

    def fp(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:8]

    lines = [JsonFormatter().format(r) for r in caplog.records]
    everything = "\n".join(lines + [e for d in sender.dead_letters for e in d.errors])
    assert TOKEN not in everything and OTHER_TOKEN not in everything and "/services/" not in everything, everything
    shown = {r.getMessage(): set() for r in caplog.records}
    for r in caplog.records:
        shown[r.getMessage()].add(getattr(r, "url", None))
    assert shown["alert webhook queue full; oldest message dropped"] == {f"{hook.base}/...#{fp(slack)}"}
    assert shown["alert webhook failed; retrying"] == {f"{hook.base}/...#{fp(u)}" for u in (slack, other, redirect)}
    assert shown["alert webhook dead-lettered"] == {f"{hook.base}/...#{fp(u)}" for u in (slack, other, redirect)}
    assert fp(slack) != fp(other)  # two URLs of one host stay apart
    [moved] = {d.errors[-1] for d in sender.dead_letters if d.url == redirect}
    location = f"{hook.base}/services/T000/B000/{OTHER_TOKEN}"  # the Location, made absolute
    assert moved.startswith(f"HTTP 302 redirect to {hook.base}/...#{fp(location)} ")


# -- a file camera resumed by a site version that changes only its sampling or encoding ---------------------------

SHOP_VIDEO = asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4")  # 295 frames, 25 fps
SHOP = {"id": "shop", "source": str(SHOP_VIDEO), "target_fps": 10.0,
        "lines": [{"id": "door", "a": [0, 150], "b": [384, 150]}]}


def supervise(cam: CameraConfig, edit: dict | None, after: int = 12) -> list[m.Frame]:
    """Every frame the supervisor publishes for ``cam``, with ``edit`` applied once ``after`` frames went out."""
    published: list[m.Frame] = []
    reached = threading.Event()

    def publish(key: bytes, value: bytes) -> None:
        published.append(m.decode(m.Frame, value))
        if len(published) >= after:
            reached.set()
            if edit is not None:
                edited.wait(10)  # the rest waits for the edit (its stop, then the new thread)

    edited = threading.Event()
    errors: list = []
    sup = CameraSupervisor(publish, lambda: False, lambda c, exc: errors.append(exc))
    sup.apply([cam])
    if edit is not None:
        assert reached.wait(60)
        threading.Timer(0.2, edited.set).start()  # the old thread stops while its publish waits
        diff = sup.apply([cam.model_copy(update=edit)])
        edited.set()
        assert [c.id for c in diff.restarted] == [cam.id]
    for t in sup.threads().values():
        t.join(120)
    assert not errors and not sup.alive()
    return published


def test_a_file_camera_resumes_after_a_sampling_or_encoding_edit() -> None:
    cam = CameraConfig(id="shop", source=str(SHOP_VIDEO), target_fps=10.0)
    plain = supervise(cam, None)
    for edit, want in (({"jpeg_quality": 60}, plain),
                       ({"target_fps": 5.0}, None)):
        frames = supervise(cam, edit)
        ts = [f.ts_ms for f in frames]
        assert ts == sorted(ts), edit  # the timestamps never go back
        assert [f.seq for f in frames] == list(range(len(frames))), edit
        src = [f.source_frame for f in frames[:-1]]
        assert src == sorted(set(src)), edit  # no source frame published twice
        assert [f.end_of_stream for f in frames].count(True) == 1 and frames[-1].end_of_stream, edit
        if want is not None:  # same sampling: the frames a run without the edit publishes
            assert [(f.seq, f.ts_ms, f.source_frame) for f in frames] == [
                (f.seq, f.ts_ms, f.source_frame) for f in want]
            assert frames[5].jpeg == want[5].jpeg and frames[20].jpeg != want[20].jpeg  # the new quality after it
        else:  # 5 fps after the edit: every 5th source frame, on the ticks of a 5 fps run of the file
            tail = [f.source_frame for f in frames[12:-1]]
            assert tail and all((s - 1) % 5 == 0 for s in tail) and {b - a for a, b in zip(tail, tail[1:])} == {5}
            assert tail[0] > frames[11].source_frame
    # a file that has already ended stays ended (nothing read again, no second marker)
    published: list[m.Frame] = []
    sup = CameraSupervisor(lambda k, v: published.append(m.decode(m.Frame, v)), lambda: False, lambda c, e: None)
    sup.apply([cam])
    sup.threads()["shop"].join(120)
    n = len(published)
    assert [c.id for c in sup.apply([cam.model_copy(update={"jpeg_quality": 50})]).restarted] == ["shop"]
    assert sup.alive() == [] and len(published) == n and sup.cameras[0].jpeg_quality == 50
    # a new start_ts_ms is a new stream: the old one's marker, then the file from its start
    frames = supervise(cam, {"start_ts_ms": cam.start_ts_ms + 3_600_000})
    eos = [i for i, f in enumerate(frames) if f.end_of_stream]
    assert len(eos) == 2 and frames[eos[0] + 1].source_frame == 1
    assert frames[eos[0] + 1].ts_ms == cam.start_ts_ms + 3_600_000


def run_pipeline(tmp_path, name: str, edit: dict | None) -> tuple[list[tuple], list]:
    """The embedded pipeline over the shop clip (raw frames: ``jpeg_quality`` changes no pixel), with ``edit``
    PUT through the API after 15 tracked frames; (the tracked frames' (seq, ts_ms, source_frame, track ids),
    crossings)."""
    storage = SqlStorage(str(tmp_path / f"{name}.db"))
    cfg = parse_config({"store": {"id": "s"}, "cameras": [SHOP], "pipeline": {"frames": "bgr"}})
    client = signed_in_client(create_app(cfg, storage))
    tracked: list[tuple] = []

    def on_tracked(tf: m.TrackedFrame) -> None:  # frames with people (not the end-of-stream markers)
        tracked.append((tf.seq, tf.ts_ms, tf.source_frame, sorted(t.track_id for t in tf.tracks)))
        if edit is not None and len(tracked) == 15:
            r = client.put("/v1/site/cameras/shop", json={**SHOP, **edit})
            assert r.status_code == 200, r.text

    result = EmbeddedPipeline(cfg, storage=storage, on_tracked=on_tracked).run()
    assert result.dead_letters == 0
    crossings = [(c.line_id, c.track_id, c.direction, c.ts_ms, c.seq) for c in storage.crossings("shop", 0, 2**53)]
    storage.close()
    return tracked, crossings


def test_a_jpeg_quality_edit_mid_file_counts_nothing_twice(tmp_path, caplog) -> None:
    plain, plain_crossings = run_pipeline(tmp_path, "plain", None)
    with caplog.at_level(logging.INFO, logger="storelens.runtime"):
        edited, edited_crossings = run_pipeline(tmp_path, "edited", {"jpeg_quality": 60})
    starts = [r for r in caplog.records if r.getMessage() == "camera started"]
    assert len(starts) == 2, starts  # the edit restarted the camera mid-file ...
    ts, src = [f[1] for f in edited], [f[2] for f in edited]
    assert plain_crossings and edited_crossings == plain_crossings  # nothing counted twice
    assert ts == sorted(ts) and src == sorted(set(src))  # never back in time, no source frame twice
    assert 15 <= getattr(starts[1], "after_source_frame", 0) < src[-1]  # ... which went on after its last frame
    # the same frames and the same track ids: one stream, its tracks going on over the edit
    assert edited == plain, (len(edited), len(plain), [(a, b) for a, b in zip(edited, plain) if a != b][:4])
