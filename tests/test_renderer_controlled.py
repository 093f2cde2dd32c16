"""The controlled renderer dataset (a real photo warped by the face model, true coefficients) and `eval renderer`'s
swapped-coefficient test on it: real MediaPipe tracking, a real onnxruntime renderer, ffmpeg for the mp4."""
import json
import shutil

import numpy as np
import pytest

from _renderer_synth import one_torch_thread, tiny_renderer_onnx


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    from realtalk_bridge.cli import main

    out = tmp_path_factory.mktemp("controlled") / "ds"
    assert main(["renderer", "make-controlled", "--out", str(out), "--frames", "24", "--crop-size", "128",
                 "--shard-frames", "16", "--quiet"]) == 0
    return out


def test_controlled_dataset_has_the_prepare_layout_and_true_coefficients(controlled):
    from realtalk_bridge.face.arkit import ARKIT_INDEX
    from realtalk_bridge.train.renderer import RendererDataset
    from realtalk_bridge.video import geometry as G

    m = json.loads((controlled / "manifest.json").read_text())
    assert m["space"] == "arkit52" and m["renderer"]["crop_size"] == 128 and len(m["clips"]) == 1
    c = m["clips"][0]
    assert c["n_frames"] == 24 and c["shards"] == ["shard_000.npz", "shard_001.npz"]
    with np.load(controlled / "clips" / "controlled.npz", allow_pickle=False) as z:
        expr, cam = z["expr"], z["camera"]
    assert expr.shape == (24, 52) and cam.shape == (24, 2, 4) and np.isfinite(cam).all()
    jaw = expr[:, ARKIT_INDEX["jawOpen"]]
    assert jaw.max() - jaw.min() > 0.2  # the mouth moves a lot
    lm = np.concatenate([np.load(controlled / "frames" / "controlled" / s)["landmarks"] for s in c["shards"]])
    crops = np.concatenate([np.load(controlled / "frames" / "controlled" / s)["crops"] for s in c["shards"]])
    assert crops.shape == (24, 128, 128, 3) and lm.shape == (24, 478, 2)
    # the frame was made from its coefficients: the landmark lip gap follows jawOpen closely
    gap = np.linalg.norm(lm[:, 13] - lm[:, 14], axis=1)
    assert np.corrcoef(jaw, gap)[0, 1] > 0.9
    # ... and the mouth opening is painted (dark cavity between the teeth) where the gap is wide
    wide, shut = int(np.argmax(gap)), int(np.argmin(gap))
    inner = lambda i: G.fill_polygon(lm[i][list(G.MP_INNER_LIP)], 128).astype(bool)
    assert inner(wide).sum() > 2 * inner(shut).sum()  # (the photo's own mouth is a little open)
    assert (crops[wide][inner(wide)].mean(1) < 100).mean() > 0.2
    assert (controlled / "subject.png").is_file()
    b = RendererDataset(controlled, 128).batch(2)  # the trainer reads it as it is
    assert b["image"].shape == (2, 128, 128, 3) and b["guide"].max() > 0.9


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_eval_swaps_coefficients_and_writes_json_sheet_and_mp4(controlled, tmp_path):
    from realtalk_bridge.cli import main

    base = tmp_path / "base.json"
    assert main(["eval", "renderer", "--data", str(controlled), "--baseline", "--frames", "0.5:1",
                 "--no-reconstruction", "--out", str(base)]) == 0
    r = json.loads(base.read_text())
    assert r["frames"] == 12 and {"drive_open_r", "source_open_r", "m_lmd", "ssim", "psnr"} <= set(r)
    rows = [x for x in r["per_frame"] if "drive_gap" in x]
    assert len(rows) >= 10 and all(x["driver"] != x["frame"] for x in r["per_frame"])
    # the measure itself: MediaPipe's lip gap on the real driving frames follows their jawOpen ...
    assert np.corrcoef([x["drive_jaw"] for x in rows], [x["drive_gap"] for x in rows])[0, 1] > 0.8
    # ... while pasting the reference's mouth (no network) does not follow the driving signal
    assert r["drive_open_r"] is None or r["drive_open_r"] < 0.5
    for key in ("plot", "sheet", "video"):
        assert (tmp_path / r["files"][key].split("/")[-1]).stat().st_size > 1000
    # a (tiny, untrained) exported renderer with the lip guide runs through the same test
    onnx = tiny_renderer_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "tiny.json"
    assert main(["eval", "renderer", "--data", str(controlled), "--renderer", str(onnx), "--frames", "0.75:1",
                 "--out", str(out)]) == 0
    t = json.loads(out.read_text())
    assert t["guide"] is True and t["model_size"] == 64 and t["frames"] == 6
    assert t["reconstruction"]["ssim"] is not None and 0 < t["ssim"] <= 1


def test_shipped_controlled_model_opens_the_mouth_when_told():
    """The shipped demo renderer (models/renderer): driven on its subject's still, jawOpen 0.7 gives a clearly
    wider inner-lip gap (MediaPipe on the output) than jawOpen 0."""
    import cv2

    from realtalk_bridge.assets import model_path
    from realtalk_bridge.face.arkit import ARKIT_INDEX
    from realtalk_bridge.runtime.renderer import RendererRuntime
    from realtalk_bridge.video.driver import FaceDriver
    from realtalk_bridge.video.track import FaceTracker

    rt = RendererRuntime(model_path("renderer", "controlled_lite128.onnx"), threads=1)
    assert rt.has_guide and rt.size == 128
    still = cv2.cvtColor(cv2.imread(str(model_path("renderer", "controlled_subject.png"))), cv2.COLOR_BGR2RGB)
    driver = FaceDriver(rt)
    try:
        src = driver.track(still)
        assert src is not None
        gaps = []
        with FaceTracker(video=False) as tracker:
            for jaw in (0.0, 0.7):
                e = src.expr.copy()
                e[ARKIT_INDEX["jawOpen"]] = jaw
                tr = tracker(driver.render(src, e))
                assert tr is not None
                gaps.append(float(np.linalg.norm(tr.landmarks[13] - tr.landmarks[14])))
    finally:
        driver.close()
    assert gaps[1] > gaps[0] + 8, gaps  # pixels of the 256 px still (measured: 10.9 -> 26.1)
