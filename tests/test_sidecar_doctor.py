"""`doctor` and `devices`: real checks on this machine."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from _sidecar_util import a2e_model, free_port  # noqa: F401  (fixture)
from realtalk_bridge.cli import main
from realtalk_bridge.doctor import check_port


def test_doctor_passes_with_a_model_and_free_ports(a2e_model, capsys):
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    rc = main(["doctor", "--model", str(a2e_model), "--pub", pub, "--ctl", ctl])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in ("python", "onnxruntime", "zmq", "model", "audio", "stream port", "control port"):
        assert name in out
    warns = sum(line.startswith("warn") for line in out.splitlines())
    assert ("all good" in out) == (warns == 0)  # here: the audio check warns (no sound card)
    if warns:
        assert f"{warns} warning(s)" in out.splitlines()[-1]


def test_doctor_reports_missing_model_and_busy_port(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        status, detail, fix = check_port(f"tcp://127.0.0.1:{port}")
        assert status == "fail" and "taken" in detail and "--pub/--ctl" in fix
        rc = main(["doctor", "--model", str(tmp_path / "none.onnx"), "--ctl", f"tcp://127.0.0.1:{port}"])
    out = capsys.readouterr().out
    assert rc == 1 and "no A2E model" in out and "fix:" in out and "problem(s) to fix" in out


def test_devices_lists_or_explains(capsys):
    rc = main(["devices"])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert rc in (0, 1)
    assert ("no audio input devices" in text) or ("default" in text) or ("PortAudio" in text)


def test_doctor_without_portaudio_names_the_library_and_counts_warnings(a2e_model, tmp_path):
    """sounddevice raises OSError("PortAudio library not found") when libportaudio2 is missing; reproduce that."""
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class _NoPortAudio(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "sounddevice":
                    raise OSError("PortAudio library not found")
                if name in ("torch", "mediapipe"):  # optional, slow to import: absent here (two more warnings)
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _NoPortAudio())
        from realtalk_bridge.cli import main
        sys.exit(main(["doctor", "--model", {str(a2e_model)!r}, "--pub", "tcp://127.0.0.1:{free_port()}",
                       "--ctl", "tcp://127.0.0.1:{free_port()}"]))
    """)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"})
    out = r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PortAudio is missing" in out and "libportaudio2" in out
    assert "pip install sounddevice" not in out
    warns = sum(line.startswith("warn") for line in out.splitlines())
    assert warns >= 3 and "all good" not in out and f"{warns} warning(s)" in out.splitlines()[-1]
