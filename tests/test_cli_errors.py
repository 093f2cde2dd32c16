"""What a new user sees when something is wrong: one line naming the problem, never a traceback.

Real runs of the command line (subprocesses where the failure needs a fresh interpreter)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from _sidecar_util import a2e_model  # noqa: F401  (fixture)
import pytest

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "speech" / "hello.wav"


def _cli(args, cwd, blocked=(), env_extra=None, timeout=120):
    """`python -m realtalk_bridge ARGS` with the packages in `blocked` made unimportable."""
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {tuple(blocked)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _Block())
        from realtalk_bridge.cli import main
        sys.exit(main({[str(a) for a in args]!r}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "REALTALK_DEBUG"}
    env.update({"PYTHONPATH": str(ROOT), **(env_extra or {})})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_line(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("args, package, extra", [
    (["train", "a2e", "--data", "DATA", "--out", "RUN", "--config", "tiny"], "torch", "[train]"),
    (["export", "a2e", "x.safetensors", "--out", "x.onnx"], "torch", "[train]"),
    (["prepare", "clip.mp4", "--out", "ds"], "cv2", "[vision]"),
])
def test_missing_optional_package_is_one_line_with_the_extra(tmp_path, args, package, extra):
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    (tmp_path / "x.safetensors").write_bytes(b"\0" * 64)
    r = _cli(args, tmp_path, blocked=("torch", "cv2", "mediapipe"))
    line = _one_line(r)
    assert r.returncode == 2
    assert line.startswith(f"realtalk-bridge {args[0]} {args[1]}: " if args[0] != "prepare"
                           else "realtalk-bridge prepare: ")
    assert f"needs {package}" in line and extra in line


def test_os_error_is_one_line_and_debug_shows_the_traceback(tmp_path, a2e_model):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["bake", HELLO, "--out", blocker / "x.csv", "--model", a2e_model]
    r = _cli(args, tmp_path)
    line = _one_line(r)
    assert r.returncode == 1 and line.startswith("realtalk-bridge bake: ") and "REALTALK_DEBUG" in line
    r = _cli(args, tmp_path, env_extra={"REALTALK_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_missing_audio_says_no_such_file(tmp_path):
    from realtalk_bridge.audio import load_audio

    with pytest.raises(ValueError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(ValueError, match="is a folder"):
        load_audio(tmp_path)


def test_render_coeffs_reads_a_bake_track(tmp_path):
    # `bake --out X.npz` writes weights/names/fps at any rate and name order; render wants ARKit order at 25 fps
    from realtalk_bridge.bake import write_track
    from realtalk_bridge.face.arkit import ARKIT_INDEX, ARKIT_NAMES
    from realtalk_bridge.render import load_coeffs

    names = ARKIT_NAMES[::-1]
    n = 60  # 2 s at 30 fps
    t = np.arange(n) / 30.0
    w = np.zeros((n, 52), np.float32)
    w[:, names.index("jawOpen")] = t / t[-1]  # a ramp 0..1
    write_track(tmp_path / "track.npz", t, w, names, 30.0)
    expr = load_coeffs(tmp_path / "track.npz")
    assert expr.shape == (50, 52)  # 2 s at 25 fps
    jaw = expr[:, ARKIT_INDEX["jawOpen"]]
    np.testing.assert_allclose(jaw, np.minimum(np.arange(50) / 25.0 / t[-1], 1.0), atol=1e-5)
    assert np.count_nonzero(np.delete(expr, ARKIT_INDEX["jawOpen"], axis=1)) == 0

    np.savez(tmp_path / "expr.npz", expr=np.ones((7, 52), np.float32))
    assert load_coeffs(tmp_path / "expr.npz").shape == (7, 52)
    (tmp_path / "notes.npz").write_text("not a zip")
    for bad, words in [("notes.npz", "not an .npz"), ("nope.npz", "no such file")]:
        with pytest.raises(ValueError, match=words):
            load_coeffs(tmp_path / bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="want an 'expr'"):
        load_coeffs(tmp_path / "other.npz")


def test_render_checks_its_inputs_before_working(tmp_path, capsys):
    pytest.importorskip("tqdm")
    from realtalk_bridge.cli import main

    base = ["render", "--audio", str(HELLO), "--renderer", str(tmp_path / "r.onnx"), "--out", str(tmp_path / "o.mp4")]
    assert main([*base, "--image", str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"render: --image {tmp_path / 'nope.png'}: no such file"
    if importlib.util.find_spec("cv2") is not None:
        (tmp_path / "notes.png").write_text("not an image")
        assert main([*base, "--image", str(tmp_path / "notes.png")]) == 2
        assert capsys.readouterr().err.strip() == f"render: cannot read image {tmp_path / 'notes.png'}"
    assert not (tmp_path / "o.mp4").exists()


def test_prepare_writes_nothing_for_bad_input(tmp_path, capsys):
    pytest.importorskip("cv2")
    from realtalk_bridge.cli import main

    assert main(["prepare", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "ds"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "ds").exists()
    (tmp_path / "notes.mp4").write_text("not a video")
    assert main(["prepare", str(tmp_path / "notes.mp4"), "--out", str(tmp_path / "ds"), "--quiet"]) == 1
    assert "cannot open video" in capsys.readouterr().err
    assert not (tmp_path / "ds" / "manifest.json").exists()  # no dataset that looks valid
    assert main(["prepare", str(tmp_path / "notes.mp4"), "--out", str(tmp_path / "notes.mp4")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_push_audio_example_says_why_on_an_empty_wav(tmp_path):
    import soundfile as sf

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "push_audio.py"), str(empty), "tcp://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "holds no audio (0 samples)" in r.stderr
    (tmp_path / "junk.wav").write_bytes(b"RIFF junk")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "push_audio.py"), str(tmp_path / "junk.wav")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot read" in r.stderr
