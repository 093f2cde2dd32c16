"""`doctor` and `devices`: real checks on this machine."""
import socket

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
    assert "all good" in out


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
