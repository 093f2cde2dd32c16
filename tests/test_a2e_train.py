"""`train a2e`: the dataset reader (ARCHITECTURE.md format), windows, the CLI loop, resume."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from realtalk_bridge.cli import main  # noqa: E402
from realtalk_bridge.nets.a2e import dims_for, read_checkpoint_meta  # noqa: E402
from realtalk_bridge.train.a2e import read_dataset, sample_batch, write_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("a2e_data"), n_clips=3, seconds=2.0)


def test_reader_and_windows(data):
    manifest, clips = read_dataset(data)
    assert len(clips) == 3 and [c.split for c in clips] == ["train", "train", "val"]
    assert clips[0].expr.shape == (50, 52) and clips[0].audio.shape == (32000,)
    dims = dims_for("tiny")
    a, i, h, y = sample_batch(clips, dims, 64, np.random.default_rng(0))
    assert a.shape == (64, dims.window_samples) and i.shape == (64, 8)
    assert h.shape == (64, dims.n_hist, 52) and y.shape == (64, dims.n_frames, 52)
    # windows are aligned: a window starting at frame 0 of clip 0 holds exactly the clip's first samples
    c = clips[0]
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, i, h, y = sample_batch([c], dims, 1, rng)
        matches = [f0 for f0 in range(-8, 50) if np.array_equal(y[0], c.expr[np.clip(np.arange(f0, f0 + 16), 0, 49)])]
        assert matches, "target frames are not a contiguous slice of the clip"
        # history rows are frames of the same clip
        assert all(any(np.array_equal(row, e) for e in c.expr) for row in h[0])


def test_reader_rejects_bad_data(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="manifest"):
        read_dataset(tmp_path)
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["clips"][0]["id"] = "../escape"
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="bad clip id"):
        read_dataset(bad)
    m["clips"][0]["id"] = "synth000"
    (bad / "manifest.json").write_text(json.dumps(m))
    np.savez(bad / "clips" / "synth000.npz", expr=np.zeros((10, 7), np.float32), identity=np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="expr must be"):
        read_dataset(bad)
    # object arrays would need pickle: refused
    np.savez(bad / "clips" / "synth000.npz", expr=np.array([{"a": 1}], dtype=object), identity=np.zeros(8))
    with pytest.raises(ValueError):
        read_dataset(bad)


def _train(data, out, *extra, face="none"):
    return main(["train", "a2e", "--data", str(data), "--out", str(out), "--config", "tiny", "--batch", "4",
                 "--val-every", "10", "--save-every", "10", "--val-batches", "2", "--threads", "1", "--face", face,
                 "--warmup", "5", "--device", "cpu", "--dims", "d_ff=48", *extra])


def test_train_cli_writes_checkpoints_log_plot_and_resumes_exactly(data, tmp_path):
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(data, a, "--steps", "20") == 0
    for f in ("best.safetensors", "last.safetensors", "train_state.safetensors", "log.jsonl", "loss.png"):
        assert (a / f).is_file(), f
    meta = read_checkpoint_meta(a / "last.safetensors")
    assert meta["step"] == 20 and meta["layout"] == "arkit52" and len(meta["defaults"]["history"]) == 4
    assert meta["dims"]["d_ff"] == 48 and meta["dims"]["d_model"] == 32  # --dims over the tiny config
    vals = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert [v["step"] for v in vals if "val" in v] == [10, 20]
    # interrupted at 10, resumed to 20: the same weights as the uninterrupted run
    assert _train(data, b, "--steps", "20", "--stop-at", "10") == 0
    assert read_checkpoint_meta(b / "last.safetensors")["step"] == 10
    assert _train(data, b, "--steps", "20", "--resume") == 0
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0)
    # and the run exports
    assert main(["export", "a2e", str(a / "best.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 0


def test_train_cli_errors(tmp_path, capsys):
    assert main(["train", "a2e", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "manifest.json" in capsys.readouterr().err


def test_train_with_the_face_model_vertex_loss(data, tmp_path):
    fm_mod = pytest.importorskip("realtalk_bridge.face.face_model")
    try:
        fm_mod.load_face_model("arkit")
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"shipped face model not available: {exc}")
    assert _train(data, tmp_path / "v", "--steps", "10", face="arkit") == 0
    val = [json.loads(line) for line in (tmp_path / "v" / "log.jsonl").read_text().splitlines()][-1]
    assert val["val_vertex"] > 0 and val["val_loss"] == pytest.approx(val["val_mse"] + 0.1 * val["val_vertex"], rel=1e-4)


def test_gain_augmentation_scales_audio_only(data):
    _, clips = read_dataset(data)
    dims = dims_for("tiny")
    ratios = []
    for seed in range(30):
        a0, _, h0, y0 = sample_batch(clips, dims, 1, np.random.default_rng(seed))
        a1, _, h1, y1 = sample_batch(clips, dims, 1, np.random.default_rng(seed), gain_db=6.0)
        # same window and targets; only the audio level changes
        np.testing.assert_array_equal(y0, y1)
        np.testing.assert_array_equal(h0, h1)
        if np.abs(a0).max() > 0:
            r = np.abs(a1).max() / np.abs(a0).max()
            np.testing.assert_allclose(a1, a0 * r, rtol=1e-5, atol=1e-7)
            ratios.append(r)
    ratios = np.array(ratios)
    assert np.all((ratios >= 10 ** (-6 / 20) - 1e-4) & (ratios <= 10 ** (6 / 20) + 1e-4)) and ratios.std() > 0.05


def test_train_from_a_local_hubert_folder(data, tmp_path):
    # "weights from a local path when the user has them": a HuBERT saved with save_pretrained
    transformers = pytest.importorskip("transformers")
    cfg = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                                    do_stable_layer_norm=True, feat_extract_norm="layer")
    torch.manual_seed(0)
    hub = transformers.HubertModel(cfg)
    hub.save_pretrained(tmp_path / "hubert", safe_serialization=True)
    assert _train(data, tmp_path / "h", "--steps", "2", "--val-every", "2", "--hubert", str(tmp_path / "hubert")) == 0
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(tmp_path / "h" / "last.safetensors")
    assert meta["dims"]["frontend"] == "hubert" and meta["dims"]["hubert_config"]["hidden_size"] == 32
    w = load_file(str(tmp_path / "h" / "last.safetensors"))
    key = "frontend.hubert.encoder.layers.0.attention.q_proj.weight"
    # started from the saved weights (2 tiny warm-up steps move them by < 1e-2; a fresh init would differ by ~0.1)
    ref = hub.state_dict()["encoder.layers.0.attention.q_proj.weight"]
    assert (w[key] - ref).abs().max() < 1e-2 and (w[key] - ref).abs().max() > 0
    assert _train(data, tmp_path / "x", "--steps", "2", "--hubert", str(tmp_path / "missing")) == 1
