"""Review of the CLI, batch 32b: `audit --min-accuracy`, `export-dataset` into a used folder, stopped pipeline commands.

* ``audit --min-accuracy 90`` (a percentage) was refused only after every clip was cut and tallied; the typed
  answers were written nowhere. Now argparse refuses it before anything runs, and a prompt's answers go to
  ``<out>/answers.csv`` as they are typed (``--answers`` takes them again).
* A second ``export-dataset`` into the same ``--out`` mixed both sets (the same frames in train and val). Now a
  non-empty ``--out`` is refused unless ``--overwrite``, which replaces the previous export's files only.
* A pipeline command stopped by SIGTERM (or Ctrl-C) exited 0 with partial output under the complete output's name.
  Now it says ``interrupted: results cover N of M frames``, exits 130, and writes its files under ``.partial``
  names only.

Real pipeline (YOLO + tracker) on TUD-Campus into a SQLite history; the stopped commands run in a subprocess on
people_street.mp4 (302 frames), their stderr a pseudo-terminal so that the progress bar says when a first frame is
done; SIGTERM then.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import pathlib
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time

import cv2
import pytest
import yaml

from storelens.cli import main
from storelens.config import load_config, parse_config
from storelens.domain import dataset as ds
from storelens.domain.mot import read_mot
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.storage import open_storage

ROOT = pathlib.Path(__file__).resolve().parents[1]
CAMPUS = asset("mot", "TUD-Campus", "TUD-Campus.mp4")  # 71 frames, 640x480; people walk across both lines
LONG = asset("video", "people_street.mp4")  # 302 frames


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hist")
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "review32b"}, "faces": {"enabled": False}, "storage": {"path": str(tmp / "history.sqlite")},
        "cameras": [{"id": "tud", "source": str(CAMPUS), "start_ts_ms": 1_700_000_000_000,
                     "lines": [{"id": "a", "a": [320, 0], "b": [320, 480]},
                               {"id": "b", "a": [200, 0], "b": [200, 480]}]}]}))
    config = load_config(site)
    storage = open_storage(config.storage)
    try:
        result = EmbeddedPipeline(config, storage=storage).run()
    finally:
        storage.close()
    assert result.frames == 71 and not getattr(result, "interrupted", False)  # a run to the video's end
    assert sum(c["in"] + c["out"] for c in result.line_counts["tud"].values()) >= 3
    return site


# -- 1. audit --min-accuracy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, said", [
    ("90", "90.0 is out of range: use 0 to 1, e.g. 0.9 for 90%"),
    ("1.5", "1.5 is out of range: use 0 to 1"),
    ("-0.1", "-0.1 is out of range"),
    ("nan", "nan is out of range"),
    ("ninety", "'ninety' is not a number"),
])
def test_min_accuracy_out_of_range_is_refused_before_any_clip_is_cut(history, tmp_path, capsys, value, said):
    out = tmp_path / "clips"
    out.mkdir()
    answers = tmp_path / "answers.csv"
    answers.write_text("clip_id,in,out\nc001,1,0\nc002,0,1\nc003,1,0\n")
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--config", str(history), "--out", str(out), "--clips", "3", "--seed", "1",
              "--min-accuracy", value, "--answers", str(answers)])
    assert exc.value.code == 2
    assert f"argument --min-accuracy: {said}" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no mp4, no clips.csv


def test_typed_answers_are_written_as_typed_and_can_be_given_again(history, tmp_path, capsys, monkeypatch):
    out = tmp_path / "clips"
    # the person answers two clips, then the input ends (a closed terminal): the audit fails, the answers stay
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 0\nx\n0 1\n"))
    rc = main(["audit", "--config", str(history), "--out", str(out), "--clips", "3", "--min-accuracy", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "no answer for clip c003" in err and f"{out / 'answers.csv'}" in err, err
    seed = re.search(r"--seed (\d+)", err).group(1)  # drawn when not given, named so the same clips come again
    rows = list(csv.reader((out / "answers.csv").open()))
    assert rows == [["clip_id", "in", "out"], ["c001", "1", "0"], ["c002", "0", "1"]]

    # the whole tally typed: written as it goes; recorded; then given again with --answers and the named seed
    monkeypatch.setattr(sys, "stdin", io.StringIO("1 0\n0 1\n1 1\n"))
    assert main(["audit", "--config", str(history), "--out", str(out), "--clips", "3", "--seed", seed, "--json"]) == 0
    printed = capsys.readouterr().out  # input()'s prompts, then the JSON
    typed = json.loads(printed[printed.index('{"audit_id"'):])
    kept = tmp_path / "kept.csv"
    kept.write_bytes((out / "answers.csv").read_bytes())
    assert list(csv.reader(kept.open()))[1:] == [["c001", "1", "0"], ["c002", "0", "1"], ["c003", "1", "1"]]
    again = tmp_path / "again"
    assert main(["audit", "--config", str(history), "--out", str(again), "--clips", "3", "--seed", seed,
                 "--answers", str(kept), "--json"]) == 0
    refed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    same = ("n_clips", "n_correct", "system_in", "system_out", "person_in", "person_out", "accuracy")
    assert {k: refed[k] for k in same} == {k: typed[k] for k in same}
    assert typed["person_in"] == 2 and typed["person_out"] == 2
    assert not (again / "answers.csv").exists()  # --answers: nothing typed, nothing written


# -- 2. export-dataset into a used folder ------------------------------------------------------------------------

def _stems(out: pathlib.Path, split: str) -> set[str]:
    return {p.stem for p in (out / "images" / split).glob("*.jpg")}


def test_a_second_export_into_the_same_folder_needs_overwrite_and_replaces_the_first(history, tmp_path, capsys):
    out = tmp_path / "set"

    def export(fraction: str, *extra: str) -> int:
        return main(["export-dataset", "--from-db", "--config", str(history), "--out", str(out), "--every", "5",
                     "--min-length", "5", "--no-face-detector", "--val-fraction", fraction, "--json", *extra])

    assert export("0.2") == 0
    first = json.loads(capsys.readouterr().out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (out / "notes.txt").write_text("mine")

    assert export("0.6") == 2  # refused: the folder holds the first export
    err = capsys.readouterr().err
    assert err.startswith("error: export folder") and "not empty" in err and "--overwrite" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.name != "notes.txt") == before  # untouched

    assert export("0.6", "--overwrite") == 0
    second = json.loads(capsys.readouterr().out)
    train, val = _stems(out, "train"), _stems(out, "val")
    assert train and val and not train & val  # no frame in both splits
    assert len(train) + len(val) == second["images"] == first["images"] == 15  # frames 1, 6, ..., 71
    assert {p.stem for p in out.glob("labels/*/*.txt")} == train | val
    assert len(val) == len(ds_val_frames(15, 0.6))
    assert f"contents: {second['images']} images" in (out / "README.txt").read_text()
    assert read_mot(out / "mot" / "tud" / "gt" / "gt.txt")
    assert (out / "notes.txt").read_text() == "mine"  # not the export's: kept
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "dataset.yaml", "images", "labels", "mot",
                                                     "notes.txt"]  # no partial folder left


def ds_val_frames(n: int, fraction: float) -> list[int]:
    return [i for i in range(n) if ds.split_of(i, n, fraction) == "val"]


def test_a_failed_export_leaves_the_folder_as_it_was(history, tmp_path, capsys):
    out = tmp_path / "new"
    # camera 'tud' has no stored frame in this range: the export fails after its folder was made
    assert main(["export-dataset", "--from-db", "--config", str(history), "--out", str(out), "--from", "1",
                 "--to", "2", "--no-face-detector"]) == 2
    assert "no stored frames" in capsys.readouterr().err
    assert not out.exists()


# -- 3. a stopped pipeline command -------------------------------------------------------------------------------

def _start(argv: list[str], cwd: pathlib.Path, **env_vars: str) -> tuple[subprocess.Popen, int]:
    """``python -m storelens.cli ARGV`` with stderr on a pseudo-terminal (the progress bar shows)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # wide: no wrapped lines
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "200", **env_vars}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "storelens.cli", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    return proc, master


def _read(master: int, until: re.Pattern | None, buf: bytes = b"", limit_s: float = 600) -> bytes:
    """The pseudo-terminal's text until ``until`` matches (None: until the process closed it); ``limit_s`` only
    bounds a hung test."""
    end = time.monotonic() + limit_s
    while (until is None or not until.search(buf)) and time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every end of the slave closed
            break
        if not chunk:
            break
        buf += chunk
    return buf


FIRST_FRAME = re.compile(rb"\b([1-9]\d*)/302\b")  # the progress bar's "N/302", N >= 1


def _interrupt(argv: list[str], cwd: pathlib.Path) -> tuple[int, str, str, int]:
    """Run the command until it has processed a frame, SIGTERM it: ``(rc, stderr, stdout, frames)``, ``frames``
    from the ``interrupted: results cover N of 302 frames`` note."""
    proc, master = _start(argv, cwd)
    try:
        seen = _read(master, FIRST_FRAME)
        assert FIRST_FRAME.search(seen), seen.decode(errors="replace")[-2000:]
        proc.send_signal(signal.SIGTERM)
        text = _read(master, None, seen)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.decode(errors="replace"))
    note = re.search(r"interrupted: results cover (\d+) of 302 frames", err)
    assert note, err[-2000:]
    return proc.returncode, err, out.decode(), int(note.group(1))


@pytest.mark.parametrize("command", ["track", "heatmap", "count"])
def test_a_stopped_pipeline_command_says_so_exits_130_and_leaves_no_complete_looking_file(tmp_path, command):
    argv = {"track": ["track", str(LONG), "--mot-out", "t.txt"],
            "heatmap": ["heatmap", str(LONG), "--out", "h.png", "--json", "h.json"],
            "count": ["count", str(LONG), "--line", "960,0,960,1080"]}[command]
    rc, err, out, frames = _interrupt(argv, tmp_path)
    assert rc == 130, err[-2000:]
    assert 1 <= frames < 302
    assert not (tmp_path / "t.txt").exists() and not (tmp_path / "h.png").exists()
    assert not (tmp_path / "h.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if command == "track":  # the boxes so far, under a name no evaluator takes for the whole video's
        assert "t.partial.txt" in err and "t.txt not written" in err
        rows = read_mot(tmp_path / "t.partial.txt")
        assert rows and max(rows) <= frames
    elif command == "heatmap":
        assert "h.partial.png" in err
        assert cv2.imread(str(tmp_path / "h.partial.png")) is not None
        assert json.loads((tmp_path / "h.partial.json").read_text())["frames"] == frames
    else:  # what was counted is printed
        assert f"{frames} frames" in out and "line-1" in out


def _stored_frames(tmp: pathlib.Path) -> int:
    """Frames stored so far in the temporary history of a running ``export-dataset SOURCE`` (``TMPDIR=tmp``)."""
    n = 0
    for db in tmp.glob("storelens-export-*/history.sqlite"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                n += conn.execute("SELECT count(*) FROM frames WHERE end_of_stream = 0").fetchone()[0]
        except sqlite3.Error:  # not made yet
            pass
    return n


def test_a_stopped_export_exports_nothing(tmp_path):
    out, tmp = tmp_path / "set", tmp_path / "tmp"
    tmp.mkdir()
    proc, master = _start(["export-dataset", str(LONG), "--out", str(out), "--no-face-detector"], tmp_path,
                          TMPDIR=str(tmp))
    try:
        text, end = b"", time.monotonic() + 600  # (only bounds a hung test)
        while not _stored_frames(tmp) and proc.poll() is None and time.monotonic() < end:
            text = _read(master, re.compile(rb"(?!)"), text, limit_s=0.5)  # drain stderr, look again
        assert _stored_frames(tmp), text.decode(errors="replace")[-2000:]
        proc.send_signal(signal.SIGTERM)
        text = _read(master, None, text)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    err = text.decode(errors="replace")
    assert proc.returncode == 130, err[-2000:]
    assert re.search(r"interrupted: the pipeline stopped after \d+ frames: nothing exported", err), err[-2000:]
    assert not out.exists()  # no half-written set (and no folder made for it)


def test_a_stopped_run_says_it_was_stopped():
    config = parse_config({"store": {"id": "x"}, "faces": {"enabled": False},
                           "cameras": [{"id": "c", "source": str(CAMPUS)}]}, origin="test", base=ROOT)
    pipes: list[EmbeddedPipeline] = []
    pipe = EmbeddedPipeline(config, on_tracked=lambda tf: pipes[0].stop())  # stopped at its first tracked frame
    pipes.append(pipe)
    result = pipe.run()
    assert result.interrupted and 1 <= result.frames < 71
