"""Batch `bake FOLDER --out DIR`: real model, real audio files, real worker processes, real SIGINT.

Bad inputs are made here as files (truncated, not audio, silent, empty, a header saying 2 h)."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import soundfile as sf

from _sidecar_util import a2e_model, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge import bake
from realtalk_bridge.bake_batch import MANIFEST_NAME, find_inputs, load_manifest
from realtalk_bridge.cli import main
from realtalk_bridge.runtime.a2e import infer_offline

ROOT = Path(__file__).resolve().parents[1]


def _manifest(out: Path) -> dict[str, dict]:
    return load_manifest(out / MANIFEST_NAME)


def _csv_weights(path: Path) -> np.ndarray:
    rows = path.read_text().splitlines()[1:]
    return np.array([[float(v) for v in r.split(",")[1:]] for r in rows], np.float32)


def _library(root: Path, speech: np.ndarray) -> dict[str, np.ndarray]:
    """Four short lines in a nested tree, in four formats -> {relative path: 16 kHz audio}."""
    lines = {"intro.wav": speech[:40000], "act1/npc_a.flac": speech[8000:30000],
             "act1/deep/npc_b.ogg": speech[16000:50000], "act2/npc_c.mp3": speech[4000:36000]}
    for rel, x in lines.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, x, 16000)
    (root / "notes.txt").write_text("not audio, not listed")
    return {rel: bake.read_checked(root / rel).audio for rel in lines}  # what decoding gives (ogg is lossy)


def _flac_claiming(path: Path, seconds: float, rate: int = 16000) -> None:
    """A tiny FLAC whose STREAMINFO says `seconds` long (the 36-bit total-samples field, bytes 18..25)."""
    sf.write(path, np.zeros(rate // 10, np.float32), rate)
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC"
    (word,) = struct.unpack(">Q", bytes(b[18:26]))
    word = (word & ~((1 << 36) - 1)) | int(seconds * rate)
    b[18:26] = struct.pack(">Q", word)
    path.write_bytes(bytes(b))


def test_batch_mirrors_the_tree_and_equals_single_file_bakes(a2e_model, runtime, speech, tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "out"
    audio = _library(lib, speech)
    root, files = find_inputs(str(lib))
    assert root == lib and [f.relative_to(lib).as_posix() for f in files] == sorted(audio)
    assert main(["bake", str(lib), "--out", str(out), "--jobs", "2", "--model", str(a2e_model)]) == 0
    assert "4 baked" in capsys.readouterr().out
    man = _manifest(out)
    assert sorted(man) == sorted(audio)
    for rel, x in audio.items():
        rec = man[rel]
        assert rec["status"] == "done" and rec["error"] is None and rec["output"] == rel.rsplit(".", 1)[0] + ".csv"
        assert rec["size"] == (lib / rel).stat().st_size and len(rec["model"]) == 64
        got = _csv_weights(out / rec["output"])
        assert np.max(np.abs(got - infer_offline(runtime, x, fps=30, lookahead_ms=80))) < 1e-5
    # byte for byte what the single-file command writes
    single = tmp_path / "single.csv"
    assert main(["bake", str(lib / "intro.wav"), "--out", str(single), "--model", str(a2e_model)]) == 0
    assert single.read_bytes() == (out / "intro.csv").read_bytes()


@pytest.mark.parametrize("fmt", ["json", "npz", "msgpack"])
def test_batch_formats_and_glob(a2e_model, runtime, speech, tmp_path, fmt):
    lib, out = tmp_path / "lib", tmp_path / "out"
    audio = _library(lib, speech)
    # a glob: only the act1 tree, mirrored below the pattern's fixed prefix
    assert main(["bake", str(lib / "act1" / "**" / "*.*"), "--out", str(out), "--jobs", "1", "--format", fmt,
                 "--model", str(a2e_model)]) == 0
    assert sorted(_manifest(out)) == ["deep/npc_b.ogg", "npc_a.flac"]
    path = out / f"npc_a.{fmt}"
    expected = infer_offline(runtime, audio["act1/npc_a.flac"], fps=30, lookahead_ms=80)
    if fmt == "json":
        got = np.array(json.loads(path.read_text())["weights"], np.float32)
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            got = z["weights"]
    else:  # the protocol's bake reply map: decoded here by the Blender add-on's own parser
        sys.path.insert(0, str(ROOT / "plugins" / "blender"))
        try:
            from realtalk_blender.core.protocol import parse_bake
        finally:
            sys.path.pop(0)
        res = parse_bake(msgpack.unpackb(path.read_bytes(), raw=False))
        assert list(res.names) == list(runtime.names) and res.fps == 30 and res.n_frames == len(expected)
        got = np.array(res.w, np.float32).reshape(len(expected), -1)
    assert np.max(np.abs(got - expected)) < 1e-5


def _bad_library(lib: Path, speech: np.ndarray) -> None:
    lib.mkdir()
    sf.write(lib / "good.wav", speech[:24000], 16000, subtype="PCM_16")
    whole = (lib / "good.wav").read_bytes()
    (lib / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (lib / "not_audio.wav").write_bytes(os.urandom(4000))
    sf.write(lib / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(lib / "empty.wav", np.zeros(0, np.float32), 16000)
    _flac_claiming(lib / "two_hours.flac", 2 * 3600)
    sf.write(lib / "huge.wav", np.full(16000, 3e38, np.float32), 16000, subtype="FLOAT")


def test_bad_files_are_reported_and_never_stop_the_job(a2e_model, speech, tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "out"
    _bad_library(lib, speech)
    t0 = time.perf_counter()
    rc = main(["bake", str(lib), "--out", str(out), "--jobs", "1", "--model", str(a2e_model)])
    assert time.perf_counter() - t0 < 30  # the 2 h file is refused from its header, not decoded
    cap = capsys.readouterr()
    assert rc == 1 and "2 baked" in cap.out and "5 failed" in cap.out and "1 with warnings" in cap.out
    man = _manifest(out)
    assert man["good.wav"]["status"] == "done" and man["good.wav"]["warning"] is None
    assert man["truncated.wav"]["status"] == "done" and "truncated" in man["truncated.wav"]["warning"]
    expected_errors = {"not_audio.wav": "not a readable audio file", "silent.wav": "silent",
                       "empty.wav": "no audio (0 samples)", "two_hours.flac": "the header says 7200 s",
                       "huge.wav": "far outside [-1, 1]"}
    for rel, text in expected_errors.items():
        rec = man[rel]
        assert rec["status"] == "failed" and rec["output"] is None and text in rec["error"], rec
        assert rel in cap.err
    assert not (out / "silent.csv").exists() and not list(out.glob(".*.tmp"))


def test_second_run_skips_done_and_retries_failed(a2e_model, speech, tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    sf.write(lib / "a.wav", speech[:20000], 16000)
    sf.write(lib / "b.wav", np.zeros(8000, np.float32), 16000)  # silent: fails
    args = ["bake", str(lib), "--out", str(out), "--jobs", "1", "--model", str(a2e_model)]
    assert main(args) == 1
    first = (out / "a.csv").stat().st_mtime_ns
    capsys.readouterr()
    sf.write(lib / "b.wav", speech[20000:36000], 16000)  # fixed by the user
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "1 baked" in summary and "1 already done" in summary
    assert (out / "a.csv").stat().st_mtime_ns == first  # not rewritten
    assert _manifest(out)["b.wav"]["status"] == "done"
    assert main(args) == 0
    assert "0 baked" in capsys.readouterr().out
    # other settings make other tracks: everything is baked again
    assert main(args + ["--fps", "25"]) == 0
    assert "2 baked" in capsys.readouterr().out


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _interrupt_when(proc, out: Path, n_done: int, sig) -> list[int]:
    """Send `sig` once the manifest lists n_done files; return the worker pids seen just before."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_manifest(out)) < n_done:
        time.sleep(0.05)
    assert len(_manifest(out)) >= n_done, proc.communicate(timeout=60)
    workers = _children(proc.pid)
    proc.send_signal(sig)
    return workers


def test_ctrl_c_and_sigterm_keep_what_is_written_and_a_rerun_finishes(a2e_model, runtime, speech, tmp_path):
    """Three real runs of the command (~15 s: each starts Python and two spawned workers): SIGINT, SIGTERM, finish."""
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    clip = speech[:48000]  # 3 s per line
    for i in range(16):
        sf.write(lib / f"line_{i:02d}.wav", clip, 16000)
    cmd = [sys.executable, "-m", "realtalk_bridge", "bake", str(lib), "--out", str(out), "--jobs", "2",
           "--model", str(a2e_model)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    expected = infer_offline(runtime, bake.read_checked(lib / "line_00.wav").audio, fps=30, lookahead_ms=80)
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            before = len(_manifest(out))
            workers = _interrupt_when(proc, out, before + 2, sig)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        assert workers and not [w for w in workers if Path(f"/proc/{w}").exists()
                                and "multiprocessing" in Path(f"/proc/{w}/cmdline").read_text(errors="replace")]
        man = _manifest(out)
        assert before + 2 <= len(man) < 16  # stopped part-way
        for rec in man.values():  # every track the manifest lists is whole
            assert rec["status"] == "done"
            assert np.max(np.abs(_csv_weights(out / rec["output"]) - expected)) < 1e-5
        assert not list(out.glob(".*.tmp"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{16 - len(man)} baked" in r.stdout and f"{len(man)} already done" in r.stdout
    assert all(rec["status"] == "done" for rec in _manifest(out).values()) and len(_manifest(out)) == 16


def test_ray_local_gives_the_same_outputs_and_manifest(a2e_model, speech, tmp_path, capsys):
    """`--ray local` starts a local Ray instance (ray.init()); ~15 s of Ray start-up on 2 cores."""
    pytest.importorskip("ray", reason='the ray extra is not installed (pip install "realtalk-bridge[ray]")')
    lib = tmp_path / "lib"
    _bad_library(lib, speech)
    base = ["bake", str(lib), "--jobs", "1", "--model", str(a2e_model)]
    assert main(base + ["--out", str(tmp_path / "local")]) == 1
    assert main(base + ["--out", str(tmp_path / "ray"), "--ray", "local"]) == 1
    local, ray_ = _manifest(tmp_path / "local"), _manifest(tmp_path / "ray")
    assert sorted(local) == sorted(ray_)
    for key, rec in local.items():
        other = ray_[key]
        for field in ("status", "output", "warning", "frames", "model", "settings", "size"):
            assert rec[field] == other[field], (key, field)
        assert (rec["error"] is None) == (other["error"] is None)
        if rec["output"]:
            assert (tmp_path / "local" / rec["output"]).read_bytes() == (tmp_path / "ray" / rec["output"]).read_bytes()


def test_two_inputs_with_one_output_name_never_overwrite(a2e_model, speech, tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    sf.write(lib / "line.flac", speech[:16000], 16000)
    sf.write(lib / "line.wav", speech[16000:40000], 16000)
    assert main(["bake", str(lib), "--out", str(out), "--jobs", "1", "--model", str(a2e_model)]) == 1
    man = _manifest(out)
    assert man["line.flac"]["status"] == "done" and man["line.wav"]["status"] == "failed"
    assert "same output as line.flac" in man["line.wav"]["error"]
    assert len((out / "line.csv").read_text().splitlines()) == 1 + 30  # the 1 s flac, not the 1.5 s wav


def test_batch_argument_errors(a2e_model, speech, tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    assert main(["bake", str(lib), "--out", str(tmp_path / "o"), "--model", str(a2e_model)]) == 1
    assert "no audio files" in capsys.readouterr().err
    sf.write(lib / "a.wav", speech[:8000], 16000)
    assert main(["bake", str(lib), "--out", str(tmp_path / "o.csv"), "--model", str(a2e_model)]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["bake", str(lib), "--out", str(tmp_path / "no" / "such" / "o"), "--model", str(a2e_model)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bake", str(lib), "--out", str(tmp_path / "o"), "--jobs", "0", "--model", str(a2e_model)]) == 2


def test_a_torn_manifest_line_is_ignored_and_does_not_swallow_the_next(a2e_model, speech, tmp_path, capsys):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    sf.write(lib / "a.wav", speech[:16000], 16000)
    sf.write(lib / "b.wav", speech[16000:32000], 16000)
    args = ["bake", str(lib), "--out", str(out), "--jobs", "1", "--model", str(a2e_model)]
    assert main(args) == 0
    path = out / MANIFEST_NAME
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # power cut in the middle of line 2
    capsys.readouterr()
    assert main(args) == 0
    assert "1 baked" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 baked" in capsys.readouterr().out and sorted(_manifest(out)) == ["a.wav", "b.wav"]


def test_bench_bake_writes_the_keys_and_a_plot(a2e_model, tmp_path):
    out = tmp_path / "bake.json"
    assert main(["bench", "bake", "--out", str(out), "--minutes", "0.2", "--jobs", "1", "--model", str(a2e_model),
                 "--strides", "1,8", "--work-dir", str(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["stride"] == 1 and sorted(r["by_stride"]) == ["1", "8"]
    assert r["by_stride"]["1"]["x_realtime"] == r["x_realtime"]  # top-level keys: the stream-equal default
    assert r["by_stride"]["8"]["runs"]["1"]["audio_s"] == r["runs"]["1"]["audio_s"]  # same library
    # 8x fewer model calls: clearly cheaper in CPU time even on a loaded machine
    assert r["by_stride"]["8"]["x_realtime_per_cpu_second"]["1"] > 1.5 * r["x_realtime_per_cpu_second"]["1"]
    assert set(r["x_realtime"]) == {"1"} and r["x_realtime"]["1"] > 1
    assert r["x_realtime_per_core"]["1"] == r["x_realtime"]["1"] and r["library"]["audio_seconds"] >= 12
    assert r["x_realtime_per_cpu_second"]["1"] > 1 and r["runs"]["1"]["cpu_s"] > 0
    assert r["target_per_core"] == 200 and isinstance(r["meets_target"], bool)
    assert not Path(r["model"]).is_absolute() and r["model"].endswith(".onnx")
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


_UNITY_READER = r"""
using System;
using System.Globalization;
using System.IO;
using RealtalkBridge;

public static class ReadBakeFile
{
    public static int Main(string[] args)
    {
        byte[] b = File.ReadAllBytes(args[0]);
        var track = new CoefficientTrack();
        string error;
        if (!Protocol.TryDecodeBake(b, 0, b.Length, track, out error)) { Console.WriteLine("error " + error); return 1; }
        Console.Write(track.FrameCount + " " + track.Names.Length + " " + track.Fps.ToString(CultureInfo.InvariantCulture));
        for (int i = 0; i < track.Weights.Length; i++) Console.Write(" " + track.Weights[i].ToString("R", CultureInfo.InvariantCulture));
        Console.WriteLine();
        return 0;
    }
}
"""


def test_unity_core_decodes_a_msgpack_track(a2e_model, runtime, speech, tmp_path):
    """The Unity package's own decoder (Runtime/Core, compiled with mcs, run with mono) reads `--format msgpack`."""
    import shutil

    if not (shutil.which("mcs") and shutil.which("mono")):
        pytest.skip("needs Debian mono-mcs (CI installs it from .ci/apt-packages.txt)")
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    sf.write(lib / "line.wav", speech[:24000], 16000)
    assert main(["bake", str(lib), "--out", str(out), "--jobs", "1", "--format", "msgpack",
                 "--model", str(a2e_model)]) == 0
    core = sorted(str(p) for p in (ROOT / "plugins" / "unity" / "Runtime" / "Core").rglob("*.cs"))
    (tmp_path / "ReadBakeFile.cs").write_text(_UNITY_READER)
    exe = tmp_path / "read.exe"
    r = subprocess.run(["mcs", "-langversion:7.2", "-nologo", f"-out:{exe}", str(tmp_path / "ReadBakeFile.cs"), *core],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["mono", str(exe), str(out / "line.msgpack")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    n, e, fps, *values = r.stdout.split()
    expected = infer_offline(runtime, bake.read_checked(lib / "line.wav").audio, fps=30, lookahead_ms=80)
    assert (int(n), int(e), float(fps)) == (len(expected), len(runtime.names), 30.0)
    np.testing.assert_array_equal(np.array(values, np.float32).reshape(expected.shape), expected)
