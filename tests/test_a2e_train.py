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


def _train(data, out, *extra):
    return main(["train", "a2e", "--data", str(data), "--out", str(out), "--config", "tiny", "--batch", "4",
                 "--val-every", "10", "--save-every", "10", "--val-batches", "2", "--threads", "1", "--face", "none",
                 "--warmup", "5", *extra])


def test_train_cli_writes_checkpoints_log_plot_and_resumes_exactly(data, tmp_path):
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(data, a, "--steps", "20") == 0
    for f in ("best.safetensors", "last.safetensors", "train_state.safetensors", "log.jsonl", "loss.png"):
        assert (a / f).is_file(), f
    meta = read_checkpoint_meta(a / "last.safetensors")
    assert meta["step"] == 20 and meta["layout"] == "arkit52" and len(meta["defaults"]["history"]) == 4
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
