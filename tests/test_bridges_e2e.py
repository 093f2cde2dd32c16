"""End to end: `realtalk-bridge serve --input speech.wav --vmc PORT --livelink PORT` with a real A2E model.

What the bridges receive must equal what the sidecar published on its PUB socket, frame by frame
(matched by audio time `t`): the VMC values through a python-osc server, the Live Link values and
head pose parsed from the packets. Protocol messages are decoded here with plain msgpack."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("realtalk_bridge.sidecar.serve") is None,
                                reason="the sidecar (realtalk_bridge.sidecar.serve) is not in this tree yet")


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model(request) -> Path:
    shipped = ROOT / "models" / "a2e" / "default.onnx"
    return shipped if shipped.is_file() else request.getfixturevalue("tiny_a2e_onnx")


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    if shutil.which("flite") is None:
        pytest.skip("flite (Debian package) not installed")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "Bring the map, Bob. We meet by the old mill at nine.",
                    "-o", str(wav)], check=True, timeout=60)
    return wav


class VMCFrames:
    """python-osc server collecting one {name: value} dict per bundle (keyed by /VMC/Ext/T)."""

    def __init__(self):
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import BlockingOSCUDPServer

        self.frames: dict[float, dict[str, float]] = {}
        self._cur: dict[str, float] = {}
        self._t = None
        d = Dispatcher()
        d.map("/VMC/Ext/T", lambda a, t: setattr(self, "_t", t))
        d.map("/VMC/Ext/Blend/Val", lambda a, n, v: self._cur.__setitem__(n, v))
        d.map("/VMC/Ext/Blend/Apply", lambda a: self._apply())
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _apply(self):
        self.frames[round(self._t, 4)] = self._cur
        self._cur = {}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def parse_livelink(data: bytes):
    off = 1
    for _ in range(2):  # device id, subject
        (n,) = struct.unpack_from(">i", data, off)
        off += 4 + n
    frame, sub, num, den = struct.unpack_from(">ifii", data, off)
    count = data[off + 16]
    values = np.array(struct.unpack_from(f">{count}f", data, off + 17), np.float32)
    return (frame + sub) * den / num, values


def test_serve_bridges_send_exactly_the_published_frames(model, speech_wav, tmp_path):
    import msgpack
    import zmq

    from realtalk_bridge.face.arkit import ARKIT_INDEX

    pub, ctl = free_port(), free_port()
    vmc = VMCFrames()
    ll = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ll.bind(("127.0.0.1", 0))
    ll_frames: dict[float, np.ndarray] = {}
    ifm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ifm.bind(("127.0.0.1", 0))
    ifm.setblocking(False)
    ifm_packets: list[bytes] = []
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"coeffs/file")
    sub.setsockopt(zmq.SUBSCRIBE, b"event/file")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"tcp://127.0.0.1:{pub}")
    config = tmp_path / "serve.toml"  # the VMC bridge and a non-verbal switch come from the config file
    config.write_text(f'vmc = "127.0.0.1:{vmc.port}"\nvmc_names = "arkit"\nnonverbal_seed = 3\n')
    cmd = [sys.executable, "-m", "realtalk_bridge", "serve", "--model", str(model), "--input", str(speech_wav),
           "--loop", "--no-mic", "--fps", "25", "--nonverbal", "--pub", f"tcp://127.0.0.1:{pub}",
           "--ctl", f"tcp://127.0.0.1:{ctl}", "--config", str(config), "--livelink", f"127.0.0.1:{ll.getsockname()[1]}",
           "--ifacialmocap", str(ifm.getsockname()[1])]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    published: dict[float, tuple[np.ndarray, np.ndarray | None]] = {}
    published_seq: dict[int, np.ndarray] = {}

    def drain_livelink():
        ll.setblocking(False)
        try:
            while True:
                t, values = parse_livelink(ll.recv(65536))
                ll_frames[round(t, 4)] = values
        except BlockingIOError:
            pass
        try:
            while True:
                ifm_packets.append(ifm.recv(65536))
        except BlockingIOError:
            pass
    names = None
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{ctl}")
    emotion_reply, emotion_t = None, None
    try:
        deadline = time.monotonic() + 90
        last_t = 0.0
        # --loop keeps the stream open, so set_emotion always finds it; stop after 6 s of audio
        while time.monotonic() < deadline and last_t < 6.0 and proc.poll() is None:
            while sub.poll(20):  # drain everything: never fall behind the publisher
                topic, payload = sub.recv_multipart()
                msg = msgpack.unpackb(payload, raw=False)
                if msg["type"] != "coeffs":
                    continue
                names = msg.get("names", names)
                pose = np.frombuffer(msg["pose"], "<f4") if "pose" in msg else None
                published[round(msg["t"], 4)] = (np.frombuffer(msg["w"], "<f4"), pose)
                published_seq[msg["seq"]] = published[round(msg["t"], 4)][0]
                last_t = max(last_t, msg["t"])
                if emotion_t is None:  # set the emotion live, through the control socket
                    emotion_t = msg["t"]
                    dealer.send(msgpack.packb({"v": 1, "op": "set_emotion", "id": 1, "stream": "file",
                                               "emotion": "happy", "strength": 1.0}))
            if dealer.poll(0):
                emotion_reply = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)
            drain_livelink()
        time.sleep(0.2)  # the last datagrams
        drain_livelink()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        vmc.close()
        ll.close()
        ifm.close()
        sub.close()
        dealer.close()
    assert published, f"no frames published; serve said:\n{out}"
    if names is None:
        from realtalk_bridge.runtime.a2e import A2ERuntime

        names = A2ERuntime(model).names
    common = sorted(set(published) & set(vmc.frames))
    assert len(common) >= 30, (len(published), len(vmc.frames), out)
    moving = 0
    for t in common:
        w, _ = published[t]
        got = vmc.frames[t]
        assert list(got) == list(names)
        # the `arkit` profile's clamp: receivers get 0..1 even where the model overshoots
        np.testing.assert_array_equal(np.array([got[n] for n in names], np.float32), np.clip(w, 0, 1))
        moving += w[names.index("jawOpen")] > 0.05
    assert moving > 5, "the model never opened the jaw: not speech-driven frames"
    common_ll = sorted(set(published) & set(ll_frames))
    assert len(common_ll) >= 30
    for t in common_ll:
        w, pose = published[t]
        v = ll_frames[t]
        expect = np.clip([w[names.index(n)] for n in sorted(ARKIT_INDEX, key=ARKIT_INDEX.get)], 0, 1)
        np.testing.assert_array_equal(v[:52], expect.astype(np.float32))
        assert pose is not None  # --nonverbal: idle head motion
        # yaw, pitch, roll in Live Link's unit: degrees / 180
        np.testing.assert_allclose(v[52:55], np.degrees([pose[1], pose[0], pose[2]]) / 180, atol=1e-7)
    # iFacialMocap carries no time: its k-th datagram is the stream's k-th frame (seq k; loopback UDP
    # neither drops nor reorders here), so compare it with the frame published with that seq
    from realtalk_bridge.bridges.ifacialmocap import ifm_name

    by_seq = {seq: w for seq, w in published_seq.items()}
    checked = 0
    for k, pkt in enumerate(ifm_packets):
        if k not in by_seq:
            continue
        shapes = dict(item.rsplit("-", 1) for item in pkt.decode("ascii").split("|=")[0].split("|"))
        w = np.clip(by_seq[k], 0, 1)
        assert {ifm_name(n): int(round(float(w[i]) * 100)) for i, n in enumerate(names) if n in ARKIT_INDEX} == \
            {n: int(v) for n, v in shapes.items()}, f"datagram {k}"
        checked += 1
    assert checked >= 30
    # set_emotion reached this stream's NonVerbal: the smile fades in on the published and VMC frames
    assert emotion_reply is not None and emotion_reply["ok"], emotion_reply
    late = [t for t in common if t > emotion_t + 1.5]
    assert late, "the clip ended too soon after set_emotion"
    assert min(vmc.frames[t]["mouthSmileLeft"] for t in late) > 0.5


@pytest.mark.parametrize("config,flags,words", [
    ('vmc = "99999"\n', [], "port"),
    ('vmc = true\nvmc_names = "nosuch"\n', [], "vmc-names"),
    ('emotion = "furious"\n', ["--nonverbal"], "unknown emotion"),
    ('blink = "no"\n', [], "blink"),
])
def test_serve_rejects_bad_bridge_and_nonverbal_config(model, tmp_path, config, flags, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config)
    r = subprocess.run([sys.executable, "-m", "realtalk_bridge", "serve", "--model", str(model), "--no-mic",
                        "--pub", f"tcp://127.0.0.1:{free_port()}", "--ctl", f"tcp://127.0.0.1:{free_port()}",
                        "--config", str(cfg), *flags], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
