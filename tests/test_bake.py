"""`realtalk-bridge bake`: real model, real speech file, .csv / .json / .npz outputs."""
import json

import numpy as np
import pytest

from _sidecar_util import HELLO_WAV, a2e_model, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge.bake import bake_array, resample_track
from realtalk_bridge.cli import main
from realtalk_bridge.runtime.a2e import infer_offline


def test_resample_track_is_linear_in_time():
    w = np.stack([np.arange(7, dtype=np.float32), np.zeros(7, np.float32)], axis=1)  # 60 fps ramp
    out = resample_track(w, 60, 24, 3)
    np.testing.assert_allclose(out[:, 0], [0, 2.5, 5.0])
    assert resample_track(w, 60, 24, 0).shape == (0, 2)


def test_bake_command_writes_csv_json_npz(a2e_model, runtime, speech, tmp_path, capsys):
    n = int(np.ceil(len(speech) * 30 / 16000))
    expected = infer_offline(runtime, speech, fps=30, lookahead_ms=80)
    for suffix in (".csv", ".json", ".npz"):
        out = tmp_path / f"track{suffix}"
        assert main(["bake", str(HELLO_WAV), "--out", str(out), "--fps", "30", "--model", str(a2e_model)]) == 0
        assert "x real time" in capsys.readouterr().out
        if suffix == ".csv":
            rows = out.read_text().splitlines()
            assert rows[0] == "time," + ",".join(runtime.names)
            assert len(rows) == n + 1
            table = np.array([[float(v) for v in r.split(",")] for r in rows[1:]])
            np.testing.assert_allclose(table[:, 0], np.arange(n) / 30, atol=1e-6)
            np.testing.assert_allclose(table[:, 1:], expected, atol=1e-5)
        elif suffix == ".json":
            doc = json.loads(out.read_text())
            assert doc["fps"] == 30 and doc["names"] == list(runtime.names) and doc["n_frames"] == n
            np.testing.assert_allclose(np.array(doc["weights"]), expected, atol=1e-5)
        else:
            with np.load(out, allow_pickle=False) as z:
                assert list(z["names"]) == list(runtime.names) and float(z["fps"]) == 30
                np.testing.assert_array_equal(z["weights"], expected)


def test_bake_any_fps_and_errors(a2e_model, runtime, speech, tmp_path, capsys):
    t, w = bake_array(runtime, speech[:16000], fps=24)
    assert w.shape == (24, len(runtime.names)) and t[1] == pytest.approx(1 / 24)
    with pytest.raises(ValueError):
        bake_array(runtime, speech[:1600], fps=0)
    assert main(["bake", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "x.csv"),
                 "--model", str(a2e_model)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["bake", str(HELLO_WAV), "--out", str(tmp_path / "x.txt"), "--model", str(a2e_model)]) == 2


def test_single_file_bake_refuses_empty_warns_truncated(a2e_model, speech, tmp_path, capsys):
    import soundfile as sf

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    out = tmp_path / "x.csv"
    assert main(["bake", str(empty), "--out", str(out), "--model", str(a2e_model)]) == 1
    assert "no audio (0 samples)" in capsys.readouterr().err and not out.exists()
    good = tmp_path / "good.wav"
    sf.write(good, speech[:32000], 16000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:32000])
    assert main(["bake", str(tmp_path / "cut.wav"), "--out", str(out), "--model", str(a2e_model)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "truncated" in err and "2.00 s" in err
    assert len(out.read_text().splitlines()) == 1 + 30  # the second that is there, at 30 fps


def test_single_file_bake_refuses_a_missing_folder(a2e_model, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "x.csv"
    assert main(["bake", str(HELLO_WAV), "--out", str(out), "--model", str(a2e_model)]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_write_track_is_atomic_when_the_disk_fills(monkeypatch, tmp_path):
    """A full disk at write time leaves the previous track whole (and no temp file)."""
    import errno
    import os

    from realtalk_bridge import bake

    names = ["jawOpen", "mouthClose"]
    path = tmp_path / "track.csv"
    bake.write_track(path, np.arange(3) / 30, np.full((3, 2), 0.25, np.float32), names, 30)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        bake.write_track(path, np.arange(900) / 30, np.full((900, 2), 0.5, np.float32), names, 30)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["track.csv"]


def test_offline_inference_never_returns_nan(runtime):
    """Finite but huge float samples can overflow inside the model: then an error, never an all-NaN track
    (SPEC section 1). (An int8 model saturates instead: finite coefficients in range.)"""
    try:
        t, w = bake_array(runtime, np.full(16000, 3e38, np.float32))
    except ValueError as exc:
        assert "NaN or inf" in str(exc)
    else:
        assert np.all(np.isfinite(w)) and w.min() >= 0 and w.max() <= 1
    t, w = bake_array(runtime, np.full(16000, 0.5, np.float32))
    assert np.all(np.isfinite(w)) and len(w) == 30
