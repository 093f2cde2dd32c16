"""`python -m realtalk_bridge serve` as a real subprocess: file input at real-time speed, config file,
`listen`, clean stop on SIGTERM, refusal to bind non-loopback without --allow-remote."""
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from _sidecar_util import HELLO_WAV, ROOT, a2e_model, free_port, runtime, speech  # noqa: F401  (fixtures)
from realtalk_bridge.client import Client, Subscriber


def _serve(*args):
    return subprocess.Popen([sys.executable, "-m", "realtalk_bridge", "serve", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc, timeout=30.0) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        pytest.fail("serve printed nothing within %.0f s; stderr: %s" % (timeout, proc.stderr.read()))
    return proc.stdout.readline()


def test_serve_file_input_config_listen_and_sigterm(a2e_model, tmp_path):
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text('fps = 25\nlookahead-ms = 80.0\nidle_timeout = 5.0\n')
    proc = _serve("--no-mic", "--input", HELLO_WAV, "--loop", "--model", a2e_model, "--pub", pub, "--ctl", ctl,
                  "--config", cfg)
    try:
        line = _first_line(proc)
        assert pub in line and ctl in line, line
        with Client(ctl, timeout=5) as c:
            info = c.hello()
            assert info["pub"] == pub
            with Subscriber(pub, streams=["file"], layouts=info["layouts"]) as sub:
                frames = list(sub.frames(timeout=3.0, count=20))
        assert len(frames) == 20 and {f.fps for f in frames} == {25.0}
        assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + 20))
        # real-time pacing: 20 frames at 25 fps take about 0.8 s of wall time to arrive
        assert 0.5 < frames[-1].recv_wall - frames[0].recv_wall < 2.0
        out = tmp_path / "frames.csv"
        r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "listen", "--ctl", ctl, "--count", "5",
                            "--timeout", "5", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rows = out.read_text().splitlines()
        assert rows[0].startswith("stream,seq,time,wall,eyeBlinkLeft") and len(rows) == 6
        assert all(row.startswith("file,") for row in rows[1:])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "stopped" in rest


def test_serve_refuses_non_loopback_without_allow_remote(a2e_model):
    proc = _serve("--no-mic", "--model", a2e_model, "--pub", f"tcp://0.0.0.0:{free_port()}",
                  "--ctl", f"tcp://127.0.0.1:{free_port()}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "--allow-remote" in err


def test_serve_rejects_bad_config(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("fps = 'fast'\n")
    proc = _serve("--config", cfg)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "fps must be int" in err
    cfg.write_text("no_such_option = 1\n")
    proc = _serve("--config", cfg)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "unknown option" in err


ASOUNDRC = """
pcm.speechraw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
}}
pcm.speechfile {{
    type plug
    slave {{ pcm "speechraw"; format S16_LE; rate 16000; channels 1 }}
    hint {{ show on description "speech file (test input device)" }}
}}
"""


def test_serve_captures_from_a_portaudio_input_device(a2e_model, speech, tmp_path):
    """A real PortAudio/ALSA capture device whose samples come from a speech file (ALSA `file` plugin):
    `devices` lists it, and `serve --device` turns its audio into frames on stream `mic`."""
    import os

    import numpy as np

    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(raw=tmp_path / "speech.raw"))
    (np.tile(speech, 4) * 32767).astype("<i2").tofile(tmp_path / "speech.raw")
    env = dict(os.environ, HOME=str(tmp_path))  # ALSA reads ~/.asoundrc
    r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "devices"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    if "speechfile" not in r.stdout:
        pytest.skip(f"no ALSA/PortAudio file-backed input here: {r.stdout.strip()} {r.stderr.strip()}")
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "realtalk_bridge", "serve", "--device", "speechfile",
                             "--model", str(a2e_model), "--pub", pub, "--ctl", ctl, "--fps", "25"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _first_line(proc)
        with Client(ctl, timeout=5) as c:
            info = c.hello()
            with Subscriber(pub, streams=["mic"], layouts=info["layouts"]) as sub:
                frames = list(sub.frames(timeout=5.0, count=50))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert len(frames) == 50, err
    w = np.stack([f.weights for f in frames])
    assert w.std(axis=0).max() > 1e-3, "captured speech must move the face"


def test_config_file_options_and_plugin_options(tmp_path):
    """Config keys: serve's own, plus the options of the bridges and the non-verbal layer; the command
    line wins, and an absent store_true flag does not undo the file."""
    import argparse

    from realtalk_bridge.sidecar import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    cfg = tmp_path / "c.toml"
    cfg.write_text('fps = 50\nno-mic = true\n[gains]\njawOpen = 1.5\n')
    opts = serve.resolve(parser.parse_args(["--config", str(cfg), "--fps", "25"]))
    assert opts["fps"] == 25 and opts["no_mic"] is True and opts["gains"] == {"jawOpen": 1.5}
    if "vmc_head" in serve.DEFAULTS:  # the bridges are installed
        cfg.write_text('vmc = "127.0.0.1:39539"\nvmc_head = true\n')
        opts = serve.resolve(parser.parse_args(["--config", str(cfg)]))
        assert opts["vmc"] == "127.0.0.1:39539" and opts["vmc_head"] is True
    cfg.write_text("max-connections = 8\n")
    assert serve.resolve(parser.parse_args(["--config", str(cfg)]))["max_connections"] == 8
    assert serve.resolve(parser.parse_args([]))["max_connections"] == 64
    cfg.write_text("lookahead_ms = 'soon'\n")
    with pytest.raises(ValueError, match="lookahead_ms must be float"):
        serve.resolve(parser.parse_args(["--config", str(cfg)]))


def test_serve_validates_ranges_endpoints_and_config_values(tmp_path):
    import argparse

    from realtalk_bridge.sidecar import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    cfg = tmp_path / "c.toml"
    cfg.write_text("smoothing = 5\n")
    for argv, words in [(["--smoothing", "2"], "smoothing must be in [0, 1]"),
                        (["--config", str(cfg)], "smoothing must be in [0, 1]"),
                        (["--fps", "31"], "fps must be one of"), (["--fps", "abc"], "fps must be one of"),
                        (["--pub", "tcp://127.0.0.1:5000", "--ctl", "tcp://127.0.0.1:5000"], "must be different"),
                        (["--pub", "127.0.0.1:5000"], "must look like tcp://HOST:PORT"),
                        (["--ctl", "tcp://127.0.0.1:99999"], "port must be in"),
                        (["--idle-timeout", "nan"], "idle_timeout must be in"),
                        (["--max-connections", "0"], "max_connections must be in [1, 65536]"),
                        (["--max-connections", "4.5"], "max_connections must be a whole number"),
                        (["--engine-threads", "-1"], "engine_threads must be in [0, 64]"),
                        (["--engine-threads", "1.5"], "engine_threads must be a whole number"),
                        (["--insecure"], "--insecure only makes sense with --allow-remote")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            serve.resolve(parser.parse_args(argv))


def test_engine_threads_default_is_the_cores_at_most_four():
    import os

    from realtalk_bridge.sidecar import serve

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert serve.engine_threads(0) == max(1, min(4, cores))
    assert serve.engine_threads(3) == 3


def test_allow_remote_needs_curve_or_insecure(runtime):
    from realtalk_bridge.sidecar.server import Server

    with pytest.raises(ValueError, match="--insecure"):
        Server(runtime, pub="tcp://0.0.0.0:*", ctl="tcp://127.0.0.1:*", allow_remote=True)


@pytest.mark.parametrize("flags,words", [
    (["--lookahead-ms", "-5"], "lookahead_ms must be in [0, 600]"),
    (["--lookahead-ms", "900"], "lookahead_ms must be in [0, 600]"),
    (["--emotion", "happy"], "--emotion needs --nonverbal"),
])
def test_serve_refuses_bad_values_at_start(flags, words, a2e_model):
    r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "serve", "--no-mic", "--model", str(a2e_model),
                        "--pub", "tcp://127.0.0.1:0", "--ctl", "tcp://127.0.0.1:0"] + flags,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and words in r.stderr, r.stderr
