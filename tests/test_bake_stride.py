"""infer_offline(stride=S) / bake --stride: stride 1 is today's stream-equal output bit for bit; S > 1 reads
S frames of one window, every frame with at least the look-ahead, S times fewer model calls."""
import json
import math

import numpy as np
import pytest

from realtalk_bridge.cli import main
from realtalk_bridge.runtime.a2e import A2ERuntime, infer_offline, max_stride
from realtalk_bridge.train.a2e import synth_clip


class Counting:
    """The real runtime, counting the windows it is asked to run."""

    def __init__(self, rt):
        self.rt, self.windows = rt, 0

    def __getattr__(self, name):
        return getattr(self.rt, name)

    def run(self, audio, identity, history):
        self.windows += len(audio)
        return self.rt.run(audio, identity, history)


@pytest.fixture(scope="module")
def rt(tiny_a2e_onnx):
    return A2ERuntime(tiny_a2e_onnx)


@pytest.fixture(scope="module")
def clip(rt):
    return synth_clip(np.random.default_rng(7), 2.3, rt.names, rt.n_id)


def reference(rt, audio, fps, lookahead_ms, stride):
    """The documented grid, written out plainly: every model frame's window (batches of 32 from window 0,
    as the stream-equal bake runs them), output frame i read from window p at its time minus (p - k) frames."""
    la = round(lookahead_ms * 16)
    fs, W, T = rt.frame_samples, rt.window_samples, rt.n_frames
    n_out = math.ceil(len(audio) * fps / 16000)
    n_model = (n_out - 1) * 25 // fps + 1
    buf = np.concatenate([np.zeros(W, np.float32), audio, np.zeros(max(0, (n_model - 1) * fs + la - len(audio)), np.float32)])
    ys = []
    for s in range(0, n_model, 32):
        wins = np.stack([buf[k * fs + la:k * fs + la + W] for k in range(s, min(s + 32, n_model))])
        b = len(wins)
        ys.append(rt.run(wins, np.tile(rt.default_identity, (b, 1)), np.tile(rt.default_history, (b, 1, 1))))
    y = np.concatenate(ys)
    out = []
    for i in range(n_out):
        k, rem = i * 25 // fps, i * 25 % fps
        p = min(k // stride * stride + stride - 1, n_model - 1)
        pos = T - la / fs + rem / fps - (p - k)
        j0 = min(int(math.floor(pos)), T - 1)
        f = pos - j0 if j0 < T - 1 else 0.0
        out.append(np.clip((1 - np.float32(f)) * y[p, j0] + np.float32(f) * y[p, min(j0 + 1, T - 1)], 0, 1))
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("fps,lookahead", [(25, 80), (30, 80), (60, 40)])
def test_stride_1_is_todays_output_bit_for_bit(rt, clip, fps, lookahead):
    got = infer_offline(rt, clip.audio, fps=fps, lookahead_ms=lookahead, stride=1)
    np.testing.assert_array_equal(got, infer_offline(rt, clip.audio, fps=fps, lookahead_ms=lookahead))
    np.testing.assert_array_equal(got, reference(rt, clip.audio, fps, lookahead, 1))


@pytest.mark.parametrize("stride,fps", [(4, 25), (8, 30), (12, 60), (15, 25)])
def test_stride_reads_consecutive_frames_of_one_window(rt, clip, stride, fps):
    counting = Counting(rt)
    got = infer_offline(counting, clip.audio, fps=fps, stride=stride)
    n_model = (len(got) - 1) * 25 // fps + 1
    assert got.shape == (math.ceil(len(clip.audio) * fps / 16000), rt.n_expr)
    assert counting.windows == math.ceil(n_model / stride)  # S times fewer model calls
    # other batch compositions than the reference's: equal to float rounding
    np.testing.assert_allclose(got, reference(rt, clip.audio, fps, 80, stride), atol=1e-5, rtol=0)
    if fps == 25:  # the last frame of each full block is read where the stream reads it
        one = infer_offline(rt, clip.audio, fps=25)
        ends = np.arange(stride - 1, n_model, stride)
        np.testing.assert_allclose(got[ends], one[ends], atol=1e-5, rtol=0)
        assert np.max(np.abs(got - one)) > 1e-4  # and the others really come from earlier in a later window


def test_stride_limits(rt, clip):
    assert max_stride(rt, 80) == 15 and max_stride(rt, 0) == 17 and max_stride(rt, 600) == 2
    for bad in (0, -1, 16, 2.5, True):
        with pytest.raises(ValueError, match="stride must be an integer in \\[1, 15\\]"):
            infer_offline(rt, clip.audio, fps=30, stride=bad)
    assert infer_offline(rt, clip.audio[:100], fps=30, stride=8).shape == (1, rt.n_expr)  # shorter than a block


def test_bake_stride_command_single_and_batch(tiny_a2e_onnx, rt, tmp_path, capsys):
    import soundfile as sf

    from realtalk_bridge.audio import load_audio

    x = synth_clip(np.random.default_rng(3), 1.7, rt.names, rt.n_id).audio
    lib = tmp_path / "lib"
    lib.mkdir()
    sf.write(lib / "a.wav", x, 16000, subtype="FLOAT")
    x = load_audio(lib / "a.wav")
    single = tmp_path / "a.json"
    assert main(["bake", str(lib / "a.wav"), "--out", str(single), "--stride", "8", "--model", str(tiny_a2e_onnx)]) == 0
    doc = json.loads(single.read_text())
    assert doc["stride"] == 8
    np.testing.assert_allclose(doc["weights"], infer_offline(rt, x, fps=30, stride=8), atol=1e-6)
    out = tmp_path / "out"
    args = ["bake", str(lib), "--out", str(out), "--format", "json", "--stride", "8", "--jobs", "1",
            "--model", str(tiny_a2e_onnx)]
    assert main(args) == 0
    assert (out / "a.json").read_bytes() == single.read_bytes()
    rec = json.loads((out / "bake-manifest.jsonl").read_text().splitlines()[-1])
    assert rec["status"] == "done" and rec["settings"]["stride"] == 8
    capsys.readouterr()
    assert main(args) == 0 and "0 baked" in capsys.readouterr().out  # resumable: same stride is done
    assert main(args[:-4] + ["--stride", "4", "--jobs", "1", "--model", str(tiny_a2e_onnx)]) == 0
    assert "1 baked" in capsys.readouterr().out  # another stride is another result
    # a stride-1 track has no "stride" field: byte for byte what it was before strides existed
    plain = tmp_path / "b.json"
    assert main(["bake", str(lib / "a.wav"), "--out", str(plain), "--model", str(tiny_a2e_onnx)]) == 0
    assert "stride" not in json.loads(plain.read_text())
    for bad in ("0", "99"):
        assert main(["bake", str(lib), "--out", str(tmp_path / "o2"), "--stride", bad, "--model", str(tiny_a2e_onnx)]) == 2
        assert "stride" in capsys.readouterr().err


def test_manifest_lines_from_before_strides_count_as_stride_1(tmp_path):
    from dataclasses import asdict

    from realtalk_bridge.bake_batch import Settings, is_done

    (tmp_path / "a.csv").write_text("time\n")
    one = Settings(fps=30.0, lookahead_ms=80.0, format="csv", max_seconds=1800.0, allow_silent=False)
    old = {k: v for k, v in asdict(one).items() if k != "stride"}  # what a manifest line held before
    rec = {"status": "done", "size": 10, "mtime": 1.0, "model": "m", "settings": old, "output": "a.csv"}
    assert is_done(rec, 10, 1.0, "m", one, tmp_path)
    assert not is_done(rec, 10, 1.0, "m", Settings(**{**asdict(one), "stride": 8}), tmp_path)
