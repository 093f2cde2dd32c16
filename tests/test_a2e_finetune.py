"""`train a2e --init`: fine-tuning a trained A2E on a user's own (prepare-style) data, then export + load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="pip install .[train]")

from realtalk_bridge.cli import main  # noqa: E402
from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES  # noqa: E402
from realtalk_bridge.train.a2e import FRAME_SAMPLES, synth_clip, split_tail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def webcam_like(tmp_path_factory):
    """What `prepare` writes for one video: a single 'train' clip, 52 MediaPipe channels (eyes blinking too),
    the face model's 14 identity coefficients."""
    from realtalk_bridge.audio import save_audio

    folder = tmp_path_factory.mktemp("me")
    (folder / "clips").mkdir()
    c = synth_clip(np.random.default_rng(7), 12.0, list(ARKIT_NAMES), 14, cid="me")
    c.expr[::20, ARKIT_INDEX["eyeBlinkLeft"]] = 1.0
    save_audio(folder / "clips" / "me.wav", c.audio)
    np.savez(folder / "clips" / "me.npz", expr=c.expr, identity=c.identity)
    manifest = {"version": 1, "space": "arkit52", "names": list(ARKIT_NAMES), "fps": 25, "sample_rate": 16000,
                "clips": [{"id": "me", "split": "train", "speaker": "me", "source": "webcam", "license": "own"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_split_tail_cuts_on_frames():
    c = synth_clip(np.random.default_rng(0), 4.0, ["jawOpen"], 2, cid="x")
    tr, va = split_tail([c], 0.25)
    assert len(tr) == len(va) == 1 and va[0].split == "val" and va[0].id == "x_tail"
    assert tr[0].expr.shape[0] + va[0].expr.shape[0] == c.expr.shape[0] == 100
    assert len(tr[0].audio) == tr[0].expr.shape[0] * FRAME_SAMPLES
    np.testing.assert_array_equal(va[0].audio, c.audio[75 * FRAME_SAMPLES:])
    with pytest.raises(ValueError):
        split_tail([c], 0.0)


def test_finetune_from_a_checkpoint_runs_exports_and_loads(tiny_a2e_onnx, webcam_like, tmp_path):
    from safetensors.torch import load_file

    from realtalk_bridge.nets.a2e import read_checkpoint_meta
    from realtalk_bridge.runtime.a2e import A2ERuntime, infer_offline

    init = tiny_a2e_onnx.parent / "tiny.safetensors"
    out = tmp_path / "ft"
    rc = main(["train", "a2e", "--init", str(init), "--data", str(webcam_like), "--out", str(out), "--steps", "30",
               "--val-every", "10", "--val-batches", "2", "--device", "cpu", "--freeze-frontend"])
    assert rc == 0
    meta = read_checkpoint_meta(out / "best.safetensors")
    assert meta["dims"] == read_checkpoint_meta(init)["dims"]  # the checkpoint's shape, not a fresh config
    assert meta["init"] == str(init) and len(meta["defaults"]["identity"]) == meta["dims"]["n_id"]
    vals = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if '"val"' in ln]
    assert [v["step"] for v in vals] == [10, 20, 30]  # validated on the held-out tail
    a, b = load_file(str(init)), load_file(str(out / "last.safetensors"))
    front = [k for k in a if k.startswith("frontend.") and a[k].is_floating_point()]
    rest = [k for k in a if not k.startswith("frontend.") and a[k].is_floating_point()]
    assert front and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in front)  # frozen
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in rest)  # the rest learned
    onnx = tmp_path / "me.onnx"
    assert main(["export", "a2e", str(out / "best.safetensors"), "--out", str(onnx)]) == 0
    rt = A2ERuntime(onnx)
    y = infer_offline(rt, np.zeros(16000, np.float32), fps=25, lookahead_ms=80)
    assert y.shape == (25, 52) and np.all(np.isfinite(y))


def test_finetune_from_the_shipped_model(webcam_like, tmp_path):
    if not (ROOT / "models" / "a2e" / "default.safetensors").exists():
        pytest.skip("no shipped model")
    out = tmp_path / "ft"
    rc = main(["train", "a2e", "--init", "default", "--data", str(webcam_like), "--out", str(out), "--steps", "4",
               "--val-every", "2", "--val-batches", "1", "--batch", "4", "--device", "cpu"])
    assert rc == 0 and (out / "best.safetensors").exists()


def test_finetune_input_errors(webcam_like, tmp_path, capsys):
    rc = main(["train", "a2e", "--init", str(tmp_path / "none.safetensors"), "--data", str(webcam_like),
               "--out", str(tmp_path / "x")])
    assert rc == 1 and "none.safetensors" in capsys.readouterr().err
    rc = main(["train", "a2e", "--init", "default", "--resume", "--data", str(webcam_like), "--out", str(tmp_path / "y")])
    assert rc == 2
