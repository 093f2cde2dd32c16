"""A2E runtime: offline == streaming, output rates, look-ahead, identity/history, input errors."""
import numpy as np
import pytest

from realtalk_bridge.runtime.a2e import A2ERuntime, A2EStream, Frame, infer_offline
from realtalk_bridge.train.a2e import synth_clip


@pytest.fixture(scope="module")
def rt(tiny_a2e_onnx):
    return A2ERuntime(tiny_a2e_onnx)


@pytest.fixture(scope="module")
def clip(rt):
    return synth_clip(np.random.default_rng(123), 2.3, rt.names, rt.n_id)


def stream_all(rt, audio, chunk, **kw):
    s = A2EStream(rt, **kw)
    frames = []
    for a in range(0, len(audio), chunk):
        frames += s.push(audio[a:a + chunk])
    frames += s.flush()
    return frames


def test_runtime_attributes(rt):
    assert rt.provider == "CPUExecutionProvider"
    assert rt.layout == "arkit52" and len(rt.names) == 52 and rt.names[17] == "jawOpen"
    assert rt.dims["n_frames"] == 16 and rt.dims["n_audio"] == 32
    assert rt.default_identity.shape == (rt.n_id,) and rt.default_history.shape == (rt.n_hist, 52)


@pytest.mark.parametrize("fps,chunk,lookahead", [(25, 160, 80), (30, 480, 80), (50, 320, 60), (60, 640, 0), (30, 213, 40)])
def test_offline_equals_streaming(rt, clip, fps, chunk, lookahead):
    off = infer_offline(rt, clip.audio, fps=fps, lookahead_ms=lookahead, identity=clip.identity)
    frames = stream_all(rt, clip.audio, chunk, fps=fps, lookahead_ms=lookahead, identity=clip.identity)
    assert off.shape == (int(np.ceil(len(clip.audio) * fps / 16000)), 52)
    assert [f.index for f in frames] == list(range(len(off)))
    assert all(isinstance(f, Frame) and f.weights.dtype == np.float32 for f in frames)
    np.testing.assert_allclose([f.t for f in frames], np.arange(len(off)) / fps)
    np.testing.assert_allclose(np.stack([f.weights for f in frames]), off, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fps,lookahead", [(25, 80), (30, 80), (60, 80), (50, 40)])
def test_latency_never_exceeds_the_lookahead(rt, clip, fps, lookahead):
    # a frame at time t is emitted once the audio reaches t + look-ahead (at most; plus one 10 ms chunk)
    s = A2EStream(rt, fps=fps, lookahead_ms=lookahead, identity=clip.identity)
    n_in, lat = 0, []
    for a in range(0, len(clip.audio), 160):
        x = clip.audio[a:a + 160]
        n_in += len(x)
        lat += [n_in / 16000 - f.t for f in s.push(x)]
    assert max(lat) <= lookahead / 1000 + 0.010 + 1e-9
    assert min(lat) >= 0  # never a frame before its own audio... at 25 fps exactly the look-ahead
    if fps == 25:
        assert min(lat) >= lookahead / 1000 - 1e-9


def test_output_rates_share_the_25fps_grid(rt, clip):
    y25 = infer_offline(rt, clip.audio, fps=25, identity=clip.identity)
    y50 = infer_offline(rt, clip.audio, fps=50, identity=clip.identity)
    y30 = infer_offline(rt, clip.audio, fps=30, identity=clip.identity)
    np.testing.assert_array_equal(y50[0::2], y25[: len(y50[0::2])])
    np.testing.assert_array_equal(y30[0::6], y25[0::5][: len(y30[0::6])])  # t = 0, 0.2, 0.4 ... s
    # in-between frames are in-between values (linear interpolation inside one window)
    j = rt.names.index("jawOpen")
    lo = np.minimum(y25[:-1, j], y25[1:, j]) - 0.1
    hi = np.maximum(y25[:-1, j], y25[1:, j]) + 0.1
    mid = y50[1:-1:2, j][: len(lo)]
    assert np.mean((mid >= lo[: len(mid)]) & (mid <= hi[: len(mid)])) > 0.9


def test_model_follows_audio(rt, clip):
    # the tiny model is trained: jawOpen tracks loudness of the synthetic syllables
    y = infer_offline(rt, clip.audio, fps=25, identity=clip.identity)[: len(clip.expr)]
    for name in ("jawOpen", "mouthFunnel", "mouthSmileLeft"):  # loudness and pitch both matter
        j = rt.names.index(name)
        assert np.corrcoef(y[:, j], clip.expr[:, j])[0, 1] > 0.6, name
    j = rt.names.index("jawOpen")
    silence = infer_offline(rt, np.zeros(16000, np.float32), fps=25)
    assert silence[:, j].mean() < y[:, j].mean()


def test_identity_and_history_change_output(rt, clip):
    base = infer_offline(rt, clip.audio, fps=25, identity=clip.identity)
    other = infer_offline(rt, clip.audio, fps=25, identity=-clip.identity)
    assert np.abs(base - other).max() > 1e-3
    # any history length is resampled to N frames
    hist = np.tile(clip.expr[:40], (1, 1))
    h = infer_offline(rt, clip.audio, fps=25, identity=clip.identity, history=hist)
    assert h.shape == base.shape
    s = A2EStream(rt, fps=25)
    s.set_identity(clip.identity, hist)
    frames = s.push(clip.audio) + s.flush()
    np.testing.assert_allclose(np.stack([f.weights for f in frames]), h, atol=1e-5)


def test_reset_restarts_the_stream(rt, clip):
    s = A2EStream(rt, fps=30)
    first = s.push(clip.audio[:8000]) + s.flush()
    with pytest.raises(RuntimeError):
        s.push(clip.audio[:160])
    s.reset()
    again = s.push(clip.audio[:8000]) + s.flush()
    assert [f.index for f in again] == [f.index for f in first]
    np.testing.assert_array_equal(np.stack([f.weights for f in again]), np.stack([f.weights for f in first]))


def test_empty_and_short_audio(rt):
    assert infer_offline(rt, np.zeros(0, np.float32)).shape == (0, 52)
    y = infer_offline(rt, np.zeros(100, np.float32), fps=30)
    assert y.shape == (1, 52)
    s = A2EStream(rt)
    assert s.push(np.zeros(0, np.float32)) == []
    assert len(s.flush()) == 0


def test_int16_audio_is_accepted(rt, clip):
    pcm = (clip.audio * 32767).astype(np.int16)
    y = infer_offline(rt, pcm, fps=25)
    assert y.shape[0] == int(np.ceil(len(pcm) * 25 / 16000))


@pytest.mark.parametrize("kw,msg", [
    (dict(fps=24), "fps"), (dict(lookahead_ms=-1), "lookahead"), (dict(lookahead_ms=1000), "lookahead"),
    (dict(identity=np.zeros(3)), "identity"), (dict(history=np.zeros((4, 7))), "history"),
    (dict(identity=np.full(8, np.nan)), "NaN"),
])
def test_bad_arguments_raise_clear_errors(rt, kw, msg):
    with pytest.raises(ValueError, match=msg):
        infer_offline(rt, np.zeros(1600, np.float32), **kw)
    with pytest.raises(ValueError, match=msg):
        A2EStream(rt, **kw)


def test_bad_audio(rt):
    with pytest.raises(ValueError, match="NaN"):
        A2EStream(rt).push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError):
        infer_offline(rt, np.zeros((2, 2, 2), np.float32))


def test_missing_and_foreign_models(tmp_path, monkeypatch):
    import realtalk_bridge.runtime.a2e as mod

    monkeypatch.setattr(mod, "DEFAULT_MODEL", tmp_path / "models" / "a2e" / "default.onnx")
    with pytest.raises(FileNotFoundError, match="train a2e"):
        A2ERuntime()
    with pytest.raises(FileNotFoundError):
        A2ERuntime(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        A2ERuntime(junk)


def test_onnx_without_a2e_metadata_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    p = tmp_path / "other.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    with pytest.raises(ValueError, match="not an A2E model"):
        A2ERuntime(p)


def test_runtime_needs_no_torch(tiny_a2e_onnx):
    # the runtime contract: onnxruntime + numpy only (serve and bake must work without the train extra)
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from realtalk_bridge.runtime.a2e import A2ERuntime, A2EStream, infer_offline\n"
        f"rt = A2ERuntime({str(tiny_a2e_onnx)!r})\n"
        "y = infer_offline(rt, np.zeros(8000, np.float32))\n"
        "s = A2EStream(rt); f = s.push(np.zeros(8000, np.float32)) + s.flush()\n"
        "assert len(f) == len(y) == 15, (len(f), len(y))\n"
        "bad = [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_arkit_weights_stay_in_0_1_offline_and_streaming(tiny_a2e_onnx):
    """Rigs get blendshape weights in 0..1 even where the linear decoder overshoots (loud noise here)."""
    rt = A2ERuntime(tiny_a2e_onnx)
    assert rt.layout == "arkit52" and rt.value_range == (0.0, 1.0)
    x = np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32)
    off = infer_offline(rt, x, fps=30)
    rt.value_range = None
    unclamped = infer_offline(rt, x, fps=30)
    rt.value_range = (0.0, 1.0)
    st = A2EStream(rt, fps=30)
    streamed = np.stack([f.weights for c in range(0, len(x), 320) for f in st.push(x[c:c + 320])]
                        + [f.weights for f in st.flush()])
    np.testing.assert_array_equal(off, np.clip(unclamped, 0.0, 1.0))
    np.testing.assert_array_equal(off, streamed)
